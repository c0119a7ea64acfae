//! How the daemon uses glibc's allocator, so that memory released by streams and readers
//! goes back and what they hold stays close to what they use.
//!
//! - Fixed thresholds and one arena ([`tune`]), with a trim every 5 s.
//! - No per-thread caches (tcache). glibc keeps up to seven freed chunks of each small size
//!   per thread, out of reach of the other threads. Here a reader's records are made on one
//!   thread (a tokio worker, a FUSE thread), its parked reads on another (a sender thread)
//!   and freed on a third (the writer's, which answers them): every thread's caches fill
//!   with chunks the others then allocate afresh beside, and the small free pieces left
//!   between live records stay resident. Measured with a hundred HTTP listeners of one
//!   stream: 1.2–1.4 KiB of RSS per listener with the caches, 0.7–0.85 without (and 0.73
//!   against 0.87 at a thousand). The caches can only be turned off when the process
//!   starts (`GLIBC_TUNABLES`, read before `main`), so a daemon that was started without
//!   the setting runs itself again with it ([`exec_tuned`]) before it has done anything:
//!   same pid, same arguments, and the caller's environment is given back at once
//!   ([`restore_environment`]) so that programs the daemon starts inherit nothing.
//!   A `GLIBC_TUNABLES` that sets `glibc.malloc.tcache_count` itself is left as it is.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The tunable that turns the thread caches off.
const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";

/// Set while the daemon runs itself again: what `GLIBC_TUNABLES` was before (`=VALUE`), or
/// empty when it was not set.
const SAVED: &str = "STREAMFS_SAVED_GLIBC_TUNABLES";

/// This process is the one [`exec_tuned`] started (its marker is gone from the environment
/// once [`restore_environment`] has run).
static RAN_AGAIN: AtomicBool = AtomicBool::new(false);

/// What `GLIBC_TUNABLES` should be for a daemon started with `current`: `None` when it
/// already says how many chunks the thread caches keep (the setting is then the user's).
fn tuned(current: Option<&OsStr>) -> Option<OsString> {
    let Some(cur) = current.filter(|c| !c.is_empty()) else {
        return Some(NO_TCACHE.into());
    };
    let names_it = cur
        .as_bytes()
        .split(|&b| b == b':')
        .any(|kv| kv.split(|&b| b == b'=').next() == Some(b"glibc.malloc.tcache_count"));
    if names_it {
        return None;
    }
    let mut v = cur.to_os_string();
    v.push(":");
    v.push(NO_TCACHE);
    Some(v)
}

/// Runs this program again, with the same arguments and the thread caches off, unless they
/// are off already or the user's `GLIBC_TUNABLES` sets them. Returns only when it does not
/// (or when the exec fails: the daemon then runs with the caches, which costs memory, not
/// correctness). To be called before the process has started a thread or opened a file it
/// needs.
pub fn exec_tuned() {
    if !cfg!(target_env = "gnu")
        || RAN_AGAIN.load(Ordering::Relaxed)
        || std::env::var_os(SAVED).is_some()
    {
        return;
    }
    let current = std::env::var_os("GLIBC_TUNABLES");
    let Some(value) = tuned(current.as_deref()) else {
        return;
    };
    let mut saved = OsString::new();
    if let Some(c) = &current {
        saved.push("=");
        saved.push(c);
    }
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    // exec returns only on failure.
    let _ = cmd
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .env(SAVED, saved)
        .exec();
}

/// Gives back the environment the daemon was started with, after [`exec_tuned`] ran it
/// again (glibc has read its tunables by now). To be called first thing in `main`, while
/// the process has one thread.
pub fn restore_environment() {
    let Some(saved) = std::env::var_os(SAVED) else {
        return;
    };
    RAN_AGAIN.store(true, Ordering::Relaxed);
    let saved = saved.into_vec();
    // SAFETY: called at the start of main, before any thread exists: nothing reads the
    // environment concurrently.
    unsafe {
        std::env::remove_var(SAVED);
        match saved.strip_prefix(b"=") {
            Some(v) => std::env::set_var("GLIBC_TUNABLES", OsStr::from_bytes(v)),
            None => std::env::remove_var("GLIBC_TUNABLES"),
        }
    }
}

/// Makes the allocator give memory back once streams and readers release it. glibc adapts
/// its thresholds to the largest block freed (fuser's 16 MiB request buffers): freed chunks
/// then stay in the arenas, and the daemon's RSS stays at its peak long after the streams
/// that needed it are gone. Fixed thresholds keep chunks up to 4 MiB in the heap (no mmap
/// per write) and leave up to 32 MiB free at the top of the heap between trims: with 1 MiB
/// there, every freed 1 MiB chunk shrank the heap and the next write faulted its pages back
/// in (12% of the daemon's time under 1 MiB writes). A trim every 5 s returns the free
/// memory. One arena: malloc_trim shrinks the top of the main arena only, so chunks freed
/// into per-thread arenas would stay resident (10 MiB after a 16 MiB stream was removed).
pub fn tune() -> io::Result<()> {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    std::thread::Builder::new()
        .name("trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                #[cfg(target_env = "gnu")]
                // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_caches_are_turned_off_unless_the_user_set_them() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, Some(NO_TCACHE)),
            (Some(""), Some(NO_TCACHE)),
            (
                Some("glibc.malloc.check=3"),
                Some("glibc.malloc.check=3:glibc.malloc.tcache_count=0"),
            ),
            (Some("glibc.malloc.tcache_count=7"), None),
            (
                Some("glibc.malloc.mxfast=0:glibc.malloc.tcache_count=2"),
                None,
            ),
            // A longer name is another tunable.
            (
                Some("glibc.malloc.tcache_count_x=1"),
                Some("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=0"),
            ),
        ];
        for (cur, want) in cases {
            let got = tuned(cur.map(OsStr::new));
            assert_eq!(
                got.as_deref(),
                want.map(OsStr::new),
                "GLIBC_TUNABLES={cur:?}"
            );
        }
    }
}
