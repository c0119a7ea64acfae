//! The connection of a live `GET`: the body ends cleanly when its stream is removed and the
//! connection then answers the request the client pipelined behind it (HTTP/1.1), or
//! closes (HTTP/1.0, `Connection: close`); a backlog of many writes that a client left
//! unread arrives byte for byte once it reads; a client that closes, or floods the server
//! while its body runs, releases its reader.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::client::Client;
use common::*;

/// How a client asks for a live body, and what the connection does when the body ends.
struct Ending {
    what: &'static str,
    request: &'static str,
    chunked: bool,
    /// Answers the `HEAD` pipelined behind the `GET` after the body.
    answers_next: bool,
}

#[test]
fn a_live_body_ends_at_removal_and_the_connection_goes_on_or_closes() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    std::fs::write(m.file("other"), b"12345").unwrap();
    let table = [
        Ending {
            what: "HTTP/1.1 keep-alive",
            request: "GET /streams/cam HTTP/1.1\r\nHost: t\r\n\r\n",
            chunked: true,
            answers_next: true,
        },
        Ending {
            what: "HTTP/1.1 Connection: close",
            request: "GET /streams/cam HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            chunked: true,
            answers_next: false,
        },
        Ending {
            what: "HTTP/1.0",
            request: "GET /streams/cam HTTP/1.0\r\n\r\n",
            chunked: false,
            answers_next: false,
        },
    ];
    for e in &table {
        let cam = m.file("cam");
        std::fs::write(&cam, b"replay;").unwrap();
        let mut c = Client::connect(port);
        c.send(e.request);
        c.send("HEAD /streams/other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let head = c.head();
        assert!(head.starts_with("http/1.1 200"), "{}: {head}", e.what);
        assert_eq!(
            head.contains("transfer-encoding: chunked"),
            e.chunked,
            "{}: {head}",
            e.what
        );
        wait_readers(&cam, 1);
        append(&cam, b"live");
        let want = b"replay;live";
        let got = if e.chunked {
            c.body(want.len())
        } else {
            c.fill(want.len());
            c.buf.drain(..want.len()).collect()
        };
        assert_eq!(got, want, "{}", e.what);
        std::fs::remove_file(&cam).unwrap();
        if e.chunked {
            assert_eq!(c.chunk(), b"", "{}: the last chunk", e.what);
        }
        if e.answers_next {
            let next = c.head();
            assert!(next.starts_with("http/1.1 200"), "{}: {next}", e.what);
            assert!(next.contains("stream-next-offset: 5"), "{}: {next}", e.what);
        }
        assert!(
            c.closes_within(Duration::from_secs(5)),
            "{}: no close",
            e.what
        );
        assert!(
            e.answers_next || c.buf.is_empty(),
            "{}: bytes after the body: {:?}",
            e.what,
            String::from_utf8_lossy(&c.buf)
        );
    }
}

#[test]
fn a_backlog_left_unread_arrives_byte_for_byte() {
    // A channel large enough for the whole backlog: nothing may be dropped.
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "channel_buffer_size=64M"]);
    let port = m.http_port();
    let cam = m.file("cam");
    std::fs::write(&cam, b"").unwrap();
    let mut c = Client::connect(port);
    c.send("GET /streams/cam HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.head();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    wait_readers(&cam, 1);
    // Writes of many sizes (1 byte to 100 KiB), each its own write: far more than the
    // socket takes while the client does not read.
    let mut want = Vec::new();
    let mut f = std::fs::OpenOptions::new().append(true).open(&cam).unwrap();
    for i in 0..600usize {
        let len = [1, 7, 188, 4096, 5000, 65536, 102400][i % 7];
        let w: Vec<u8> = (0..len).map(|k| (i * 31 + k) as u8).collect();
        f.write_all(&w).unwrap();
        want.extend_from_slice(&w);
    }
    assert_eq!(xattr_u64(&cam, "dropped_writes"), 0);
    let got = c.body(want.len());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the bytes differ from what was written");
}

/// A client that goes away, and how.
struct Leaving {
    what: &'static str,
    leave: fn(&mut Client),
}

#[test]
fn a_client_that_leaves_releases_its_reader() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    let cam = m.file("cam");
    std::fs::write(&cam, b"x").unwrap();
    let table = [
        Leaving {
            what: "closes while the stream is idle",
            leave: |c| c.s.shutdown(std::net::Shutdown::Both).unwrap(),
        },
        Leaving {
            what: "sends more than a request's head while its body runs",
            leave: |c| {
                let junk = vec![b'a'; 256 << 10];
                // The server closes part way; what it did not take fails here.
                let _ = c.s.write_all(&junk);
            },
        },
    ];
    for l in &table {
        let mut c = Client::connect(port);
        c.send("GET /streams/cam HTTP/1.1\r\nHost: t\r\n\r\n");
        c.head();
        wait_readers(&cam, 1);
        (l.leave)(&mut c);
        wait_for(l.what, Duration::from_secs(2), || {
            xattr_u64(&cam, "readers") == 0
        });
    }
}

/// A request the client sent before shutting down its side of the connection (what `nc -N`
/// and `socat` do at the end of their input), and what must follow.
struct HalfClosed {
    request: &'static str,
    status: &'static str,
    /// In the answer (lower-cased), or in the stream `up` afterwards.
    answer_has: &'static str,
    stream_has: Option<&'static [u8]>,
}

#[test]
fn a_request_sent_before_a_half_close_is_answered_and_carried_out() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    std::fs::write(m.file("gone"), b"x").unwrap();
    let table = [
        HalfClosed {
            request: "GET /streams HTTP/1.0\r\n\r\n",
            status: "200",
            answer_has: "\"name\":\"gone\"",
            stream_has: None,
        },
        HalfClosed {
            request: "PUT /streams/up HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
            status: "204",
            answer_has: "stream-next-offset: 3",
            stream_has: Some(b"abc"),
        },
        HalfClosed {
            request: "DELETE /streams/gone HTTP/1.1\r\nHost: t\r\n\r\n",
            status: "204",
            answer_has: "",
            stream_has: None,
        },
    ];
    for h in &table {
        let mut c = Client::connect(port);
        c.send(h.request);
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            c.closes_within(Duration::from_secs(10)),
            "{}: the answer ends",
            h.request
        );
        let answer = String::from_utf8_lossy(&c.buf).to_ascii_lowercase();
        assert_eq!(
            answer.split_whitespace().nth(1),
            Some(h.status),
            "{}: {answer}",
            h.request
        );
        assert!(answer.contains(h.answer_has), "{}: {answer}", h.request);
        if let Some(want) = h.stream_has {
            let mut r = std::fs::File::open(m.file("up@snapshot")).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, want, "{}", h.request);
        }
    }
    assert!(!m.file("gone").exists(), "the DELETE was carried out");
}
