//! The named streams of one mount: create, look up, list, rename, remove and shut down.
//! Knows nothing of FUSE; names are raw bytes as the kernel gives them.
//!
//! Lock order: the namespace lock is taken before any stream lock and never held while a
//! stream delivers answers (removal happens after the namespace lock is released).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};

use crate::memory::Pool;
use crate::stream::{Budgets, Meta, Policy, Stream, StreamError};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// Longest stream name in bytes (as Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Whether `name` may be a new stream's: 1 to [`NAME_MAX`] bytes, not `.` or `..`, and
/// without `/`, NUL or `@` (which starts a start spec: `STREAM@SPEC`, see `start.rs`).
pub fn check_new_name(name: &[u8]) -> Result<(), StreamError> {
    if name.len() > NAME_MAX {
        return Err(StreamError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|b| b"/\0@".contains(b))
    {
        return Err(StreamError::InvalidName);
    }
    Ok(())
}

/// The first stream id; 1 is the root directory's inode number in FUSE.
pub const FIRST_STREAM_ID: u64 = 2;

struct Inner {
    /// Streams by id, so listings can resume after an id (ids only grow).
    by_id: BTreeMap<u64, (Vec<u8>, Arc<Stream>)>,
    /// Invariant: maps exactly the names in `by_id` to their ids.
    by_name: HashMap<Vec<u8>, u64>,
    /// Set by shutdown: no stream can be created any more.
    closed: bool,
}

/// The set of live streams of a mount.
pub struct Namespace {
    inner: Mutex<Inner>,
    /// Budgets and policies given to new streams.
    defaults: Budgets,
    policy: Policy,
    next_id: AtomicU64,
    /// The memory, readers and parked operations of every stream of the namespace.
    pool: Arc<Pool>,
    /// Most streams at once.
    max_streams: usize,
    /// The engine sharing the namespace with other hosts, when there is one (`engine.rs`).
    engine: std::sync::OnceLock<Arc<dyn crate::engine::Engine>>,
}

/// What a namespace may hold at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of stream data and bookkeeping (see `memory.rs`).
    pub max_memory: u64,
    pub max_streams: usize,
    /// Readers across all streams.
    pub max_readers: usize,
}

impl Limits {
    /// No limits, for tests and tools.
    pub const NONE: Limits = Limits {
        max_memory: u64::MAX,
        max_streams: usize::MAX,
        max_readers: usize::MAX,
    };
}

impl Namespace {
    pub fn new(defaults: Budgets) -> Namespace {
        Namespace::with_policy(defaults, Policy::default())
    }

    pub fn with_policy(defaults: Budgets, policy: Policy) -> Namespace {
        Namespace::with_limits(defaults, policy, Limits::NONE)
    }

    pub fn with_limits(defaults: Budgets, policy: Policy, limits: Limits) -> Namespace {
        Namespace {
            policy,
            inner: Mutex::new(Inner {
                by_id: BTreeMap::new(),
                by_name: HashMap::new(),
                closed: false,
            }),
            defaults,
            next_id: AtomicU64::new(FIRST_STREAM_ID),
            pool: Pool::new(limits.max_memory, limits.max_readers),
            max_streams: limits.max_streams,
            engine: std::sync::OnceLock::new(),
        }
    }

    /// Shares the namespace with other hosts through `engine` from now on (once: later
    /// calls are ignored). Set before any stream exists.
    pub fn set_engine(&self, engine: Arc<dyn crate::engine::Engine>) {
        let _ = self.engine.set(engine);
    }

    pub fn engine(&self) -> Option<&Arc<dyn crate::engine::Engine>> {
        self.engine.get()
    }

    /// The namespace's memory pool (limit, bytes in use, readers).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    pub fn defaults(&self) -> Budgets {
        self.defaults
    }

    pub fn default_policy(&self) -> Policy {
        self.policy
    }

    /// Returns the stream named `name`, creating it with `meta` when there is none. The flag
    /// says whether it was created. Fails with `Removed` after shutdown, with
    /// `InvalidName`/`NameTooLong` for a name a new stream may not take (see
    /// [`check_new_name`]), and with `TooManyStreams` when `max_streams` exist.
    pub fn create(&self, name: &[u8], meta: Meta) -> Result<(Arc<Stream>, bool), StreamError> {
        let Some(engine) = self.engine() else {
            return self.adopt(name, meta);
        };
        if let Some(s) = self.lookup(name) {
            return Ok((s, false));
        }
        check_new_name(name)?;
        if self.inner.lock().closed {
            return Err(StreamError::Removed);
        }
        if self.len() >= self.max_streams {
            return Err(StreamError::TooManyStreams);
        }
        // Made on every host first; the local copy follows (as it does on the others).
        engine.create(name)?;
        self.adopt(name, meta)
    }

    /// [`Namespace::create`] without asking the engine: for a stream that exists in it
    /// already (another host made it), or when there is no engine. A new stream is attached
    /// to the engine before its name is visible, so that no write to it can bypass it.
    pub fn adopt(&self, name: &[u8], meta: Meta) -> Result<(Arc<Stream>, bool), StreamError> {
        // Room for one more stream's state, made (by shedding) before any lock is taken;
        // the stream charges it itself once made.
        let room = self.pool.reserve(crate::memory::STREAM_COST);
        if room.is_ok() {
            self.pool.refund(crate::memory::STREAM_COST);
        }
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(StreamError::Removed);
        }
        if let Some(id) = inner.by_name.get(name) {
            return Ok((inner.by_id[id].1.clone(), false));
        }
        check_new_name(name)?;
        if inner.by_id.len() >= self.max_streams {
            return Err(StreamError::TooManyStreams);
        }
        room?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = Stream::with_policy(id, self.defaults, self.policy, meta, self.pool.clone());
        if let Some(engine) = self.engine() {
            engine.attach(name, &stream);
        }
        inner.by_name.insert(name.to_vec(), id);
        inner.by_id.insert(id, (name.to_vec(), stream.clone()));
        Ok((stream, true))
    }

    pub fn lookup(&self, name: &[u8]) -> Option<Arc<Stream>> {
        let inner = self.inner.lock();
        let id = inner.by_name.get(name)?;
        Some(inner.by_id[id].1.clone())
    }

    /// The name of the live stream with this id.
    pub fn name(&self, id: u64) -> Option<Vec<u8>> {
        self.inner.lock().by_id.get(&id).map(|(n, _)| n.clone())
    }

    /// The live stream with this id (not a removed one).
    pub fn get(&self, id: u64) -> Option<Arc<Stream>> {
        self.inner.lock().by_id.get(&id).map(|(_, s)| s.clone())
    }

    /// Removes the name and ends its stream (readers get EOF after their queue); with an
    /// engine, on every host.
    pub fn remove(&self, name: &[u8]) -> Result<(), StreamError> {
        if let Some(engine) = self.engine() {
            if self.lookup(name).is_none() {
                return Err(StreamError::NotFound);
            }
            engine.remove(name)?;
        }
        self.forget(name)
    }

    /// [`Namespace::remove`] of `name` only while it names `stream` (the one a caller
    /// checked): `Ok(false)`, and nothing removed, when it names another stream or none.
    /// Locally the check and the removal are one step; with an engine, `name` is removed on
    /// every host if it named `stream` here an instant before.
    pub fn remove_stream(&self, name: &[u8], stream: &Arc<Stream>) -> Result<bool, StreamError> {
        if let Some(engine) = self.engine() {
            if !self.lookup(name).is_some_and(|s| Arc::ptr_eq(&s, stream)) {
                return Ok(false);
            }
            engine.remove(name)?;
            // The engine's feed may have forgotten it already: removed all the same.
            self.forget_stream(name, stream);
            return Ok(true);
        }
        Ok(self.forget_stream(name, stream))
    }

    /// Removes `name` from this host only, if it still names `stream`: for an engine whose
    /// stream is gone (another host removed it). Returns whether it did.
    pub fn forget_stream(&self, name: &[u8], stream: &Arc<Stream>) -> bool {
        {
            let mut inner = self.inner.lock();
            match inner.by_name.get(name) {
                Some(id) if Arc::ptr_eq(&inner.by_id[id].1, stream) => {
                    let id = *id;
                    inner.by_name.remove(name);
                    inner.by_id.remove(&id);
                }
                _ => return false,
            }
        }
        stream.remove();
        true
    }

    fn forget(&self, name: &[u8]) -> Result<(), StreamError> {
        let stream = {
            let mut inner = self.inner.lock();
            let id = inner.by_name.remove(name).ok_or(StreamError::NotFound)?;
            inner.by_id.remove(&id).expect("by_name and by_id agree").1
        };
        stream.remove();
        Ok(())
    }

    /// Renames a stream; a stream already named `to` is removed first (as rename(2) does).
    /// With `no_replace`, an existing `to` fails with `Exists` instead.
    pub fn rename(&self, from: &[u8], to: &[u8], no_replace: bool) -> Result<(), StreamError> {
        if self.engine().is_some() {
            // Not atomic across hosts: refused rather than half done.
            return Err(StreamError::Unsupported);
        }
        let replaced = {
            let mut inner = self.inner.lock();
            let id = *inner.by_name.get(from).ok_or(StreamError::NotFound)?;
            if from == to {
                return Ok(());
            }
            check_new_name(to)?;
            let replaced = match inner.by_name.get(to).copied() {
                Some(_) if no_replace => return Err(StreamError::Exists),
                Some(old) => {
                    inner.by_name.remove(to);
                    inner.by_id.remove(&old).map(|(_, s)| s)
                }
                None => None,
            };
            inner.by_name.remove(from);
            inner.by_name.insert(to.to_vec(), id);
            inner.by_id.get_mut(&id).expect("by_name and by_id agree").0 = to.to_vec();
            replaced
        };
        if let Some(stream) = replaced {
            stream.remove();
        }
        Ok(())
    }

    /// Up to `limit` streams with an id greater than `after`, in id order.
    pub fn list_after(&self, after: u64, limit: usize) -> Vec<(u64, Vec<u8>)> {
        let inner = self.inner.lock();
        inner
            .by_id
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(id, (name, _))| (*id, name.clone()))
            .collect()
    }

    /// Every live stream with its name, in id order.
    pub fn entries(&self) -> Vec<(Vec<u8>, Arc<Stream>)> {
        let inner = self.inner.lock();
        inner.by_id.values().cloned().collect()
    }

    /// Every live stream.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        let inner = self.inner.lock();
        inner.by_id.values().map(|(_, s)| s.clone()).collect()
    }

    /// Parked reads and blocked writes across all streams now.
    pub fn parked_total(&self) -> usize {
        self.pool.parked_total()
    }

    /// Live streams now.
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every stream (readers get EOF after their queue, writers EPIPE) and refuses new
    /// ones. Idempotent.
    pub fn shutdown(&self) {
        let streams: Vec<Arc<Stream>> = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.by_name.clear();
            std::mem::take(&mut inner.by_id)
                .into_values()
                .map(|(_, s)| s)
                .collect()
        };
        for s in streams {
            s.remove();
        }
    }
}
