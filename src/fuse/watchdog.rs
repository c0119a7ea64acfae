//! Reads what a thread has pending from /proc, and ends the waiting requests that the
//! kernel interrupted but that were left waiting (see `io.rs`) once a fatal signal follows.
//!
//! The kernel announces a signal to a waiting request once, with FUSE_INTERRUPT. A stop,
//! continue or ignored-by-default signal leaves the request waiting (as a read on a pipe
//! would go on waiting); its caller then sleeps in D state until the answer, and a SIGKILL
//! or SIGTERM sent after that is not announced again. This watchdog looks, every
//! [`SCAN_INTERVAL`], at the status of those callers' threads only (the request's pid is the
//! thread id), and answers EINTR when a signal is pending that the thread neither blocks
//! nor ignores. Idle readers that no signal touched are never looked at. Each scan also
//! ends the waits of writes blocked longer than `io::BLOCK_LIMIT`. With neither kind of
//! request waiting, the thread sleeps until one comes.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::thread::JoinHandle;
use std::time::Duration;

use super::io::Io;
use std::sync::Arc;

/// How often parked reads are checked. A killed reader ends within about twice this.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(50);

/// What a thread's status says about deliverable pending signals.
#[derive(Debug, PartialEq, Eq)]
pub enum Pending {
    /// Nothing deliverable is pending.
    None,
    /// A signal is pending for this very thread (SIGKILL shows here for every thread).
    Thread,
    /// A process-wide signal is pending; another thread could take it unless the process
    /// has a single thread.
    Process { single_thread: bool },
}

/// The bit of signal `n` in a /proc signal mask.
const fn bit(n: i32) -> u64 {
    1 << (n - 1)
}

/// Signals whose default action is to stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), to
/// continue (SIGCONT) or nothing (SIGCHLD, SIGURG, SIGWINCH).
const HARMLESS_BY_DEFAULT: u64 = bit(libc::SIGSTOP)
    | bit(libc::SIGTSTP)
    | bit(libc::SIGTTIN)
    | bit(libc::SIGTTOU)
    | bit(libc::SIGCONT)
    | bit(libc::SIGCHLD)
    | bit(libc::SIGURG)
    | bit(libc::SIGWINCH);

fn hex_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    u64::from_str_radix(line[key.len()..].trim(), 16).ok()
}

/// Reads the pending-signal state from the text of `/proc/<tid>/status`.
pub fn pending_from_status(status: &str) -> Option<Pending> {
    let thread = hex_field(status, "SigPnd:")?;
    let shared = hex_field(status, "ShdPnd:")?;
    let blocked = hex_field(status, "SigBlk:")?;
    let ignored = hex_field(status, "SigIgn:")?;
    let caught = hex_field(status, "SigCgt:").unwrap_or(0);
    let threads: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    // A signal whose default action is to stop, continue or do nothing, and which the
    // program does not catch, would not end a read on a pipe: the read goes on waiting
    // (a stop takes effect when it returns).
    let harmless = HARMLESS_BY_DEFAULT & !caught;
    let deliverable = !blocked & !ignored & !harmless;
    Some(if thread & deliverable != 0 {
        Pending::Thread
    } else if shared & deliverable != 0 {
        Pending::Process {
            single_thread: threads == 1,
        }
    } else {
        Pending::None
    })
}

/// The pending-signal state of thread `tid` now.
pub fn pending_for(tid: u32) -> Option<Pending> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    pending_from_status(&status)
}

/// Most thread statuses read per scan. Reading one costs a few microseconds; with more
/// parked operations than this, each scan takes the next ones in turn, so that 10,000 idle
/// readers cost a few percent of a core (each is then looked at every 2.5 s) instead of a
/// whole core.
pub const SCAN_BUDGET: usize = 200;

/// The window of `len` sorted keys to look at this scan: up to `budget` keys after
/// `cursor` (the last key looked at), wrapping around.
pub fn window<K: Ord + Copy>(keys: &[K], cursor: Option<K>, budget: usize) -> Vec<usize> {
    let start = cursor.map_or(0, |c| keys.partition_point(|k| *k <= c));
    (0..budget.min(keys.len()))
        .map(|i| (start + i) % keys.len())
        .collect()
}

/// The watchdog thread, until [`Watchdog::stop`].
pub struct Watchdog {
    io: Arc<Io>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    /// Starts the watchdog thread. It sleeps until a request is interrupted and left
    /// waiting or a write waits for room, then scans every [`SCAN_INTERVAL`] while there
    /// are any: an idle mount, or one whose readers wait untouched, costs no wakeups.
    pub fn spawn(io: Arc<Io>) -> std::io::Result<Watchdog> {
        let thread = {
            let io = io.clone();
            crate::panics::spawn_essential("interrupts", move || watch(&io))?
        };
        Ok(Watchdog { io, thread })
    }

    /// Ends the thread and waits for it.
    pub fn stop(self) {
        self.io.stop_watching();
        let _ = self.thread.join();
    }
}

fn watch(io: &Io) {
    // Requests seen with a process-wide signal pending when last looked at.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut cursor: Option<u64> = None;
    while io.await_watched() {
        std::thread::sleep(SCAN_INTERVAL);
        io.expire_blocked();
        let mut waiting = io.interrupted();
        if waiting.is_empty() {
            seen.clear();
            continue;
        }
        waiting.sort_unstable();
        let keys: Vec<u64> = waiting.iter().map(|w| w.0).collect();
        seen.retain(|k| keys.binary_search(k).is_ok());
        for i in window(&keys, cursor, SCAN_BUDGET) {
            let (unique, tid) = waiting[i];
            cursor = Some(unique);
            let cancel = match pending_for(tid) {
                Some(Pending::Thread) => true,
                // A multi-threaded process may take the signal on another thread; act
                // when it is still pending the next time.
                Some(Pending::Process { single_thread }) => single_thread || !seen.insert(unique),
                Some(Pending::None) | None => {
                    seen.remove(&unique);
                    false
                }
            };
            if cancel && io.cancel(unique) {
                log::debug!("request of thread {tid} interrupted by a signal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pnd: &str, shd: &str, blk: &str, ign: &str, threads: u32) -> String {
        status_caught(pnd, shd, blk, ign, "0", threads)
    }

    fn status_caught(
        pnd: &str,
        shd: &str,
        blk: &str,
        ign: &str,
        cgt: &str,
        threads: u32,
    ) -> String {
        format!(
            "Name:\tcat\nThreads:\t{threads}\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\nSigIgn:\t{ign}\nSigCgt:\t{cgt}\n"
        )
    }

    #[test]
    fn stop_continue_and_ignored_by_default_do_not_end_a_read() {
        // SIGSTOP (bit 18), SIGTSTP (19), SIGCONT (17), SIGCHLD (16), SIGWINCH (27).
        for shd in ["40000", "80000", "20000", "10000", "8000000"] {
            let s = status("0", shd, "0", "0", 1);
            assert_eq!(pending_from_status(&s), Some(Pending::None), "ShdPnd {shd}");
        }
        // Caught, they interrupt as any handled signal does (the handler runs, read gets EINTR).
        let s = status_caught("0", "80000", "0", "0", "80000", 1);
        assert_ne!(pending_from_status(&s), Some(Pending::None));
        // SIGKILL with a stop pending still ends it.
        let s = status("100", "40000", "0", "0", 1);
        assert_eq!(pending_from_status(&s), Some(Pending::Thread));
    }

    #[test]
    fn nothing_pending() {
        let s = status("0000000000000000", "0000000000000000", "0", "0", 1);
        assert_eq!(pending_from_status(&s), Some(Pending::None));
    }

    #[test]
    fn sigkill_on_the_thread() {
        // SIGKILL is signal 9: bit 8.
        let s = status("0000000000000100", "0000000000000000", "0", "0", 4);
        assert_eq!(pending_from_status(&s), Some(Pending::Thread));
    }

    #[test]
    fn process_wide_sigterm() {
        // SIGTERM is 15: bit 14.
        let s = status("0", "0000000000004000", "0", "0", 1);
        assert_eq!(
            pending_from_status(&s),
            Some(Pending::Process {
                single_thread: true
            })
        );
        let s = status("0", "0000000000004000", "0", "0", 3);
        assert_eq!(
            pending_from_status(&s),
            Some(Pending::Process {
                single_thread: false
            })
        );
    }

    #[test]
    fn blocked_or_ignored_signals_do_not_count() {
        let s = status(
            "0000000000004000",
            "0000000000000002",
            "0000000000004000",
            "0000000000000002",
            1,
        );
        assert_eq!(pending_from_status(&s), Some(Pending::None));
    }

    #[test]
    fn scans_take_the_next_keys_in_turn() {
        let keys = [1, 2, 3, 4, 5];
        assert_eq!(window(&keys, None, 2), [0, 1]);
        assert_eq!(window(&keys, Some(2), 2), [2, 3]);
        assert_eq!(window(&keys, Some(4), 3), [4, 0, 1], "wraps around");
        assert_eq!(
            window(&keys, Some(3), 10),
            [3, 4, 0, 1, 2],
            "each at most once"
        );
        assert_eq!(window(&keys, Some(9), 1), [0]);
        assert!(window::<u8>(&[], None, 5).is_empty());
    }

    #[test]
    fn unreadable_status() {
        assert_eq!(pending_from_status("Name:\tx\n"), None);
    }
}
