//! Live byte streams: fanout to independent readers, a replay ring for late joiners, byte
//! budgets and drop accounting. This module knows nothing of FUSE, the kernel or errnos; the
//! adapter in `fs.rs` maps its results onto requests.
//!
//! # The contract
//!
//! ## Writing
//! A write appends its bytes to the stream; there are no offsets. One call to
//! [`Writer::write`] is atomic: every reader that receives it receives all of it, at one
//! place in the one order of writes that the stream's lock defines, so no two writes
//! interleave and every reader sees the writes in the same order. Readers differ only by
//! where they started and which writes they dropped.
//!
//! A write that the kernel had to split into several requests (a `write()` larger than one
//! request) arrives as several calls, the later ones flagged `continues`; a continuation
//! follows the fate of its head. A reader that took the head also takes the rest even past
//! its budget (up to twice the budget), so that it does not receive a write without its
//! tail; a reader that dropped the head, or opened after it without getting it from the
//! ring, skips the rest (counted as dropped in the first case). The ring holds whole writes
//! only.
//!
//! ## Replay for late joiners
//! The stream keeps a ring of its newest whole writes whose total cost is at most the ring
//! budget; the newest write is kept even when it is larger on its own. A ring budget of 0
//! disables replay. [`Stream::open_reader`] queues the ring's contents for the new reader
//! under the same lock that registers it, so the reader gets the history and then the live
//! data with no gap and no duplicate. Replayed chunks are not counted against the reader's
//! channel budget: history is never dropped for being larger than it.
//!
//! ## Slow readers and drops
//! Each reader has a channel budget in bytes. A write is queued for a reader when the
//! reader's queued live bytes plus the write fit within the budget, or when the reader has
//! nothing live queued (so a write larger than the budget still reaches a reader that keeps
//! up). What happens otherwise is the stream's [`SlowReader`] policy:
//! - `Drop` (default): the write is dropped for that reader only and counted, per reader and
//!   per stream. The writer never waits for a reader.
//! - `Block`: lossless, like a pipe. The write waits (parked, holding no thread) until every
//!   reader has room; later writes queue behind it in order. A parked write can be
//!   cancelled ([`Stream::cancel_write`]), and then nothing of it was written.
//! - `Disconnect`: the overflowing reader is cut off: it reads what it had queued, then EOF,
//!   and receives and counts nothing more.
//!
//! ## Costs
//! Budgets are in bytes. Each queued or ringed chunk costs its length plus
//! [`CHUNK_OVERHEAD`], the bookkeeping it occupies, so that a flood of 1-byte writes cannot
//! grow memory past a small multiple of the budgets.
//!
//! ## Sharing
//! A written chunk is stored once and shared by reference between the ring and every
//! reader's queue; N caught-up readers cost N pointers, not N copies.
//!
//! ## Waiting
//! A read with nothing queued either returns [`ReadOutcome::WouldBlock`] (non-blocking) or
//! parks: its [`Deliver`] callback is kept and called later, from whichever thread makes the
//! read answerable (a write, a removal, a cancellation). No thread waits. Callbacks are
//! always called after the stream lock is released.
//!
//! ## Closing
//! [`Stream::remove`] (rm, or shutdown) ends the stream: readers get what they had queued,
//! then EOF; writes fail with [`StreamError::Removed`]. Parked reads are answered with EOF
//! at once, parked writes with `Removed`.
//!
//! With [`OnWriterClose::Eof`], the stream behaves like a FIFO: when its last writer closes,
//! every reader gets the rest of its queue and then EOF, and the ring is emptied; a later
//! writer starts a new session, read by the readers that open after it ended. The default,
//! `Keep`, lets readers wait for a next writer indefinitely, as the original does.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::sync::{Arc, AtomicUsize, Mutex, MutexGuard, Ordering};

/// One write's bytes, shared between the ring and the readers' queues.
pub type Chunk = Arc<[u8]>;

/// What one queued or ringed chunk costs beyond its bytes: the allocation header of the
/// shared buffer, the reference in a queue and allocator rounding.
pub const CHUNK_OVERHEAD: u64 = 64;

/// The budget cost of a chunk of `len` bytes.
pub fn chunk_cost(len: usize) -> u64 {
    len as u64 + CHUNK_OVERHEAD
}

/// Per-stream byte budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Live bytes (with overhead) a reader may have queued before it overflows.
    pub channel: u64,
    /// Bytes (with overhead) of history kept for late joiners; 0 disables replay.
    pub ring: u64,
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
    /// A parked read was cancelled by [`Stream::cancel_read`].
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
    fn shared(chunk: Chunk, start: usize, len: usize) -> Bytes {
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
}

/// Whether a read may park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Park until something is queued or the stream ends.
    Wait,
    /// Answer [`ReadOutcome::WouldBlock`] when nothing is queued.
    NonBlocking,
}

/// A read waiting for data.
struct Parked {
    /// Unique within the stream; names the read for [`Stream::cancel_read`].
    id: u64,
    /// Opaque to the core: the adapter's identity of the waiting caller.
    tag: u32,
    /// Most bytes the read may return (at least 1).
    max: usize,
    deliver: Deliver,
}

/// A write waiting for room (policy `Block`).
struct BlockedWrite {
    id: u64,
    tag: u32,
    chunk: Chunk,
    continues: bool,
    done: WriteDone,
}

/// A reader's fate of the stream's most recent write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    Took,
    Dropped,
    /// The reader opened after it and did not get it from the ring.
    Missed,
}

/// A registered reader's state, kept inside the stream's lock.
struct ReaderState {
    id: u64,
    /// Who opened it, for log lines ("pid 42 (cat)").
    label: String,
    /// Chunks to deliver, oldest first; `front_off` bytes of the front one are delivered.
    queue: VecDeque<Chunk>,
    /// Invariant: `front_off < queue.front().len()` when the queue is non-empty, else 0.
    front_off: usize,
    /// Bytes not yet delivered: the lengths of `queue` less `front_off`. Kept rather than
    /// summed, since a flood of small writes makes the queue long and reads are frequent.
    queued: u64,
    /// Invariant: the first `replay_left` chunks of `queue` came from the ring at open and
    /// are not counted in `live_cost`.
    replay_left: usize,
    /// Sum of `chunk_cost` over the live (non-replay) chunks in `queue`.
    live_cost: u64,
    /// What this reader did with the most recent write; a continuation follows its fate.
    last: Last,
    /// No more writes reach this reader: once its queue is empty it reads EOF. Set by
    /// removal, by the end of a writer session, or by a disconnect.
    ended: bool,
    /// Cut off for falling behind (policy `Disconnect`); implies `ended`.
    disconnected: bool,
    /// Reads waiting, oldest first. Invariant: non-empty only while `queue` is empty and
    /// the reader has not ended.
    parked: VecDeque<Parked>,
    /// A poller to wake when the reader becomes readable or ends.
    wake: Option<Wake>,
    stats: ReaderStats,
    /// Drops not yet reported in a warn line, and when the last line was written.
    unreported_drops: u64,
    last_drop_report: Option<Instant>,
}

/// Counters of one reader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Bytes handed to the reader.
    pub delivered_bytes: u64,
    /// Bytes queued now (replay included).
    pub queued_bytes: u64,
    /// Cost of live bytes queued now, the figure compared with the channel budget.
    pub live_cost: u64,
    /// Writes dropped for this reader and their bytes.
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    /// Whether the reader was cut off (policy `Disconnect`).
    pub disconnected: bool,
    /// Reads waiting for data now.
    pub parked_reads: usize,
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
    /// Bytes per second written, averaged over the last complete seconds.
    pub write_rate: u64,
    /// Time of the last write (creation time before any).
    pub mtime: SystemTime,
}

/// A log line to write once the lock is released.
#[derive(Debug)]
enum Report {
    Drops {
        label: String,
        writes: u64,
        total: u64,
    },
    Disconnected {
        label: String,
        queued: u64,
    },
}

/// How often a reader's drops are summarised in the log at most.
const DROP_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Seconds of history the write rate is averaged over.
const RATE_SECONDS: u64 = 5;

/// File metadata of a stream, kept for the adapter (the core does not interpret it).
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

struct State {
    budgets: Budgets,
    policy: Policy,
    meta: Meta,
    /// Newest writes, oldest first, each flagged whether it starts a write (false for a
    /// continuation). Invariant: empty, or the front starts a write; the total cost is at
    /// most `budgets.ring` unless the ring holds a single write.
    ring: VecDeque<(Chunk, bool)>,
    /// Sum of `chunk_cost` over `ring`, and sum of lengths.
    ring_cost: u64,
    ring_bytes: u64,
    /// Number of entries of `ring` that start a write.
    ring_writes: usize,
    /// Absolute offset of the end of the stream: bytes ever written (u64: never wraps).
    written: u64,
    writes: u64,
    readers: Vec<ReaderState>,
    writers: usize,
    /// Writes waiting for room, in arrival order. Invariant: empty unless the policy is
    /// `Block` (changing the policy releases them).
    blocked: VecDeque<BlockedWrite>,
    /// Source of reader, read and write ids.
    next_id: u64,
    dropped_writes: u64,
    dropped_bytes: u64,
    removed: bool,
    mtime: SystemTime,
    /// Bytes written per second, indexed by unix second modulo the length.
    rate: [(u64, u64); RATE_SECONDS as usize + 2],
}

/// One live stream. Shared by the namespace and every open handle; it outlives its name
/// while handles are open.
pub struct Stream {
    /// The stream's identity, never reused within a namespace (the adapter's inode number).
    id: u64,
    state: Mutex<State>,
    /// Parked reads and writes across every stream of the namespace, so that a watchdog can
    /// sleep while there are none. Changed under `state`'s lock.
    parked_total: Arc<AtomicUsize>,
}

/// Writes at least this large are answered before the reads they make answerable.
const WRITER_FIRST_BYTES: usize = 256 << 10;

/// Work to do once the lock is released: answers, wake-ups, log lines.
#[derive(Default)]
struct Deferred {
    answers: Vec<(Deliver, ReadOutcome)>,
    dones: Vec<(WriteDone, Result<(), StreamError>)>,
    wakes: Vec<Wake>,
    reports: Vec<Report>,
    /// Answer the writes before the reads. Waiting readers are answered first, since their
    /// latency is the stream's; but after a large write the writer is better released first,
    /// so that its next write is on its way while the readers' copies are made (15% more
    /// throughput with 1 MiB writes; no difference at 64 KiB; 25% lower latency for small
    /// messages the other way round).
    writer_first: bool,
}

impl Deferred {
    fn run(mut self) {
        for r in self.reports {
            match r {
                Report::Drops {
                    label,
                    writes,
                    total,
                } => log::warn!(
                    "reader {label}: dropped {writes} writes ({total} in total): it reads slower than the stream is written"
                ),
                Report::Disconnected { label, queued } => log::warn!(
                    "reader {label}: disconnected (slow_reader=disconnect) with {queued} bytes queued; it reads the rest, then EOF"
                ),
            }
        }
        if self.writer_first {
            for (done, result) in self.dones.drain(..) {
                done(result);
            }
        }
        for (deliver, outcome) in self.answers {
            deliver(outcome);
        }
        for (done, result) in self.dones {
            done(result);
        }
        for wake in self.wakes {
            wake();
        }
    }
}

impl ReaderState {
    fn queued_bytes(&self) -> u64 {
        debug_assert_eq!(
            self.queued,
            self.queue.iter().map(|c| c.len() as u64).sum::<u64>() - self.front_off as u64
        );
        self.queued
    }

    fn push(&mut self, chunk: &Chunk) {
        self.queued += chunk.len() as u64;
        self.queue.push_back(chunk.clone());
    }

    /// Whether a chunk of `cost` fits the budget `channel`.
    fn fits(&self, cost: u64, channel: u64) -> bool {
        self.live_cost == 0 || self.live_cost + cost <= channel
    }

    /// Takes up to `max` queued bytes. Precondition: the queue is non-empty. A read that
    /// ends within the front chunk shares it (no copy); one that spans chunks copies them.
    fn take(&mut self, max: usize) -> Bytes {
        debug_assert!(!self.queue.is_empty() && max > 0);
        let front = self.queue.front().expect("precondition");
        let avail = front.len() - self.front_off;
        let out = if avail >= max || self.queue.len() == 1 {
            let n = avail.min(max);
            let bytes = Bytes::shared(front.clone(), self.front_off, n);
            self.advance(n);
            bytes
        } else {
            let mut out = Vec::with_capacity(max.min(self.queued as usize));
            while out.len() < max {
                let Some(front) = self.queue.front() else {
                    break;
                };
                let avail = &front[self.front_off..];
                let n = avail.len().min(max - out.len());
                out.extend_from_slice(&avail[..n]);
                self.advance(n);
            }
            Bytes::from(out)
        };
        self.stats.delivered_bytes += out.len() as u64;
        if self.queue.is_empty() && self.queue.capacity() > 1024 {
            // A burst of small writes left a large buffer behind; give it back.
            self.queue.shrink_to(64);
        }
        out
    }

    /// Marks `n` bytes of the front chunk delivered, at most its remainder.
    fn advance(&mut self, n: usize) {
        let len = self.queue.front().expect("a queued chunk").len();
        debug_assert!(self.front_off + n <= len);
        self.queued -= n as u64;
        if self.front_off + n == len {
            self.queue.pop_front();
            self.front_off = 0;
            if self.replay_left > 0 {
                self.replay_left -= 1;
            } else {
                self.live_cost -= chunk_cost(len);
            }
        } else {
            self.front_off += n;
        }
    }

    /// Ends the reader: parked reads get EOF, a poller wakes. Returns the reads unparked.
    fn end(&mut self, deferred: &mut Deferred) -> usize {
        self.ended = true;
        let n = self.parked.len();
        for p in self.parked.drain(..) {
            deferred.answers.push((p.deliver, ReadOutcome::Eof));
        }
        if let Some(w) = self.wake.take() {
            deferred.wakes.push(w);
        }
        n
    }

    fn stats(&self) -> ReaderStats {
        ReaderStats {
            queued_bytes: self.queued_bytes(),
            live_cost: self.live_cost,
            disconnected: self.disconnected,
            parked_reads: self.parked.len(),
            ..self.stats.clone()
        }
    }
}

impl State {
    fn reader_mut(&mut self, id: u64) -> Option<&mut ReaderState> {
        self.readers.iter_mut().find(|r| r.id == id)
    }

    fn push_ring(&mut self, chunk: &Chunk, starts: bool) {
        if self.budgets.ring == 0 || !starts && self.ring.is_empty() {
            // A continuation whose head is not in the ring is not a whole write.
            return;
        }
        self.ring_cost += chunk_cost(chunk.len());
        self.ring_bytes += chunk.len() as u64;
        self.ring_writes += usize::from(starts);
        self.ring.push_back((chunk.clone(), starts));
        self.trim_ring();
    }

    /// Drops the oldest whole writes until the ring fits its budget or holds one write.
    fn trim_ring(&mut self) {
        while self.ring_cost > self.budgets.ring && self.ring_writes > 1
            || self.budgets.ring == 0 && !self.ring.is_empty()
        {
            // Pop the front write: its start, then its continuations.
            let mut first = true;
            while let Some((chunk, starts)) = self.ring.front() {
                if !first && *starts {
                    break;
                }
                first = false;
                self.ring_cost -= chunk_cost(chunk.len());
                self.ring_bytes -= chunk.len() as u64;
                self.ring_writes -= usize::from(*starts);
                self.ring.pop_front();
            }
        }
    }

    fn clear_ring(&mut self) {
        self.ring.clear();
        self.ring_cost = 0;
        self.ring_bytes = 0;
        self.ring_writes = 0;
    }

    /// Whether a write of `cost` fits every receiving reader (policy `Block`).
    fn all_fit(&self, cost: u64, continues: bool) -> bool {
        let channel = self.budgets.channel;
        self.readers
            .iter()
            .all(|r| r.ended || continues && r.last != Last::Took || r.fits(cost, channel))
    }

    fn count_rate(&mut self, now: SystemTime, len: u64) {
        let sec = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let slot = &mut self.rate[(sec % self.rate.len() as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += len;
    }

    fn write_rate(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let window = now.saturating_sub(RATE_SECONDS)..now;
        let total: u64 = self
            .rate
            .iter()
            .filter(|(sec, _)| window.contains(sec))
            .map(|(_, n)| n)
            .sum();
        total / RATE_SECONDS
    }

    /// Appends one write and fans it out under the policy. Returns the reads it answered.
    fn apply(&mut self, chunk: Chunk, continues: bool, deferred: &mut Deferred) -> usize {
        let cost = chunk_cost(chunk.len());
        let len = chunk.len() as u64;
        let now = SystemTime::now();
        self.written += len;
        self.writes += 1;
        self.mtime = now;
        self.count_rate(now, len);
        self.push_ring(&chunk, !continues);
        let channel = self.budgets.channel;
        let policy = self.policy.slow_reader;
        let mut dropped = 0u64;
        let mut unparked = 0;
        // Read only when a drop is to be reported on: most writes drop nothing.
        let mut instant = None;
        for r in self.readers.iter_mut().filter(|r| !r.ended) {
            if continues && r.last != Last::Took {
                // The rest of a write this reader does not have: skipped whole, counted as
                // dropped when it dropped the head, never a reason to disconnect.
                if r.last == Last::Dropped {
                    r.stats.dropped_writes += 1;
                    r.stats.dropped_bytes += len;
                    dropped += 1;
                }
                continue;
            }
            let forced = continues && r.live_cost + cost <= channel.saturating_mul(2);
            if r.fits(cost, channel) || forced {
                let was_empty = r.queue.is_empty();
                r.push(&chunk);
                r.live_cost += cost;
                r.last = Last::Took;
                if was_empty {
                    // Parked reads exist only while the queue is empty: answer them.
                    while !r.queue.is_empty() {
                        let Some(p) = r.parked.pop_front() else {
                            break;
                        };
                        unparked += 1;
                        let data = r.take(p.max);
                        deferred.answers.push((p.deliver, ReadOutcome::Data(data)));
                    }
                    if let Some(w) = r.wake.take() {
                        deferred.wakes.push(w);
                    }
                }
                continue;
            }
            r.last = Last::Dropped;
            r.stats.dropped_writes += 1;
            r.stats.dropped_bytes += len;
            dropped += 1;
            if policy == SlowReader::Disconnect {
                // Its queue is non-empty (an empty queue always fits): no parked reads.
                r.disconnected = true;
                r.end(deferred);
                deferred.reports.push(Report::Disconnected {
                    label: r.label.clone(),
                    queued: r.queued_bytes(),
                });
                continue;
            }
            r.unreported_drops += 1;
            let instant = *instant.get_or_insert_with(Instant::now);
            let due = r
                .last_drop_report
                .is_none_or(|t| instant.duration_since(t) >= DROP_REPORT_INTERVAL);
            if due {
                deferred.reports.push(Report::Drops {
                    label: r.label.clone(),
                    writes: r.unreported_drops,
                    total: r.stats.dropped_writes,
                });
                r.unreported_drops = 0;
                r.last_drop_report = Some(instant);
            }
        }
        self.dropped_writes += dropped;
        self.dropped_bytes += dropped * len;
        unparked
    }

    /// Applies the blocked writes that now fit, in order. Returns the parked operations
    /// (writes and reads) it completed.
    fn release_blocked(&mut self, deferred: &mut Deferred) -> usize {
        let mut completed = 0;
        while let Some(front) = self.blocked.front() {
            let block = self.policy.slow_reader == SlowReader::Block;
            if block && !self.all_fit(chunk_cost(front.chunk.len()), front.continues) {
                break;
            }
            let w = self.blocked.pop_front().expect("front exists");
            completed += 1 + self.apply(w.chunk, w.continues, deferred);
            deferred.dones.push((w.done, Ok(())));
        }
        completed
    }
}

impl Stream {
    /// A new, empty stream. `parked_total` is the namespace-wide count of parked operations.
    pub fn new(
        id: u64,
        budgets: Budgets,
        meta: Meta,
        parked_total: Arc<AtomicUsize>,
    ) -> Arc<Stream> {
        Arc::new(Stream {
            id,
            state: Mutex::new(State {
                budgets,
                policy: Policy::default(),
                meta,
                ring: VecDeque::new(),
                ring_cost: 0,
                ring_bytes: 0,
                ring_writes: 0,
                written: 0,
                writes: 0,
                readers: Vec::new(),
                writers: 0,
                blocked: VecDeque::new(),
                next_id: 1,
                dropped_writes: 0,
                dropped_bytes: 0,
                removed: false,
                mtime: meta.crtime,
                rate: [(0, 0); RATE_SECONDS as usize + 2],
            }),
            parked_total,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Runs `f` under the lock, then settles the parked count and runs deferred work after
    /// the lock is released. `f` returns how many parked operations it completed.
    fn with_state<T>(&self, f: impl FnOnce(&mut State, &mut Deferred) -> (T, usize)) -> T {
        let mut deferred = Deferred::default();
        let out = {
            let mut st = self.lock();
            let (out, completed) = f(&mut st, &mut deferred);
            if completed > 0 {
                self.parked_total.fetch_sub(completed, Ordering::Relaxed);
            }
            out
        };
        deferred.run();
        out
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn meta(&self) -> Meta {
        self.lock().meta
    }

    /// Changes the metadata with `f` (chmod, chown), updating its ctime.
    pub fn update_meta(&self, f: impl FnOnce(&mut Meta)) -> Meta {
        let mut st = self.lock();
        f(&mut st.meta);
        st.meta.ctime = SystemTime::now();
        st.meta
    }

    /// Registers a reader, queueing the ring's history for it first (atomically with the
    /// registration). A reader of a removed stream reads EOF at once.
    pub fn open_reader(self: &Arc<Self>, label: String) -> Reader {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        let queue: VecDeque<Chunk> = st.ring.iter().map(|(c, _)| c.clone()).collect();
        let replay_left = queue.len();
        let queued = queue.iter().map(|c| c.len() as u64).sum();
        let ended = st.removed;
        // A non-empty ring ends with the stream's newest write, replayed to the reader.
        let last = if st.ring.is_empty() {
            Last::Missed
        } else {
            Last::Took
        };
        st.readers.push(ReaderState {
            id,
            label,
            queue,
            front_off: 0,
            queued,
            replay_left,
            live_cost: 0,
            last,
            ended,
            disconnected: false,
            parked: VecDeque::new(),
            wake: None,
            stats: ReaderStats::default(),
            unreported_drops: 0,
            last_drop_report: None,
        });
        Reader {
            stream: self.clone(),
            id,
        }
    }

    /// Registers a writer (for counting; any handle may write through [`Writer::write`]).
    pub fn open_writer(self: &Arc<Self>) -> Writer {
        self.lock().writers += 1;
        Writer {
            stream: self.clone(),
        }
    }

    /// Appends one write, or parks it under policy `Block` (see [`Writer::submit`]).
    fn submit(&self, data: &[u8], continues: bool, tag: u32, done: WriteDone) -> Option<u64> {
        // The copy is made before the lock is taken: a 1 MiB copy under it would hold up the
        // stream's readers on the other session threads.
        let chunk: Option<Chunk> = (!data.is_empty()).then(|| Arc::from(data));
        self.with_state(move |st, deferred| {
            let Some(chunk) = chunk.filter(|_| !st.removed) else {
                let result = if st.removed {
                    Err(StreamError::Removed)
                } else {
                    Ok(())
                };
                deferred.dones.push((done, result));
                return (None, 0);
            };
            let block = st.policy.slow_reader == SlowReader::Block;
            if block && (!st.blocked.is_empty() || !st.all_fit(chunk_cost(chunk.len()), continues))
            {
                let id = st.next_id;
                st.next_id += 1;
                st.blocked.push_back(BlockedWrite {
                    id,
                    tag,
                    chunk,
                    continues,
                    done,
                });
                self.parked_total.fetch_add(1, Ordering::Relaxed);
                return (Some(id), 0);
            }
            deferred.writer_first = chunk.len() >= WRITER_FIRST_BYTES;
            let completed = st.apply(chunk, continues, deferred);
            deferred.dones.push((done, Ok(())));
            (None, completed)
        })
    }

    /// Reads up to `max` bytes for reader `id`, now or later (see [`Reader::read`]).
    fn read(&self, id: u64, max: usize, mode: ReadMode, tag: u32, deliver: Deliver) -> Option<u64> {
        debug_assert!(max > 0, "a zero-length read never reaches the core");
        self.with_state(move |st, deferred| {
            let read_id = st.next_id;
            let r = st
                .reader_mut(id)
                .expect("a Reader is registered until it is dropped");
            let outcome = if !r.queue.is_empty() {
                ReadOutcome::Data(r.take(max))
            } else if r.ended {
                ReadOutcome::Eof
            } else if mode == ReadMode::NonBlocking {
                ReadOutcome::WouldBlock
            } else {
                r.parked.push_back(Parked {
                    id: read_id,
                    tag,
                    max,
                    deliver,
                });
                st.next_id += 1;
                self.parked_total.fetch_add(1, Ordering::Relaxed);
                return (Some(read_id), 0);
            };
            let freed_room = matches!(outcome, ReadOutcome::Data(_));
            deferred.answers.push((deliver, outcome));
            let completed = if freed_room {
                st.release_blocked(deferred)
            } else {
                0
            };
            (None, completed)
        })
    }

    /// Answers a parked read with [`ReadOutcome::Interrupted`] if it is still parked.
    /// Returns whether it was.
    pub fn cancel_read(&self, reader: u64, read: u64) -> bool {
        self.with_state(|st, deferred| {
            let Some(r) = st.reader_mut(reader) else {
                return (false, 0);
            };
            let Some(pos) = r.parked.iter().position(|p| p.id == read) else {
                return (false, 0);
            };
            let p = r.parked.remove(pos).expect("position is in range");
            deferred.answers.push((p.deliver, ReadOutcome::Interrupted));
            (true, 1)
        })
    }

    /// Answers a blocked write with [`StreamError::Interrupted`] if it is still waiting;
    /// nothing of it was written. Returns whether it was waiting.
    pub fn cancel_write(&self, write: u64) -> bool {
        self.with_state(|st, deferred| {
            let Some(pos) = st.blocked.iter().position(|w| w.id == write) else {
                return (false, 0);
            };
            let w = st.blocked.remove(pos).expect("position is in range");
            deferred.dones.push((w.done, Err(StreamError::Interrupted)));
            // Writes behind it may fit now.
            (true, 1 + st.release_blocked(deferred))
        })
    }

    /// The parked reads, for a watchdog.
    pub fn parked_reads(&self) -> Vec<ParkedRead> {
        let st = self.lock();
        st.readers
            .iter()
            .flat_map(|r| {
                r.parked.iter().map(|p| ParkedRead {
                    reader: r.id,
                    read: p.id,
                    tag: p.tag,
                })
            })
            .collect()
    }

    /// The blocked writes as (write id, tag), for a watchdog.
    pub fn blocked_writes(&self) -> Vec<(u64, u32)> {
        self.lock().blocked.iter().map(|w| (w.id, w.tag)).collect()
    }

    /// Ends the stream: parked reads get EOF, blocked writes `Removed`, pollers wake, writes
    /// fail from now on. Idempotent.
    pub fn remove(&self) {
        self.with_state(|st, deferred| {
            if st.removed {
                return ((), 0);
            }
            st.removed = true;
            let mut completed = 0;
            for r in st.readers.iter_mut() {
                completed += r.end(deferred);
            }
            for w in st.blocked.drain(..) {
                completed += 1;
                deferred.dones.push((w.done, Err(StreamError::Removed)));
            }
            st.clear_ring();
            ((), completed)
        })
    }

    /// Changes the budgets; the ring is trimmed at once, queues keep what they hold.
    pub fn set_budgets(&self, budgets: Budgets) {
        self.update_budgets(|b| *b = budgets)
    }

    /// Changes the budgets with `f` under the stream's lock, so that concurrent changes of
    /// different budgets all hold; otherwise as [`Stream::set_budgets`].
    pub fn update_budgets(&self, f: impl FnOnce(&mut Budgets)) {
        self.with_state(|st, deferred| {
            f(&mut st.budgets);
            st.trim_ring();
            ((), st.release_blocked(deferred))
        })
    }

    /// Changes the policies; writes blocked under `Block` are released when it is left.
    pub fn set_policy(&self, policy: Policy) {
        self.update_policy(|p| *p = policy)
    }

    /// Changes the policies with `f` under the stream's lock; otherwise as
    /// [`Stream::set_policy`].
    pub fn update_policy(&self, f: impl FnOnce(&mut Policy)) {
        self.with_state(|st, deferred| {
            f(&mut st.policy);
            ((), st.release_blocked(deferred))
        })
    }

    pub fn stats(&self) -> StreamStats {
        let st = self.lock();
        StreamStats {
            written_bytes: st.written,
            writes: st.writes,
            readers: st.readers.iter().filter(|r| !r.disconnected).count(),
            writers: st.writers,
            ring_bytes: st.ring_bytes,
            ring_start: st.written - st.ring_bytes,
            dropped_writes: st.dropped_writes,
            dropped_bytes: st.dropped_bytes,
            blocked_writes: st.blocked.len(),
            removed: st.removed,
            budgets: st.budgets,
            policy: st.policy,
            write_rate: st.write_rate(),
            mtime: st.mtime,
        }
    }

    /// Every reader's label and counters.
    pub fn reader_stats(&self) -> Vec<(String, ReaderStats)> {
        let st = self.lock();
        st.readers
            .iter()
            .map(|r| (r.label.clone(), r.stats()))
            .collect()
    }
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

/// An open reader. Dropping it unregisters it; it must not be dropped while one of its reads
/// is parked (the kernel never releases a file with a read in flight), but if it is, those
/// reads get EOF.
pub struct Reader {
    stream: Arc<Stream>,
    id: u64,
}

impl Reader {
    /// Reads up to `max` (> 0) bytes. `deliver` is called exactly once: at once, before this
    /// returns, when bytes are queued, the reader ended or `mode` is non-blocking; later
    /// otherwise. Returns the parked read's id when it parked. `tag` is kept with a parked
    /// read for [`Stream::parked_reads`].
    pub fn read(&self, max: usize, mode: ReadMode, tag: u32, deliver: Deliver) -> Option<u64> {
        self.stream.read(self.id, max, mode, tag, deliver)
    }

    /// Reports readiness and keeps `wake` (replacing an earlier one) to be called when the
    /// reader next becomes readable from empty, or ends; edge-triggered pollers need it even
    /// when the reader is readable now.
    pub fn poll(&self, wake: Wake) -> Readiness {
        let mut st = self.stream.lock();
        let r = st
            .reader_mut(self.id)
            .expect("a Reader is registered until it is dropped");
        // Keep the poller even when readable: an edge-triggered epoll polls once per event,
        // so the next one (a write to the emptied queue, or the end) must notify it.
        r.wake = Some(wake);
        if !r.queue.is_empty() {
            Readiness::Readable
        } else if r.ended {
            Readiness::Ended
        } else {
            Readiness::Waiting
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    pub fn stats(&self) -> ReaderStats {
        let mut st = self.stream.lock();
        st.reader_mut(self.id)
            .map(|r| r.stats())
            .unwrap_or_default()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let state = self.stream.with_state(|st, deferred| {
            let Some(pos) = st.readers.iter().position(|r| r.id == self.id) else {
                return (None, 0);
            };
            let mut state = st.readers.swap_remove(pos);
            let unparked = state.end(deferred);
            // Its queue no longer holds writers back.
            (Some(state), unparked + st.release_blocked(deferred))
        });
        if let Some(state) = state {
            let s = &state.stats;
            log::info!(
                "reader {} closed: {} bytes read, {} writes ({} bytes) dropped",
                state.label,
                s.delivered_bytes,
                s.dropped_writes,
                s.dropped_bytes
            );
        }
    }
}

/// An open writer: counts as a writer of the stream while it lives.
pub struct Writer {
    stream: Arc<Stream>,
}

impl Writer {
    /// Appends `data` as one atomic write, or, under policy `Block` when a reader lacks
    /// room, parks it until every reader has room (returning its id for
    /// [`Stream::cancel_write`]). `done` is called exactly once. `continues` marks a request
    /// that may be the continuation of this writer's previous call (the kernel split one
    /// `write()`); `tag` is kept with a parked write for [`Stream::blocked_writes`].
    pub fn submit(&self, data: &[u8], continues: bool, tag: u32, done: WriteDone) -> Option<u64> {
        self.stream.submit(data, continues, tag, done)
    }

    /// [`Writer::submit`] that waits for a parked write on this thread.
    pub fn write(&self, data: &[u8], continues: bool) -> Result<(), StreamError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(
            data,
            continues,
            0,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(StreamError::Interrupted))
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stream.with_state(|st, deferred| {
            st.writers -= 1;
            let mut unparked = 0;
            if st.writers == 0 && st.policy.on_writer_close == OnWriterClose::Eof {
                // The session is over: its readers finish, the next writer starts afresh.
                for r in st.readers.iter_mut().filter(|r| !r.ended) {
                    unparked += r.end(deferred);
                }
                st.clear_ring();
            }
            ((), unparked)
        });
    }
}
