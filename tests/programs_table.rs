//! The README's "Programs tried" table, as one table of cases of one shape: a stream's
//! history, a program pointed at the stream, the writes (or commands, or `rm`) that follow,
//! and what the program has printed after each of them and at its end.
//!
//! After every step the harness waits until each reader of the stream has taken every byte
//! and waits again (so a program that holds its output back has had its chance to print),
//! then until the output is exactly the expected one; every wait is bounded and only
//! detects hangs. Each case runs its shell script in its own process group, killed when the
//! case ends, on its own mount.

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Hang detector only: every wait ends on a condition long before this.
const HANG: Duration = Duration::from_secs(30);

/// What to wait for before the first step.
enum Ready {
    /// The stream has this many readers registered.
    Readers(u64),
    /// This many readers registered, each with a read waiting (a program that checks the
    /// file before reading, like rsync, is past its checks).
    Waiting(u64),
    /// The program's output contains this text.
    Output(&'static str),
    /// Nothing (no program, or one that reads nothing before the steps).
    Now,
}

enum Step {
    /// One write() to the stream (creating it if needed), as `>>` does.
    Write(&'static str),
    /// A shell command run to completion (exit 0); its stdout goes to the case's output.
    Sh(&'static str),
    /// `rm` of the stream.
    Rm,
}

#[derive(Clone, Copy)]
enum End {
    /// The program exits by itself with this code.
    Exit(i32),
    /// The program is still running (it is killed when the case ends).
    Running,
}

struct Case {
    /// Mount options.
    mount: &'static [&'static str],
    /// Writes made before the program starts (the first one creates the stream).
    history: &'static [&'static str],
    /// The program under test, a shell script; empty for cases made of steps only.
    program: &'static str,
    ready: Ready,
    /// Each step and the program's whole output once it has been taken.
    steps: &'static [(Step, &'static str)],
    end: End,
    /// The whole output at the end.
    output: &'static str,
}

/// Shell functions every script may use.
const PRELUDE: &str = r#"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
"#;

/// Expands the placeholders of a script or an expected output: `{S}` the stream's path,
/// `{N}` its name, `{M}` the mount, `{D}` a scratch directory outside the mount, and
/// `{c*N}` the character c repeated N times.
fn expand(text: &str, stream: &Path, scratch: &Path) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let inner = close.map(|c| &after[..c]).unwrap_or("");
        let mut chars = inner.chars();
        let repeat = match (chars.next(), chars.next()) {
            (Some(c), Some('*')) => chars.as_str().parse::<usize>().ok().map(|n| (c, n)),
            _ => None,
        };
        let value = match inner {
            "S" => Some(stream.display().to_string()),
            "N" => Some(stream.file_name().unwrap().to_string_lossy().into_owned()),
            "M" => Some(stream.parent().unwrap().display().to_string()),
            "D" => Some(scratch.display().to_string()),
            _ => repeat.map(|(c, n)| c.to_string().repeat(n)),
        };
        match (value, close) {
            (Some(v), Some(c)) => {
                out.push_str(&v);
                rest = &after[c + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `sh -c SCRIPT` in a process group of its own, stdout appended to `out`, stderr to `err`;
/// the whole group is killed on drop.
struct Group {
    child: Child,
}

impl Group {
    fn start(script: &str, out: &Path, err: &Path) -> Group {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        };
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{script}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(open(out))
            .stderr(open(err))
            .spawn()
            .unwrap();
        Group { child }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: plain syscall with integer arguments; a negative pid names the group.
    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
}

/// Whether every reader of the stream has taken every byte written (and, with `parked`, has
/// a read waiting again); true when the stream is gone or has no reader. A program that
/// polls never parks a read, so only checks of "nothing more printed" ask for `parked`.
fn readers_idle(stream: &Path, parked: bool) -> bool {
    if !stream.exists() {
        return true;
    }
    let written = xattr_u64(stream, "bytes_written");
    let list =
        streamfs::control::get_xattr(stream, "user.streamfs.reader_list").unwrap_or_default();
    list.lines().all(|l| {
        (!parked || l.ends_with(" waiting"))
            && l.split([' ', '\t'])
                .find_map(|w| w.strip_prefix("delivered="))
                .and_then(|v| v.parse::<u64>().ok())
                == Some(written)
    })
}

struct Run {
    stream: PathBuf,
    scratch: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Run {
    fn x(&self, text: &str) -> String {
        expand(text, &self.stream, &self.scratch)
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    fn report(&self, what: &str) -> String {
        format!(
            "{what}\n--- output:\n{}\n--- stderr:\n{}",
            self.output(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits until the output is exactly `expected`; panics with both after `HANG`.
    fn expect_output(&self, expected: &str, when: &str) {
        let expected = self.x(expected);
        let end = std::time::Instant::now() + HANG;
        while self.output() != expected {
            assert!(
                std::time::Instant::now() < end,
                "{}",
                self.report(&format!("{when}: expected output {expected:?}"))
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn run(case: &Case) {
    let m = Mount::new(case.mount);
    let scratch = m.dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let r = Run {
        stream: m.file("s"),
        out: m.dir.path().join("out"),
        err: m.dir.path().join("err"),
        scratch,
    };
    std::fs::write(&r.out, "").unwrap();
    for h in case.history {
        append(&r.stream, h.as_bytes());
    }
    let mut program =
        (!case.program.is_empty()).then(|| Group::start(&r.x(case.program), &r.out, &r.err));
    match case.ready {
        Ready::Readers(n) => wait_readers(&r.stream, n),
        Ready::Waiting(n) => {
            wait_readers(&r.stream, n);
            wait_for(&r.report("the readers' reads to wait"), HANG, || {
                streamfs::control::get_xattr(&r.stream, "user.streamfs.reader_list")
                    .is_ok_and(|l| l.lines().all(|l| l.ends_with(" waiting")))
            });
        }
        Ready::Output(text) => {
            let text = r.x(text);
            wait_for(&r.report(&format!("{text:?} in the output")), HANG, || {
                r.output().contains(&text)
            })
        }
        Ready::Now => {}
    }
    for (i, (step, expected)) in case.steps.iter().enumerate() {
        let before = r.output();
        let what = match step {
            Step::Write(data) => {
                append(&r.stream, r.x(data).as_bytes());
                format!("step {i} (write {data:?})")
            }
            Step::Sh(script) => {
                let mut g = Group::start(&r.x(script), &r.out, &r.err);
                let status = wait_child(&mut g.child, HANG)
                    .unwrap_or_else(|| panic!("{}", r.report(&format!("step {i} hung"))));
                assert!(
                    status.success(),
                    "{}",
                    r.report(&format!("step {i} ({script}) exited with {status}"))
                );
                format!("step {i} (sh)")
            }
            Step::Rm => {
                std::fs::remove_file(&r.stream).unwrap();
                format!("step {i} (rm)")
            }
        };
        // Output that must not change yet is checked once the readers wait again.
        let parked = r.x(expected) == before;
        wait_for(&r.report(&format!("readers to take {what}")), HANG, || {
            readers_idle(&r.stream, parked)
        });
        r.expect_output(expected, &what);
    }
    match (case.end, program.as_mut()) {
        (End::Exit(code), Some(p)) => {
            let status = wait_child(&mut p.child, HANG)
                .unwrap_or_else(|| panic!("{}", r.report("the program did not exit")));
            r.expect_output(case.output, "at the end");
            assert_eq!(status.code(), Some(code), "{}", r.report("exit code"));
        }
        (End::Running, Some(p)) => {
            r.expect_output(case.output, "at the end");
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "{}",
                r.report("the program exited")
            );
        }
        (_, None) => r.expect_output(case.output, "at the end"),
    }
}

macro_rules! cases {
    ($($name:ident: $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run(&$case);
            }
        )*
    };
}

const TAR_PADDED: &str =
    "tar: {N}: File shrank by 7 bytes; padding with zeros\nexit 1\nabcd\n0000000";

use End::*;
use Ready::*;
use Step::*;

cases! {
    // ---- followers ------------------------------------------------------------------------

    // GNU tail reads 4 KiB blocks and prints each once it is full; at rm it prints the rest
    // and goes on following the removed file.
    tail_n_plus_1_f_prints_in_4_kib_blocks: Case {
        mount: &[],
        history: &["line 1\n"],
        program: "exec tail -n +1 -f {S}",
        ready: Readers(1),
        steps: &[
            (Write("line 2\n"), ""),
            (Write("{x*4090}\n"), "line 1\nline 2\n{x*4082}"),
            (Rm, "line 1\nline 2\n{x*4090}\n"),
        ],
        end: Running,
        output: "line 1\nline 2\n{x*4090}\n",
    };

    // tail -F waits for an end of file too; when the name comes back it cannot seek.
    tail_capital_f_prints_at_rm_and_fails_on_the_new_stream: Case {
        mount: &[],
        history: &["a\n"],
        program: "exec tail -F {S} 2>&1",
        ready: Readers(1),
        steps: &[
            (Write("b\n"), ""),
            (Rm, "a\nb\n"),
            (Write("c\n"), "a\nb\ntail: '{S}' has been replaced;  following new file\n\
             tail: {S}: cannot seek to offset 0: Illegal seek\n"),
        ],
        end: Exit(1),
        output: "a\nb\ntail: '{S}' has been replaced;  following new file\n\
             tail: {S}: cannot seek to offset 0: Illegal seek\n",
    };

    sed_u_is_live: Case {
        mount: &[],
        history: &["a\n"],
        program: "exec sed -u 's/^/> /' {S}",
        ready: Readers(1),
        steps: &[(Write("b\n"), "> a\n> b\n"), (Rm, "> a\n> b\n")],
        end: Exit(0),
        output: "> a\n> b\n",
    };

    sed_without_u_prints_at_rm: Case {
        mount: &[],
        history: &["a\n"],
        program: "exec sed 's/^/> /' {S}",
        ready: Readers(1),
        steps: &[(Write("b\n"), ""), (Rm, "> a\n> b\n")],
        end: Exit(0),
        output: "> a\n> b\n",
    };

    jq_unbuffered_is_live: Case {
        mount: &[],
        history: &[""],
        program: "exec jq -c --unbuffered .a {S}",
        ready: Readers(1),
        steps: &[
            (Write("{\"a\": 1}\n"), "1\n"),
            (Write("{\"a\": [2]}\n"), "1\n[2]\n"),
            (Rm, "1\n[2]\n"),
        ],
        end: Exit(0),
        output: "1\n[2]\n",
    };

    mawk_w_interactive_is_live: Case {
        mount: &[],
        history: &["a\n"],
        program: "exec mawk -W interactive '{ print NR \": \" $0 }' {S}",
        ready: Readers(1),
        steps: &[(Write("b\n"), "1: a\n2: b\n"), (Rm, "1: a\n2: b\n")],
        end: Exit(0),
        output: "1: a\n2: b\n",
    };

    mawk_without_w_interactive_prints_at_rm: Case {
        mount: &[],
        history: &["a\n"],
        program: "exec mawk '{ print NR \": \" $0 }' {S}",
        ready: Readers(1),
        steps: &[(Write("b\n"), ""), (Rm, "1: a\n2: b\n")],
        end: Exit(0),
        output: "1: a\n2: b\n",
    };

    // One MODIFY per write (the kernel merges identical events only while they are unread).
    inotifywait_sees_a_modify_per_write: Case {
        mount: &[],
        history: &[""],
        program: "exec inotifywait -m -e modify,delete_self --format %e {S} 2>&1",
        ready: Output("Watches established.\n"),
        steps: &[
            (Write("a\n"), "Setting up watches.\nWatches established.\nMODIFY\n"),
            (Write("b\n"), "Setting up watches.\nWatches established.\nMODIFY\nMODIFY\n"),
            (Rm, "Setting up watches.\nWatches established.\nMODIFY\nMODIFY\nDELETE_SELF\n"),
        ],
        end: Running,
        output: "Setting up watches.\nWatches established.\nMODIFY\nMODIFY\nDELETE_SELF\n",
    };

    // ---- programs that trust st_size ------------------------------------------------------

    // rsync copies st_size bytes: the history when the ring holds all of it...
    rsync_copies_the_history_when_the_ring_holds_it: Case {
        mount: &[],
        history: &["hello\n", "world\n"],
        program: "rsync {S} {D}/copy && cat {D}/copy",
        ready: Now,
        steps: &[],
        end: Exit(0),
        output: "hello\nworld\n",
    };

    // ...else the first st_size bytes a reader gets, waiting for live ones.
    rsync_without_the_history_copies_st_size_live_bytes: Case {
        mount: &["-o", "ring_buffer_size=0"],
        history: &["hello\n", "world\n"],
        program: "rsync {S} {D}/copy && cat {D}/copy",
        // rsync stats the file before reading it: the write must come after.
        ready: Waiting(1),
        steps: &[(Write("abcdefghijklmnop\n"), "abcdefghijkl")],
        end: Exit(0),
        output: "abcdefghijkl",
    };

    // GNU tar archives st_size bytes; at the first read that returns fewer than are left it
    // pads with zeros and fails.
    tar_pads_with_zeros_when_the_stream_ends_short: Case {
        mount: &["-o", "ring_buffer_size=0"],
        history: &["hello\n", "world\n"],
        program: "tar cf {D}/t.tar -C {M} {N} 2>&1; echo \"exit $?\"; \
                  tar xOf {D}/t.tar | tr '\\000' 0",
        // tar stats the file before reading it: the write must come after.
        ready: Waiting(1),
        steps: &[(Write("abcd\n"), TAR_PADDED)],
        end: Exit(0),
        output: TAR_PADDED,
    };

    // http.server sends Content-Length: st_size, then copies with 64 KiB buffered reads:
    // nothing until 64 KiB more or rm, and the client keeps only st_size bytes.
    python_http_server_sends_st_size_bytes_only_at_rm: Case {
        mount: &[],
        history: &["hello\n"],
        program: r#"
            port=$(free_port)
            cd {M} && python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1 &
            python3 -c '
import sys, time, urllib.request
url = "http://127.0.0.1:" + sys.argv[1] + "/{N}"
for _ in range(2000):
    try:
        r = urllib.request.urlopen(url)
        break
    except OSError:
        time.sleep(0.01)
print(r.headers["Content-Length"], r.read(), flush=True)
' "$port"
            kill $!
        "#,
        // The server takes Content-Length from fstat before it reads: the write must come
        // after (its buffered read of the file waits for more once it has the history).
        ready: Waiting(1),
        steps: &[(Write("live\n"), ""), (Rm, "6 b'hello\\n'\n")],
        end: Exit(0),
        output: "6 b'hello\\n'\n",
    };

    // `file` classifies the history; with no history it gets EAGAIN (it reads O_NONBLOCK).
    file_classifies_the_history: Case {
        mount: &[],
        history: &["hello\n"],
        program: "file -b {S}",
        ready: Now,
        steps: &[],
        end: Exit(0),
        output: "ASCII text\n",
    };

    file_without_a_ring_gets_eagain: Case {
        mount: &["-o", "ring_buffer_size=0"],
        history: &["hello\n"],
        program: "file -b {S}",
        ready: Now,
        steps: &[],
        end: Exit(1),
        output: "ERROR: cannot read `{S}' (Resource temporarily unavailable)\n",
    };

    du_counts_no_blocks_and_df_no_space: Case {
        mount: &[],
        history: &["hello\n"],
        program: "du {S}; du -b {S}; df --output=size,used,avail {M}",
        ready: Now,
        steps: &[],
        end: Exit(0),
        output: "0\t{S}\n6\t{S}\n1K-blocks  Used Avail\n        0     0     0\n",
    };

    // ---- writers ---------------------------------------------------------------------------

    ffmpeg_without_y_refuses_an_existing_stream: Case {
        mount: &[],
        history: &[""],
        program: "ffmpeg -nostdin -hide_banner -loglevel error -f lavfi -i testsrc -t 1 \
                  -f mpegts {S} 2>&1; echo \"exit $?\"",
        ready: Now,
        steps: &[],
        end: Exit(0),
        output: "File '{S}' already exists. Exiting.\nexit 1\n",
    };

    python_logging_handlers: Case {
        mount: &[],
        history: &[""],
        program: "exec cat {S}",
        ready: Readers(1),
        steps: &[
            (Sh("python3 -c 'import logging as l; l.basicConfig(filename=\"{S}\"); \
                 l.warning(\"file handler\")'"), "WARNING:root:file handler\n"),
            (Sh("python3 -c 'import logging as l, logging.handlers as h; \
                 l.getLogger().addHandler(h.WatchedFileHandler(\"{S}\")); \
                 l.warning(\"watched\")'"), "WARNING:root:file handler\nwatched\n"),
            // It seeks to find the size before every record: each is dropped (the error
            // goes to stderr).
            (Sh("python3 -c 'import logging as l, logging.handlers as h; \
                 l.getLogger().addHandler(h.RotatingFileHandler(\"{S}\", maxBytes=1000)); \
                 l.warning(\"rotating\")' 2>/dev/null"),
             "WARNING:root:file handler\nwatched\n"),
            (Sh("python3 -c 'import logging as l, logging.handlers as h; \
                 l.getLogger().addHandler(h.RotatingFileHandler(\"{S}\")); \
                 l.warning(\"never rotating\")'"),
             "WARNING:root:file handler\nwatched\nnever rotating\n"),
        ],
        end: Running,
        output: "WARNING:root:file handler\nwatched\nnever rotating\n",
    };

    python_open_r_plus_b_fails: Case {
        mount: &[],
        history: &["x\n"],
        program: "python3 -c 'open(\"{S}\", \"r+b\")' 2>&1 | tail -n 1",
        ready: Now,
        steps: &[],
        end: Exit(0),
        output: "io.UnsupportedOperation: File or stream is not seekable.\n",
    };

    // ---- network relays --------------------------------------------------------------------

    socat_relays_a_stream_to_tcp_until_rm: Case {
        mount: &[],
        history: &["a\n"],
        program: "port=$(free_port)
            socat -u OPEN:{S},rdonly TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr &
            exec socat -u TCP:127.0.0.1:$port,retry=1000,interval=0.01 STDOUT",
        ready: Readers(1),
        steps: &[(Write("b\n"), "a\nb\n"), (Rm, "a\nb\n")],
        end: Exit(0),
        output: "a\nb\n",
    };

    socat_writes_tcp_into_a_stream: Case {
        mount: &[],
        history: &[""],
        program: "exec cat {S}",
        ready: Readers(1),
        steps: &[(
            Sh("port=$(free_port)
                socat -u TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr OPEN:{S},wronly,append &
                printf 'a\\nb\\n' | socat -u STDIN TCP:127.0.0.1:$port,retry=1000,interval=0.01
                wait"),
            "a\nb\n",
        )],
        end: Running,
        output: "a\nb\n",
    };

    // OpenBSD nc: -N shuts the connection down at the end of its input (at rm).
    nc_relays_a_stream_to_tcp_until_rm: Case {
        mount: &[],
        history: &["a\n"],
        program: "port=$(free_port)
            nc -N -l 127.0.0.1 $port < {S} &
            until nc -d 127.0.0.1 $port 2>/dev/null; do sleep 0.01; done",
        ready: Readers(1),
        steps: &[(Write("b\n"), "a\nb\n"), (Rm, "a\nb\n")],
        end: Exit(0),
        output: "a\nb\n",
    };

    nc_writes_tcp_into_a_stream: Case {
        mount: &[],
        history: &[""],
        program: "exec cat {S}",
        ready: Readers(1),
        steps: &[(
            Sh("port=$(free_port)
                nc -l 127.0.0.1 $port >> {S} &
                until printf 'a\\nb\\n' | nc -N 127.0.0.1 $port 2>/dev/null; do sleep 0.01; done
                wait"),
            "a\nb\n",
        )],
        end: Running,
        output: "a\nb\n",
    };
}
