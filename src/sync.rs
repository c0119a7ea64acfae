//! The one place the core takes its synchronisation primitives from.
//!
//! Everything in the core that locks or counts across threads imports from here, so that the
//! shuttle model checker replaces them all when the `shuttle` feature is on
//! (`cargo test --features shuttle --test shuttle`). It must not know anything about streams.

#[cfg(not(feature = "shuttle"))]
pub use std::sync::Arc;
#[cfg(not(feature = "shuttle"))]
pub use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A mutex without poisoning: a panic while holding a stream lock is a bug that aborts the
/// request anyway, and the data behind it (queues of shared chunks) stays consistent
/// between statements.
#[cfg(not(feature = "shuttle"))]
pub type Mutex<T> = parking_lot::Mutex<T>;
#[cfg(not(feature = "shuttle"))]
pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

#[cfg(feature = "shuttle")]
pub use shuttle::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(feature = "shuttle")]
pub use shuttle::sync::{Arc, MutexGuard};

/// shuttle's mutex behind parking_lot's interface (no poisoning).
#[cfg(feature = "shuttle")]
pub struct Mutex<T>(shuttle::sync::Mutex<T>);

#[cfg(feature = "shuttle")]
impl<T> Mutex<T> {
    pub fn new(value: T) -> Self {
        Mutex(shuttle::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
