//! The daemon's memory limit (`max_memory`) and the shared chunks it counts. Part of the core:
//! knows nothing of FUSE.
//!
//! # The contract
//! Every byte a stream stores (its ring, its readers' queues, writes waiting to be applied)
//! lives in a [`Chunk`] or in a stream's open block, and each is charged to the namespace's
//! [`Pool`] once, when it is made (an open block: as it grows, and only if the pool has room
//! then; else the write keeps its own chunk), whatever the number of readers that hold it,
//! and refunded when its last holder lets it go. The ring's index (boundary records and
//! segments) and the queues' runs are charged too, per element, at twice their size, as
//! their spare capacity is kept within their length. The pool's total never passes its
//! budget, fifteen sixteenths of the limit (the rest is the allocator's slack), when a chunk
//! is made: [`Pool::reserve`] first sheds, in this order,
//! 1. history: the oldest writes of any stream's ring (oldest first, across streams);
//! 2. the readers furthest behind (most bytes queued): their queued writes are dropped and
//!    counted as dropped (policy `drop`), or they are cut off (policy `disconnect`); readers
//!    of `block` streams are never shed (their writers wait instead, within their budgets);
//!
//! each time a little more than asked (1/256 of the budget), so that writers at the limit do
//! not take each other's room; when that is not enough the write fails
//! ([`StreamError::NoMemory`]): writers are never made to wait by the limit. A write's queue
//! and ring entries are charged when it is applied, under its stream's lock, where nothing
//! can be shed: the total may pass the budget by the entries of the writes applied since the
//! last reservation (one write, or a unit's finish too: its pieces reserved when they were
//! appended), and the next reserving write sheds that back.

use crate::stream::{Stream, StreamError};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, Ordering};

/// What one chunk costs beyond its bytes: the allocation header of the shared buffer and of
/// its bookkeeping, and allocator rounding.
pub const CHUNK_OVERHEAD: u64 = 64;

/// What one run of a reader's queue costs (a reference to its storage, its range and its
/// count of writes: 32 bytes), with its share of the queue's spare room.
pub const ENTRY_COST: u64 = 64;

/// What a stream's own state costs (its lock, counters, name and maps), charged while it
/// lives, so that empty streams cannot exhaust memory either.
pub const STREAM_COST: u64 = 1024;

/// What a registered reader's own state costs.
pub const READER_COST: u64 = 512;

/// The budget cost of a chunk of `len` bytes.
pub fn chunk_cost(len: usize) -> u64 {
    len as u64 + CHUNK_OVERHEAD
}

/// The memory of one namespace: a limit, what is charged against it, and the streams that
/// hold it (for shedding). Shared by the namespace and every stream, named or still open.
pub struct Pool {
    /// Invariant: the sum of the costs of the live chunks and queue entries.
    used: AtomicU64,
    /// `max_memory` as configured.
    limit: u64,
    /// What the pool lets `used` reach: the limit less a sixteenth, left to the allocator
    /// (its headers and the holes that floods of small writes leave between chunks: about
    /// 6% of the limit in the hostile benchmark), so that RSS stays within the limit.
    budget: u64,
    /// Every stream that may hold memory; dead ones are pruned when shedding.
    streams: Mutex<Vec<std::sync::Weak<Stream>>>,
    /// Registered readers across the namespace, against `max_readers`.
    readers: AtomicUsize,
    max_readers: usize,
    /// Parked reads and blocked writes across all streams, so that a watchdog can sleep
    /// while there are none. Changed under the owning stream's lock.
    pub(crate) parked_total: AtomicUsize,
    /// Bytes dropped or cut to keep within the limit, for statistics.
    shed_bytes: AtomicU64,
}

impl Pool {
    /// A pool of `limit` bytes for at most `max_readers` readers.
    pub fn new(limit: u64, max_readers: usize) -> Arc<Pool> {
        Arc::new(Pool {
            used: AtomicU64::new(0),
            limit,
            budget: limit - limit / 16,
            streams: Mutex::new(Vec::new()),
            readers: AtomicUsize::new(0),
            max_readers,
            parked_total: AtomicUsize::new(0),
            shed_bytes: AtomicU64::new(0),
        })
    }

    /// A pool that never limits, for tests and tools.
    pub fn unlimited() -> Arc<Pool> {
        Pool::new(u64::MAX, usize::MAX)
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// What the pool lets its total reach: the limit less the allocator's share.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes shed so far to stay within the limit.
    pub fn shed_bytes(&self) -> u64 {
        self.shed_bytes.load(Ordering::Relaxed)
    }

    /// Parked reads and blocked writes across all streams now.
    pub fn parked_total(&self) -> usize {
        self.parked_total.load(Ordering::Relaxed)
    }

    /// Registered readers across the namespace now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    pub(crate) fn register_stream(&self, stream: &Arc<Stream>) {
        let weak = Arc::downgrade(stream);
        let mut streams = self.streams.lock();
        if streams.len() >= 64 && streams.len().is_power_of_two() {
            streams.retain(|w| w.strong_count() > 0);
        }
        streams.push(weak);
    }

    /// Counts a new reader and charges its state, or fails when `max_readers` are
    /// registered or the memory limit leaves no room. No stream lock may be held.
    pub(crate) fn add_reader(&self) -> Result<(), StreamError> {
        let n = self.readers.fetch_add(1, Ordering::Relaxed);
        if n >= self.max_readers {
            self.readers.fetch_sub(1, Ordering::Relaxed);
            return Err(StreamError::TooManyReaders);
        }
        self.reserve(READER_COST).inspect_err(|_| {
            self.readers.fetch_sub(1, Ordering::Relaxed);
        })
    }

    pub(crate) fn remove_reader(&self) {
        self.readers.fetch_sub(1, Ordering::Relaxed);
        self.refund(READER_COST);
    }

    /// Charges `n` bytes without a check (bookkeeping under a stream lock).
    pub(crate) fn charge(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refund(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Charges `n` bytes if that keeps within the limit.
    pub(crate) fn try_take(&self, n: u64) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used.saturating_add(n) > self.budget {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Charges `n` bytes, shedding first when they do not fit (see the module's contract).
    /// Must be called with no stream lock held: shedding takes them.
    pub fn reserve(&self, n: u64) -> Result<(), StreamError> {
        if self.try_take(n) {
            return Ok(());
        }
        // Another writer may take the room shed for this one before it does (or find room
        // another one shed, so that this one sheds nothing): shed again, a few times,
        // before concluding that nothing can be shed.
        for _ in 0..16 {
            let may_help = self.shed(n);
            if self.try_take(n) {
                return Ok(());
            }
            if !may_help {
                break;
            }
        }
        Err(StreamError::NoMemory)
    }

    /// Whether `n` more bytes fit now.
    fn fits(&self, n: u64) -> bool {
        self.used().saturating_add(n) <= self.budget
    }

    fn live_streams(&self) -> Vec<Arc<Stream>> {
        let mut streams = self.streams.lock();
        streams.retain(|w| w.strong_count() > 0);
        streams.iter().filter_map(|w| w.upgrade()).collect()
    }

    /// Frees memory until `need` more bytes fit, in the contract's order. Returns whether
    /// trying again may help: something was shed or is left to shed, or the room is there.
    /// (Not the bytes it freed: other writers charge and refund meanwhile, and may take the
    /// room it made, or make the room it then need not.)
    fn shed(&self, need: u64) -> bool {
        let streams = self.live_streams();
        let before = self.used();
        let mut acted = false;
        // A little more than asked (1/256 of the budget), so that concurrent writers at the
        // limit find room instead of each shedding its own few bytes, which the others take.
        let need = need.saturating_add(self.budget / 256);
        // 1. History, oldest first across streams: each pass takes the stream whose oldest
        //    ring write is the oldest and trims it up to the next stream's oldest.
        while !self.fits(need) {
            let mut fronts: Vec<(u64, usize)> = streams
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.oldest_history().map(|t| (t, i)))
                .collect();
            if fronts.is_empty() {
                break;
            }
            acted = true;
            fronts.sort_unstable();
            let until = fronts.get(1).map_or(u64::MAX, |f| f.0);
            let s = &streams[fronts[0].1];
            s.trim_history(until, &|| self.fits(need));
        }
        // 2. The readers furthest behind.
        if !self.fits(need) {
            let mut behind: Vec<(u64, usize, u64)> = streams
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    s.sheddable_readers()
                        .into_iter()
                        .map(move |(id, q)| (q, i, id))
                })
                .collect();
            behind.sort_unstable_by(|a, b| b.cmp(a));
            acted |= !behind.is_empty();
            for (_, i, id) in behind {
                if self.fits(need) {
                    break;
                }
                streams[i].shed_reader(id);
            }
        }
        let freed = before.saturating_sub(self.used());
        if freed > 0 {
            let total = self.shed_bytes.fetch_add(freed, Ordering::Relaxed) + freed;
            // At the limit every write sheds: one line per interval says how much in all.
            SHED_LOG.log_at(log::Level::Warn, || {
                format!(
                    "memory limit {} reached: history and slow readers' queues are being shed ({} so far)",
                    crate::size::HumanSize(self.limit),
                    crate::size::HumanSize(total)
                )
            });
        }
        acted || self.fits(need)
    }
}

/// Shedding happens at every write once the limit is reached: its log line is rate-limited.
static SHED_LOG: crate::ratelimit::RateLimit =
    crate::ratelimit::RateLimit::new(1, std::time::Duration::from_secs(10));

/// One piece of a write's bytes, stored once and shared by the ring and every reader's
/// queue; its cost is charged to its pool while it lives.
#[derive(Clone)]
pub struct Chunk(Arc<ChunkData>);

struct ChunkData {
    bytes: Box<[u8]>,
    pool: Arc<Pool>,
}

impl Drop for ChunkData {
    fn drop(&mut self) {
        self.pool.refund(chunk_cost(self.bytes.len()));
    }
}

impl Chunk {
    /// Copies `data` into a new chunk charged to `pool`, shedding to make room (no stream
    /// lock may be held).
    pub fn new(pool: &Arc<Pool>, data: &[u8]) -> Result<Chunk, StreamError> {
        // Room for its ring entry too, charged when the ring takes it (under the lock).
        pool.reserve(chunk_cost(data.len()) + crate::stream::RING_ENTRY_COST)?;
        pool.refund(crate::stream::RING_ENTRY_COST);
        Ok(Chunk(Arc::new(ChunkData {
            bytes: data.into(),
            pool: pool.clone(),
        })))
    }
}

impl Chunk {
    /// Copies `data` into a new chunk whose cost was reserved already (a unit's
    /// reservation, see `Writer::reserve`): no shedding, no refusal.
    pub(crate) fn prepaid(pool: &Arc<Pool>, data: &[u8]) -> Chunk {
        Chunk(Arc::new(ChunkData {
            bytes: data.into(),
            pool: pool.clone(),
        }))
    }
}

impl Chunk {
    /// Takes `data` (a sealed block) as a chunk whose cost its owner charged already.
    pub(crate) fn prepaid_vec(pool: &Arc<Pool>, data: Vec<u8>) -> Chunk {
        Chunk(Arc::new(ChunkData {
            bytes: data.into_boxed_slice(),
            pool: pool.clone(),
        }))
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.bytes
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}
