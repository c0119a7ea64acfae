//! The gate between the kernel and the adapter: threads that read /dev/fuse themselves,
//! answer READ, WRITE and INTERRUPT through `Io` (`io.rs`) (the requests that move a stream's bytes,
//! and the one fuser cannot take: it answers FUSE_INTERRUPT with ENOSYS, after which the
//! kernel never interrupts a request again), and pass every other request to fuser's session
//! over a socket pair, whose answers go back to /dev/fuse. Bytes of the streams never cross
//! the socket: the other requests are small (lookups, attributes, opens), so fuser keeps all
//! the protocol it is good at and the data path pays nothing.
//!
//! Lock discipline: none here; every answer is one `writev` on the device, from whichever
//! thread has it (a gate thread, a writer's thread that completed a parked read, fuser's).

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, error};

use super::io::{Interrupt, Io, Reply};

const FUSE_READ: u32 = 15;
const FUSE_WRITE: u32 = 16;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
/// `fuse_read_in.read_flags`: the request names its lock owner (read(2) always does).
const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// `fuse_read_in` and `fuse_write_in` (protocol 7.9 and later).
const RW_IN: usize = 40;

/// Gate threads reading the device. Handlers never wait, so two keep the requests moving
/// while one is copying a write.
const READERS: usize = 2;

/// The kernel header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub pid: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl InHeader {
    pub fn parse(b: &[u8]) -> Option<InHeader> {
        (b.len() >= IN_HEADER).then(|| InHeader {
            len: u32_at(b, 0),
            opcode: u32_at(b, 4),
            unique: u64_at(b, 8),
            pid: u32_at(b, 32),
        })
    }
}

/// A READ or WRITE's arguments (`fuse_read_in` and `fuse_write_in` share their layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub rw_flags: u32,
    pub open_flags: u32,
}

impl RwIn {
    pub fn parse(b: &[u8]) -> Option<RwIn> {
        let a = b.get(IN_HEADER..IN_HEADER + RW_IN)?;
        Some(RwIn {
            fh: u64_at(a, 0),
            offset: u64_at(a, 8),
            size: u32_at(a, 16),
            rw_flags: u32_at(a, 20),
            open_flags: u32_at(a, 32),
        })
    }
}

/// An answer's header: its total length, the negated errno (0 for success) and the unique.
fn out_header(len: usize, error: i32, unique: u64) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    h[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&error.to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

/// Writes one answer to the device in one `writev`.
fn send(dev: &File, parts: &[&[u8]]) {
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    if let Err(e) = (&*dev).write_vectored(&slices) {
        // ENOENT: the request was aborted meanwhile (its caller died); nothing to do.
        debug!("answer not delivered: {e}");
    }
}

/// An answer to one request of the gate's.
struct DevReply {
    dev: Arc<File>,
    unique: u64,
}

impl Reply for DevReply {
    fn data(self, data: &[u8]) {
        let h = out_header(OUT_HEADER + data.len(), 0, self.unique);
        send(&self.dev, &[&h, data]);
    }

    fn written(self, n: u32) {
        let h = out_header(OUT_HEADER + 8, 0, self.unique);
        let mut out = [0u8; 8];
        out[0..4].copy_from_slice(&n.to_ne_bytes());
        send(&self.dev, &[&h, &out]);
    }

    fn error(self, errno: i32) {
        send(&self.dev, &[&out_header(OUT_HEADER, -errno, self.unique)]);
    }
}

/// Starts the gate on `dev` (the mount's /dev/fuse descriptor). Returns the descriptor to
/// give fuser's session in its place.
pub fn start(dev: OwnedFd, io: Arc<Io>, max_write: usize) -> std::io::Result<OwnedFd> {
    let (ours, theirs) = seqpacket_pair()?;
    let dev = Arc::new(File::from(dev));
    let ours = Arc::new(File::from(ours));
    let destroyed = Arc::new(AtomicBool::new(false));
    for i in 0..READERS {
        let (dev, ours, io, destroyed) = (dev.clone(), ours.clone(), io.clone(), destroyed.clone());
        crate::panics::spawn_essential(format!("gate-{i}"), move || {
            requests(&dev, &ours, &io, max_write, &destroyed)
        })?;
    }
    crate::panics::spawn_essential("gate-answers", move || answers(&dev, &ours))?;
    Ok(theirs)
}

/// A socket pair that keeps each message whole (fuser reads one request per read).
fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills the two-element array with new descriptors on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads requests from the device until it is gone (unmounted), then ends fuser's session.
fn requests(dev: &Arc<File>, fuser: &File, io: &Arc<Io>, max_write: usize, destroyed: &AtomicBool) {
    // The kernel wants room for a whole request: its header, its arguments, the data.
    let mut buf = vec![0u8; max_write + 64 * 1024];
    loop {
        let n = match (&**dev).read(&mut buf) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                Some(libc::ENODEV) => break,
                _ => {
                    error!("reading /dev/fuse: {e}");
                    break;
                }
            },
        };
        let req = &buf[..n];
        let Some(h) = InHeader::parse(req) else {
            error!("a request of {n} bytes from the kernel is too short");
            continue;
        };
        match h.opcode {
            FUSE_READ | FUSE_WRITE => {
                let Some(a) = RwIn::parse(req) else {
                    error!("a READ or WRITE of {n} bytes is too short");
                    continue;
                };
                let reply = DevReply {
                    dev: dev.clone(),
                    unique: h.unique,
                };
                if h.opcode == FUSE_READ {
                    let nonblock = a.open_flags & libc::O_NONBLOCK as u32 != 0;
                    let lock_owner = a.rw_flags & FUSE_READ_LOCKOWNER != 0;
                    io.read(
                        a.fh, a.offset, a.size, nonblock, lock_owner, h.pid, h.unique, reply,
                    );
                } else {
                    let start = IN_HEADER + RW_IN;
                    let Some(data) = req.get(start..start + a.size as usize) else {
                        reply.error(libc::EINVAL);
                        continue;
                    };
                    io.write(a.fh, a.offset, data, h.pid, h.unique, reply);
                }
            }
            FUSE_INTERRUPT => {
                let target = req.get(IN_HEADER..IN_HEADER + 8).map(|b| u64_at(b, 0));
                let answer = match target {
                    Some(t) => io.interrupt(t, super::watchdog::pending_for),
                    None => Interrupt::Again,
                };
                if answer == Interrupt::Again {
                    // Not parked yet (or not a request of ours: fuser is still on it): the
                    // kernel requeues the interrupt. Let the request get on first.
                    std::thread::yield_now();
                    send(dev, &[&out_header(OUT_HEADER, -libc::EAGAIN, h.unique)]);
                }
            }
            _ => {
                if let Err(e) = (&*fuser).write(req) {
                    error!("passing a request to the session: {e}");
                }
            }
        }
    }
    if !destroyed.swap(true, Ordering::SeqCst) {
        // The mount is gone: end fuser's session as the kernel's DESTROY would.
        let mut destroy = [0u8; IN_HEADER];
        destroy[0..4].copy_from_slice(&(IN_HEADER as u32).to_ne_bytes());
        destroy[4..8].copy_from_slice(&FUSE_DESTROY.to_ne_bytes());
        let _ = (&*fuser).write(&destroy);
    }
}

/// Passes fuser's answers (and its poll notifications) to the device until fuser closes
/// its end.
fn answers(dev: &File, fuser: &File) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match (&*fuser).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => send(dev, &[&buf[..n]]),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                debug!("session answers ended: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_arguments_parse_at_their_offsets() {
        let mut b = vec![0u8; IN_HEADER + RW_IN + 3];
        b[0..4].copy_from_slice(&83u32.to_ne_bytes());
        b[4..8].copy_from_slice(&FUSE_WRITE.to_ne_bytes());
        b[8..16].copy_from_slice(&77u64.to_ne_bytes());
        b[32..36].copy_from_slice(&4242u32.to_ne_bytes());
        let a = IN_HEADER;
        b[a..a + 8].copy_from_slice(&9u64.to_ne_bytes());
        b[a + 8..a + 16].copy_from_slice(&(1u64 << 20).to_ne_bytes());
        b[a + 16..a + 20].copy_from_slice(&3u32.to_ne_bytes());
        b[a + 20..a + 24].copy_from_slice(&FUSE_READ_LOCKOWNER.to_ne_bytes());
        b[a + 32..a + 36].copy_from_slice(&(libc::O_NONBLOCK as u32).to_ne_bytes());
        let h = InHeader::parse(&b).unwrap();
        assert_eq!(
            h,
            InHeader {
                len: 83,
                opcode: FUSE_WRITE,
                unique: 77,
                pid: 4242
            }
        );
        let rw = RwIn::parse(&b).unwrap();
        assert_eq!((rw.fh, rw.offset, rw.size), (9, 1 << 20, 3));
        assert_eq!(rw.rw_flags, FUSE_READ_LOCKOWNER);
        assert_eq!(rw.open_flags, libc::O_NONBLOCK as u32);
        assert!(InHeader::parse(&b[..39]).is_none());
        assert!(RwIn::parse(&b[..IN_HEADER + 10]).is_none());
    }

    #[test]
    fn answer_headers_carry_length_error_and_unique() {
        let h = out_header(24, -libc::EINTR, 5);
        assert_eq!(u32_at(&h, 0), 24);
        assert_eq!(
            i32::from_ne_bytes(h[4..8].try_into().unwrap()),
            -libc::EINTR
        );
        assert_eq!(u64_at(&h, 8), 5);
    }
}
