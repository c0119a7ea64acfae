//! Real programs on streams, unchanged: an ffmpeg encoder writing the stream path with ffmpeg
//! viewers reading it (through `cat` and by path), recorders, Python's selectors, asyncio,
//! epoll, file objects and shutil, and the shell tools. Each test runs the programs as a
//! user would and asserts what the user sees; the comments record how each program behaves
//! on a stream (the README's "programs tried").

mod common;
use common::*;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Hang detector only: every wait below ends on a condition long before this.
const HANG: Duration = Duration::from_secs(30);
/// Frame rate of every test video.
const FPS: u64 = 25;

/// A path quoted for `sh` (the temporary paths hold no quotes).
fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn touch(p: &Path) {
    append(p, b"");
}

/// Waits until the process has printed `needle` and returns all it printed so far.
fn wait_output(p: &mut Proc, needle: &str) -> String {
    let end = Instant::now() + HANG;
    let mut exited = false;
    loop {
        let text = String::from_utf8_lossy(p.drain()).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            !exited && Instant::now() < end,
            "no {needle:?} in the output (exited: {exited}): {text:?}"
        );
        if p.child.try_wait().unwrap().is_some() {
            // Let the collecting thread pass on the last bytes, then look once more.
            std::thread::sleep(Duration::from_millis(100));
            exited = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Collects everything a process prints and checks that it succeeded.
fn output_of(p: &mut Proc, what: &str) -> String {
    let out = String::from_utf8_lossy(p.read_to_eof(HANG)).into_owned();
    let status = p.wait(HANG);
    assert!(status.success(), "{what} exited with {status}: {out}");
    out
}

/// Runs a Python script (written to the mount's temporary directory) with arguments.
fn python(m: &Mount, name: &str, code: &str, args: &[&str]) -> Proc {
    let file = m.dir.path().join(name);
    std::fs::write(&file, code).unwrap();
    let args: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    Proc::sh(&format!("exec python3 -u {} {}", q(&file), args.join(" ")))
}

/// State letter of a process (`S` sleeping, `T` stopped, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

/// One line of `reader_list`: the opener's pid, bytes delivered and writes dropped.
struct ReaderInfo {
    pid: u32,
    delivered: u64,
    dropped_writes: u64,
}

fn field(line: &str, key: &str) -> u64 {
    line.split([' ', '\t'])
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in reader line {line:?}"))
}

fn readers_of(stream: &Path) -> Vec<ReaderInfo> {
    let list = streamfs::control::get_xattr(stream, "user.streamfs.reader_list")
        .unwrap_or_else(|e| panic!("reader_list of {}: {e}", stream.display()));
    list.lines()
        .map(|l| ReaderInfo {
            pid: l
                .strip_prefix("pid ")
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("reader line {l:?}")),
            delivered: field(l, "delivered="),
            dropped_writes: field(l, "dropped_writes="),
        })
        .collect()
}

/// Waits until every reader of the stream has taken every byte written so far.
fn wait_delivered(stream: &Path) {
    wait_for("readers to take everything", HANG, || {
        let written = xattr_u64(stream, "bytes_written");
        readers_of(stream).iter().all(|r| r.delivered == written)
    });
}

// ---------------------------------------------------------------------------------------
// Video: ffmpeg encoder and viewers
// ---------------------------------------------------------------------------------------

/// An ffmpeg encoding `secs` seconds of a lavfi test source in real time (`-re`) straight to
/// the stream path, as MPEG-TS with a keyframe every 10 frames. `-flush_packets 1` matters:
/// without it ffmpeg writes a path that is a regular file in 256 KiB blocks, seconds of
/// delay at a low bitrate; with it ffmpeg writes every packet as soon as it is muxed.
fn encoder(stream: &Path, source: &str, secs: u64, codec: &str) -> Proc {
    Proc::sh(&format!(
        "exec ffmpeg -nostdin -hide_banner -loglevel error -re -f lavfi -i {source} -t {secs} \
         {codec} -g 10 -flush_packets 1 -f mpegts -y {}",
        q(stream)
    ))
}

/// An ffmpeg command that decodes `input` (a path or `-`), discards the frames and reports
/// progress (`frame=N`) on stdout; its errors go to `err`.
fn decoder(input: &str, err: &Path) -> String {
    format!(
        "ffmpeg -nostdin -hide_banner -nostats -loglevel error -progress pipe:1 -i {input} \
         -f null - 2>{}",
        q(err)
    )
}

/// A viewer: an ffmpeg decoding the stream, with its progress report and its errors.
struct Viewer {
    name: String,
    proc: Proc,
    err: PathBuf,
}

impl Viewer {
    fn new(m: &Mount, name: &str, script: impl FnOnce(&Path) -> String) -> Viewer {
        let err = m
            .dir
            .path()
            .join(format!("{}.err", name.replace(['|', ' '], "_")));
        let proc = Proc::sh(&script(&err));
        Viewer {
            name: name.to_string(),
            proc,
            err,
        }
    }

    /// `ffmpeg -i STREAM`: ffmpeg opens the stream path itself.
    fn path(m: &Mount, stream: &Path, name: &str) -> Viewer {
        Viewer::new(m, name, |err| format!("exec {}", decoder(&q(stream), err)))
    }

    /// `cat STREAM | ffmpeg -i -`: the viewer of the README.
    fn pipe(m: &Mount, stream: &Path, name: &str) -> Viewer {
        Viewer::new(m, name, |err| {
            format!("cat {} | {}", q(stream), decoder("-", err))
        })
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the viewer to end (its stream was removed) and returns the frames it
    /// decoded; it must exit 0 with a finished progress report.
    fn frames(&mut self) -> u64 {
        let out = String::from_utf8_lossy(self.proc.read_to_eof(HANG)).into_owned();
        let status = self.proc.wait(HANG);
        assert!(
            status.success(),
            "viewer {} exited with {status}: {}",
            self.name,
            self.errors()
        );
        assert!(
            out.contains("progress=end"),
            "viewer {} did not finish: {out}",
            self.name
        );
        out.lines()
            .filter_map(|l| l.strip_prefix("frame="))
            .next_back()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("viewer {}: no frame count in {out:?}", self.name))
    }
}

/// Frames ffprobe decodes in a file.
fn count_frames(file: &Path) -> u64 {
    let (code, out, err) = sh(&format!(
        "ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
         -of csv=p=0 {}",
        q(file)
    ));
    assert_eq!(code, 0, "ffprobe {}: {err}", file.display());
    // One line for the program, one for the stream; both give the count.
    out.split_whitespace()
        .next()
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("ffprobe said {out:?}"))
}

/// (byte position, keyframe) of every video packet of a transport stream file, in order.
fn video_packets(file: &Path) -> Vec<(u64, bool)> {
    let (code, out, err) = sh(&format!(
        "ffprobe -v error -select_streams v:0 -show_entries packet=pos,flags -of csv=p=0 {}",
        q(file)
    ));
    assert_eq!(code, 0, "ffprobe {}: {err}", file.display());
    out.lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let pos = f.next()?.trim().parse().ok()?;
            Some((pos, f.next()?.contains('K')))
        })
        .collect()
}

#[test]
fn encoder_on_the_path_feeds_pipe_and_path_viewers_every_frame_and_rm_ends_them() {
    let m = Mount::new(&["-o", "channel_buffer_size=16MB"]);
    let cam = m.file("cam1");
    touch(&cam);
    let mut viewers = [
        Viewer::pipe(&m, &cam, "cat|ffmpeg"),
        Viewer::path(&m, &cam, "ffmpeg -i"),
    ];
    wait_readers(&cam, 2);
    let secs = 4;
    let mut enc = encoder(
        &cam,
        "testsrc=size=320x240:rate=25",
        secs,
        "-c:v mpeg2video",
    );
    assert!(enc.wait(HANG).success(), "the encoder failed");
    // A write per packet: the viewers got the video live, not in 256 KiB blocks.
    let writes = xattr_u64(&cam, "writes");
    assert!(writes >= secs * FPS / 2, "only {writes} writes");
    assert_eq!(xattr_u64(&cam, "dropped_writes"), 0);
    // The encoder is done; removing the stream gives the viewers EOF and they exit.
    std::fs::remove_file(&cam).unwrap();
    for v in &mut viewers {
        assert_eq!(v.frames(), secs * FPS, "viewer {}", v.name);
        assert_eq!(v.errors(), "", "viewer {} reported errors", v.name);
    }
}

#[test]
fn late_joiner_decodes_from_the_ring_with_errors_only_before_its_first_keyframe() {
    let m = Mount::new(&["-o", "channel_buffer_size=16MB,ring_buffer_size=64KB"]);
    let cam = m.file("cam1");
    touch(&cam);
    let full_ts = m.dir.path().join("full.ts");
    let late_ts = m.dir.path().join("late.ts");
    let mut recorder = Proc::sh(&format!("exec cat {} > {}", q(&cam), q(&full_ts)));
    wait_readers(&cam, 1);
    let mut enc = encoder(&cam, "testsrc=size=320x240:rate=25", 5, "-c:v mpeg2video");
    // Join once the ring no longer holds the start, so that the replay begins mid-stream.
    wait_for("two rings' worth of video", HANG, || {
        xattr_u64(&cam, "bytes_written") >= 128 << 10
    });
    let mut late = Viewer::new(&m, "late", |err| {
        format!(
            "cat {} | tee {} | {}",
            q(&cam),
            q(&late_ts),
            decoder("-", err)
        )
    });
    wait_readers(&cam, 2);
    assert!(enc.wait(HANG).success(), "the encoder failed");
    std::fs::remove_file(&cam).unwrap();
    assert!(recorder.wait(HANG).success());
    let frames = late.frames();

    // The late joiner got the stream's tail: the ring's whole writes, so whole 188-byte
    // transport packets, then everything live.
    let full = std::fs::read(&full_ts).unwrap();
    let joined = std::fs::read(&late_ts).unwrap();
    assert!(
        joined.len() < full.len(),
        "the replay held the whole stream"
    );
    let start = full.len() - joined.len();
    assert_eq!(start % 188, 0, "the replay starts inside a TS packet");
    assert!(
        full[start..] == joined[..],
        "the late joiner's bytes are not the stream's tail"
    );
    // It decodes every frame from the first keyframe it received on.
    let packets = video_packets(&full_ts);
    let first_key = packets
        .iter()
        .position(|&(pos, key)| pos >= start as u64 && key)
        .expect("a keyframe after the join");
    assert_eq!(frames, (packets.len() - first_key) as u64);
    // The only complaints are the decoder's, about frames before that keyframe (it has no
    // sequence header yet); the demuxer never sees a broken transport stream.
    let errors = late.errors();
    for line in errors.lines() {
        assert!(
            line.starts_with("[mpeg2video") || line.contains("Last message repeated"),
            "unexpected error {line:?} in:\n{errors}"
        );
    }
}

#[test]
fn eight_viewers_joining_after_the_encoder_created_the_stream_decode_every_frame() {
    let m = Mount::new(&["-o", "channel_buffer_size=16MB"]);
    let cam = m.file("cam1");
    let secs = 4;
    // The encoder creates the stream itself (O_CREAT); the viewers open it once it exists,
    // and the ring (6 MiB by default, more than this whole video) replays what they missed.
    let mut enc = encoder(
        &cam,
        "testsrc=size=160x120:rate=25",
        secs,
        "-c:v mpeg2video",
    );
    wait_for("the encoder to create the stream", HANG, || cam.exists());
    let mut viewers: Vec<Viewer> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                Viewer::pipe(&m, &cam, &format!("cat|ffmpeg {i}"))
            } else {
                Viewer::path(&m, &cam, &format!("ffmpeg -i {i}"))
            }
        })
        .collect();
    wait_readers(&cam, 8);
    assert!(enc.wait(HANG).success(), "the encoder failed");
    assert_eq!(xattr_u64(&cam, "ring_start"), 0, "the ring lost the start");
    assert_eq!(xattr_u64(&cam, "dropped_writes"), 0);
    std::fs::remove_file(&cam).unwrap();
    for v in &mut viewers {
        assert_eq!(v.frames(), secs * FPS, "viewer {}", v.name);
        assert_eq!(v.errors(), "", "viewer {} reported errors", v.name);
    }
}

#[test]
fn a_stopped_viewer_drops_without_disturbing_the_encoder_or_the_other_viewers() {
    // About 2 MB of video in 5 s against a 1 MiB budget: the stopped viewer must drop, while
    // a running one could fall 2.5 s behind before it would.
    let m = Mount::new(&["-o", "channel_buffer_size=1MB"]);
    let cam = m.file("cam1");
    touch(&cam);
    let mut stopped = Viewer::path(&m, &cam, "stopped ffmpeg -i");
    let mut running = [
        Viewer::pipe(&m, &cam, "cat|ffmpeg"),
        Viewer::path(&m, &cam, "ffmpeg -i"),
    ];
    wait_readers(&cam, 3);
    let pid = stopped.proc.child.id();
    // A stop signal does not end a waiting read (as on a pipe): the viewer stops once its
    // read returns with the encoder's first write.
    kill(pid, libc::SIGSTOP);
    let secs = 5;
    let mut enc = encoder(
        &cam,
        "testsrc=size=320x240:rate=25,noise=alls=40:allf=t",
        secs,
        "-c:v mpeg2video -b:v 3M",
    );
    wait_for("the viewer to stop", HANG, || proc_state(pid) == Some('T'));
    assert!(enc.wait(HANG).success(), "the encoder failed");
    assert_eq!(proc_state(pid), Some('T'), "the stopped viewer ran");
    let readers = readers_of(&cam);
    assert_eq!(readers.len(), 3);
    for r in &readers {
        if r.pid == pid {
            assert!(r.dropped_writes > 0, "the stopped viewer dropped nothing");
        } else {
            assert_eq!(
                r.dropped_writes, 0,
                "a running viewer (pid {}) dropped",
                r.pid
            );
        }
    }
    // The running viewers end with every frame while the stopped one is still stopped.
    std::fs::remove_file(&cam).unwrap();
    for v in &mut running {
        assert_eq!(v.frames(), secs * FPS, "viewer {}", v.name);
        assert_eq!(v.errors(), "", "viewer {} reported errors", v.name);
    }
    assert_eq!(proc_state(pid), Some('T'));
    // Continued, it decodes what it had queued, gets over the gap and ends at EOF too.
    kill(pid, libc::SIGCONT);
    let got = stopped.frames();
    assert!(
        got > 0 && got < secs * FPS,
        "the stopped viewer decoded {got} frames"
    );
}

#[test]
fn recording_with_cat_is_byte_identical_and_ffprobe_counts_every_frame() {
    let m = Mount::new(&["-o", "channel_buffer_size=64MB"]);
    let input = m.dir.path().join("in.ts");
    let (code, _, err) = sh(&format!(
        "ffmpeg -nostdin -hide_banner -loglevel error -f lavfi -i testsrc=size=320x240:rate=25 \
         -t 4 -c:v libx264 -preset ultrafast -g 10 -f mpegts -y {}",
        q(&input)
    ));
    assert_eq!(code, 0, "encoding in.ts: {err}");
    let frames = count_frames(&input);
    assert_eq!(frames, 4 * FPS);
    let cam = m.file("cam1");
    touch(&cam);
    let out = m.dir.path().join("out.ts");
    let mut recorder = Proc::sh(&format!("exec cat {} > {}", q(&cam), q(&out)));
    wait_readers(&cam, 1);
    let (code, _, err) = sh(&format!("cat {} > {}", q(&input), q(&cam)));
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(&cam).unwrap();
    assert!(recorder.wait(HANG).success());
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&input).unwrap(),
        "the recording differs from in.ts"
    );
    assert_eq!(count_frames(&out), frames);
}

// ---------------------------------------------------------------------------------------
// Python: non-blocking reads, poll, select, epoll, asyncio
// ---------------------------------------------------------------------------------------

const SELECTORS_PY: &str = r#"
import os, select, selectors, sys

def say(*words):
    print(*words, flush=True)

fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
sel = selectors.DefaultSelector()
sel.register(fd, selectors.EVENT_READ)
poller = select.poll()
poller.register(fd, select.POLLIN)
def revents():
    return [ev for _, ev in poller.poll(0)]
# Nothing queued: no readiness within a short timeout, and a read would block.
say("empty", len(sel.select(timeout=0.2)), revents())
try:
    os.read(fd, 64)
    say("read", "returned")
except BlockingIOError:
    say("read", "EAGAIN")
say("waiting")
say("woke", len(sel.select(timeout=10)))
say("queued", revents())
say("data", os.read(fd, 64))
say("drained", len(sel.select(timeout=0.2)), revents())
say("waiting for rm")
say("woke", len(sel.select(timeout=10)))
say("ended", revents())
say("eof", os.read(fd, 64))
"#;

#[test]
fn python_selectors_report_a_nonblocking_stream_readable_exactly_when_data_is_queued() {
    let m = Mount::new(&[]);
    let st = m.file("events");
    touch(&st);
    let mut py = python(&m, "selectors_test.py", SELECTORS_PY, &[s(&st)]);
    wait_output(&mut py, "waiting\n");
    append(&st, b"hello\n");
    wait_output(&mut py, "waiting for rm\n");
    std::fs::remove_file(&st).unwrap();
    // POLLIN is 1, POLLHUP 16: an ended stream is readable (EOF) and hung up.
    assert_eq!(
        output_of(&mut py, "the selectors script"),
        "empty 0 []\nread EAGAIN\nwaiting\nwoke 1\nqueued [1]\ndata b'hello\\n'\n\
         drained 0 []\nwaiting for rm\nwoke 1\nended [17]\neof b''\n"
    );
}

const EPOLL_PY: &str = r#"
import os, select, sys

def say(*words):
    print(*words, flush=True)

fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
ep = select.epoll()
ep.register(fd, select.EPOLLIN)
def events(timeout):
    return [ev for _, ev in ep.poll(timeout)]
say("empty", events(0.2))
for _ in range(2):
    say("waiting level")
    say("woke", events(10))
    say("still ready", events(0))
    say("data", os.read(fd, 64))
    say("drained", events(0.2))
ep.modify(fd, select.EPOLLIN | select.EPOLLET)
for _ in range(2):
    say("waiting edge")
    say("woke", events(10))
    say("no new edge", events(0.2))
    say("data", os.read(fd, 64))
say("waiting for rm")
say("ended", events(10))
say("eof", os.read(fd, 64))
"#;

#[test]
fn python_epoll_level_and_edge_triggered_wakes_for_every_write_and_rm() {
    let m = Mount::new(&[]);
    let st = m.file("events");
    touch(&st);
    let mut py = python(&m, "epoll_test.py", EPOLL_PY, &[s(&st)]);
    let mut expected = String::from("empty []\n");
    for (i, (mode, word)) in [
        ("level", "one"),
        ("level", "two"),
        ("edge", "three"),
        ("edge", "four"),
    ]
    .into_iter()
    .enumerate()
    {
        let waiting = format!("waiting {mode}\n");
        expected.push_str(&waiting);
        // Wait for the first or second "waiting" line of this mode.
        wait_for(&format!("the script to wait for {word}"), HANG, || {
            String::from_utf8_lossy(py.drain())
                .matches(&waiting)
                .count()
                == i % 2 + 1
        });
        append(&st, format!("{word}\n").as_bytes());
        // Level-triggered: ready until read, then quiet. Edge-triggered: one event per write.
        let again = if mode == "level" {
            "still ready [1]"
        } else {
            "no new edge []"
        };
        let quiet = if mode == "level" { "drained []\n" } else { "" };
        expected.push_str(&format!("woke [1]\n{again}\ndata b'{word}\\n'\n{quiet}"));
    }
    wait_output(&mut py, "waiting for rm\n");
    std::fs::remove_file(&st).unwrap();
    // EPOLLIN is 1, EPOLLHUP 16: an ended stream is readable (EOF) and hung up.
    expected.push_str("waiting for rm\nended [17]\neof b''\n");
    assert_eq!(output_of(&mut py, "the epoll script"), expected);
}

const ASYNCIO_PY: &str = r#"
import asyncio, os, sys

fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)

async def main():
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    spurious = 0
    def readable():
        nonlocal spurious
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            spurious += 1
            return
        if data:
            print("got", data.decode().strip(), flush=True)
        else:
            loop.remove_reader(fd)
            ended.set_result(None)
    loop.add_reader(fd, readable)
    print("ready", flush=True)
    await asyncio.wait_for(ended, 10)
    print("eof; spurious wakeups:", spurious, flush=True)

asyncio.run(main())
"#;

#[test]
fn python_asyncio_add_reader_gets_every_write_then_eof_on_rm() {
    let m = Mount::new(&[]);
    let st = m.file("events");
    touch(&st);
    // asyncio's default loop registers the descriptor with epoll, level-triggered.
    let mut py = python(&m, "asyncio_test.py", ASYNCIO_PY, &[s(&st)]);
    wait_output(&mut py, "ready\n");
    for i in 0..5 {
        append(&st, format!("message {i}\n").as_bytes());
        wait_output(&mut py, &format!("got message {i}\n"));
    }
    std::fs::remove_file(&st).unwrap();
    let out = output_of(&mut py, "the asyncio script");
    assert!(
        out.ends_with("got message 4\neof; spurious wakeups: 0\n"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Python: file objects and shutil
// ---------------------------------------------------------------------------------------

const FILE_OBJECTS_PY: &str = r#"
import os, sys

def say(*words):
    print(*words, flush=True)

path = sys.argv[1]
# 'wb' is O_CREAT|O_TRUNC: it creates the stream (truncation does nothing).
with open(path, "wb") as w:
    w.write(b"alpha\n")
# 'ab' is O_APPEND: Python's lseek(SEEK_END) gets ESPIPE, which it ignores; tell() raises.
with open(path, "ab") as a:
    a.write(b"beta\n")
    a.flush()
    try:
        a.tell()
        say("tell", "ok")
    except OSError as e:
        say("tell", e.errno)
r = open(path, "rb")
say("read", r.read(5))
say("waiting")
# Buffered read(n) waits for n bytes (or EOF), as on a pipe.
say("read", r.read(10))
# Iteration yields each line as soon as it arrives.
for line in r:
    say("line", line)
say("end")
"#;

const WRITE_PY: &str = r#"
import sys
with open(sys.argv[1], sys.argv[2]) as f:
    f.write(sys.argv[3].encode() + b"\n")
"#;

#[test]
fn python_file_objects_read_n_iterate_lines_and_write_with_wb_and_ab() {
    let m = Mount::new(&[]);
    let st = m.file("py");
    let writer = m.dir.path().join("write.py");
    std::fs::write(&writer, WRITE_PY).unwrap();
    let mut py = python(&m, "file_objects.py", FILE_OBJECTS_PY, &[s(&st)]);
    let out = wait_output(&mut py, "waiting\n");
    assert_eq!(out, "tell 29\nread b'alpha'\nwaiting\n", "ESPIPE is 29");
    // read(10) has "\nbeta\n" and waits for four more bytes.
    wait_delivered(&st);
    wait_parked(&st, py.child.id());
    assert_eq!(py.drain(), out.as_bytes(), "read(10) returned early");
    append(&st, b"gamma\n");
    wait_output(&mut py, "read b'\\nbeta\\ngamm'\nline b'a\\n'\n");
    for (mode, word) in [("wb", "delta"), ("ab", "epsilon"), ("wb", "zeta")] {
        let (code, _, err) = sh(&format!("python3 {} {} {mode} {word}", q(&writer), q(&st)));
        assert_eq!(code, 0, "{mode} writer: {err}");
        wait_output(&mut py, &format!("line b'{word}\\n'\n"));
    }
    std::fs::remove_file(&st).unwrap();
    let out = output_of(&mut py, "the file objects script");
    assert!(out.ends_with("line b'zeta\\n'\nend\n"), "{out}");
}

const COPY_PY: &str = r#"
import shutil, sys
src, dst, how = sys.argv[1:4]
if how == "copyfileobj":
    with open(src, "rb") as s, open(dst, "wb") as d:
        shutil.copyfileobj(s, d)
elif how == "copyfile":
    # Tries sendfile first, which refuses a non-seekable source (EINVAL); then reads.
    shutil.copyfile(src, dst)
else:
    # readall: st_size only sizes the first buffer; it reads to EOF.
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.write(s.read())
print("done", flush=True)
"#;

#[test]
fn python_shutil_copies_and_read_all_take_a_stream_until_it_is_removed() {
    let m = Mount::new(&[]);
    let st = m.file("rec");
    touch(&st);
    let hows = ["copyfileobj", "copyfile", "read"];
    let mut copiers: Vec<(PathBuf, Proc)> = hows
        .iter()
        .map(|how| {
            let dst = m.dir.path().join(format!("{how}.out"));
            let p = python(&m, &format!("{how}.py"), COPY_PY, &[s(&st), s(&dst), how]);
            (dst, p)
        })
        .collect();
    wait_readers(&st, hows.len() as u64);
    let mut data = Vec::new();
    for i in 0..40u32 {
        let block: Vec<u8> = (0..8192u32)
            .map(|j| (i.wrapping_mul(7919) ^ j.wrapping_mul(2654435761)) as u8)
            .collect();
        append(&st, &block);
        data.extend_from_slice(&block);
    }
    wait_delivered(&st);
    std::fs::remove_file(&st).unwrap();
    for ((dst, p), how) in copiers.iter_mut().zip(hows) {
        assert_eq!(output_of(p, how), "done\n");
        assert!(
            std::fs::read(dst).unwrap() == data,
            "{how} copied other bytes"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Shell tools
// ---------------------------------------------------------------------------------------

#[test]
fn tee_feeds_two_streams_whose_readers_get_identical_bytes() {
    let m = Mount::new(&[]);
    let (a, b) = (m.file("a"), m.file("b"));
    touch(&a);
    touch(&b);
    let mut ra = Proc::cat(&a);
    let mut rb = Proc::cat(&b);
    wait_readers(&a, 1);
    wait_readers(&b, 1);
    let (code, _, err) = sh(&format!("seq 1 5000 | tee {} {} > /dev/null", q(&a), q(&b)));
    assert_eq!(code, 0, "{err}");
    let expected: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    assert_eq!(ra.read_at_least(expected.len(), HANG), expected.as_bytes());
    assert_eq!(rb.read_at_least(expected.len(), HANG), expected.as_bytes());
}

#[test]
fn pv_reads_a_stream_until_rm_and_writes_one() {
    let m = Mount::new(&[]);
    let (x, y) = (m.file("x"), m.file("y"));
    touch(&x);
    touch(&y);
    let out = m.dir.path().join("pv.out");
    // pv reading a stream and writing another: rate-limited relays work unchanged.
    let mut relay = Proc::sh(&format!("exec pv -q {} > {}", q(&x), q(&y)));
    let mut rec = Proc::sh(&format!("exec cat {} > {}", q(&y), q(&out)));
    wait_readers(&x, 1);
    wait_readers(&y, 1);
    let (code, _, err) = sh(&format!("seq 1 20000 | pv -q -L 10m > {}", q(&x)));
    assert_eq!(code, 0, "{err}");
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    std::fs::remove_file(&x).unwrap();
    assert!(relay.wait(HANG).success(), "pv did not end on rm");
    std::fs::remove_file(&y).unwrap();
    assert!(rec.wait(HANG).success());
    assert!(
        std::fs::read(&out).unwrap() == expected.as_bytes(),
        "pv relayed other bytes"
    );
}

#[test]
fn dd_writes_blocks_and_reads_a_stream_to_its_end_or_a_count() {
    let m = Mount::new(&[]);
    let x = m.file("x");
    touch(&x);
    let src = m.dir.path().join("src.bin");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let out = m.dir.path().join("dd.out");
    let mut reader = Proc::sh(&format!(
        "exec dd if={} of={} bs=1M status=none",
        q(&x),
        q(&out)
    ));
    let mut counted = Proc::sh(&format!(
        "exec dd if={} bs=4096 count=3 iflag=fullblock status=none",
        q(&x)
    ));
    wait_readers(&x, 2);
    let (code, _, err) = sh(&format!(
        "dd if={} of={} bs=64K status=none",
        q(&src),
        q(&x)
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(xattr_u64(&x, "writes"), 16, "one write per 64 KiB block");
    // count=3 with fullblock: exactly three blocks, then dd exits and lets go of the stream.
    assert!(
        counted.read_to_eof(HANG) == &data[..3 * 4096],
        "dd count=3 copied other bytes"
    );
    assert!(counted.wait(HANG).success());
    wait_readers(&x, 1);
    // Without a count dd reads (short reads and all) until the stream is removed.
    std::fs::remove_file(&x).unwrap();
    assert!(reader.wait(HANG).success());
    assert!(
        std::fs::read(&out).unwrap() == data,
        "dd copied other bytes"
    );
}

#[test]
fn head_c_ends_after_n_bytes_and_releases_the_reader() {
    let m = Mount::new(&[]);
    let x = m.file("x");
    append(&x, b"0123456789");
    let (code, out, err) = sh(&format!("timeout 20 head -c 4 {}", q(&x)));
    assert_eq!((code, out.as_str()), (0, "0123"), "{err}");
    // With fewer bytes queued than asked, head takes them and waits for the rest; its
    // output is stdio-buffered, so it prints nothing until it has all 15.
    let mut head = Proc::sh(&format!("exec head -c 15 {}", q(&x)));
    wait_readers(&x, 1);
    wait_delivered(&x);
    wait_parked(&x, head.child.id());
    assert_eq!(head.drain(), b"");
    append(&x, b"abcdefgh");
    assert_eq!(output_of(&mut head, "head -c 15"), "0123456789abcde");
    wait_readers(&x, 0);
}

#[test]
fn grep_line_buffered_filters_a_live_log() {
    let m = Mount::new(&[]);
    let log = m.file("log");
    touch(&log);
    let mut grep = Proc::sh(&format!("exec grep --line-buffered ERROR {}", q(&log)));
    wait_readers(&log, 1);
    let mut expected = String::new();
    for i in 0..5 {
        append(&log, format!("INFO request {i}\n").as_bytes());
        append(&log, format!("ERROR failure {i}\n").as_bytes());
        expected.push_str(&format!("ERROR failure {i}\n"));
        // Each match is printed before the next line is written: live, not at EOF.
        assert_eq!(wait_output(&mut grep, &format!("failure {i}\n")), expected);
    }
    std::fs::remove_file(&log).unwrap();
    assert_eq!(output_of(&mut grep, "grep"), expected);
}

#[test]
fn cp_copies_a_stream_until_it_is_removed() {
    let m = Mount::new(&[]);
    let x = m.file("x");
    append(&x, b"one\n");
    let out = m.dir.path().join("copy");
    // cp tries FICLONE and copy_file_range (EXDEV from another file system), then reads.
    let mut cp = Proc::sh(&format!("exec cp {} {}", q(&x), q(&out)));
    wait_readers(&x, 1);
    append(&x, b"two\n");
    wait_for("cp to copy the live write", HANG, || {
        std::fs::metadata(&out).is_ok_and(|md| md.len() == 8)
    });
    assert!(cp.child.try_wait().unwrap().is_none(), "cp stopped early");
    std::fs::remove_file(&x).unwrap();
    assert!(cp.wait(HANG).success());
    assert_eq!(std::fs::read(&out).unwrap(), b"one\ntwo\n");
}

#[test]
fn cat_from_stream_to_stream_in_the_mount_copies_live() {
    let m = Mount::new(&[]);
    let (a, b) = (m.file("a"), m.file("b"));
    append(&a, b"first\n");
    touch(&b);
    let mut rb = Proc::cat(&b);
    wait_readers(&b, 1);
    // GNU cat tries copy_file_range first; the kernel refuses it for streams (EINVAL) and
    // cat falls back to read and write.
    let mut copier = Proc::sh(&format!("cat {} > {}", q(&a), q(&b)));
    assert_eq!(rb.read_at_least(6, HANG), b"first\n");
    append(&a, b"second\n");
    assert_eq!(rb.read_at_least(13, HANG), b"first\nsecond\n");
    // Removing the source ends the copy; the target stream lives on.
    std::fs::remove_file(&a).unwrap();
    assert!(copier.wait(HANG).success());
    assert_eq!(xattr_u64(&b, "bytes_written"), 13);
    std::fs::remove_file(&b).unwrap();
    assert_eq!(rb.read_to_eof(HANG), b"first\nsecond\n");
}

#[test]
fn tail_c_plus_1_f_fails_at_once_and_tail_f_prints_only_when_the_stream_ends() {
    let m = Mount::new(&[]);
    let log = m.file("log");
    let lines: Vec<String> = (1..=15).map(|i| format!("line {i:02}\n")).collect();
    for l in &lines[..12] {
        append(&log, l.as_bytes());
    }
    // `tail -c +1 -f` seeks a regular file to the start offset: ESPIPE, and GNU tail gives up
    // ("cannot seek to relative offset 0: Illegal seek", exit 1). Use cat.
    let (code, _, err) = sh(&format!("timeout 20 tail -c +1 -f {}", q(&log)));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Illegal seek"), "{err}");
    // `tail -f` reads to EOF to find the last lines, and a live stream has none: it takes
    // every byte and prints nothing (`tail -n +1 -f` likewise holds its output until EOF).
    let mut tail = Proc::sh(&format!("exec tail -f {}", q(&log)));
    wait_readers(&log, 1);
    for l in &lines[12..] {
        append(&log, l.as_bytes());
    }
    wait_delivered(&log);
    wait_parked(&log, tail.child.id());
    assert_eq!(tail.drain(), b"", "tail -f printed before EOF");
    // At rm it prints the last ten lines. (What it does next depends on fstat of a removed
    // stream; see fstat_of_an_open_stream_works_after_rm.)
    std::fs::remove_file(&log).unwrap();
    let last: String = lines[5..].concat();
    assert_eq!(tail.read_at_least(last.len(), HANG), last.as_bytes());
}

#[test]
fn wc_c_counts_a_readers_bytes_after_rm_but_trusts_st_size_when_given_the_file() {
    let m = Mount::new(&[]);
    let x = m.file("x");
    append(&x, b"hello\n");
    let mut counter = Proc::sh(&format!("cat {} | wc -c", q(&x)));
    wait_readers(&x, 1);
    append(&x, b"world\n");
    // GNU wc -c takes a regular file's size from st_size (here the 12 bytes ever written)
    // without reading, unless st_size is a multiple of the page size: then it reads, which
    // on a stream means until rm.
    let (code, out, err) = sh(&format!("timeout 20 wc -c {}", q(&x)));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("12 {}\n", x.display()));
    // On standard input its lseek(SEEK_CUR) fails with ESPIPE and it prints 0 at once: a
    // wrong count, from wc's arithmetic on st_size, not from the stream.
    let (code, out, err) = sh(&format!("timeout 20 wc -c < {}", q(&x)));
    assert_eq!((code, out.as_str()), (0, "0\n"), "{err}");
    // `cat FILE | wc -c` counts what a reader got: history and live, once the stream ends.
    std::fs::remove_file(&x).unwrap();
    assert_eq!(output_of(&mut counter, "cat | wc -c"), "12\n");
}

// ---------------------------------------------------------------------------------------
// What programs trip over: copy_file_range, sendfile, splice, mmap, lseek, fstat
// ---------------------------------------------------------------------------------------

const SYSCALLS_PY: &str = r#"
import errno, os, sys

def say(*words):
    print(*words, flush=True)

stream, other, plain = sys.argv[1:4]
fd = os.open(stream, os.O_RDONLY)
out = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
dst = os.open(other, os.O_WRONLY)
def attempt(name, call):
    try:
        say(name, "returned", call())
    except OSError as e:
        say(name, errno.errorcode[e.errno])
attempt("lseek", lambda: os.lseek(fd, 0, os.SEEK_SET))
attempt("pread", lambda: os.pread(fd, 64, 0))
attempt("copy_file_range to a file", lambda: os.copy_file_range(fd, out, 64))
attempt("copy_file_range to a stream", lambda: os.copy_file_range(fd, dst, 64))
attempt("sendfile to a file", lambda: os.sendfile(out, fd, None, 64))
say("read", os.read(fd, 64))
"#;

#[test]
fn lseek_pread_copy_file_range_and_sendfile_to_a_file_fail_without_taking_data() {
    let m = Mount::new(&[]);
    let st = m.file("src");
    let other = m.file("dst");
    append(&st, b"history\n");
    touch(&other);
    let plain = m.dir.path().join("plain");
    let mut py = python(
        &m,
        "syscalls.py",
        SYSCALLS_PY,
        &[s(&st), s(&other), s(&plain)],
    );
    let out = output_of(&mut py, "the syscalls script");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], "lseek ESPIPE");
    assert_eq!(lines[1], "pread ESPIPE");
    // The kernel refuses these before asking the daemon (copy_file_range: EXDEV to another
    // file system, EINVAL within the mount; sendfile to a file: EINVAL, it wants a seekable
    // source); cp, cat and shutil fall back to read().
    for l in &lines[2..5] {
        assert!(!l.contains("returned"), "{l}");
    }
    assert_eq!(lines[5], "read b'history\\n'", "a refused call took data");
    assert_eq!(std::fs::read(&plain).unwrap(), b"");
    assert_eq!(xattr_u64(&other, "bytes_written"), 0);
}

/// Waits for a program that must not hang. If it does, kills it and stops the daemon, which
/// answers whatever it holds parked, so that cleanup cannot hang either; then fails.
fn must_finish(m: &mut Mount, p: &mut Proc, what: &str) -> (std::process::ExitStatus, String) {
    match wait_child(&mut p.child, Duration::from_secs(10)) {
        Some(status) => {
            let out = String::from_utf8_lossy(p.read_to_eof(HANG)).into_owned();
            (status, out)
        }
        None => {
            let out = String::from_utf8_lossy(p.drain()).into_owned();
            kill(p.child.id(), libc::SIGKILL);
            m.terminate();
            panic!("{what} hung; its output so far: {out:?}");
        }
    }
}

const SPLICE_PY: &str = r#"
import errno, os, sys

def say(*words):
    print(*words, flush=True)

path, how = sys.argv[1:3]
fd = os.open(path, os.O_RDONLY)
w = os.open(path, os.O_WRONLY | os.O_APPEND)
r, pw = os.pipe()
for word in [b"first\n", b"second\n", b"third\n"]:
    os.write(w, word)
    try:
        if how == "splice":
            n = os.splice(fd, pw, 64)
        else:
            n = os.sendfile(pw, fd, None, 64)
        got = os.read(r, n) if n else b""
    except OSError as e:
        # A clear refusal is fine, as long as read() still gets the bytes.
        say("refused", errno.errorcode[e.errno])
        got = os.read(fd, 64)
    say("got", got)
"#;

fn assert_pipe_transfer_never_gives_wrong_bytes(how: &str) {
    let mut m = Mount::new(&[]);
    let st = m.file(how);
    touch(&st);
    let mut py = python(&m, "splice.py", SPLICE_PY, &[s(&st), how]);
    let (status, out) = must_finish(&mut m, &mut py, how);
    assert!(status.success(), "{how} script exited with {status}: {out}");
    let got: Vec<&str> = out.lines().filter(|l| l.starts_with("got ")).collect();
    assert_eq!(
        got,
        ["got b'first\\n'", "got b'second\\n'", "got b'third\\n'"],
        "{how} from a stream into a pipe gave other bytes:\n{out}"
    );
}

#[test]
fn splice_from_a_stream_into_a_pipe_never_gives_wrong_bytes() {
    assert_pipe_transfer_never_gives_wrong_bytes("splice");
}

#[test]
fn sendfile_from_a_stream_into_a_pipe_never_gives_wrong_bytes() {
    assert_pipe_transfer_never_gives_wrong_bytes("sendfile");
}

const MMAP_PY: &str = r#"
import errno, mmap, os, sys

def say(*words):
    print(*words, flush=True)

fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    say("shared", "mapped")
except OSError as e:
    say("shared", errno.errorcode[e.errno])
m = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
say("mapped privately")
say("private read", m[:])
"#;

#[test]
fn mmap_of_a_stream_fails_clearly_and_never_hangs_the_stream() {
    // No ring: the mapping's reader has nothing queued, so a page-cache read would wait.
    let mut m = Mount::new(&["-o", "ring_buffer_size=0"]);
    let st = m.file("cam");
    append(&st, b"some bytes\n");
    let mut py = python(&m, "mmap_test.py", MMAP_PY, &[s(&st)]);
    // A shared mapping is refused at mmap() (the kernel's rule for direct I/O files).
    let out = wait_output(&mut py, "mapped privately\n");
    assert_eq!(out, "shared ENODEV\nmapped privately\n");
    // A private mapping is the kernel's to allow; touching it must fail at once (SIGBUS),
    // never wait for stream data, never show stream bytes as file contents.
    let mut problems = Vec::new();
    match wait_child(&mut py.child, Duration::from_secs(10)) {
        Some(status) => {
            let out = String::from_utf8_lossy(py.read_to_eof(HANG)).into_owned();
            if out.contains("private read") || status.success() {
                problems.push(format!("the private mapping read data ({status}): {out:?}"));
            }
            if status.signal() != Some(libc::SIGBUS) && status.code().is_none() {
                problems.push(format!("touching the mapping ended with {status}"));
            }
        }
        None => {
            problems.push("touching the private mapping hung".to_string());
            kill(py.child.id(), libc::SIGKILL);
            if wait_child(&mut py.child, Duration::from_secs(10)).is_none() {
                problems.push("the program touching the mapping could not be killed".into());
            }
        }
    }
    // Afterwards the stream is as before: it opens for writing and the reader is gone.
    let mut writer = Proc::sh(&format!("printf more >> {}", q(&st)));
    match wait_child(&mut writer.child, Duration::from_secs(10)) {
        Some(status) if status.success() => {}
        Some(status) => problems.push(format!("a writer afterwards failed: {status}")),
        None => problems.push(
            "opening the stream afterwards hangs (uninterruptibly): a parked page-cache read \
             holds the page lock"
                .into(),
        ),
    }
    let end = Instant::now() + Duration::from_secs(5);
    while xattr_u64(&st, "readers") != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    if xattr_u64(&st, "readers") != 0 {
        problems.push("the mapping's reader stays registered after its program died".into());
    }
    if !problems.is_empty() {
        // Stopping the daemon answers what it parked, which releases the blocked programs.
        m.terminate();
        panic!("mmap of a stream: {problems:#?}");
    }
}

const FSTAT_PY: &str = r#"
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.unlink(sys.argv[1])
try:
    st = os.fstat(fd)
    print("fstat nlink", st.st_nlink, "size", st.st_size, flush=True)
except OSError as e:
    print("fstat", errno.errorcode[e.errno], flush=True)
print("read", os.read(fd, 64), os.read(fd, 64), flush=True)
"#;

/// `tail -f` trips over this: after rm it fstat()s its descriptor, gets ENOENT and quits with
/// "error reading 'FILE': No such file or directory" instead of following it.
#[test]
fn fstat_of_an_open_stream_works_after_rm() {
    let m = Mount::new(&[]);
    let st = m.file("gone");
    append(&st, b"hello\n");
    let mut py = python(&m, "fstat_test.py", FSTAT_PY, &[s(&st)]);
    assert_eq!(
        output_of(&mut py, "the fstat script"),
        "fstat nlink 0 size 6\nread b'hello\\n' b''\n"
    );
}
