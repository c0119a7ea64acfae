//! What `streamfs status` shows: every stream's attributes and readers read through the
//! mount (all pages of `reader_list`), as a table or as JSON (schema in the README), every
//! name escaped.

use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::control::{get_xattr, list_xattrs, path_error, streamfs_mount};
use crate::escape::escape_bytes;
use crate::json::{Json, Obj, typed};
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
    /// Streams left out: their attributes are not readable by the caller (the kernel
    /// checks a stream's mode for them, as for its data).
    pub unreadable: u64,
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
    let mut unreadable = 0;
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
            // Another user's stream this one may not read: its figures are not its to see.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => unreadable += 1,
            Err(e) => return Err(path_error(&path, &e)),
        }
    }
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Status {
        mountpoint: root,
        mount,
        streams,
        unreadable,
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
    match status.unreadable {
        0 => {}
        1 => out.push_str("1 stream not shown: you may not read it\n"),
        n => {
            let _ = writeln!(out, "{n} streams not shown: you may not read them");
        }
    }
    out
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

/// A reader as a JSON object: `label` always, `pid` and `command` when the label is
/// `pid N (COMMAND)`, every field, and every flag as `true` (`waiting` and `disconnected` are
/// always present). The shape of `reader_list[]` in `status --json` and in the gateway's
/// listings.
pub fn reader_object(label: &str, fields: Vec<(String, Json)>, flags: &[&str]) -> Json {
    let mut obj = Obj::default();
    obj.add("label", Json::Str(label.to_string()));
    if let Some((pid, command)) = pid_and_command(label) {
        obj.add("pid", Json::Num(pid.to_string()));
        obj.add("command", Json::Str(command.to_string()));
    }
    for (k, v) in fields {
        obj.add(&k, v);
    }
    for f in flags {
        obj.add(f, Json::Bool(true));
    }
    obj.add("waiting", Json::Bool(false));
    obj.add("disconnected", Json::Bool(false));
    Json::Obj(obj)
}

/// One reader line (`LABEL\tkey=value ... [flag ...]`) as a JSON object: every `key=value`
/// field typed, every bare word a flag (see [`reader_object`]).
fn reader_json(line: &str) -> Json {
    let (label, rest) = line.split_once('\t').unwrap_or((line, ""));
    let mut fields = Vec::new();
    let mut flags = Vec::new();
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some((k, v)) if !k.is_empty() => fields.push((k.to_string(), typed(v))),
            _ => flags.push(field),
        }
    }
    reader_object(label, fields, &flags)
}

/// A stream as a JSON object: `name` (and `name_hex` when it is not UTF-8), its fields, then
/// `reader_list`. The shape of `streams[]` in `status --json` and of `GET /streams`.
pub fn stream_object(name: &[u8], fields: Vec<(String, Json)>, readers: Vec<Json>) -> Json {
    let mut obj = Obj::default();
    obj.add_bytes("name", name);
    for (k, v) in fields {
        obj.add(&k, v);
    }
    obj.add("reader_list", Json::Arr(readers));
    Json::Obj(obj)
}

fn attrs_json(attrs: &[(String, String)]) -> Vec<(String, Json)> {
    attrs.iter().map(|(k, v)| (k.clone(), typed(v))).collect()
}

/// The status as one line of JSON (see the README's "`status --json` schema").
pub fn render_json(status: &Status) -> String {
    let mut mount = Obj::default();
    for (k, v) in attrs_json(&status.mount) {
        mount.add(&k, v);
    }
    let streams = status
        .streams
        .iter()
        .map(|s| {
            stream_object(
                &s.name,
                attrs_json(&s.attrs),
                s.reader_lines.iter().map(|l| reader_json(l)).collect(),
            )
        })
        .collect();
    let mut top = Obj::default();
    top.add("schema", Json::Num(JSON_SCHEMA.to_string()));
    top.add_bytes("mountpoint", status.mountpoint.as_os_str().as_bytes());
    top.add("mount", Json::Obj(mount));
    top.add("streams", Json::Arr(streams));
    top.add("unreadable", Json::Num(status.unreadable.to_string()));
    let mut out = Json::Obj(top).to_text();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Json) -> String {
        v.to_text()
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
