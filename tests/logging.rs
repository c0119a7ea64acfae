//! Where a daemon's logs go: a daemonized mount says so on stderr, and a line caused by a
//! client lands there; `--log-file` wins; `-f` logs to stderr. Real mounts.

mod common;

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(20);

/// A daemonized mount (no `-f`), stopped on drop (`streamfs stop`, then SIGTERM to the pid
/// of its root's `user.streamfs.pid`, then a lazy unmount), and log files removed.
struct Daemonized {
    dir: tempfile::TempDir,
    path: PathBuf,
    pid: Option<u32>,
    remove: Vec<PathBuf>,
}

impl Daemonized {
    fn dir() -> Daemonized {
        // No '-' in the name: the log file's name stays readable (systemd escapes '-').
        let (dir, path) = mount_dir("streamfslog");
        Daemonized {
            dir,
            path,
            pid: None,
            remove: Vec::new(),
        }
    }

    /// Mounts with `args`; returns what the command printed on stderr.
    fn mount(&mut self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg(&self.path)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "mount failed: {err}");
        assert!(is_mounted(&self.path), "{err}");
        self.pid = Some(xattr_u64(&self.path, "pid") as u32);
        err
    }

    /// Stops the mount and waits for its daemon to exit.
    fn stop(&mut self) {
        run_ok(Command::new(bin()).arg("stop").arg(&self.path));
        let pid = self.pid.take().unwrap();
        wait_for("the daemon to exit", HANG, || process_gone(pid.into()));
    }
}

impl Drop for Daemonized {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = Command::new(bin()).arg("stop").arg(&self.path).output();
        }
        if let Some(pid) = self.pid.filter(|p| !process_gone((*p).into())) {
            kill(pid, libc::SIGTERM);
        }
        if is_mounted(&self.path) {
            let _ = streamfs::daemon::unmount(&self.path, true);
        }
        for f in &self.remove {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The log file's name, from systemd's own escaping (`systemd-escape --path`).
fn expected_log_name(path: &Path) -> String {
    let out = Command::new("systemd-escape")
        .arg("--path")
        .arg(path)
        .output()
        .expect("systemd-escape (Debian's systemd package) names the expected log file");
    assert!(out.status.success());
    format!("{}.log", String::from_utf8(out.stdout).unwrap().trim())
}

/// Whether something listens on a Unix socket at `path`, datagram or stream.
fn listening(path: &str) -> bool {
    UnixDatagram::unbound().is_ok_and(|s| s.connect(path).is_ok())
        || UnixStream::connect(path).is_ok()
}

/// Makes the daemon log a warning (a refused setting) and an info line (a reader's open)
/// for stream `name`; returns, for each line, the fragments it holds.
fn provoke_log_lines(mount: &Path, name: &str) -> Vec<Vec<String>> {
    let s = mount.join(name);
    std::fs::write(&s, b"x").unwrap();
    let c_path = std::ffi::CString::new(s.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a value buffer of the given length.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"user.streamfs.slow_reader".as_ptr(),
            b"fast".as_ptr().cast(),
            4,
            0,
        )
    };
    let e = std::io::Error::last_os_error();
    assert_eq!((rc, e.raw_os_error()), (-1, Some(libc::EINVAL)), "{e}");
    let mut r = Proc::cat(&s);
    r.read_at_least(1, HANG);
    vec![
        vec!["WARN".into(), "invalid slow_reader 'fast'".into()],
        vec![
            "INFO".into(),
            format!("pid {} (cat) opened stream", r.child.id()),
            "for reading".into(),
        ],
    ]
}

/// Waits until, for each entry of `lines`, one line of the log holds all its fragments.
fn wait_for_lines(log: &Path, lines: &[Vec<String>]) {
    wait_for(&format!("{lines:?} in {}", log.display()), HANG, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        lines.iter().all(|want| {
            text.lines()
                .any(|l| want.iter().all(|w| l.contains(w.as_str())))
        })
    });
}

#[test]
fn a_daemonized_mount_says_where_it_logs_and_client_events_land_there() {
    let mut m = Daemonized::dir();
    let file = Path::new("/run/streamfs").join(expected_log_name(&m.path));
    m.remove.push(file.clone());
    let err = m.mount(&[]);
    if listening("/run/systemd/journal/socket") {
        assert_eq!(
            err,
            "streamfs: logging to the journal (journalctl -t streamfs)\n"
        );
        return;
    }
    if listening("/dev/log") {
        assert_eq!(err, "streamfs: logging to syslog (/dev/log)\n");
        return;
    }
    // No journal, no syslog (containers, minimal systems): a file named after the mount.
    assert_eq!(err, format!("streamfs: logging to {}\n", file.display()));
    let lines = provoke_log_lines(&m.path, "cam");
    wait_for_lines(&file, &lines);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!("mounted {}", m.path.display())),
        "{text}"
    );
    m.stop();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!("unmounted {}", m.path.display())),
        "the shutdown is logged too: {text}"
    );
    let dir = std::fs::metadata("/run/streamfs").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(dir.permissions().mode() & 0o777, 0o755);
}

#[test]
fn log_file_option_wins_over_every_default() {
    let mut m = Daemonized::dir();
    let default = Path::new("/run/streamfs").join(expected_log_name(&m.path));
    m.remove.push(default.clone());
    let log = m.dir.path().join("given.log");
    let err = m.mount(&["--log-file", log.to_str().unwrap()]);
    assert_eq!(err, format!("streamfs: logging to {}\n", log.display()));
    let lines = provoke_log_lines(&m.path, "cam");
    wait_for_lines(&log, &lines);
    m.stop();
    assert!(!default.exists(), "{} was created", default.display());
}

#[test]
fn a_relative_log_file_is_announced_and_opened_from_where_the_command_ran() {
    let mut m = Daemonized::dir();
    let out = Command::new(bin())
        .current_dir(m.dir.path())
        .arg(&m.path)
        .args(["--log-file", "rel.log"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    m.pid = Some(xattr_u64(&m.path, "pid") as u32);
    let log = m.dir.path().canonicalize().unwrap().join("rel.log");
    assert_eq!(err, format!("streamfs: logging to {}\n", log.display()));
    let lines = provoke_log_lines(&m.path, "cam");
    wait_for_lines(&log, &lines);
}

#[test]
fn an_unwritable_log_file_fails_before_mounting_with_one_line() {
    let m = Daemonized::dir();
    let bad = m.dir.path().join("no/such/dir/x.log");
    let out = Command::new(bin())
        .arg(&m.path)
        .arg("--log-file")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "streamfs: cannot open log file {}: No such file or directory (os error 2)\n",
            bad.display()
        )
    );
    assert!(!is_mounted(&m.path));
}

#[test]
fn foreground_logs_to_stderr_and_announces_nothing() {
    let m = Mount::new(&[]);
    let lines = provoke_log_lines(&m.path, "cam");
    wait_for_lines(&m.log, &lines);
    assert!(!m.log_text().contains("logging to"), "{}", m.log_text());
}
