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
//! request) arrives as several calls, the later ones flagged `continues`. A reader that took
//! the first part also takes the continuation even past its budget (up to twice the
//! budget), so that it does not receive a write without its tail.
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
//! up). Otherwise the write is dropped for that reader only and counted, per reader and per
//! stream. The writer never waits for a reader.
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
//! at once.

use std::collections::VecDeque;
use std::time::SystemTime;

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
    /// Live bytes (with overhead) a reader may have queued before writes are dropped for it.
    pub channel: u64,
    /// Bytes (with overhead) of history kept for late joiners; 0 disables replay.
    pub ring: u64,
}

/// How a read finished.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Bytes, never empty.
    Data(Vec<u8>),
    /// The stream was removed and everything queued was read.
    Eof,
    /// Non-blocking read with nothing queued.
    WouldBlock,
    /// A parked read was cancelled by [`Stream::cancel_read`].
    Interrupted,
}

/// Answers one read. Called exactly once, never under a stream lock.
pub type Deliver = Box<dyn FnOnce(ReadOutcome) + Send>;

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

/// A registered reader's state, kept inside the stream's lock.
struct ReaderState {
    id: u64,
    /// Who opened it, for log lines ("pid 42 (cat)").
    label: String,
    /// Chunks to deliver, oldest first; `front_off` bytes of the front one are delivered.
    queue: VecDeque<Chunk>,
    /// Invariant: `front_off < queue.front().len()` when the queue is non-empty, else 0.
    front_off: usize,
    /// Invariant: the first `replay_left` chunks of `queue` came from the ring at open and
    /// are not counted in `live_cost`.
    replay_left: usize,
    /// Sum of `chunk_cost` over the live (non-replay) chunks in `queue`.
    live_cost: u64,
    /// Whether this reader took the most recent write; a continuation follows its fate.
    took_last: bool,
    /// Reads waiting, oldest first. Invariant: non-empty only while `queue` is empty and the
    /// stream is not removed.
    parked: VecDeque<Parked>,
    /// A poller to wake when the reader becomes readable.
    wake: Option<Wake>,
    stats: ReaderStats,
    /// Drops not yet reported in a warn line, and when the last line was written.
    unreported_drops: u64,
    last_drop_report: Option<std::time::Instant>,
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
}

/// Counters and metadata of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// Total bytes ever written: the stream's end offset.
    pub written_bytes: u64,
    pub writes: u64,
    pub readers: usize,
    pub writers: usize,
    /// Bytes of history in the ring and the absolute offset of its oldest byte.
    pub ring_bytes: u64,
    pub ring_start: u64,
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    pub removed: bool,
    pub budgets: Budgets,
    /// Time of the last write (creation time before any).
    pub mtime: SystemTime,
}

/// A drop summary to log once the lock is released.
#[derive(Debug)]
struct DropReport {
    label: String,
    writes: u64,
    total: u64,
}

/// How often a reader's drops are summarised in the log at most.
const DROP_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Absolute offset of the end of the stream: bytes ever written. Never wraps in practice
    /// (u64 bytes).
    written: u64,
    writes: u64,
    readers: Vec<ReaderState>,
    writers: usize,
    next_id: u64,
    dropped_writes: u64,
    dropped_bytes: u64,
    removed: bool,
    mtime: SystemTime,
}

/// One live stream. Shared by the namespace and every open handle; it outlives its name
/// while handles are open.
pub struct Stream {
    /// The stream's identity, never reused within a namespace (the adapter's inode number).
    id: u64,
    state: Mutex<State>,
    /// Parked reads across every stream of the namespace, so that a watchdog can sleep while
    /// there are none. Incremented and decremented under `state`'s lock.
    parked_total: Arc<AtomicUsize>,
}

/// Work to do once the lock is released: answers, wake-ups, log lines.
#[derive(Default)]
struct Deferred {
    answers: Vec<(Deliver, ReadOutcome)>,
    wakes: Vec<Wake>,
    reports: Vec<DropReport>,
}

impl Deferred {
    fn run(self) {
        for r in self.reports {
            log::warn!(
                "reader {}: dropped {} writes ({} dropped in total): it reads slower than the stream is written",
                r.label,
                r.writes,
                r.total
            );
        }
        for (deliver, outcome) in self.answers {
            deliver(outcome);
        }
        for wake in self.wakes {
            wake();
        }
    }
}

impl ReaderState {
    fn queued_bytes(&self) -> u64 {
        self.queue.iter().map(|c| c.len() as u64).sum::<u64>() - self.front_off as u64
    }

    /// Takes up to `max` queued bytes. Precondition: the queue is non-empty.
    fn take(&mut self, max: usize) -> Vec<u8> {
        debug_assert!(!self.queue.is_empty() && max > 0);
        let mut out = Vec::with_capacity(max.min(self.queued_bytes() as usize));
        while out.len() < max {
            let Some(front) = self.queue.front() else {
                break;
            };
            let avail = &front[self.front_off..];
            let n = avail.len().min(max - out.len());
            out.extend_from_slice(&avail[..n]);
            if n == avail.len() {
                let len = front.len();
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
        self.stats.delivered_bytes += out.len() as u64;
        out
    }

    fn stats(&self) -> ReaderStats {
        ReaderStats {
            queued_bytes: self.queued_bytes(),
            live_cost: self.live_cost,
            ..self.stats.clone()
        }
    }
}

impl State {
    fn reader_mut(&mut self, id: u64) -> Option<&mut ReaderState> {
        self.readers.iter_mut().find(|r| r.id == id)
    }

    fn push_ring(&mut self, chunk: &Chunk, starts: bool) {
        if self.budgets.ring == 0 {
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
}

impl Stream {
    /// A new, empty stream. `parked_total` is the namespace-wide count of parked reads.
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
                meta,
                ring: VecDeque::new(),
                ring_cost: 0,
                ring_bytes: 0,
                ring_writes: 0,
                written: 0,
                writes: 0,
                readers: Vec::new(),
                writers: 0,
                next_id: 1,
                dropped_writes: 0,
                dropped_bytes: 0,
                removed: false,
                mtime: meta.crtime,
            }),
            parked_total,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
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
        st.readers.push(ReaderState {
            id,
            label,
            queue,
            front_off: 0,
            replay_left,
            live_cost: 0,
            took_last: false,
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

    /// Appends one write and fans it out. `continues` says the previous write call on the
    /// same handle may have been the first part of this one (see the module doc).
    fn write(&self, data: &[u8], continues: bool) -> Result<(), StreamError> {
        let mut deferred = Deferred::default();
        {
            let mut st = self.lock();
            if st.removed {
                return Err(StreamError::Removed);
            }
            if data.is_empty() {
                return Ok(());
            }
            let chunk: Chunk = Arc::from(data);
            let cost = chunk_cost(chunk.len());
            let len = chunk.len() as u64;
            st.written += len;
            st.writes += 1;
            st.mtime = SystemTime::now();
            st.push_ring(&chunk, !continues);
            let channel = st.budgets.channel;
            let mut dropped = 0u64;
            let now = std::time::Instant::now();
            for r in st.readers.iter_mut() {
                let fits = r.live_cost == 0 || r.live_cost + cost <= channel;
                let forced = continues && r.took_last && r.live_cost + cost <= 2 * channel;
                if fits || forced {
                    let was_empty = r.queue.is_empty();
                    r.queue.push_back(chunk.clone());
                    r.live_cost += cost;
                    r.took_last = true;
                    if was_empty {
                        // Parked reads exist only while the queue is empty: answer them.
                        while !r.queue.is_empty() {
                            let Some(p) = r.parked.pop_front() else {
                                break;
                            };
                            let data = r.take(p.max);
                            deferred.answers.push((p.deliver, ReadOutcome::Data(data)));
                        }
                        if let Some(w) = r.wake.take() {
                            deferred.wakes.push(w);
                        }
                    }
                } else {
                    r.took_last = false;
                    r.stats.dropped_writes += 1;
                    r.stats.dropped_bytes += len;
                    r.unreported_drops += 1;
                    dropped += 1;
                    let due = r
                        .last_drop_report
                        .is_none_or(|t| now.duration_since(t) >= DROP_REPORT_INTERVAL);
                    if due {
                        deferred.reports.push(DropReport {
                            label: r.label.clone(),
                            writes: r.unreported_drops,
                            total: r.stats.dropped_writes,
                        });
                        r.unreported_drops = 0;
                        r.last_drop_report = Some(now);
                    }
                }
            }
            st.dropped_writes += dropped;
            st.dropped_bytes += dropped * len;
            // Each answer unparked one read.
            self.parked_total
                .fetch_sub(deferred.answers.len(), Ordering::Relaxed);
        }
        deferred.run();
        Ok(())
    }

    /// Reads up to `max` bytes for reader `id`, now or later (see [`Reader::read`]).
    fn read(&self, id: u64, max: usize, mode: ReadMode, tag: u32, deliver: Deliver) -> Option<u64> {
        debug_assert!(max > 0, "a zero-length read never reaches the core");
        let outcome = {
            let mut st = self.lock();
            let removed = st.removed;
            let read_id = st.next_id;
            let r = st
                .reader_mut(id)
                .expect("a Reader is registered until it is dropped");
            if !r.queue.is_empty() {
                ReadOutcome::Data(r.take(max))
            } else if removed {
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
                return Some(read_id);
            }
        };
        deliver(outcome);
        None
    }

    /// Answers a parked read with [`ReadOutcome::Interrupted`] if it is still parked.
    /// Returns whether it was.
    pub fn cancel_read(&self, reader: u64, read: u64) -> bool {
        let deliver = {
            let mut st = self.lock();
            let Some(r) = st.reader_mut(reader) else {
                return false;
            };
            let Some(pos) = r.parked.iter().position(|p| p.id == read) else {
                return false;
            };
            let p = r.parked.remove(pos).expect("position is in range");
            self.parked_total.fetch_sub(1, Ordering::Relaxed);
            p.deliver
        };
        deliver(ReadOutcome::Interrupted);
        true
    }

    /// The parked reads as (reader id, read id, tag), for a watchdog.
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

    /// Ends the stream: parked reads get EOF, pollers wake, writes fail from now on.
    /// Idempotent.
    pub fn remove(&self) {
        let mut deferred = Deferred::default();
        {
            let mut st = self.lock();
            if st.removed {
                return;
            }
            st.removed = true;
            let mut unparked = 0;
            for r in st.readers.iter_mut() {
                for p in r.parked.drain(..) {
                    unparked += 1;
                    deferred.answers.push((p.deliver, ReadOutcome::Eof));
                }
                if let Some(w) = r.wake.take() {
                    deferred.wakes.push(w);
                }
            }
            self.parked_total.fetch_sub(unparked, Ordering::Relaxed);
            st.ring.clear();
            st.ring_cost = 0;
            st.ring_bytes = 0;
            st.ring_writes = 0;
        }
        deferred.run();
    }

    /// Changes the budgets; the ring is trimmed at once, queues keep what they hold.
    pub fn set_budgets(&self, budgets: Budgets) {
        let mut st = self.lock();
        st.budgets = budgets;
        st.trim_ring();
    }

    pub fn stats(&self) -> StreamStats {
        let st = self.lock();
        StreamStats {
            written_bytes: st.written,
            writes: st.writes,
            readers: st.readers.len(),
            writers: st.writers,
            ring_bytes: st.ring_bytes,
            ring_start: st.written - st.ring_bytes,
            dropped_writes: st.dropped_writes,
            dropped_bytes: st.dropped_bytes,
            removed: st.removed,
            budgets: st.budgets,
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
    /// Nothing is queued and the stream ended: a read returns EOF.
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
    /// returns, when bytes are queued, the stream ended or `mode` is non-blocking; later
    /// otherwise. Returns the parked read's id when it parked. `tag` is kept with a parked
    /// read for [`Stream::parked_reads`].
    pub fn read(&self, max: usize, mode: ReadMode, tag: u32, deliver: Deliver) -> Option<u64> {
        self.stream.read(self.id, max, mode, tag, deliver)
    }

    /// Reports readiness; when waiting, keeps `wake` (replacing an earlier one) to be called
    /// once the reader becomes readable or the stream ends.
    pub fn poll(&self, wake: Wake) -> Readiness {
        let mut st = self.stream.lock();
        let removed = st.removed;
        let r = st
            .reader_mut(self.id)
            .expect("a Reader is registered until it is dropped");
        if !r.queue.is_empty() {
            Readiness::Readable
        } else if removed {
            Readiness::Ended
        } else {
            r.wake = Some(wake);
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
        let state = {
            let mut st = self.stream.lock();
            let Some(pos) = st.readers.iter().position(|r| r.id == self.id) else {
                return;
            };
            st.readers.swap_remove(pos)
        };
        let n = state.parked.len();
        if n > 0 {
            self.stream.parked_total.fetch_sub(n, Ordering::Relaxed);
        }
        for p in state.parked {
            (p.deliver)(ReadOutcome::Eof);
        }
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

/// An open writer: counts as a writer of the stream while it lives.
pub struct Writer {
    stream: Arc<Stream>,
}

impl Writer {
    /// Appends `data` as one atomic write. `continues` marks a request that may be the
    /// continuation of this writer's previous call (the kernel split one `write()`).
    pub fn write(&self, data: &[u8], continues: bool) -> Result<(), StreamError> {
        self.stream.write(data, continues)
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stream.lock().writers -= 1;
    }
}
