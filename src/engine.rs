//! The seam between the core and a distributed engine that holds the streams of several
//! hosts (e.g. `nats`). The core calls these hooks where a change must reach every host
//! first; with no engine it applies everything locally, as it always did. This module knows
//! nothing of any engine's protocol, nor of the front doors (FUSE, HTTP), which never learn
//! whether an engine is present.
//!
//! The shape: each host keeps its streams in the core as a cache. A write of a shared stream
//! is handed to its [`Publisher`] instead of being applied; the engine then feeds every
//! host's copy, the writer's own included, in the engine's one order
//! ([`crate::stream::Stream::apply_remote`]), so readers, parking, poll, drops and
//! statistics stay the core's.

use crate::memory::Chunk;
use crate::stream::{OnWriterClose, Policy, SlowReader, Stream, StreamError, WriteDone};
use crate::sync::Arc;

/// The namespace side of an engine: names that exist on every host.
pub trait Engine: Send + Sync {
    /// Makes the stream `name` exist in the engine (it may exist already), before the local
    /// stream is registered. Fails with `Unavailable` when the engine cannot be reached in
    /// time, and with `NameTooLong` when the engine cannot hold the name.
    fn create(&self, name: &[u8]) -> Result<(), StreamError>;
    /// Removes the stream `name` from the engine (every host's copy ends).
    fn remove(&self, name: &[u8]) -> Result<(), StreamError>;
    /// A local stream for `name` was registered: the engine feeds it and takes its writes
    /// (it sets the stream's publisher).
    fn attach(&self, name: &[u8], stream: &Arc<Stream>);
    /// One line on the engine and its connection, for `status`.
    fn status(&self) -> String;
}

/// The write side of a shared stream.
pub trait Publisher: Send + Sync {
    /// Sends one whole write (its pieces, in order) to every host. `done` is called exactly
    /// once: `Ok` when the engine has taken it, `Unavailable` when it could not in time,
    /// `Interrupted` when cancelled. Returns an id for [`Publisher::cancel`] when the answer
    /// comes later.
    fn publish(&self, parts: Vec<Chunk>, done: WriteDone) -> Option<u64>;
    /// Answers a write still waiting with `Interrupted`; says whether it was waiting. (A
    /// write already sent may still reach readers.)
    fn cancel(&self, write: u64) -> bool;
    /// The longest write the engine can hold whole; a longer one is refused with
    /// `TooLarge` before any of it is taken.
    fn max_write(&self) -> u64 {
        u64::MAX
    }
}

/// Why `policy` cannot hold across hosts, if it cannot: a write cannot wait for readers on
/// other hosts (`slow_reader=block`), and the engine keeps no count of other hosts' writers
/// (`on_writer_close=eof`).
pub fn shared_policy_problem(policy: &Policy) -> Option<(&'static str, &'static str)> {
    if policy.slow_reader == SlowReader::Block {
        return Some(("slow_reader", "block"));
    }
    if policy.on_writer_close == OnWriterClose::Eof {
        return Some(("on_writer_close", "eof"));
    }
    None
}
