//! The daemon's lifecycle: checks before mounting, daemonizing with a readiness report,
//! the FUSE session, signal handling and a clean unmount (logging is `logging.rs`).
//! Everything here that calls libc does so because std has no wrapper (fork, setsid,
//! sigwait, umount2).

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, Session, SessionACL};
use log::{error, info, warn};

use crate::fuse::StreamFs;
pub use crate::logging::log_destination;
use crate::logging::{announce_logging, init_logging};
use crate::namespace::Namespace;
use crate::options::MountSettings;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Where to mount; `None` for `streamfs serve`: the HTTP gateway alone, in the
    /// foreground (for containers without /dev/fuse).
    pub mountpoint: Option<PathBuf>,
    pub mount: MountSettings,
    pub foreground: bool,
    pub debug: bool,
    pub log_file: Option<PathBuf>,
}

/// A failure to start, reported on one line with a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot mount on {0}: {1}")]
    Mount(String, io::Error),
    #[error("{0} is already a mount point (unmount it first, or run: streamfs stop {0})")]
    AlreadyMounted(String),
    #[error("{0}")]
    Other(String),
}

/// Whether `path` (canonical) is a mount point, from /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    crate::control::mounts().is_ok_and(|ms| ms.iter().any(|m| m.mount_point == path))
}

/// Problems with the kernel's FUSE settings, read through `sysctl` (a name under
/// /proc/sys/fs/fuse): small requests, and request timeouts that abort waiting readers.
pub fn kernel_problems(sysctl: impl Fn(&str) -> Option<u64>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(pages) = sysctl("max_pages_limit").filter(|p| *p < 256) {
        problems.push(format!(
            "the kernel limits FUSE requests to {pages} pages (fs.fuse.max_pages_limit), less \
             than 1 MiB: larger writes are split and throughput suffers"
        ));
    }
    for name in ["default_request_timeout", "max_request_timeout"] {
        if let Some(t) = sysctl(name).filter(|t| *t > 0) {
            problems.push(format!(
                "fs.fuse.{name} is {t}s: the kernel aborts the whole mount when a read waits \
                 longer than that, and stream readers wait indefinitely; set it to 0"
            ));
        }
    }
    problems
}

/// A problem with the kernel release (`uname -r`): before Linux 5.2 there is no FOPEN_STREAM,
/// so reads and writes carry the file position, and the adapter, which tells the requests of
/// one large `read()` or `write()` apart by their offsets, would take every request for the
/// continuation of an earlier one.
pub fn kernel_release_problem(release: &str) -> Option<String> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) < (5, 2)).then(|| {
        format!(
            "kernel {release} predates FOPEN_STREAM (Linux 5.2): readers would see end of file \
             whenever nothing is queued; use Linux 5.2 or later"
        )
    })
}

/// Reports kernel settings that break streams, at start-up.
fn check_kernel() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if let Some(p) = kernel_release_problem(release.trim()) {
        error!("{p}");
    }
    let sysctl = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/fs/fuse/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    for p in kernel_problems(sysctl) {
        error!("{p}");
    }
}

/// Budgets that cannot hold: larger than the machine's memory or than `max_memory`.
pub fn budget_warnings(m: &MountSettings, machine: Option<u64>) -> Vec<String> {
    use crate::size::HumanSize;
    let max = m.limits.max_memory;
    let mut out = Vec::new();
    for (name, v) in [
        ("channel_buffer_size", m.budgets.channel),
        ("ring_buffer_size", m.budgets.ring),
    ] {
        if let Some(mem) = machine.filter(|mem| v > *mem) {
            out.push(format!(
                "{name}={} is more than this machine's memory ({}): it cannot be filled",
                HumanSize(v),
                HumanSize(mem)
            ));
        } else if v > max {
            out.push(format!(
                "{name}={} is more than max_memory={}: the memory limit will shed before the budget is reached",
                HumanSize(v),
                HumanSize(max)
            ));
        }
    }
    out
}

/// The session's configuration; the mount itself is made by `mount.rs`.
fn session_config(m: &MountSettings) -> Config {
    let k = &m.kernel;
    let mut config = Config::default();
    config.acl = if k.allow_other {
        SessionACL::All
    } else if k.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    // fuser sees only the small requests (the gate answers READ and WRITE on its own two
    // threads), and one thread must read its socket so that a DESTROY ends the session.
    config.n_threads = Some(1);
    config
}

/// Unmounts `path`: directly when allowed, else through the setuid helper fusermount3.
pub fn unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(path).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EBUSY))
    }
}

/// The signals the daemon takes in its own thread, blocked everywhere else.
fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Ends every stream, then unmounts: plainly for up to two seconds while readers drain and
/// close, then by detaching; if files stay open after that, exits so the kernel ends them.
fn shut_down(ns: &Namespace, mountpoint: &Path) {
    ns.shutdown();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match unmount(mountpoint, false) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return, // already gone
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                warn!("unmount of {}: {e}; detaching it", mountpoint.display());
                break;
            }
        }
    }
    if let Err(e) = unmount(mountpoint, true) {
        error!("detaching {}: {e}", mountpoint.display());
    }
    // The session ends when the last open file closes; do not wait for ever.
    std::thread::sleep(Duration::from_secs(3));
    warn!("files were still open 3 s after the detach; exiting");
    std::process::exit(0);
}

/// Forks; the parent waits for the child's readiness report and exits with its verdict.
/// Returns in the child, with the write end of the report pipe.
fn daemonize() -> Result<std::fs::File, StartError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(StartError::Other(format!(
            "pipe: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the fds were just created and are owned here only.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no thread has been started yet, so the child is a full copy of this process.
    match unsafe { libc::fork() } {
        -1 => Err(StartError::Other(format!(
            "fork: {}",
            io::Error::last_os_error()
        ))),
        0 => {
            drop(rd);
            // SAFETY: setsid and chdir take no pointers we do not own; dup2 onto the standard
            // fds replaces them with /dev/null.
            unsafe {
                libc::setsid();
                libc::chdir(c"/".as_ptr());
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                    if null > 2 {
                        libc::close(null);
                    }
                }
            }
            Ok(std::fs::File::from(wr))
        }
        _ => {
            drop(wr);
            let mut report = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut report);
            match report.strip_prefix("ok") {
                Some(_) => {
                    announce_logging();
                    std::process::exit(0)
                }
                None if report.is_empty() => {
                    eprintln!("streamfs: the daemon exited before the mount was ready");
                    std::process::exit(1)
                }
                None => {
                    eprintln!("streamfs: {}", report.trim_end());
                    std::process::exit(1)
                }
            }
        }
    }
}

/// The metadata of streams made on other hosts: the mount's owner options, or the daemon's
/// user, with mode 0666 less the mount's umask (default 022).
fn remote_meta(m: &MountSettings) -> crate::stream::Meta {
    // SAFETY: geteuid and getegid cannot fail.
    let daemon = unsafe { (libc::geteuid(), libc::getegid()) };
    // The mount's umask when it has one (new_meta applies it), else 022.
    m.new_meta(daemon, 0o666, if m.umask.is_some() { 0 } else { 0o022 })
}

/// Mounts and serves until unmounted or signalled; `gateway` (bound already, so that its
/// address is checked before anything is mounted) serves the same streams over HTTP.
pub fn run(mut s: DaemonSettings, gateway: Option<crate::http::Gateway>) -> Result<(), StartError> {
    let implied = s.mount.implied();
    init_logging(&s)?;
    crate::panics::install();
    crate::panics::essential();
    let report = if s.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    let result = serve(&s, report, implied, gateway);
    if let Err(e) = &result {
        error!("{e}");
    }
    result
}

fn serve(
    s: &DaemonSettings,
    mut report: Option<std::fs::File>,
    implied: Option<&str>,
    gateway: Option<crate::http::Gateway>,
) -> Result<(), StartError> {
    let fail = |report: &mut Option<std::fs::File>, e: StartError| {
        if let Some(r) = report {
            let _ = writeln!(r, "{e}");
        }
        e
    };
    check_kernel();
    if let Some(msg) = implied {
        info!("{msg}");
    }
    let set = shutdown_signals();
    // SAFETY: blocks the shutdown signals in this thread (inherited by every thread started
    // from now on) so that only the sigwait thread takes them.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // After the mask: every thread must leave the shutdown signals to the sigwait thread.
    if let Err(e) = crate::allocator::tune() {
        return Err(fail(&mut report, StartError::Other(format!("thread: {e}"))));
    }

    for w in budget_warnings(&s.mount, crate::options::machine_memory()) {
        warn!("{w}");
    }
    let l = &s.mount.limits;
    let ns = Arc::new(Namespace::with_limits(
        s.mount.budgets,
        s.mount.policy,
        crate::namespace::Limits {
            max_memory: l.max_memory,
            max_streams: l.max_streams,
            max_readers: l.max_readers,
        },
    ));
    // The distributed engine, when chosen: connected (and the existing streams listed)
    // before anything is mounted, its runtime started here, after the fork.
    if s.mount.nats.enabled() {
        let meta = remote_meta(&s.mount);
        if let Err(e) = crate::nats::Nats::start(&s.mount.nats, &ns, meta) {
            return Err(fail(&mut report, StartError::Other(e.replace('\n', " "))));
        }
    }
    // The gateway's runtime starts here, after the fork, before the mount: a client that
    // comes early finds no stream yet, as on an empty mount.
    if let Some(g) = gateway {
        g.start(ns.clone())
            .map_err(|e| fail(&mut report, StartError::Other(format!("http: {e}"))))?;
    }
    let Some(mountpoint) = s.mountpoint.clone() else {
        return serve_http_only(&ns, set, report);
    };
    let fs = StreamFs::new(ns.clone(), s.mount.clone())
        .map_err(|e| fail(&mut report, StartError::Other(format!("thread: {e}"))))?;
    let mp = mountpoint.display().to_string();
    let config = session_config(&s.mount);
    let acl = config.acl;
    let mut watchdog = None;
    let session = match crate::fuse::mount::mount(
        &mountpoint,
        &crate::fuse::mount::MountRequest {
            fsname: &s.mount.fsname,
            options: &s.mount.kernel,
        },
    )
    .and_then(|dev| fs.start_gate(dev))
    .and_then(|(fd, w)| {
        watchdog = Some(w);
        Session::from_fd(fs, fd, acl, config)
    }) {
        Ok(session) => session,
        Err(e) => {
            let hint = if e.kind() == io::ErrorKind::NotFound || !Path::new("/dev/fuse").exists() {
                io::Error::new(
                    e.kind(),
                    format!("{e} (is /dev/fuse present? load the fuse module or install fuse3)"),
                )
            } else {
                e
            };
            return Err(fail(&mut report, StartError::Mount(mp, hint)));
        }
    };
    info!(
        "mounted {} (channel_buffer_size={}, ring_buffer_size={})",
        mp,
        crate::size::HumanSize(s.mount.budgets.channel),
        crate::size::HumanSize(s.mount.budgets.ring)
    );

    {
        let ns = ns.clone();
        let mountpoint = mountpoint.clone();
        crate::panics::spawn_essential("signals", move || {
            let mut sig = 0;
            // SAFETY: `set` is initialised and `sig` is a valid out pointer.
            unsafe { libc::sigwait(&set, &mut sig) };
            info!("signal {sig}: ending every stream and unmounting");
            shut_down(&ns, &mountpoint);
        })
        .map_err(|e| fail(&mut report, StartError::Other(format!("thread: {e}"))))?;
    }
    if let Some(mut r) = report.take() {
        let _ = r.write_all(b"ok\n");
    }
    let result = session.run();
    ns.shutdown();
    if let Some(w) = watchdog {
        w.stop();
    }
    info!("unmounted {mp}");
    result.map_err(|e| StartError::Other(format!("session ended: {e}")))
}

/// `streamfs serve`: the gateway serves until a signal, which ends every stream.
fn serve_http_only(
    ns: &Namespace,
    set: libc::sigset_t,
    report: Option<std::fs::File>,
) -> Result<(), StartError> {
    if let Some(mut r) = report {
        let _ = r.write_all(b"ok\n");
    }
    info!("serving over HTTP only (no mount)");
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    info!("signal {sig}: ending every stream");
    ns.shutdown();
    // Bodies end with their queues; give clients a moment to take the last bytes.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_settings_that_break_streams_are_reported() {
        let ok = |name: &str| match name {
            "max_pages_limit" => Some(256),
            _ => Some(0),
        };
        assert!(kernel_problems(ok).is_empty());
        let small = |name: &str| (name == "max_pages_limit").then_some(32);
        let p = kernel_problems(small);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("32 pages"), "{p:?}");
        let timeout = |name: &str| (name == "default_request_timeout").then_some(60);
        let p = kernel_problems(timeout);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("default_request_timeout is 60s"), "{p:?}");
        assert!(kernel_problems(|_| None).is_empty());
    }

    #[test]
    fn kernels_before_fopen_stream_are_named() {
        assert!(
            kernel_release_problem("4.19.0-27-amd64")
                .unwrap()
                .contains("4.19.0-27-amd64")
        );
        assert!(kernel_release_problem("5.1.21").is_some());
        assert_eq!(kernel_release_problem("5.2.0"), None);
        assert_eq!(kernel_release_problem("6.12.48+deb13-amd64"), None);
        assert_eq!(kernel_release_problem(""), None, "unknown: no claim");
    }

    #[test]
    fn budgets_larger_than_memory_are_warned_of() {
        let mut m = MountSettings::default();
        m.limits.max_memory = 1 << 30;
        assert!(budget_warnings(&m, Some(8 << 30)).is_empty());
        m.budgets.channel = 100 << 30;
        let w = budget_warnings(&m, Some(8 << 30));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("channel_buffer_size=100 GiB") && w[0].contains("machine's memory"),
            "{w:?}"
        );
        m.budgets.channel = 2 << 30;
        let w = budget_warnings(&m, Some(8 << 30));
        assert!(w[0].contains("max_memory=1 GiB"), "{w:?}");
    }
}
