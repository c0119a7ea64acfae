//! The state behind a stream's lock: the ring, the readers' queues, blocked writes, and the
//! one function that applies a write. Everything here runs under the stream's lock; what
//! must happen after it is released (answers, wake-ups, log lines) is collected in
//! [`Deferred`].

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::queue::{ReaderState, Run, answer_parked};
use super::store::{Bound, OpenBlock, Seg, Store};
use super::{
    Budgets, Bytes, Deliver, Meta, Policy, ReadOutcome, SlowReader, StreamError, Wake, WriteDone,
};
use crate::memory::{Chunk, Pool};
use crate::sync::Arc;

/// A read waiting for data.
pub(super) struct Parked {
    /// Unique within the stream; names the read for `Stream::cancel_read`.
    pub id: u64,
    /// Opaque to the core: the front door's identity of the waiting caller.
    pub tag: u32,
    /// Most bytes the read may return (at least 1).
    pub max: usize,
    pub deliver: Deliver,
}

/// A whole write waiting for room (policy `Block`).
pub(super) struct BlockedWrite {
    pub id: u64,
    pub tag: u32,
    /// When it parked ([`clock`]).
    pub since: u64,
    pub parts: Vec<Chunk>,
    pub done: WriteDone,
    /// Queue entries charged for it when it parked (refunded when it leaves the queue).
    pub entries: u64,
}

/// Nanoseconds on a monotonic clock shared by every stream of the process, so that the ages
/// of writes of different streams compare (shedding takes the oldest history first).
pub fn clock() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Whether a reader still receives writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    Open,
    /// No more writes reach it (removal, end of a writer session): its queue, then EOF.
    Ended,
    /// Cut off for falling behind (policy `Disconnect`): its queue, then EOF.
    Disconnected,
}

/// A log line to write once the lock is released.
#[derive(Debug)]
pub(super) enum Report {
    Drops {
        label: String,
        writes: u64,
        total: u64,
    },
    Disconnected {
        label: String,
        queued: u64,
    },
    /// Cut off because a blocked write waited too long for its room.
    CutOff {
        label: String,
        queued: u64,
        waited: std::time::Duration,
    },
    NotMpegTs,
}

/// Bytes of the open block from which a read shared with other readers seals it rather
/// than copying it (see [`State::take`]): a chunk's overhead is then at most 6% of its bytes.
const SEAL_FOR_READERS: usize = 1 << 10;

/// How often a reader's drops are summarised in the log at most.
const DROP_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Seconds of history the write rate is averaged over, besides the current one.
const RATE_SECONDS: u64 = 5;

/// Writes at least this large are answered before the reads they make answerable.
const WRITER_FIRST_BYTES: u64 = 256 << 10;

/// Work to do once the lock is released: answers, wake-ups, log lines.
#[derive(Default)]
pub(super) struct Deferred {
    pub answers: Vec<(Deliver, ReadOutcome)>,
    pub dones: Vec<(WriteDone, Result<(), StreamError>)>,
    pub wakes: Vec<Wake>,
    pub reports: Vec<Report>,
    /// Answer the writes before the reads. Waiting readers are answered first, since their
    /// latency is the stream's; but after a large write the writer is better released first,
    /// so that its next write is on its way while the readers' copies are made (15% more
    /// throughput with 1 MiB writes; no difference at 64 KiB; 25% lower latency for small
    /// messages the other way round).
    pub writer_first: bool,
}

impl Deferred {
    pub fn run(mut self) {
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
                Report::CutOff {
                    label,
                    queued,
                    waited,
                } => log::warn!(
                    "reader {label}: cut off (slow_reader=block): a write waited {:.1} s for its room; it reads the {queued} bytes queued, then EOF",
                    waited.as_secs_f64()
                ),
                Report::NotMpegTs => log::warn!(
                    "a stream with replay_align=mpegts does not parse as MPEG-TS: its replays start at whole writes"
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

pub(super) use super::resolve::Position;

impl Drop for State {
    fn drop(&mut self) {
        self.pool.refund(self.ring_charged);
        if let Some(b) = self.open.take() {
            self.pool.refund(b.charged);
        }
    }
}

/// Everything behind a stream's lock.
pub(super) struct State {
    /// Charged for the ring's index (`ring_charged`) and the open block.
    pub pool: Arc<Pool>,
    pub budgets: Budgets,
    pub policy: Policy,
    pub meta: Meta,
    /// The ring, newest writes last: where each write begins (`bounds`) and the storage
    /// that holds them (`segs`, in offset order, ending at `written`). Invariant: its bytes
    /// are at most `budgets.ring` and its writes at most one per
    /// [`super::store::RING_BYTES_PER_WRITE`] of it, unless it holds a single write.
    pub bounds: VecDeque<Bound>,
    pub segs: VecDeque<Seg>,
    /// What the ring's index is charged now.
    pub ring_charged: u64,
    /// The block small writes are copied into, until it is full or another write is
    /// stored elsewhere.
    pub open: Option<OpenBlock>,
    /// Absolute offset of the end of the stream: bytes ever written (u64: never wraps).
    pub written: u64,
    pub writes: u64,
    /// In id order (ids only grow, and removal keeps the order), so a reader is found by
    /// binary search; boxed, so that the vector's spare room costs a pointer per slot.
    #[allow(clippy::vec_box)]
    pub readers: Vec<Box<ReaderState>>,
    pub writers: usize,
    /// Writes waiting for room, in arrival order. Invariant: empty unless the policy is
    /// `Block` (changing the policy releases them).
    pub blocked: VecDeque<BlockedWrite>,
    /// Source of reader, read and write ids.
    pub next_id: u64,
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    pub removed: bool,
    pub mtime: SystemTime,
    pub created: Instant,
    /// Why the last setting was refused (shown to users who only see EINVAL).
    pub last_error: Option<String>,
    /// The last byte written ended a line (true before any write).
    pub last_newline: bool,
    /// With `replay_align=mpegts`: the packet scanner, and the random access points of the
    /// ring (absolute offsets, increasing; none before the ring's start).
    pub ts: Option<crate::mpegts::TsScanner>,
    pub keyframes: VecDeque<u64>,
    /// Bytes written per second, indexed by unix second modulo the length.
    pub rate: [(u64, u64); RATE_SECONDS as usize + 2],
}

impl State {
    pub fn new(budgets: Budgets, policy: Policy, meta: Meta, pool: Arc<Pool>) -> State {
        State {
            pool,
            budgets,
            policy,
            meta,
            bounds: VecDeque::new(),
            segs: VecDeque::new(),
            ring_charged: 0,
            open: None,
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
            created: Instant::now(),
            last_error: None,
            last_newline: true,
            ts: None,
            keyframes: VecDeque::new(),
            rate: [(0, 0); RATE_SECONDS as usize + 2],
        }
    }

    /// Readers that still receive writes.
    pub fn open_readers(&self) -> usize {
        self.readers.iter().filter(|r| r.fate == Fate::Open).count()
    }

    pub fn reader_mut(&mut self, id: u64) -> Option<&mut ReaderState> {
        let i = self.reader_index(id)?;
        Some(&mut self.readers[i])
    }

    /// Where reader `id` is in `readers`.
    pub fn reader_index(&self, id: u64) -> Option<usize> {
        self.readers.binary_search_by_key(&id, |r| r.id).ok()
    }

    /// Whether at least two readers still receive writes (stops at the second).
    fn shared_by_readers(&self) -> bool {
        self.readers
            .iter()
            .filter(|r| r.fate == Fate::Open)
            .nth(1)
            .is_some()
    }

    /// Takes up to `max` bytes of reader `id`'s queue (see [`ReaderState::take`]).
    ///
    /// A read of the open block copies its bytes; when other readers will read them too and
    /// there are at least [`SEAL_FOR_READERS`] of them, the block is sealed first, so this
    /// read and the others share one chunk instead of making a copy each (5,000 HTTP
    /// listeners of one stream would otherwise each hold a copy of the same bytes while
    /// they are sent). Below that size the copy is cheaper than the chunk it would make.
    pub fn take(&mut self, id: u64, max: usize) -> Option<Bytes> {
        let shared = self
            .open
            .as_ref()
            .is_some_and(|b| b.data.len() >= SEAL_FOR_READERS)
            && self.shared_by_readers()
            // Runs of the open block are only ever at a queue's end.
            && self.reader_index(id).is_some_and(|i| {
                self.readers[i]
                    .queue
                    .back()
                    .is_some_and(|run| matches!(run.store, Store::Open))
            });
        if shared {
            self.seal();
        }
        let open = self.open.as_ref().map_or(&[][..], |b| &b.data);
        let i = self.reader_index(id)?;
        let r = &mut self.readers[i];
        (!r.queue.is_empty()).then(|| r.take(max, open))
    }

    /// Finds the random access points of a write (MPEG-TS); once the stream is known not to
    /// be MPEG-TS, says so once and stops looking (replays start at whole writes).
    fn scan_keyframes(&mut self, parts: &[Chunk], offset: u64, deferred: &mut Deferred) {
        use crate::mpegts::{TsScanner, Verdict};
        let ts = self.ts.get_or_insert_with(TsScanner::new);
        if ts.verdict() == Verdict::NotMpegTs {
            return;
        }
        let mut at = offset;
        for c in parts {
            self.keyframes.extend(ts.scan(at, c));
            at += c.len() as u64;
        }
        if ts.verdict() == Verdict::NotMpegTs {
            deferred.reports.push(Report::NotMpegTs);
        }
    }

    /// Finds the random access points of the ring's history anew, for `replay_align` just
    /// turned to `mpegts` on a stream whose history was not scanned as it was written.
    pub fn rescan_keyframes(&mut self, deferred: &mut Deferred) {
        use crate::mpegts::{TsScanner, Verdict};
        let mut ts = TsScanner::new();
        let mut found = VecDeque::new();
        for (at, bytes) in self.history_from(self.ring_start()) {
            found.extend(ts.scan(at, bytes));
        }
        if ts.verdict() == Verdict::NotMpegTs {
            deferred.reports.push(Report::NotMpegTs);
        }
        self.ts = Some(ts);
        self.keyframes = found;
    }

    /// Whether a write of `len` bytes in `pieces` fits every receiving reader (policy
    /// `Block`), as if it needed a run per piece in each queue: it then fits when applied.
    pub fn all_fit(&self, len: u64, pieces: usize) -> bool {
        let channel = self.budgets.channel;
        self.readers
            .iter()
            .all(|r| r.fate != Fate::Open || r.fits(len, Err(pieces), channel))
    }

    fn count_rate(&mut self, now: SystemTime, len: u64) {
        let sec = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let slot = &mut self.rate[(sec % self.rate.len() as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += len;
    }

    /// Bytes per second over the current second and the [`RATE_SECONDS`] before it, divided
    /// by the time that window covers (the stream's age when younger, at least a second), so
    /// that a burst shows at once instead of after the second it happened in.
    pub fn write_rate(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let sec = now.as_secs();
        let window = sec.saturating_sub(RATE_SECONDS)..=sec;
        let total: u64 = self
            .rate
            .iter()
            .filter(|(s, _)| window.contains(s))
            .map(|(_, n)| n)
            .sum();
        let span = (RATE_SECONDS as f64 + f64::from(now.subsec_millis()) / 1000.0)
            .min(self.created.elapsed().as_secs_f64())
            .max(1.0);
        (total as f64 / span) as u64
    }

    /// Appends one whole write and fans it out under the policy. Returns the reads it
    /// answered.
    pub fn apply(&mut self, parts: Vec<Chunk>, pool: &Pool, deferred: &mut Deferred) -> usize {
        let len: u64 = parts.iter().map(|c| c.len() as u64).sum();
        let now = SystemTime::now();
        let offset = self.written;
        self.mtime = now;
        self.count_rate(now, len);
        let line_start = self.last_newline;
        if let Some(last) = parts.last().and_then(|c| c.last()) {
            self.last_newline = *last == b'\n';
        }
        if self.policy.align == crate::start::Align::MpegTs {
            self.scan_keyframes(&parts, offset, deferred);
        }
        // Stored once, only when the ring or a reader may take it.
        let stored = if self.budgets.ring > 0 || self.readers.iter().any(|r| r.fate == Fate::Open) {
            self.store(parts, offset, pool)
        } else {
            Vec::new()
        };
        self.written += len;
        self.writes += 1;
        self.push_ring(&stored, clock(), offset, line_start);
        deferred.writer_first |= len >= WRITER_FIRST_BYTES;
        let runs: Vec<Run> = stored
            .into_iter()
            .enumerate()
            .map(|(i, (store, start, end))| Run {
                store,
                start: start as u32,
                end: end as u32,
                writes: u32::from(i == 0),
                first: i == 0,
            })
            .collect();
        let channel = self.budgets.channel;
        let policy = self.policy.slow_reader;
        let open = self.open.as_ref().map_or(&[][..], |b| &b.data);
        let mut dropped = 0u64;
        let mut unparked = 0;
        // Read only when a drop is to be reported on: most writes drop nothing.
        let mut instant = None;
        for r in self.readers.iter_mut().filter(|r| r.fate == Fate::Open) {
            if r.skip_until > offset {
                // It asked for an offset ahead: nothing before it, and from it exactly.
                if r.skip_until >= offset + len {
                    continue;
                }
                let was_empty = r.queue.is_empty();
                let mut at = offset;
                for run in &runs {
                    let end = at + run.len() as u64;
                    if end > r.skip_until {
                        let cut = (r.skip_until.max(at) - at) as usize;
                        r.push(Run {
                            start: run.start + cut as u32,
                            writes: 0,
                            first: false,
                            ..run.clone()
                        });
                    }
                    at = end;
                }
                r.skip_until = 0;
                r.sync();
                if was_empty {
                    unparked += answer_parked(r, open, deferred);
                }
                continue;
            }
            if r.fits(len, Ok(&runs), channel) {
                let was_empty = r.queue.is_empty();
                for run in &runs {
                    r.push(run.clone());
                }
                r.sync();
                if was_empty {
                    unparked += answer_parked(r, open, deferred);
                }
                continue;
            }
            r.lose(1, len);
            dropped += 1;
            if policy == SlowReader::Disconnect {
                // Its queue is non-empty (an empty queue always fits): no parked reads.
                r.end(Fate::Disconnected, deferred);
                deferred.reports.push(Report::Disconnected {
                    label: r.label.to_string(),
                    queued: r.queued_bytes(),
                });
                continue;
            }
            let instant = *instant.get_or_insert_with(Instant::now);
            let label = &r.label;
            let d = r.rare.as_mut().expect("counted above");
            d.unreported += 1;
            let due = d
                .last_report
                .is_none_or(|t| instant.duration_since(t) >= DROP_REPORT_INTERVAL);
            if due {
                deferred.reports.push(Report::Drops {
                    label: label.to_string(),
                    writes: d.unreported,
                    total: d.writes,
                });
                d.unreported = 0;
                d.last_report = Some(instant);
            }
        }
        self.dropped_writes += dropped;
        self.dropped_bytes += dropped * len;
        unparked
    }

    /// Cuts off, as `disconnect` would, the readers that the oldest blocked write has waited
    /// for since before `deadline` (a [`clock`] time), and applies the blocked writes that
    /// then fit; again while the oldest left is that old. Returns the parked operations it
    /// completed.
    pub fn expire_blocked(&mut self, deadline: u64, pool: &Pool, deferred: &mut Deferred) -> usize {
        let mut completed = 0;
        while let Some(front) = self.blocked.front().filter(|w| w.since <= deadline) {
            let len = front.parts.iter().map(|c| c.len() as u64).sum();
            let pieces = front.parts.len();
            let waited = std::time::Duration::from_nanos(clock().saturating_sub(front.since));
            let channel = self.budgets.channel;
            for r in self.readers.iter_mut() {
                if r.fate == Fate::Open && !r.fits(len, Err(pieces), channel) {
                    completed += r.end(Fate::Disconnected, deferred);
                    deferred.reports.push(Report::CutOff {
                        label: r.label.to_string(),
                        queued: r.queued_bytes(),
                        waited,
                    });
                }
            }
            let before = self.blocked.len();
            completed += self.release_blocked(pool, deferred);
            if self.blocked.len() == before {
                // Nothing was left to wait for, yet it did not go (never expected).
                break;
            }
        }
        completed
    }

    /// Applies the blocked writes that now fit, in order. Returns the parked operations
    /// (writes and reads) it completed. Their queue entries were charged when they parked,
    /// so releasing many at once does not pass the memory limit.
    pub fn release_blocked(&mut self, pool: &Pool, deferred: &mut Deferred) -> usize {
        let mut completed = 0;
        while let Some(front) = self.blocked.front() {
            let block = self.policy.slow_reader == SlowReader::Block;
            let len = front.parts.iter().map(|c| c.len() as u64).sum();
            if block && !self.all_fit(len, front.parts.len()) {
                break;
            }
            let w = self.blocked.pop_front().expect("front exists");
            pool.refund(w.entries);
            completed += 1 + self.apply(w.parts, pool, deferred);
            deferred.dones.push((w.done, Ok(())));
        }
        completed
    }
}
