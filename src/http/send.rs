//! The live phase of a plain stream `GET`: once `lean.rs` has written the response's head,
//! the connection leaves tokio for a sender thread, which writes the reader's chunks to the
//! socket from its own epoll loop (Icecast's shape). A listener then costs its socket, its
//! core reader and one record here, not a task, a reactor registration and a timer: what
//! 5,000 listeners of one stream cost is mostly the core's readers.
//!
//! Each thread owns its connections. The core answers a parked read by pushing the outcome
//! into the thread's inbox (waking it with an eventfd only when it sleeps); the thread writes
//! what the socket takes, waits for `EPOLLOUT` for the rest, and asks for the next read only
//! once the last is out, so a client that reads slowly is a slow core reader and the
//! stream's `slow_reader` policy applies. A client that closes is seen at once (its reader
//! released); bytes it sends meanwhile (a pipelined request) are kept, and when the body
//! ends on a connection that stays open, the connection goes back to `lean.rs`.
//! Knows nothing of routes or requests.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::access::Peer;
use super::body::{READ_MAX, TAG};
use super::conn::{After, Conn, Next, Tail};
use super::server::{Ctx, Open};
use crate::stream::{Bytes, ReadMode, ReadOutcome, Reader, Readiness};

/// Bytes a client may send while its body is under way (a pipelined request) before it is
/// closed.
pub const MAX_PIPELINED: usize = super::server::MAX_HEAD;

/// The epoll token of a thread's eventfd.
const WAKE: u64 = u64::MAX;

/// What a connection is outside any body: handed to a sender, and back to `lean.rs`.
pub struct Rest {
    pub socket: std::net::TcpStream,
    /// Bytes read from the client and not parsed yet.
    pub pipelined: Vec<u8>,
    pub ctx: Arc<Ctx>,
    pub peer: Peer,
    pub open: Open,
}

/// A live body to send: the reader's bytes, chunked (HTTP/1.1) or until the close
/// (HTTP/1.0); `keep` when the connection takes another request after it.
pub struct Job {
    pub rest: Rest,
    pub reader: Reader,
    pub chunked: bool,
    pub keep: bool,
}

/// The sender threads. A connection goes to the first with fewer than `FILL`, else to
/// the one with the fewest: a few hundred listeners of a stream are one thread's batch of
/// sends at each hold's end, not one per thread (a wakeup costs 40–130 µs of CPU on the
/// 2-vCPU VM this was measured on).
pub struct Senders {
    threads: Vec<Arc<Shared>>,
}

/// Connections a sender thread takes before the next one is used. One thread sends to
/// 1,000 listeners of a 2 Mbit/s stream with a sixth of a core.
const FILL: usize = 1024;

/// What a sender thread shares with the core's callbacks and with `adopt`.
struct Shared {
    epoll: OwnedFd,
    wake: OwnedFd,
    inbox: Mutex<Inbox>,
    /// The thread is in (or about to enter) `epoll_wait`: whoever fills the inbox writes
    /// the eventfd.
    sleeping: AtomicBool,
    /// Connections given to the thread and not released yet.
    conns: AtomicUsize,
}

#[derive(Default)]
struct Inbox {
    jobs: Vec<Job>,
    /// Read outcomes, by the token of the connection that asked.
    outcomes: Vec<(u64, ReadOutcome)>,
}

impl Shared {
    fn post(&self, fill: impl FnOnce(&mut Inbox)) {
        fill(&mut self.inbox.lock());
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a local into the thread's eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        }
    }
}

impl Senders {
    /// Starts `threads` sender threads; bodies ending on a connection kept open go back to
    /// `lean.rs` on `runtime`. A short read holds the next one back for `coalesce` (see
    /// [`super::body::ReaderBody::with_coalesce`]).
    pub fn start(
        threads: usize,
        coalesce: Duration,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<Senders> {
        let mut all = Vec::new();
        for i in 0..threads.max(1) {
            // SAFETY: plain syscalls; each result is checked before it is owned.
            let (epoll, wake) = unsafe {
                let e = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                if e < 0 {
                    return Err(io::Error::last_os_error());
                }
                let epoll = OwnedFd::from_raw_fd(e);
                let w = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
                if w < 0 {
                    return Err(io::Error::last_os_error());
                }
                (epoll, OwnedFd::from_raw_fd(w))
            };
            ctl(&epoll, libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE)?;
            let shared = Arc::new(Shared {
                epoll,
                wake,
                inbox: Mutex::default(),
                sleeping: AtomicBool::new(false),
                conns: AtomicUsize::new(0),
            });
            let mut sender = Sender {
                shared: shared.clone(),
                slots: Vec::new(),
                free: Vec::new(),
                holds: VecDeque::new(),
                coalesce,
                runtime: runtime.clone(),
                scratch: Vec::new(),
            };
            crate::panics::spawn_essential(format!("http-send{i}"), move || sender.run())?;
            all.push(shared);
        }
        Ok(Senders { threads: all })
    }

    /// Takes over `job`: its head is written, its body is the reader's bytes.
    pub fn adopt(&self, job: Job) {
        let counts: Vec<usize> = self
            .threads
            .iter()
            .map(|t| t.conns.load(Ordering::Relaxed))
            .collect();
        let shared = &self.threads[pick(&counts)];
        shared.conns.fetch_add(1, Ordering::Relaxed);
        shared.post(|inbox| inbox.jobs.push(job));
    }
}

/// The thread for a new connection, by how many each has: see [`Senders`].
fn pick(counts: &[usize]) -> usize {
    counts.iter().position(|&n| n < FILL).unwrap_or_else(|| {
        (0..counts.len())
            .min_by_key(|&i| counts[i])
            .unwrap_or_default()
    })
}

fn ctl(epoll: &OwnedFd, op: libc::c_int, fd: libc::c_int, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: token,
    };
    // SAFETY: `ev` outlives the call; the kernel copies it.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connection slot; `era` tells a connection from an earlier one in the same slot, whose
/// late answers and events are ignored.
struct Slot {
    era: u32,
    conn: Option<Box<Conn>>,
}

/// One sender thread's state.
struct Sender {
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connections holding their next read, and until when; in deadline order, since every
    /// hold is `coalesce` long.
    holds: VecDeque<(Instant, u64)>,
    coalesce: Duration,
    runtime: tokio::runtime::Handle,
    /// Where a write's pieces are gathered (its room is kept across writes).
    scratch: Vec<Bytes>,
}

/// Most pieces (runs of the core's queue) one write gathers.
pub(super) const PIECES: usize = 16;

fn token(index: u32, era: u32) -> u64 {
    (u64::from(era) << 32) | u64::from(index)
}

impl Sender {
    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let (mut jobs, mut outcomes) = (Vec::new(), Vec::new());
        loop {
            {
                let mut inbox = self.shared.inbox.lock();
                std::mem::swap(&mut inbox.jobs, &mut jobs);
                std::mem::swap(&mut inbox.outcomes, &mut outcomes);
            }
            for job in jobs.drain(..) {
                self.adopt(job);
            }
            jobs.shrink_to(16);
            for (t, o) in outcomes.drain(..) {
                self.answer(t, o);
            }
            // A burst (every listener answered at one write) leaves no lasting room.
            outcomes.shrink_to(1024);
            self.expire(Instant::now());
            let timeout = match self.holds.front() {
                Some((at, _)) => {
                    let us = at.saturating_duration_since(Instant::now()).as_micros();
                    us.div_ceil(1000).min(i32::MAX as u128) as i32
                }
                None => -1,
            };
            self.shared.sleeping.store(true, Ordering::SeqCst);
            let pending = {
                let inbox = self.shared.inbox.lock();
                !inbox.jobs.is_empty() || !inbox.outcomes.is_empty()
            };
            let timeout = if pending { 0 } else { timeout };
            // SAFETY: `events` is a live buffer of its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.shared.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            self.shared.sleeping.store(false, Ordering::SeqCst);
            for ev in &events[..n.max(0) as usize] {
                let (t, flags) = (ev.u64, ev.events);
                if t == WAKE {
                    let mut count = 0u64;
                    // SAFETY: reads 8 bytes into a local from the thread's eventfd.
                    unsafe { libc::read(self.shared.wake.as_raw_fd(), (&raw mut count).cast(), 8) };
                } else {
                    self.event(t, flags);
                }
            }
        }
    }

    fn conn(&mut self, t: u64) -> Option<&mut Conn> {
        let slot = self.slots.get_mut((t & 0xffff_ffff) as usize)?;
        if u64::from(slot.era) != t >> 32 {
            return None;
        }
        slot.conn.as_deref_mut()
    }

    fn adopt(&mut self, job: Job) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { era: 0, conn: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let t = token(index, slot.era);
        if let Err(e) = ctl(
            &self.shared.epoll,
            libc::EPOLL_CTL_ADD,
            job.rest.socket.as_raw_fd(),
            t,
        ) {
            log::warn!("http: {}: {e}", job.rest.peer);
            self.free.push(index);
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        job.reader.set_one_run();
        slot.conn = Some(Box::new(Conn {
            rest: job.rest,
            reader: job.reader,
            chunked: job.chunked,
            keep: job.keep,
            parked: 0,
            holding: false,
            out: Box::default(),
            len: 0,
            tail: Tail::None,
            done: 0,
            after: None,
        }));
        // The registration reports what the socket has already (data, or its close).
        self.send(t, None);
    }

    /// Parks a read in the core: its answer comes through the inbox.
    fn park(&mut self, t: u64) {
        let shared = self.shared.clone();
        let Some(c) = self.conn(t) else { return };
        let deliver =
            Box::new(move |o: ReadOutcome| shared.post(|inbox| inbox.outcomes.push((t, o))));
        c.parked = c
            .reader
            .read(READ_MAX, ReadMode::Wait, TAG, deliver)
            .unwrap_or(0);
    }

    /// A parked read's answer.
    fn answer(&mut self, t: u64, outcome: ReadOutcome) {
        let Some(c) = self.conn(t) else { return };
        c.parked = 0;
        match outcome {
            ReadOutcome::Data(data) => self.send(t, Some(data)),
            // The end (a removal, the session's end) is found by taking what is left.
            _ => self.send(t, None),
        }
    }

    /// Sends what the reader has queued (after `first`, a parked read's answer), a write of
    /// up to [`PIECES`] runs at a time, until the socket is full or the queue empty; then
    /// holds the next read, parks it, or ends the body.
    fn send(&mut self, t: u64, mut first: Option<Bytes>) {
        let mut pieces = std::mem::take(&mut self.scratch);
        let coalesce = self.coalesce;
        let next = loop {
            let Some(c) = self.conn(t) else {
                break None;
            };
            pieces.clear();
            let mut got = first.take().map_or(0, |b| {
                let n = b.len();
                pieces.push(b);
                n
            });
            let left = c.reader.read_runs(READ_MAX - got, PIECES, &mut pieces);
            got = pieces.iter().map(|b| b.len()).sum();
            let after = match left {
                Readiness::Readable => After::More,
                Readiness::Waiting => After::Drained(got as u32),
                Readiness::Ended => After::End,
            };
            c.frame(got, matches!(after, After::End));
            match c.write(&pieces) {
                Err(_) => break Some(Next::Close),
                Ok(true) => {}
                Ok(false) => {
                    c.out = pieces.drain(..).collect();
                    c.after = Some(after);
                    break Some(Next::Wait);
                }
            }
            match c.then(after, coalesce) {
                Next::Read => continue,
                next => break Some(next),
            }
        };
        pieces.clear();
        self.scratch = pieces;
        if let Some(next) = next {
            self.go(t, next);
        }
    }

    fn go(&mut self, t: u64, next: Next) {
        match next {
            Next::Wait => {}
            Next::Hold => self.holds.push_back((Instant::now() + self.coalesce, t)),
            Next::Read => self.send(t, None),
            Next::Park => self.park(t),
            Next::Close => self.close(t),
            Next::HandBack => self.hand_back(t),
        }
    }

    /// Reads that held long enough go on.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, t)) = self.holds.front() {
            if at > now {
                break;
            }
            self.holds.pop_front();
            if let Some(c) = self.conn(t)
                && c.holding
            {
                c.holding = false;
                self.send(t, None);
            }
        }
    }

    /// An epoll event of a connection: room to write, bytes from the client, or its end.
    fn event(&mut self, t: u64, flags: u32) {
        let coalesce = self.coalesce;
        let Some(c) = self.conn(t) else { return };
        if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            return self.close(t);
        }
        if flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 && c.take_input().is_err() {
            return self.close(t);
        }
        if flags & libc::EPOLLOUT as u32 == 0 {
            return;
        }
        let Some(after) = c.after else { return };
        let out = std::mem::take(&mut c.out).into_vec();
        let next = match c.write(&out) {
            Err(_) => Next::Close,
            Ok(false) => {
                c.out = out.into_boxed_slice();
                Next::Wait
            }
            Ok(true) => {
                c.after = None;
                c.then(after, coalesce)
            }
        };
        self.go(t, next);
    }

    fn release(&mut self, t: u64) -> Option<Box<Conn>> {
        let index = (t & 0xffff_ffff) as usize;
        self.conn(t)?;
        let slot = &mut self.slots[index];
        let c = slot.conn.take()?;
        slot.era = slot.era.wrapping_add(1);
        self.free.push(index as u32);
        self.shared.conns.fetch_sub(1, Ordering::Relaxed);
        if c.parked != 0 {
            c.reader.stream().cancel_read(c.reader.id(), c.parked);
        }
        Some(c)
    }

    /// Ends the connection: its reader, its socket and its count go.
    fn close(&mut self, t: u64) {
        drop(self.release(t));
    }

    /// The body is over and the connection stays: `lean.rs` reads its next request.
    fn hand_back(&mut self, t: u64) {
        let Some(c) = self.release(t) else { return };
        let Conn { rest, reader, .. } = *c;
        drop(reader);
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.shared.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                rest.socket.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        self.runtime.spawn(super::lean::resume(rest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_first_thread_with_room_else_to_the_least_loaded() {
        let cases: &[(&[usize], usize)] = &[
            (&[0, 0], 0),
            (&[FILL - 1, 0], 0),
            (&[FILL, 0], 1),
            (&[FILL, FILL - 1], 1),
            (&[FILL + 3, FILL], 1),
            (&[FILL, FILL + 3], 0),
            (&[FILL + 1, FILL + 1], 0),
            (&[5], 0),
            (&[FILL * 4], 0),
        ];
        for &(counts, want) in cases {
            assert_eq!(pick(counts), want, "{counts:?}");
        }
    }
}
