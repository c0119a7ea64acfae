//! READ, WRITE and INTERRUPT: the requests that carry a stream's bytes or wait for them,
//! answered by the gate (`gate.rs`) straight from /dev/fuse, outside fuser.
//!
//! fuser 0.18 answers FUSE_INTERRUPT with ENOSYS, and the kernel then stops sending
//! interrupts for the mount and waits for every later request in the killable, unstoppable
//! D state, so that an idle reader could only be made to die by scanning /proc for its
//! signals. Here the kernel's interrupts are taken instead: a reader waiting on an empty
//! stream sleeps in S state at no cost, and when a signal wakes it the kernel names its
//! request. A signal that would end or interrupt a read on a pipe (one with a handler, or
//! whose default action ends the process) answers it with EINTR at once; a stop, continue
//! or ignored-by-default signal leaves it waiting, as a pipe would, and only those reads
//! (now in D state until answered, as the kernel waits for an interrupted request) are
//! watched for a later fatal signal by the watchdog.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::debug;
use parking_lot::{Condvar, Mutex};

use super::writes;
use crate::stream::{ReadMode, ReadOutcome, Reader, Stream, StreamError, WriteDone, Writer};

/// How an answer reaches the kernel (the gate writes it to /dev/fuse).
pub trait Reply: Send + 'static {
    fn data(self, data: &[u8]);
    fn written(self, n: u32);
    /// `errno` is positive (libc's constant).
    fn error(self, errno: i32);
}

/// One open file: a reader, a writer or both (O_RDWR).
pub struct Handle {
    pub stream: Arc<Stream>,
    pub reader: Option<Reader>,
    pub writer: Option<Writer>,
    /// Opened with O_APPEND: the kernel then gives each write() the stream's size as its
    /// offset, so any offset may begin a write in pieces.
    pub append: bool,
    /// The write in pieces being received through this handle (see `writes.rs`).
    pub track: writes::SharedTrack,
}

impl writes::Finish for Handle {
    fn finish_idle(&self, generation: u64) {
        let mut t = self.track.lock();
        if t.generation == generation
            && !t.cut_short()
            && t.take_open()
            && let Some(w) = &self.writer
        {
            w.finish(0, ignore_result());
        }
    }
}

impl Handle {
    /// Ends the unit left open by the handle's last write, if any, as the handle is
    /// released: finished when its write() returned, abandoned when it is known to have been
    /// cut short (its writer died between two pieces).
    pub fn end_open_unit(&self) {
        let mut t = self.track.lock();
        let cut_short = t.cut_short();
        if t.take_open()
            && let Some(w) = &self.writer
        {
            if cut_short {
                let lost = w.abandon();
                log::warn!(
                    "a write cut short by its writer's end was dropped ({lost} bytes received)"
                );
            } else {
                w.finish(0, ignore_result());
            }
        }
    }
}

/// A write answer nobody waits for: a unit finished after its pieces were answered.
fn ignore_result() -> WriteDone {
    Box::new(|r| {
        if let Err(e) = r {
            debug!("a write finished after its pieces were answered failed: {e}");
        }
    })
}

/// The errno for a core error, in one place.
pub fn errno(e: StreamError) -> i32 {
    match e {
        // A write to a removed stream: like a pipe whose readers are gone.
        StreamError::Removed => libc::EPIPE,
        StreamError::NotFound => libc::ENOENT,
        StreamError::Exists => libc::EEXIST,
        // A waiting read or write whose caller got a signal.
        StreamError::Interrupted => libc::EINTR,
        // The memory limit, or max_streams: what a full disk says to a writer or a creator.
        StreamError::NoMemory | StreamError::TooManyStreams => libc::ENOSPC,
        // max_readers: as the per-process limit on open files does.
        StreamError::TooManyReaders => libc::EMFILE,
        StreamError::InvalidName => libc::EINVAL,
        StreamError::NameTooLong => libc::ENAMETOOLONG,
        // A start offset whose bytes left the ring: "result out of range", never a gap.
        StreamError::TooOld => libc::ERANGE,
        // The engine shared with other hosts did not answer in time: an I/O error.
        StreamError::Unavailable => libc::EIO,
        // A write longer than the engine holds whole: what a file over its size limit says.
        StreamError::TooLarge => libc::EFBIG,
        StreamError::Unsupported => libc::EOPNOTSUPP,
    }
}

/// At the first piece of a unit whose `write()` length is known, reserves the memory of the
/// whole unit, so that a write the memory limit cannot take is refused whole (ENOSPC) before
/// any of it is acknowledged, instead of failing at a later piece with a short count.
fn reserve_first(writer: &Writer, track: &writes::Track, len: u64) -> Result<(), StreamError> {
    match track.remaining {
        Some(rest) if writer.pending() == 0 => writer.reserve(len + rest),
        _ => Ok(()),
    }
}

/// Longest a WRITE waits for room under `slow_reader=block` before the readers it waits
/// for are cut off. While it waits, the kernel holds its file's inode lock: an `rm`, `mv`,
/// `chmod` or `setfattr` of the file waits for that lock, in D state that no signal ends,
/// and an `rm` or `mv` holds the directory's lock meanwhile, so that every lookup on the
/// mount waits behind it.
pub const BLOCK_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A request that waits in the core: a parked read or a blocked write.
#[derive(Clone)]
enum Waiting {
    Read { reader: u64, read: u64 },
    Write { write: u64 },
}

/// A request being answered, by its kernel `unique`.
struct Pending {
    /// The requesting thread.
    tid: u32,
    /// What waits in the core, once the core said it parked.
    waiting: Option<(Arc<Stream>, Waiting)>,
    /// The kernel interrupted it and it was left waiting (a harmless signal): the caller is
    /// in D state now, and a later fatal signal will not be announced again.
    interrupted: bool,
}

/// What the gate answers an INTERRUPT.
#[derive(Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Nothing more to say (the request was answered EINTR, or left waiting).
    Done,
    /// The request is not known yet (still on its way to the core): the kernel should send
    /// the interrupt again (EAGAIN).
    Again,
}

/// What READ, WRITE and INTERRUPT share with the rest of the adapter.
pub struct Io {
    pub handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// The request size the kernel accepted (set at INIT).
    pub max_write: AtomicU64,
    finisher: writes::IdleFinisher,
    /// Requests that may wait, by unique, from their arrival to their answer.
    pending: Mutex<HashMap<u64, Pending>>,
    /// Wakes the watchdog when `pending` gets a request it watches (one interrupted and
    /// left waiting, a write waiting for room), or when it is to stop; with none, it sleeps
    /// here instead of scanning.
    watch: Condvar,
    unwatched: AtomicBool,
}

/// Whether the watchdog has something to look at in `pending`.
fn watched(pending: &HashMap<u64, Pending>) -> bool {
    pending
        .values()
        .any(|p| p.interrupted || matches!(p.waiting, Some((_, Waiting::Write { .. }))))
}

impl Io {
    pub fn new(max_write: u64) -> std::io::Result<Io> {
        Ok(Io {
            handles: Mutex::new(HashMap::new()),
            max_write: AtomicU64::new(max_write),
            finisher: writes::IdleFinisher::spawn()?,
            pending: Mutex::new(HashMap::new()),
            watch: Condvar::new(),
            unwatched: AtomicBool::new(false),
        })
    }

    pub fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned()
    }

    /// Notes a request that may wait, before it reaches the core.
    fn arrive(&self, unique: u64, tid: u32) {
        self.pending.lock().insert(
            unique,
            Pending {
                tid,
                waiting: None,
                interrupted: false,
            },
        );
    }

    /// The core parked the request: keep how to cancel it, unless it was answered already.
    fn parked(&self, unique: u64, stream: &Arc<Stream>, waiting: Waiting) {
        let write = matches!(waiting, Waiting::Write { .. });
        if let Some(p) = self.pending.lock().get_mut(&unique) {
            p.waiting = Some((stream.clone(), waiting));
            if write {
                self.watch.notify_one();
            }
        }
    }

    fn answered(&self, unique: u64) {
        self.pending.lock().remove(&unique);
    }

    /// A READ of `size` bytes at `offset` on handle `fh`.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        size: u32,
        nonblock: bool,
        lock_owner: bool,
        tid: u32,
        unique: u64,
        reply: impl Reply,
    ) {
        debug!("read(fh={fh}, offset={offset}, size={size}, nonblock={nonblock})");
        if !lock_owner {
            // read(2) and readv(2) of a direct-I/O file always name their lock owner; a READ
            // without one comes from the page cache (a private mmap faulting, splice or
            // sendfile into a pipe), which a stream cannot serve: refuse it at once rather
            // than hand out queued bytes as file contents or park while the kernel holds the
            // page locked.
            debug!("page-cache read at offset {offset}, refused");
            return reply.error(libc::EIO);
        }
        let Some(h) = self.handle(fh).filter(|h| h.reader.is_some()) else {
            return reply.error(libc::EBADF);
        };
        if size == 0 {
            return reply.data(&[]);
        }
        // Every read() of a stream handle starts at offset 0, and the kernel splits one larger
        // than a request into requests at increasing offsets, sending the next only when the
        // previous one came back full. A READ past offset 0 therefore continues a call that
        // already has bytes: it takes what is queued now and never waits, and an empty answer
        // ends the call with what it has (it is EOF only for a call's first request).
        let continuation = offset > 0;
        let mode = if continuation || nonblock {
            ReadMode::NonBlocking
        } else {
            ReadMode::Wait
        };
        if mode == ReadMode::Wait {
            self.arrive(unique, tid);
        }
        let io = self.clone();
        let deliver = Box::new(move |outcome: ReadOutcome| {
            if mode == ReadMode::Wait {
                io.answered(unique);
            }
            match outcome {
                ReadOutcome::Data(d) => reply.data(&d),
                ReadOutcome::Eof => reply.data(&[]),
                ReadOutcome::WouldBlock if continuation => reply.data(&[]),
                ReadOutcome::WouldBlock => reply.error(libc::EAGAIN),
                ReadOutcome::Interrupted => reply.error(libc::EINTR),
            }
        });
        let r = h.reader.as_ref().expect("filtered above");
        if let Some(read) = r.read(size as usize, mode, tid, deliver) {
            let reader = r.id();
            self.parked(unique, &h.stream, Waiting::Read { reader, read });
        }
    }

    /// A WRITE of `data` at `offset` on handle `fh` (see `writes.rs` for what the offset
    /// tells).
    pub fn write(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        tid: u32,
        unique: u64,
        reply: impl Reply,
    ) {
        debug!("write(fh={fh}, offset={offset}, len={})", data.len());
        let Some(h) = self.handle(fh) else {
            return reply.error(libc::EBADF);
        };
        let Some(writer) = &h.writer else {
            return reply.error(libc::EBADF);
        };
        let len = data.len() as u32;
        let max_write = self.max_write.load(Ordering::Relaxed);
        // The track's lock is held until the request is handed to the core, so that the
        // idle finisher cannot finish the unit between the decision and the append.
        let mut track = h.track.lock();
        let action = track.on_request(offset, data.len() as u64, max_write, h.append, || {
            writes::call_length(tid)
        });
        let step = match action {
            writes::Action::FinishThen(step) => {
                writer.finish(tid, ignore_result());
                step
            }
            writes::Action::Do(step) => step,
        };
        match step {
            writes::Step::Whole | writes::Step::Last => {
                self.arrive(unique, tid);
                let io = self.clone();
                let done: WriteDone = Box::new(move |result| {
                    io.answered(unique);
                    match result {
                        Ok(()) => reply.written(len),
                        Err(e) => reply.error(errno(e)),
                    }
                });
                if let Some(write) = writer.submit(data, tid, done) {
                    self.parked(unique, &h.stream, Waiting::Write { write });
                }
            }
            writes::Step::Extend => match reserve_first(writer, &track, data.len() as u64)
                .and_then(|()| writer.append(data, tid))
            {
                Ok(()) => {
                    let generation = track.generation;
                    drop(track);
                    let handle: Arc<dyn writes::Finish> = h.clone();
                    self.finisher.arm(&handle, generation);
                    reply.written(len);
                }
                Err(e) => {
                    track.take_open();
                    reply.error(errno(e));
                }
            },
        }
    }

    /// The kernel interrupted request `unique`: its caller got a signal. `pending` says
    /// what the caller's thread has pending (see `watchdog::pending_for`).
    pub fn interrupt(
        &self,
        unique: u64,
        pending: impl FnOnce(u32) -> Option<super::watchdog::Pending>,
    ) -> Interrupt {
        let (tid, waiting) = {
            let mut map = self.pending.lock();
            let Some(p) = map.get_mut(&unique) else {
                return Interrupt::Again;
            };
            let Some(waiting) = p.waiting.clone() else {
                return Interrupt::Again;
            };
            p.interrupted = true;
            self.watch.notify_one();
            (p.tid, waiting)
        };
        use super::watchdog::Pending as P;
        match pending(tid) {
            Some(P::Thread | P::Process { .. }) => {
                cancel(&waiting);
            }
            // Stop, continue or ignored by default: the read goes on waiting, as on a pipe.
            Some(P::None) | None => {}
        }
        Interrupt::Done
    }

    /// The requests left waiting after an interrupt, as (unique, thread), for the watchdog.
    pub fn interrupted(&self) -> Vec<(u64, u32)> {
        self.pending
            .lock()
            .iter()
            .filter(|(_, p)| p.interrupted)
            .map(|(u, p)| (*u, p.tid))
            .collect()
    }

    /// Answers a waiting request with EINTR; says whether it was still waiting.
    pub fn cancel(&self, unique: u64) -> bool {
        let waiting = self
            .pending
            .lock()
            .get(&unique)
            .and_then(|p| p.waiting.clone());
        waiting.is_some_and(|w| cancel(&w))
    }

    /// Applies the WRITEs that have waited [`BLOCK_LIMIT`] for room under
    /// `slow_reader=block`, cutting off the readers they wait for (see
    /// [`Stream::expire_blocked`]).
    pub fn expire_blocked(&self) {
        let mut streams: Vec<Arc<Stream>> = self
            .pending
            .lock()
            .values()
            .filter_map(|p| match &p.waiting {
                Some((s, Waiting::Write { .. })) => Some(s.clone()),
                _ => None,
            })
            .collect();
        streams.sort_by_key(Arc::as_ptr);
        streams.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for s in streams {
            s.expire_blocked(BLOCK_LIMIT);
        }
    }

    /// Blocks until a request is interrupted and left waiting or a write waits for room;
    /// false once [`Io::stop_watching`] was called.
    pub fn await_watched(&self) -> bool {
        let mut pending = self.pending.lock();
        loop {
            if self.unwatched.load(Ordering::Relaxed) {
                return false;
            }
            if watched(&pending) {
                return true;
            }
            self.watch.wait(&mut pending);
        }
    }

    /// Ends the watchdog's wait for good.
    pub fn stop_watching(&self) {
        let _pending = self.pending.lock();
        self.unwatched.store(true, Ordering::Relaxed);
        self.watch.notify_all();
    }

    /// Requests waiting in the core now.
    pub fn waiting(&self) -> usize {
        self.pending.lock().len()
    }
}

fn cancel((stream, waiting): &(Arc<Stream>, Waiting)) -> bool {
    match waiting {
        Waiting::Read { reader, read } => stream.cancel_read(*reader, *read),
        Waiting::Write { write } => stream.cancel_write(*write),
    }
}
