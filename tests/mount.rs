//! The core issue's user commands and semantics, on a real mount with real programs.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HANG: Duration = Duration::from_secs(20);

#[test]
fn daemon_mode_returns_once_mounted_and_stop_unmounts() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().canonicalize().unwrap();
    let status = Command::new(bin()).arg(&mp).status().unwrap();
    assert!(status.success(), "streamfs exited with {status}");
    // Usable on the very next line.
    assert!(is_mounted(&mp), "not mounted when streamfs returned");
    std::fs::write(mp.join("events"), b"x\n").unwrap();
    let pid = xattr_u64(&mp, "pid");
    let (code, _, err) = sh(&format!("{} stop '{}'", bin(), mp.display()));
    assert_eq!(code, 0, "stop failed: {err}");
    assert!(!is_mounted(&mp), "still mounted after stop");
    assert!(process_gone(pid), "daemon still running");
}

#[test]
fn options_and_long_flags_set_the_budgets() {
    let m = Mount::new(&["-o", "channel_buffer_size=256KB,ring_buffer_size=512KB"]);
    assert_eq!(xattr_u64(&m.path, "channel_buffer_size"), 256 * 1024);
    assert_eq!(xattr_u64(&m.path, "ring_buffer_size"), 512 * 1024);
    let m = Mount::new(&[
        "--channel-buffer-size",
        "16MB",
        "--ring-buffer-size",
        "32MB",
    ]);
    assert_eq!(xattr_u64(&m.path, "channel_buffer_size"), 16 << 20);
    assert_eq!(xattr_u64(&m.path, "ring_buffer_size"), 32 << 20);
    let m = Mount::new(&[]);
    assert_eq!(xattr_u64(&m.path, "channel_buffer_size"), 6 << 20);
    assert_eq!(xattr_u64(&m.path, "ring_buffer_size"), 6 << 20);
}

#[test]
fn bad_input_exits_2_naming_option_and_value_before_mounting() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().canonicalize().unwrap();
    let file = mp.join("plain");
    std::fs::write(&file, b"").unwrap();
    let mps = mp.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![mps.clone(), "-o".into(), "channel_buffer_size=0".into()],
            "channel_buffer_size '0'",
        ),
        (
            vec![mps.clone(), "-o".into(), "channel_buffer_size=-1".into()],
            "channel_buffer_size '-1'",
        ),
        (
            vec![mps.clone(), "-o".into(), "ring_buffer_size=".into()],
            "ring_buffer_size ''",
        ),
        (
            vec![mps.clone(), "-o".into(), "ring_buffer_size=12XB".into()],
            "ring_buffer_size '12XB'",
        ),
        (
            vec![
                mps.clone(),
                "-o".into(),
                "ring_buffer_size=99999999999999GB".into(),
            ],
            "ring_buffer_size '99999999999999GB'",
        ),
        (
            vec![mps.clone(), "-o".into(), "colour=blue".into()],
            "'colour=blue'",
        ),
        (
            vec![mps.clone(), "--channel-buffer-size".into(), "12XB".into()],
            "--channel-buffer-size '12XB'",
        ),
        (vec![mps.clone() + "/missing"], "missing"),
        (vec![file.display().to_string()], "not a directory"),
    ];
    for (args, needle) in cases {
        let out = Command::new(bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: error {err:?} lacks {needle:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(!is_mounted(&mp), "{args:?} mounted something");
    }
    // ring_buffer_size=0 is valid.
    let m = Mount::new(&["-o", "ring_buffer_size=0"]);
    assert_eq!(xattr_u64(&m.path, "ring_buffer_size"), 0);
}

#[test]
fn shell_writes_append_and_a_late_joiner_gets_the_history() {
    let m = Mount::new(&[]);
    let ev = m.file("events");
    let (code, _, err) = sh(&format!(
        "echo data > '{0}' && echo more >> '{0}'",
        ev.display()
    ));
    assert_eq!(code, 0, "{err}");
    let mut r = Proc::cat(&ev);
    assert_eq!(r.read_at_least(10, HANG), b"data\nmore\n");
    // Then live data, with no gap and no duplicate.
    sh(&format!("echo live >> '{}'", ev.display()));
    assert_eq!(r.read_at_least(15, HANG), b"data\nmore\nlive\n");
}

#[test]
fn a_reader_may_open_before_any_writer_and_waits() {
    let m = Mount::new(&[]);
    let cam = m.file("cam1");
    assert_eq!(sh(&format!("touch '{}'", cam.display())).0, 0);
    let mut r = Proc::cat(&cam);
    wait_readers(&cam, 1);
    wait_parked(&cam, r.child.id());
    assert!(r.drain().is_empty());
    assert!(r.child.try_wait().unwrap().is_none(), "reader ended early");
    sh(&format!("printf hello > '{}'", cam.display()));
    assert_eq!(r.read_at_least(5, HANG), b"hello");
}

#[test]
fn recording_reader_gets_identical_bytes_and_eof_on_rm() {
    let m = Mount::new(&["-o", "channel_buffer_size=64MB"]);
    let src = m.dir.path().join("in.dat");
    let out = m.dir.path().join("out.dat");
    let data: Vec<u8> = (0..8_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let cam = m.file("cam1");
    sh(&format!("touch '{}'", cam.display()));
    let mut rec = Proc::sh(&format!("cat '{}' > '{}'", cam.display(), out.display()));
    wait_readers(&cam, 1);
    let (code, _, err) = sh(&format!("cat '{}' > '{}'", src.display(), cam.display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(xattr_u64(&cam, "bytes_written"), data.len() as u64);
    std::fs::remove_file(&cam).unwrap();
    assert!(rec.wait(HANG).success());
    assert!(
        std::fs::read(&out).unwrap() == data,
        "recording differs from the input"
    );
}

#[test]
fn ls_stat_and_rm() {
    let m = Mount::new(&[]);
    let cam = m.file("cam1");
    std::fs::write(&cam, b"12345").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cam)
        .unwrap()
        .write_all(b"678")
        .unwrap();
    let meta = std::fs::metadata(&cam).unwrap();
    assert_eq!(meta.len(), 8, "size is the total bytes written");
    assert_eq!(meta.mode() & 0o7777, 0o644);
    // SAFETY: plain getters.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    let (code, out, _) = sh(&format!("ls -l '{}'", m.path.display()));
    assert_eq!(code, 0);
    assert!(out.contains("cam1") && out.contains(" 8 "), "{out}");
    let (code, out, _) = sh(&format!("stat -c '%s %F' '{}'", cam.display()));
    assert_eq!((code, out.trim()), (0, "8 regular file"));
    assert_eq!(sh(&format!("rm '{}'", cam.display())).0, 0);
    assert_eq!(
        std::fs::metadata(&cam).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    let e = std::fs::File::open(m.file("never")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn mode_from_create_is_kept() {
    let m = Mount::new(&[]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(m.file("secret"))
        .unwrap();
    drop(f);
    let mode = std::fs::metadata(m.file("secret")).unwrap().mode() & 0o7777;
    // The caller's umask applies as usual; 0600 has no bits a umask would clear.
    assert_eq!(mode, 0o600);
}

/// One record: writer, sequence number, padding to a fixed size, newline.
fn record_ok(line: &str) -> Option<(u32, u32)> {
    let (w, rest) = line.strip_prefix('w')?.split_once(':')?;
    let (seq, pad) = rest.split_once(':')?;
    let w: u32 = w.parse().ok()?;
    let seq: u32 = seq.parse().ok()?;
    let expect = char::from(b'a' + w as u8);
    (pad.len() == 80 && pad.chars().all(|c| c == expect)).then_some((w, seq))
}

#[test]
fn eight_writers_records_arrive_whole_and_in_one_order_for_four_readers() {
    let m = Mount::new(&["-o", "channel_buffer_size=64MB"]);
    let s = m.file("log");
    sh(&format!("touch '{}'", s.display()));
    let mut readers: Vec<Proc> = (0..4).map(|_| Proc::cat(&s)).collect();
    wait_readers(&s, 4);
    const N: u32 = 400;
    let writers: Vec<Proc> = (0..8u32)
        .map(|w| {
            let pad: String = std::iter::repeat_n(char::from(b'a' + w as u8), 80).collect();
            Proc::sh(&format!(
                "i=0; while [ $i -lt {N} ]; do printf 'w{w}:%08d:{pad}\\n' $i; i=$((i+1)); done >> '{}'",
                s.display()
            ))
        })
        .collect();
    for mut w in writers {
        assert!(w.wait(Duration::from_secs(120)).success());
    }
    let total = 8 * N as usize * 93;
    let mut orders = Vec::new();
    for r in readers.iter_mut() {
        let text = String::from_utf8(r.read_at_least(total, HANG).to_vec()).unwrap();
        let mut next = [0u32; 8];
        let mut order = Vec::new();
        for line in text.lines() {
            let (w, seq) = record_ok(line).unwrap_or_else(|| panic!("torn record {line:?}"));
            assert_eq!(seq, next[w as usize], "writer {w} out of order");
            next[w as usize] += 1;
            order.push((w, seq));
        }
        assert_eq!(order.len(), 8 * N as usize);
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|p| p[0] == p[1]),
        "readers disagree on the order"
    );
    assert_eq!(xattr_u64(&s, "dropped_writes"), 0);
}

#[test]
fn late_joiner_gets_history_then_live_without_gap_or_duplicate() {
    let m = Mount::new(&["-o", "ring_buffer_size=1MB"]);
    let s = m.file("seq");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s)
        .unwrap();
    for i in 0..100 {
        f.write_all(format!("{i:06}\n").as_bytes()).unwrap();
    }
    let mut r = Proc::cat(&s);
    assert_eq!(r.read_at_least(700, HANG).len(), 700);
    for i in 100..200 {
        f.write_all(format!("{i:06}\n").as_bytes()).unwrap();
    }
    let got = String::from_utf8(r.read_at_least(1400, HANG).to_vec()).unwrap();
    let nums: Vec<u32> = got.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(nums, (0..200).collect::<Vec<u32>>());
}

#[test]
fn ring_keeps_only_the_newest_writes_within_its_budget() {
    let m = Mount::new(&["-o", "ring_buffer_size=4KB"]);
    let s = m.file("r");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s)
        .unwrap();
    for i in 0..100u8 {
        f.write_all(&[b'A' + (i % 26); 1000]).unwrap();
    }
    // 4 KiB of data holds four 1000-byte writes: bookkeeping is not counted.
    let ring = xattr_u64(&s, "ring_bytes");
    assert_eq!(ring, 4000);
    let mut r = Proc::cat(&s);
    let got = r.read_at_least(4000, HANG).to_vec();
    let want: Vec<u8> = (96..100u8).flat_map(|i| [b'A' + (i % 26); 1000]).collect();
    assert_eq!(got, want);
}

#[test]
fn stopped_slow_reader_drops_while_fast_reader_gets_everything() {
    let m = Mount::new(&["-o", "channel_buffer_size=4MB,ring_buffer_size=0"]);
    let s = m.file("cam");
    sh(&format!("touch '{}'", s.display()));
    let fast_out = m.dir.path().join("fast.out");
    let mut slow = Proc::cat(&s);
    let mut fast = Proc::sh(&format!("cat '{}' > '{}'", s.display(), fast_out.display()));
    wait_readers(&s, 2);
    kill(slow.child.id(), libc::SIGSTOP);
    let total = 32 << 20;
    let mut w = std::fs::OpenOptions::new().append(true).open(&s).unwrap();
    let block = vec![0u8; 64 << 10];
    for i in 1..=32 {
        // The writer never waits for the stopped reader; the test paces it by the fast reader
        // so that "fast" is true on a loaded machine too.
        for _ in 0..16 {
            w.write_all(&block).unwrap();
        }
        wait_for("the fast reader", HANG, || {
            std::fs::metadata(&fast_out).unwrap().len() == i << 20
        });
    }
    assert!(
        xattr_u64(&s, "dropped_writes") > 0,
        "the stopped reader dropped nothing"
    );
    std::fs::remove_file(&s).unwrap();
    assert!(fast.wait(HANG).success());
    assert_eq!(std::fs::metadata(&fast_out).unwrap().len(), total as u64);
    kill(slow.child.id(), libc::SIGCONT);
    let got = slow.read_to_eof(HANG).len();
    assert!(got < total, "stopped reader got everything ({got})");
    assert!(got >= 1 << 20, "stopped reader lost its queue ({got})");
}

fn assert_reader_dies_of(sig: i32) {
    let m = Mount::new(&[]);
    let s = m.file("idle");
    sh(&format!("touch '{}'", s.display()));
    let mut r = Proc::cat(&s);
    wait_readers(&s, 1);
    wait_parked(&s, r.child.id());
    let t = Instant::now();
    kill(r.child.id(), sig);
    let status = r.wait(HANG);
    let took = t.elapsed();
    assert!(!status.success());
    assert!(
        took < Duration::from_millis(500),
        "signal {sig} took {took:?}"
    );
}

#[test]
fn blocked_reader_dies_of_sigterm_at_once() {
    assert_reader_dies_of(libc::SIGTERM);
}

#[test]
fn blocked_reader_dies_of_sigkill_at_once() {
    assert_reader_dies_of(libc::SIGKILL);
}

#[test]
fn blocked_reader_dies_of_sigint_at_once() {
    assert_reader_dies_of(libc::SIGINT);
}

#[test]
fn rm_gives_readers_eof_and_writers_epipe() {
    let m = Mount::new(&[]);
    let s = m.file("gone");
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s)
        .unwrap();
    let mut r = Proc::cat(&s);
    wait_readers(&s, 1);
    w.write_all(b"last words\n").unwrap();
    assert_eq!(r.read_at_least(11, HANG), b"last words\n");
    std::fs::remove_file(&s).unwrap();
    assert_eq!(r.read_to_eof(HANG), b"last words\n");
    assert!(r.wait(HANG).success());
    let e = w.write_all(b"more").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    // A new stream of the same name is independent.
    std::fs::write(&s, b"new").unwrap();
    assert_eq!(xattr_u64(&s, "bytes_written"), 3);
}

#[test]
fn sigterm_ends_readers_with_eof_and_unmounts() {
    let mut m = Mount::new(&[]);
    let s = m.file("live");
    std::fs::write(&s, b"queued\n").unwrap();
    let mut readers: Vec<Proc> = (0..3).map(|_| Proc::cat(&s)).collect();
    for r in readers.iter_mut() {
        r.read_at_least(7, HANG);
    }
    let status = m.terminate();
    assert!(status.success(), "daemon exit {status}: {}", m.log_text());
    for r in readers.iter_mut() {
        assert_eq!(r.read_to_eof(HANG), b"queued\n");
        assert!(r.wait(HANG).success());
    }
    assert!(!is_mounted(&m.path));
}

#[test]
fn two_hundred_idle_readers_do_not_stall_anything() {
    let m = Mount::new(&[]);
    let idle = m.file("idle");
    sh(&format!("touch '{}'", idle.display()));
    let readers: Vec<Proc> = (0..200).map(|_| Proc::cat(&idle)).collect();
    wait_readers(&idle, 200);
    // Writers, ls, stat and other readers still work (the limit only detects a hang).
    let busy = m.file("busy");
    std::fs::write(&busy, b"hello").unwrap();
    let mut r = Proc::cat(&busy);
    assert_eq!(r.read_at_least(5, HANG), b"hello");
    let (code, out, _) = sh(&format!(
        "ls '{}'; stat -c %s '{}'",
        m.path.display(),
        busy.display()
    ));
    assert_eq!(code, 0);
    assert!(out.contains("idle") && out.contains("busy"));
    drop(readers);
}

#[test]
fn large_reads_return_what_is_queued_without_stalling() {
    let m = Mount::new(&[]);
    let s = m.file("big");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s)
        .unwrap();
    f.write_all(&vec![7u8; 3 << 20]).unwrap();
    // A 4 MiB read with 3 MiB queued returns promptly with a partial count.
    let mut r = std::fs::File::open(&s).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut got = 0;
    while got < 3 << 20 {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0 && n < 4 << 20);
        got += n;
    }
    assert_eq!(got, 3 << 20);
    let (code, out, err) = sh(&format!(
        "dd if='{}' bs=4M count=1 status=none | wc -c",
        s.display()
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().parse::<usize>().unwrap() > 0);
}

#[test]
fn a_waiting_read_larger_than_a_request_returns_one_whole_write_at_once() {
    let m = Mount::new(&[]);
    let s = m.file("whole");
    std::fs::write(&s, b"").unwrap();
    // One 2 MiB read(): the kernel asks for 1 MiB first, and for the second MiB only if the
    // first came back full. That second request must not wait for another write.
    let mut reader = Proc::sh(&format!(
        "exec dd if='{}' bs=2M count=1 status=none",
        s.display()
    ));
    wait_parked(&s, reader.child.id());
    // dd writes from a page-aligned buffer: an unaligned 1 MiB buffer spans 257 pages and
    // the kernel would split the write itself.
    let src = tempfile::NamedTempFile::new().unwrap();
    let write = pattern_bytes(1 << 20);
    std::fs::write(src.path(), &write).unwrap();
    let (code, _, err) = sh(&format!(
        "dd if='{}' of='{}' bs=1M count=1 status=none",
        src.path().display(),
        s.display()
    ));
    assert_eq!(code, 0, "{err}");
    let got = reader.read_to_eof(HANG).to_vec();
    assert_eq!(
        got.len(),
        1 << 20,
        "the whole write, in the one read() dd made"
    );
    assert!(got == write);
    assert!(reader.wait(HANG).success());
}

#[test]
fn streams_are_not_seekable_and_rdwr_reads_do_not_block_writes() {
    let m = Mount::new(&[]);
    let s = m.file("duplex");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&s)
        .unwrap();
    use std::io::Seek;
    let e = (&f).seek(std::io::SeekFrom::Start(0)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESPIPE));
    let reader = f.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let n = (&reader).read(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    std::thread::sleep(Duration::from_millis(50));
    (&f).write_all(b"ping").unwrap();
    assert_eq!(t.join().unwrap(), b"ping");
}

#[test]
fn nonblocking_read_with_nothing_queued_is_eagain() {
    let m = Mount::new(&[]);
    let s = m.file("nb");
    sh(&format!("touch '{}'", s.display()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&s)
        .unwrap();
    let mut buf = [0u8; 8];
    let e = f.read(&mut buf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
    std::fs::write(&s, b"x").unwrap();
    assert_eq!(f.read(&mut buf).unwrap(), 1);
}

#[test]
fn unsupported_operations_get_clear_errnos() {
    let m = Mount::new(&[]);
    let dir = m.file("sub");
    assert_eq!(
        std::fs::create_dir(&dir).unwrap_err().raw_os_error(),
        Some(libc::EPERM)
    );
    let (code, _, err) = sh(&format!("mkfifo '{}'", m.file("fifo").display()));
    assert_ne!(code, 0);
    assert!(err.contains("not permitted"), "{err}");
    let s = m.file("s");
    std::fs::write(&s, b"abc").unwrap();
    assert_eq!(
        sh(&format!("truncate -s 0 '{}'", s.display())).0,
        0,
        "truncate is a no-op"
    );
    let e = std::os::unix::fs::symlink(&s, m.file("link")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    // Nothing above hung or broke the daemon.
    assert_eq!(xattr_u64(&s, "bytes_written"), 3);
    let _ = Stdio::null();
}

#[test]
fn writes_larger_than_a_request_arrive_whole_or_not_at_all() {
    // Python's buffers are not page-aligned, so the kernel splits each 1.5 MiB write() into
    // requests at odd offsets; two writers write at once, and a stopped reader drops some.
    let m = Mount::new(&["-o", "channel_buffer_size=2MB,ring_buffer_size=0"]);
    let s = m.file("big");
    std::fs::write(&s, b"").unwrap();
    let mut slow = Proc::cat(&s);
    let mut fast = Proc::cat(&s);
    wait_readers(&s, 2);
    kill(slow.child.id(), libc::SIGSTOP);
    const REC: usize = 1_572_864;
    let writers: Vec<Proc> = (0..2)
        .map(|w| {
            Proc::sh(&format!(
                "exec python3 -c \"
import os
fd = os.open('{}', os.O_WRONLY | os.O_APPEND * {w})
for i in range(6):
    head = b'%d:%d:' % ({w}, i)
    rec = bytearray(head + bytes([65 + {w} * 10 + i]) * ({REC} - len(head)))
    os.write(fd, memoryview(bytearray(1) + rec)[1:])
\"",
                s.display()
            ))
        })
        .collect();
    for mut w in writers {
        assert!(w.wait(HANG).success());
    }
    fn check(bytes: &[u8]) -> usize {
        assert_eq!(
            bytes.len() % REC,
            0,
            "a partial record ({} bytes)",
            bytes.len()
        );
        for rec in bytes.chunks(REC) {
            let text = String::from_utf8_lossy(&rec[..8]).into_owned();
            let mut it = text.split(':');
            let w: u8 = it.next().unwrap().parse().unwrap();
            let i: u8 = it.next().unwrap().parse().unwrap();
            let fill = 65 + w * 10 + i;
            let head = format!("{w}:{i}:").len();
            assert!(
                rec[head..].iter().all(|b| *b == fill),
                "torn record {w}:{i}"
            );
        }
        bytes.len() / REC
    }
    kill(slow.child.id(), libc::SIGCONT);
    std::fs::remove_file(&s).unwrap();
    // Every record either reader got is whole; the stopped one had to drop.
    assert!(check(fast.read_to_eof(HANG)) >= 1);
    let got = check(slow.read_to_eof(HANG));
    assert!(got < 12, "the stopped reader dropped nothing");
}

/// `n` bytes that are not all alike, so a misplaced piece shows.
fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
