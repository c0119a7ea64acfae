//! `streamfs stop` and `streamfs status`: talk to a running daemon through its mount only
//! (extended attributes), no second socket.
//!
//! Neither trusts the directory it is given: both act only on the root of a mounted
//! `fuse.streamfs` filesystem (as `/proc/self/mountinfo` says), and `stop` signals only a
//! process that the mount's owner runs and that holds `/dev/fuse` open, so a forged
//! `user.streamfs.pid` cannot make it signal anyone else. Everything printed from a name,
//! a command name or a path is escaped (`crate::escape`).

use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::escape::escape_bytes;
use crate::size::HumanSize;
use crate::xattr::PREFIX;

/// The filesystem type of a streamfs mount in mountinfo.
pub const FSTYPE: &str = "fuse.streamfs";

/// Version of the `status --json` document (its `schema` field).
pub const JSON_SCHEMA: u32 = 1;

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
fn path_error(path: &Path, e: &io::Error) -> String {
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

/// One stream as `status` shows it.
#[derive(Debug, Default, Clone)]
pub struct StreamStatus {
    /// The file name, as bytes (it need not be UTF-8).
    pub name: Vec<u8>,
    /// Every `user.streamfs.*` attribute but the reader pages: name without the prefix, and
    /// its text, in the daemon's order.
    pub attrs: Vec<(String, String)>,
    /// Every reader's line, from all pages of `reader_list`.
    pub reader_lines: Vec<String>,
}

impl StreamStatus {
    /// An attribute's text.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    }

    /// An attribute as a number (0 when absent or not a number).
    pub fn number(&self, name: &str) -> u64 {
        self.attr(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// A mount as `status` shows it.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub mountpoint: PathBuf,
    /// The root's `user.streamfs.*` attributes (totals, defaults, the daemon's pid, ...).
    pub mount: Vec<(String, String)>,
    pub streams: Vec<StreamStatus>,
}

/// Whether an attribute (without the prefix) is one of the reader pages.
fn is_reader_page(name: &str) -> bool {
    name == "reader_pages"
        || name == "reader_list"
        || name
            .strip_prefix("reader_list.")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every `user.streamfs.*` attribute of `path` but the reader pages.
fn read_attrs(path: &Path) -> io::Result<Vec<(String, String)>> {
    let mut attrs = Vec::new();
    for full in list_xattrs(path)? {
        let Some(name) = full.strip_prefix(PREFIX) else {
            continue;
        };
        if is_reader_page(name) {
            continue;
        }
        match get_xattr(path, &full) {
            Ok(v) => attrs.push((name.to_string(), v)),
            // Listed by an older daemon, or gone since: skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(attrs)
}

/// Every reader line of a stream: `reader_pages` pages (`reader_list`, `reader_list.1`, ...);
/// a daemon without `reader_pages` has one.
fn read_reader_lines(path: &Path) -> io::Result<Vec<String>> {
    let pages = match get_xattr(path, &format!("{PREFIX}reader_pages")) {
        Ok(v) => v.trim().parse::<usize>().unwrap_or(1).max(1),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => 1,
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    for i in 0..pages {
        let name = if i == 0 {
            format!("{PREFIX}reader_list")
        } else {
            format!("{PREFIX}reader_list.{i}")
        };
        match get_xattr(path, &name) {
            Ok(page) => lines.extend(page.lines().map(str::to_string)),
            // Readers left between reading the count and the page: the rest is gone.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}

/// Reads the mount's and every stream's attributes. `mountpoint` must be the root of a
/// streamfs mount.
pub fn collect(mountpoint: &Path) -> Result<Status, String> {
    let (root, _) = streamfs_mount(mountpoint)?;
    let mount = read_attrs(&root).map_err(|e| path_error(&root, &e))?;
    let mut streams = Vec::new();
    let dir = std::fs::read_dir(&root).map_err(|e| path_error(&root, &e))?;
    for entry in dir {
        let entry = entry.map_err(|e| path_error(&root, &e))?;
        let path = entry.path();
        let read = read_attrs(&path).and_then(|a| Ok((a, read_reader_lines(&path)?)));
        match read {
            Ok((attrs, reader_lines)) => streams.push(StreamStatus {
                name: entry.file_name().as_bytes().to_vec(),
                attrs,
                reader_lines,
            }),
            // Removed (or renamed) since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(path_error(&path, &e)),
        }
    }
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Status {
        mountpoint: root,
        mount,
        streams,
    })
}

/// Text from the daemon, as printed in the table: unchanged when it holds no control
/// character (the daemon escapes reader labels already), else escaped.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        escape_bytes(s.as_bytes()).into()
    } else {
        s.into()
    }
}

/// The status table, as printed: a line per stream, then a line per reader with its lag
/// (queued cost against its budget) and drops.
pub fn render_table(status: &Status) -> String {
    let line = |cols: [&str; 8]| {
        format!(
            "{:<20} {:>7} {:>7} {:>11} {:>11} {:>21} {:>8}  {}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
        )
    };
    let mut out = line([
        "STREAM", "READERS", "WRITERS", "RATE/s", "WRITTEN", "RING", "DROPPED", "POLICY",
    ]);
    for r in &status.streams {
        out.push_str(&line([
            &escape_bytes(&r.name),
            &r.number("readers").to_string(),
            &r.number("writers").to_string(),
            &HumanSize(r.number("write_rate")).to_string(),
            &HumanSize(r.number("bytes_written")).to_string(),
            &format!(
                "{}/{}",
                HumanSize(r.number("ring_bytes")),
                HumanSize(r.number("ring_buffer_size"))
            ),
            &r.number("dropped_writes").to_string(),
            &printable(r.attr("slow_reader").unwrap_or("")),
        ]));
        for l in &r.reader_lines {
            match l.split_once('\t') {
                Some((label, fields)) => {
                    let _ = writeln!(out, "    {}\t{}", printable(label), printable(fields));
                }
                None => {
                    let _ = writeln!(out, "    {}", printable(l));
                }
            }
        }
    }
    out
}

/// A JSON value, written compactly on one line.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    /// A number, already in JSON syntax.
    Num(String),
    Str(String),
    Bool(bool),
    Arr(Vec<Json>),
    Obj(Obj),
}

/// A JSON object that keeps its keys in insertion order and never repeats one.
#[derive(Debug, Clone, Default, PartialEq)]
struct Obj(Vec<(String, Json)>);

impl Obj {
    /// Adds `key` unless it is there already (the first value of a key wins).
    fn add(&mut self, key: &str, value: Json) {
        if !self.0.iter().any(|(k, _)| k == key) {
            self.0.push((key.to_string(), value));
        }
    }

    /// Adds text that may not be UTF-8: as a string (invalid bytes as U+FFFD) and, when it is
    /// not UTF-8, its exact bytes in hex under `KEY_hex`.
    fn add_bytes(&mut self, key: &str, bytes: &[u8]) {
        self.add(key, Json::Str(String::from_utf8_lossy(bytes).into_owned()));
        if std::str::from_utf8(bytes).is_err() {
            let hex = bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
            self.add(&format!("{key}_hex"), Json::Str(hex));
        }
    }
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_json_str(out, s),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(Obj(fields)) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string. Every control character (C0, DEL, C1) and the line separators U+2028 and
/// U+2029 are written as `\uXXXX`, so the document holds no byte a terminal acts on and
/// stays one line.
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Attribute text as a JSON value: a number when it is one (integer or decimal), else a
/// string.
fn typed(text: &str) -> Json {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Json::Num(n.to_string());
    }
    if let Ok(n) = t.parse::<i64>() {
        return Json::Num(n.to_string());
    }
    let decimal = {
        let digits = t.strip_prefix('-').unwrap_or(t);
        match digits.split_once('.') {
            Some((w, f)) => {
                !w.is_empty()
                    && !f.is_empty()
                    && w.bytes().all(|b| b.is_ascii_digit())
                    && f.bytes().all(|b| b.is_ascii_digit())
            }
            None => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    if decimal {
        if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() {
                return Json::Num(f.to_string());
            }
        }
    }
    Json::Str(t.to_string())
}

/// The `pid N (COMMAND)` form of a reader label.
fn pid_and_command(label: &str) -> Option<(u64, &str)> {
    let rest = label.strip_prefix("pid ")?;
    let (pid, command) = rest.split_once(" (")?;
    let pid = pid
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| pid.parse().ok())??;
    Some((pid, command.strip_suffix(')')?))
}

/// One reader line (`LABEL\tkey=value ... [flag ...]`) as a JSON object: `label` always,
/// `pid` and `command` when the label is `pid N (COMMAND)`, every `key=value` field (typed),
/// and every bare word as `true` (`waiting` and `disconnected` are always present).
fn reader_json(line: &str) -> Json {
    let (label, fields) = line.split_once('\t').unwrap_or((line, ""));
    let mut obj = Obj::default();
    obj.add("label", Json::Str(label.to_string()));
    if let Some((pid, command)) = pid_and_command(label) {
        obj.add("pid", Json::Num(pid.to_string()));
        obj.add("command", Json::Str(command.to_string()));
    }
    for field in fields.split_whitespace() {
        match field.split_once('=') {
            Some((k, v)) if !k.is_empty() => obj.add(k, typed(v)),
            _ => obj.add(field, Json::Bool(true)),
        }
    }
    obj.add("waiting", Json::Bool(false));
    obj.add("disconnected", Json::Bool(false));
    Json::Obj(obj)
}

fn attrs_json(obj: &mut Obj, attrs: &[(String, String)]) {
    for (k, v) in attrs {
        obj.add(k, typed(v));
    }
}

/// The status as one line of JSON (see the README's "`status --json` schema").
pub fn render_json(status: &Status) -> String {
    let mut mount = Obj::default();
    attrs_json(&mut mount, &status.mount);
    let streams = status
        .streams
        .iter()
        .map(|s| {
            let mut obj = Obj::default();
            obj.add_bytes("name", &s.name);
            attrs_json(&mut obj, &s.attrs);
            obj.add(
                "reader_list",
                Json::Arr(s.reader_lines.iter().map(|l| reader_json(l)).collect()),
            );
            Json::Obj(obj)
        })
        .collect();
    let mut top = Obj::default();
    top.add("schema", Json::Num(JSON_SCHEMA.to_string()));
    top.add_bytes("mountpoint", status.mountpoint.as_os_str().as_bytes());
    top.add("mount", Json::Obj(mount));
    top.add("streams", Json::Arr(streams));
    let mut out = String::new();
    Json::Obj(top).write(&mut out);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Json) -> String {
        let mut s = String::new();
        v.write(&mut s);
        s
    }

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
    fn values_are_typed() {
        assert_eq!(typed("42"), Json::Num("42".into()));
        assert_eq!(typed("42\n"), Json::Num("42".into()));
        assert_eq!(typed("-3"), Json::Num("-3".into()));
        assert_eq!(typed("1.5"), Json::Num("1.5".into()));
        assert_eq!(typed("007"), Json::Num("7".into()));
        assert_eq!(typed("drop"), Json::Str("drop".into()));
        assert_eq!(typed("1e5"), Json::Str("1e5".into()));
        assert_eq!(typed("."), Json::Str(".".into()));
        assert_eq!(typed(""), Json::Str("".into()));
    }

    #[test]
    fn reader_lines_become_objects() {
        let r = reader_json(
            "pid 42 (cat)\tqueued=1 budget=6291456 delivered=3 dropped_writes=0 dropped_bytes=0 \
             start=9 note=x waiting",
        );
        assert_eq!(
            json(&r),
            "{\"label\":\"pid 42 (cat)\",\"pid\":42,\"command\":\"cat\",\"queued\":1,\
             \"budget\":6291456,\"delivered\":3,\"dropped_writes\":0,\"dropped_bytes\":0,\
             \"start\":9,\"note\":\"x\",\"waiting\":true,\"disconnected\":false}"
        );
        let r = reader_json("pid 7 (a (b))\tqueued=0 disconnected");
        assert!(json(&r).contains("\"command\":\"a (b)\""), "{}", json(&r));
        assert!(json(&r).contains("\"disconnected\":true"), "{}", json(&r));
        let r = reader_json("socket 10.0.0.1:5\tqueued=0 pid=3");
        let s = json(&r);
        assert!(
            s.starts_with("{\"label\":\"socket 10.0.0.1:5\",\"queued\":0,\"pid\":3"),
            "{s}"
        );
        let r = reader_json("pid 12x (cat)\tqueued=0");
        assert!(!json(&r).contains("\"command\""), "{}", json(&r));
    }

    #[test]
    fn json_strings_hold_no_control_characters() {
        let mut o = Obj::default();
        o.add_bytes("name", b"a\nb\x1b[2J\xff\xc2\x9b\"\\");
        o.add("name", Json::Str("dup".into()));
        let s = json(&Json::Obj(o));
        assert_eq!(
            s,
            "{\"name\":\"a\\nb\\u001b[2J\u{fffd}\\u009b\\\"\\\\\",\
             \"name_hex\":\"610a621b5b324affc29b225c\"}"
        );
        assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f));
    }

    #[test]
    fn reader_pages_are_recognised() {
        for n in [
            "reader_list",
            "reader_list.1",
            "reader_list.17",
            "reader_pages",
        ] {
            assert!(is_reader_page(n), "{n}");
        }
        for n in ["reader_list.", "reader_list.x", "readers", "reader_listing"] {
            assert!(!is_reader_page(n), "{n}");
        }
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
