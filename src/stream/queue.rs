//! A reader's queue: runs of contiguous bytes over the stream's shared storage, so that a
//! queue costs a few words per run of writes, not per write, and the reads that take from
//! it. Runs under the stream's lock; knows nothing of the ring or of write policies.

use std::time::Instant;

use super::inline::InlineDeque;
use super::state::{Deferred, Fate, Parked};
use super::store::{Store, sync_charge};
use super::{Bytes, ReadOutcome, ReaderStats, Readiness, Wake};
use crate::memory::{ENTRY_COST, Pool};
use crate::sync::Arc;

/// A reader's queue holds at most one live run per this many bytes of its channel budget
/// (and 16 runs whatever the budget): consecutive writes it takes share a run, so only a
/// reader whose writes are cut apart by drops meets this bound, and its queue's index then
/// stays within the budget's size.
pub const CHANNEL_BYTES_PER_RUN: u64 = 32;

/// Live runs a queue may hold whatever its channel budget.
const MIN_RUNS: u64 = 16;

/// Bytes `start..end` of a store, queued for a reader.
#[derive(Clone)]
pub(super) struct Run {
    pub store: Store,
    /// Offsets in the store (a store is at most [`super::MAX_WRITE`] or a block long).
    pub start: u32,
    pub end: u32,
    /// Writes that begin in the run.
    pub writes: u32,
    /// The run begins at a write's first byte (false once a read took part of it).
    pub first: bool,
}

impl Run {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// A registered reader's state. One per reader, mount or HTTP: what a listener of many
/// costs is mostly this, so what most readers never use is kept out of it.
pub(super) struct ReaderState {
    pub id: u64,
    /// Who opened it, for log lines ("pid 42 (cat)"), escaped by the front door.
    pub label: Label,
    /// Runs to deliver, oldest first; none is empty.
    pub queue: InlineDeque<Run>,
    /// Bytes not yet delivered: the lengths of `queue`. Kept rather than summed, since
    /// reads are frequent.
    pub queued: u64,
    /// Invariant: the first `replay_left` runs of `queue` came from the ring at open and
    /// are not counted in `live`.
    pub replay_left: u32,
    /// Bytes of the live (non-replay) runs: the figure compared with the channel budget.
    pub live: u64,
    pub fate: Fate,
    /// Each read ends at the end of the queue's front run rather than copy the bytes of
    /// several: for a front door that sends the runs it takes together
    /// ([`Reader::read_runs`](super::Reader::read_runs)).
    pub one_run: bool,
    /// Absolute offset of the first byte it was given (or is waiting for).
    pub start: u64,
    /// Live bytes before this offset are skipped: a reader that asked for an offset ahead
    /// of the stream's end receives from there on (0: none skipped).
    pub skip_until: u64,
    /// Reads waiting, oldest first. Invariant: non-empty only while `queue` is empty and
    /// the reader is open.
    pub parked: InlineDeque<Parked>,
    pub delivered: u64,
    /// What few readers have: a poller, drops. Made on first use.
    pub rare: Option<Box<Rare>>,
    /// Charged `ENTRY_COST` per run of `queue` (`charged` bytes now).
    pub pool: Arc<Pool>,
    pub charged: u64,
}

impl Drop for ReaderState {
    fn drop(&mut self) {
        self.pool.refund(self.charged);
        self.pool.remove_reader();
    }
}

/// What few readers have, kept out of the record that every reader has: a poller to wake
/// when the reader becomes readable or ends, and what it lost to its budget, the memory
/// limit or the engine's retention.
#[derive(Default)]
pub(super) struct Rare {
    pub wake: Option<Wake>,
    pub writes: u64,
    pub bytes: u64,
    /// Drops not yet reported in a warn line, and when the last line was written.
    pub unreported: u64,
    pub last_report: Option<Instant>,
}

/// A reader's label, held in the reader's record when it is short (a process, an address:
/// most are) rather than in an allocation of its own.
pub(super) enum Label {
    Short { len: u8, bytes: [u8; SHORT_LABEL] },
    Long(Box<str>),
}

/// The longest label held in the record: a process ("pid 4242 (ffmpeg)"), or a client with
/// a short agent ("http 192.168.1.20:54321 (curl/8.5.0)").
const SHORT_LABEL: usize = 38;

impl Label {
    pub fn new(s: String) -> Label {
        if s.len() <= SHORT_LABEL {
            let mut bytes = [0; SHORT_LABEL];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Label::Short {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Label::Long(s.into_boxed_str())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Label::Short { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied whole from a str")
            }
            Label::Long(s) => s,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ReaderState {
    pub fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Counts `writes` writes (`bytes` bytes) lost.
    pub fn lose(&mut self, writes: u64, bytes: u64) {
        let d = self.rare();
        d.writes += writes;
        d.bytes += bytes;
    }

    /// (writes, bytes) lost so far.
    pub fn dropped(&self) -> (u64, u64) {
        self.rare.as_ref().map_or((0, 0), |d| (d.writes, d.bytes))
    }

    pub fn take_wake(&mut self) -> Option<Wake> {
        self.rare.as_mut()?.wake.take()
    }

    pub fn queued_bytes(&self) -> u64 {
        debug_assert_eq!(
            self.queued,
            self.queue.iter().map(|r| r.len() as u64).sum::<u64>()
        );
        self.queued
    }

    /// Charges the pool what the queue holds now: `ENTRY_COST` per run, twice a run's 32
    /// bytes, since its spare capacity is kept within its length (`push_bounded`).
    pub fn sync(&mut self) {
        let now = self.queue.len() as u64 * ENTRY_COST;
        sync_charge(&self.pool, &mut self.charged, now);
    }

    fn live_runs(&self) -> usize {
        self.queue.len() - self.replay_left as usize
    }

    /// Whether `run` would extend the queue's last live run.
    fn merges(&self, run: &Run) -> bool {
        self.live_runs() > 0
            && self.queue.back().is_some_and(|b| {
                matches!((&b.store, &run.store), (Store::Open, Store::Open)) && b.end == run.start
            })
    }

    /// Whether a write of `len` bytes fits the budget `channel`: it does when its bytes
    /// fit and the runs it needs (`runs`, or at most `pieces` when it is not stored yet)
    /// keep the queue within its bound, and always when nothing live is queued (so a write
    /// larger than the budget still reaches a reader that keeps up).
    pub fn fits(&self, len: u64, runs: Result<&[Run], usize>, channel: u64) -> bool {
        if self.live == 0 {
            return true;
        }
        let new = match runs {
            Ok([one]) if self.merges(one) => 0,
            Ok(runs) => runs.len(),
            Err(pieces) => pieces,
        };
        let max_runs = (channel / CHANNEL_BYTES_PER_RUN).max(MIN_RUNS) as usize;
        self.live + len <= channel && self.live_runs() + new <= max_runs
    }

    /// Queues a live run, extending the last one when it continues it.
    pub fn push(&mut self, run: Run) {
        self.queued += run.len() as u64;
        self.live += run.len() as u64;
        if self.merges(&run) {
            let back = self.queue.back_mut().expect("merges");
            back.end = run.end;
            back.writes += run.writes;
        } else {
            self.queue.push_back(run);
        }
    }

    /// Takes up to `max` queued bytes (the open block's bytes are `open`). Precondition:
    /// the queue is non-empty. A read that ends within a sealed front run shares it (no
    /// copy); one that spans runs, or reads the open block, copies. With `one_run`, a read
    /// never spans runs: it shares a sealed one, copies the open block's.
    pub fn take(&mut self, max: usize, open: &[u8]) -> Bytes {
        debug_assert!(!self.queue.is_empty() && max > 0);
        let front = self.queue.front().expect("precondition");
        let out = match &front.store {
            Store::Sealed(c) if front.len() >= max || self.queue.len() == 1 || self.one_run => {
                let n = front.len().min(max);
                let bytes = Bytes::shared(c.clone(), front.start as usize, n);
                self.advance(n);
                bytes
            }
            _ => {
                let mut out = Vec::with_capacity(max.min(self.queued as usize));
                while out.len() < max && (out.is_empty() || !self.one_run) {
                    let Some(front) = self.queue.front() else {
                        break;
                    };
                    let avail = &front.store.bytes(open)[front.start as usize..front.end as usize];
                    let n = avail.len().min(max - out.len());
                    out.extend_from_slice(&avail[..n]);
                    self.advance(n);
                }
                Bytes::from(out)
            }
        };
        self.delivered += out.len() as u64;
        self.queue.shrink();
        self.sync();
        out
    }

    /// Marks `n` bytes of the front run delivered, at most its length.
    fn advance(&mut self, n: usize) {
        let front = self.queue.front_mut().expect("a queued run");
        debug_assert!(n <= front.len());
        front.start += n as u32;
        front.first = false;
        let done = front.len() == 0;
        self.queued -= n as u64;
        if self.replay_left == 0 {
            self.live -= n as u64;
        }
        if done {
            self.queue.pop_front();
            self.replay_left = self.replay_left.saturating_sub(1);
        }
    }

    /// Ends the reader: parked reads get EOF, a poller wakes. Returns the reads unparked.
    pub fn end(&mut self, fate: Fate, deferred: &mut Deferred) -> usize {
        self.fate = fate;
        let n = self.parked.len();
        for p in self.parked.drain_from(0) {
            deferred.answers.push((p.deliver, ReadOutcome::Eof));
        }
        // An ended reader's record stays until its handle closes: no spill kept for it.
        self.parked.shrink();
        if let Some(w) = self.take_wake() {
            deferred.wakes.push(w);
        }
        n
    }

    /// Drops every queued write but a partly delivered front run (which stays whole, with
    /// the pieces that continue its write), to free memory. Returns (writes, bytes)
    /// dropped.
    pub fn shed_queue(&mut self) -> (u64, u64) {
        let started = self.queue.front().is_some_and(|r| !r.first);
        let keep = if started {
            1 + self.queue.iter().skip(1).take_while(|r| !r.first).count()
        } else {
            0
        };
        let (mut writes, mut bytes) = (0u64, 0u64);
        for r in self.queue.drain_from(keep) {
            writes += u64::from(r.writes);
            bytes += r.len() as u64;
        }
        self.replay_left = self.replay_left.min(keep as u32);
        self.queued -= bytes;
        self.live = self
            .queue
            .iter()
            .skip(self.replay_left as usize)
            .map(|r| r.len() as u64)
            .sum();
        self.queue.shrink();
        self.sync();
        (writes, bytes)
    }

    /// What a read would find: bytes, the end, or nothing yet.
    pub fn readiness(&self) -> Readiness {
        if !self.queue.is_empty() {
            Readiness::Readable
        } else if self.fate != Fate::Open {
            Readiness::Ended
        } else {
            Readiness::Waiting
        }
    }

    pub fn stats(&self) -> ReaderStats {
        let (dropped_writes, dropped_bytes) = self.dropped();
        ReaderStats {
            delivered_bytes: self.delivered,
            queued_bytes: self.queued_bytes(),
            live_cost: self.live,
            live_runs: self.live_runs(),
            dropped_writes,
            dropped_bytes,
            disconnected: self.fate == Fate::Disconnected,
            parked_reads: self.parked.len(),
            start: self.start,
        }
    }
}

/// Answers a reader's parked reads from its queue, which was empty, and wakes its poller.
/// Returns the reads answered.
pub(super) fn answer_parked(r: &mut ReaderState, open: &[u8], deferred: &mut Deferred) -> usize {
    let mut unparked = 0;
    while !r.queue.is_empty() {
        let Some(p) = r.parked.pop_front() else {
            break;
        };
        unparked += 1;
        let data = r.take(p.max, open);
        deferred.answers.push((p.deliver, ReadOutcome::Data(data)));
    }
    r.parked.shrink();
    if let Some(w) = r.take_wake() {
        deferred.wakes.push(w);
    }
    unparked
}
