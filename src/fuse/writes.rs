//! Recognising the writes behind a handle's WRITE requests. The kernel splits a `write()`
//! larger than one request (1 MiB, or fewer bytes when the buffer is not page-aligned) into
//! requests at increasing offsets, sent one after another while it holds the inode lock;
//! they must reach readers as one write. Requests that come from `splice` or `sendfile` (pv,
//! `tee` from a pipe, `shutil.copyfile`) carry the file position instead, growing from call
//! to call, and each is a write of its own.
//!
//! The rules (each is a row of the tests below):
//! - A unit (a `write()` in pieces) can only begin with a *full* request: one the kernel
//!   filled as far as it could (within a page of `max_write`). Any other request is a whole
//!   write, or the last piece of the open unit.
//! - On an ordinary handle every `write()` starts at offset 0 (FOPEN_STREAM): a unit begins
//!   only at offset 0, so splice and sendfile requests, at the file position, are always
//!   whole writes. With O_APPEND every call starts at the stream's size, so any offset may
//!   begin one.
//! - A request continues the open unit when it starts where the unit's last piece ended.
//!   Any other request ends the unit first: the `write()` it belonged to has returned.
//! - The writer's own thread tells how long its `write()` is: while the kernel waits for
//!   the reply to a piece, `/proc/TID/syscall` shows the call and its byte count (for
//!   `write`, `pwrite64`, `splice` and `sendfile`). A unit that has all its bytes is
//!   finished at once; so are exactly-1-MiB `write()`s, which are not units at all.
//! - When the length cannot be known (writev, io_uring, a process the daemon may not
//!   inspect), a unit whose last piece was full stays open until the next request, the
//!   handle's release, or [`IDLE_FINISH`] without a piece, whichever comes first.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

/// How long a unit whose length is unknown waits for its next piece before it is finished.
/// The kernel sends the next piece as soon as the previous one is answered, so a gap this
/// long means the `write()` has returned.
pub const IDLE_FINISH: Duration = Duration::from_millis(20);

const PAGE_SIZE: u64 = 4096;

/// What a handle knows of the unit being written through it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// Where the next piece of the open unit would start; `None`: no unit is open.
    pub next: Option<u64>,
    /// Bytes the open unit still expects, when its `write()`'s length is known.
    pub remaining: Option<u64>,
    /// Changes whenever the unit does, so that a late idle timer finishes nothing.
    pub generation: u64,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Finish the open unit first (its `write()` returned), then handle `then`.
    FinishThen(Step),
    Do(Step),
}

/// The request's own step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A whole write: apply it, answer when applied.
    Whole,
    /// Add it to the unit (beginning one if none is open) and answer at once; the unit
    /// stays open for more pieces.
    Extend,
    /// Add it to the unit and finish the unit: answer when applied.
    Last,
}

impl Track {
    /// Decides what a request of `len` bytes at `offset` is, and updates the track.
    /// `max_write` is the negotiated request size, `append` whether the handle has O_APPEND,
    /// `total` the length of the writer's call when known (asked only for a request that
    /// could begin a unit).
    pub fn on_request(
        &mut self,
        offset: u64,
        len: u64,
        max_write: u64,
        append: bool,
        total: impl FnOnce() -> Option<u64>,
    ) -> Action {
        let full = len + PAGE_SIZE > max_write;
        let continues = self.next == Some(offset);
        let finish_first = self.next.is_some() && !continues;
        self.generation += 1;
        let step = if continues {
            let remaining = self.remaining.map(|r| r.saturating_sub(len));
            if !full || remaining == Some(0) {
                self.close()
            } else {
                self.next = Some(offset + len);
                self.remaining = remaining;
                Step::Extend
            }
        } else if full && (append || offset == 0) {
            match total() {
                Some(t) if t <= len => self.close_whole(),
                known => {
                    self.next = Some(offset + len);
                    self.remaining = known.map(|t| t - len);
                    Step::Extend
                }
            }
        } else {
            self.close_whole()
        };
        if finish_first {
            Action::FinishThen(step)
        } else {
            Action::Do(step)
        }
    }

    fn close(&mut self) -> Step {
        self.next = None;
        self.remaining = None;
        Step::Last
    }

    fn close_whole(&mut self) -> Step {
        self.next = None;
        self.remaining = None;
        Step::Whole
    }

    /// Ends the open unit from outside (release, idle timer); says whether one was open.
    pub fn take_open(&mut self) -> bool {
        let open = self.next.is_some();
        self.next = None;
        self.remaining = None;
        self.generation += 1;
        open
    }

    /// Whether the open unit's `write()` is known to be unfinished: its length is known and
    /// bytes are missing. Such a unit is never finished by the idle timer (its next piece
    /// is on its way), and one left at release was cut short (its writer died in the
    /// middle): it is abandoned, so that readers get all of a write or none of it.
    pub fn cut_short(&self) -> bool {
        self.next.is_some() && self.remaining.is_some_and(|r| r > 0)
    }
}

/// The byte count of the call thread `tid` is blocked in, from `/proc/TID/syscall`
/// ("NR ARG1 ARG2 ..."), for the calls whose count is one of their arguments.
pub fn call_length(tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    call_length_from(&text)
}

/// [`call_length`] from the text of the file.
pub fn call_length_from(text: &str) -> Option<u64> {
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    let args: Vec<u64> = fields
        .take(6)
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect::<Option<_>>()?;
    let index = match nr {
        n if n == libc::SYS_write || n == libc::SYS_pwrite64 => 2,
        n if n == libc::SYS_sendfile => 3,
        n if n == libc::SYS_splice => 4,
        _ => return None,
    };
    args.get(index).copied()
}

/// A handle whose unit may be waiting for its next piece.
pub trait Finish: Send + Sync {
    /// Finishes the open unit if it is still at `generation`.
    fn finish_idle(&self, generation: u64);
}

/// Finishes units left open after [`IDLE_FINISH`]: one thread per mount.
pub struct IdleFinisher {
    tx: Sender<(Weak<dyn Finish>, u64, Instant)>,
}

impl IdleFinisher {
    pub fn spawn() -> std::io::Result<IdleFinisher> {
        let (tx, rx) = crossbeam_channel::unbounded();
        crate::panics::spawn_essential("idle-units", move || finisher(rx))?;
        Ok(IdleFinisher { tx })
    }

    /// Asks for the unit of `handle` to be finished once idle, unless it changed by then.
    pub fn arm(&self, handle: &Arc<dyn Finish>, generation: u64) {
        let _ = self.tx.send((
            Arc::downgrade(handle),
            generation,
            Instant::now() + IDLE_FINISH,
        ));
    }
}

/// Deadlines arrive in order (each is now + a constant), so the oldest is always next.
fn finisher(rx: Receiver<(Weak<dyn Finish>, u64, Instant)>) {
    while let Ok((handle, generation, deadline)) = rx.recv() {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        if let Some(h) = handle.upgrade() {
            h.finish_idle(generation);
        }
    }
}

/// One handle's track behind its lock, for the adapter.
pub type SharedTrack = Mutex<Track>;

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// One request of a table: (offset, len, call length known, expected action).
    type Row = (u64, u64, Option<u64>, Action);

    fn run(append: bool, rows: &[Row]) {
        let mut t = Track::default();
        for (i, &(offset, len, total, want)) in rows.iter().enumerate() {
            let got = t.on_request(offset, len, MIB, append, || total);
            assert_eq!(got, want, "request {i} ({offset}, {len}) of {rows:?}");
        }
    }

    use Action::{Do, FinishThen};
    use Step::{Extend, Last, Whole};

    #[test]
    fn request_sequences() {
        let cases: &[(&str, bool, &[Row])] = &[
            (
                "small write() calls",
                false,
                &[(0, 100, None, Do(Whole)), (0, 5, None, Do(Whole))],
            ),
            (
                "a 1 MiB write(): one full request, length known",
                false,
                &[
                    (0, MIB, Some(MIB), Do(Whole)),
                    (0, MIB, Some(MIB), Do(Whole)),
                ],
            ),
            (
                "a 3 MiB write(), length known: finished with its last byte",
                false,
                &[
                    (0, MIB, Some(3 * MIB), Do(Extend)),
                    (MIB, MIB, None, Do(Extend)),
                    (2 * MIB, MIB, None, Do(Last)),
                ],
            ),
            (
                "unaligned 1 MiB buffer: 1 MiB - 48, then 48",
                false,
                &[
                    (0, MIB - 48, None, Do(Extend)),
                    (MIB - 48, 48, None, Do(Last)),
                ],
            ),
            (
                "length unknown (writev): full pieces stay open, the next call finishes them",
                false,
                &[
                    (0, MIB, None, Do(Extend)),
                    (MIB, MIB, None, Do(Extend)),
                    (0, 10, None, FinishThen(Whole)),
                ],
            ),
            (
                "splice or sendfile: offsets grow, every request is whole",
                false,
                &[
                    (0, 65536, Some(65536), Do(Whole)),
                    (65536, 65536, None, Do(Whole)),
                    (131072, 4096, None, Do(Whole)),
                ],
            ),
            (
                "splice with a 1 MiB pipe: full requests at the file position",
                false,
                &[
                    (0, MIB, Some(MIB), Do(Whole)),
                    (MIB, MIB, Some(MIB), Do(Whole)),
                    (2 * MIB, MIB, None, Do(Whole)),
                ],
            ),
            (
                "a piece that does not follow on ends the unit",
                false,
                &[
                    (0, MIB, None, Do(Extend)),
                    (5 * MIB, 100, None, FinishThen(Whole)),
                ],
            ),
        ];
        for (name, append, rows) in cases {
            eprintln!("case: {name}");
            run(*append, rows);
        }
    }

    #[test]
    fn append_sequences() {
        let cases: &[(&str, &[Row])] = &[
            (
                "echo >> log: small writes at the stream's size",
                &[(4000, 10, None, Do(Whole)), (4010, 10, None, Do(Whole))],
            ),
            (
                "dd bs=1M >> s: each call's length is known, so calls stay apart",
                &[
                    (7, MIB, Some(MIB), Do(Whole)),
                    (7 + MIB, MIB, Some(MIB), Do(Whole)),
                ],
            ),
            (
                "a 2 MiB write() with O_APPEND",
                &[
                    (7, MIB, Some(2 * MIB), Do(Extend)),
                    (7 + MIB, MIB, None, Do(Last)),
                ],
            ),
            (
                "length unknown: contiguous full requests chain",
                &[
                    (7, MIB, None, Do(Extend)),
                    (7 + MIB, MIB, None, Do(Extend)),
                    (7 + 2 * MIB, 5, None, Do(Last)),
                ],
            ),
        ];
        for (name, rows) in cases {
            eprintln!("case: {name}");
            run(true, rows);
        }
    }

    #[test]
    fn a_unit_of_known_length_missing_bytes_is_cut_short() {
        let mut t = Track::default();
        t.on_request(0, MIB, MIB, false, || Some(3 * MIB));
        assert!(t.cut_short());
        t.on_request(MIB, MIB, MIB, false, || None);
        assert!(t.cut_short());
        t.on_request(2 * MIB, MIB, MIB, false, || None);
        assert!(!t.cut_short(), "complete");
        t.on_request(0, MIB, MIB, false, || None);
        assert!(!t.cut_short(), "length unknown");
    }

    #[test]
    fn take_open_ends_a_unit_once() {
        let mut t = Track::default();
        assert_eq!(t.on_request(0, MIB, MIB, false, || None), Do(Extend));
        let g = t.generation;
        assert!(t.take_open());
        assert!(!t.take_open());
        assert_ne!(t.generation, g, "a timer armed before must not act");
    }

    #[test]
    fn call_lengths_from_proc_syscall() {
        let w = format!(
            "{} 0x3 0x7f0000 0x300000 0x0 0x0 0x0 0x7ffd 0x7f",
            libc::SYS_write
        );
        assert_eq!(call_length_from(&w), Some(0x300000));
        let s = format!(
            "{} 0x3 0x0 0x4 0x0 0x100000 0x1 0x7ffd 0x7f",
            libc::SYS_splice
        );
        assert_eq!(call_length_from(&s), Some(0x100000));
        let v = format!(
            "{} 0x3 0x7f0000 0x2 0x0 0x0 0x0 0x7ffd 0x7f",
            libc::SYS_writev
        );
        assert_eq!(
            call_length_from(&v),
            None,
            "writev's length is not an argument"
        );
        assert_eq!(call_length_from("running"), None);
        assert_eq!(call_length_from(""), None);
    }
}
