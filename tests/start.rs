//! Start positions on a real mount: `STREAM@SPEC` names read with unmodified programs, the
//! per-stream and mount defaults, `ring_buffer_time`, `replay_align=line`, and snapshots
//! that tools trusting `st_size` copy exactly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(20);

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Writes each of `writes` with one write(2) call, in order, from one process.
fn write_each(path: &Path, writes: &[&str]) {
    let hex: Vec<String> = writes
        .iter()
        .map(|w| w.bytes().map(|b| format!("{b:02x}")).collect())
        .collect();
    run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n\
             for h in sys.argv[2:]:\n    os.write(fd, bytes.fromhex(h))\n",
            )
            .arg(path)
            .args(&hex),
    );
}

/// `cat NAME@SPEC` with the stream's history `one\ntwo\nthree\n` in three writes: what each
/// spec replays (snapshots end by themselves; the others are read until the expected bytes).
#[test]
fn specs_replay_what_they_name() {
    let m = Mount::new(&[]);
    let f = m.file("log");
    write_each(&f, &["one\n", "two\n", "three\n"]);
    // (spec, replay): offsets count from 0 as st_size and ring_start do.
    let cases: &[(&str, &str)] = &[
        ("snapshot", "one\ntwo\nthree\n"),
        ("start,snapshot", "one\ntwo\nthree\n"),
        ("live,snapshot", ""),
        ("-1h,snapshot", "one\ntwo\nthree\n"),
        ("-10B,snapshot", "two\nthree\n"),
        ("-3B,snapshot", "three\n"),
        ("4,snapshot", "two\nthree\n"),
        ("5,snapshot", "wo\nthree\n"),
        ("14,snapshot", ""),
    ];
    for (spec, want) in cases {
        let (code, out, err) = sh(&format!("cat {}@{spec}", q(&f)));
        assert_eq!((code, out.as_str()), (0, *want), "{spec}: {err}");
    }
    // Not snapshots: the replay, then live data (each on a stream of the same history).
    for (i, (spec, want)) in [
        ("start", "one\ntwo\nthree\n"),
        ("-6B", "three\n"),
        ("8", "three\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let g = m.file(&format!("g{i}"));
        write_each(&g, &["one\n", "two\n", "three\n"]);
        let mut r = Proc::sh(&format!("exec cat {}@{spec}", q(&g)));
        assert_eq!(r.read_at_least(want.len(), HANG), want.as_bytes(), "{spec}");
        wait_readers(&g, 1);
        write_each(&g, &["four\n"]);
        let all = format!("{want}four\n");
        assert_eq!(
            r.read_at_least(all.len(), HANG),
            all.as_bytes(),
            "{spec} then live"
        );
    }
    // ls shows only the streams; the sizes stat reports.
    assert_eq!(sh(&format!("ls {}", q(&m.path))).1, "g0\ng1\ng2\nlog\n");
    let size = |name: &str| std::fs::metadata(m.file(name)).unwrap().len();
    assert_eq!(size("log"), 14);
    assert_eq!(size("log@snapshot"), 14);
    assert_eq!(size("log@-6B,snapshot"), 6);
}

#[test]
fn live_gets_everything_after_the_open_and_nothing_before() {
    let m = Mount::new(&[]);
    let f = m.file("s");
    write_each(&f, &["old\n"]);
    let mut r = Proc::sh(&format!("exec cat {}@live", q(&f)));
    wait_readers(&f, 1);
    write_each(&f, &["a\n", "b\n", "c\n"]);
    assert_eq!(r.read_at_least(6, HANG), b"a\nb\nc\n");
}

#[test]
fn an_offset_resumes_exactly_where_a_reader_stopped() {
    let m = Mount::new(&[]);
    let f = m.file("s");
    let data: Vec<String> = (0..50).map(|i| format!("record {i:04}\n")).collect();
    let writes: Vec<&str> = data.iter().map(String::as_str).collect();
    write_each(&f, &writes);
    let all = data.concat();
    // Read 123 bytes (stopping inside a write), then resume at 123: no gap, no duplicate.
    let (_, first, _) = sh(&format!("head -c 123 {}@0", q(&f)));
    let (code, rest, err) = sh(&format!("cat {}@123,snapshot", q(&f)));
    assert_eq!(code, 0, "{err}");
    assert_eq!(format!("{first}{rest}"), all);
    // An offset ahead of the end waits for it, then gives exactly the bytes from it on.
    let end = all.len() as u64;
    let mut ahead = Proc::sh(&format!("exec cat {}@{}", q(&f), end + 3));
    wait_readers(&f, 1);
    write_each(&f, &["abcdef\n"]);
    assert_eq!(ahead.read_at_least(4, HANG), b"def\n");
}

#[test]
fn an_offset_older_than_the_ring_fails_and_a_bad_spec_is_einval() {
    let m = Mount::new(&["-o", "ring_buffer_size=16"]);
    let f = m.file("s");
    write_each(&f, &["0123456789\n", "abcdefghij\n"]);
    let ring_start = xattr_u64(&f, "ring_start");
    assert_eq!(ring_start, 11);
    let (code, _, err) = sh(&format!("cat {}@3", q(&f)));
    assert_ne!(code, 0);
    assert!(err.contains("Numerical result out of range"), "{err}");
    for bad in ["soon", "-10x", "1,2"] {
        let (code, _, err) = sh(&format!("cat {}@{bad}", q(&f)));
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("Invalid argument"), "{bad}: {err}");
        assert!(
            m.log_text().contains(&format!("invalid start '{bad}'")),
            "{bad}"
        );
    }
    // '@' is no longer allowed in new names, by create or by rename.
    let (code, _, err) = sh(&format!("touch {}", q(&m.file("x@y"))));
    assert!(code != 0 && err.contains("Invalid argument"), "{err}");
    // (mv reports rename's EINVAL as "cannot move ... to a subdirectory of itself".)
    let (code, _, err) = sh(&format!("mv {} {}", q(&f), q(&m.file("t@1"))));
    assert_ne!(code, 0, "{err}");
    assert_eq!(sh(&format!("ls {}", q(&m.path))).1, "s\n");
}

#[test]
fn per_stream_and_mount_default_starts() {
    let m = Mount::new(&["-o", "start=live"]);
    let f = m.file("s");
    write_each(&f, &["history\n"]);
    let mut r = Proc::cat(&f);
    wait_readers(&f, 1);
    write_each(&f, &["new\n"]);
    assert_eq!(
        r.read_at_least(4, HANG),
        b"new\n",
        "the mount's default is live"
    );
    drop(r);
    let (code, _, err) = sh(&format!(
        "setfattr -n user.streamfs.start -v -4B,snapshot {}",
        q(&f)
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(sh(&format!("cat {}", q(&f))).1, "new\n");
    let (code, _, _) = sh(&format!(
        "setfattr -n user.streamfs.start -v never {}",
        q(&f)
    ));
    assert_ne!(code, 0, "validated like the other settings");
    let reason = streamfs::control::get_xattr(&f, "user.streamfs.last_error").unwrap();
    assert!(reason.contains("invalid start 'never'"), "{reason}");
}

#[test]
fn ring_buffer_time_keeps_only_recent_writes() {
    let m = Mount::new(&["-o", "ring_buffer_time=1s"]);
    let f = m.file("s");
    write_each(&f, &["old\n"]);
    wait_for("the old write to age", HANG, || {
        sh(&format!("cat {}@snapshot", q(&f))).1.is_empty()
    });
    write_each(&f, &["new\n"]);
    assert_eq!(sh(&format!("cat {}@snapshot", q(&f))).1, "new\n");
}

#[test]
fn replay_align_line_starts_at_a_line() {
    let m = Mount::new(&["-o", "replay_align=line"]);
    let f = m.file("log");
    // Writes that cut lines: the ring's start is mid-line once the first write is gone.
    write_each(&f, &["alpha\nbr", "avo\ncharlie\nde", "lta\n"]);
    let cases: &[(&str, &str)] = &[
        ("snapshot", "alpha\nbravo\ncharlie\ndelta\n"),
        ("-12B,snapshot", "delta\n"),
        ("-14B,snapshot", "charlie\ndelta\n"),
        // An offset is exact whatever the alignment: resuming must not skip or repeat.
        ("10,snapshot", "o\ncharlie\ndelta\n"),
    ];
    for (spec, want) in cases {
        assert_eq!(sh(&format!("cat {}@{spec}", q(&f))).1, *want, "{spec}");
    }
}

/// Tools that trust `st_size` copy exactly the history from a snapshot name.
#[test]
fn snapshots_copy_exactly_with_tools_that_trust_st_size() {
    let m = Mount::new(&[]);
    let f = m.file("log");
    let lines: Vec<String> = (0..20).map(|i| format!("line {i}\n")).collect();
    let writes: Vec<&str> = lines.iter().map(String::as_str).collect();
    write_each(&f, &writes);
    let want = lines.concat();
    let out = m.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let snap = format!("{}@snapshot", q(&f));
    let cases = [
        ("cp", format!("cp {snap} {}/cp", q(&out)), "cp"),
        ("rsync", format!("rsync {snap} {}/rsync", q(&out)), "rsync"),
        (
            "tar",
            format!(
                "tar cf - -C {} log@snapshot | tar xf - -O > {}/tar",
                q(&m.path),
                q(&out)
            ),
            "tar",
        ),
    ];
    for (what, cmd, file) in cases {
        let (code, _, err) = sh(&format!("timeout 20 sh -c {}", shell_quote(&cmd)));
        assert_eq!(code, 0, "{what}: {err}");
        assert_eq!(
            std::fs::read_to_string(out.join(file)).unwrap(),
            want,
            "{what}"
        );
    }
    let (_, tail, _) = sh(&format!("timeout 20 tail -n 5 {snap}"));
    assert_eq!(tail, lines[15..].concat());
    // A live writer meanwhile does not make the copy wait or grow.
    let _writer = Proc::sh(&format!(
        "while true; do echo more >> {}; sleep 0.01; done",
        q(&f)
    ));
    let (code, out2, _) = sh(&format!("timeout 20 cat {snap}"));
    assert_eq!(code, 0);
    assert!(out2.starts_with("line") || out2.starts_with("more"));
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Viewers that zap into a live MPEG-TS stream: with `replay_align=mpegts` they start at a
/// keyframe after a PAT and PMT and decode their first frame without an error; the same
/// viewers on a stream aligned to whole writes (ffmpeg's 256 KiB blocks, cut anywhere)
/// show decoder errors.
#[test]
fn mpegts_viewers_that_join_at_random_moments_decode_cleanly() {
    let m = Mount::new(&["-o", "ring_buffer_size=1MB"]);
    let clip = m.dir.path().join("clip.ts");
    let (code, _, err) = sh(&format!(
        "ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=320x240:rate=25,noise=alls=30:allf=t \
         -t 40 -c:v libx264 -preset ultrafast -g 50 -b:v 2M -f mpegts -y {}",
        q(&clip)
    ));
    assert_eq!(code, 0, "{err}");
    let (ts, plain) = (m.file("ts"), m.file("plain"));
    for f in [&ts, &plain] {
        sh(&format!("touch {}", q(f)));
    }
    let (code, _, err) = sh(&format!(
        "setfattr -n user.streamfs.replay_align -v mpegts {}",
        q(&ts)
    ));
    assert_eq!(code, 0, "{err}");
    let writers: Vec<Proc> = [&ts, &plain]
        .iter()
        .map(|f| {
            Proc::sh(&format!(
                "exec ffmpeg -nostdin -loglevel error -re -i {} -c copy -f mpegts -y {}",
                q(&clip),
                q(f)
            ))
        })
        .collect();
    // Join once the ring has been trimmed (more than 1 MB written), at three moments.
    let mut errors = Vec::new();
    for k in 0..3 {
        let target = (1_300_000 + k * 600_000) as u64;
        wait_for("the writers to get ahead", Duration::from_secs(30), || {
            xattr_u64(&plain, "bytes_written") > target && xattr_u64(&ts, "bytes_written") > target
        });
        for (name, path) in [
            ("ts@live", format!("{}@live", ts.display())),
            ("plain", plain.display().to_string()),
        ] {
            let (code, _, err) = sh(&format!(
                "timeout 20 ffmpeg -nostdin -v error -i '{path}' -frames:v 10 -f null -"
            ));
            // A viewer of a replay cut anywhere may also give up (exit 1): only the
            // aligned one must succeed.
            if name == "ts@live" {
                assert_eq!(code, 0, "{name} viewer {k}: {err}");
            }
            errors.push((name, k, err));
        }
    }
    drop(writers);
    for (name, k, err) in &errors {
        if *name == "ts@live" {
            assert_eq!(
                err, "",
                "the mpegts-aligned viewer {k} reported decoder errors"
            );
        }
    }
    assert!(
        errors
            .iter()
            .any(|(n, _, e)| *n == "plain" && !e.is_empty()),
        "viewers of whole-write replays decoded cleanly too: the test proves nothing: {errors:?}"
    );
}
