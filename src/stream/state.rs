//! The state behind a stream's lock: the ring, the readers' queues, blocked writes, and the
//! one function that applies a write. Everything here runs under the stream's lock; what
//! must happen after it is released (answers, wake-ups, log lines) is collected in
//! [`Deferred`].

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{
    Budgets, Bytes, Deliver, Meta, Policy, ReadOutcome, ReaderStats, SlowReader, StreamError, Wake,
    WriteDone,
};
use crate::memory::{Chunk, ENTRY_COST, Pool, chunk_cost};
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
    pub parts: Vec<Chunk>,
    pub done: WriteDone,
    /// Queue entries charged for it when it parked (refunded when it leaves the queue).
    pub entries: u64,
}

/// One piece of a queued or ringed write. A write is one or more entries, the first flagged.
#[derive(Clone)]
pub(super) struct Entry {
    pub chunk: Chunk,
    /// This piece starts a write.
    pub first: bool,
}

/// A ring entry: a piece of a write, where it is and when the write arrived.
pub(super) struct RingEntry {
    pub entry: Entry,
    /// Arrival of its write, in [`clock`] nanoseconds.
    pub at: u64,
    /// Absolute offset of its first byte.
    pub offset: u64,
    /// For a write's first piece: the byte before it ended a line (or there was none).
    pub line_start: bool,
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

/// A registered reader's state.
pub(super) struct ReaderState {
    pub id: u64,
    /// Who opened it, for log lines ("pid 42 (cat)"), escaped by the front door.
    pub label: String,
    /// Entries to deliver, oldest first; `front_off` bytes of the front one are delivered.
    pub queue: VecDeque<Entry>,
    /// Invariant: `front_off < queue.front().len()` when the queue is non-empty, else 0.
    pub front_off: usize,
    /// Bytes not yet delivered: the lengths of `queue` less `front_off`. Kept rather than
    /// summed, since a flood of small writes makes the queue long and reads are frequent.
    pub queued: u64,
    /// Invariant: the first `replay_left` entries of `queue` came from the ring at open and
    /// are not counted in `live_cost`.
    pub replay_left: usize,
    /// Sum of `chunk_cost` over the live (non-replay) entries in `queue`.
    pub live_cost: u64,
    pub fate: Fate,
    /// Absolute offset of the first byte it was given (or is waiting for).
    pub start: u64,
    /// Live bytes before this offset are skipped: a reader that asked for an offset ahead
    /// of the stream's end receives from there on (0: none skipped).
    pub skip_until: u64,
    /// Reads waiting, oldest first. Invariant: non-empty only while `queue` is empty and
    /// the reader is open.
    pub parked: VecDeque<Parked>,
    /// A poller to wake when the reader becomes readable or ends.
    pub wake: Option<Wake>,
    pub delivered: u64,
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    /// Drops not yet reported in a warn line, and when the last line was written.
    pub unreported_drops: u64,
    pub last_drop_report: Option<Instant>,
    /// Charged for every entry of `queue` (`ENTRY_COST` each).
    pub pool: Arc<Pool>,
}

impl Drop for ReaderState {
    fn drop(&mut self) {
        self.pool.refund(self.queue.len() as u64 * ENTRY_COST);
        self.pool.remove_reader();
    }
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
    NotMpegTs,
}

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

impl ReaderState {
    pub fn queued_bytes(&self) -> u64 {
        debug_assert_eq!(
            self.queued,
            self.queue.iter().map(|e| e.chunk.len() as u64).sum::<u64>() - self.front_off as u64
        );
        self.queued
    }

    fn push(&mut self, entry: &Entry) {
        self.queued += entry.chunk.len() as u64;
        self.queue.push_back(entry.clone());
    }

    /// Whether a write of `cost` fits the budget `channel`: it does when it fits whole, and
    /// always when nothing live is queued (so a write larger than the budget still reaches a
    /// reader that keeps up).
    fn fits(&self, cost: u64, channel: u64) -> bool {
        self.live_cost == 0 || self.live_cost + cost <= channel
    }

    /// Takes up to `max` queued bytes. Precondition: the queue is non-empty. A read that
    /// ends within the front chunk shares it (no copy); one that spans chunks copies them.
    pub fn take(&mut self, max: usize) -> Bytes {
        debug_assert!(!self.queue.is_empty() && max > 0);
        let front = &self.queue.front().expect("precondition").chunk;
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
                let avail = &front.chunk[self.front_off..];
                let n = avail.len().min(max - out.len());
                out.extend_from_slice(&avail[..n]);
                self.advance(n);
            }
            Bytes::from(out)
        };
        self.delivered += out.len() as u64;
        if self.queue.is_empty() && self.queue.capacity() > 1024 {
            // A burst of small writes left a large buffer behind; give it back.
            self.queue.shrink_to(64);
        }
        out
    }

    /// Marks `n` bytes of the front chunk delivered, at most its remainder.
    fn advance(&mut self, n: usize) {
        let len = self.queue.front().expect("a queued chunk").chunk.len();
        debug_assert!(self.front_off + n <= len);
        self.queued -= n as u64;
        if self.front_off + n == len {
            self.pop_front();
            self.front_off = 0;
        } else {
            self.front_off += n;
        }
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let e = self.queue.pop_front()?;
        self.pool.refund(ENTRY_COST);
        if self.replay_left > 0 {
            self.replay_left -= 1;
        } else {
            self.live_cost -= chunk_cost(e.chunk.len());
        }
        Some(e)
    }

    /// Ends the reader: parked reads get EOF, a poller wakes. Returns the reads unparked.
    pub fn end(&mut self, fate: Fate, deferred: &mut Deferred) -> usize {
        self.fate = fate;
        let n = self.parked.len();
        for p in self.parked.drain(..) {
            deferred.answers.push((p.deliver, ReadOutcome::Eof));
        }
        if let Some(w) = self.wake.take() {
            deferred.wakes.push(w);
        }
        n
    }

    /// Drops every queued write but a partly delivered front one (which stays whole), to
    /// free memory. Returns (writes, bytes) dropped.
    pub fn shed_queue(&mut self) -> (u64, u64) {
        let started = self.front_off > 0 || self.queue.front().is_some_and(|e| !e.first);
        let keep = if started {
            1 + self.queue.iter().skip(1).take_while(|e| !e.first).count()
        } else {
            0
        };
        let (mut writes, mut bytes) = (0u64, 0u64);
        let dropped: Vec<Entry> = self.queue.drain(keep..).collect();
        for e in &dropped {
            writes += u64::from(e.first);
            bytes += e.chunk.len() as u64;
        }
        self.pool.refund(dropped.len() as u64 * ENTRY_COST);
        self.replay_left = self.replay_left.min(keep);
        self.queued -= bytes;
        self.live_cost = self
            .queue
            .iter()
            .skip(self.replay_left)
            .map(|e| chunk_cost(e.chunk.len()))
            .sum();
        (writes, bytes)
    }

    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            delivered_bytes: self.delivered,
            queued_bytes: self.queued_bytes(),
            live_cost: self.live_cost,
            dropped_writes: self.dropped_writes,
            dropped_bytes: self.dropped_bytes,
            disconnected: self.fate == Fate::Disconnected,
            parked_reads: self.parked.len(),
            start: self.start,
        }
    }
}

pub(super) use super::resolve::Position;

impl Drop for State {
    fn drop(&mut self) {
        self.pool.refund(self.ring.len() as u64 * RING_ENTRY_COST);
    }
}

/// Answers a reader's parked reads from its queue, which was empty, and wakes its poller.
/// Returns the reads answered.
fn answer_parked(r: &mut ReaderState, deferred: &mut Deferred) -> usize {
    // Parked reads exist only while the queue is empty: answer them.
    let mut unparked = 0;
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
    unparked
}

/// What one ring entry costs beyond its chunk: its slot in the ring (40 bytes) and the
/// ring's spare capacity (a power of two, shrunk when much of it is unused).
pub const RING_ENTRY_COST: u64 = 64;

/// Everything behind a stream's lock.
pub(super) struct State {
    /// Charged for every ring entry (`RING_ENTRY_COST` each).
    pub pool: Arc<Pool>,
    pub budgets: Budgets,
    pub policy: Policy,
    pub meta: Meta,
    /// Newest writes, oldest first. Invariant: empty, or the front starts a write; the total
    /// cost is at most `budgets.ring` unless the ring holds a single write.
    pub ring: VecDeque<RingEntry>,
    /// Sum of `chunk_cost` over `ring`, and sum of lengths.
    pub ring_cost: u64,
    pub ring_bytes: u64,
    /// Number of entries of `ring` that start a write.
    pub ring_writes: usize,
    /// Absolute offset of the end of the stream: bytes ever written (u64: never wraps).
    pub written: u64,
    pub writes: u64,
    pub readers: Vec<ReaderState>,
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
        self.readers.iter_mut().find(|r| r.id == id)
    }

    /// Appends a write whose first byte is at absolute offset `offset`.
    fn push_ring(&mut self, parts: &[Chunk], at: u64, offset: u64, line_start: bool) {
        if self.budgets.ring == 0 {
            return;
        }
        let mut off = offset;
        for (i, chunk) in parts.iter().enumerate() {
            self.ring_cost += chunk_cost(chunk.len());
            self.ring_bytes += chunk.len() as u64;
            self.pool.charge(RING_ENTRY_COST);
            self.ring.push_back(RingEntry {
                entry: Entry {
                    chunk: chunk.clone(),
                    first: i == 0,
                },
                at,
                offset: off,
                line_start: i == 0 && line_start,
            });
            off += chunk.len() as u64;
        }
        self.ring_writes += 1;
        self.trim_ring();
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

    /// Pops the ring's oldest whole write.
    pub fn pop_ring_write(&mut self) {
        let mut first = true;
        while let Some(front) = self.ring.front() {
            if !first && front.entry.first {
                break;
            }
            first = false;
            let len = front.entry.chunk.len();
            self.ring_cost -= chunk_cost(len);
            self.ring_bytes -= len as u64;
            self.ring.pop_front();
            self.pool.refund(RING_ENTRY_COST);
        }
        self.ring_writes -= 1;
        if self.ring.capacity() > 1024 && self.ring.capacity() > 4 * self.ring.len() {
            // A flood of small writes left a large ring behind: give its slots back.
            self.ring.shrink_to(2 * self.ring.len());
        }
        let start = self.ring_start();
        while self.keyframes.front().is_some_and(|k| *k < start) {
            self.keyframes.pop_front();
        }
    }

    /// Drops the oldest whole writes until the ring fits its budget or holds one write, and
    /// those older than `ring_buffer_time`.
    pub fn trim_ring(&mut self) {
        while self.ring_cost > self.budgets.ring && self.ring_writes > 1
            || self.budgets.ring == 0 && !self.ring.is_empty()
        {
            self.pop_ring_write();
        }
        if let Some(max_age) = self.budgets.ring_time {
            let oldest = clock().saturating_sub(max_age.as_nanos() as u64);
            while self.ring.front().is_some_and(|e| e.at < oldest) {
                self.pop_ring_write();
            }
        }
    }

    pub fn clear_ring(&mut self) {
        self.keyframes.clear();
        self.pool.refund(self.ring.len() as u64 * RING_ENTRY_COST);
        self.ring.clear();
        self.ring.shrink_to(64);
        self.ring_cost = 0;
        self.ring_bytes = 0;
        self.ring_writes = 0;
    }

    /// Whether a write of `cost` fits every receiving reader (policy `Block`).
    pub fn all_fit(&self, cost: u64) -> bool {
        let channel = self.budgets.channel;
        self.readers
            .iter()
            .all(|r| r.fate != Fate::Open || r.fits(cost, channel))
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
        let cost: u64 = parts.iter().map(|c| chunk_cost(c.len())).sum();
        let now = SystemTime::now();
        let offset = self.written;
        self.written += len;
        self.writes += 1;
        self.mtime = now;
        self.count_rate(now, len);
        let line_start = self.last_newline;
        if let Some(last) = parts.last().and_then(|c| c.last()) {
            self.last_newline = *last == b'\n';
        }
        if self.policy.align == crate::start::Align::MpegTs {
            self.scan_keyframes(&parts, offset, deferred);
        }
        self.push_ring(&parts, clock(), offset, line_start);
        deferred.writer_first |= len >= WRITER_FIRST_BYTES;
        let entries: Vec<Entry> = parts
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| Entry {
                chunk,
                first: i == 0,
            })
            .collect();
        let channel = self.budgets.channel;
        let policy = self.policy.slow_reader;
        let mut dropped = 0u64;
        let mut unparked = 0;
        let mut taken = 0u64;
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
                for e in &entries {
                    let end = at + e.chunk.len() as u64;
                    if end > r.skip_until {
                        let first_in = r.queue.is_empty();
                        r.push(e);
                        if first_in {
                            r.front_off = (r.skip_until.max(at) - at) as usize;
                            r.queued -= r.front_off as u64;
                        }
                        r.live_cost += chunk_cost(e.chunk.len());
                        taken += 1;
                    }
                    at = end;
                }
                r.skip_until = 0;
                if was_empty {
                    unparked += answer_parked(r, deferred);
                }
                continue;
            }
            if r.fits(cost, channel) {
                let was_empty = r.queue.is_empty();
                for e in &entries {
                    r.push(e);
                }
                taken += entries.len() as u64;
                r.live_cost += cost;
                if was_empty {
                    unparked += answer_parked(r, deferred);
                }
                continue;
            }
            r.dropped_writes += 1;
            r.dropped_bytes += len;
            dropped += 1;
            if policy == SlowReader::Disconnect {
                // Its queue is non-empty (an empty queue always fits): no parked reads.
                r.end(Fate::Disconnected, deferred);
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
                    total: r.dropped_writes,
                });
                r.unreported_drops = 0;
                r.last_drop_report = Some(instant);
            }
        }
        pool.charge(taken * ENTRY_COST);
        self.dropped_writes += dropped;
        self.dropped_bytes += dropped * len;
        unparked
    }

    /// Applies the blocked writes that now fit, in order. Returns the parked operations
    /// (writes and reads) it completed. Their queue entries were charged when they parked,
    /// so releasing many at once does not pass the memory limit.
    pub fn release_blocked(&mut self, pool: &Pool, deferred: &mut Deferred) -> usize {
        let mut completed = 0;
        while let Some(front) = self.blocked.front() {
            let block = self.policy.slow_reader == SlowReader::Block;
            let cost = front.parts.iter().map(|c| chunk_cost(c.len())).sum();
            if block && !self.all_fit(cost) {
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
