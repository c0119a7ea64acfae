//! What streamfs promises, held against every way programs write and against a hostile local
//! user, on real mounts: writes recognised whatever the system call (write, splice, sendfile),
//! large writes whole, one memory limit for the daemon, limits on what users may ask for,
//! modes enforced between users, no forged log lines, signals that do not end a read.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(30);

/// A python3 one-off; panics with its stderr when it fails.
fn python(script: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

// ---------------------------------------------------------------------------------------
// Writers that splice or sendfile: every call is a write of its own
// ---------------------------------------------------------------------------------------

#[test]
fn splice_and_sendfile_writers_keep_the_ring_within_its_budget() {
    let m = Mount::new(&["-o", "ring_buffer_size=1MB"]);
    let big = m.dir.path().join("big");
    sh(&format!("head -c 64M /dev/urandom > {}", q(&big)));
    // (writer, command): each sends 64 MiB through a system call that carries the file
    // position as the request offset.
    let cases = [
        (
            "pv (splice from a pipe)",
            "head -c 64M /dev/zero | pv -q > {f}".to_string(),
        ),
        (
            "shutil.copyfile (sendfile)",
            format!(
                "python3 -c \"import shutil; shutil.copyfile('{}', '{{f}}')\"",
                big.display()
            ),
        ),
        (
            "os.sendfile in 4 MiB calls",
            format!(
                "python3 -c \"
import os
out = os.open('{{f}}', os.O_WRONLY | os.O_CREAT)
src = os.open('{}', os.O_RDONLY)
while os.sendfile(out, src, None, 4 << 20):
    pass\"",
                big.display()
            ),
        ),
        (
            "tee from a pipe",
            "head -c 64M /dev/zero | tee {f} > /dev/null".to_string(),
        ),
    ];
    for (i, (what, cmd)) in cases.iter().enumerate() {
        let f = m.file(&format!("s{i}"));
        let (code, _, err) = sh(&cmd.replace("{f}", &f.display().to_string()));
        assert_eq!(code, 0, "{what}: {err}");
        assert_eq!(xattr_u64(&f, "bytes_written"), 64 << 20, "{what}");
        let writes = xattr_u64(&f, "writes");
        assert!(writes >= 64, "{what}: 64 MiB taken as {writes} writes");
        let ring = xattr_u64(&f, "ring_bytes");
        assert!(
            ring <= 1 << 20,
            "{what}: the ring holds {ring} bytes of a 1 MiB budget"
        );
        // A late joiner gets the ring's history, not the whole session.
        let mut late = Proc::cat(&f);
        let got = late.read_at_least(ring as usize, HANG).len();
        assert!(
            got as u64 <= 1 << 20,
            "{what}: a late joiner replayed {got} bytes"
        );
    }
    let rss = proc_rss_kib(m.daemon_pid());
    assert!(
        rss < 200 << 10,
        "daemon RSS {rss} KiB after 256 MiB of splice writes"
    );
}

/// A figure of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn proc_rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "VmRSS:")
}

fn proc_hwm_kib(pid: u32) -> u64 {
    proc_kib(pid, "VmHWM:")
}

#[test]
fn a_reader_without_replay_that_joins_a_splicing_writer_gets_data() {
    let m = Mount::new(&["-o", "ring_buffer_size=0"]);
    let f = m.file("s");
    let _writer = Proc::sh(&format!("head -c 4G /dev/zero | pv -q > {}", q(&f)));
    wait_for("the writer to start", HANG, || {
        f.exists() && xattr_u64(&f, "bytes_written") > 0
    });
    // Opened between two splice calls: it receives the next ones (before the fix the whole
    // session was one write it had missed the start of).
    let mut r = Proc::sh(&format!("head -c 8M {}", q(&f)));
    assert_eq!(r.read_to_eof(HANG).len(), 8 << 20);
    assert!(r.wait(HANG).success());
}

// ---------------------------------------------------------------------------------------
// Large writes reach readers whole
// ---------------------------------------------------------------------------------------

/// A python writer of `count` self-describing writes of `size` bytes each, one `write()`
/// call each (from a buffer that is not page-aligned, so the kernel's pieces fall anywhere).
fn record_writer(path: &Path, size: usize, count: usize) -> String {
    format!(
        "python3 -c \"
import os
fd = os.open('{}', os.O_WRONLY)
buf = bytearray({size} + 1)
for k in range({count}):
    body = bytes([k % 251]) * {size}
    mv = memoryview(buf)[1:]
    mv[:] = body
    mv[:8] = k.to_bytes(8, 'little')
    assert os.write(fd, mv) == {size}
\"",
        path.display()
    )
}

/// Reads records of `size` bytes until EOF; prints how many, and fails on a torn one.
fn record_reader(path: &Path, size: usize) -> String {
    format!(
        "python3 -c \"
import sys
f = open('{}', 'rb', buffering=0)
n = 0
buf = b''
while True:
    b = f.read(1 << 20)
    if not b:
        break
    buf += b
    while len(buf) >= {size}:
        rec, buf = buf[:{size}], buf[{size}:]
        k = int.from_bytes(rec[:8], 'little')
        if rec[8:] != bytes([k % 251]) * ({size} - 8):
            sys.exit('torn record %d after %d whole ones' % (k, n))
        n += 1
assert not buf, 'a partial record at the end: %d bytes' % len(buf)
print(n)
\"",
        path.display()
    )
}

#[test]
fn large_writes_reach_a_keeping_up_reader_whole() {
    // (mount options, write size, writes): the sizes of the hardening report, up to 64 MiB.
    let cases: &[(&str, usize, usize)] = &[
        ("channel_buffer_size=6MB", 32 << 20, 6),
        ("channel_buffer_size=256KB", 4 << 20, 20),
        ("channel_buffer_size=256KB", 64 << 20, 2),
        ("channel_buffer_size=1MB", (1 << 20) + 4095, 40),
    ];
    for &(opts, size, count) in cases {
        let m = Mount::new(&[
            "-o",
            &format!("{opts},ring_buffer_size=0,on_writer_close=eof"),
        ]);
        let f = m.file("t");
        sh(&format!("touch {}", q(&f)));
        let mut reader = Proc::sh(&record_reader(&f, size));
        wait_readers(&f, 1);
        let (code, _, err) = sh(&record_writer(&f, size, count));
        assert_eq!(code, 0, "{opts} {size}: writer: {err}");
        let out = String::from_utf8_lossy(reader.read_to_eof(HANG)).into_owned();
        assert!(
            reader.wait(HANG).success(),
            "{opts} {size}: reader failed: {out}"
        );
        let whole: u64 = out.trim().parse().unwrap();
        let dropped = xattr_u64(&f, "dropped_writes");
        assert!(whole >= 1, "{opts} {size}: not one whole write arrived");
        assert_eq!(
            whole + dropped,
            count as u64,
            "{opts} {size}: every write arrived whole or was counted dropped"
        );
        assert_eq!(xattr_u64(&f, "writes"), count as u64, "{opts} {size}");
    }
}

// ---------------------------------------------------------------------------------------
// Memory: one limit for the daemon, and limits on what users may ask for
// ---------------------------------------------------------------------------------------

#[test]
fn max_memory_holds_against_many_streams_stopped_readers_and_raised_budgets() {
    const LIMIT_MIB: u64 = 64;
    let m = Mount::new(&[
        "-o",
        &format!("max_memory={LIMIT_MIB}MB,ring_buffer_size=6MB"),
    ]);
    let idle_kib = proc_rss_kib(m.daemon_pid());
    // 40 streams × 6 MB of history, each with a stopped reader (SIGSTOP'd cat), and one
    // stream whose ring root raised to 60 MB (as much as max_memory lets it): about 440 MB
    // asked for.
    let mut stopped = Vec::new();
    for i in 0..40 {
        let f = m.file(&format!("s{i}"));
        sh(&format!("touch {}", q(&f)));
        if i == 0 {
            let (code, _, err) = sh(&format!(
                "setfattr -n user.streamfs.ring_buffer_size -v 60MB {}",
                q(&f)
            ));
            assert_eq!(code, 0, "{err}");
        }
        let r = Proc::sh(&format!("exec cat {} > /dev/null", q(&f)));
        wait_readers(&f, 1);
        kill(r.child.id(), libc::SIGSTOP);
        stopped.push(r);
        let (code, _, err) = sh(&format!(
            "head -c {} /dev/urandom | dd of={} bs=64K 2>/dev/null",
            if i == 0 { "120M" } else { "8M" },
            q(&f)
        ));
        assert_eq!(code, 0, "writes never fail under slow_reader=drop: {err}");
    }
    let root = &m.path;
    let used = xattr_u64(root, "memory");
    assert_eq!(xattr_u64(root, "max_memory"), LIMIT_MIB << 20);
    assert!(used <= LIMIT_MIB << 20, "pool {used} above the limit");
    assert!(xattr_u64(root, "shed_bytes") > 0, "the limit had to shed");
    let hwm = proc_hwm_kib(m.daemon_pid());
    // The limit plus the daemon's fixed overhead (its code, fuser's two 16 MiB request
    // buffers, allocator slack), measured at idle before the load.
    assert!(
        hwm <= idle_kib + (LIMIT_MIB << 10) * 105 / 100 + (16 << 10),
        "peak RSS {hwm} KiB against a {LIMIT_MIB} MiB limit (idle {idle_kib} KiB)"
    );
    for r in &stopped {
        kill(r.child.id(), libc::SIGCONT);
    }
}

#[test]
fn max_streams_and_max_readers_give_clear_errnos() {
    let m = Mount::new(&["-o", "max_streams=2,max_readers=2"]);
    for name in ["a", "b"] {
        assert_eq!(sh(&format!("touch {}", q(&m.file(name)))).0, 0);
    }
    let (code, _, err) = sh(&format!("touch {}", q(&m.file("c"))));
    assert_ne!(code, 0);
    assert!(err.contains("No space left on device"), "{err}");
    let f = m.file("a");
    let _r1 = Proc::cat(&f);
    let _r2 = Proc::cat(&f);
    wait_readers(&f, 2);
    let (code, _, err) = sh(&format!("cat {}", q(&f)));
    assert_ne!(code, 0);
    assert!(err.contains("Too many open files"), "{err}");
    assert!(
        m.log_text().contains("too many readers"),
        "{}",
        m.log_text()
    );
    let (_, out, _) = sh(&format!("df -i {} | tail -1", q(&m.path)));
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        &cols[1..4],
        ["2", "2", "0"],
        "df -i: inodes, used, free: {out}"
    );
}

#[test]
fn settings_above_the_limits_are_refused_with_a_reason() {
    let m = Mount::new(&["-o", "max_memory=1GB"]);
    let f = m.file("s");
    sh(&format!("touch {}", q(&f)));
    // (value, refused): sizes past max_memory, and the unit that no longer exists.
    for (value, refused) in [
        ("512MB", false),
        ("2GB", true),
        ("18446744073709551615", true),
        ("1000TB", true),
    ] {
        let (code, _, err) = sh(&format!(
            "setfattr -n user.streamfs.ring_buffer_size -v {value} {}",
            q(&f)
        ));
        assert_eq!(code != 0, refused, "{value}: {err}");
        if refused {
            assert!(err.contains("Invalid argument"), "{value}: {err}");
            let why = streamfs::control::get_xattr(&f, "user.streamfs.last_error").unwrap();
            assert!(why.contains(value), "last_error names the value: {why}");
        }
    }
    assert_eq!(xattr_u64(&f, "ring_buffer_size"), 512 << 20);
    assert!(
        m.log_text()
            .contains("invalid ring_buffer_size '2GB': above the limit of 1 GiB (max_memory)"),
        "{}",
        m.log_text()
    );
}

// ---------------------------------------------------------------------------------------
// Users: modes enforced, POSIX ownership rules, per-user budget limits
// ---------------------------------------------------------------------------------------

#[test]
fn allow_other_enforces_modes_ownership_and_user_limits() {
    let _ = non_root_setup();
    let m = Mount::new(&["-o", "allow_other"]);
    assert!(
        m.log_text()
            .contains("allow_other implies default_permissions"),
        "{}",
        m.log_text()
    );
    let mp = m.path.display().to_string();
    let (code, _, err) = as_user(
        "streamfs-t1",
        &format!("umask 077; echo secret > '{mp}/private'"),
    );
    assert_eq!(code, 0, "{err}");
    // (what another user tries, command): each must be refused.
    let attempts = [
        ("read", format!("cat '{mp}/private'")),
        ("append", format!("echo x >> '{mp}/private'")),
        ("rename", format!("mv '{mp}/private' '{mp}/mine'")),
        ("remove", format!("rm -f '{mp}/private'")),
        ("chmod", format!("chmod 666 '{mp}/private'")),
    ];
    for (what, cmd) in &attempts {
        let (code, _, err) = as_user("streamfs-t2", cmd);
        assert_ne!(code, 0, "another user could {what}: {err}");
    }
    assert!(m.file("private").exists());
    // The owner may not give the stream away, nor to a group it is not in.
    for cmd in [
        format!("chown streamfs-t2 '{mp}/private'"),
        format!("chgrp root '{mp}/private'"),
    ] {
        let (code, _, err) = as_user("streamfs-t1", &cmd);
        assert_ne!(code, 0, "{cmd}: {err}");
        assert!(err.contains("not permitted"), "{cmd}: {err}");
    }
    // A user may raise its stream's ring only up to the mount's own (6 MB by default).
    let (code, _, err) = as_user(
        "streamfs-t1",
        &format!("setfattr -n user.streamfs.ring_buffer_size -v 4MB '{mp}/private'"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = as_user(
        "streamfs-t1",
        &format!("setfattr -n user.streamfs.ring_buffer_size -v 1GB '{mp}/private'"),
    );
    assert_ne!(code, 0, "a user raised its ring past max_ring_buffer_size");
    assert!(
        m.log_text()
            .contains("above the limit of 6 MiB (max_ring_buffer_size)"),
        "{}",
        m.log_text()
    );
}

// ---------------------------------------------------------------------------------------
// The log: no forged lines, no flood
// ---------------------------------------------------------------------------------------

#[test]
fn names_and_commands_cannot_forge_log_lines() {
    let m = Mount::new(&[]);
    let evil = m.file("cam\nWARN forged stream");
    std::fs::write(&evil, b"x").unwrap();
    let f = m.file("s");
    sh(&format!("touch {}", q(&f)));
    // A reader whose command name holds a newline.
    let mut r = Proc::sh(&format!(
        "exec python3 -c \"
import ctypes, sys
ctypes.CDLL(None).prctl(15, b'x)\\nWARN forged', 0, 0, 0)
f = open('{}', 'rb', buffering=0)
sys.stdout.buffer.write(f.read(1)); sys.stdout.flush()
\"",
        f.display()
    ));
    wait_readers(&f, 1);
    sh(&format!("printf y > {}", q(&f)));
    r.read_at_least(1, HANG);
    r.wait(HANG);
    sh(&format!(
        "setfattr -n user.streamfs.slow_reader -v fast {}",
        q(&evil)
    ));
    let log = m.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("WARN forged")),
        "a forged line: {log}"
    );
    assert!(
        log.contains("x)\\nWARN forged"),
        "the command name, escaped: {log}"
    );
    assert!(
        log.contains("cam\\nWARN forged stream"),
        "the stream name, escaped: {log}"
    );
    let list = streamfs::control::get_xattr(&f, "user.streamfs.reader_list").unwrap();
    assert!(!list.contains("\nWARN"), "{list:?}");
}

#[test]
fn opening_and_closing_at_will_cannot_flood_the_log() {
    let m = Mount::new(&[]);
    let f = m.file("s");
    std::fs::write(&f, b"").unwrap();
    python(&format!(
        "
import os
for _ in range(3000):
    os.close(os.open('{}', os.O_RDONLY | os.O_NONBLOCK))
",
        f.display()
    ));
    let lines = m.log_text().lines().count();
    assert!(lines < 200, "3000 opens wrote {lines} log lines");
    assert!(m.log_text().contains("similar lines left out") || lines < 60);
}

// ---------------------------------------------------------------------------------------
// Signals: stop and continue do not end a waiting read
// ---------------------------------------------------------------------------------------

#[test]
fn stop_continue_and_harmless_signals_do_not_end_a_waiting_read() {
    let m = Mount::new(&["-o", "ring_buffer_size=0"]);
    let f = m.file("s");
    sh(&format!("touch {}", q(&f)));
    // head has no signal handlers: on a FIFO, SIGSTOP/SIGCONT and SIGWINCH are invisible
    // to it (the report's od died "Interrupted system call").
    let mut od = Proc::sh(&format!("exec head -c 5 {}", q(&f)));
    let pid = od.child.id();
    wait_parked(&f, pid);
    for sig in [libc::SIGSTOP, libc::SIGCONT, libc::SIGWINCH, libc::SIGCHLD] {
        kill(pid, sig);
    }
    // Two watchdog scans at least; the read must still be parked, od still alive.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        od.child.try_wait().unwrap().is_none(),
        "od ended on a harmless signal"
    );
    wait_parked(&f, pid);
    sh(&format!("printf 'hello' > {}", q(&f)));
    assert_eq!(od.read_to_eof(HANG), b"hello");
    assert!(od.wait(HANG).success());
    // A terminating signal still ends a waiting read at once.
    let mut cat = Proc::cat(&f);
    let pid = cat.child.id();
    wait_parked(&f, pid);
    kill(pid, libc::SIGTERM);
    assert!(!cat.wait(HANG).success());
}

// ---------------------------------------------------------------------------------------
// Smaller answers that were wrong
// ---------------------------------------------------------------------------------------

#[test]
fn names_xattrs_and_removed_streams_answer_as_documented() {
    let m = Mount::new(&[]);
    let out = python(&format!(
        "
import errno, os
mp = '{}'
res = []
for n in (255, 256, 4095):
    try:
        os.close(os.open(os.path.join(mp, 'x' * n), os.O_CREAT | os.O_WRONLY))
        res.append('ok')
    except OSError as e:
        res.append(errno.errorcode[e.errno])
p = os.path.join(mp, 's')
open(p, 'w').close()
try:
    os.setxattr(p, 'user.streamfs.slow_reader', b'drop', os.XATTR_CREATE)
    res.append('ok')
except OSError as e:
    res.append(errno.errorcode[e.errno])
os.setxattr(p, 'user.streamfs.slow_reader', b'block', os.XATTR_REPLACE)
res.append(os.getxattr(p, 'user.streamfs.slow_reader').decode())
fd = os.open(p, os.O_RDONLY)
os.unlink(p)
os.setxattr(fd, 'user.streamfs.ring_buffer_size', b'1MB')
res.append(os.getxattr(fd, 'user.streamfs.ring_buffer_size').decode())
print(' '.join(res))
",
        m.path.display()
    ));
    assert_eq!(
        out.trim(),
        "ok ENAMETOOLONG ENAMETOOLONG EEXIST block 1048576",
        "names, XATTR_CREATE, XATTR_REPLACE, fsetxattr after rm"
    );
}

#[test]
fn every_reader_is_listed_past_the_64_kib_of_one_attribute() {
    let m = Mount::new(&[]);
    let f = m.file("s");
    sh(&format!("touch {}", q(&f)));
    let mut holder = Proc::sh(&format!(
        "exec python3 -c \"
import os, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
fds = [os.open('{}', os.O_RDONLY | os.O_NONBLOCK) for _ in range(1500)]
print('open', flush=True)
time.sleep(600)
\"",
        f.display()
    ));
    holder.read_at_least(5, HANG);
    wait_readers(&f, 1500);
    let pages = xattr_u64(&f, "reader_pages");
    assert!(pages >= 2, "1500 reader lines fit one page?");
    let mut lines = 0;
    for i in 0..pages {
        let name = if i == 0 {
            "user.streamfs.reader_list".to_string()
        } else {
            format!("user.streamfs.reader_list.{i}")
        };
        let page = streamfs::control::get_xattr(&f, &name).unwrap();
        assert!(page.len() <= 64 << 10);
        lines += page.lines().count();
    }
    assert_eq!(lines, 1500);
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

/// The kernel's interrupts are taken (fuser would answer them ENOSYS, after which every
/// waiting reader of the mount sleeps in D state): waiting readers stay in S state before
/// and after one of them is interrupted, and a stopped one still dies of SIGKILL.
#[test]
fn waiting_readers_sleep_in_s_state_and_stay_killable() {
    let m = Mount::new(&["-o", "ring_buffer_size=0"]);
    let f = m.file("s");
    sh(&format!("touch {}", q(&f)));
    let mut readers: Vec<Proc> = (0..8).map(|_| Proc::cat(&f)).collect();
    for r in &readers {
        wait_parked(&f, r.child.id());
    }
    let states = |rs: &[Proc]| -> Vec<Option<char>> {
        rs.iter().map(|r| proc_state(r.child.id())).collect()
    };
    assert!(
        states(&readers).iter().all(|s| *s == Some('S')),
        "{:?}",
        states(&readers)
    );
    // Ctrl-C to one: it ends at once, the others sleep on in S.
    let mut first = readers.remove(0);
    kill(first.child.id(), libc::SIGINT);
    assert!(!first.wait(HANG).success());
    assert!(
        states(&readers).iter().all(|s| *s == Some('S')),
        "{:?}",
        states(&readers)
    );
    // A stopped reader (its read goes on waiting, in D until answered) dies of SIGKILL.
    let mut stopped = readers.remove(0);
    let pid = stopped.child.id();
    kill(pid, libc::SIGSTOP);
    wait_for("the stop to reach the daemon", HANG, || {
        proc_state(pid) == Some('D')
    });
    kill(pid, libc::SIGKILL);
    stopped.wait(HANG);
    assert!(
        states(&readers).iter().all(|s| *s == Some('S')),
        "{:?}",
        states(&readers)
    );
}

/// Under `slow_reader=block` a write waits for a stopped reader, and the kernel holds the
/// file's inode lock meanwhile: `rm` of the file waits for that lock in D state, which no
/// signal ends, and holds the directory's lock, so that every lookup on the mount waits
/// behind it. The write waits 5 s at most; the reader it waited for is then cut off.
#[test]
fn rm_of_a_block_stream_whose_writer_waits_for_a_stopped_reader_is_not_stuck() {
    let m = Mount::new(&[]);
    let p = m.file("rb");
    std::fs::File::create(&p).unwrap();
    for (name, value) in [("slow_reader", "block"), ("channel_buffer_size", "64KB")] {
        let (code, _, err) = sh(&format!(
            "setfattr -n user.streamfs.{name} -v {value} '{}'",
            p.display()
        ));
        assert_eq!(code, 0, "{err}");
    }
    let mut stopped = Proc::cat(&m.file("rb@live"));
    wait_readers(&p, 1);
    kill(stopped.child.id(), libc::SIGSTOP);
    // The first 64 KiB fit the reader's budget; the second waits for its room.
    let dd = Proc::sh(&format!(
        "exec dd if=/dev/zero of='{}' bs=64k count=10 status=none",
        p.display()
    ));
    wait_for("a blocked write", HANG, || {
        xattr_u64(&p, "blocked_writes") == 1
    });
    let mut rm = Proc::sh(&format!("exec rm '{}'", p.display()));
    if wait_child(&mut rm.child, Duration::from_secs(20)).is_none() {
        // Killing the writer lets rm go on, so that the test can end.
        drop(dd);
        panic!("rm still waits 20 s after it began, behind the blocked write");
    }
    assert!(rm.wait(HANG).success());
    assert!(!p.exists());
    // The rest of the mount answers, and the stopped reader, cut off, reads what it had
    // queued and then gets EOF.
    std::fs::write(m.file("other"), b"x").unwrap();
    kill(stopped.child.id(), libc::SIGCONT);
    let got = stopped.read_to_eof(HANG).len();
    // 64 KiB queued, and 64 KiB more when its read was waiting already as it stopped (the
    // first write answered it, and the second then fit its empty queue).
    assert!(
        got == 64 << 10 || got == 128 << 10,
        "its queue, then EOF: {got}"
    );
    assert!(stopped.wait(HANG).success());
}

/// Context switches of each thread of process `pid`, by thread name.
fn switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.push((format!("{} {}", name.trim(), dir.display()), n));
    }
    out.sort();
    out
}

/// A mount whose readers wait for data wakes none of its threads: nothing scans for
/// interrupted requests until one is interrupted (the scan then ends a stopped reader that
/// gets SIGKILL: `waiting_readers_sleep_in_s_state_and_stay_killable`).
#[test]
fn a_mount_whose_readers_wait_wakes_no_thread() {
    let m = Mount::new(&[]);
    let f = m.file("quiet");
    sh(&format!("touch {}", q(&f)));
    let readers: Vec<Proc> = (0..4).map(|_| Proc::cat(&f)).collect();
    for r in &readers {
        wait_parked(&f, r.child.id());
    }
    let pid = m.daemon_pid();
    // The threads that answered the last request go back to sleep first.
    let mut before = switches(pid);
    wait_for("the daemon to settle", HANG, || {
        std::thread::sleep(Duration::from_millis(100));
        let now = switches(pid);
        std::mem::replace(&mut before, now) == before
    });
    std::thread::sleep(Duration::from_secs(1));
    let after = switches(pid);
    let woke: Vec<(String, u64)> = after
        .iter()
        .filter_map(|(t, n)| {
            let was = before.iter().find(|(b, _)| b == t).map_or(0, |(_, n)| *n);
            (*n > was).then(|| (t.clone(), n - was))
        })
        .collect();
    // The allocator's trim runs every 5 s and may fall in the second.
    let total: u64 = woke.iter().map(|(_, n)| n).sum();
    assert!(total <= 2, "threads woke in one idle second: {woke:?}");
}
