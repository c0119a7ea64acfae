//! Operating streams: statistics as extended attributes, `streamfs status`, drop logging,
//! the slow_reader and on_writer_close policies and per-stream overrides. Real mounts.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const HANG: Duration = Duration::from_secs(20);

fn getfattr_dump(path: &std::path::Path) -> String {
    let (code, out, err) = sh(&format!("getfattr -d -m - '{}'", path.display()));
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn stream_and_root_attributes_are_plain_decimal_text() {
    let m = Mount::new(&[]);
    let s = m.file("cam1");
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s)
        .unwrap();
    w.write_all(b"hello").unwrap();
    w.write_all(b" world").unwrap();
    let _r = Proc::cat(&s);
    wait_readers(&s, 1);
    let dump = getfattr_dump(&s);
    for (name, value) in [
        ("bytes_written", "11"),
        ("writes", "2"),
        ("readers", "1"),
        ("writers", "1"),
        ("ring_bytes", "11"),
        ("ring_start", "0"),
        ("dropped_writes", "0"),
        ("dropped_bytes", "0"),
    ] {
        let line = format!("user.streamfs.{name}=\"{value}\"");
        assert!(dump.contains(&line), "{line} missing in:\n{dump}");
    }
    let root = getfattr_dump(&m.path);
    for line in [
        "user.streamfs.streams=\"1\"",
        "user.streamfs.readers=\"1\"",
        "user.streamfs.writers=\"1\"",
        "user.streamfs.bytes_written=\"11\"",
        "user.streamfs.dropped_writes=\"0\"",
    ] {
        assert!(root.contains(line), "{line} missing in:\n{root}");
    }
}

#[test]
fn status_prints_a_table_and_json() {
    let m = Mount::new(&[]);
    let s = m.file("cam1");
    std::fs::write(&s, vec![1u8; 3000]).unwrap();
    let _r = Proc::cat(&s);
    wait_readers(&s, 1);
    let out = Command::new(bin())
        .arg("status")
        .arg(&m.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("cam1"))
        .expect("a row for cam1");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["1", "0"], "{table}");
    assert!(row.contains("2.9 KiB"), "human sizes: {table}");
    assert!(
        table.contains("queued=") && table.contains("(cat)"),
        "{table}"
    );
    let out = Command::new(bin())
        .args(["status", "--json"])
        .arg(&m.path)
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.contains("\"name\":\"cam1\""), "{json}");
    assert!(json.contains("\"bytes_written\":3000"), "{json}");
    assert!(json.contains("\"readers\":1"), "{json}");
    // --watch refreshes until stopped.
    let mut watch = Proc::sh(&format!(
        "exec {} status --watch '{}'",
        bin(),
        m.path.display()
    ));
    let first = watch.read_at_least(1, HANG).len();
    assert!(first > 0);
    assert!(watch.child.try_wait().unwrap().is_none(), "--watch exited");
    let out = Command::new(bin())
        .arg("status")
        .arg(m.dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "status of a non-streamfs directory succeeded"
    );
}

#[test]
fn write_rate_is_reported() {
    let m = Mount::new(&[]);
    let s = m.file("rate");
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s)
        .unwrap();
    let start = Instant::now();
    // Write for a little over two seconds so complete seconds exist in the window.
    while start.elapsed() < Duration::from_millis(2200) {
        w.write_all(&[0u8; 10_000]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(xattr_u64(&s, "write_rate") > 0);
}

#[test]
fn drops_are_logged_with_the_reader_identity_and_closes_with_totals() {
    let m = Mount::new(&["-o", "channel_buffer_size=64KB,ring_buffer_size=0"]);
    let s = m.file("cam");
    std::fs::write(&s, b"").unwrap();
    let mut slow = Proc::cat(&s);
    wait_readers(&s, 1);
    let pid = slow.child.id();
    kill(pid, libc::SIGSTOP);
    let mut w = std::fs::OpenOptions::new().append(true).open(&s).unwrap();
    for _ in 0..100 {
        w.write_all(&[0u8; 8192]).unwrap();
    }
    assert!(xattr_u64(&s, "dropped_writes") > 0);
    kill(pid, libc::SIGCONT);
    drop(w);
    std::fs::remove_file(&s).unwrap();
    slow.wait(HANG);
    let needle = format!("reader pid {pid} (cat): dropped");
    wait_for("the drop line", HANG, || m.log_text().contains(&needle));
    let log = m.log_text();
    // Rate-limited: far fewer lines than drops.
    let lines = log.matches(&needle).count();
    assert!(lines <= 3, "{lines} drop lines for one reader:\n{log}");
    assert!(
        log.contains(&format!("pid {pid} (cat) opened stream")),
        "{log}"
    );
    wait_for("the close line", HANG, || {
        m.log_text()
            .contains(&format!("reader pid {pid} (cat) closed"))
    });
}

#[test]
fn slow_reader_block_is_lossless_and_the_blocked_writer_stays_killable() {
    let m = Mount::new(&[
        "-o",
        "slow_reader=block,channel_buffer_size=256KB,ring_buffer_size=0",
    ]);
    let s = m.file("rec");
    std::fs::write(&s, b"").unwrap();
    let out = m.dir.path().join("out");
    let mut rec = Proc::sh(&format!("exec cat '{}' > '{}'", s.display(), out.display()));
    wait_readers(&s, 1);
    kill(rec.child.id(), libc::SIGSTOP);
    let src = m.dir.path().join("in");
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let mut writer = Proc::sh(&format!("cat '{}' > '{}'", src.display(), s.display()));
    // The writer waits for the stopped reader instead of dropping.
    wait_for("a blocked write", HANG, || {
        xattr_u64(&s, "blocked_writes") > 0
    });
    assert!(writer.child.try_wait().unwrap().is_none());
    assert_eq!(xattr_u64(&s, "dropped_writes"), 0);
    kill(rec.child.id(), libc::SIGCONT);
    assert!(writer.wait(HANG).success());
    std::fs::remove_file(&s).unwrap();
    assert!(rec.wait(HANG).success());
    assert!(
        std::fs::read(&out).unwrap() == data,
        "lossless recording differs"
    );

    // A writer blocked by a stopped reader dies of SIGKILL at once.
    std::fs::write(&s, b"").unwrap();
    let stuck = Proc::cat(&s);
    wait_readers(&s, 1);
    kill(stuck.child.id(), libc::SIGSTOP);
    let mut writer = Proc::sh(&format!("exec cat /dev/zero > '{}'", s.display()));
    wait_for("a blocked write", HANG, || {
        xattr_u64(&s, "blocked_writes") > 0
    });
    let t = Instant::now();
    kill(writer.child.id(), libc::SIGKILL);
    writer.wait(HANG);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
    kill(stuck.child.id(), libc::SIGCONT);
}

#[test]
fn slow_reader_disconnect_gives_the_laggard_its_queue_then_eof() {
    let m = Mount::new(&[
        "-o",
        "slow_reader=disconnect,channel_buffer_size=64KB,ring_buffer_size=0",
    ]);
    let s = m.file("live");
    std::fs::write(&s, b"").unwrap();
    let mut slow = Proc::cat(&s);
    wait_readers(&s, 1);
    kill(slow.child.id(), libc::SIGSTOP);
    let mut w = std::fs::OpenOptions::new().append(true).open(&s).unwrap();
    for _ in 0..50 {
        w.write_all(&[b'x'; 4096]).unwrap();
    }
    assert_eq!(
        xattr_u64(&s, "readers"),
        0,
        "the laggard is no longer a reader"
    );
    assert_eq!(
        xattr_u64(&s, "dropped_writes"),
        1,
        "drops stop counting after the cut"
    );
    kill(slow.child.id(), libc::SIGCONT);
    let got = slow.read_to_eof(HANG).len();
    assert!(got > 0 && got < 50 * 4096, "got {got}");
    assert!(slow.wait(HANG).success());
    // The stream goes on for others.
    let mut r = Proc::cat(&s);
    wait_readers(&s, 1);
    w.write_all(b"next").unwrap();
    assert_eq!(r.read_at_least(4, HANG), b"next");
}

#[test]
fn on_writer_close_eof_ends_readers_like_a_fifo() {
    let m = Mount::new(&["-o", "on_writer_close=eof"]);
    let s = m.file("fifo");
    std::fs::write(&s, b"").unwrap();
    let mut r = Proc::cat(&s);
    wait_readers(&s, 1);
    assert_eq!(sh(&format!("printf 'one\\n' > '{}'", s.display())).0, 0);
    assert_eq!(r.read_to_eof(HANG), b"one\n");
    assert!(r.wait(HANG).success());
    // A later writer starts a new session for new readers; the old one is not replayed.
    let mut r2 = Proc::cat(&s);
    wait_readers(&s, 1);
    assert_eq!(sh(&format!("printf 'two\\n' >> '{}'", s.display())).0, 0);
    assert_eq!(r2.read_to_eof(HANG), b"two\n");
}

#[test]
fn on_writer_close_keep_lets_readers_wait() {
    let m = Mount::new(&[]);
    let s = m.file("keep");
    std::fs::write(&s, b"").unwrap();
    let mut r = Proc::cat(&s);
    wait_readers(&s, 1);
    sh(&format!("printf 'one' > '{}'", s.display()));
    assert_eq!(r.read_at_least(3, HANG), b"one");
    // The kernel releases the writer's file asynchronously after close.
    wait_for("the writer to be released", HANG, || {
        xattr_u64(&s, "writers") == 0
    });
    wait_parked(&s, r.child.id());
    assert!(
        r.child.try_wait().unwrap().is_none(),
        "reader ended without a writer"
    );
}

#[test]
fn per_stream_overrides_by_setfattr_are_validated() {
    let m = Mount::new(&[]);
    let s = m.file("hd");
    std::fs::write(&s, b"").unwrap();
    let set = |name: &str, value: &str| {
        sh(&format!(
            "setfattr -n user.streamfs.{name} -v '{value}' '{}'",
            s.display()
        ))
    };
    assert_eq!(set("ring_buffer_size", "16MB").0, 0);
    assert_eq!(xattr_u64(&s, "ring_buffer_size"), 16 << 20);
    assert_eq!(set("channel_buffer_size", "1.5MB").0, 0);
    assert_eq!(xattr_u64(&s, "channel_buffer_size"), 1536 << 10);
    assert_eq!(set("slow_reader", "block").0, 0);
    let (code, _, err) = set("channel_buffer_size", "12XB");
    assert_ne!(code, 0);
    assert!(err.contains("Invalid argument"), "{err}");
    assert_eq!(
        xattr_u64(&s, "channel_buffer_size"),
        1536 << 10,
        "changed by a bad value"
    );
    let (code, _, _) = set("channel_buffer_size", "0");
    assert_ne!(code, 0);
    let (code, _, err) = set("bytes_written", "5");
    assert_ne!(code, 0);
    assert!(err.contains("not permitted"), "{err}");
    let (code, _, _) = set("bogus", "1");
    assert_ne!(code, 0);
    wait_for("the warning naming the bad value", HANG, || {
        m.log_text().contains("invalid channel_buffer_size '12XB'")
    });
    // The mount's defaults are untouched for other streams.
    std::fs::write(m.file("other"), b"").unwrap();
    assert_eq!(xattr_u64(&m.file("other"), "ring_buffer_size"), 6 << 20);
    let (code, out, _) = sh(&format!(
        "getfattr -n user.streamfs.slow_reader --only-values '{}'",
        s.display()
    ));
    assert_eq!((code, out.as_str()), (0, "block"));
}

/// The daemon's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

#[test]
fn memory_of_removed_streams_is_given_back() {
    let m = Mount::new(&["-o", "channel_buffer_size=16M,ring_buffer_size=16M"]);
    let pid = m.daemon_pid();
    let idle = rss_bytes(pid);
    let s = m.file("big");
    std::fs::write(&s, b"").unwrap();
    // A reader that never reads keeps 16 MiB queued; the ring holds 16 MiB more.
    let stuck = Proc::sh(&format!("exec 3<'{}'; kill -STOP $$", s.display()));
    wait_readers(&s, 1);
    let (code, _, err) = sh(&format!(
        "dd if=/dev/zero of='{}' bs=1M count=48 status=none",
        s.display()
    ));
    assert_eq!(code, 0, "{err}");
    let loaded = rss_bytes(pid);
    assert!(loaded > idle + (24 << 20), "idle {idle}, loaded {loaded}");
    kill(stuck.child.id(), libc::SIGKILL);
    std::fs::remove_file(&s).unwrap();
    // The allocator's periodic trim (every 5 s) hands the freed chunks back.
    wait_for(
        "the daemon's RSS to come back near its idle size",
        Duration::from_secs(15),
        || rss_bytes(pid) < idle + (6 << 20),
    );
}
