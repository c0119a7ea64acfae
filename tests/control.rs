//! `streamfs stop`, `streamfs status` and the command line around them, on real mounts with
//! real programs: which directories they trust, dead mounts, escaping, every reader of a
//! stream, the JSON schema, --watch in a pipe, usage messages, the man page and completions.

mod common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(20);

fn streamfs(args: &[&str], path: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failure with `code` and exactly one line on stderr, and returns that line.
fn one_line_failure(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("streamfs: "), "{err}");
    err.trim_end().to_string()
}

/// Runs a Python expression over a JSON document (bound to `d`) and returns what it prints;
/// fails the test when Python cannot parse the document.
fn py_json(json: &[u8], expr: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import json, sys\nd = json.loads(sys.stdin.buffer.read())\nr = ({expr})\n\
             print(r if isinstance(r, str) else repr(r))"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to parse JSON");
    child.stdin.take().unwrap().write_all(json).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 rejected the JSON ({}): {}",
        stderr(&out),
        String::from_utf8_lossy(&json[..json.len().min(2000)])
    );
    stdout(&out).trim_end().to_string()
}

/// A directory on a filesystem where `setfattr -n user.*` works (the root filesystem's
/// temporary directory, or /var/tmp when TMPDIR is a tmpfs without user attributes).
fn xattr_dir() -> tempfile::TempDir {
    for base in [std::env::temp_dir(), PathBuf::from("/var/tmp")] {
        let dir = tempfile::Builder::new()
            .prefix("streamfs-forged")
            .tempdir_in(&base)
            .unwrap();
        let probe = Command::new("setfattr")
            .args(["-n", "user.probe", "-v", "1"])
            .arg(dir.path())
            .output()
            .expect("setfattr is needed (Debian's attr package)");
        if probe.status.success() {
            return dir;
        }
    }
    panic!("no directory here supports user extended attributes");
}

/// A `sleep` process, killed on drop.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stop_and_status_refuse_a_directory_with_a_forged_pid() {
    let dir = xattr_dir();
    let mut victim = Sleeper(Command::new("sleep").arg("1000").spawn().unwrap());
    let pid = victim.0.id();
    let set = Command::new("setfattr")
        .args(["-n", "user.streamfs.pid", "-v", &pid.to_string()])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(set.status.success(), "setfattr: {}", stderr(&set));
    let got = streamfs::control::get_xattr(dir.path(), "user.streamfs.pid").unwrap();
    assert_eq!(got, pid.to_string(), "the forgery is in place");

    let stop = streamfs(&["stop"], dir.path());
    let line = one_line_failure(&stop, 1);
    assert!(line.contains("is not a streamfs mount"), "{line}");
    assert!(
        victim.0.try_wait().unwrap().is_none() && !process_gone(u64::from(pid)),
        "stop signalled the forged pid {pid}"
    );
    for args in [&["status"][..], &["status", "--json"]] {
        let status = streamfs(args, dir.path());
        let line = one_line_failure(&status, 1);
        assert!(line.contains("is not a streamfs mount"), "{line}");
        assert!(status.stdout.is_empty(), "{}", stdout(&status));
    }
    assert!(victim.0.try_wait().unwrap().is_none());
}

#[test]
fn stop_and_status_refuse_paths_that_are_not_the_root_of_a_streamfs_mount() {
    let m = Mount::new(&[]);
    let s = m.file("cam");
    std::fs::write(&s, b"x").unwrap();
    for (path, why) in [
        (s.as_path(), "not the root of any mounted filesystem"),
        (Path::new("/proc"), "it is a mount of type proc"),
    ] {
        for cmd in ["stop", "status"] {
            let o = streamfs(&[cmd], path);
            let line = one_line_failure(&o, 1);
            assert!(line.contains(why), "{cmd} {}: {line}", path.display());
        }
    }
    assert!(is_mounted(&m.path) && !process_gone(u64::from(m.daemon_pid())));
}

#[test]
fn a_dead_mount_is_named_with_the_umount_to_run() {
    let mut m = Mount::new(&[]);
    let mut daemon = m.daemon.take().unwrap();
    kill(daemon.id(), libc::SIGKILL);
    wait_child(&mut daemon, HANG).expect("the daemon died");
    let e = std::fs::metadata(&m.path).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    let want = format!(
        "streamfs: {0} is a dead streamfs mount (its daemon is gone): run umount {0}",
        m.path.display()
    );
    for args in [&["status"][..], &["stop"], &[]] {
        let o = streamfs(args, &m.path);
        assert_eq!(one_line_failure(&o, 1), want, "streamfs {args:?}");
    }
    let (code, _, err) = sh(&format!("umount '{}'", m.path.display()));
    assert_eq!(code, 0, "{err}");
    assert!(!is_mounted(&m.path));
}

/// The stream name of the escaping test: a newline and a clear-screen sequence.
const EVIL_NAME: &str = "a\nb\x1b[2J";

/// Python that names itself `x)\nWARN forged` (prctl PR_SET_NAME), opens the stream
/// EVIL_NAME in the mount given as argv[1], reports, and waits on it.
const FORGED_READER: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(15, b"x)\nWARN forged", 0, 0, 0) != 0:
    sys.exit("prctl failed")
f = open(os.path.join(sys.argv[1], "a\nb\x1b[2J"), "rb", buffering=0)
print("open", flush=True)
f.read(1)
"#;

#[test]
fn names_and_commands_are_escaped_in_the_table_and_the_json() {
    let m = Mount::new(&[]);
    let evil = m.file(EVIL_NAME);
    std::fs::write(&evil, b"").unwrap();
    let non_utf8 = m.path.join(std::ffi::OsStr::from_bytes(b"caf\xff"));
    std::fs::write(&non_utf8, b"12345").unwrap();
    let script = m.dir.path().join("reader.py");
    std::fs::write(&script, FORGED_READER).unwrap();
    let mut reader = Proc::sh(&format!(
        "exec python3 '{}' '{}'",
        script.display(),
        m.path.display()
    ));
    assert_eq!(reader.read_at_least(5, HANG), b"open\n");
    wait_readers(&evil, 1);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", reader.child.id())).unwrap();
    assert_eq!(comm, "x)\nWARN forged\n", "the reader renamed itself");

    let o = streamfs(&["status"], &m.path);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        !o.stdout
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\n' && *b != b'\t') || *b == 0x7f),
        "raw control bytes in the table: {table:?}"
    );
    assert_eq!(
        table.lines().count(),
        5,
        "header, two streams, one reader, the mount's memory and log: {table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("a\\nb\\u{1b}[2J ")),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("caf\\xff ")), "{table}");
    let reader_line = format!("    pid {} (x)\\nWARN forged)\t", reader.child.id());
    assert!(
        table.lines().any(|l| l.starts_with(&reader_line)),
        "{table}"
    );
    assert!(!table.lines().any(|l| l.starts_with("WARN")), "{table}");

    let o = streamfs(&["status", "--json"], &m.path);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = o.stdout;
    assert!(
        !json[..json.len() - 1]
            .iter()
            .any(|b| *b < 0x20 || *b == 0x7f),
        "raw control bytes in the JSON: {}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(json.last(), Some(&b'\n'));
    assert_eq!(
        py_json(
            &json,
            "[s['name'] for s in d['streams']] == ['a\\nb\\x1b[2J', 'caf\\ufffd']"
        ),
        "True"
    );
    assert_eq!(
        py_json(
            &json,
            "d['streams'][1]['name_hex'], 'name_hex' in d['streams'][0]"
        ),
        "('636166ff', False)"
    );
    assert_eq!(
        py_json(&json, "d['streams'][0]['reader_list'][0]['command']"),
        "x)\\nWARN forged",
        "the command as the daemon escaped it"
    );
    assert_eq!(
        py_json(&json, "d['streams'][0]['reader_list'][0]['pid']"),
        reader.child.id().to_string()
    );
}

/// Python that opens argv[2] handles for reading on the stream argv[1], then reports and
/// waits for its stdin to close.
const MANY_READERS: &str = r#"
import os, resource, sys
n = int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = n + 64
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
fds = [os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK) for _ in range(n)]
print(len(fds), flush=True)
sys.stdin.read()
"#;

#[test]
fn status_shows_every_reader_of_ten_thousand() {
    const N: usize = 10_000;
    let m = Mount::new(&[]);
    let s = m.file("crowd");
    std::fs::write(&s, b"").unwrap();
    let script = m.dir.path().join("many.py");
    std::fs::write(&script, MANY_READERS).unwrap();
    let mut holder = Command::new("python3")
        .arg(&script)
        .arg(&s)
        .arg(N.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), N.to_string(), "the holder opened every handle");
    wait_for("10,000 readers", Duration::from_secs(60), || {
        xattr_u64(&s, "readers") == N as u64
    });
    assert!(
        xattr_u64(&s, "reader_pages") > 1,
        "the reader list does not span pages; the test would prove nothing"
    );

    let o = streamfs(&["status", "--json"], &m.path);
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = holder.id();
    assert_eq!(
        py_json(
            &o.stdout,
            &format!(
                "len(d['streams'][0]['reader_list']), d['streams'][0]['readers'], \
                 all(r['pid'] == {pid} for r in d['streams'][0]['reader_list'])"
            )
        ),
        format!("({N}, {N}, True)")
    );
    let o = streamfs(&["status"], &m.path);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let reader_lines = table
        .lines()
        .filter(|l| l.starts_with(&format!("    pid {pid} (")))
        .count();
    assert_eq!(reader_lines, N);
    drop(holder.stdin.take());
    assert!(wait_child(&mut holder, HANG).unwrap().success());
}

#[test]
fn status_json_has_every_statistic_typed() {
    let m = Mount::new(&["--ring-buffer-size", "1MB"]);
    let empty = streamfs(&["status", "--json"], &m.path);
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert_eq!(
        py_json(
            &empty.stdout,
            "d['schema'], d['streams'], d['mount']['streams']"
        ),
        "(1, [], 0)"
    );

    let s = m.file("cam1");
    std::fs::write(&s, vec![7u8; 3000]).unwrap();
    let set = Command::new("setfattr")
        .args(["-n", "user.streamfs.slow_reader", "-v", "block"])
        .arg(&s)
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", stderr(&set));
    let mut r = Proc::cat(&s);
    assert_eq!(r.read_at_least(3000, HANG).len(), 3000);
    wait_parked(&s, r.child.id());
    let _writer = std::fs::OpenOptions::new().append(true).open(&s).unwrap();
    wait_for("the writer", HANG, || xattr_u64(&s, "writers") == 1);

    let o = streamfs(&["status", "--json"], &m.path);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = &o.stdout;
    assert_eq!(
        json.iter().filter(|b| **b == b'\n').count(),
        1,
        "one document on one line"
    );
    assert_eq!(
        py_json(
            json,
            "d['schema'], d['mountpoint'], d['mount']['pid'], d['mount']['streams'], \
             d['mount']['readers'], d['mount']['writers'], d['mount']['bytes_written'], \
             d['mount']['ring_buffer_size'], d['mount']['channel_buffer_size'], \
             d['mount']['slow_reader'], d['mount']['on_writer_close']"
        ),
        format!(
            "(1, '{}', {}, 1, 1, 1, 3000, 1048576, 6291456, 'drop', 'keep')",
            m.path.display(),
            m.daemon_pid()
        )
    );
    let numbers = [
        "bytes_written",
        "writes",
        "readers",
        "writers",
        "ring_bytes",
        "ring_start",
        "dropped_writes",
        "dropped_bytes",
        "channel_buffer_size",
        "ring_buffer_size",
        "write_rate",
        "blocked_writes",
    ];
    let checks = numbers
        .iter()
        .map(|k| format!("type(s['{k}']) is int"))
        .collect::<Vec<_>>()
        .join(" and ");
    assert_eq!(
        py_json(
            json,
            &format!(
                "[({checks}) for s in d['streams']], [k for k in d['streams'][0] if k.startswith('reader_list.') or k == 'reader_pages']"
            )
        ),
        "([True], [])",
        "every statistic a number; the pages are not statistics"
    );
    assert_eq!(
        py_json(
            json,
            "(lambda s: (s['name'], s['bytes_written'], s['writes'], s['readers'], \
             s['writers'], s['ring_bytes'], s['ring_buffer_size'], s['slow_reader'], \
             s['on_writer_close']))(d['streams'][0])"
        ),
        "('cam1', 3000, 1, 1, 1, 3000, 1048576, 'block', 'keep')"
    );
    assert_eq!(
        py_json(json, "d['streams'][0]['reader_list'][0]"),
        format!(
            "{{'label': 'pid {0} (cat)', 'pid': {0}, 'command': 'cat', 'queued': 0, \
             'budget': 6291456, 'delivered': 3000, 'dropped_writes': 0, 'dropped_bytes': 0, \
             'start': 0, 'waiting': True, 'disconnected': False}}",
            r.child.id()
        )
    );
    // Every attribute the daemon lists is there, under its own name.
    let listed = Command::new("getfattr")
        .args(["--absolute-names", "-d", "-m", "user.streamfs."])
        .arg(&s)
        .output()
        .unwrap();
    let listed = stdout(&listed);
    for l in listed
        .lines()
        .filter_map(|l| l.strip_prefix("user.streamfs."))
    {
        let name = l.split('=').next().unwrap();
        if name == "reader_pages" || name.starts_with("reader_list") {
            continue;
        }
        assert_eq!(
            py_json(json, &format!("'{name}' in d['streams'][0]")),
            "True",
            "{name} is missing"
        );
    }
}

/// Runs `bash -c script` with a limit; returns (stdout, stderr).
fn bash_with_limit(script: &str) -> (String, String) {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut f: std::process::ChildStdout| {
        std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).unwrap();
            s
        })
    };
    let out = read(out);
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let mut err = err;
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    if wait_child(&mut child, HANG).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{script}: did not end");
    }
    (out.join().unwrap(), err.join().unwrap())
}

#[test]
fn watch_json_in_a_pipe_is_json_lines_and_ends_with_the_pipe() {
    let m = Mount::new(&[]);
    std::fs::write(m.file("cam1"), b"abc").unwrap();
    let (out, err) = bash_with_limit(&format!(
        "'{}' status --watch --json '{}' | head -3; echo \"exit=${{PIPESTATUS[0]}}\" >&2",
        bin(),
        m.path.display()
    ));
    assert_eq!(err, "exit=0\n", "streamfs must end quietly with status 0");
    assert!(!out.contains('\x1b'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    for l in lines {
        assert_eq!(
            py_json(l.as_bytes(), "d['schema'], d['streams'][0]['name']"),
            "(1, 'cam1')"
        );
    }
}

#[test]
fn watch_in_a_pipe_repeats_the_table_without_escape_sequences() {
    let m = Mount::new(&[]);
    std::fs::write(m.file("cam1"), b"abc").unwrap();
    let (out, err) = bash_with_limit(&format!(
        "'{}' status --watch '{}' | head -6; echo \"exit=${{PIPESTATUS[0]}}\" >&2",
        bin(),
        m.path.display()
    ));
    assert_eq!(err, "exit=0\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out:?}");
    assert!(
        lines[0].starts_with("STREAM") && lines[4].starts_with("STREAM"),
        "{out:?}"
    );
    assert!(
        lines[1].starts_with("cam1") && lines[5].starts_with("cam1"),
        "{out:?}"
    );
    assert!(
        lines[2].starts_with("memory "),
        "the mount's figures: {out:?}"
    );
    assert_eq!(lines[3], "", "a blank line between tables: {out:?}");
    assert!(!out.contains('\x1b'), "{out:?}");
}

#[test]
fn watch_on_a_terminal_redraws_the_screen() {
    let m = Mount::new(&[]);
    std::fs::write(m.file("cam1"), b"abc").unwrap();
    // script(1) gives the command a pseudo-terminal; its output is what the terminal got.
    let mut p = Proc::sh(&format!(
        "exec script -qefc \"'{}' status --watch '{}'\" /dev/null",
        bin(),
        m.path.display()
    ));
    let clear = b"\x1b[H\x1b[2J";
    loop {
        let got = p.drain().to_vec();
        if got.windows(clear.len()).filter(|w| *w == clear).count() >= 2 {
            break;
        }
        p.read_at_least(got.len() + 1, HANG);
    }
    let got = String::from_utf8_lossy(p.drain()).into_owned();
    assert!(got.starts_with("\x1b[H\x1b[2J"), "{got:?}");
    assert!(got.contains("cam1"), "{got:?}");
}

#[test]
fn usage_lines_show_every_option_of_the_subcommand() {
    for (args, usage) in [
        (
            &["status"][..],
            "Usage: streamfs status [--json] [--watch] MOUNTPOINT",
        ),
        (
            &["status", "--bogus", "/x"],
            "Usage: streamfs status [--json] [--watch] MOUNTPOINT",
        ),
        (
            &["stop"],
            "Usage: streamfs stop [--timeout SECONDS] MOUNTPOINT",
        ),
        (
            &["stop", "--bogus", "/x"],
            "Usage: streamfs stop [--timeout SECONDS] MOUNTPOINT",
        ),
    ] {
        let o = Command::new(bin()).args(args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.lines().any(|l| l == usage), "{args:?}: {err}");
    }
    let o = Command::new(bin()).arg("--help").output().unwrap();
    let help = stdout(&o);
    for needle in [
        "streamfs stop [--timeout SECONDS] MOUNTPOINT",
        "streamfs status [--json] [--watch] MOUNTPOINT",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    assert!(!help.contains("generate"), "generate is hidden: {help}");
    let o = Command::new(bin())
        .args(["stop", "--help"])
        .output()
        .unwrap();
    let help = stdout(&o);
    assert!(
        help.contains("--timeout <SECONDS>") && help.contains("[default: 10]"),
        "{help}"
    );
    assert!(help.contains("/dev/fuse"), "how stop verifies: {help}");
}

#[test]
fn negative_sizes_get_the_size_parsers_message() {
    let dir = tempfile::tempdir().unwrap();
    let reason = |o: &Output| {
        let line = one_line_failure(o, 2);
        line.split_once("'-5': ")
            .map(|(_, r)| r.to_string())
            .unwrap()
    };
    for (flag, option) in [
        ("--ring-buffer-size", "ring_buffer_size"),
        ("--channel-buffer-size", "channel_buffer_size"),
    ] {
        let by_option = streamfs(&["-o", &format!("{option}=-5")], dir.path());
        let by_flag = streamfs(&[flag, "-5"], dir.path());
        let line = one_line_failure(&by_flag, 2);
        assert!(
            line.starts_with(&format!("streamfs: invalid {flag} '-5': ")),
            "{line}"
        );
        assert!(!line.contains("-- -5"), "{line}");
        assert_eq!(reason(&by_flag), reason(&by_option));
        assert!(reason(&by_flag).contains("cannot be negative"));
    }
    assert!(!is_mounted(dir.path()));
}

#[test]
fn stop_reports_what_it_ended() {
    let m = Mount::new(&[]);
    for name in ["a", "b", "c"] {
        std::fs::write(m.file(name), b"x").unwrap();
    }
    let mut r1 = Proc::cat(&m.file("a"));
    let mut r2 = Proc::cat(&m.file("b"));
    wait_readers(&m.file("a"), 1);
    wait_readers(&m.file("b"), 1);
    let o = streamfs(&["stop"], &m.path);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "streamfs: stopped {}: 3 streams ended (2 readers got end of file), daemon {} \
             exited, unmounted\n",
            m.path.display(),
            m.daemon_pid()
        )
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    assert!(!is_mounted(&m.path));
    assert_eq!(r1.read_to_eof(HANG), b"x");
    assert_eq!(r2.read_to_eof(HANG), b"x");
}

#[test]
fn stop_gives_up_after_its_timeout() {
    let m = Mount::new(&[]);
    let s = m.file("held");
    std::fs::write(&s, b"").unwrap();
    // An open file keeps the mount busy: the daemon retries the unmount for 2 s.
    let held = std::fs::OpenOptions::new().append(true).open(&s).unwrap();
    let o = streamfs(&["stop", "--timeout", "1"], &m.path);
    let line = one_line_failure(&o, 1);
    assert!(line.contains("did not finish within 1 s"), "{line}");
    drop(held);
    wait_for("the daemon to exit", HANG, || {
        process_gone(u64::from(m.daemon_pid()))
    });
    assert!(!is_mounted(&m.path));
}

#[test]
fn generate_prints_the_man_page_and_completions() {
    let o = Command::new(bin())
        .args(["generate", "man"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let man = stdout(&o);
    assert!(man.lines().any(|l| l.starts_with(".TH streamfs ")), "{man}");
    let plain = man.replace("\\-", "-");
    for needle in [
        "--channel-buffer-size",
        "--ring-buffer-size",
        "--foreground",
        "--debug",
        "--log-file",
        "--timeout",
        "--json",
        "--watch",
        "streamfs stop [--timeout SECONDS] MOUNTPOINT",
        "streamfs status [--json] [--watch] MOUNTPOINT",
        "channel_buffer_size=SIZE",
    ] {
        assert!(
            plain.contains(needle),
            "the man page lacks {needle}:\n{man}"
        );
    }
    let o = Command::new(bin())
        .args(["generate", "completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let bash = stdout(&o);
    assert!(bash.contains("status") && bash.contains("stop"), "{bash}");
    assert!(bash.contains("--ring-buffer-size"), "{bash}");
    let check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .as_ref()
        .unwrap()
        .write_all(bash.as_bytes())
        .unwrap();
    let check = check.wait_with_output().unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    let o = Command::new(bin())
        .args(["generate", "completions", "zsh"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let zsh = stdout(&o);
    assert!(zsh.starts_with("#compdef streamfs"), "{zsh}");
    assert!(zsh.contains("status"), "{zsh}");
}

/// A FUSE filesystem of type fuse.streamfs that is not streamfs: its root answers
/// `user.streamfs.pid` with a pid of its choosing, as anyone's own FUSE daemon can.
struct Forged {
    pid: u32,
}

impl fuser::Filesystem for Forged {
    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        if ino != fuser::INodeNo::ROOT {
            return reply.error(fuser::Errno::ENOENT);
        }
        let now = std::time::SystemTime::now();
        reply.attr(
            &Duration::ZERO,
            &fuser::FileAttr {
                ino,
                size: 0,
                blocks: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                kind: fuser::FileType::Directory,
                perm: 0o755,
                nlink: 2,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 4096,
                flags: 0,
            },
        );
    }

    fn getxattr(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        name: &std::ffi::OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let value = match name.as_bytes() {
            b"user.streamfs.pid" => self.pid.to_string(),
            b"user.streamfs.streams" | b"user.streamfs.readers" => "0".to_string(),
            _ => return reply.error(fuser::Errno::from_i32(libc::ENODATA)),
        };
        if size == 0 {
            reply.size(value.len() as u32);
        } else {
            reply.data(value.as_bytes());
        }
    }
}

/// A forged mount served by a thread of the test; unmounted on drop.
struct ForgedMount {
    _dir: tempfile::TempDir,
    path: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl ForgedMount {
    fn new(pid: u32) -> ForgedMount {
        require_fuse();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let path = path.canonicalize().unwrap();
        let options = streamfs::options::KernelOptions::default();
        let fd = streamfs::fuse::mount::mount(
            &path,
            &streamfs::fuse::mount::MountRequest {
                fsname: "forged",
                options: &options,
            },
        )
        .unwrap();
        let session = fuser::Session::from_fd(
            Forged { pid },
            fd,
            fuser::SessionACL::All,
            fuser::Config::default(),
        )
        .unwrap()
        .spawn()
        .unwrap();
        ForgedMount {
            _dir: dir,
            path,
            session: Some(session),
        }
    }
}

impl Drop for ForgedMount {
    fn drop(&mut self) {
        let _ = streamfs::daemon::unmount(&self.path, true);
        drop(self.session.take());
    }
}

#[test]
fn stop_refuses_a_fuse_streamfs_mount_whose_pid_does_not_serve_it() {
    // Root runs the sleeper and mounted the forgery (user_id=0): only the /dev/fuse check
    // stands between stop and the sleeper.
    let mut victim = Sleeper(Command::new("sleep").arg("1000").spawn().unwrap());
    let pid = victim.0.id();
    let forged = ForgedMount::new(pid);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", forged.path.display())))
        .expect("the forged mount");
    assert!(
        line.contains(" - fuse.streamfs ") && line.contains("user_id=0"),
        "{line}"
    );
    assert_eq!(
        streamfs::control::get_xattr(&forged.path, "user.streamfs.pid").unwrap(),
        pid.to_string()
    );
    let o = streamfs(&["stop"], &forged.path);
    let err = one_line_failure(&o, 1);
    assert!(
        err.contains(&format!("refusing to signal pid {pid}"))
            && err.contains("does not hold /dev/fuse open"),
        "{err}"
    );
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "stop signalled the sleeper"
    );

    // Another user's process, whatever it holds, does not serve root's mount.
    let mut other = Sleeper(
        std::os::unix::process::CommandExt::uid(Command::new("sleep").arg("1000"), 65534)
            .spawn()
            .unwrap(),
    );
    let forged = ForgedMount::new(other.0.id());
    let err = one_line_failure(&streamfs(&["stop"], &forged.path), 1);
    assert!(
        err.contains("it runs as uid 65534, the mount belongs to uid 0"),
        "{err}"
    );
    assert!(
        other.0.try_wait().unwrap().is_none(),
        "stop signalled the sleeper"
    );
}
