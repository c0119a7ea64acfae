//! `streamfs stop` and `streamfs status`: talk to a running daemon through its mount only
//! (extended attributes), no second socket.
//!
//! Neither trusts the directory it is given: both act only on the root of a mounted
//! `fuse.streamfs` filesystem (as `/proc/self/mountinfo` says), and `stop` signals only a
//! process that the mount's owner runs and that holds `/dev/fuse` open, so a forged
//! `user.streamfs.pid` cannot make it signal anyone else. Everything printed from a name,
//! a command name or a path is escaped (`crate::escape`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::escape::escape_bytes;
use crate::xattr::PREFIX;

pub use crate::status::{JSON_SCHEMA, Status, StreamStatus, collect, render_json, render_table};

/// The filesystem type of a streamfs mount in mountinfo.
pub const FSTYPE: &str = "fuse.streamfs";

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Reads one extended attribute as bytes.
pub fn get_xattr_bytes(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // The kernel's largest attribute value: one call suffices.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
        let len =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len >= 0 {
            buf.truncate(len as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 16 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return Err(e);
    }
}

/// Reads one extended attribute as text.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<String> {
    get_xattr_bytes(path, name).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The names of `path`'s extended attributes.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: `p` is NUL-terminated and `buf` is writable for its length.
        let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len >= 0 {
            buf.truncate(len as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 16 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return Err(e);
    }
}

/// `path` as one printable line (control characters and invalid bytes escaped).
pub fn show(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

/// `path` for a shell command line in a hint: quoted when it holds more than plain
/// characters (and escaped, so it stays one printable line).
fn show_for_shell(path: &Path) -> String {
    let s = show(path);
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,%=".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's id (first field).
    pub id: u64,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// The filesystem type (first field after the ` - ` separator).
    pub fstype: String,
    /// The FUSE `user_id=N` super option: the user who mounted it.
    pub user_id: Option<u32>,
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses one mountinfo line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - TYPE
/// SOURCE SUPEROPTS`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let id = fields.first()?.parse().ok()?;
    let mount_point = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_mountinfo(
        fields.get(4)?,
    )));
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fstype = fields.get(sep + 1)?.to_string();
    let user_id = fields.get(sep + 3).and_then(|opts| {
        opts.split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|v| v.parse().ok())
    });
    Some(MountEntry {
        id,
        mount_point,
        fstype,
        user_id,
    })
}

/// Every mount this process sees, in mountinfo's order (a later one covers an earlier one
/// on the same mount point).
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter_map(parse_mountinfo_line)
        .collect())
}

/// The mount visible at `path` (canonical), if `path` is a mount point.
fn mount_at(path: &Path) -> Result<Option<MountEntry>, String> {
    let all = mounts().map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    Ok(all.into_iter().rev().find(|m| m.mount_point == path))
}

/// Whether an error is ENOTCONN: the FUSE daemon of the mount is gone.
pub fn is_dead_mount_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTCONN)
}

/// The one-line explanation for a path that gave ENOTCONN: a mount whose daemon is gone.
pub fn dead_mount_message(path: &Path) -> String {
    // The path itself cannot be resolved; its parent can.
    let absolute = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.canonicalize().ok().map(|p| p.join(name))
        }
        _ => None,
    };
    let entry = absolute.as_deref().and_then(|p| mount_at(p).ok().flatten());
    let shown = absolute.as_deref().unwrap_or(path);
    match entry {
        Some(m) if m.fstype == FSTYPE => format!(
            "{} is a dead streamfs mount (its daemon is gone): run umount {}",
            show(shown),
            show_for_shell(shown)
        ),
        Some(m) => format!(
            "{} is a dead {} mount (transport endpoint is not connected): run umount {}",
            show(shown),
            escape_bytes(m.fstype.as_bytes()),
            show_for_shell(shown)
        ),
        None => format!(
            "{}: transport endpoint is not connected (inside a mount whose daemon is gone: \
             unmount it)",
            show(path)
        ),
    }
}

/// An I/O error on `path` as one line, with the dead-mount explanation for ENOTCONN.
pub(crate) fn path_error(path: &Path, e: &io::Error) -> String {
    if is_dead_mount_error(e) {
        dead_mount_message(path)
    } else {
        format!("{}: {e}", show(path))
    }
}

/// The streamfs mount whose root is `path`: its canonical path and mountinfo line. Anything
/// else (a plain directory, a path inside a mount, another filesystem, a dead mount) is an
/// error naming why.
pub fn streamfs_mount(path: &Path) -> Result<(PathBuf, MountEntry), String> {
    let canonical = path.canonicalize().map_err(|e| path_error(path, &e))?;
    match mount_at(&canonical)? {
        Some(m) if m.fstype == FSTYPE => Ok((canonical, m)),
        Some(m) => Err(format!(
            "{} is not a streamfs mount (it is a mount of type {})",
            show(&canonical),
            escape_bytes(m.fstype.as_bytes())
        )),
        None => Err(format!(
            "{} is not a streamfs mount (not the root of any mounted filesystem)",
            show(&canonical)
        )),
    }
}

/// A root attribute (under the prefix) read as a number.
fn root_number(root: &Path, name: &str) -> Result<u64, String> {
    let raw = get_xattr(root, &format!("{PREFIX}{name}")).map_err(|e| {
        if is_dead_mount_error(&e) {
            dead_mount_message(root)
        } else {
            format!("{} gives no {PREFIX}{name} ({e})", show(root))
        }
    })?;
    raw.trim().parse().map_err(|_| {
        format!(
            "{} answered a {name} that is not a number: {}",
            show(root),
            escape_bytes(raw.as_bytes())
        )
    })
}

/// The real uid of process `pid`, from `/proc/PID/status`.
fn real_uid(pid: i32) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|real| real.parse().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether process `pid` has `/dev/fuse` open.
fn holds_dev_fuse(pid: i32) -> io::Result<bool> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(fd) = fd else { continue };
        if std::fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/fuse")) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A pidfd of `pid`: it keeps naming that process even if the pid is reused, so what is
/// verified is what is signalled. None on kernels without pidfd_open (before 5.3).
fn pidfd_open(pid: i32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: the fd was just returned by the kernel and is owned here only.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Checks that `pid` is the process serving `mount`: it runs as the user who mounted it and
/// holds `/dev/fuse` open.
fn verify_daemon(pid: i32, mount: &MountEntry, root: &Path) -> Result<(), String> {
    let refuse = |why: String| {
        format!(
            "refusing to signal pid {pid}, named by {}: {why}",
            show(root)
        )
    };
    let owner = mount
        .user_id
        .ok_or_else(|| refuse("the mount has no user_id in /proc/self/mountinfo".into()))?;
    let uid = real_uid(pid).map_err(|e| refuse(format!("cannot read its /proc status: {e}")))?;
    if uid != owner {
        return Err(refuse(format!(
            "it runs as uid {uid}, the mount belongs to uid {owner}"
        )));
    }
    match holds_dev_fuse(pid) {
        Ok(true) => Ok(()),
        Ok(false) => Err(refuse("it does not hold /dev/fuse open".into())),
        Err(e) => Err(refuse(format!("cannot read its open files: {e}"))),
    }
}

/// Sends SIGTERM through the pidfd when there is one.
fn send_sigterm(pid: i32, pidfd: Option<&OwnedFd>) -> io::Result<()> {
    let r = match pidfd {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no flags.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGTERM,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        },
        // SAFETY: kill takes plain integers.
        None => i64::from(unsafe { libc::kill(pid, libc::SIGTERM) }),
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `stop` did, for its report.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub mountpoint: PathBuf,
    pub pid: i32,
    pub streams: u64,
    pub readers: u64,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped {}: {} ended ({} got end of file), daemon {} exited, unmounted",
            show(&self.mountpoint),
            plural(self.streams, "stream", "streams"),
            plural(self.readers, "reader", "readers"),
            self.pid
        )
    }
}

/// Asks the daemon serving `mountpoint` to end every stream and unmount, and waits until the
/// mount is gone and the daemon has exited (at most `timeout`).
pub fn stop(mountpoint: &Path, timeout: Duration) -> Result<Stopped, String> {
    let (root, mount) = streamfs_mount(mountpoint)?;
    let pid = root_number(&root, "pid")?;
    let pid = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("{} answered an impossible pid {pid}", show(&root)))?;
    let streams = root_number(&root, "streams")?;
    let readers = root_number(&root, "readers")?;
    let pidfd =
        pidfd_open(pid).map_err(|e| format!("no process {pid} (named by {}): {e}", show(&root)))?;
    verify_daemon(pid, &mount, &root)?;
    send_sigterm(pid, pidfd.as_ref())
        .map_err(|e| format!("cannot signal the daemon (pid {pid}): {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let mounted = mounts().is_ok_and(|all| all.iter().any(|m| m.id == mount.id));
        if !mounted && !process_alive(pid) {
            return Ok(Stopped {
                mountpoint: root,
                pid,
                streams,
                readers,
            });
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the daemon (pid {pid}) did not finish within {} s{}",
                timeout.as_secs(),
                if mounted { "; still mounted" } else { "" }
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` runs: it exists and is not a zombie waiting to be reaped (the daemon is
/// reparented to init, which may reap it late).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes_and_optional_fields() {
        let m = parse_mountinfo_line(
            "42 27 0:39 / /var/tmp/a\\040b\\012c rw,nosuid shared:5 master:1 - fuse.streamfs \
             streamfs rw,user_id=1000,group_id=1000",
        )
        .unwrap();
        assert_eq!(m.id, 42);
        assert_eq!(m.mount_point, Path::new("/var/tmp/a b\nc"));
        assert_eq!(m.fstype, "fuse.streamfs");
        assert_eq!(m.user_id, Some(1000));
        let m = parse_mountinfo_line("1 0 8:1 / / rw - ext4 /dev/vda rw").unwrap();
        assert_eq!((m.fstype.as_str(), m.user_id), ("ext4", None));
        assert_eq!(parse_mountinfo_line("garbage"), None);
        assert_eq!(unescape_mountinfo("/end\\"), b"/end\\");
        assert_eq!(unescape_mountinfo("/x\\13"), b"/x\\13");
        assert_eq!(unescape_mountinfo("/a\\134b"), b"/a\\b");
    }

    #[test]
    fn shell_hints_quote_odd_paths() {
        assert_eq!(show_for_shell(Path::new("/mnt/live")), "/mnt/live");
        assert_eq!(show_for_shell(Path::new("/mnt/a b")), "'/mnt/a b'");
        assert_eq!(
            show_for_shell(Path::new("/mnt/it's\n")),
            "'/mnt/it'\\''s\\n'"
        );
    }
}
