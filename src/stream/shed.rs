//! What the memory pool asks of a stream when it sheds (see `memory.rs`): its oldest
//! history, and the queues of its readers furthest behind.

use super::state::Fate;
use super::{SlowReader, Stream};

impl Stream {
    /// Arrival of the ring's oldest write (on `state::clock`), for shedding.
    pub(crate) fn oldest_history(&self) -> Option<u64> {
        self.lock().bounds.front().map(|b| b.at())
    }

    /// Drops the ring's oldest writes that arrived at or before `until`, until `enough`.
    pub(crate) fn trim_history(&self, until: u64, enough: &dyn Fn() -> bool) {
        let mut st = self.lock();
        while st.bounds.front().is_some_and(|b| b.at() <= until) && !enough() {
            st.pop_ring_write();
            // What the index gives back counts towards `enough` at once.
            st.sync_ring();
        }
    }

    /// Readers whose queues could be shed, with their queued bytes (none under `Block`).
    pub(crate) fn sheddable_readers(&self) -> Vec<(u64, u64)> {
        let st = self.lock();
        if st.policy.slow_reader == SlowReader::Block {
            return Vec::new();
        }
        st.readers
            .iter()
            .filter(|r| r.queued > 0)
            .map(|r| (r.id, r.queued))
            .collect()
    }

    /// Frees a reader's queue for the memory limit, as its policy says: its queued writes
    /// are dropped and counted (`Drop`), or it is cut off (`Disconnect`).
    pub(crate) fn shed_reader(&self, id: u64) {
        self.with_state(|st, _, deferred| {
            let policy = st.policy.slow_reader;
            let Some(r) = st.reader_mut(id) else {
                return ((), 0);
            };
            let (writes, bytes) = r.shed_queue();
            r.lose(writes, bytes);
            if policy == SlowReader::Disconnect && r.fate == Fate::Open {
                r.end(Fate::Disconnected, deferred);
            }
            log::warn!(
                "reader {}: {writes} queued writes ({bytes} bytes) dropped to keep within the memory limit",
                r.label
            );
            st.dropped_writes += writes;
            st.dropped_bytes += bytes;
            ((), 0)
        })
    }
}
