//! The handles a front door holds: a [`Reader`] (its reads, its poll) and a [`Writer`] (its
//! writes and its unit, the pieces of a write not yet finished). Both are views of one
//! [`Stream`]; dropping one unregisters it.

use super::state::Fate;
use super::{
    Deliver, MAX_WRITE, ReadMode, ReaderStats, Readiness, Stream, StreamError, Wake, WriteDone,
};
use crate::memory::{Chunk, chunk_cost};
use crate::stream::OnWriterClose;
use crate::sync::{Arc, Mutex};
use crate::sync::{AtomicU64, Ordering};

/// An open reader. Dropping it unregisters it; it must not be dropped while one of its reads
/// is parked (the kernel never releases a file with a read in flight), but if it is, those
/// reads get EOF.
pub struct Reader {
    pub(super) stream: Arc<Stream>,
    pub(super) id: u64,
}

impl Reader {
    /// Reads up to `max` (> 0) bytes. `deliver` is called exactly once: at once, before this
    /// returns, when bytes are queued, the reader ended or `mode` is non-blocking; later
    /// otherwise. Returns the parked read's id when it parked. `tag` is kept with a parked
    /// read for [`Stream::parked_reads`].
    pub fn read(&self, max: usize, mode: ReadMode, tag: u32, deliver: Deliver) -> Option<u64> {
        self.stream.read(self.id, max, mode, tag, deliver)
    }

    /// Takes up to `max` queued bytes in at most `pieces` reads without waiting, appended to
    /// `out`: each a range of one run, shared when its chunk is sealed, so a front door
    /// that sends them together (one vectored write) sends a backlog of many writes without
    /// a copy. Tells what is left: `Readable` (more queued), `Waiting` or `Ended`. Set
    /// [`Reader::set_one_run`] first, or each take copies what spans runs.
    pub fn read_runs(&self, max: usize, pieces: usize, out: &mut Vec<super::Bytes>) -> Readiness {
        self.stream.read_runs(self.id, max, pieces, out)
    }

    /// Makes every read of this reader end at the end of a run (see [`Reader::read_runs`]).
    pub fn set_one_run(&self) {
        if let Some(r) = self.stream.lock().reader_mut(self.id) {
            r.one_run = true;
        }
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
        r.rare().wake = Some(wake);
        r.readiness()
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
        let state = self.stream.with_state(|st, pool, deferred| {
            let Some(pos) = st.reader_index(self.id) else {
                return (None, 0);
            };
            let mut state = st.readers.remove(pos);
            let unparked = state.end(Fate::Ended, deferred);
            // Its queue no longer holds writers back.
            (Some(state), unparked + st.release_blocked(pool, deferred))
        });
        if let Some(state) = state {
            crate::ratelimit::OPENS.log(|| {
                let (writes, bytes) = state.dropped();
                format!(
                    "reader {} closed: {} bytes read, {writes} writes ({bytes} bytes) dropped",
                    state.label, state.delivered
                )
            });
        }
    }
}

/// An open writer: counts as a writer of the stream while it lives, and holds its unit (the
/// pieces of a write not yet finished).
pub struct Writer {
    pub(super) stream: Arc<Stream>,
    /// The open unit's pieces. Invariant: their total is below [`MAX_WRITE`].
    pub(super) unit: Mutex<Vec<Chunk>>,
    /// Memory reserved for the pieces still to come of a unit whose length is known
    /// ([`Writer::reserve`]); given back when the unit ends.
    pub(super) reserved: AtomicU64,
}

/// A `done` that needs no answer (a unit finished on a writer's behalf).
fn ignore_done() -> WriteDone {
    Box::new(|r| {
        if let Err(e) = r {
            log::debug!("a finished unit was not applied: {e}");
        }
    })
}

impl Writer {
    /// Adds `data` to this writer's open unit (beginning one when there is none); nothing
    /// reaches a reader until the unit is finished. When the unit would pass [`MAX_WRITE`],
    /// what it holds is applied first as one write. Fails, abandoning the unit, when the
    /// stream was removed or the memory limit leaves no room.
    pub fn append(&self, data: &[u8], tag: u32) -> Result<(), StreamError> {
        if data.is_empty() {
            return Ok(());
        }
        let full = {
            let unit = self.unit.lock();
            let len: u64 = unit.iter().map(|c| c.len() as u64).sum();
            len > 0 && len + data.len() as u64 > MAX_WRITE
        };
        if full {
            self.finish(tag, ignore_done());
        }
        if self.stream.is_removed() {
            self.abandon();
            return Err(StreamError::Removed);
        }
        // The copy is made before any stream lock is taken: a 1 MiB copy under it would hold
        // up the stream's readers, and making room may shed other streams' history.
        let cost = chunk_cost(data.len());
        let prepaid = self
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                r.checked_sub(cost)
            })
            .is_ok();
        let chunk = if prepaid {
            Ok(Chunk::prepaid(&self.stream.pool, data))
        } else {
            Chunk::new(&self.stream.pool, data)
        };
        match chunk {
            Ok(chunk) => {
                self.unit.lock().push(chunk);
                Ok(())
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Applies the open unit as one write (`done` gets `Ok` at once when there is none), or
    /// parks it under policy `Block` until every reader has room, returning its id for
    /// [`Stream::cancel_write`]. `done` is called exactly once; `tag` is kept with a parked
    /// write for [`Stream::blocked_writes`].
    pub fn finish(&self, tag: u32, done: WriteDone) -> Option<u64> {
        let parts = std::mem::take(&mut *self.unit.lock());
        self.give_back();
        if let Some(publisher) = self.stream.publisher() {
            // Shared with other hosts: the write reaches this host's readers too through the
            // engine, in the engine's order.
            if self.stream.is_removed() {
                done(Err(StreamError::Removed));
                return None;
            }
            if parts.is_empty() {
                done(Ok(()));
                return None;
            }
            if let Err(e) = self.check_len(parts.iter().map(|c| c.len() as u64).sum()) {
                done(Err(e));
                return None;
            }
            return publisher.publish(parts, done);
        }
        self.stream.submit_parts(parts, tag, done)
    }

    /// Whether a unit of `len` bytes can be written whole: `TooLarge` when the engine of a
    /// stream shared with other hosts cannot hold it (checked before any of it is taken).
    fn check_len(&self, len: u64) -> Result<(), StreamError> {
        match self.stream.publisher() {
            Some(p) if len.min(MAX_WRITE) > p.max_write() => Err(StreamError::TooLarge),
            _ => Ok(()),
        }
    }

    /// Whether a unit of `len` bytes could be written at all, before any of it is read:
    /// `TooLarge` when the engine shared with other hosts cannot hold it whole, and
    /// `NoMemory` when the memory limit could not hold it even once everything that may be
    /// shed is.
    pub fn admits(&self, len: u64) -> Result<(), StreamError> {
        self.check_len(len)?;
        if unit_cost(len).0 > self.stream.pool.budget() {
            return Err(StreamError::NoMemory);
        }
        Ok(())
    }

    /// Reserves the memory of a unit of `len` bytes about to begin, so that none of its
    /// pieces can then fail for the memory limit: a write refused for want of room is
    /// refused whole, at its first piece, before anything of it was acknowledged.
    /// (Only the first [`MAX_WRITE`] bytes: a longer write is several units.)
    pub fn reserve(&self, len: u64) -> Result<(), StreamError> {
        self.check_len(len)?;
        let (cost, pieces) = unit_cost(len);
        // Room for the pieces' ring entries too, charged when the ring takes them.
        let ring = pieces * super::RING_ENTRY_COST;
        self.stream.pool.reserve(cost + ring)?;
        self.stream.pool.refund(ring);
        self.reserved.fetch_add(cost, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back what a finished or abandoned unit did not use of its reservation.
    fn give_back(&self) {
        let left = self.reserved.swap(0, Ordering::Relaxed);
        if left > 0 {
            self.stream.pool.refund(left);
        }
    }

    /// Appends `data` and finishes the unit: a whole write when no unit was open.
    pub fn submit(&self, data: &[u8], tag: u32, done: WriteDone) -> Option<u64> {
        match self.append(data, tag) {
            Ok(()) => self.finish(tag, done),
            Err(e) => {
                done(Err(e));
                None
            }
        }
    }

    /// Discards the open unit; returns its bytes.
    pub fn abandon(&self) -> u64 {
        let parts = std::mem::take(&mut *self.unit.lock());
        self.give_back();
        parts.iter().map(|c| c.len() as u64).sum()
    }

    /// Bytes of the open unit.
    pub fn pending(&self) -> u64 {
        self.unit.lock().iter().map(|c| c.len() as u64).sum()
    }

    /// [`Writer::submit`] that waits for a parked write on this thread.
    pub fn write(&self, data: &[u8]) -> Result<(), StreamError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            data,
            0,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(StreamError::Interrupted))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A writer that goes away mid-unit leaves nothing of it to readers.
        self.abandon();
        self.stream.with_state(|st, _, deferred| {
            st.writers -= 1;
            let mut unparked = 0;
            if st.writers == 0 && st.policy.on_writer_close == OnWriterClose::Eof {
                // The session is over: its readers finish, the next writer starts afresh.
                for r in st.readers.iter_mut().filter(|r| r.fate == Fate::Open) {
                    unparked += r.end(Fate::Ended, deferred);
                }
                st.clear_ring();
            }
            ((), unparked)
        });
    }
}

/// What a unit of `len` bytes (its first [`MAX_WRITE`]) costs the memory pool, and in how
/// many pieces at most: a piece is at most a request (1 MiB) and may start mid-page.
fn unit_cost(len: u64) -> (u64, u64) {
    let len = len.min(MAX_WRITE);
    let pieces = len / (1 << 20) + 2;
    (len + pieces * crate::memory::CHUNK_OVERHEAD, pieces)
}
