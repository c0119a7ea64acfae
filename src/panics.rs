//! What a panic does in the daemon. A panic is a bug, but where it happens decides what the
//! daemon can still promise; and once the daemon is in the background its stderr is
//! `/dev/null`, so the message Rust prints would be lost.
//!
//! [`install`] logs every panic at error level, on one line: the thread, the place and the
//! message (and a backtrace after it when `RUST_BACKTRACE` asks for one). Then:
//! - on a thread marked [`essential`] (the daemon's own loops: the FUSE gate and its answers,
//!   the interrupt watchdog, the timer of writes in pieces, the signal thread, the HTTP
//!   acceptor and senders, the main thread) the daemon aborts. Without that thread requests
//!   would wait for answers that never come; dead, the mount fails them with ENOTCONN at
//!   once, and `status`, `stop` and a new mount name it as a dead mount.
//! - on any other thread (those that run tokio tasks: the gateway's `http` workers, the
//!   `nats` engine; the memory-trim thread) the panic ends what that thread was doing (for
//!   tokio, the task: one request), as it would without the hook, and the daemon goes on.
//!
//! Installed by the daemon only: the client commands (`status`, `stop`, ...) keep Rust's
//! own message on the terminal.

use crate::escape::escape;

thread_local! {
    static ESSENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one the daemon cannot do without: once [`install`]ed, a panic
/// on it aborts the daemon. The main thread calls it; others start with [`spawn_essential`].
pub fn essential() {
    ESSENTIAL.with(|e| e.set(true));
}

/// Starts a thread named `name` that the daemon cannot do without (see [`essential`]).
pub fn spawn_essential<T: Send + 'static>(
    name: impl Into<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(|| {
        essential();
        f()
    })
}

/// Whether a panic on the calling thread ends the daemon.
fn ends_daemon() -> bool {
    ESSENTIAL.try_with(|e| e.get()).unwrap_or(false)
}

/// The log line of a panic on `thread` at `place` with `message`.
fn describe(thread: &str, place: &str, message: &str, fatal: bool) -> String {
    let then = if fatal {
        "the daemon cannot go on without that thread: aborting"
    } else {
        "what that thread was doing is abandoned; the daemon goes on"
    };
    format!(
        "bug: panic on thread {} at {}: {}; {then}",
        escape(thread),
        place,
        escape(message)
    )
}

/// Replaces the panic hook for the rest of the process (see the module's doc).
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let current = std::thread::current();
        let thread = current.name().unwrap_or("unnamed");
        let fatal = ends_daemon();
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".into());
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let line = describe(thread, &place, message, fatal);
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            log::error!("{line}\n{trace}");
        } else {
            log::error!("{line}");
        }
        log::logger().flush();
        if fatal {
            std::process::abort();
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn the_line_is_one_line_and_says_what_follows() {
        let l = describe("gate-0", "src/x.rs:7", "bad\nname", true);
        assert_eq!(
            l,
            "bug: panic on thread gate-0 at src/x.rs:7: bad\\nname; \
             the daemon cannot go on without that thread: aborting"
        );
        assert!(describe("http", "p", "m", false).ends_with("the daemon goes on"));
    }

    /// Set in the copy of this test binary that [`a_panic_is_logged_then_aborts_or_not`]
    /// runs: the name of the thread to panic on.
    const CHILD: &str = "STREAMFS_PANIC_TEST_THREAD";
    const NAME: &str = "panics::tests::a_panic_is_logged_then_aborts_or_not";

    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            eprintln!("{} {}", r.level(), r.args());
        }
        fn flush(&self) {}
    }

    /// The child's part: the hook, then a panic on a thread of that name, started as the
    /// daemon starts its essential threads if it is a gate's.
    fn child(thread: String) {
        // An abort must leave no core file in the source tree.
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a plain struct passed by pointer to the call that reads it.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
        log::set_logger(&Stderr).unwrap();
        log::set_max_level(log::LevelFilter::Error);
        install();
        // A formatted message, as `unwrap` and `expect` make: a `String`, not a `&str`.
        let what = String::from("purpose");
        let body = move || panic!("on {what}");
        let started = if thread.starts_with("gate-") {
            spawn_essential(thread, body)
        } else {
            std::thread::Builder::new().name(thread).spawn(body)
        };
        let joined = started.unwrap().join();
        assert!(joined.is_err());
        println!("went on");
    }

    #[test]
    fn a_panic_is_logged_then_aborts_or_not() {
        if let Ok(thread) = std::env::var(CHILD) {
            return child(thread);
        }
        for (thread, fatal) in [("gate-0", true), ("http", false)] {
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD, thread)
                .env_remove("RUST_BACKTRACE")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let line = format!("ERROR bug: panic on thread {thread} at src/panics.rs:");
            assert!(err.contains(&line), "{thread}: no `{line}` in:\n{err}");
            assert!(err.contains(": on purpose; "), "{thread}: {err}");
            let went_on = String::from_utf8_lossy(&out.stdout).contains("went on");
            if fatal {
                assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{thread}: {err}");
                assert!(!went_on, "{thread} went on after the abort");
            } else {
                assert!(out.status.success(), "{thread}: {:?} {err}", out.status);
                assert!(went_on, "{thread}: the process did not go on");
            }
        }
    }
}
