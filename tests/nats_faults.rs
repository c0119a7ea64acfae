//! Faults under streams shared on NATS JetStream: a 3-node cluster with 3 replicas losing
//! the node a host is connected to, then the stream's leader; a server stopped and started
//! again. Writers pause and resume (or fail with EIO after nats_timeout, never hang), readers
//! go on with no gap, no duplicate, no torn or reordered record; every loss is counted.

mod common;

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::{Cluster, open_writer};
use common::records::{parse, record};
use common::{Mount, Proc, wait_for, wait_readers, xattr_u64};

const LONG: Duration = Duration::from_secs(60);
const LEN: usize = 2000;

fn host(nats: &Cluster, opts: &str) -> Mount {
    let url = nats.urls();
    Mount::new(&["--backend", &url, "-o", opts])
}

/// The server a mount is connected to, from its `backend` attribute.
fn connected_to(m: &Mount) -> String {
    let line = streamfs::control::get_xattr(&m.path, "user.streamfs.backend").unwrap();
    let at = line
        .find(" connected to ")
        .unwrap_or_else(|| panic!("{line}"))
        + 14;
    line[at..].split(' ').next().unwrap().to_string()
}

/// Writes records 0, 1, ... until stopped; keeps each one's result and the longest pause
/// between two acknowledged writes.
struct Writing {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<(u32, bool)>>>,
    longest: Arc<Mutex<Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writing {
    fn start(mut f: File) -> Writing {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let longest = Arc::new(Mutex::new(Duration::ZERO));
        let (s, d, l) = (stop.clone(), done.clone(), longest.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = 0;
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let ok = f.write_all(&record(0, seq, LEN)).is_ok();
                d.lock().unwrap().push((seq, ok));
                let mut longest = l.lock().unwrap();
                *longest = (*longest).max(last.elapsed());
                last = Instant::now();
                seq += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Writing {
            stop,
            done,
            longest,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.done.lock().unwrap().iter().filter(|r| r.1).count()
    }

    /// Waits for `n` more acknowledged writes.
    fn wait_more(&self, n: usize, what: &str) {
        let target = self.acked() + n;
        wait_for(what, LONG, || self.acked() >= target);
    }

    fn finish(mut self) -> (Vec<(u32, bool)>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let d = self.done.lock().unwrap().clone();
        (d, *self.longest.lock().unwrap())
    }
}

#[test]
fn killing_the_connected_node_then_the_leader_loses_and_repeats_nothing() {
    let mut nats = Cluster::three();
    // The writer waits out an election rather than fail.
    let opts = "nats_replicas=3,nats_timeout=40s,channel_buffer_size=64MB";
    let (a, b) = (host(&nats, opts), host(&nats, opts));
    let w = open_writer(&a, "cam");
    wait_for("cam on B", Duration::from_secs(10), || {
        b.file("cam").exists()
    });
    let mut ra = Proc::cat(&a.file("cam"));
    let mut rb = Proc::cat(&b.file("cam"));
    wait_readers(&a.file("cam"), 1);
    wait_readers(&b.file("cam"), 1);
    let writing = Writing::start(w);
    writing.wait_more(50, "writes before the faults");

    let node = connected_to(&a);
    let i = nats.index_of(&node).unwrap();
    let t = Instant::now();
    nats.kill(i);
    writing.wait_more(50, "writes after killing A's node");
    eprintln!(
        "killed {node} (A's node): 50 writes later after {:?}",
        t.elapsed()
    );
    nats.restart(i);

    let mut leader = None;
    wait_for("a stream leader", LONG, || {
        leader = nats.stream_leader("streamfs_cam");
        leader.is_some()
    });
    let leader = leader.unwrap();
    let j = nats.index_of(&leader).unwrap();
    let t = Instant::now();
    nats.kill(j);
    writing.wait_more(50, "writes after killing the stream leader");
    eprintln!(
        "killed {leader} (the leader): 50 writes later after {:?}",
        t.elapsed()
    );

    let (done, longest) = writing.finish();
    eprintln!("longest writer pause: {longest:?}");
    let failed: Vec<u32> = done.iter().filter(|r| !r.1).map(|r| r.0).collect();
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    let n = done.len();
    let want: Vec<(u32, u32)> = (0..n as u32).map(|s| (0, s)).collect();
    let total = n * record(0, 0, LEN).len();
    for (host, m, r) in [("A", &a, &mut ra), ("B", &b, &mut rb)] {
        let end = Instant::now() + LONG;
        while r.drain().len() < total && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = parse(r.drain());
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        // A missing write that is not the last is counted as dropped (the host saw the
        // writer's next one): the engine lost it. Only a missing last write can be a stall.
        assert!(
            got == want,
            "{host}: {} of {n} records, missing {missing:?}, last {:?}, dropped_writes {}; \
             log:\n{}\nservers:\n{}",
            got.len(),
            got.last(),
            xattr_u64(&m.file("cam"), "dropped_writes"),
            m.log_text(),
            nats.events()
        );
    }
    for m in [&a, &b] {
        assert_eq!(xattr_u64(&m.file("cam"), "dropped_writes"), 0);
    }
}

#[test]
fn a_server_stopped_fails_writes_with_eio_then_everyone_resumes() {
    let mut nats = Cluster::single();
    // File storage: the stream outlives its only server's restart.
    let a = host(&nats, "nats_storage=file,nats_timeout=2s");
    let b = host(&nats, "nats_storage=file,nats_timeout=60s");
    let mut w = open_writer(&a, "cam");
    std::fs::write(a.file("spare"), b"kept\n").unwrap();
    wait_for("cam on B", Duration::from_secs(10), || {
        b.file("cam").exists()
    });
    let mut ra = Proc::cat(&a.file("cam"));
    let mut rb = Proc::cat(&b.file("cam"));
    wait_readers(&a.file("cam"), 1);
    wait_readers(&b.file("cam"), 1);
    let one = record(0, 0, LEN).len();
    for s in 0..10 {
        w.write_all(&record(0, s, LEN)).unwrap();
    }
    ra.read_at_least(10 * one, LONG);
    rb.read_at_least(10 * one, LONG);

    nats.kill(0);
    for m in [&a, &b] {
        wait_for("the mounts to see the server gone", LONG, || {
            streamfs::control::get_xattr(&m.path, "user.streamfs.backend")
                .unwrap()
                .contains(" disconnected ")
        });
    }
    // A write waits nats_timeout for the cluster, then fails with EIO.
    let t = Instant::now();
    let e = w.write_all(&record(0, 10, LEN)).unwrap_err();
    let waited = t.elapsed();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "EIO after {waited:?}"
    );
    // A write waiting for the cluster (nats_timeout=60s on B) stays killable.
    let mut stuck = Proc::sh(&format!(
        "exec sh -c 'printf x > \"{}\"'",
        b.file("cam").display()
    ));
    wait_for("the stuck writer open on B", LONG, || {
        xattr_u64(&b.file("cam"), "writers") == 1
    });
    assert!(
        stuck.child.try_wait().unwrap().is_none(),
        "the write did not wait"
    );
    let t = Instant::now();
    common::kill(stuck.child.id(), libc::SIGKILL);
    let status = stuck.wait(Duration::from_secs(5));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the waiting write ended by the kill"
    );
    eprintln!("a waiting write killed after {:?}", t.elapsed());
    // rm fails at once and sends nothing: the stream is still there once the server is back.
    let spare = a.file("spare");
    assert!(spare.exists(), "made before the server went");
    let e = std::fs::remove_file(&spare).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    nats.restart(0);
    // Once the mounts are connected again, writes resume; readers go on where they were,
    // with nothing lost or repeated.
    for m in [&a, &b] {
        wait_for("the mounts to reconnect", LONG, || {
            streamfs::control::get_xattr(&m.path, "user.streamfs.backend")
                .unwrap()
                .contains(" connected ")
        });
    }
    for s in 11..20 {
        w.write_all(&record(0, s, LEN)).unwrap();
    }
    let want: Vec<(u32, u32)> = (0..10).chain(11..20).map(|s| (0, s)).collect();
    for (host, r) in [("A", &mut ra), ("B", &mut rb)] {
        let got = parse(r.read_at_least(19 * one, LONG));
        assert_eq!(got, want, "{host}");
    }
    assert!(b.file("cam").exists() && a.file("cam").exists());
    // A stream made on B after the restart is listed on A: A has listed the cluster's
    // streams since, and spare is among them (a removal sent late would have come first).
    std::fs::write(b.file("probe"), b"x").unwrap();
    wait_for("probe listed on A", LONG, || a.file("probe").exists());
    assert!(a.file("spare").exists() && b.file("spare").exists());
}
