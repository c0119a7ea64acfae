//! What the gateway shows about the namespace: the JSON listing of streams and readers (the
//! fields of `streamfs status --json`), Prometheus metrics and the live status page. Pure
//! rendering of one [`Snapshot`]; knows nothing of the server, its connections or FUSE.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::escape::escape_bytes;
use crate::json::{Json, typed};
use crate::namespace::Namespace;
use crate::snapshot::{ReaderSnapshot, Snapshot, StreamSnapshot, Value};
use crate::status::{reader_object, stream_object};
use crate::stream::Stream;

/// Counters of the gateway itself, kept by the server and shown by `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Requests answered since start.
    pub requests: AtomicU64,
}

/// A field as JSON, by the rule of the `status --json` schema (a setting whose text is a
/// decimal number is a number there too), so that both documents agree value for value.
fn json_value(v: Value) -> Json {
    match v {
        Value::Num(n) => Json::num(n),
        Value::Text(t) => typed(&t),
    }
}

/// One reader as `status --json` shows it.
fn reader_json(r: &ReaderSnapshot) -> Json {
    let fields = r
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Json::num(v)))
        .collect();
    let flags: &[&str] = if r.disconnected() {
        &["disconnected"]
    } else if r.waiting() {
        &["waiting"]
    } else {
        &[]
    };
    reader_object(&r.label, fields, flags)
}

/// One stream as `status --json` shows it in `streams[]`.
fn stream_json(s: &StreamSnapshot) -> Json {
    let fields = s
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json_value(v)))
        .collect();
    stream_object(&s.name, fields, s.readers.iter().map(reader_json).collect())
}

/// Where the daemon logs, as the mount's `log` attribute says.
fn log() -> String {
    crate::daemon::log_destination().unwrap_or_default()
}

/// Whether the requester may see a stream's figures and readers (may read it).
pub type Shown<'a> = &'a dyn Fn(&Stream) -> bool;

/// `GET /streams`: a JSON array of every stream `shown` lets through (an array even for one
/// or none), sorted by name, each object with the fields of `streams[]` in `streamfs status
/// --json`.
pub fn streams_json(ns: &Namespace, shown: Shown) -> String {
    let snap = Snapshot::showing(ns, log(), shown);
    let mut out = Json::Arr(snap.streams.iter().map(stream_json).collect()).to_text();
    out.push('\n');
    out
}

/// `GET /streams/NAME/readers`: a JSON array of the stream's readers, each object with the
/// fields of `reader_list[]` in `streamfs status --json`.
pub fn readers_json(name: &[u8], stream: &Stream) -> String {
    let snap = StreamSnapshot::of(name, stream);
    let mut out = Json::Arr(snap.readers.iter().map(reader_json).collect()).to_text();
    out.push('\n');
    out
}

/// A label value of the text exposition format: the name as `status` prints it (escaped by
/// [`escape_bytes`], so any bytes map to distinct printable UTF-8), then the format's own
/// escapes of backslash and quote (a newline is escaped already).
fn label_value(name: &[u8]) -> String {
    let mut out = String::new();
    for c in escape_bytes(name).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A metric family: its name, type and help line.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family { name, kind, help }
}

/// Per-stream families, each with the figure it shows.
type StreamFigure = fn(&StreamSnapshot) -> u64;
const STREAM_FAMILIES: &[(Family, StreamFigure)] = &[
    (
        family(
            "streamfs_stream_bytes_written_total",
            "counter",
            "Bytes written to the stream.",
        ),
        |s| s.stats.written_bytes,
    ),
    (
        family(
            "streamfs_stream_writes_total",
            "counter",
            "Writes applied to the stream.",
        ),
        |s| s.stats.writes,
    ),
    (
        family(
            "streamfs_stream_readers",
            "gauge",
            "Readers receiving the stream (mount and HTTP).",
        ),
        |s| s.stats.readers as u64,
    ),
    (
        family(
            "streamfs_stream_writers",
            "gauge",
            "Writers open on the stream (mount and HTTP uploads).",
        ),
        |s| s.stats.writers as u64,
    ),
    (
        family(
            "streamfs_stream_dropped_writes_total",
            "counter",
            "Writes dropped for slow readers, summed over readers.",
        ),
        |s| s.stats.dropped_writes,
    ),
    (
        family(
            "streamfs_stream_dropped_bytes_total",
            "counter",
            "Bytes of the writes dropped for slow readers, summed over readers.",
        ),
        |s| s.stats.dropped_bytes,
    ),
    (
        family(
            "streamfs_stream_ring_bytes",
            "gauge",
            "Bytes of history kept for late joiners.",
        ),
        |s| s.stats.ring_bytes,
    ),
    (
        family(
            "streamfs_stream_ring_buffer_size_bytes",
            "gauge",
            "The ring's budget (ring_buffer_size).",
        ),
        |s| s.stats.budgets.ring,
    ),
    (
        family(
            "streamfs_stream_parked_reads",
            "gauge",
            "Reads waiting for data.",
        ),
        StreamSnapshot::parked_reads,
    ),
    (
        family(
            "streamfs_stream_blocked_writes",
            "gauge",
            "Writes waiting for room (slow_reader=block).",
        ),
        |s| s.stats.blocked_writes as u64,
    ),
    (
        family(
            "streamfs_stream_write_rate_bytes",
            "gauge",
            "Bytes per second written over the last seconds.",
        ),
        |s| s.stats.write_rate,
    ),
];

/// Families of the whole mount: sums over the streams that exist now (so they fall when a
/// stream is removed, and are gauges), and the memory pool.
type MountFigure = fn(&Snapshot) -> u64;
const MOUNT_FAMILIES: &[(Family, MountFigure)] = &[
    (
        family("streamfs_streams", "gauge", "Streams that exist now."),
        |s| s.mount.streams,
    ),
    (
        family(
            "streamfs_bytes_written",
            "gauge",
            "Bytes written to the streams that exist now.",
        ),
        |s| s.mount.bytes_written,
    ),
    (
        family(
            "streamfs_writes",
            "gauge",
            "Writes applied to the streams that exist now.",
        ),
        |s| s.mount.writes,
    ),
    (
        family("streamfs_readers", "gauge", "Readers of all streams."),
        |s| s.mount.readers,
    ),
    (
        family("streamfs_writers", "gauge", "Writers of all streams."),
        |s| s.mount.writers,
    ),
    (
        family(
            "streamfs_dropped_writes",
            "gauge",
            "Writes dropped for slow readers, over the streams that exist now.",
        ),
        |s| s.mount.dropped_writes,
    ),
    (
        family(
            "streamfs_dropped_bytes",
            "gauge",
            "Bytes dropped for slow readers, over the streams that exist now.",
        ),
        |s| s.mount.dropped_bytes,
    ),
    (
        family(
            "streamfs_ring_bytes",
            "gauge",
            "Bytes of history in all rings.",
        ),
        |s| s.mount.ring_bytes,
    ),
    (
        family(
            "streamfs_parked_reads",
            "gauge",
            "Reads waiting for data, all streams.",
        ),
        |s| s.mount.parked_reads,
    ),
    (
        family(
            "streamfs_blocked_writes",
            "gauge",
            "Writes waiting for room, all streams.",
        ),
        |s| s.mount.blocked_writes,
    ),
    (
        family(
            "streamfs_memory_bytes",
            "gauge",
            "Memory charged to the pool (stream data and bookkeeping).",
        ),
        |s| s.mount.memory,
    ),
    (
        family(
            "streamfs_max_memory_bytes",
            "gauge",
            "The memory limit (max_memory).",
        ),
        |s| s.mount.max_memory,
    ),
    (
        family(
            "streamfs_shed_bytes_total",
            "counter",
            "Bytes shed to stay within max_memory.",
        ),
        |s| s.mount.shed_bytes,
    ),
];

fn header(out: &mut String, f: &Family) {
    let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
}

/// `GET /metrics`: Prometheus text exposition format (version 0.0.4): per stream (label
/// `stream`, the streams `shown` lets through), for the whole mount, and the gateway's
/// connections.
pub fn metrics(ns: &Namespace, http: &HttpStats, shown: Shown) -> String {
    let snap = Snapshot::showing(ns, log(), shown);
    let labels: Vec<String> = snap.streams.iter().map(|s| label_value(&s.name)).collect();
    let mut out = String::with_capacity(1024 + snap.streams.len() * 1024);
    for (f, figure) in STREAM_FAMILIES {
        header(&mut out, f);
        for (s, label) in snap.streams.iter().zip(&labels) {
            let _ = writeln!(out, "{}{{stream=\"{label}\"}} {}", f.name, figure(s));
        }
    }
    for (f, figure) in MOUNT_FAMILIES {
        header(&mut out, f);
        let _ = writeln!(out, "{} {}", f.name, figure(&snap));
    }
    let gateway = [
        (
            family(
                "streamfs_http_connections",
                "gauge",
                "HTTP connections open now.",
            ),
            &http.connections,
        ),
        (
            family(
                "streamfs_http_connections_accepted_total",
                "counter",
                "HTTP connections accepted since start.",
            ),
            &http.accepted,
        ),
        (
            family(
                "streamfs_http_requests_total",
                "counter",
                "HTTP requests answered since start.",
            ),
            &http.requests,
        ),
    ];
    for (f, v) in &gateway {
        header(&mut out, f);
        let _ = writeln!(out, "{} {}", f.name, v.load(Ordering::Relaxed));
    }
    out
}

/// The media type of [`metrics`]'s answer.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /`: the status page, one HTML file served from the binary (`page.html`): it polls
/// `streams` every second and draws each stream's readers, rate, ring fill and drops.
pub fn page() -> &'static str {
    include_str!("page.html")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Budgets, Meta};
    use std::time::SystemTime;

    fn ns_with(names: &[&[u8]]) -> Namespace {
        let ns = Namespace::new(Budgets::new(1 << 20, 1 << 20));
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            crtime: SystemTime::now(),
            ctime: SystemTime::now(),
        };
        for n in names {
            ns.create(n, meta).unwrap();
        }
        ns
    }

    #[test]
    fn listings_are_arrays_for_none_and_one() {
        assert_eq!(streams_json(&ns_with(&[]), &|_| true), "[]\n");
        let ns = ns_with(&[b"cam1"]);
        let s = streams_json(&ns, &|_| true);
        assert!(
            s.starts_with("[{\"name\":\"cam1\",\"bytes_written\":0,"),
            "{s}"
        );
        assert!(s.ends_with(",\"reader_list\":[]}]\n"), "{s}");
        let stream = ns.lookup(b"cam1").unwrap();
        assert_eq!(readers_json(b"cam1", &stream), "[]\n");
        let _r = stream.open_reader("http 127.0.0.1:4000".into()).unwrap();
        let r = readers_json(b"cam1", &stream);
        assert!(
            r.starts_with("[{\"label\":\"http 127.0.0.1:4000\",\"queued\":0,"),
            "{r}"
        );
    }

    #[test]
    fn label_values_are_escaped_and_distinct() {
        let cases: &[(&[u8], &str)] = &[
            (b"cam1", "cam1"),
            (b"a\"b", "a\\\"b"),
            (b"a\\b", "a\\\\\\\\b"),
            (b"a\nb", "a\\\\nb"),
            (b"\xff", "\\\\xff"),
            (b"<x>", "<x>"),
        ];
        for (name, want) in cases {
            assert_eq!(label_value(name), *want, "{name:?}");
        }
    }

    #[test]
    fn every_family_has_help_and_type() {
        let ns = ns_with(&[b"a", b"b"]);
        let m = metrics(&ns, &HttpStats::default(), &|_| true);
        let families = STREAM_FAMILIES.iter().map(|(f, _)| f);
        for f in families.chain(MOUNT_FAMILIES.iter().map(|(f, _)| f)) {
            assert!(m.contains(&format!("# TYPE {} {}\n", f.name, f.kind)));
            assert!(m.contains(&format!("# HELP {} ", f.name)));
        }
        assert!(
            m.contains("streamfs_stream_readers{stream=\"b\"} 0\n"),
            "{m}"
        );
        assert!(m.contains("streamfs_http_connections 0\n"), "{m}");
    }
}
