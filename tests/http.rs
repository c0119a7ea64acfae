//! The HTTP gateway on a real mount, with real clients (curl, ffmpeg, Python): live reads
//! with replay, uploads read on the mount as they arrive, resume by offset, slow and killed
//! clients, atomic bodies, the answers to bad requests, and short reads held to batch them.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HANG: Duration = Duration::from_secs(20);

/// `cat > PATH`: a writer on the mount fed by the test.
struct Cat(Child);

impl Cat {
    fn new(path: &Path) -> Cat {
        Cat(Command::new("sh")
            .arg("-c")
            .arg(format!("exec cat > '{}'", path.display()))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap())
    }

    fn write(&mut self, data: &[u8]) {
        let w = self.0.stdin.as_mut().unwrap();
        w.write_all(data).unwrap();
        w.flush().unwrap();
    }

    fn close(mut self) {
        drop(self.0.stdin.take());
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for Cat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

#[test]
fn curl_gets_replay_then_live_and_rm_ends_it_cleanly() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    let cam = m.file("cam1");
    let mut cat = Cat::new(&cam);
    cat.write(b"replayed\n");
    wait_for("the first write", HANG, || {
        cam.exists() && xattr_u64(&cam, "bytes_written") == 9
    });
    let mut curl = Proc::sh(&format!(
        "exec curl -sN -D '{}' {}",
        m.dir.path().join("headers").display(),
        url(port, "/streams/cam1")
    ));
    assert_eq!(curl.read_at_least(9, HANG), b"replayed\n");
    cat.write(b"live\n");
    assert_eq!(curl.read_at_least(14, HANG), b"replayed\nlive\n");
    let headers = std::fs::read_to_string(m.dir.path().join("headers")).unwrap();
    for h in [
        "stream-offset: 0",
        "content-type: application/octet-stream",
        "cache-control: no-store",
        "x-content-type-options: nosniff",
        "transfer-encoding: chunked",
    ] {
        assert!(headers.to_lowercase().contains(h), "{h} in {headers}");
    }
    std::fs::remove_file(&cam).unwrap();
    assert_eq!(curl.read_to_eof(HANG), b"replayed\nlive\n");
    // curl exits 18 for a body cut short; 0 says the chunked body ended properly.
    assert!(curl.wait(HANG).success());
    cat.close_after_rm();
}

impl Cat {
    /// Ends a writer whose stream was removed: its writes fail from now on.
    fn close_after_rm(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_or_stopped_client_releases_or_drops_without_slowing_anyone() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "channel_buffer_size=2MB"]);
    let port = m.http_port();
    let cam = m.file("cam1");
    std::fs::write(&cam, b"").unwrap();
    // A killed curl: its reader goes at once, though its read is parked.
    let mut idle = Proc::sh(&format!("exec curl -sN {}", url(port, "/streams/cam1")));
    wait_readers(&cam, 1);
    wait_for("the HTTP read to park", HANG, || {
        streamfs::control::get_xattr(&cam, "user.streamfs.reader_list")
            .unwrap_or_default()
            .contains("waiting")
    });
    kill(idle.child.id(), libc::SIGKILL);
    let t = Instant::now();
    wait_readers(&cam, 0);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let _ = idle.wait(HANG);

    // A stopped curl beside a running one: the writer keeps its pace, the running one gets
    // every byte, the stopped one drops once its socket buffers are full (and its drops
    // are counted).
    let stopped = Proc::sh(&format!(
        "exec curl -sN -o /dev/null {}",
        url(port, "/streams/cam1?from=live")
    ));
    let counted = m.dir.path().join("count");
    let mut running = Proc::sh(&format!(
        "curl -sN {} | wc -c > '{}'",
        url(port, "/streams/cam1?from=live"),
        counted.display()
    ));
    wait_readers(&cam, 2);
    kill(stopped.child.id(), libc::SIGSTOP);
    // 48 MiB at about 16 MiB/s: far more than the stopped client's socket buffers hold.
    let mut w = std::fs::OpenOptions::new().append(true).open(&cam).unwrap();
    let block = vec![7u8; 64 << 10];
    let t = Instant::now();
    for _ in 0..768 {
        w.write_all(&block).unwrap();
        std::thread::sleep(Duration::from_millis(4));
    }
    let took = t.elapsed();
    drop(w);
    assert!(
        took < Duration::from_secs(8),
        "the writer was held up: {took:?}"
    );
    let list = streamfs::control::get_xattr(&cam, "user.streamfs.reader_list").unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines.iter().all(|l| l.starts_with("http 127.0.0.1:")),
        "{list}"
    );
    assert!(
        xattr_u64(&cam, "dropped_writes") > 0,
        "the stopped client dropped: {list}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" dropped_writes=0 "))
            .count(),
        1,
        "the running client lost nothing: {list}"
    );
    wait_for("the running client to take everything", HANG, || {
        streamfs::control::get_xattr(&cam, "user.streamfs.reader_list")
            .unwrap_or_default()
            .contains(&format!("delivered={} ", 48 << 20))
    });
    std::fs::remove_file(&cam).unwrap();
    let _ = running.wait(HANG);
    let n: u64 = std::fs::read_to_string(&counted)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, 48 << 20);
    kill(stopped.child.id(), libc::SIGCONT);
}

#[test]
fn an_upload_is_read_on_the_mount_as_it_arrives_and_counts_as_a_writer() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "on_writer_close=eof"]);
    let port = m.http_port();
    let cam = m.file("up");
    std::fs::write(&cam, b"").unwrap();
    let mut reader = Proc::cat(&cam);
    wait_readers(&cam, 1);
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "-T",
            "-",
            "-w",
            "%{http_code}",
            &url(port, "/streams/up"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = curl.stdin.as_mut().unwrap();
    stdin.write_all(b"first line\n").unwrap();
    stdin.flush().unwrap();
    // Seen on the mount while the upload goes on.
    assert_eq!(reader.read_at_least(11, HANG), b"first line\n");
    assert_eq!(xattr_u64(&cam, "writers"), 1);
    stdin.write_all(b"second\n").unwrap();
    drop(curl.stdin.take());
    let out = curl.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    // The last writer closed: on_writer_close=eof ends the reader.
    assert_eq!(reader.read_to_eof(HANG), b"first line\nsecond\n");
    assert_eq!(xattr_u64(&cam, "writers"), 0);
}

/// A Python script, run with the test's port and a scratch directory; its stdout.
fn python(script: &str, port: u16, dir: &Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bodies_with_a_length_are_one_write_chunked_ones_cut_by_frame() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    // Chunks cut across lines and packets, sent as separate chunks of a chunked body.
    let out = python(
        r#"
import sys, time, requests
port = sys.argv[1]
base = f"http://127.0.0.1:{port}/streams/"
def written(name):
    r = requests.head(base + name)
    return int(r.headers["Stream-Next-Offset"]) if r.status_code == 200 else 0
def chunks(name, parts):
    # Each (piece, offset): send the piece, then wait until the stream holds that much, so
    # that what arrived together is known.
    for p, offset in parts:
        yield p
        deadline = time.time() + 10
        while written(name) != offset:
            assert time.time() < deadline, (name, written(name), offset)
            time.sleep(0.005)
for name, frame, parts in [
    ("lines", "line", [(b"ab", 0), (b"c\nd", 4), (b"e\n", 7)]),
    ("ts", "ts", [(b"G" * 100, 0), (b"G" * 300, 376)]),
    ("frames", "frames", [(b"x", 1), (b"y", 2)]),
]:
    r = requests.post(base + name + "?frame=" + frame, data=chunks(name, parts))
    assert r.status_code == 204, r.status_code
    print(name, r.headers["Stream-Next-Offset"])
body = b"x" * (3 << 20)
r = requests.put(base + "whole", data=body)
assert r.status_code == 204, (r.status_code, r.text)
print("whole", r.headers["Stream-Next-Offset"])
r = requests.put(base + "bad?frame=words", data=b"x")
print("badframe", r.status_code)
"#,
        port,
        m.dir.path(),
    );
    assert_eq!(
        out, "lines 7\nts 400\nframes 2\nwhole 3145728\nbadframe 400\n",
        "{out}"
    );
    // Whole lines: two writes; two packets then the 24-byte tail; a write per piece that
    // came alone; one write of 3 MiB.
    assert_eq!(xattr_u64(&m.file("lines"), "writes"), 2);
    assert_eq!(xattr_u64(&m.file("frames"), "writes"), 2);
    assert_eq!(xattr_u64(&m.file("ts"), "writes"), 2);
    assert_eq!(xattr_u64(&m.file("whole"), "writes"), 1);
    // Over the atomic limit with a length: refused before anything is read.
    let (status, text) = http_raw(
        port,
        b"PUT /streams/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
          Content-Length: 67108865\r\n\r\n",
    );
    assert_eq!(status, 413, "{text}");
    assert!(!m.file("big").exists(), "nothing was created");
}

#[test]
fn python_reads_resume_by_offset_or_name_at_offset_with_no_gap_and_old_offsets_are_gone() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "ring_buffer_size=64KB"]);
    let port = m.http_port();
    let s = m.file("log");
    let mut cat = Cat::new(&s);
    let lines: Vec<String> = (0..200).map(|i| format!("line {i:04}\n")).collect();
    for l in &lines[..100] {
        cat.write(l.as_bytes());
    }
    wait_for("100 lines", HANG, || {
        s.exists() && xattr_u64(&s, "bytes_written") == 1000
    });
    // Python reads 333 bytes with requests, leaves; 100 more lines come; urllib resumes at
    // Stream-Offset + what it had.
    let script = r#"
import sys, requests, urllib.request
port, d = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}/streams/log"
r = requests.get(base + "?from=start", stream=True)
off = int(r.headers["Stream-Offset"])
got = b""
for c in r.iter_content(chunk_size=1):
    got += c
    if len(got) == 333:
        break
r.close()
open(d + "/first", "wb").write(got)
print(off, len(got))
"#;
    let out = python(script, port, m.dir.path());
    assert_eq!(out, "0 333\n");
    wait_readers(&s, 0);
    for l in &lines[100..] {
        cat.write(l.as_bytes());
    }
    wait_for("200 lines", HANG, || xattr_u64(&s, "bytes_written") == 2000);
    let script = r#"
import sys, urllib.request
port, d = sys.argv[1], sys.argv[2]
r = urllib.request.urlopen(f"http://127.0.0.1:{port}/streams/log@333")
assert r.headers["Stream-Offset"] == "333", r.headers
rest = r.read(2000 - 333)
open(d + "/rest", "wb").write(rest)
print(len(rest))
"#;
    assert_eq!(python(script, port, m.dir.path()), "1667\n");
    let mut got = std::fs::read(m.dir.path().join("first")).unwrap();
    got.extend(std::fs::read(m.dir.path().join("rest")).unwrap());
    assert_eq!(String::from_utf8(got).unwrap(), lines.concat());
    // Past the ring (64 KB): offset 0 is gone.
    let chunk = vec![b'z'; 32 << 10];
    for _ in 0..4 {
        cat.write(&chunk);
    }
    wait_for("the ring to move", HANG, || xattr_u64(&s, "ring_start") > 0);
    let (status, text) = http_get(port, "/streams/log?from=0", "");
    assert_eq!(status, 410, "{text}");
    assert!(text.contains("older than the ring"), "{text}");
    // NAME@SPEC in the path is ?from=SPEC, as on the mount; not both.
    let (status, text) = http_get(port, "/streams/log@0", "");
    assert_eq!(status, 410, "{text}");
    let (status, text) = http_get(port, "/streams/log@live?from=start", "");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("two starts"), "{text}");
    cat.close();
}

#[test]
fn sse_sends_one_event_per_line_and_resumes_after_last_event_id() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    let s = m.file("text");
    std::fs::write(&s, b"one\ntwo\nthr").unwrap();
    let mut cat = Cat::new(&s);
    let script = r#"
import sys, requests
port = sys.argv[1]
base = f"http://127.0.0.1:{port}/streams/text"
r = requests.get(base, headers={"Accept": "text/event-stream"}, stream=True)
assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers
events = []
for line in r.iter_lines():
    if line.startswith(b"id: "):
        ident = int(line[4:])
    elif line.startswith(b"data: "):
        events.append((ident, line[6:].decode()))
        print(ident, events[-1][1], flush=True)
        if len(events) == 3:
            break
r.close()
r = requests.get(base + "?format=sse", headers={"Last-Event-ID": "8"}, stream=True)
for line in r.iter_lines():
    if line.startswith(b"data: "):
        print("resumed", line[6:].decode(), flush=True)
        break
r.close()
r = requests.get(base + "?format=sse&last_event_id=4", stream=True)
for line in r.iter_lines():
    if line.startswith(b"data: "):
        print("from the query", line[6:].decode(), flush=True)
        break
"#;
    let mut py = Proc::sh(&format!(
        "exec python3 -c '{}' {port}",
        script.replace('\'', "'\\''")
    ));
    assert_eq!(py.read_at_least(12, HANG), b"4 one\n8 two\n");
    cat.write(b"ee\n");
    let want = b"4 one\n8 two\n14 three\nresumed three\nfrom the query two\n";
    assert_eq!(py.read_at_least(want.len(), HANG), want);
    assert!(py.wait(HANG).success());
    // An id says where to go on, and a snapshot asked for stays one: from offset 8 to the
    // end of the history, then the body ends (while the writer is still there).
    let (status, text) = http_get(
        port,
        "/streams/text@snapshot?format=sse",
        "Last-Event-ID: 8\r\n",
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data: three"), "{text}");
    assert!(!text.contains("data: two"), "{text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "the body ends: {text}");
    cat.close();
}

/// Reads `s` into `got` until it holds `want`.
fn read_until(s: &mut std::net::TcpStream, got: &mut Vec<u8>, want: &[u8]) {
    use std::io::Read;
    while !got.windows(want.len()).any(|w| w == want) {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("the answer goes on");
        assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(want));
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_short_read_holds_the_next_for_http_coalesce_but_a_write_after_a_pause_goes_at_once() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "http_coalesce=1000"]);
    let port = m.http_port();
    let cam = m.file("cam1");
    let mut cat = Cat::new(&cam);
    cat.write(b"a");
    wait_for("the first write", HANG, || {
        cam.exists() && xattr_u64(&cam, "bytes_written") == 1
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s.write_all(b"GET /streams/cam1?from=0 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"\r\n1\r\na\r\n");
    let first = Instant::now();
    // Two writes while the next read is held: they come together, a second later.
    cat.write(b"b");
    cat.write(b"c");
    read_until(&mut s, &mut got, b"\r\n2\r\nbc\r\n");
    let held = first.elapsed();
    assert!(held >= Duration::from_millis(500), "sent after {held:?}");
    // The hold is over: a write after the pause goes at once.
    std::thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    cat.write(b"d");
    read_until(&mut s, &mut got, b"\r\n1\r\nd\r\n");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    cat.close();
}
