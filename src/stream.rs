//! Live byte streams: fanout to independent readers, a replay ring for late joiners, byte
//! budgets and drop accounting. This module knows nothing of FUSE, HTTP, the kernel or
//! errnos; each front door maps its results onto its own requests.
//!
//! # The contract
//!
//! ## Writing
//! A write appends its bytes to the stream; there are no offsets. A write is atomic: every
//! reader that receives it receives all of it, at one place in the one order of writes that
//! the stream's lock defines, so no two writes interleave and every reader sees the writes in
//! the same order. Readers differ only by where they started and which writes they dropped.
//!
//! A write may be made of several pieces (the kernel splits a `write()` larger than one
//! request; an HTTP body arrives in frames): the pieces form a *unit* of their [`Writer`],
//! begun and extended by [`Writer::append`], applied whole by [`Writer::finish`] (or by
//! [`Writer::submit`] with the last piece), and discarded by [`Writer::abandon`] or when the
//! writer is dropped. Until it is finished nothing of it reaches a reader, and other writers'
//! writes go on; it takes its place in the order when it is finished. A unit is at most
//! [`MAX_WRITE`] bytes: a larger one is applied in units of that size, each atomic (as a pipe
//! is atomic only up to `PIPE_BUF`).
//!
//! ## Replay for late joiners
//! The stream keeps a ring of its newest whole writes whose data bytes total at most the
//! ring budget, and that count at most one per [`RING_BYTES_PER_WRITE`] bytes of it; the
//! newest write is kept even when it is larger on its own. A ring budget of 0 disables
//! replay. [`Stream::open_reader`] queues the ring's contents for the new reader
//! under the same lock that registers it, so the reader gets the history and then the live
//! data with no gap and no duplicate. Replayed chunks are not counted against the reader's
//! channel budget: history is never dropped for being larger than it.
//!
//! ## Slow readers and drops
//! Each reader has a channel budget in data bytes. A write is queued for a reader when the
//! reader's queued live bytes plus the write fit within the budget and its queue stays
//! within its bound of runs (below), or when the reader has nothing live queued (so a
//! write larger than the budget, up to [`MAX_WRITE`], still reaches a reader that keeps
//! up). What happens otherwise is the stream's [`SlowReader`] policy:
//! - `Drop` (default): the write is dropped for that reader only and counted, per reader and
//!   per stream. The writer never waits for a reader.
//! - `Block`: lossless, like a pipe. The write waits (parked, holding no thread) until every
//!   reader has room; later writes queue behind it in order. A parked write can be
//!   cancelled ([`Stream::cancel_write`]), and then nothing of it was written. A front door
//!   whose waiting writes hold something others need bounds the wait with
//!   [`Stream::expire_blocked`], which cuts off the readers waited for too long.
//! - `Disconnect`: the overflowing reader is cut off: it reads what it had queued, then EOF,
//!   and receives and counts nothing more.
//!
//! ## Costs and memory
//! Budgets count data bytes: the bytes written, not their bookkeeping. Where a write is
//! stored is kept apart from where it begins:
//! - a write shorter than 4 KiB is copied into the stream's open block (up to 16 KiB, then
//!   sealed into a chunk); a longer one keeps its chunk, which a read of it shares without
//!   a copy (a read of the open block copies);
//! - the ring is an index: one 16-byte boundary record per write (offset, arrival time,
//!   whether a line begins there) and one segment per block or chunk it holds. Keeping at
//!   most one write per [`RING_BYTES_PER_WRITE`] bytes of budget bounds that index by the
//!   budget, while writes of 16 bytes or more fill the ring with data;
//! - a reader's queue is a list of runs (contiguous bytes of one block or chunk, with the
//!   count of writes that begin in each); the writes it takes one after the other from the
//!   open block extend one run, so a queue costs per run of writes, not per write. A queue
//!   holds at most one live run per [`CHANNEL_BYTES_PER_RUN`] bytes of its channel budget
//!   (and 16 whatever the budget), which only a reader whose writes are cut apart by drops
//!   meets.
//!
//! So a flood of 1-byte writes cannot grow memory past a small multiple of the budgets
//! (about 3 × the ring plus 3 × the channel budget of each reader). Blocks and chunks are
//! stored once and shared by reference between the ring and every reader's queue, and
//! charged once, with every piece of bookkeeping (boundary records, segments, runs), to the
//! namespace's memory [`Pool`], which holds the whole daemon within `max_memory` (see
//! `memory.rs` for what is shed first).
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

mod handles;
mod inline;
mod queue;
mod resolve;
mod shed;
mod state;
mod store;
mod types;

pub use handles::{Reader, Writer};
pub use queue::CHANNEL_BYTES_PER_RUN;
pub use store::{RING_BYTES_PER_WRITE, RING_ENTRY_COST};
pub use types::*;

use std::time::SystemTime;

pub use crate::memory::{CHUNK_OVERHEAD, Chunk, Pool, chunk_cost};
pub use crate::start::{Align, Origin, Start};
use crate::sync::{Arc, Mutex, MutexGuard, Ordering};
use queue::{Label, ReaderState};
use state::{BlockedWrite, Deferred, Fate, Parked, State};

/// One live stream. Shared by the namespace and every open handle; it outlives its name
/// while handles are open.
pub struct Stream {
    /// The stream's identity, never reused within a namespace.
    id: u64,
    state: Mutex<State>,
    /// The namespace's memory, reader count and parked-operation count.
    pool: Arc<Pool>,
    /// Where writes go instead of being applied, when an engine shares the stream with other
    /// hosts (see `engine.rs`); set once, when the stream is attached.
    publisher: std::sync::OnceLock<Arc<dyn crate::engine::Publisher>>,
    /// The media type front doors announce for the stream (`content_type`); opaque here.
    content_type: Mutex<Option<std::sync::Arc<str>>>,
}

impl Stream {
    /// A new, empty stream charged to `pool`.
    pub fn new(id: u64, budgets: Budgets, meta: Meta, pool: Arc<Pool>) -> Arc<Stream> {
        Stream::with_policy(id, budgets, Policy::default(), meta, pool)
    }

    /// A new, empty stream with `policy`.
    pub fn with_policy(
        id: u64,
        budgets: Budgets,
        policy: Policy,
        meta: Meta,
        pool: Arc<Pool>,
    ) -> Arc<Stream> {
        pool.charge(crate::memory::STREAM_COST);
        let s = Arc::new(Stream {
            id,
            state: Mutex::new(State::new(budgets, policy, meta, pool.clone())),
            pool,
            publisher: std::sync::OnceLock::new(),
            content_type: Mutex::new(None),
        });
        s.pool.register_stream(&s);
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Runs `f` under the lock, then (unlocked) the work it deferred; `f` also returns how
    /// many parked operations it completed.
    fn with_state<T>(&self, f: impl FnOnce(&mut State, &Pool, &mut Deferred) -> (T, usize)) -> T {
        let mut deferred = Deferred::default();
        let out = {
            let mut st = self.lock();
            let (out, completed) = f(&mut st, &self.pool, &mut deferred);
            if completed > 0 {
                self.pool
                    .parked_total
                    .fetch_sub(completed, Ordering::Relaxed);
            }
            out
        };
        deferred.run();
        out
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
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

    /// Registers a reader at the stream's default start (see [`Stream::open_reader_at`]).
    pub fn open_reader(self: &Arc<Self>, label: String) -> Result<Reader, StreamError> {
        self.open_reader_at(label, self.default_start())
    }

    /// Where a reader that names no start begins (the `start` setting).
    pub fn default_start(&self) -> Start {
        self.lock().policy.start
    }

    /// Registers a reader that starts at `start` (resolved at the stream's `replay_align`),
    /// queueing the ring's history from there for it first, atomically with the
    /// registration: history, then live data, with no gap and no duplicate. A reader of a
    /// removed stream, or of a snapshot, reads EOF after its replay. Fails when the
    /// namespace has `max_readers` readers, and with `TooOld` for an offset older than the
    /// ring. The queue entries of the replay are charged to the pool first (shedding if need
    /// be: a reader that joins a full daemon may get less history, or none).
    pub fn open_reader_at(
        self: &Arc<Self>,
        label: String,
        start: Start,
    ) -> Result<Reader, StreamError> {
        self.pool.add_reader()?;
        let added = ReaderCount(&self.pool);
        // Room for the replay's queue runs, and for this reader's runs of the writes
        // parked under `Block` (charged with them: see `submit_parts`).
        let estimate = {
            let mut st = self.lock();
            st.trim_ring();
            let parked: usize = st.blocked.iter().map(|w| w.parts.len()).sum();
            (st.segs.len() + parked) as u64 * crate::memory::ENTRY_COST
        };
        let reserved = self.pool.reserve(estimate).is_ok();
        let mut st = self.lock();
        let keyframes: Vec<u64> = st.keyframes.iter().copied().collect();
        let position = match st.resolve(start, st.policy.align, &keyframes) {
            // Writes parked under `Block` will reach this reader too, and their runs could
            // not be charged: a full daemon refuses the reader rather than pass its limit
            // when they are released.
            Ok(_) if !reserved && !st.blocked.is_empty() => Err(StreamError::NoMemory),
            r => r,
        };
        let position = match position {
            Ok(p) => p,
            Err(e) => {
                if reserved {
                    self.pool.refund(estimate);
                }
                return Err(e);
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        let (from, skip_until) = match position {
            // An offset ahead needs no replay, whatever the room.
            state::Position::Ahead(o) => (st.written, o),
            // Without room for its replay's runs it starts live.
            _ if !reserved => (st.written, 0),
            state::Position::At(p) => (p, 0),
        };
        let queue: inline::InlineDeque<_> = if reserved {
            st.replay_from(from).into()
        } else {
            Default::default()
        };
        let fate = if st.removed || start.snapshot {
            Fate::Ended
        } else {
            Fate::Open
        };
        let mut charged = 0;
        if fate == Fate::Open {
            for w in st.blocked.iter_mut() {
                let more = w.parts.len() as u64 * crate::memory::ENTRY_COST;
                w.entries += more;
                charged += more;
            }
        }
        // What was reserved goes back; what is charged is what the queue and the parked
        // writes now hold (the ring may have changed between the estimate and the copy).
        self.pool.charge(charged);
        if reserved {
            self.pool.refund(estimate);
        }
        let replay_left = queue.len() as u32;
        let queued = queue.iter().map(|r| r.len() as u64).sum::<u64>();
        std::mem::forget(added);
        let mut reader = ReaderState {
            id,
            label: Label::new(label),
            queue,
            queued,
            replay_left,
            live: 0,
            fate,
            one_run: false,
            start: if skip_until > 0 { skip_until } else { from },
            skip_until,
            parked: Default::default(),
            delivered: 0,
            rare: None,
            pool: self.pool.clone(),
            charged: 0,
        };
        reader.sync();
        debug_assert!(st.readers.last().is_none_or(|r| r.id < id), "ids only grow");
        st.readers.push(Box::new(reader));
        Ok(Reader {
            stream: self.clone(),
            id,
        })
    }

    /// The offset `start` would begin at now, and the stream's end: what a snapshot of it
    /// holds is the difference.
    pub fn resolve(&self, start: Start) -> Result<(u64, u64), StreamError> {
        let mut st = self.lock();
        st.trim_ring();
        let end = st.written;
        let keyframes: Vec<u64> = st.keyframes.iter().copied().collect();
        match st.resolve(start, st.policy.align, &keyframes)? {
            state::Position::At(p) => Ok((p, end)),
            state::Position::Ahead(o) => Ok((o, end)),
        }
    }

    /// Applies the writes that have waited `limit` or longer for room under
    /// `slow_reader=block`: the readers they wait for are cut off (as `disconnect` would:
    /// their queue, then EOF) rather than hold them longer. For a front door whose waiting
    /// writers hold something others need (the kernel holds a file's inode lock during a
    /// write). Returns whether any was applied.
    pub fn expire_blocked(&self, limit: std::time::Duration) -> bool {
        let deadline = state::clock().saturating_sub(limit.as_nanos() as u64);
        self.with_state(|st, pool, deferred| {
            let completed = st.expire_blocked(deadline, pool, deferred);
            (completed > 0, completed)
        })
    }

    /// Registers a writer (for counting, and for `on_writer_close`).
    pub fn open_writer(self: &Arc<Self>) -> Writer {
        self.lock().writers += 1;
        Writer {
            stream: self.clone(),
            unit: Mutex::new(Vec::new()),
            reserved: crate::sync::AtomicU64::new(0),
        }
    }

    /// Applies one whole write, or parks it under policy `Block` (see [`Writer::submit`]).
    fn submit_parts(&self, parts: Vec<Chunk>, tag: u32, done: WriteDone) -> Option<u64> {
        self.with_state(move |st, pool, deferred| {
            if st.removed {
                deferred.dones.push((done, Err(StreamError::Removed)));
                return (None, 0);
            }
            if parts.is_empty() {
                deferred.dones.push((done, Ok(())));
                return (None, 0);
            }
            let block = st.policy.slow_reader == SlowReader::Block;
            let len = parts.iter().map(|c| c.len() as u64).sum();
            if block && (!st.blocked.is_empty() || !st.all_fit(len, parts.len())) {
                let id = st.next_id;
                st.next_id += 1;
                // Its queue runs and ring entry are charged now, while the pool can still
                // refuse the next write: released together later, parked writes would
                // otherwise charge them all at once, past the limit.
                let entries = parts.len() as u64
                    * (st.open_readers() as u64 * crate::memory::ENTRY_COST + RING_ENTRY_COST);
                pool.charge(entries);
                st.blocked.push_back(BlockedWrite {
                    id,
                    tag,
                    since: state::clock(),
                    parts,
                    done,
                    entries,
                });
                pool.parked_total.fetch_add(1, Ordering::Relaxed);
                return (Some(id), 0);
            }
            let completed = st.apply(parts, pool, deferred);
            deferred.dones.push((done, Ok(())));
            (None, completed)
        })
    }

    /// Reads up to `max` bytes for reader `id`, now or later (see [`Reader::read`]).
    fn read(&self, id: u64, max: usize, mode: ReadMode, tag: u32, deliver: Deliver) -> Option<u64> {
        debug_assert!(max > 0, "a zero-length read never reaches the core");
        self.with_state(move |st, pool, deferred| {
            let read_id = st.next_id;
            let taken = st.take(id, max);
            let r = st
                .reader_mut(id)
                .expect("a Reader is registered until it is dropped");
            let outcome = if let Some(data) = taken {
                ReadOutcome::Data(data)
            } else if r.fate != Fate::Open {
                ReadOutcome::Eof
            } else if mode == ReadMode::NonBlocking {
                ReadOutcome::WouldBlock
            } else {
                // Readers park one read at a time but for a few (threads sharing a file):
                // the first is held in the reader's record.
                r.parked.push_back(Parked {
                    id: read_id,
                    tag,
                    max,
                    deliver,
                });
                st.next_id += 1;
                pool.parked_total.fetch_add(1, Ordering::Relaxed);
                return (Some(read_id), 0);
            };
            let freed_room = matches!(outcome, ReadOutcome::Data(_));
            deferred.answers.push((deliver, outcome));
            let completed = if freed_room {
                st.release_blocked(pool, deferred)
            } else {
                0
            };
            (None, completed)
        })
    }

    /// Takes what reader `id` has queued, without waiting: up to `max` bytes in at most
    /// `pieces` reads, appended to `out`, each a range of one run (see
    /// [`Reader::read_runs`]). Tells what is left.
    fn read_runs(&self, id: u64, max: usize, pieces: usize, out: &mut Vec<Bytes>) -> Readiness {
        self.with_state(move |st, pool, deferred| {
            let mut got = 0;
            let mut taken = false;
            while got < max && out.len() < pieces {
                let Some(data) = st.take(id, max - got) else {
                    break;
                };
                got += data.len();
                out.push(data);
                taken = true;
            }
            let left = st
                .reader_mut(id)
                .expect("a Reader is registered until it is dropped")
                .readiness();
            let completed = if taken {
                st.release_blocked(pool, deferred)
            } else {
                0
            };
            (left, completed)
        })
    }

    /// Answers a parked read with [`ReadOutcome::Interrupted`] if it is still parked.
    /// Returns whether it was.
    pub fn cancel_read(&self, reader: u64, read: u64) -> bool {
        self.with_state(|st, _, deferred| {
            let Some(r) = st.reader_mut(reader) else {
                return (false, 0);
            };
            let Some(pos) = r.parked.iter().position(|p| p.id == read) else {
                return (false, 0);
            };
            let p = r.parked.remove(pos).expect("position is in range");
            r.parked.shrink();
            deferred.answers.push((p.deliver, ReadOutcome::Interrupted));
            (true, 1)
        })
    }

    /// Makes `publisher` take this stream's writes from now on (once; later calls are
    /// ignored). Its writes come back through [`Stream::apply_remote`].
    pub fn set_publisher(&self, publisher: Arc<dyn crate::engine::Publisher>) {
        let _ = self.publisher.set(publisher);
    }

    /// The publisher of a stream shared with other hosts.
    pub fn publisher(&self) -> Option<&Arc<dyn crate::engine::Publisher>> {
        self.publisher.get()
    }

    /// Applies one whole write that the engine delivers, in its order (a shared stream
    /// refuses `Block`, so it never parks). Returns false when the stream was removed.
    pub fn apply_remote(&self, parts: Vec<Chunk>) -> bool {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit_parts(
            parts,
            0,
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
        rx.try_recv().unwrap_or(true)
    }

    /// Counts `writes` writes (`bytes` bytes, when known) that this host lost before any of
    /// its readers could have them (the engine's retention evicted them, or a part of them),
    /// as dropped for the stream and for every reader that receives writes.
    pub fn count_lost(&self, writes: u64, bytes: u64) {
        let mut st = self.lock();
        st.dropped_writes += writes;
        st.dropped_bytes += bytes;
        for r in st.readers.iter_mut().filter(|r| r.fate == Fate::Open) {
            r.lose(writes, bytes);
        }
    }

    /// Answers a blocked write with [`StreamError::Interrupted`] if it is still waiting;
    /// nothing of it was written. Returns whether it was waiting.
    pub fn cancel_write(&self, write: u64) -> bool {
        if let Some(p) = self.publisher() {
            return p.cancel(write);
        }
        self.with_state(|st, pool, deferred| {
            let Some(pos) = st.blocked.iter().position(|w| w.id == write) else {
                return (false, 0);
            };
            let w = st.blocked.remove(pos).expect("position is in range");
            pool.refund(w.entries);
            deferred.dones.push((w.done, Err(StreamError::Interrupted)));
            // Writes behind it may fit now.
            (true, 1 + st.release_blocked(pool, deferred))
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
        self.with_state(|st, pool, deferred| {
            if st.removed {
                return ((), 0);
            }
            st.removed = true;
            let mut completed = 0;
            for r in st.readers.iter_mut().filter(|r| r.fate == Fate::Open) {
                completed += r.end(Fate::Ended, deferred);
            }
            for w in st.blocked.drain(..) {
                completed += 1;
                pool.refund(w.entries);
                deferred.dones.push((w.done, Err(StreamError::Removed)));
            }
            st.clear_ring();
            ((), completed)
        })
    }

    /// Keeps why the stream's last setting was refused, for its `last_error` attribute.
    pub fn set_last_error(&self, why: String) {
        self.lock().last_error = Some(why);
    }

    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The media type set for the stream (`None`: the front door's default).
    pub fn content_type(&self) -> Option<std::sync::Arc<str>> {
        self.content_type.lock().clone()
    }

    pub fn set_content_type(&self, value: Option<&str>) {
        *self.content_type.lock() = value.map(std::sync::Arc::from);
    }

    pub fn is_removed(&self) -> bool {
        self.lock().removed
    }

    /// Changes the budgets; the ring is trimmed at once, queues keep what they hold.
    pub fn set_budgets(&self, budgets: Budgets) {
        self.update_budgets(|b| *b = budgets)
    }

    /// Changes the budgets with `f` under the stream's lock, so that concurrent changes of
    /// different budgets all hold; otherwise as [`Stream::set_budgets`].
    pub fn update_budgets(&self, f: impl FnOnce(&mut Budgets)) {
        self.with_state(|st, pool, deferred| {
            f(&mut st.budgets);
            st.trim_ring();
            ((), st.release_blocked(pool, deferred))
        })
    }

    /// Changes the policies; writes blocked under `Block` are released when it is left.
    pub fn set_policy(&self, policy: Policy) {
        self.update_policy(|p| *p = policy)
    }

    /// Changes the policies with `f` under the stream's lock; otherwise as
    /// [`Stream::set_policy`].
    pub fn update_policy(&self, f: impl FnOnce(&mut Policy)) {
        self.with_state(|st, pool, deferred| {
            let was = st.policy.align;
            f(&mut st.policy);
            if st.policy.align == Align::MpegTs && was != Align::MpegTs {
                // Its history was not scanned as it was written.
                st.rescan_keyframes(deferred);
            }
            ((), st.release_blocked(pool, deferred))
        })
    }

    pub fn stats(&self) -> StreamStats {
        let st = self.lock();
        StreamStats {
            written_bytes: st.written,
            writes: st.writes,
            readers: st
                .readers
                .iter()
                .filter(|r| r.fate != Fate::Disconnected)
                .count(),
            writers: st.writers,
            ring_bytes: st.ring_bytes(),
            ring_start: st.ring_start(),
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
            .map(|r| (r.label.to_string(), r.stats()))
            .collect()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.pool.refund(crate::memory::STREAM_COST);
    }
}

/// Takes back a reader's place in the namespace's count unless forgotten (when the reader
/// was registered, its state gives it back).
struct ReaderCount<'a>(&'a Pool);

impl Drop for ReaderCount<'_> {
    fn drop(&mut self) {
        self.0.remove_reader();
    }
}
