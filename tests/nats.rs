//! Streams shared by several hosts on NATS JetStream: two or three real mounts on one real
//! NATS server stand in for hosts (`--backend`). Written on one, read on all, in one order,
//! whole; the namespace, sizes and removal across mounts; late joiners' replay; the options.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::nats::{Cluster, free_port, open_writer};
use common::records::{parse, record};
use common::{Mount, Proc, sh, wait_for, wait_readers, xattr_u64};

const LONG: Duration = Duration::from_secs(30);

fn host(nats: &Cluster, extra: &[&str]) -> Mount {
    let url = nats.urls();
    let mut args = vec!["--backend", url.as_str(), "-o", "channel_buffer_size=64MB"];
    args.extend_from_slice(extra);
    Mount::new(&args)
}

#[test]
fn a_writer_on_one_host_reaches_readers_on_both_alike() {
    let nats = Cluster::single();
    let (a, b) = (host(&nats, &[]), host(&nats, &[]));
    let mut w = open_writer(&a, "cam");
    wait_for("cam listed on B", LONG, || b.file("cam").exists());
    let mut ra = Proc::cat(&a.file("cam"));
    let mut rb = Proc::cat(&b.file("cam"));
    wait_readers(&a.file("cam"), 1);
    wait_readers(&b.file("cam"), 1);
    // Small writes, 64 KiB, exactly 1 MiB (two messages under the default 1 MiB payload
    // limit) and 3 MiB (a write() the kernel splits, sent in parts): each whole.
    let sizes = [1usize, 100, 65_536, 1 << 20, 3 << 20, 7, 200_000];
    let mut total = 0;
    for (i, len) in sizes.iter().cycle().take(28).enumerate() {
        let r = record(0, i as u32, *len);
        w.write_all(&r).unwrap();
        total += r.len();
    }
    let got_a = ra.read_at_least(total, LONG).to_vec();
    let got_b = rb.read_at_least(total, LONG).to_vec();
    assert_eq!(got_a.len(), total);
    assert!(got_a == got_b, "the two hosts' readers differ");
    let want: Vec<(u32, u32)> = (0..28).map(|i| (0, i)).collect();
    assert_eq!(parse(&got_a), want);
    for m in [&a, &b] {
        assert_eq!(xattr_u64(&m.file("cam"), "dropped_writes"), 0);
    }
}

#[test]
fn eight_writers_on_two_hosts_make_one_order_of_whole_records() {
    let nats = Cluster::single();
    let (a, b) = (host(&nats, &[]), host(&nats, &[]));
    drop(open_writer(&a, "mix"));
    wait_for("mix listed on B", LONG, || b.file("mix").exists());
    let mut ra = Proc::cat(&a.file("mix"));
    let mut rb = Proc::cat(&b.file("mix"));
    wait_readers(&a.file("mix"), 1);
    wait_readers(&b.file("mix"), 1);
    const PER: u32 = 24;
    let size = |w: u32, s: u32| match (w * 7 + s * 13) % 9 {
        0 => 1_500_000,
        1..=3 => 100 + (s as usize * 977) % 4000,
        _ => 20_000 + (w as usize * 5_113 + s as usize * 7_919) % 120_000,
    };
    let total: usize = (0..8)
        .flat_map(|w| (0..PER).map(move |s| record(w, s, size(w, s)).len()))
        .sum();
    std::thread::scope(|scope| {
        for w in 0..8u32 {
            let m = if w % 2 == 0 { &a } else { &b };
            scope.spawn(move || {
                let mut f = open_writer(m, "mix");
                for s in 0..PER {
                    f.write_all(&record(w, s, size(w, s))).unwrap();
                }
            });
        }
    });
    let got_a = parse(ra.read_at_least(total, LONG));
    let got_b = parse(rb.read_at_least(total, LONG));
    assert_eq!(got_a, got_b, "the hosts' readers saw different orders");
    assert_eq!(got_a.len(), 8 * PER as usize);
    for w in 0..8 {
        let mine: Vec<u32> = got_a.iter().filter(|r| r.0 == w).map(|r| r.1).collect();
        assert_eq!(mine, (0..PER).collect::<Vec<_>>(), "writer {w}'s records");
    }
}

#[test]
fn late_joiners_on_any_host_get_the_replay() {
    let nats = Cluster::single();
    let (a, b) = (host(&nats, &[]), host(&nats, &[]));
    let mut w = open_writer(&a, "late");
    let mut total = 0;
    for i in 0..20 {
        let r = record(1, i, 10_000);
        w.write_all(&r).unwrap();
        total += r.len();
    }
    // A reader that opens on B after the writes, and a host that mounts after them.
    wait_for("B holds what A wrote", LONG, || {
        b.file("late").exists() && xattr_u64(&b.file("late"), "bytes_written") == total as u64
    });
    let mut rb = Proc::cat(&b.file("late"));
    let c = host(&nats, &[]);
    wait_for("late listed on C", LONG, || c.file("late").exists());
    wait_for("C holds the retention", LONG, || {
        xattr_u64(&c.file("late"), "bytes_written") == total as u64
    });
    let mut rc = Proc::cat(&c.file("late"));
    // A start position is the local ring's: `@live` skips the replay on any host.
    let mut live = Proc::cat(&c.file("late@live"));
    wait_readers(&c.file("late"), 2);
    let want: Vec<(u32, u32)> = (0..20).map(|i| (1, i)).collect();
    assert_eq!(parse(rb.read_at_least(total, LONG)), want);
    assert_eq!(parse(rc.read_at_least(total, LONG)), want);
    // And live data after the replay, with no gap.
    let r = record(1, 20, 5);
    w.write_all(&r).unwrap();
    let mut more = want.clone();
    more.push((1, 20));
    assert_eq!(parse(rc.read_at_least(total + r.len(), LONG)), more);
    assert_eq!(parse(live.read_at_least(r.len(), LONG)), vec![(1, 20)]);
}

#[test]
fn the_namespace_sizes_and_removal_hold_across_hosts() {
    let nats = Cluster::single();
    // A's streams also get a max_age (ring_buffer_time), under which JetStream's duplicate
    // window must fit.
    let (a, b) = (
        host(&nats, &["-o", "ring_buffer_time=30s"]),
        host(&nats, &[]),
    );
    // Names JetStream could not take as they are map reversibly.
    for name in ["cam", "a.b c", "x_y*z>"] {
        drop(open_writer(&a, name));
        let t = Instant::now();
        wait_for(
            &format!("{name:?} listed on B"),
            Duration::from_secs(1),
            || {
                std::fs::read_dir(&b.path)
                    .unwrap()
                    .any(|e| e.unwrap().file_name() == name)
            },
        );
        eprintln!("{name:?} listed on B after {:?}", t.elapsed());
    }
    // stat's size is what every host wrote.
    let mut wa = open_writer(&a, "cam");
    let mut wb = open_writer(&b, "cam");
    wa.write_all(&[b'a'; 1000]).unwrap();
    wb.write_all(&[b'b'; 500]).unwrap();
    for m in [&a, &b] {
        wait_for("size 1500 on both", LONG, || {
            std::fs::metadata(m.file("cam")).unwrap().len() == 1500
        });
    }
    // rm on B: A's reader gets its queue then EOF, A's writer EPIPE.
    let mut ra = Proc::cat(&a.file("cam"));
    wait_readers(&a.file("cam"), 1);
    ra.read_at_least(1500, LONG);
    std::fs::remove_file(b.file("cam")).unwrap();
    let got = ra.read_to_eof(Duration::from_secs(5)).len();
    assert_eq!(got, 1500);
    wait_for("cam gone on A", Duration::from_secs(1), || {
        !a.file("cam").exists()
    });
    let e = wa.write_all(b"late").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
    // Rename cannot be atomic across hosts: refused.
    let e = std::fs::rename(a.file("a.b c"), a.file("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
    // A policy that cannot hold across hosts is refused on a stream, as at mount time.
    let (code, _, err) = sh(&format!(
        "setfattr -n user.streamfs.slow_reader -v block '{}'",
        a.file("a.b c").display()
    ));
    assert!(
        code != 0 && err.contains("Invalid argument"),
        "slow_reader=block: {err}"
    );
    // status shows the connection.
    let (code, out, _) = sh(&format!("{} status '{}'", common::bin(), a.path.display()));
    assert_eq!(code, 0);
    assert!(
        out.contains("backend: nats nats://") && out.contains(" connected "),
        "{out}"
    );
}

#[test]
fn bad_options_and_an_unreachable_server_stop_before_mounting() {
    let (_dir, mnt) = common::mount_dir("streamfs-nats-opts");
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--backend", "http://h:1"],
            2,
            "invalid --backend 'http://h:1'",
        ),
        (
            &["-o", "backend=nats://h:1,nats_replicas=0"],
            2,
            "invalid nats_replicas '0'",
        ),
        (
            &["-o", "backend=nats://h:1,nats_storage=disk"],
            2,
            "invalid nats_storage 'disk'",
        ),
        (
            &["-o", "backend=nats://h:1,nats_timeout=soon"],
            2,
            "invalid nats_timeout 'soon'",
        ),
        (
            &["-o", "nats_prefix=team"],
            2,
            "invalid option 'nats_prefix'",
        ),
        (
            &["--backend", "nats://h:1", "-o", "slow_reader=block"],
            2,
            "invalid slow_reader 'block'",
        ),
        (
            &["--backend", "nats://h:1", "-o", "on_writer_close=eof"],
            2,
            "invalid on_writer_close 'eof'",
        ),
        (
            &[
                "--backend",
                "nats://h:1",
                "--nats-creds",
                "/nonexistent/x.creds",
            ],
            2,
            "invalid nats_creds '/nonexistent/x.creds': cannot read it",
        ),
        (
            &["--backend", &dead],
            1,
            "cannot reach NATS at nats://127.0.0.1:",
        ),
        (
            &["-f", "--backend", &dead],
            1,
            "cannot reach NATS at nats://127.0.0.1:",
        ),
    ];
    for (args, want_code, want_err) in cases {
        let out = std::process::Command::new(common::bin())
            .arg(&mnt)
            .args(*args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*want_code), "{args:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("streamfs: "))
            .unwrap_or_else(|| panic!("{args:?}: no error line in {err:?}"));
        assert!(line.contains(want_err), "{args:?}: {line}");
        assert!(!common::is_mounted(&mnt), "{args:?} mounted");
    }
}

#[test]
fn a_host_behind_the_retention_counts_exactly_what_it_lost() {
    let nats = Cluster::single();
    let (a, b) = (host(&nats, &[]), host(&nats, &[]));
    let mut w = open_writer(&a, "far");
    wait_for("far listed on B", LONG, || b.file("far").exists());
    let mut rb = Proc::cat(&b.file("far"));
    wait_readers(&b.file("far"), 1);
    // B stops reading (its daemon stopped) while A writes well past the retention (16 MiB
    // for the default 6 MiB ring).
    common::kill(b.daemon_pid(), libc::SIGSTOP);
    const N: u32 = 48;
    let one = record(2, 0, 1 << 20).len();
    for s in 0..N {
        w.write_all(&record(2, s, 1 << 20)).unwrap();
    }
    common::kill(b.daemon_pid(), libc::SIGCONT);
    let marker = record(2, N, 10);
    w.write_all(&marker).unwrap();
    // B's reader gets whole records in order, up to the marker; what it misses is counted.
    wait_for("B to apply the marker", LONG, || {
        let (wr, dr) = (
            xattr_u64(&b.file("far"), "writes"),
            xattr_u64(&b.file("far"), "dropped_writes"),
        );
        wr + dr == N as u64 + 1
    });
    let dropped = xattr_u64(&b.file("far"), "dropped_writes");
    let dropped_bytes = xattr_u64(&b.file("far"), "dropped_bytes");
    assert!(
        dropped > 0,
        "nothing was lost: the test did not outrun the retention"
    );
    eprintln!(
        "B lost {dropped} of {} writes ({dropped_bytes} bytes)",
        N + 1
    );
    let got_len = (N as usize + 1 - dropped as usize - 1) * one + marker.len();
    let got = parse(rb.read_at_least(got_len, LONG));
    assert_eq!(got.last(), Some(&(2, N)));
    assert!(
        got.windows(2).all(|p| p[0].1 < p[1].1),
        "out of order: {got:?}"
    );
    assert_eq!(got.len() as u64 + dropped, N as u64 + 1);
    assert_eq!(dropped_bytes, dropped * one as u64);
}

#[test]
fn an_http_reader_on_one_host_gets_what_a_writer_on_another_writes() {
    let nats = Cluster::single();
    let a = host(&nats, &[]);
    let b = host(&nats, &["--http", "127.0.0.1:0"]);
    let port = b.http_port();
    let mut w = open_writer(&a, "cam");
    w.write_all(b"replayed\n").unwrap();
    wait_for("cam on B", LONG, || {
        b.file("cam").exists() && xattr_u64(&b.file("cam"), "bytes_written") == 9
    });
    let mut curl = Proc::sh(&format!(
        "exec curl -sN http://127.0.0.1:{port}/streams/cam"
    ));
    assert_eq!(curl.read_at_least(9, LONG), b"replayed\n");
    wait_readers(&b.file("cam"), 1);
    w.write_all(b"live\n").unwrap();
    assert_eq!(curl.read_at_least(14, LONG), b"replayed\nlive\n");
    // An upload on B is a write like any other: A's readers get it.
    let mut ra = Proc::cat(&a.file("cam"));
    wait_readers(&a.file("cam"), 1);
    let (code, _, err) = sh(&format!(
        "printf 'up\\n' | curl -sf -X POST --data-binary @- http://127.0.0.1:{port}/streams/cam"
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(ra.read_at_least(14 + 3, LONG), b"replayed\nlive\nup\n");
    // rm on A ends the HTTP reader on B.
    std::fs::remove_file(a.file("cam")).unwrap();
    assert_eq!(
        curl.read_to_eof(Duration::from_secs(5)),
        b"replayed\nlive\nup\n"
    );
}

/// JetStream keeps 16 MiB of a stream with the default ring: a longer write would be
/// evicted in part before the feeds read it, and lost though acknowledged. It is refused
/// whole (EFBIG) before any of it is taken; one that fits goes through.
#[test]
fn a_write_longer_than_the_retention_is_refused_whole() {
    let nats = Cluster::single();
    let a = host(&nats, &[]);
    let p = a.file("big");
    std::fs::File::create(&p).unwrap();
    for (bs, ok) in [("17M", false), ("8M", true)] {
        let (code, _, err) = sh(&format!(
            "dd if=/dev/zero of='{}' bs={bs} count=1 status=none",
            p.display()
        ));
        assert_eq!(code == 0, ok, "bs={bs}: {err}");
        if !ok {
            assert!(err.contains("File too large"), "bs={bs}: {err}");
        }
    }
    wait_for("the 8 MiB write", LONG, || {
        xattr_u64(&p, "bytes_written") == 8 << 20
    });
    assert_eq!(xattr_u64(&p, "writes"), 1, "nothing of the refused write");
}
