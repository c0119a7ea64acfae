//! What the gateway shows about a live mount: `GET /streams` agrees with `streamfs status
//! --json` field for field (mount and HTTP readers alike), `GET /streams/NAME/readers` lists
//! both kinds, and `GET /metrics` is strict Prometheus text whose values move when a writer
//! writes and a reader drops.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(20);

/// `curl -s URL` with the status appended on a last line.
fn curl(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8(out.stdout).expect("UTF-8 answer");
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// A Python script given two JSON documents on argv: exits 0 when the second (an array of
/// streams) equals the first's `streams` once `write_rate` (a rate over the last seconds,
/// which moves between two reads) is set aside, else prints the difference.
const SAME_STREAMS: &str = r#"
import json, sys
status = json.loads(sys.argv[1])
listing = json.loads(sys.argv[2])
assert isinstance(listing, list), "not an array"
def strip(s):
    return {k: v for k, v in s.items() if k != "write_rate"}
a = [strip(s) for s in status["streams"]]
b = [strip(s) for s in listing]
assert len(a) == 3, a
if a != b:
    for x, y in zip(a, b):
        if x != y:
            keys = sorted(set(x) | set(y))
            print({k: (x.get(k), y.get(k)) for k in keys if x.get(k) != y.get(k)})
    print(len(a), "streams in status,", len(b), "in the listing")
    sys.exit(1)
"#;

fn status_json(m: &Mount) -> String {
    let out = run_ok(Command::new(bin()).args(["status", "--json"]).arg(&m.path));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_listing_has_the_fields_of_status_json_for_mount_and_http_readers() {
    let m = Mount::new(&["--http", "127.0.0.1:0"]);
    let port = m.http_port();
    assert_eq!(curl(port, "/streams"), (200, "[]\n".to_string()));

    // A stream with a writer, a mount reader and an HTTP reader; one whose name needs
    // escaping; one whose name is not UTF-8.
    std::fs::write(m.file("cam1"), b"replayed").unwrap();
    std::fs::write(m.file("q\"<b>\\"), b"x").unwrap();
    let odd = m.path.join(std::ffi::OsStr::from_bytes(b"raw\xff"));
    std::fs::write(&odd, b"y").unwrap();
    let mut mount_reader = Proc::cat(&m.file("cam1"));
    let mut http_reader = Proc::sh(&format!(
        "exec curl -sN http://127.0.0.1:{port}/streams/cam1"
    ));
    mount_reader.read_at_least(8, HANG);
    http_reader.read_at_least(8, HANG);
    wait_readers(&m.file("cam1"), 2);

    let (code, readers) = curl(port, "/streams/cam1/readers");
    assert_eq!(code, 200, "{readers}");
    assert!(readers.starts_with("[{\"label\":"), "{readers}");
    assert!(readers.contains("\"command\":\"cat\""), "{readers}");
    assert!(readers.contains("\"label\":\"http 127.0.0.1:"), "{readers}");
    assert_eq!(curl(port, "/streams/nothere/readers").0, 404);

    // Both documents taken while nothing moves: equal once they are read at a quiet moment.
    let mut last = String::new();
    wait_for("the listing to equal status --json", HANG, || {
        let status = status_json(&m);
        let (code, listing) = curl(port, "/streams");
        assert_eq!(code, 200);
        let out = Command::new("python3")
            .args(["-c", SAME_STREAMS, &status, &listing])
            .output()
            .unwrap();
        last = format!(
            "{}{}\nstatus: {status}\nlisting: {listing}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    });
    let (_, listing) = curl(port, "/streams");
    assert!(
        listing.contains("\"name_hex\":\"726177ff\""),
        "{listing}\n{last}"
    );
    assert!(listing.contains("\"name\":\"q\\\"<b>\\\\\""), "{listing}");
}

/// One sample of the exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// A label set `{k="v",...}`: only `\\`, `\"` and `\n` escapes are allowed in values.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (key, r) = rest.split_once("=\"").ok_or("no =\"")?;
        if !is_metric_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A strict reader of the text format (0.0.4): every sample's family has one TYPE line
/// before it, at most one HELP, known types, counters named `_total`, no series twice.
fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut samples = Vec::new();
    if !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    for line in text.lines() {
        let bad = |why: &str| format!("{why}: {line:?}");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| bad("HELP without text"))?;
            if !is_metric_name(name) || !helps.insert(name.to_string()) {
                return Err(bad("bad or repeated HELP"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| bad("TYPE without type"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(bad("unknown type"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(bad("a counter not named _total"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(bad("repeated TYPE"));
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(bad("stray comment or blank line"));
        } else {
            let cut = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
            let name = &line[..cut];
            let (labels, rest) = if line[cut..].starts_with('{') {
                parse_labels(&line[cut..]).map_err(|e| bad(&e))?
            } else {
                (BTreeMap::new(), &line[cut..])
            };
            let value: f64 = rest
                .strip_prefix(' ')
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("bad value"))?;
            if !types.contains_key(name) {
                return Err(bad("a sample before its TYPE"));
            }
            if !seen.insert(format!("{name}{labels:?}")) {
                return Err(bad("a series twice"));
            }
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    Ok(samples)
}

#[test]
fn the_strict_parser_refuses_what_prometheus_refuses() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{s=\"q\\\"\\\\\\n\"} 1\n";
    let s = parse_metrics(ok).unwrap();
    assert_eq!(s[0].labels["s"], "q\"\\\n");
    for bad in [
        "a 1\n",
        "# TYPE a counter\na 1\n",
        "# TYPE a gauge\na{s=\"\\x\"} 1\n",
        "# TYPE a gauge\na{s=\"x} 1\n",
        "# TYPE a gauge\na 1\na 2\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a gauge\na 1",
    ] {
        assert!(parse_metrics(bad).is_err(), "{bad:?}");
    }
}

/// The value of one series, by metric name and `stream` label (None: no labels).
fn value(samples: &[Sample], name: &str, stream: Option<&str>) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get("stream").map(String::as_str) == stream)
        .unwrap_or_else(|| panic!("no {name} {stream:?}"))
        .value
}

fn scrape(port: u16) -> Vec<Sample> {
    let (code, text) = curl(port, "/metrics");
    assert_eq!(code, 200);
    parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn metrics_parse_strictly_and_move_with_writes_and_drops() {
    let m = Mount::new(&[
        "--http",
        "127.0.0.1:0",
        "-o",
        "channel_buffer_size=64K,ring_buffer_size=0",
    ]);
    let port = m.http_port();
    let before = scrape(port);
    assert_eq!(value(&before, "streamfs_streams", None), 0.0);

    let name = "m \"1\"\\";
    let label = name.replace('\\', "\\\\");
    let path = m.file(name);
    std::fs::File::create(&path).unwrap();
    let mut stopped = Proc::cat(&path);
    wait_readers(&path, 1);
    kill(stopped.child.id(), libc::SIGSTOP);
    // 1 MiB in 4 KiB writes to a reader that reads nothing: its 64 KiB budget overflows.
    let (code, _, err) = sh(&format!(
        "head -c 1048576 /dev/zero | dd of='{}' bs=4096 status=none",
        path.display()
    ));
    assert_eq!(code, 0, "{err}");
    let s = scrape(port);
    let l = Some(label.as_str());
    assert_eq!(
        value(&s, "streamfs_stream_bytes_written_total", l),
        1048576.0
    );
    assert_eq!(value(&s, "streamfs_stream_writes_total", l), 256.0);
    assert_eq!(value(&s, "streamfs_stream_readers", l), 1.0);
    let dropped = value(&s, "streamfs_stream_dropped_writes_total", l);
    assert!(dropped > 200.0, "{dropped}");
    assert_eq!(
        value(&s, "streamfs_stream_dropped_bytes_total", l),
        dropped * 4096.0
    );
    assert_eq!(value(&s, "streamfs_dropped_writes", None), dropped);
    assert_eq!(value(&s, "streamfs_bytes_written", None), 1048576.0);
    assert_eq!(value(&s, "streamfs_streams", None), 1.0);
    // The scrape itself is a connection, and earlier ones were counted.
    assert!(value(&s, "streamfs_http_connections", None) >= 1.0);
    assert!(value(&s, "streamfs_http_requests_total", None) >= 2.0);

    // The reader resumes: it reads what it kept, then waits in a parked read.
    kill(stopped.child.id(), libc::SIGCONT);
    wait_for("the reader's parked read in the metrics", HANG, || {
        value(&scrape(port), "streamfs_stream_parked_reads", l) == 1.0
    });
    assert_eq!(value(&scrape(port), "streamfs_parked_reads", None), 1.0);
    let _ = stopped.drain();
}
