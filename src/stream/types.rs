//! The stream core's value types: budgets, policies, read outcomes, the bytes a read
//! returns, errors and statistics. Plain data; the behaviour is `Stream`'s (`stream.rs`).

use std::time::SystemTime;

use crate::memory::Chunk;
use crate::start::{Align, Start};

/// The largest write delivered atomically: 64 MiB. A larger `write()` reaches readers as
/// consecutive writes of at most this size.
pub const MAX_WRITE: u64 = 64 << 20;

/// Per-stream byte budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Live data bytes a reader may have queued before it overflows.
    pub channel: u64,
    /// Data bytes of history kept for late joiners; 0 disables replay.
    pub ring: u64,
    /// History older than this is dropped from the ring (`ring_buffer_time`); `None`: kept
    /// as long as it fits.
    pub ring_time: Option<std::time::Duration>,
}

impl Budgets {
    /// Budgets of `channel` and `ring` bytes, without a time bound.
    pub const fn new(channel: u64, ring: u64) -> Budgets {
        Budgets {
            channel,
            ring,
            ring_time: None,
        }
    }
}

/// What happens to a write that does not fit a reader's budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowReader {
    /// Drop the write for that reader (the original's behaviour).
    #[default]
    Drop,
    /// Make the writer wait until every reader has room.
    Block,
    /// Cut the reader off: the rest of its queue, then EOF.
    Disconnect,
}

/// What readers see when the last writer closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnWriterClose {
    /// Nothing: they wait for a next writer.
    #[default]
    Keep,
    /// The rest of their queue, then EOF (FIFO-like).
    Eof,
}

/// A stream's policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub slow_reader: SlowReader,
    pub on_writer_close: OnWriterClose,
    /// Where a reader that names no start begins (`start`).
    pub start: Start,
    /// Where any replay may begin (`replay_align`).
    pub align: Align,
}

/// How a read finished.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Bytes, never empty.
    Data(Bytes),
    /// The reader's stream ended (removed, session over, disconnected) and its queue is empty.
    Eof,
    /// Non-blocking read with nothing queued.
    WouldBlock,
    /// A parked read was cancelled by [`Stream::cancel_read`](super::Stream::cancel_read).
    Interrupted,
}

/// The bytes of one read: a range of one shared chunk when the read ends within it (the
/// common case of a reader that keeps up: replying from it copies nothing), else a copy of
/// the pieces of several chunks. Compares by content.
#[derive(Clone)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Chunk, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl Bytes {
    pub(super) fn shared(chunk: Chunk, start: usize, len: usize) -> Bytes {
        Bytes(Repr::Shared(chunk, start..start + len))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(chunk, range) => &chunk[range.clone()],
            Repr::Owned(v) => v,
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(Repr::Owned(v))
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        **self == **other
    }
}

impl Eq for Bytes {}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({:?})", &**self)
    }
}

/// Answers one read. Called exactly once, never under a stream lock.
pub type Deliver = Box<dyn FnOnce(ReadOutcome) + Send>;

/// Answers one write. Called exactly once, never under a stream lock.
pub type WriteDone = Box<dyn FnOnce(Result<(), StreamError>) + Send>;

/// Wakes one poller when a reader becomes readable. Called at most once, never under a lock.
pub type Wake = Box<dyn FnOnce() + Send>;

/// Errors of the stream core.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("the stream was removed")]
    Removed,
    #[error("no stream of that name")]
    NotFound,
    #[error("a stream of that name exists")]
    Exists,
    #[error("the waiting write was cancelled")]
    Interrupted,
    /// The daemon's memory limit (`max_memory`) left no room even after shedding.
    #[error("the memory limit leaves no room for this write")]
    NoMemory,
    /// `max_streams` streams exist.
    #[error("too many streams")]
    TooManyStreams,
    /// `max_readers` readers are registered.
    #[error("too many readers")]
    TooManyReaders,
    /// A name that cannot be a new stream's (empty, `.`, `..`, or holding `/`, NUL or `@`).
    #[error("invalid stream name")]
    InvalidName,
    /// A name longer than `namespace::NAME_MAX` bytes.
    #[error("stream name too long")]
    NameTooLong,
    /// A start offset older than the ring's oldest byte: that history is gone.
    #[error("that offset is older than the ring's oldest byte")]
    TooOld,
    /// A write longer than the engine that shares the stream with other hosts holds whole.
    #[error("the write is longer than the engine shared with other hosts holds whole")]
    TooLarge,
    /// The engine that shares the stream with other hosts could not be reached in time.
    #[error("the engine holding the stream cannot be reached")]
    Unavailable,
    /// What cannot hold for a stream shared with other hosts (e.g. rename).
    #[error("not supported for a stream shared by several hosts")]
    Unsupported,
}

/// Whether a read may park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Park until something is queued or the stream ends.
    Wait,
    /// Answer [`ReadOutcome::WouldBlock`] when nothing is queued.
    NonBlocking,
}

/// Counters of one reader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Bytes handed to the reader.
    pub delivered_bytes: u64,
    /// Bytes queued now (replay included).
    pub queued_bytes: u64,
    /// Live (not replayed) bytes queued now, the figure compared with the channel budget.
    pub live_cost: u64,
    /// Runs of live writes queued now (consecutive writes taken share one), against the
    /// queue's bound of one per [`CHANNEL_BYTES_PER_RUN`](super::CHANNEL_BYTES_PER_RUN) of the budget.
    pub live_runs: usize,
    /// Writes dropped for this reader and their bytes.
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    /// Whether the reader was cut off (policy `Disconnect`).
    pub disconnected: bool,
    /// Reads waiting for data now.
    pub parked_reads: usize,
    /// Absolute offset of the first byte it was given (or waits for).
    pub start: u64,
}

/// Counters and metadata of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// Total bytes ever written: the stream's end offset.
    pub written_bytes: u64,
    pub writes: u64,
    /// Registered readers that still receive writes (disconnected ones excluded).
    pub readers: usize,
    pub writers: usize,
    /// Bytes of history in the ring and the absolute offset of its oldest byte.
    pub ring_bytes: u64,
    pub ring_start: u64,
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    /// Writes waiting for room (policy `Block`).
    pub blocked_writes: usize,
    pub removed: bool,
    pub budgets: Budgets,
    pub policy: Policy,
    /// Bytes per second written, over the last seconds (a burst shows at once).
    pub write_rate: u64,
    /// Time of the last write (creation time before any).
    pub mtime: SystemTime,
}

/// File metadata of a stream, kept for the front doors (the core does not interpret it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Creation time, and the time of the last metadata change.
    pub crtime: SystemTime,
    pub ctime: SystemTime,
}

/// A parked read, as seen by a watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParkedRead {
    pub reader: u64,
    pub read: u64,
    pub tag: u32,
}

/// Poll state of a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Bytes are queued.
    Readable,
    /// Nothing is queued and the reader ended: a read returns EOF.
    Ended,
    /// Nothing is queued; the wake callback was kept.
    Waiting,
}
