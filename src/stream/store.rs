//! Where a stream's bytes live, kept apart from where its writes begin: small writes are
//! copied into a shared block (one allocation for many writes), large ones keep their own
//! chunk; the ring is an index of storage segments plus one small boundary record per
//! write. Runs under the stream's lock; knows nothing of readers or policies.

use std::collections::VecDeque;

use super::state::State;
use crate::memory::{CHUNK_OVERHEAD, Chunk, Pool, chunk_cost};

/// Writes shorter than this are copied into the open block; longer ones keep their own
/// chunk, so that a reader of video gets a range of the writer's buffer without a copy.
pub(super) const SMALL_WRITE: usize = 4 << 10;

/// The largest open block. Smaller blocks waste less when a stream is quiet; larger ones
/// spread the per-allocation overhead over more writes (64 bytes per 16 KiB is 0.4%).
pub(super) const BLOCK: usize = 16 << 10;

/// What an open block first allocates; it doubles up to [`BLOCK`] as writes arrive, so a
/// stream that writes one line a minute holds little.
const FIRST_BLOCK: usize = 256;

/// Where a run of bytes is stored.
#[derive(Clone)]
pub(super) enum Store {
    /// A chunk: a sealed block, or a large write's piece. Shared by the ring and queues.
    Sealed(Chunk),
    /// The stream's open block, still being appended to (`State::open`). Only the newest
    /// bytes are there, so every reference to it is at the end of the ring and of a queue;
    /// when it is sealed those references become `Sealed`.
    Open,
}

impl Store {
    /// The stored bytes, given the open block's.
    pub fn bytes<'a>(&'a self, open: &'a [u8]) -> &'a [u8] {
        match self {
            Store::Sealed(c) => c,
            Store::Open => open,
        }
    }
}

/// The block small writes are appended to. Its bytes are those of the stream from `base`,
/// contiguous: any write stored elsewhere seals it first.
pub(super) struct OpenBlock {
    pub data: Vec<u8>,
    pub base: u64,
    /// Charged to the pool: its capacity and an allocation's overhead.
    pub charged: u64,
}

/// One storage piece of the ring: `len` bytes of `store` whose first is at absolute offset
/// `offset` (the ring may begin inside the first segment).
pub(super) struct Seg {
    pub store: Store,
    pub offset: u64,
    pub len: usize,
}

/// Where one write of the ring begins, when it arrived, and whether a line begins there.
/// 16 bytes per write: a 1 MB ring of 16-byte writes holds 1 MB of these.
#[derive(Clone, Copy)]
pub(super) struct Bound {
    pub offset: u64,
    /// Arrival on [`super::state::clock`], shifted left once; the low bit says the byte
    /// before the write ended a line (or there was none).
    stamp: u64,
}

impl Bound {
    pub fn new(offset: u64, at: u64, line_start: bool) -> Bound {
        Bound {
            offset,
            stamp: at << 1 | u64::from(line_start),
        }
    }

    pub fn at(&self) -> u64 {
        self.stamp >> 1
    }

    pub fn line_start(&self) -> bool {
        self.stamp & 1 == 1
    }
}

/// A write's bytes once stored: pieces of stores, each `(store, start, end)` within it.
pub(super) type Stored = Vec<(Store, usize, usize)>;

/// The ring keeps at most one write per this many bytes of its budget: 16-byte writes
/// fill it, while the index of a flood of 1-byte writes (16 bytes a write) stays within
/// the budget's size.
pub const RING_BYTES_PER_WRITE: u64 = 16;

/// What the ring's index is charged per write (a boundary record of 16 bytes) and per
/// storage segment (24 bytes): twice their sizes, as the spare capacity of its queues is
/// kept within their length (see [`push_bounded`]).
const BOUND_COST: u64 = 32;
const SEG_COST: u64 = 48;

/// What the ring's index is charged at most per piece of a write: reserved with each
/// piece, charged under the stream's lock.
pub const RING_ENTRY_COST: u64 = BOUND_COST + SEG_COST;

impl State {
    /// Bytes of history in the ring: from its oldest write to the end.
    pub fn ring_bytes(&self) -> u64 {
        self.bounds.front().map_or(0, |b| self.written - b.offset)
    }

    /// Stores a write's parts (its first byte at `offset`): a small write is copied into
    /// the open block, a large one keeps its chunks. When the pool has no room for the
    /// block to grow, the write keeps its chunk (whose memory its writer reserved).
    pub fn store(&mut self, parts: Vec<Chunk>, offset: u64, pool: &Pool) -> Stored {
        let len: usize = parts.iter().map(|c| c.len()).sum();
        let contiguous = self
            .open
            .as_ref()
            .is_some_and(|b| b.base + b.data.len() as u64 == offset && b.data.len() + len <= BLOCK);
        if !contiguous {
            self.seal();
        }
        if len < SMALL_WRITE && self.grow_open(offset, len, pool) {
            let b = self.open.as_mut().expect("grown");
            let start = b.data.len();
            for p in &parts {
                b.data.extend_from_slice(p);
            }
            return vec![(Store::Open, start, start + len)];
        }
        self.seal();
        parts
            .into_iter()
            .map(|c| {
                let n = c.len();
                (Store::Sealed(c), 0, n)
            })
            .collect()
    }

    /// Makes room for `len` more bytes in the open block (opening one at `offset`), if the
    /// pool can take the growth now.
    fn grow_open(&mut self, offset: u64, len: usize, pool: &Pool) -> bool {
        let b = self.open.get_or_insert_with(|| OpenBlock {
            data: Vec::new(),
            base: offset,
            charged: 0,
        });
        let need = b.data.len() + len;
        if need <= b.data.capacity() {
            return true;
        }
        let cap = (b.data.capacity() * 2).max(need).clamp(FIRST_BLOCK, BLOCK);
        let overhead = if b.charged == 0 { CHUNK_OVERHEAD } else { 0 };
        let grow = (cap - b.data.capacity()) as u64 + overhead;
        if !pool.try_take(grow) {
            return false;
        }
        b.data.reserve_exact(cap - b.data.len());
        // `reserve_exact` may give more than asked: what it holds is what is charged.
        let extra = b.data.capacity() - cap;
        pool.charge(extra as u64);
        b.charged += grow + extra as u64;
        true
    }

    /// Turns the open block into a chunk (its spare room given back), and every reference
    /// to it into one to the chunk.
    pub fn seal(&mut self) {
        let Some(b) = self.open.take() else {
            return;
        };
        if b.data.is_empty() {
            self.pool.refund(b.charged);
            return;
        }
        let cost = chunk_cost(b.data.len());
        let chunk = Chunk::prepaid_vec(&self.pool, b.data);
        self.pool.refund(b.charged - cost.min(b.charged));
        self.pool.charge(cost.saturating_sub(b.charged));
        let sealed = |s: &mut Store| {
            if matches!(s, Store::Open) {
                *s = Store::Sealed(chunk.clone());
                true
            } else {
                false
            }
        };
        // References to the open block are at the ends (see `Store::Open`).
        for seg in self.segs.iter_mut().rev() {
            if !sealed(&mut seg.store) {
                break;
            }
        }
        for r in self.readers.iter_mut() {
            for run in r.queue.iter_mut().rev() {
                if !sealed(&mut run.store) {
                    break;
                }
            }
        }
    }

    /// Appends a stored write (its first byte at `offset`) to the ring, then trims it.
    pub fn push_ring(&mut self, stored: &Stored, at: u64, offset: u64, line_start: bool) {
        if self.budgets.ring == 0 {
            return;
        }
        push_bounded(&mut self.bounds, Bound::new(offset, at, line_start));
        let mut at = offset;
        for (store, start, end) in stored {
            match (store, self.segs.back_mut()) {
                (Store::Open, Some(back)) if matches!(back.store, Store::Open) => back.len = *end,
                (Store::Open, _) => {
                    let base = self.open.as_ref().expect("stored in it").base;
                    let seg = Seg {
                        store: Store::Open,
                        offset: base,
                        len: *end,
                    };
                    push_bounded(&mut self.segs, seg);
                }
                (Store::Sealed(c), _) => {
                    let seg = Seg {
                        store: Store::Sealed(c.clone()),
                        offset: at,
                        len: end - start,
                    };
                    push_bounded(&mut self.segs, seg);
                }
            }
            at += (end - start) as u64;
        }
        self.trim_ring();
    }

    /// Drops the oldest whole writes until the ring's bytes fit its budget and its writes
    /// [`RING_BYTES_PER_WRITE`], or it holds one write; and those older than
    /// `ring_buffer_time`.
    pub fn trim_ring(&mut self) {
        let ring = self.budgets.ring;
        let max_writes = (ring / RING_BYTES_PER_WRITE).max(1) as usize;
        while self.bounds.len() > 1 && (self.ring_bytes() > ring || self.bounds.len() > max_writes)
            || ring == 0 && !self.bounds.is_empty()
        {
            self.pop_ring_write();
        }
        if let Some(max_age) = self.budgets.ring_time {
            let oldest = super::state::clock().saturating_sub(max_age.as_nanos() as u64);
            while self.bounds.front().is_some_and(|b| b.at() < oldest) {
                self.pop_ring_write();
            }
        }
        self.sync_ring();
    }

    /// Pops the ring's oldest whole write, and the storage no write of the ring holds.
    pub fn pop_ring_write(&mut self) {
        self.bounds.pop_front();
        let start = self.ring_start();
        if self.bounds.is_empty() {
            self.segs.clear();
        }
        while self
            .segs
            .front()
            .is_some_and(|s| s.offset + s.len as u64 <= start)
        {
            self.segs.pop_front();
        }
        shrink_bounded(&mut self.bounds);
        shrink_bounded(&mut self.segs);
        while self.keyframes.front().is_some_and(|k| *k < start) {
            self.keyframes.pop_front();
        }
    }

    /// Forgets the ring's history. The open block is sealed: readers still holding its
    /// bytes keep them as a chunk, freed when they have read it, and an ended stream
    /// charges nothing for a block no write will ever grow.
    pub fn clear_ring(&mut self) {
        self.seal();
        self.keyframes.clear();
        self.bounds.clear();
        self.segs.clear();
        self.bounds.shrink_to(0);
        self.segs.shrink_to(0);
        self.sync_ring();
    }

    /// Charges the pool what the ring's index holds now.
    pub fn sync_ring(&mut self) {
        let now = self.bounds.len() as u64 * BOUND_COST + self.segs.len() as u64 * SEG_COST;
        sync_charge(&self.pool, &mut self.ring_charged, now);
    }

    /// The byte at absolute offset `at`, if the ring holds it.
    pub fn byte_at(&self, at: u64) -> Option<u8> {
        if at < self.ring_start() {
            return None;
        }
        let i = self.segs.partition_point(|s| s.offset + s.len as u64 <= at);
        let s = self.segs.get(i)?;
        let open = self.open.as_ref().map_or(&[][..], |b| &b.data);
        s.store.bytes(open).get((at - s.offset) as usize).copied()
    }

    /// The ring's bytes from absolute offset `from` (within it) on, segment by segment,
    /// each with its offset.
    pub fn history_from(&self, from: u64) -> impl Iterator<Item = (u64, &[u8])> {
        let open = self.open.as_ref().map_or(&[][..], |b| &b.data);
        let i = self
            .segs
            .partition_point(|s| s.offset + s.len as u64 <= from);
        self.segs.range(i..).map(move |s| {
            let skip = from.saturating_sub(s.offset) as usize;
            (s.offset + skip as u64, &s.store.bytes(open)[skip..s.len])
        })
    }

    /// The first byte at or after `from` that follows a newline, or the end.
    pub fn newline_after(&self, from: u64) -> u64 {
        for (at, bytes) in self.history_from(from) {
            if let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
                return at + nl as u64 + 1;
            }
        }
        self.written
    }

    /// The ring from absolute offset `from` (within it) as queue runs, with the number of
    /// writes that begin in each.
    pub fn replay_from(&self, from: u64) -> VecDeque<super::queue::Run> {
        let i = self
            .segs
            .partition_point(|s| s.offset + s.len as u64 <= from);
        let mut q = VecDeque::with_capacity(self.segs.len() - i);
        for s in self.segs.range(i..) {
            let (lo, hi) = (from.max(s.offset), s.offset + s.len as u64);
            if lo >= hi {
                continue;
            }
            let writes = self.bounds.partition_point(|b| b.offset < hi)
                - self.bounds.partition_point(|b| b.offset < lo);
            let first = self.bounds.binary_search_by_key(&lo, |b| b.offset).is_ok();
            q.push_back(super::queue::Run {
                store: s.store.clone(),
                start: (lo - s.offset) as u32,
                end: s.len as u32,
                writes: writes as u32,
                first,
            });
        }
        q
    }
}

/// Slots of an index queue that its owner's own cost covers (`STREAM_COST`,
/// `READER_COST`): below this many the pool is not charged for spare capacity.
const OWN_SLOTS: usize = 4;

/// Pushes onto an index queue, growing it by half rather than doubling it (from
/// [`OWN_SLOTS`]), so that its capacity stays within twice its length (and [`OWN_SLOTS`]):
/// what the pool is charged per element covers its slot and its share of spare room, and
/// growth never charges a jump under a lock.
pub(super) fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == q.capacity() {
        let more = if q.is_empty() {
            OWN_SLOTS
        } else {
            (q.len() / 2).max(1)
        };
        q.reserve_exact(more);
    }
    q.push_back(v);
}

/// Gives back the slots a burst left behind, keeping the bound of [`push_bounded`].
pub(super) fn shrink_bounded<T>(q: &mut VecDeque<T>) {
    if q.capacity() > 2 * q.len().max(OWN_SLOTS) {
        q.shrink_to((q.len() + q.len() / 2).max(OWN_SLOTS));
    }
}

/// Charges or refunds `pool` so that `charged` becomes `now`.
pub(super) fn sync_charge(pool: &Pool, charged: &mut u64, now: u64) {
    if now > *charged {
        pool.charge(now - *charged);
    } else {
        pool.refund(*charged - now);
    }
    *charged = now;
}
