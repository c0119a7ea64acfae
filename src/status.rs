//! What `streamfs status` shows: every stream's attributes and readers read through the
//! mount (all pages of `reader_list`), as a table or as JSON (schema in the README), every
//! name escaped.

use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::control::{get_xattr, list_xattrs, path_error, streamfs_mount};
use crate::escape::escape_bytes;
use crate::size::HumanSize;
use crate::xattr::PREFIX;

/// Version of the `status --json` document (its `schema` field).
pub const JSON_SCHEMA: u32 = 1;

/// One stream as `status` shows it.
#[derive(Debug, Default, Clone)]
pub struct StreamStatus {
    /// The file name, as bytes (it need not be UTF-8).
    pub name: Vec<u8>,
    /// Every `user.streamfs.*` attribute but the reader pages: name without the prefix, and
    /// its text, in the daemon's order.
    pub attrs: Vec<(String, String)>,
    /// Every reader's line, from all pages of `reader_list`.
    pub reader_lines: Vec<String>,
}

impl StreamStatus {
    /// An attribute's text.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    }

    /// An attribute as a number (0 when absent or not a number).
    pub fn number(&self, name: &str) -> u64 {
        self.attr(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// A mount as `status` shows it.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub mountpoint: PathBuf,
    /// The root's `user.streamfs.*` attributes (totals, defaults, the daemon's pid, ...).
    pub mount: Vec<(String, String)>,
    pub streams: Vec<StreamStatus>,
}

/// Whether an attribute (without the prefix) is one of the reader pages.
fn is_reader_page(name: &str) -> bool {
    name == "reader_pages"
        || name == "reader_list"
        || name
            .strip_prefix("reader_list.")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every `user.streamfs.*` attribute of `path` but the reader pages.
fn read_attrs(path: &Path) -> io::Result<Vec<(String, String)>> {
    let mut attrs = Vec::new();
    for full in list_xattrs(path)? {
        let Some(name) = full.strip_prefix(PREFIX) else {
            continue;
        };
        if is_reader_page(name) {
            continue;
        }
        match get_xattr(path, &full) {
            Ok(v) => attrs.push((name.to_string(), v)),
            // Listed by an older daemon, or gone since: skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(attrs)
}

/// Every reader line of a stream: `reader_pages` pages (`reader_list`, `reader_list.1`, ...);
/// a daemon without `reader_pages` has one.
fn read_reader_lines(path: &Path) -> io::Result<Vec<String>> {
    let pages = match get_xattr(path, &format!("{PREFIX}reader_pages")) {
        Ok(v) => v.trim().parse::<usize>().unwrap_or(1).max(1),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => 1,
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    for i in 0..pages {
        let name = if i == 0 {
            format!("{PREFIX}reader_list")
        } else {
            format!("{PREFIX}reader_list.{i}")
        };
        match get_xattr(path, &name) {
            Ok(page) => lines.extend(page.lines().map(str::to_string)),
            // Readers left between reading the count and the page: the rest is gone.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}

/// Reads the mount's and every stream's attributes. `mountpoint` must be the root of a
/// streamfs mount.
pub fn collect(mountpoint: &Path) -> Result<Status, String> {
    let (root, _) = streamfs_mount(mountpoint)?;
    let mount = read_attrs(&root).map_err(|e| path_error(&root, &e))?;
    let mut streams = Vec::new();
    let dir = std::fs::read_dir(&root).map_err(|e| path_error(&root, &e))?;
    for entry in dir {
        let entry = entry.map_err(|e| path_error(&root, &e))?;
        let path = entry.path();
        let read = read_attrs(&path).and_then(|a| Ok((a, read_reader_lines(&path)?)));
        match read {
            Ok((attrs, reader_lines)) => streams.push(StreamStatus {
                name: entry.file_name().as_bytes().to_vec(),
                attrs,
                reader_lines,
            }),
            // Removed (or renamed) since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(path_error(&path, &e)),
        }
    }
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Status {
        mountpoint: root,
        mount,
        streams,
    })
}

/// Text from the daemon, as printed in the table: unchanged when it holds no control
/// character (the daemon escapes reader labels already), else escaped.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        escape_bytes(s.as_bytes()).into()
    } else {
        s.into()
    }
}

/// The status table, as printed: a line per stream, then a line per reader with its lag
/// (queued cost against its budget) and drops.
pub fn render_table(status: &Status) -> String {
    let line = |cols: [&str; 8]| {
        format!(
            "{:<20} {:>7} {:>7} {:>11} {:>11} {:>21} {:>8}  {}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
        )
    };
    let mut out = line([
        "STREAM", "READERS", "WRITERS", "RATE/s", "WRITTEN", "RING", "DROPPED", "POLICY",
    ]);
    for r in &status.streams {
        out.push_str(&line([
            &escape_bytes(&r.name),
            &r.number("readers").to_string(),
            &r.number("writers").to_string(),
            &HumanSize(r.number("write_rate")).to_string(),
            &HumanSize(r.number("bytes_written")).to_string(),
            &format!(
                "{}/{}",
                HumanSize(r.number("ring_bytes")),
                HumanSize(r.number("ring_buffer_size"))
            ),
            &r.number("dropped_writes").to_string(),
            &printable(r.attr("slow_reader").unwrap_or("")),
        ]));
        for l in &r.reader_lines {
            match l.split_once('\t') {
                Some((label, fields)) => {
                    let _ = writeln!(out, "    {}\t{}", printable(label), printable(fields));
                }
                None => {
                    let _ = writeln!(out, "    {}", printable(l));
                }
            }
        }
    }
    // The mount's own figures last, so that the table's first line stays its header.
    let mount = |name: &str| {
        status
            .mount
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let num = |name: &str| mount(name).and_then(|v| v.parse::<u64>().ok());
    if let (Some(used), Some(max)) = (num("memory"), num("max_memory")) {
        let _ = write!(out, "memory {} of {}", HumanSize(used), HumanSize(max));
        match mount("log").filter(|l| !l.is_empty()) {
            Some(log) => {
                let _ = writeln!(out, "; log: {}", printable(&log));
            }
            None => out.push('\n'),
        }
    }
    if let Some(backend) = mount("backend").filter(|b| !b.is_empty() && b != "local") {
        let _ = writeln!(out, "backend: {}", printable(&backend));
    }
    out
}

/// A JSON value, written compactly on one line.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    /// A number, already in JSON syntax.
    Num(String),
    Str(String),
    Bool(bool),
    Arr(Vec<Json>),
    Obj(Obj),
}

/// A JSON object that keeps its keys in insertion order and never repeats one.
#[derive(Debug, Clone, Default, PartialEq)]
struct Obj(Vec<(String, Json)>);

impl Obj {
    /// Adds `key` unless it is there already (the first value of a key wins).
    fn add(&mut self, key: &str, value: Json) {
        if !self.0.iter().any(|(k, _)| k == key) {
            self.0.push((key.to_string(), value));
        }
    }

    /// Adds text that may not be UTF-8: as a string (invalid bytes as U+FFFD) and, when it is
    /// not UTF-8, its exact bytes in hex under `KEY_hex`.
    fn add_bytes(&mut self, key: &str, bytes: &[u8]) {
        self.add(key, Json::Str(String::from_utf8_lossy(bytes).into_owned()));
        if std::str::from_utf8(bytes).is_err() {
            let hex = bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
            self.add(&format!("{key}_hex"), Json::Str(hex));
        }
    }
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_json_str(out, s),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(Obj(fields)) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string. Every control character (C0, DEL, C1) and the line separators U+2028 and
/// U+2029 are written as `\uXXXX`, so the document holds no byte a terminal acts on and
/// stays one line.
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Attribute text as a JSON value: a number when it is one (integer or decimal), else a
/// string.
fn typed(text: &str) -> Json {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Json::Num(n.to_string());
    }
    if let Ok(n) = t.parse::<i64>() {
        return Json::Num(n.to_string());
    }
    let decimal = {
        let digits = t.strip_prefix('-').unwrap_or(t);
        match digits.split_once('.') {
            Some((w, f)) => {
                !w.is_empty()
                    && !f.is_empty()
                    && w.bytes().all(|b| b.is_ascii_digit())
                    && f.bytes().all(|b| b.is_ascii_digit())
            }
            None => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    if decimal
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Json::Num(f.to_string());
    }
    Json::Str(t.to_string())
}

/// The `pid N (COMMAND)` form of a reader label.
fn pid_and_command(label: &str) -> Option<(u64, &str)> {
    let rest = label.strip_prefix("pid ")?;
    let (pid, command) = rest.split_once(" (")?;
    let pid = pid
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| pid.parse().ok())??;
    Some((pid, command.strip_suffix(')')?))
}

/// One reader line (`LABEL\tkey=value ... [flag ...]`) as a JSON object: `label` always,
/// `pid` and `command` when the label is `pid N (COMMAND)`, every `key=value` field (typed),
/// and every bare word as `true` (`waiting` and `disconnected` are always present).
fn reader_json(line: &str) -> Json {
    let (label, fields) = line.split_once('\t').unwrap_or((line, ""));
    let mut obj = Obj::default();
    obj.add("label", Json::Str(label.to_string()));
    if let Some((pid, command)) = pid_and_command(label) {
        obj.add("pid", Json::Num(pid.to_string()));
        obj.add("command", Json::Str(command.to_string()));
    }
    for field in fields.split_whitespace() {
        match field.split_once('=') {
            Some((k, v)) if !k.is_empty() => obj.add(k, typed(v)),
            _ => obj.add(field, Json::Bool(true)),
        }
    }
    obj.add("waiting", Json::Bool(false));
    obj.add("disconnected", Json::Bool(false));
    Json::Obj(obj)
}

fn attrs_json(obj: &mut Obj, attrs: &[(String, String)]) {
    for (k, v) in attrs {
        obj.add(k, typed(v));
    }
}

/// The status as one line of JSON (see the README's "`status --json` schema").
pub fn render_json(status: &Status) -> String {
    let mut mount = Obj::default();
    attrs_json(&mut mount, &status.mount);
    let streams = status
        .streams
        .iter()
        .map(|s| {
            let mut obj = Obj::default();
            obj.add_bytes("name", &s.name);
            attrs_json(&mut obj, &s.attrs);
            obj.add(
                "reader_list",
                Json::Arr(s.reader_lines.iter().map(|l| reader_json(l)).collect()),
            );
            Json::Obj(obj)
        })
        .collect();
    let mut top = Obj::default();
    top.add("schema", Json::Num(JSON_SCHEMA.to_string()));
    top.add_bytes("mountpoint", status.mountpoint.as_os_str().as_bytes());
    top.add("mount", Json::Obj(mount));
    top.add("streams", Json::Arr(streams));
    let mut out = String::new();
    Json::Obj(top).write(&mut out);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Json) -> String {
        let mut s = String::new();
        v.write(&mut s);
        s
    }

    #[test]
    fn values_are_typed() {
        assert_eq!(typed("42"), Json::Num("42".into()));
        assert_eq!(typed("42\n"), Json::Num("42".into()));
        assert_eq!(typed("-3"), Json::Num("-3".into()));
        assert_eq!(typed("1.5"), Json::Num("1.5".into()));
        assert_eq!(typed("007"), Json::Num("7".into()));
        assert_eq!(typed("drop"), Json::Str("drop".into()));
        assert_eq!(typed("1e5"), Json::Str("1e5".into()));
        assert_eq!(typed("."), Json::Str(".".into()));
        assert_eq!(typed(""), Json::Str("".into()));
    }

    #[test]
    fn reader_lines_become_objects() {
        let r = reader_json(
            "pid 42 (cat)\tqueued=1 budget=6291456 delivered=3 dropped_writes=0 dropped_bytes=0 \
             start=9 note=x waiting",
        );
        assert_eq!(
            json(&r),
            "{\"label\":\"pid 42 (cat)\",\"pid\":42,\"command\":\"cat\",\"queued\":1,\
             \"budget\":6291456,\"delivered\":3,\"dropped_writes\":0,\"dropped_bytes\":0,\
             \"start\":9,\"note\":\"x\",\"waiting\":true,\"disconnected\":false}"
        );
        let r = reader_json("pid 7 (a (b))\tqueued=0 disconnected");
        assert!(json(&r).contains("\"command\":\"a (b)\""), "{}", json(&r));
        assert!(json(&r).contains("\"disconnected\":true"), "{}", json(&r));
        let r = reader_json("socket 10.0.0.1:5\tqueued=0 pid=3");
        let s = json(&r);
        assert!(
            s.starts_with("{\"label\":\"socket 10.0.0.1:5\",\"queued\":0,\"pid\":3"),
            "{s}"
        );
        let r = reader_json("pid 12x (cat)\tqueued=0");
        assert!(!json(&r).contains("\"command\""), "{}", json(&r));
    }

    #[test]
    fn json_strings_hold_no_control_characters() {
        let mut o = Obj::default();
        o.add_bytes("name", b"a\nb\x1b[2J\xff\xc2\x9b\"\\");
        o.add("name", Json::Str("dup".into()));
        let s = json(&Json::Obj(o));
        assert_eq!(
            s,
            "{\"name\":\"a\\nb\\u001b[2J\u{fffd}\\u009b\\\"\\\\\",\
             \"name_hex\":\"610a621b5b324affc29b225c\"}"
        );
        assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f));
    }

    #[test]
    fn reader_pages_are_recognised() {
        for n in [
            "reader_list",
            "reader_list.1",
            "reader_list.17",
            "reader_pages",
        ] {
            assert!(is_reader_page(n), "{n}");
        }
        for n in ["reader_list.", "reader_list.x", "readers", "reader_listing"] {
            assert!(!is_reader_page(n), "{n}");
        }
    }
}
