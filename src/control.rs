//! `streamfs stop` and `streamfs status`: talk to a running daemon through its mount only
//! (extended attributes), no second socket.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::size::HumanSize;
use crate::xattr::PREFIX;

/// Reads one extended attribute as text.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<String> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
        let len =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len >= 0 {
            buf.truncate(len as usize);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 16 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return Err(e);
    }
}

fn daemon_pid(mountpoint: &Path) -> Result<i32, String> {
    let raw = get_xattr(mountpoint, &format!("{PREFIX}pid"))
        .map_err(|e| format!("{} is not a streamfs mount ({e})", mountpoint.display()))?;
    raw.trim().parse().map_err(|_| {
        format!(
            "{} answered a pid that is not a number: {raw:?}",
            mountpoint.display()
        )
    })
}

/// Asks the daemon serving `mountpoint` to end every stream and unmount, and waits until the
/// mount is gone (at most `timeout`).
pub fn stop(mountpoint: &Path, timeout: Duration) -> Result<(), String> {
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    let pid = daemon_pid(&mountpoint)?;
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(format!(
            "cannot signal the daemon (pid {pid}): {}",
            io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let alive = process_alive(pid);
        if !alive && !crate::daemon::is_mount_point(&mountpoint) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "the daemon (pid {pid}) did not finish within {} s",
        timeout.as_secs()
    ))
}

/// Whether `pid` runs: it exists and is not a zombie waiting to be reaped (the daemon is
/// reparented to init, which may reap it late).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// One stream's row in `streamfs status`.
#[derive(Debug, Default, Clone)]
pub struct StreamRow {
    pub name: String,
    pub bytes_written: u64,
    pub writes: u64,
    pub readers: u64,
    pub writers: u64,
    pub ring_bytes: u64,
    pub ring_buffer_size: u64,
    pub channel_buffer_size: u64,
    pub dropped_writes: u64,
    /// Bytes per second over the last seconds.
    pub write_rate: u64,
    pub slow_reader: String,
    /// Per reader: label and its counters line.
    pub reader_lines: Vec<String>,
}

/// Reads every stream's attributes under `mountpoint`.
pub fn collect(mountpoint: &Path) -> Result<Vec<StreamRow>, String> {
    daemon_pid(mountpoint)?;
    let mut rows = Vec::new();
    let dir =
        std::fs::read_dir(mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    for entry in dir.flatten() {
        let path = entry.path();
        let num = |k: &str| -> u64 {
            get_xattr(&path, &format!("{PREFIX}{k}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        rows.push(StreamRow {
            name: entry.file_name().to_string_lossy().into_owned(),
            bytes_written: num("bytes_written"),
            writes: num("writes"),
            readers: num("readers"),
            writers: num("writers"),
            ring_bytes: num("ring_bytes"),
            ring_buffer_size: num("ring_buffer_size"),
            channel_buffer_size: num("channel_buffer_size"),
            dropped_writes: num("dropped_writes"),
            write_rate: num("write_rate"),
            slow_reader: get_xattr(&path, &format!("{PREFIX}slow_reader")).unwrap_or_default(),
            reader_lines: get_xattr(&path, &format!("{PREFIX}reader_list"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect(),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// The status table, as printed: a line per stream, then a line per reader with its lag
/// (queued cost against its budget) and drops.
pub fn render_table(rows: &[StreamRow]) -> String {
    let line = |cols: [&str; 8]| {
        format!(
            "{:<20} {:>7} {:>7} {:>11} {:>11} {:>21} {:>8}  {}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
        )
    };
    let mut out = line([
        "STREAM", "READERS", "WRITERS", "RATE/s", "WRITTEN", "RING", "DROPPED", "POLICY",
    ]);
    for r in rows {
        out.push_str(&line([
            &r.name,
            &r.readers.to_string(),
            &r.writers.to_string(),
            &HumanSize(r.write_rate).to_string(),
            &HumanSize(r.bytes_written).to_string(),
            &format!(
                "{}/{}",
                HumanSize(r.ring_bytes),
                HumanSize(r.ring_buffer_size)
            ),
            &r.dropped_writes.to_string(),
            &r.slow_reader,
        ]));
        for l in &r.reader_lines {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The status as JSON, for scripts.
pub fn render_json(rows: &[StreamRow]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let readers: Vec<String> = r.reader_lines.iter().map(|l| json_str(l)).collect();
            format!(
                "{{\"name\":{},\"bytes_written\":{},\"writes\":{},\"readers\":{},\"writers\":{},\"write_rate\":{},\"ring_bytes\":{},\"ring_buffer_size\":{},\"channel_buffer_size\":{},\"dropped_writes\":{},\"slow_reader\":{},\"reader_list\":[{}]}}",
                json_str(&r.name),
                r.bytes_written,
                r.writes,
                r.readers,
                r.writers,
                r.write_rate,
                r.ring_bytes,
                r.ring_buffer_size,
                r.channel_buffer_size,
                r.dropped_writes,
                json_str(&r.slow_reader),
                readers.join(",")
            )
        })
        .collect();
    format!("{{\"streams\":[{}]}}\n", items.join(","))
}
