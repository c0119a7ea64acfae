//! What the gateway says in its headers and how it limits connections: HEAD statistics,
//! the per-stream Content-Type set with setfattr, CORS for browsers (preflight, exposed
//! headers), and the connection limit.

mod common;

use std::io::Write;
use std::time::Duration;

use common::client::Client;
use common::*;

/// The whole answer to `request`, lowercased.
fn exchange(port: u16, request: &str) -> String {
    http_raw(port, request.as_bytes()).1.to_lowercase()
}

fn head(port: u16, path: &str, headers: &str) -> String {
    exchange(
        port,
        &format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"),
    )
}

#[test]
fn head_tells_the_statistics_and_setfattr_sets_the_content_type() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "ring_buffer_size=1KB"]);
    let port = m.http_port();
    let cam = m.file("cam1");
    // The ring keeps the newest write, not the 3000 bytes before it.
    let mut w = std::fs::File::create(&cam).unwrap();
    w.write_all(&[b'a'; 3000]).unwrap();
    w.write_all(&[b'b'; 100]).unwrap();
    drop(w);
    // The kernel sends FUSE's release after close(2) has returned: the writer is gone soon
    // after, not at once.
    wait_for("the writer's release", Duration::from_secs(5), || {
        head(port, "/streams/cam1", "").contains("stream-writers: 0")
    });
    let h = head(port, "/streams/cam1", "");
    for want in [
        "http/1.1 200",
        "stream-next-offset: 3100",
        "stream-ring-start: 3000",
        "stream-readers: 0",
        "stream-writers: 0",
        "content-type: application/octet-stream",
        "cache-control: no-store",
    ] {
        assert!(h.contains(want), "{want} in {h}");
    }
    let (code, _, err) = sh(&format!(
        "setfattr -n user.streamfs.content_type -v video/mp2t '{}'",
        cam.display()
    ));
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = sh(&format!(
        "setfattr -n user.streamfs.content_type -v 'not a type' '{}'",
        cam.display()
    ));
    assert_ne!(code, 0, "a value that is no media type is refused");
    assert_eq!(
        streamfs::control::get_xattr(&cam, "user.streamfs.content_type").unwrap(),
        "video/mp2t"
    );
    let got = exchange(
        port,
        "GET /streams/cam1?from=start,snapshot HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(got.contains("content-type: video/mp2t"), "{got}");
    assert!(got.contains("stream-offset: 3000"), "{got}");
    assert!(
        got.contains(&format!("\r\n{}\r\n0\r\n\r\n", "b".repeat(100))),
        "the ring's last write, then the end: {got}"
    );
}

/// The head of the answer to `GET path` (lower-cased), read off the socket: a live body
/// would not end.
fn get_head(port: u16, path: &str) -> String {
    let mut c = Client::connect(port);
    c.send(&format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    ));
    c.head()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn head_answers_what_get_of_the_same_url_would() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "-o", "ring_buffer_size=1KB"]);
    let port = m.http_port();
    let cam = m.file("cam1");
    let mut w = std::fs::File::create(&cam).unwrap();
    // 3000 bytes leave the ring (it keeps the newest write): offset 0 is too old.
    w.write_all(&[b'a'; 3000]).unwrap();
    w.write_all(b"bb\n").unwrap();
    drop(w);
    for (path, status) in [
        ("/streams/cam1", "200"),
        ("/streams/cam1@snapshot", "200"),
        ("/streams/cam1@live", "200"),
        ("/streams/cam1?from=3000", "200"),
        ("/streams/cam1?format=sse", "200"),
        ("/streams/cam1?from=0", "410"),
        ("/streams/cam1?from=99999999999999999999", "400"),
        ("/streams/cam1?from=soon", "400"),
        ("/streams/cam1@live?from=start", "400"),
        ("/streams/nothere", "404"),
        ("/streams/nothere@snapshot", "404"),
        ("/api/v1/files?path=/cam1&stream=true", "200"),
        ("/api/v1/files?path=/cam1", "400"),
    ] {
        let get = get_head(port, path);
        let head = head(port, path, "");
        assert_eq!(
            get.split_whitespace().nth(1),
            Some(status),
            "GET {path}: {get}"
        );
        assert_eq!(
            head.split_whitespace().nth(1),
            Some(status),
            "HEAD {path}: {head}"
        );
        if status == "200" {
            for name in [
                "content-type",
                "stream-offset",
                "cache-control",
                "x-content-type-options",
            ] {
                assert_eq!(
                    header(&head, name),
                    header(&get, name),
                    "{name} of {path}: {head}"
                );
                assert!(header(&head, name).is_some(), "{name} of {path}: {head}");
            }
        }
    }
}

#[test]
fn cors_answers_preflights_and_exposes_the_stream_headers() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "--http-cors", "https://a.example"]);
    let port = m.http_port();
    std::fs::write(m.file("cam1"), b"x").unwrap();
    let pre = exchange(
        port,
        "OPTIONS /streams/cam1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Origin: https://a.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
    );
    for want in [
        "http/1.1 204",
        "access-control-allow-origin: https://a.example",
        "access-control-allow-methods: get, head, put, post, delete, options",
        "access-control-allow-headers: authorization, content-type, last-event-id",
    ] {
        assert!(pre.contains(want), "{want} in {pre}");
    }
    let h = head(port, "/streams/cam1", "Origin: https://a.example\r\n");
    assert!(
        h.contains("access-control-allow-origin: https://a.example"),
        "{h}"
    );
    assert!(
        h.contains("access-control-expose-headers: stream-offset, stream-next-offset"),
        "{h}"
    );
    // Another origin gets no grant, not even `null` (the origin of sandboxed frames and
    // `data:` pages, which a browser would let through).
    for origin in ["https://b.example", "null"] {
        let other = head(port, "/streams/cam1", &format!("Origin: {origin}\r\n"));
        assert!(other.contains("http/1.1 200"), "{other}");
        assert!(!other.contains("access-control-allow-origin"), "{other}");
        assert!(!other.contains("access-control-expose-headers"), "{other}");
        assert!(other.contains("vary: origin"), "{other}");
    }
    // Without --http-cors nothing is allowed across origins.
    let plain = Mount::new(&["--http", "127.0.0.1:0"]);
    let h = head(
        plain.http_port(),
        "/streams",
        "Origin: https://a.example\r\n",
    );
    assert!(!h.contains("access-control-allow-origin"), "{h}");
}

#[test]
fn connections_over_the_limit_are_refused_and_the_others_go_on() {
    // The fstab form: -o http=ADDR and the other keys.
    let m = Mount::new(&["-o", "http=127.0.0.1:0,http_max_connections=2"]);
    let port = m.http_port();
    let cam = m.file("cam1");
    std::fs::write(&cam, b"").unwrap();
    let mut readers: Vec<Proc> = (0..2)
        .map(|_| {
            Proc::sh(&format!(
                "exec curl -sN http://127.0.0.1:{port}/streams/cam1"
            ))
        })
        .collect();
    wait_readers(&cam, 2);
    let third = exchange(port, "GET /streams HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(third.starts_with("http/1.1 503"), "{third}");
    std::fs::write(&cam, b"still served\n").unwrap();
    for r in &mut readers {
        assert_eq!(
            r.read_at_least(13, Duration::from_secs(10)),
            b"still served\n"
        );
    }
}
