//! Where the daemon's log lines go: `--log-file`, stderr in the foreground, else the journal,
//! syslog or a file under /run/streamfs, chosen before the daemon detaches so that the
//! command can say where (see the README's Logs). Knows nothing of streams.

use std::ffi::{CString, OsString};
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::daemon::{DaemonSettings, StartError};

/// Where the daemon's log lines go, as shown to users: `stderr`, `journal`, `syslog`, the
/// absolute path of a log file, or `none` when no log file could be created. Set once, by
/// [`crate::daemon::run`] before the daemon detaches; `None` in a process that started no daemon.
pub fn log_destination() -> Option<String> {
    LOG_DESTINATION.get().cloned()
}

static LOG_DESTINATION: OnceLock<String> = OnceLock::new();

/// systemd-journald's socket for its native protocol.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The syslog daemon's socket.
const SYSLOG_SOCKET: &str = "/dev/log";

/// Where log lines should go, chosen from the command line and what the machine offers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogPlan {
    /// The file given with --log-file.
    Given(PathBuf),
    Stderr,
    Journal,
    Syslog,
    /// A file named after the mount point, in the first usable of [`log_dirs`].
    DefaultFile,
}

/// `--log-file` wins; then stderr in the foreground; then the journal when journald listens,
/// syslog when /dev/log accepts a connection, else a file: somewhere a user can find.
fn plan_logging(
    foreground: bool,
    log_file: Option<&Path>,
    journal: impl FnOnce() -> bool,
    syslog: impl FnOnce() -> bool,
) -> LogPlan {
    match log_file {
        Some(f) => LogPlan::Given(f.to_path_buf()),
        None if foreground => LogPlan::Stderr,
        None if journal() => LogPlan::Journal,
        None if syslog() => LogPlan::Syslog,
        None => LogPlan::DefaultFile,
    }
}

/// Directories for the default log file, best first: /run/streamfs for root; for other users
/// their runtime directory, then their cache directory (`env` reads the environment).
fn log_dirs(euid: u32, env: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    if euid == 0 {
        return vec![PathBuf::from("/run/streamfs")];
    }
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let mut dirs = Vec::new();
    if let Some(run) = absolute("XDG_RUNTIME_DIR") {
        dirs.push(run.join("streamfs"));
    }
    let cache = absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")));
    if let Some(cache) = cache {
        dirs.push(cache.join("streamfs"));
    }
    dirs
}

/// The default log file's name: the mount point escaped as systemd names a path's units
/// (`systemd-escape --path`: `/mnt/live` is `mnt-live`, as in `streamfs@mnt-live.service`),
/// then `.log`. Distinct mount points get distinct names, and none holds a `/`.
fn log_file_name(mountpoint: &Path) -> String {
    let parts: Vec<&[u8]> = mountpoint
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return "-.log".into();
    }
    let mut name = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            name.push('-');
        }
        for (j, &b) in part.iter().enumerate() {
            let leading_dot = b == b'.' && i == 0 && j == 0;
            if (b.is_ascii_alphanumeric() || b"_:.".contains(&b)) && !leading_dot {
                name.push(char::from(b));
            } else {
                let _ = write!(name, "\\x{b:02x}");
            }
        }
    }
    name.push_str(".log");
    name
}

/// Whether a datagram socket at `path` takes datagrams (someone listens on it).
fn accepts_datagrams(path: &Path) -> bool {
    UnixDatagram::unbound().is_ok_and(|s| s.connect(path).is_ok())
}

/// Whether a syslog daemon listens at `path`, on a datagram or a stream socket.
fn accepts_syslog(path: &Path) -> bool {
    accepts_datagrams(path) || UnixStream::connect(path).is_ok()
}

/// Opens (appending) `name` in `dir`, creating the directory: 0755 for root, whose logs are
/// for any user of the mount to read, else 0700. The directory must be the caller's own, so
/// that nobody else can swap the file for a link.
fn open_log_in(dir: &Path, name: &str, euid: u32) -> io::Result<std::fs::File> {
    let (dir_mode, file_mode) = if euid == 0 {
        (0o755, 0o644)
    } else {
        (0o700, 0o600)
    };
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(dir)?;
        // Whatever the umask.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != euid {
        return Err(io::Error::other("not a directory of this user"));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(file_mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(name))
}

/// Opens the default log file in the first directory that allows it; on failure, says why
/// for every directory tried.
fn open_default_log(mountpoint: &Path) -> Result<(PathBuf, std::fs::File), String> {
    // SAFETY: geteuid only reads the process's credentials.
    let euid = unsafe { libc::geteuid() };
    let dirs = log_dirs(euid, |name| std::env::var_os(name));
    let name = log_file_name(mountpoint);
    let mut failures = Vec::new();
    for dir in &dirs {
        match open_log_in(dir, &name, euid) {
            Ok(f) => return Ok((dir.join(&name), f)),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    if failures.is_empty() {
        failures.push("neither XDG_RUNTIME_DIR nor HOME is set".into());
    }
    Err(failures.join("; "))
}

/// Sets up logging before the daemon detaches, so that the parent can say where the logs go
/// (see [`announce_logging`]) and a bad `--log-file` fails on the terminal. Records its choice
/// for [`log_destination`].
pub(crate) fn init_logging(s: &DaemonSettings) -> Result<(), StartError> {
    let level = if s.debug { "debug" } else { "info" };
    let fuser_level = if s.debug { "debug" } else { "warn" };
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or(format!("streamfs={level},fuser={fuser_level}")),
    );
    let plan = plan_logging(
        s.foreground,
        s.log_file.as_deref(),
        || accepts_datagrams(Path::new(JOURNAL_SOCKET)),
        || accepts_syslog(Path::new(SYSLOG_SOCKET)),
    );
    let destination = match plan {
        LogPlan::Stderr => {
            let _ = b.try_init();
            "stderr".to_string()
        }
        LogPlan::Given(path) => {
            let path = std::path::absolute(&path).unwrap_or(path);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    StartError::Other(format!("cannot open log file {}: {e}", path.display()))
                })?;
            let _ = b.target(env_logger::Target::Pipe(Box::new(f))).try_init();
            path.display().to_string()
        }
        LogPlan::DefaultFile => match open_default_log(
            s.mountpoint
                .as_deref()
                .unwrap_or(Path::new("/streamfs-serve")),
        ) {
            Ok((path, f)) => {
                let _ = b.target(env_logger::Target::Pipe(Box::new(f))).try_init();
                path.display().to_string()
            }
            Err(why) => {
                let _ = LOG_FAILURE.set(why);
                "none".to_string()
            }
        },
        LogPlan::Journal => {
            install_socket_logger(b.build(), LogSink::Journal(Journal::new(JOURNAL_SOCKET)?));
            "journal".to_string()
        }
        LogPlan::Syslog => {
            // SAFETY: the identity string is static and NUL-terminated, as openlog requires.
            unsafe { libc::openlog(c"streamfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
            install_socket_logger(b.build(), LogSink::Syslog);
            "syslog".to_string()
        }
    };
    let _ = LOG_DESTINATION.set(destination);
    Ok(())
}

/// Why no default log file could be created, when none could.
static LOG_FAILURE: OnceLock<String> = OnceLock::new();

/// The line the command prints when the daemon it started is ready: where its logs go.
fn announcement() -> Option<String> {
    let line = match log_destination()?.as_str() {
        "stderr" => return None,
        "journal" => "logging to the journal (journalctl -t streamfs)".to_string(),
        "syslog" => format!("logging to syslog ({SYSLOG_SOCKET})"),
        "none" => format!(
            "no log: cannot create a log file ({}); give --log-file FILE",
            LOG_FAILURE.get().map_or("", String::as_str)
        ),
        file => format!("logging to {file}"),
    };
    Some(format!("streamfs: {line}"))
}

/// Prints [`announcement`] on stderr.
pub(crate) fn announce_logging() {
    if let Some(line) = announcement() {
        eprintln!("{line}");
    }
}

fn install_socket_logger(filter: env_logger::Logger, sink: LogSink) {
    let max = filter.filter();
    if log::set_boxed_logger(Box::new(SocketLogger { filter, sink })).is_ok() {
        log::set_max_level(max);
    }
}

/// A logger that sends each record, filtered as env_logger would, to the journal or syslog.
struct SocketLogger {
    filter: env_logger::Logger,
    sink: LogSink,
}

enum LogSink {
    Journal(Journal),
    Syslog,
}

/// The syslog priority of a level (the journal uses the same numbers).
fn priority(level: log::Level) -> libc::c_int {
    match level {
        log::Level::Error => libc::LOG_ERR,
        log::Level::Warn => libc::LOG_WARNING,
        log::Level::Info => libc::LOG_INFO,
        log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
    }
}

impl log::Log for SocketLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.filter.matches(record) {
            return;
        }
        // The daemon's own lines as they are; a library's (fuser's) named.
        let message = if record.target().starts_with("streamfs") {
            record.args().to_string()
        } else {
            format!("{}: {}", record.target(), record.args())
        };
        let priority = priority(record.level());
        match &self.sink {
            LogSink::Journal(j) => j.send(priority, &message),
            LogSink::Syslog => {
                let mut bytes = message.into_bytes();
                bytes.retain(|b| *b != 0);
                let c = CString::new(bytes).expect("NULs were removed");
                // SAFETY: format and argument are valid NUL-terminated strings.
                unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
            }
        }
    }

    fn flush(&self) {}
}

/// A client of journald's native protocol: one datagram of `NAME=value` lines per record.
struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

/// The longest message sent whole; the journal takes datagrams of a few hundred KiB at most.
const JOURNAL_MAX_MESSAGE: usize = 48 << 10;

impl Journal {
    fn new(path: impl Into<PathBuf>) -> Result<Journal, StartError> {
        let socket = UnixDatagram::unbound()
            .map_err(|e| StartError::Other(format!("socket for the journal: {e}")))?;
        Ok(Journal {
            socket,
            path: path.into(),
        })
    }

    /// Sends one record; addressed each time, so that a restarted journald gets the next one.
    fn send(&self, priority: libc::c_int, message: &str) {
        let entry = journal_entry(priority, message, std::process::id());
        let _ = self.socket.send_to(&entry, &self.path);
    }
}

/// A journal entry in the native protocol. A value holding a newline is sent in the binary
/// form (the name, a newline, its length as 64-bit little endian, the bytes), as the protocol
/// requires; others as `NAME=value`.
fn journal_entry(priority: libc::c_int, message: &str, pid: u32) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
        out.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    let mut message = message;
    if message.len() > JOURNAL_MAX_MESSAGE {
        let mut end = JOURNAL_MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = &message[..end];
    }
    let mut out = Vec::with_capacity(message.len() + 64);
    field(&mut out, "PRIORITY", priority.to_string().as_bytes());
    field(&mut out, "SYSLOG_IDENTIFIER", b"streamfs");
    field(&mut out, "SYSLOG_PID", pid.to_string().as_bytes());
    field(&mut out, "MESSAGE", message.as_bytes());
    out
}

#[cfg(test)]
mod logging_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn log_file_wins_then_stderr_then_journal_syslog_and_a_file() {
        let given = Path::new("/var/log/x.log");
        let never = || -> bool { panic!("probed although the choice was made") };
        assert_eq!(
            plan_logging(false, Some(given), never, never),
            LogPlan::Given(given.into())
        );
        assert_eq!(
            plan_logging(true, Some(given), never, never),
            LogPlan::Given(given.into())
        );
        assert_eq!(plan_logging(true, None, never, never), LogPlan::Stderr);
        assert_eq!(plan_logging(false, None, || true, never), LogPlan::Journal);
        assert_eq!(
            plan_logging(false, None, || true, || true),
            LogPlan::Journal
        );
        assert_eq!(
            plan_logging(false, None, || false, || true),
            LogPlan::Syslog
        );
        assert_eq!(
            plan_logging(false, None, || false, || false),
            LogPlan::DefaultFile
        );
    }

    #[test]
    fn log_dirs_are_run_for_root_and_the_users_own_otherwise() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = env(&[
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_CACHE_HOME", "/home/u/cache"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(log_dirs(0, all), vec![PathBuf::from("/run/streamfs")]);
        assert_eq!(
            log_dirs(1000, all),
            vec![
                PathBuf::from("/run/user/1000/streamfs"),
                PathBuf::from("/home/u/cache/streamfs")
            ]
        );
        assert_eq!(
            log_dirs(1000, env(&[("HOME", "/home/u")])),
            vec![PathBuf::from("/home/u/.cache/streamfs")]
        );
        // Relative values are ignored, as the XDG specification asks.
        assert_eq!(
            log_dirs(1000, env(&[("XDG_RUNTIME_DIR", "run"), ("HOME", "/h")])),
            vec![PathBuf::from("/h/.cache/streamfs")]
        );
        assert!(log_dirs(1000, env(&[])).is_empty());
    }

    #[test]
    fn log_file_names_escape_the_mount_point_as_systemd_does() {
        // Each expectation is what `systemd-escape --path` prints, plus ".log".
        for (path, name) in [
            ("/mnt/live", "mnt-live.log"),
            ("/", "-.log"),
            ("/mnt/a-b", "mnt-a\\x2db.log"),
            ("/mnt/a b", "mnt-a\\x20b.log"),
            ("/mnt/.hidden", "mnt-.hidden.log"),
            ("/.x", "\\x2ex.log"),
            ("/mnt/x_y:z.1", "mnt-x_y:z.1.log"),
            ("/mnt/café", "mnt-caf\\xc3\\xa9.log"),
            ("/mnt/a\\b", "mnt-a\\x5cb.log"),
        ] {
            assert_eq!(log_file_name(Path::new(path)), name, "{path}");
        }
        assert_ne!(
            log_file_name(Path::new("/mnt/a-b")),
            log_file_name(Path::new("/mnt/a/b"))
        );
    }

    /// Parses a native-protocol datagram into (name, value) pairs.
    fn parse_entry(mut d: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        while !d.is_empty() {
            let nl = d.iter().position(|b| *b == b'\n').expect("a newline");
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                fields.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                d = &d[nl + 1..];
            } else {
                let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = d[nl + 9..nl + 9 + len].to_vec();
                assert_eq!(d[nl + 9 + len], b'\n', "binary field ends with a newline");
                fields.push((String::from_utf8(line.to_vec()).unwrap(), value));
                d = &d[nl + 10 + len..];
            }
        }
        fields
    }

    #[test]
    fn journal_entries_carry_priority_identifier_and_whole_multiline_messages() {
        let e = journal_entry(libc::LOG_WARNING, "stream cam: bad value", 42);
        assert_eq!(
            e,
            b"PRIORITY=4\nSYSLOG_IDENTIFIER=streamfs\nSYSLOG_PID=42\nMESSAGE=stream cam: bad value\n"
        );
        let fields = parse_entry(&journal_entry(libc::LOG_ERR, "two\nlines", 7));
        assert_eq!(fields[3], ("MESSAGE".to_string(), b"two\nlines".to_vec()));
        let long = "é".repeat(JOURNAL_MAX_MESSAGE);
        let fields = parse_entry(&journal_entry(libc::LOG_INFO, &long, 7));
        assert!(fields[3].1.len() <= JOURNAL_MAX_MESSAGE);
        assert!(
            std::str::from_utf8(&fields[3].1).is_ok(),
            "cut on a character"
        );
    }

    #[test]
    fn records_reach_a_journal_socket_and_the_probe_sees_only_listening_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        assert!(!accepts_datagrams(&path), "no socket yet");
        let server = UnixDatagram::bind(&path).unwrap();
        assert!(accepts_datagrams(&path));
        assert!(!accepts_syslog(&dir.path().join("none")));
        std::fs::write(dir.path().join("file"), b"").unwrap();
        assert!(!accepts_syslog(&dir.path().join("file")));

        let logger = SocketLogger {
            filter: env_logger::Builder::new()
                .parse_filters("streamfs=info")
                .build(),
            sink: LogSink::Journal(Journal::new(&path).unwrap()),
        };
        use log::Log;
        let record = |level, target: &'static str, args: std::fmt::Arguments| {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .target(target)
                    .args(args)
                    .build(),
            )
        };
        record(
            log::Level::Debug,
            "streamfs::fuse",
            format_args!("filtered out"),
        );
        record(
            log::Level::Warn,
            "streamfs::fuse",
            format_args!("line one\nline two"),
        );
        let mut buf = vec![0u8; 4096];
        server.set_nonblocking(true).unwrap();
        let n = server.recv(&mut buf).expect("one datagram");
        let fields = parse_entry(&buf[..n]);
        assert_eq!(fields[0], ("PRIORITY".to_string(), b"4".to_vec()));
        assert_eq!(
            fields[1],
            ("SYSLOG_IDENTIFIER".to_string(), b"streamfs".to_vec())
        );
        assert_eq!(fields[3].1, b"line one\nline two");
        assert!(
            server.recv(&mut buf).is_err(),
            "the debug record was filtered"
        );
    }

    #[test]
    fn a_default_log_directory_is_created_with_its_mode_and_must_be_ours() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("a/streamfs");
        // SAFETY: geteuid only reads the process's credentials.
        let euid = unsafe { libc::geteuid() };
        let mut f = open_log_in(&logs, "mnt-live.log", euid).unwrap();
        writeln!(f, "hello").unwrap();
        let want = if euid == 0 { 0o755 } else { 0o700 };
        let mode = std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want);
        assert_eq!(
            std::fs::read_to_string(logs.join("mnt-live.log")).unwrap(),
            "hello\n"
        );
        // A link in place of the directory is refused.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&logs, &link).unwrap();
        assert!(open_log_in(&link, "x.log", euid).is_err());
    }
}
