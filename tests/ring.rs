//! The byte-exact ring: budgets count data bytes at every write size, write boundaries are
//! kept while small writes share storage, and a flood of 1-byte writes stays within a small
//! multiple of the budgets. First in the core, then on a real mount with writers that are
//! separate programs.

mod common;

use std::time::Duration;

use common::*;
use streamfs::memory::{CHUNK_OVERHEAD, ENTRY_COST, READER_COST, STREAM_COST};
use streamfs::stream::{
    Budgets, CHANNEL_BYTES_PER_RUN, Meta, Pool, RING_BYTES_PER_WRITE, ReadMode, ReadOutcome,
    Reader, Stream, Writer,
};

fn meta() -> Meta {
    let now = std::time::SystemTime::now();
    Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        crtime: now,
        ctime: now,
    }
}

fn stream(channel: u64, ring: u64) -> (std::sync::Arc<Stream>, std::sync::Arc<Pool>) {
    let pool = Pool::unlimited();
    (
        Stream::new(1, Budgets::new(channel, ring), meta(), pool.clone()),
        pool,
    )
}

/// Write `k` of `len` bytes: its number in decimal, padded, so that a replay shows which
/// writes it holds and that each is whole.
fn record(k: usize, len: usize) -> Vec<u8> {
    let digits = k.to_string().into_bytes();
    let mut v = vec![b'0'; len.saturating_sub(digits.len())];
    v.extend_from_slice(&digits);
    v.truncate(len);
    if len > 8 {
        v[len - 1] = b'\n';
    }
    v
}

fn read_all(r: &Reader) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let (tx, rx) = std::sync::mpsc::channel();
        r.read(
            64 << 10,
            ReadMode::NonBlocking,
            0,
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        match rx.recv().unwrap() {
            ReadOutcome::Data(d) => out.extend_from_slice(&d),
            _ => return out,
        }
    }
}

/// At every write size of 16 bytes or more, a late joiner replays at least 0.97 of the
/// ring's budget once that much was written, in whole writes ending with the newest.
#[test]
fn the_ring_holds_its_budget_in_data_at_every_write_size() {
    const RING: u64 = 1_000_000;
    for (len, min_fill) in [
        (16, 0.97),
        (20, 0.97),
        (64, 0.99),
        (1000, 0.99),
        (65536, 0.93),
    ] {
        let (s, _) = stream(1 << 20, RING);
        let w = s.open_writer();
        let n = (RING as usize * 3 / 2) / len + 1;
        for k in 0..n {
            w.write(&record(k, len)).unwrap();
        }
        let r = s.open_reader("late".into()).unwrap();
        let got = read_all(&r);
        let fill = got.len() as f64 / RING as f64;
        assert!(
            fill >= min_fill,
            "{len}-byte writes fill {fill:.3} of the ring"
        );
        assert!(got.len() as u64 <= RING, "{len}: over the budget");
        assert_eq!(got.len() % len, 0, "{len}: whole writes");
        let first = n - got.len() / len;
        let want: Vec<u8> = (first..n).flat_map(|k| record(k, len)).collect();
        assert!(got == want, "{len}: the newest writes, whole, in order");
        assert_eq!(s.stats().ring_bytes, got.len() as u64);
    }
}

/// The ring keeps at most one write per `RING_BYTES_PER_WRITE` bytes of its budget: smaller
/// writes fill it less, and their bookkeeping stays bounded by the budget.
#[test]
fn tiny_writes_are_bounded_by_their_count() {
    let (s, pool) = stream(1 << 20, 64_000);
    let w = s.open_writer();
    for _ in 0..50_000 {
        w.write(b"x").unwrap();
    }
    let writes = 64_000 / RING_BYTES_PER_WRITE;
    assert_eq!(s.stats().ring_bytes, writes);
    // Its index (32 bytes charged per write) and one open block: a small multiple.
    let used = pool.used() - STREAM_COST;
    assert!(used <= 3 * 64_000, "a ring of 1-byte writes uses {used}");
}

/// A flood of 1-byte writes with a reader that never reads: the reader's queue is one run
/// per shared block, so memory stays near its budget of data, not 100 times it.
#[test]
fn a_stopped_reader_of_a_one_byte_flood_costs_a_small_multiple_of_its_budget() {
    const CHANNEL: u64 = 100_000;
    let (s, pool) = stream(CHANNEL, 0);
    let r = s.open_reader("stopped".into()).unwrap();
    let w = s.open_writer();
    for _ in 0..(3 * CHANNEL) {
        w.write(b"y").unwrap();
    }
    let st = r.stats();
    assert_eq!(st.queued_bytes, CHANNEL, "the budget counts data bytes");
    assert_eq!(
        (st.dropped_writes, st.dropped_bytes),
        (2 * CHANNEL, 2 * CHANNEL)
    );
    assert!(
        st.live_runs <= 16,
        "{} runs for contiguous writes",
        st.live_runs
    );
    let used = pool.used() - STREAM_COST - READER_COST;
    assert!(
        used <= 2 * CHANNEL,
        "the stopped reader's queue uses {used}"
    );
    assert_eq!(read_all(&r), vec![b'y'; CHANNEL as usize]);
}

/// Writes cut apart by drops cannot share a run: the queue's bound of runs then drops
/// writes whose bytes would fit, so its bookkeeping stays within the budget's size.
#[test]
fn fragmented_queues_are_bounded_by_their_runs() {
    const CHANNEL: u64 = 4096;
    let (s, pool) = stream(CHANNEL, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    // Fill the budget, then alternate: read one byte, write two 1-byte writes (the first
    // fits in the byte freed, the second is dropped and cuts the next one off).
    for _ in 0..CHANNEL {
        w.write(b"a").unwrap();
    }
    let max_runs = (CHANNEL / CHANNEL_BYTES_PER_RUN) as usize;
    for _ in 0..10 * max_runs {
        let (tx, _rx) = std::sync::mpsc::channel();
        r.read(
            1,
            ReadMode::NonBlocking,
            0,
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        w.write(b"b").unwrap();
        w.write(b"c").unwrap();
    }
    let st = r.stats();
    assert!(
        st.live_runs <= max_runs,
        "{} runs over {max_runs}",
        st.live_runs
    );
    assert!(st.live_cost <= CHANNEL);
    // Its runs, and the data: an open block of at most 16 KiB.
    let index = pool.used() - STREAM_COST - READER_COST;
    assert!(index <= (max_runs as u64 + 1) * ENTRY_COST + (16 << 10) + CHUNK_OVERHEAD);
    // Drops are exact: what it got and what it dropped add up to what was written.
    let got = read_all(&r).len() as u64 + st.delivered_bytes;
    assert_eq!(
        got + st.dropped_bytes,
        s.stats().written_bytes,
        "every byte delivered or counted dropped"
    );
}

/// Shedding a stopped reader's queue of merged writes counts every write it drops.
#[test]
fn shedding_a_queue_of_merged_writes_counts_each_write() {
    let ns = streamfs::namespace::Namespace::with_limits(
        Budgets::new(1 << 20, 0),
        streamfs::stream::Policy::default(),
        streamfs::namespace::Limits {
            max_memory: 16 << 20,
            max_streams: 10,
            max_readers: 10,
        },
    );
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let r = s.open_reader("stopped".into()).unwrap();
    let w = s.open_writer();
    for k in 0..1000 {
        w.write(&record(k, 20)).unwrap();
    }
    // A big write elsewhere needs the room: the stopped reader's queue is shed.
    let (t, _) = ns.create(b"t", meta()).unwrap();
    let tw: Writer = t.open_writer();
    let big = vec![0u8; 15 << 20];
    let _ = tw.write(&big);
    let st = r.stats();
    assert_eq!(st.dropped_writes, 1000, "{st:?}");
    assert_eq!(st.dropped_bytes, 20_000);
    assert_eq!(st.queued_bytes, 0);
}

/// A write in pieces keeps its pieces' chunks (no copy for large writes), and a replay from
/// an offset inside its second piece gives exactly the bytes from there.
#[test]
fn a_large_write_in_pieces_replays_exactly_from_an_offset_inside_it() {
    let (s, _) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    w.write(b"head\n").unwrap();
    let pieces: Vec<Vec<u8>> = (0..3).map(|k| vec![b'a' + k as u8; 5000]).collect();
    for p in &pieces {
        w.append(p, 0).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    w.finish(
        0,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap().unwrap();
    w.write(b"tail\n").unwrap();
    let all: Vec<u8> = [b"head\n".to_vec(), pieces.concat(), b"tail\n".to_vec()].concat();
    for at in [0u64, 5, 5004, 5005, 7777, 15005, 15007] {
        let start = streamfs::stream::Start {
            from: streamfs::stream::Origin::Offset(at),
            snapshot: true,
        };
        let r = s.open_reader_at("at".into(), start).unwrap();
        assert!(read_all(&r) == all[at as usize..], "from {at}");
    }
}

/// A reader that keeps up with small writes reads them from the open block (copied), and
/// after the block is sealed the same bytes from the sealed chunk: nothing lost or doubled
/// at the seal, whatever the read sizes.
#[test]
fn reads_across_a_block_seal_lose_nothing() {
    let (s, _) = stream(1 << 20, 1 << 20);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let mut want = Vec::new();
    let mut got = Vec::new();
    for k in 0..5000 {
        let d = record(k, 1 + k % 37);
        w.write(&d).unwrap();
        want.extend_from_slice(&d);
        if k % 7 == 0 {
            let (tx, rx) = std::sync::mpsc::channel();
            r.read(
                1 + k % 50,
                ReadMode::NonBlocking,
                0,
                Box::new(move |o| {
                    let _ = tx.send(o);
                }),
            );
            if let ReadOutcome::Data(d) = rx.recv().unwrap() {
                got.extend_from_slice(&d);
            }
        }
    }
    got.extend(read_all(&r));
    assert!(got == want);
    let late = s.open_reader("late".into()).unwrap();
    assert!(
        read_all(&late) == want,
        "the ring holds them all, across the seals"
    );
}

/// A small write's storage is a share of a block: the pool is charged about its bytes, not
/// `CHUNK_OVERHEAD` each.
#[test]
fn small_writes_share_blocks_in_the_pool() {
    let (s, pool) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    let before = pool.used();
    for k in 0..10_000 {
        w.write(&record(k, 20)).unwrap();
    }
    let per_write = (pool.used() - before) as f64 / 10_000.0;
    // 20 bytes, a 32-byte boundary record, and a share of a block's overhead and segment.
    assert!(
        per_write < 20.0 + 32.0 + 4.0,
        "{per_write} bytes per write (a chunk each would be {})",
        20 + CHUNK_OVERHEAD + 32
    );
}

// ---------------------------------------------------------------------------------------
// On a real mount
// ---------------------------------------------------------------------------------------

/// Writes `n` writes of `len` bytes to `path` with one write(2) each, from python.
fn python_writes(path: &std::path::Path, len: usize, n: usize) {
    run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_WRONLY)\n\
             n, size = int(sys.argv[2]), int(sys.argv[3])\n\
             for k in range(n):\n\
             \x20   os.write(fd, b'%0*d\\n' % (size - 1, k))\n",
            )
            .arg(path)
            .arg(n.to_string())
            .arg(len.to_string()),
    );
}

/// 20-byte lines and 1 KB writes, each by a separate program, fill a 1 MB ring: a late
/// joiner's replay is at least 0.97 MB of whole writes.
#[test]
fn on_a_mount_late_joiners_replay_a_full_ring_of_small_writes() {
    let m = Mount::new(&["-o", "ring_buffer_size=1MB"]);
    for (name, len) in [("lines", 20usize), ("kb", 1000)] {
        let f = m.file(name);
        std::fs::File::create(&f).unwrap();
        let budget = xattr_u64(&f, "ring_buffer_size");
        let n = budget as usize * 6 / 5 / len;
        python_writes(&f, len, n);
        let ring = xattr_u64(&f, "ring_bytes");
        eprintln!("{name}: the ring holds {ring} of {budget} bytes");
        assert!(
            ring as f64 >= 0.97 * budget as f64 && ring <= budget,
            "{name}: the ring holds {ring} of {budget}"
        );
        // The late joiner: a snapshot is exactly the replay a reader gets.
        let got = std::fs::read(format!("{}@snapshot", f.display())).unwrap();
        assert_eq!(got.len() as u64, ring, "{name}");
        assert_eq!(got.len() % len, 0, "{name}: whole writes");
        let last = got.rsplit(|b| *b == b'\n').nth(1).unwrap();
        let last: usize = std::str::from_utf8(last).unwrap().parse().unwrap();
        assert_eq!(last, n - 1, "{name}: ends with the newest write");
        // And a plain late `cat` replays the same before any live byte.
        let mut cat = Proc::cat(&f);
        let replay = cat
            .read_at_least(got.len(), Duration::from_secs(20))
            .to_vec();
        assert!(replay[..got.len()] == got[..], "{name}: cat's replay");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A flood of 1-byte writes with a reader that holds the stream open and never reads: the
/// daemon's memory stays within a generous multiple of the budgets (3 × ring plus 3 ×
/// channel, plus the allocator's and the kernel buffers' share), and the pool it reports
/// within 3 × (ring + channel).
#[test]
fn on_a_mount_a_one_byte_flood_with_a_stopped_reader_keeps_memory_bounded() {
    const RING: u64 = 1 << 20;
    const CHANNEL: u64 = 256 << 10;
    let m = Mount::new(&[
        "-o",
        "ring_buffer_size=1MiB,channel_buffer_size=256KiB,max_memory=512MB",
    ]);
    let f = m.file("flood");
    std::fs::File::create(&f).unwrap();
    // The stopped reader: opens, then sleeps without reading.
    let mut reader = Proc::sh(&format!(
        "exec python3 -c \"import os,time; fd=os.open('{}', os.O_RDONLY); print('open', flush=True); time.sleep(600)\"",
        f.display()
    ));
    reader.read_at_least(5, Duration::from_secs(10));
    wait_readers(&f, 1);
    let before = rss_kib(m.daemon_pid());
    let n = 400_000;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_WRONLY)\n\
             for _ in range(int(sys.argv[2])):\n\
             \x20   os.write(fd, b'z')\n",
        )
        .arg(&f)
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(xattr_u64(&f, "bytes_written"), n);
    let after = rss_kib(m.daemon_pid());
    let pool = xattr_u64(&m.path, "memory");
    assert!(
        pool <= 3 * (RING + CHANNEL),
        "the pool holds {pool} for a ring of {RING} and a channel of {CHANNEL}"
    );
    let grown = after.saturating_sub(before) * 1024;
    eprintln!("1-byte flood: pool {pool} bytes, daemon RSS {before} KiB -> {after} KiB");
    assert!(
        grown <= 3 * (RING + CHANNEL) + (4 << 20),
        "the daemon grew by {grown} bytes (from {before} KiB)"
    );
    // The reader's queue is its budget of data, the rest counted as dropped.
    assert_eq!(xattr_u64(&f, "dropped_bytes"), n - CHANNEL);
}
