//! Shared harness of the integration tests: a real streamfs mount in a temporary directory,
//! behind one guard that unmounts and reaps the daemon on drop, even when a test panics, and
//! never hangs in cleanup (lazy unmount as the last resort).
#![allow(dead_code)]

pub mod client;
pub mod nats;
pub mod records;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_streamfs")
}

/// Fails the test, loudly, when FUSE is not available: a test that cannot mount must not pass.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests mount a real FUSE filesystem and cannot run here \
         (load the fuse module, or run in a container with --device /dev/fuse)"
    );
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    streamfs::daemon::is_mount_point(path)
}

/// Runs `cmd` to its end and asserts it succeeded (its stderr is the failure message).
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits for `cond` up to `limit`; the limit only detects hangs, it never paces the test.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A temporary directory (removed on drop) with an empty mount point `mnt` in it, by its
/// canonical path. Fails, loudly, when FUSE is not available.
pub fn mount_dir(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    require_fuse();
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let path = dir.path().join("mnt");
    std::fs::create_dir(&path).unwrap();
    let path = path.canonicalize().unwrap();
    (dir, path)
}

/// A mounted streamfs served by a foreground daemon that this guard owns.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub daemon: Option<Child>,
    pub log: PathBuf,
}

impl Mount {
    /// A mount serving HTTP on a loopback port that asks for the bearer token `token` (read
    /// from a file when the daemon starts).
    pub fn with_token(token: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        Mount::new(&[
            "--http",
            "127.0.0.1:0",
            "--http-token",
            file.to_str().unwrap(),
        ])
    }

    /// Mounts with extra command-line arguments, in the foreground (`-f`).
    pub fn new(args: &[&str]) -> Mount {
        let (dir, path) = mount_dir("streamfs-test");
        let log = dir.path().join("daemon.log");
        let daemon = Command::new(bin())
            .arg(&path)
            .arg("-f")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start streamfs");
        let mut m = Mount {
            dir,
            path,
            daemon: Some(daemon),
            log,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&m.path) {
            if let Some(status) = m.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "streamfs exited with {status} before mounting: {}",
                    m.log_text()
                );
            }
            assert!(
                Instant::now() < end,
                "mount did not appear: {}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        m
    }

    /// Path of a stream in the mount.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port of the daemon's HTTP gateway (started with `--http 127.0.0.1:0`), from the
    /// line it logs once listening.
    pub fn http_port(&self) -> u16 {
        http_port_in(&self.log)
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().unwrap().id()
    }

    /// Sends SIGTERM to the daemon and waits for it to exit and the mount to vanish.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.daemon.take().expect("daemon running");
        kill(child.id(), libc::SIGTERM);
        wait_child(&mut child, Duration::from_secs(10)).expect("daemon exited")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            kill(child.id(), libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(8)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.path) {
            let _ = streamfs::daemon::unmount(&self.path, true);
        }
    }
}

/// The port a daemon logging to `log` says its gateway listens on; waits for the line.
pub fn http_port_in(log: &Path) -> u16 {
    let mut port = None;
    wait_for(
        "the gateway's listening line",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            port = text
                .lines()
                .find_map(|l| l.split("http: listening on ").nth(1))
                .and_then(|a| a.trim().rsplit(':').next()?.parse().ok());
            port.is_some()
        },
    );
    port.unwrap()
}

/// Sends `raw` (a whole request) to the gateway on `port` and returns the status and the
/// whole answer; the server closes after it (`Connection: close` in `raw`) or the read
/// times out after 5 s.
pub fn http_raw(port: u16, raw: &[u8]) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// `GET path` with extra header lines, through [`http_raw`].
pub fn http_get(port: u16, path: &str, headers: &str) -> (u16, String) {
    http_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n").as_bytes(),
    )
}

/// A counter or gauge of the gateway's `/metrics` without labels, read as root.
pub fn metric(port: u16, name: &str) -> u64 {
    let (_, text) = http_get(port, "/metrics", "");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for a child up to `limit`; None when it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process whose stdout is collected by a thread; dropped processes are killed.
pub struct Proc {
    pub child: Child,
    rx: mpsc::Receiver<Vec<u8>>,
    got: Vec<u8>,
}

impl Proc {
    /// Starts `sh -c script` with stdout captured.
    pub fn sh(script: &str) -> Proc {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Proc {
            child,
            rx,
            got: Vec::new(),
        }
    }

    /// `cat PATH`, the plain reader.
    pub fn cat(path: &Path) -> Proc {
        Proc::sh(&format!("exec cat '{}'", path.display()))
    }

    /// Collects output until it holds at least `n` bytes; panics after `limit`.
    pub fn read_at_least(&mut self, n: usize, limit: Duration) -> &[u8] {
        let end = Instant::now() + limit;
        while self.got.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.got.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "expected {n} bytes, got {} before timeout or EOF: {:?}",
                    self.got.len(),
                    String::from_utf8_lossy(&self.got[self.got.len().saturating_sub(200)..])
                ),
            }
        }
        &self.got
    }

    /// Collects output until EOF (the process closed stdout); panics after `limit`.
    pub fn read_to_eof(&mut self, limit: Duration) -> &[u8] {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.got.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => return &self.got,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no EOF after {limit:?}; got {} bytes", self.got.len())
                }
            }
        }
    }

    /// Bytes collected so far without waiting.
    pub fn drain(&mut self) -> &[u8] {
        while let Ok(chunk) = self.rx.try_recv() {
            self.got.extend_from_slice(&chunk);
        }
        &self.got
    }

    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_child(&mut self.child, limit).expect("process did not exit in time")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends one write to a stream, creating it if needed, as `>>` would.
pub fn append(p: &Path, data: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// Runs `sh -c script` to completion and returns (status, stdout, stderr).
pub fn sh(script: &str) -> (i32, String, String) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads one of the stream's statistics attributes.
pub fn xattr_u64(path: &Path, name: &str) -> u64 {
    streamfs::control::get_xattr(path, &format!("user.streamfs.{name}"))
        .unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the stream has `n` readers registered.
pub fn wait_readers(path: &Path, n: u64) {
    wait_for(
        &format!("{n} readers on {}", path.display()),
        Duration::from_secs(10),
        || xattr_u64(path, "readers") == n,
    );
}

/// Waits until a reader opened by `pid` has a read parked in the daemon (its line in the
/// stream's reader_list says "waiting"), so that what follows acts on a waiting read.
pub fn wait_parked(path: &Path, pid: u32) {
    wait_for(
        &format!("a parked read of process {pid}"),
        Duration::from_secs(10),
        || {
            streamfs::control::get_xattr(path, "user.streamfs.reader_list")
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("pid {pid} (")) && l.ends_with(" waiting"))
        },
    );
}

/// Whether process `pid` has ended (gone, or a zombie not yet reaped by init).
pub fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => matches!(
            stat.rsplit(") ").next().and_then(|s| s.chars().next()),
            Some('Z') | Some('X')
        ),
        Err(_) => true,
    }
}

/// Test users, /dev/fuse world-writable (as Debian's udev rule makes it) and
/// user_allow_other in /etc/fuse.conf: what a machine needs for non-root FUSE.
pub fn non_root_setup() -> (u32, u32) {
    for user in ["streamfs-t1", "streamfs-t2"] {
        if sh(&format!("id -u {user}")).0 != 0 {
            let (code, _, err) = sh(&format!("useradd -M -s /bin/sh {user}"));
            assert_eq!(code, 0, "useradd: {err}");
        }
    }
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata("/dev/fuse").unwrap());
    if mode & 0o666 != 0o666 {
        assert_eq!(sh("chmod 0666 /dev/fuse").0, 0);
    }
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "user_allow_other") {
        std::fs::write("/etc/fuse.conf", format!("{conf}\nuser_allow_other\n")).unwrap();
    }
    let id = |u: &str| sh(&format!("id -u {u}")).1.trim().parse::<u32>().unwrap();
    (id("streamfs-t1"), id("streamfs-t2"))
}

pub fn as_user(user: &str, script: &str) -> (i32, String, String) {
    let out = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", script])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
