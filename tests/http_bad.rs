//! The HTTP gateway's answers to bad requests and bad starts: a table of requests and their
//! 4xx answers, a slowloris client cut at the header timeout, tokens, a port in use, a bad
//! address or token file (refused before anything is mounted), and `serve` without a mount.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HANG: Duration = Duration::from_secs(20);

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// One bad request, what it gets, and what the answer says.
struct Bad {
    what: &'static str,
    request: &'static [u8],
    status: u16,
    says: &'static str,
}

#[test]
fn bad_requests_get_clear_answers() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    std::fs::write(m.file("cam1"), b"x").unwrap();
    let big = format!(
        "GET /streams/cam1 HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let big: &'static [u8] = Box::leak(big.into_bytes().into_boxed_slice());
    let table = [
        Bad {
            what: "unknown path",
            request: b"GET /nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            status: 404,
            says: "no such path",
        },
        Bad {
            what: "missing stream",
            request: b"GET /streams/none HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            status: 404,
            says: "no stream named none",
        },
        Bad {
            what: "bad from",
            request: b"GET /streams/cam1?from=soon HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            status: 400,
            says: "invalid start 'soon'",
        },
        Bad {
            what: "wrong method",
            request: b"PATCH /streams/cam1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            status: 405,
            says: "allow: GET, HEAD, PUT, POST, DELETE",
        },
        Bad {
            what: "wrong method on the listing",
            request: b"POST /streams HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            status: 405,
            says: "allow: GET, HEAD",
        },
        Bad {
            what: "body on GET",
            request: b"GET /streams/cam1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
            status: 400,
            says: "takes no body",
        },
        Bad {
            what: "oversized headers",
            request: big,
            status: 431,
            says: "",
        },
        Bad {
            what: "bad frame",
            request: b"POST /streams/cam1?frame=gop HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            status: 400,
            says: "unknown frame 'gop'",
        },
        Bad {
            what: "bad name",
            request: b"PUT /streams/a%40b HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            status: 400,
            says: "invalid stream name",
        },
        Bad {
            what: "delete missing",
            request: b"DELETE /streams/none HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            status: 404,
            says: "no stream named none",
        },
    ];
    for b in &table {
        let (status, text) = http_raw(port, b.request);
        assert_eq!(status, b.status, "{}: {text}", b.what);
        assert!(
            text.to_lowercase().contains(&b.says.to_lowercase()),
            "{}: {text}",
            b.what
        );
    }
    // Nothing else was disturbed: the stream is as it was.
    assert_eq!(xattr_u64(&m.file("cam1"), "bytes_written"), 1);
}

#[test]
fn a_slowloris_client_is_cut_after_the_header_timeout() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let t = Instant::now();
    let head = b"GET /streams HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = None;
    for b in head.iter().cycle() {
        if s.write_all(&[*b]).is_err() {
            closed = Some(t.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(_) => {
                closed = Some(t.elapsed());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = Some(t.elapsed());
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never cut off");
    }
    let closed = closed.unwrap();
    assert!(
        closed >= Duration::from_secs(9) && closed < Duration::from_secs(14),
        "cut after {closed:?}"
    );
}

#[test]
fn tokens_are_required_and_read_tokens_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("token");
    let read = dir.path().join("read-token");
    std::fs::write(&full, "s3cret\n").unwrap();
    std::fs::write(&read, "look\n").unwrap();
    let m = Mount::new(&[
        "--http",
        "127.0.0.1:0",
        "--http-token",
        full.to_str().unwrap(),
        "--http-read-token",
        read.to_str().unwrap(),
    ]);
    let port = m.http_port();
    std::fs::write(m.file("cam1"), b"x").unwrap();
    for (what, headers, method, status) in [
        ("no token", "", "HEAD", 401),
        ("wrong token", "Authorization: Bearer nope\r\n", "HEAD", 401),
        ("the token", "Authorization: Bearer s3cret\r\n", "HEAD", 200),
        // The scheme's name is case-insensitive (RFC 9110).
        (
            "bearer in lower case",
            "Authorization: bearer s3cret\r\n",
            "HEAD",
            200,
        ),
        (
            "another scheme",
            "Authorization: Basic czNjcmV0\r\n",
            "HEAD",
            401,
        ),
        (
            "the read token",
            "Authorization: Bearer look\r\n",
            "HEAD",
            200,
        ),
        (
            "the read token writing",
            "Authorization: Bearer look\r\n",
            "DELETE",
            403,
        ),
        (
            "the token writing",
            "Authorization: Bearer s3cret\r\n",
            "DELETE",
            204,
        ),
    ] {
        let (got, text) = http_raw(
            port,
            format!(
                "{method} /streams/cam1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(got, status, "{what}: {text}");
    }
    let (got, _) = http_get(port, "/streams?access_token=look", "");
    assert_eq!(got, 200, "a token in the query, for what a browser opens");
}

/// `streamfs serve ARGS`: exit status and stderr when it fails at start.
fn serve_fails(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(bin())
        .arg("serve")
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, HANG).expect("serve exits on a bad start");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn bad_starts_exit_before_anything_is_mounted_or_served() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    for (args, code, says) in [
        (vec!["--http", busy_addr.as_str()], 1, "cannot listen on"),
        (
            vec!["--http", "300.1.1.1:80"],
            2,
            "invalid --http '300.1.1.1:80'",
        ),
        (
            vec!["--http", "9", "--http-token", "/nonexistent/t"],
            2,
            "invalid http_token '/nonexistent/t'",
        ),
        (vec![], 2, "serve needs an address"),
        (
            vec!["--http", "9", "-o", "http_cors=nowhere"],
            2,
            "invalid http_cors 'nowhere'",
        ),
    ] {
        let (got, err) = serve_fails(&args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // A mount with a port in use: refused before mounting.
    let (_dir, mnt) = mount_dir("streamfs-http-busy");
    let out = Command::new(bin())
        .arg(&mnt)
        .args(["--http", &busy_addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
    assert!(!is_mounted(&mnt));
}

/// A daemon killed and reaped when the test ends, even by a panic.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_without_a_mount_takes_uploads_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut daemon = Reaped(
        Command::new(bin())
            .args(["serve", "--http", "0.0.0.0:0", "-o", "ring_buffer_size=1MB"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let port = http_port_in(&log);
    let (code, out, err) = sh(&format!(
        "printf 'hello\\n' | curl -sS -T - -w '%{{http_code}}' {u} && curl -sS '{u}?from=start,snapshot'",
        u = url(port, "/streams/c")
    ));
    assert_eq!((code, out.as_str()), (0, "204hello\n"), "{err}");
    kill(daemon.0.id(), libc::SIGTERM);
    assert!(wait_child(&mut daemon.0, HANG).unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("is not a loopback address, and no --http-token is set"),
        "all interfaces and no token: warned. {text}"
    );
}

#[test]
fn the_daemons_limits_answer_507_and_503() {
    let m = Mount::new(&[
        "--http",
        "127.0.0.1:0",
        "-o",
        "max_memory=16MB,max_streams=1,max_readers=1",
    ]);
    let port = m.http_port();
    // A body whose length max_memory cannot hold: refused before it is read.
    let (status, text) = http_raw(
        port,
        b"PUT /streams/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
          Content-Length: 33554432\r\n\r\n",
    );
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("memory limit"), "{text}");
    assert!(!m.file("a").exists(), "the refused upload left no stream");
    let put = |name: &str| {
        http_raw(
            port,
            format!(
                "PUT /streams/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Content-Length: 1\r\n\r\nx"
            )
            .as_bytes(),
        )
    };
    assert_eq!(put("b").0, 204);
    let (status, text) = put("c");
    assert_eq!(status, 507, "max_streams: {text}");
    assert!(text.contains("too many streams"), "{text}");
    let mut first = Proc::sh(&format!(
        "exec curl -sN {}",
        url(port, "/streams/b?from=live")
    ));
    wait_readers(&m.file("b"), 1);
    let (status, text) = http_get(port, "/streams/b", "");
    assert_eq!(status, 503, "max_readers: {text}");
    assert!(text.contains("too many readers"), "{text}");
    std::fs::write(m.file("b"), b"the first reader is served\n").unwrap();
    assert_eq!(
        first.read_at_least(27, HANG),
        b"the first reader is served\n"
    );
}

#[test]
fn a_body_that_announces_a_length_takes_memory_only_as_it_arrives() {
    let m = Mount::new(&[
        "--http",
        "127.0.0.1:0",
        "-o",
        "max_memory=16MB,ring_buffer_size=8MB",
    ]);
    let port = m.http_port();
    let hist = m.file("hist");
    std::fs::write(&hist, vec![b'h'; 8 << 20]).unwrap();
    let ring = xattr_u64(&hist, "ring_bytes");
    assert_eq!(ring, 8 << 20);
    // 12 MB announced, one byte sent: had the length been reserved at the head, the pool
    // (15 MB usable) would have shed the other stream's history to make room for it.
    let mut hog = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    hog.write_all(b"PUT /streams/hog HTTP/1.1\r\nHost: t\r\nContent-Length: 12000000\r\n\r\n")
        .unwrap();
    let memory = || metric(port, "streamfs_memory_bytes");
    wait_for("the upload's stream", HANG, || m.file("hog").exists());
    let before = memory();
    hog.write_all(b"x").unwrap();
    // Charged once the byte is in (a reservation would have come before it).
    wait_for("the upload's byte charged", HANG, || memory() > before);
    assert_eq!(xattr_u64(&hist, "ring_bytes"), ring, "the history is kept");
    drop(hog);
    wait_for("the unfinished upload's stream removed", HANG, || {
        !m.file("hog").exists()
    });
    assert_eq!(xattr_u64(&hist, "ring_bytes"), ring);
}
