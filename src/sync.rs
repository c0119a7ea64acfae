//! The one place the core takes its synchronisation primitives from.
//!
//! Everything in the core that locks or counts across threads imports from here, so that a
//! model checker can later be switched in by changing this file alone. It must not know
//! anything about streams.

pub use std::sync::Arc;
pub use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A mutex without poisoning: a panic while holding a stream lock is a bug that aborts the
/// request anyway, and the data behind it (queues of shared chunks) stays consistent
/// between statements.
pub type Mutex<T> = parking_lot::Mutex<T>;
pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
