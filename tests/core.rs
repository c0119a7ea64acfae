//! Focused tests of the stream core (`streamfs::stream`, `streamfs::namespace`), without FUSE.
//! Each test asserts the one behaviour its name states; the contract is the module docs of
//! `src/stream.rs` and `src/namespace.rs`.
//!
//! Tests marked `Regression` reproduce breaches of the contract found by these tests and
//! fixed since (see their doc comments).

use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use streamfs::memory::{ENTRY_COST, STREAM_COST};
use streamfs::namespace::{FIRST_STREAM_ID, Limits, Namespace};
use streamfs::stream::{
    Budgets, CHUNK_OVERHEAD, MAX_WRITE, Meta, OnWriterClose, Policy, Pool, ReadMode, ReadOutcome,
    Reader, Readiness, SlowReader, Stream, StreamError, Writer, chunk_cost,
};
use streamfs::sync::{Arc, Ordering};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        crtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
    }
}

fn budgets(channel: u64, ring: u64) -> Budgets {
    Budgets::new(channel, ring)
}

/// A stream of its own, with the pool (memory and parked-read counter) it reports to.
fn stream(channel: u64, ring: u64) -> (Arc<Stream>, Arc<Pool>) {
    let pool = Pool::unlimited();
    let s = Stream::new(7, budgets(channel, ring), meta(), pool.clone());
    (s, pool)
}

/// Distinct, recognisable bytes for write number `k`.
fn pattern(k: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = k
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
            (x >> 56) as u8 ^ (x >> 17) as u8
        })
        .collect()
}

/// Reads without waiting; the answer must come before `read` returns.
fn read_now(r: &Reader, max: usize) -> ReadOutcome {
    let (tx, rx) = mpsc::channel();
    let parked = r.read(
        max,
        ReadMode::NonBlocking,
        0,
        Box::new(move |o| {
            let _ = tx.send(o);
        }),
    );
    assert_eq!(parked, None, "a non-blocking read never parks");
    let out = rx.try_recv().expect("answered before read returned");
    assert!(rx.try_recv().is_err(), "answered exactly once");
    out
}

/// A read that may wait: returns the parked id (if it parked) and where the answer arrives.
fn read_wait(r: &Reader, max: usize, tag: u32) -> (Option<u64>, mpsc::Receiver<ReadOutcome>) {
    let (tx, rx) = mpsc::channel();
    let id = r.read(
        max,
        ReadMode::Wait,
        tag,
        Box::new(move |o| {
            let _ = tx.send(o);
        }),
    );
    (id, rx)
}

/// Everything queued for `r` now, by non-blocking reads of `step` bytes; also returns how
/// the last read ended (WouldBlock or Eof).
fn drain(r: &Reader, step: usize) -> (Vec<u8>, ReadOutcome) {
    let mut out = Vec::new();
    loop {
        match read_now(r, step) {
            ReadOutcome::Data(d) => {
                assert!(!d.is_empty(), "Data is never empty");
                assert!(d.len() <= step, "a read returns at most max bytes");
                out.extend_from_slice(&d);
            }
            end => return (out, end),
        }
    }
}

/// A wake callback and a counter of its calls.
fn waker() -> (streamfs::stream::Wake, Arc<StdAtomicUsize>) {
    let n = Arc::new(StdAtomicUsize::new(0));
    let n2 = n.clone();
    (
        Box::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }),
        n,
    )
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------
// Writing, ordering and fanout
// ---------------------------------------------------------------------------------------

#[test]
fn writes_are_delivered_in_write_order() {
    let (s, _) = stream(1 << 20, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..20).map(|k| pattern(k, 1 + k as usize * 3)).collect();
    for d in &writes {
        w.write(d).unwrap();
    }
    let (got, end) = drain(&r, 7);
    assert_eq!(got, writes.concat());
    assert_eq!(end, ReadOutcome::WouldBlock);
}

#[test]
fn a_read_spans_several_queued_writes_and_resumes_mid_write() {
    let (s, _) = stream(1 << 20, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (a, b, c) = (pattern(1, 5), pattern(2, 5), pattern(3, 5));
    w.write(&a).unwrap();
    w.write(&b).unwrap();
    w.write(&c).unwrap();
    assert_eq!(read_now(&r, 3), ReadOutcome::Data(a[..3].to_vec().into()));
    assert_eq!(
        read_now(&r, 9),
        ReadOutcome::Data(concat(&[&a[3..], &b, &c[..2]]).into())
    );
    assert_eq!(r.stats().queued_bytes, 3);
    assert_eq!(read_now(&r, 100), ReadOutcome::Data(c[2..].to_vec().into()));
    assert_eq!(read_now(&r, 100), ReadOutcome::WouldBlock);
}

#[test]
fn readers_of_one_write_share_its_bytes_and_a_read_across_writes_gathers() {
    let (s, _) = stream(1 << 20, 0);
    let (r1, r2) = (
        s.open_reader("r1".into()).unwrap(),
        s.open_reader("r2".into()).unwrap(),
    );
    let w = s.open_writer();
    let (a, b) = (pattern(1, 4096), pattern(2, 100));
    w.write(&a).unwrap();
    w.write(&b).unwrap();
    let data = |o: ReadOutcome| match o {
        ReadOutcome::Data(d) => d,
        other => panic!("expected data, got {other:?}"),
    };
    // Reads that end within the first write return the one stored copy of it.
    let (x1, x2) = (data(read_now(&r1, 1000)), data(read_now(&r2, 1000)));
    assert_eq!(&*x1, &a[..1000]);
    assert_eq!(
        x1.as_ptr(),
        x2.as_ptr(),
        "both readers see the same bytes, not copies"
    );
    let (y1, y2) = (data(read_now(&r1, 5000)), data(read_now(&r2, 5000)));
    // Spanning the rest of `a` and all of `b`: gathered, one buffer per read.
    assert_eq!(&*y1, concat(&[&a[1000..], &b]).as_slice());
    assert_eq!(y1, y2);
    assert_ne!(y1.as_ptr(), y2.as_ptr());
}

/// `read_runs` of a reader set to `one_run` takes a backlog as ranges of its runs, each
/// shared with the other readers' (nothing copied), at most `pieces` and `max` bytes at a
/// time, and says what is left; its parked reads end at a run's end too.
#[test]
fn read_runs_takes_a_backlog_as_shared_runs_and_says_what_is_left() {
    // Write sizes, `max`, `pieces`: how many runs each call takes, and what is left after it.
    struct Case {
        sizes: &'static [usize],
        max: usize,
        pieces: usize,
        calls: &'static [(usize, Readiness)],
    }
    let cases = [
        Case {
            sizes: &[4096, 5000, 8192],
            max: 1 << 20,
            pieces: 16,
            calls: &[(3, Readiness::Waiting)],
        },
        Case {
            sizes: &[4096, 5000, 8192],
            max: 1 << 20,
            pieces: 2,
            calls: &[(2, Readiness::Readable), (1, Readiness::Waiting)],
        },
        // `max` cuts a run: the rest of it comes first in the next call.
        Case {
            sizes: &[4096, 5000],
            max: 6000,
            pieces: 16,
            calls: &[(2, Readiness::Readable), (1, Readiness::Waiting)],
        },
        Case {
            sizes: &[],
            max: 1 << 20,
            pieces: 16,
            calls: &[(0, Readiness::Waiting)],
        },
    ];
    for Case {
        sizes,
        max,
        pieces,
        calls,
    } in cases
    {
        let (s, _) = stream(1 << 20, 0);
        let (r, other) = (
            s.open_reader("r".into()).unwrap(),
            s.open_reader("other".into()).unwrap(),
        );
        r.set_one_run();
        other.set_one_run();
        let w = s.open_writer();
        let writes: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, n)| pattern(k as u64, *n))
            .collect();
        for d in &writes {
            w.write(d).unwrap();
        }
        let mut got = Vec::new();
        for (n, left) in calls {
            let mut out = Vec::new();
            let mut theirs = Vec::new();
            assert_eq!(r.read_runs(max, pieces, &mut out), *left, "{sizes:?}");
            other.read_runs(max, pieces, &mut theirs);
            assert_eq!(out.len(), *n, "{sizes:?} max {max} pieces {pieces}");
            assert!(out.iter().map(|b| b.len()).sum::<usize>() <= max);
            for (mine, theirs) in out.iter().zip(&theirs) {
                assert_eq!(mine.as_ptr(), theirs.as_ptr(), "shared, not copied");
                got.extend_from_slice(mine);
            }
        }
        assert_eq!(got, writes.concat(), "{sizes:?}");
    }
    // A parked read of such a reader is answered with one run, not a gather.
    let (s, _) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    w.write(&pattern(1, 4096)).unwrap();
    w.write(&pattern(2, 4096)).unwrap();
    let r = s.open_reader("r".into()).unwrap();
    r.set_one_run();
    match read_now(&r, 1 << 20) {
        ReadOutcome::Data(d) => assert_eq!(&*d, pattern(1, 4096).as_slice()),
        other => panic!("expected data, got {other:?}"),
    }
    drop(w);
    let mut out = Vec::new();
    assert_eq!(r.read_runs(1 << 20, 16, &mut out), Readiness::Waiting);
    assert_eq!(out.len(), 1);
    s.remove();
    out.clear();
    assert_eq!(r.read_runs(1 << 20, 16, &mut out), Readiness::Ended);
    assert!(out.is_empty());
}

/// Small writes live in the stream's open block, which a read copies; when two readers or
/// more read at least 1 KiB of it, the first read seals the block and every reader shares
/// the one chunk (what keeps 5,000 HTTP listeners from each holding a copy).
#[test]
fn readers_of_small_writes_share_a_sealed_block_from_1_kib_on() {
    // (readers, bytes of 100-byte writes, whether the readers' reads share one buffer)
    let cases = [
        (2, 1100, true),
        (3, 4000, true),
        (2, 900, false),
        (1, 4000, false),
    ];
    for (readers, total, shared) in cases {
        let (s, _) = stream(1 << 20, 1 << 20);
        let rs: Vec<_> = (0..readers)
            .map(|i| s.open_reader(format!("r{i}")).unwrap())
            .collect();
        let w = s.open_writer();
        let writes: Vec<Vec<u8>> = (0..total / 100).map(|k| pattern(k as u64, 100)).collect();
        for d in &writes {
            w.write(d).unwrap();
        }
        let got: Vec<_> = rs
            .iter()
            .map(|r| match read_now(r, 1 << 20) {
                ReadOutcome::Data(d) => d,
                other => panic!("expected data, got {other:?}"),
            })
            .collect();
        for g in &got {
            assert_eq!(&**g, writes.concat().as_slice(), "case {readers} {total}");
        }
        if readers > 1 {
            assert_eq!(
                got[0].as_ptr() == got[1].as_ptr(),
                shared,
                "readers {readers}, {total} bytes"
            );
        }
        // A late joiner replays the same bytes whether the block was sealed or not.
        let late = s.open_reader("late".into()).unwrap();
        assert_eq!(
            drain(&late, 1 << 20).0,
            writes.concat(),
            "case {readers} {total}"
        );
    }
}

#[test]
fn every_reader_receives_every_write_fanout() {
    let (s, _) = stream(1 << 20, 0);
    let readers: Vec<Reader> = (0..5)
        .map(|i| s.open_reader(format!("r{i}")).unwrap())
        .collect();
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..10).map(|k| pattern(k, 10 + k as usize)).collect();
    for d in &writes {
        w.write(d).unwrap();
    }
    for (i, r) in readers.iter().enumerate() {
        let (got, _) = drain(r, 3 + i);
        assert_eq!(got, writes.concat(), "reader {i}");
        assert_eq!(r.stats().delivered_bytes, got.len() as u64);
    }
    assert_eq!(s.stats().readers, 5);
    assert_eq!(s.stats().writers, 1);
}

#[test]
fn empty_write_is_a_no_op() {
    let (s, _) = stream(1 << 20, 1 << 20);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&[]).unwrap();
    let st = s.stats();
    assert_eq!((st.writes, st.written_bytes, st.ring_bytes), (0, 0, 0));
    assert_eq!(read_now(&r, 10), ReadOutcome::WouldBlock);
}

#[test]
fn stream_counts_written_bytes_and_writes() {
    let (s, _) = stream(1 << 20, 0);
    let w = s.open_writer();
    w.write(&pattern(1, 10)).unwrap();
    w.write(&pattern(2, 32)).unwrap();
    let st = s.stats();
    assert_eq!(st.written_bytes, 42);
    assert_eq!(st.writes, 2);
    assert!(st.mtime >= SystemTime::UNIX_EPOCH);
}

#[test]
fn writer_count_follows_open_writers() {
    let (s, _) = stream(100, 0);
    let w1 = s.open_writer();
    let w2 = s.open_writer();
    assert_eq!(s.stats().writers, 2);
    drop(w1);
    assert_eq!(s.stats().writers, 1);
    drop(w2);
    assert_eq!(s.stats().writers, 0);
}

#[test]
fn concurrent_writes_never_interleave_and_all_readers_see_one_order() {
    const THREADS: u64 = 4;
    const PER: u64 = 200;
    let (s, _) = stream(1 << 30, 0);
    let readers: Vec<Reader> = (0..3)
        .map(|i| s.open_reader(format!("r{i}")).unwrap())
        .collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = s.open_writer();
            std::thread::spawn(move || {
                for i in 0..PER {
                    // Each write is 16 copies of its (thread, index) id.
                    let id = (t * PER + i) as u16;
                    let one: Vec<u8> = id.to_le_bytes().repeat(8);
                    w.write(&one).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut orders = Vec::new();
    for r in &readers {
        let (got, _) = drain(r, 5);
        assert_eq!(got.len() as u64, THREADS * PER * 16);
        let order: Vec<u16> = got
            .chunks(16)
            .map(|w| {
                let id = u16::from_le_bytes([w[0], w[1]]);
                assert!(
                    w.chunks(2).all(|p| p == id.to_le_bytes()),
                    "a write was interleaved with another"
                );
                id
            })
            .collect();
        // Each thread's writes keep their own order.
        for t in 0..THREADS {
            let mine: Vec<u16> = order
                .iter()
                .copied()
                .filter(|&id| u64::from(id) / PER == t)
                .collect();
            let expect: Vec<u16> = (0..PER).map(|i| (t * PER + i) as u16).collect();
            assert_eq!(mine, expect);
        }
        orders.push(order);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "readers disagree");
}

// ---------------------------------------------------------------------------------------
// Ring and replay
// ---------------------------------------------------------------------------------------

#[test]
fn chunk_cost_is_length_plus_overhead() {
    assert_eq!(CHUNK_OVERHEAD, 64);
    assert_eq!(chunk_cost(0), 64);
    assert_eq!(chunk_cost(10), 74);
}

#[test]
fn ring_trims_oldest_whole_writes_by_data_bytes() {
    // Exactly three 20-byte writes fit a ring of 60 bytes: the budget counts data bytes.
    let (s, _) = stream(1 << 20, 60);
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..5).map(|k| pattern(k, 20)).collect();
    for d in &writes {
        w.write(d).unwrap();
    }
    let st = s.stats();
    assert_eq!(
        st.ring_bytes, 60,
        "bookkeeping is not charged to the budget"
    );
    assert_eq!(st.ring_start, 40);
    let r = s.open_reader("late".into()).unwrap();
    assert_eq!(drain(&r, 1000).0, writes[2..].concat());

    // One byte less of budget keeps only two.
    let (s, _) = stream(1 << 20, 59);
    let w = s.open_writer();
    for d in &writes {
        w.write(d).unwrap();
    }
    assert_eq!(s.stats().ring_bytes, 40);
    assert_eq!(s.stats().ring_start, 60);
    let r = s.open_reader("late".into()).unwrap();
    assert_eq!(drain(&r, 1000).0, writes[3..].concat());
}

#[test]
fn late_joiner_gets_history_then_live_data_without_gap_or_duplicate() {
    let (s, _) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    let early = s.open_reader("early".into()).unwrap();
    let writes: Vec<Vec<u8>> = (0..6).map(|k| pattern(k, 33)).collect();
    for d in &writes[..3] {
        w.write(d).unwrap();
    }
    let late = s.open_reader("late".into()).unwrap();
    // A partial read of the history, then live data arriving behind it.
    assert_eq!(
        read_now(&late, 40),
        ReadOutcome::Data(concat(&[&writes[0], &writes[1][..7]]).into())
    );
    for d in &writes[3..] {
        w.write(d).unwrap();
    }
    let (rest, _) = drain(&late, 11);
    let mut all = concat(&[&writes[0], &writes[1][..7]]);
    all.extend(rest);
    assert_eq!(all, writes.concat());
    assert_eq!(drain(&early, 1000).0, writes.concat());
}

#[test]
fn late_joiner_replays_only_what_the_ring_holds_then_everything_live() {
    let (s, _) = stream(1 << 20, 2 * 20);
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..8).map(|k| pattern(k, 20)).collect();
    for d in &writes[..5] {
        w.write(d).unwrap();
    }
    let late = s.open_reader("late".into()).unwrap();
    for d in &writes[5..] {
        w.write(d).unwrap();
    }
    assert_eq!(drain(&late, 1000).0, writes[3..].concat());
}

#[test]
fn ring_budget_zero_disables_replay() {
    let (s, _) = stream(1 << 20, 0);
    let w = s.open_writer();
    w.write(&pattern(1, 10)).unwrap();
    w.write(&pattern(2, 1)).unwrap();
    assert_eq!(s.stats().ring_bytes, 0);
    assert_eq!(s.stats().ring_start, 11);
    let r = s.open_reader("late".into()).unwrap();
    assert_eq!(read_now(&r, 100), ReadOutcome::WouldBlock);
    assert_eq!(r.stats().queued_bytes, 0);
}

#[test]
fn newest_write_is_kept_even_when_larger_than_the_ring() {
    let (s, _) = stream(1 << 20, 100);
    let w = s.open_writer();
    let big = pattern(1, 500);
    w.write(&pattern(0, 10)).unwrap();
    w.write(&big).unwrap();
    assert_eq!(s.stats().ring_bytes, 500);
    let r = s.open_reader("late".into()).unwrap();
    assert_eq!(drain(&r, 1000).0, big);
    // The next write pushes the oversized one out.
    let small = pattern(2, 10);
    w.write(&small).unwrap();
    assert_eq!(s.stats().ring_bytes, 10);
    let r2 = s.open_reader("later".into()).unwrap();
    assert_eq!(drain(&r2, 1000).0, small);
}

#[test]
fn set_budgets_trims_the_ring_at_once_and_zero_empties_it() {
    let (s, _) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    for k in 0..4 {
        w.write(&pattern(k, 10)).unwrap();
    }
    s.set_budgets(budgets(1 << 20, 10));
    assert_eq!(s.stats().ring_bytes, 10);
    assert_eq!(s.stats().budgets, budgets(1 << 20, 10));
    s.set_budgets(budgets(1 << 20, 0));
    assert_eq!(s.stats().ring_bytes, 0);
    let r = s.open_reader("late".into()).unwrap();
    assert_eq!(read_now(&r, 10), ReadOutcome::WouldBlock);
}

#[test]
fn replay_is_not_counted_against_the_channel_budget() {
    // History of 5 * 74 = 370 bytes, far above a 140 channel.
    let (s, _) = stream(140, 1 << 20);
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..7).map(|k| pattern(k, 74)).collect();
    for d in &writes[..5] {
        w.write(d).unwrap();
    }
    let late = s.open_reader("late".into()).unwrap();
    let st = late.stats();
    assert_eq!(st.queued_bytes, 5 * 74);
    assert_eq!(st.live_cost, 0, "replayed chunks are not live");
    // Nothing live queued: the next write is taken whatever the history.
    w.write(&writes[5]).unwrap();
    assert_eq!(late.stats().live_cost, 74);
    assert_eq!(late.stats().dropped_writes, 0);
    // 74 + 74 > 140: this one is dropped, the history stays.
    w.write(&writes[6]).unwrap();
    assert_eq!(late.stats().dropped_writes, 1);
    assert_eq!(drain(&late, 50).0, writes[..6].concat());
    assert_eq!(late.stats().live_cost, 0);
}

#[test]
fn many_readers_share_the_ring_without_changing_ring_accounting() {
    // Memory sharing (one Arc per chunk) is not observable through the API; what is
    // observable: opening readers does not change the ring's accounting, and every
    // reader's queue accounts for the same replayed bytes.
    let (s, _) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    for k in 0..4 {
        w.write(&pattern(k, 25)).unwrap();
    }
    let before = s.stats();
    let readers: Vec<Reader> = (0..16)
        .map(|i| s.open_reader(format!("r{i}")).unwrap())
        .collect();
    let after = s.stats();
    assert_eq!(after.ring_bytes, before.ring_bytes);
    assert_eq!(after.ring_start, before.ring_start);
    assert_eq!(after.readers, 16);
    w.write(&pattern(9, 25)).unwrap();
    for r in &readers {
        let st = r.stats();
        assert_eq!(st.queued_bytes, 125);
        assert_eq!(st.live_cost, 25);
    }
    let per_reader: Vec<_> = s.reader_stats();
    assert_eq!(per_reader.len(), 16);
    assert!(per_reader.iter().all(|(_, st)| st.queued_bytes == 125));
    assert_eq!(s.stats().ring_bytes, 125);
}

#[test]
fn reader_labels_of_every_length_come_back_as_given() {
    // Short labels are held in the reader's record, longer ones apart: the boundary, an
    // empty one and multi-byte characters on both sides of it.
    let (s, _) = stream(1 << 20, 0);
    let labels = [
        String::new(),
        "pid 42 (cat)".to_string(),
        "x".repeat(38),
        "x".repeat(39),
        "http [2001:db8:85a3::8a2e:370:7334]:54321 (curl/8.5.0)".to_string(),
        "pid 7 (café)".to_string(),
        "é".repeat(19),
        "é".repeat(20),
    ];
    let _readers: Vec<Reader> = labels
        .iter()
        .map(|l| s.open_reader(l.clone()).unwrap())
        .collect();
    let mut got: Vec<String> = s.reader_stats().into_iter().map(|(l, _)| l).collect();
    let mut want = labels.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// Budgets and drops
// ---------------------------------------------------------------------------------------

#[test]
fn drops_are_counted_per_reader_and_per_stream_in_writes_and_bytes() {
    // Two 100-byte writes fit a channel of 200 bytes; a third does not.
    let (s, _) = stream(200, 0);
    let slow = s.open_reader("slow".into()).unwrap();
    let fast = s.open_reader("fast".into()).unwrap();
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..4).map(|k| pattern(k, 100)).collect();
    for d in &writes[..3] {
        w.write(d).unwrap();
        assert!(matches!(read_now(&fast, 1000), ReadOutcome::Data(_)));
    }
    let st = slow.stats();
    assert_eq!((st.dropped_writes, st.dropped_bytes), (1, 100));
    assert_eq!(st.live_cost, 200);
    assert_eq!(
        (fast.stats().dropped_writes, fast.stats().dropped_bytes),
        (0, 0)
    );
    let ss = s.stats();
    assert_eq!((ss.dropped_writes, ss.dropped_bytes), (1, 100));
    // A write dropped by two readers counts twice for the stream.
    let slow2 = s.open_reader("slow2".into()).unwrap();
    w.write(&pattern(10, 400)).unwrap(); // slow2 is empty: taken
    assert!(matches!(read_now(&fast, 1000), ReadOutcome::Data(_)));
    w.write(&writes[3]).unwrap(); // dropped by slow and slow2
    let ss = s.stats();
    // 400 was also dropped by slow (full); the 100-byte write by slow and slow2.
    assert_eq!(slow.stats().dropped_writes, 3);
    assert_eq!(slow.stats().dropped_bytes, 100 + 400 + 100);
    assert_eq!(slow2.stats().dropped_writes, 1);
    assert_eq!(ss.dropped_writes, 4);
    assert_eq!(ss.dropped_bytes, 100 + 400 + 100 + 100);
    // The slow reader gets exactly what it kept, in order.
    assert_eq!(drain(&slow, 1000).0, writes[..2].concat());
}

#[test]
fn a_write_that_exactly_fills_the_channel_is_taken() {
    let (s, _) = stream(10 + 20, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 10)).unwrap();
    w.write(&pattern(2, 20)).unwrap();
    assert_eq!(r.stats().dropped_writes, 0);
    w.write(&pattern(3, 1)).unwrap();
    assert_eq!(r.stats().dropped_writes, 1);
}

#[test]
fn an_empty_reader_accepts_a_write_larger_than_its_budget() {
    let (s, _) = stream(100, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let big = pattern(1, 1000);
    w.write(&big).unwrap();
    assert_eq!(r.stats().dropped_writes, 0);
    assert_eq!(r.stats().live_cost, 1000);
    // Not empty any more: the next write, however small, is dropped.
    w.write(&pattern(2, 1)).unwrap();
    assert_eq!(r.stats().dropped_writes, 1);
    assert_eq!(drain(&r, 300).0, big);
    // Drained: accepted again.
    let again = pattern(3, 1000);
    w.write(&again).unwrap();
    assert_eq!(drain(&r, 4096).0, again);
}

#[test]
fn a_partly_read_write_counts_only_its_unread_bytes() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 100)).unwrap();
    read_now(&r, 99);
    assert_eq!(r.stats().queued_bytes, 1);
    assert_eq!(r.stats().live_cost, 1);
    read_now(&r, 1);
    assert_eq!(r.stats().live_cost, 0);
    assert_eq!(r.stats().delivered_bytes, 100);
}

#[test]
fn set_budgets_changes_the_channel_for_later_writes() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 100)).unwrap();
    s.set_budgets(budgets(199, 0));
    w.write(&pattern(2, 100)).unwrap(); // 100 + 100 > 199
    assert_eq!(r.stats().dropped_writes, 1);
    s.set_budgets(budgets(10_000, 0));
    w.write(&pattern(3, 100)).unwrap();
    assert_eq!(r.stats().dropped_writes, 1);
    assert_eq!(r.stats().queued_bytes, 200);
}

// ---------------------------------------------------------------------------------------
// Continuations (a write split by the kernel)
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Writes in pieces: a writer's unit (begun, extended, finished, abandoned)
// ---------------------------------------------------------------------------------------

/// Finishes `w`'s unit and waits for the answer.
fn finish(w: &Writer) -> Result<(), StreamError> {
    let (tx, rx) = mpsc::channel();
    w.finish(
        0,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap()
}

#[test]
fn a_unit_reaches_readers_only_when_finished() {
    let (s, _) = stream(1 << 20, 1 << 20);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.append(&pattern(1, 100), 0).unwrap();
    w.append(&pattern(2, 50), 0).unwrap();
    assert_eq!(read_now(&r, 1000), ReadOutcome::WouldBlock);
    assert_eq!(
        s.stats().written_bytes,
        0,
        "nothing is written before the finish"
    );
    assert_eq!(w.pending(), 150);
    finish(&w).unwrap();
    assert_eq!(
        drain(&r, 1000).0,
        concat(&[&pattern(1, 100), &pattern(2, 50)])
    );
    let st = s.stats();
    assert_eq!((st.written_bytes, st.writes, st.ring_bytes), (150, 1, 150));
}

#[test]
fn a_reader_that_keeps_up_takes_a_unit_whole_far_past_its_budget() {
    let (s, _) = stream(100, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    for k in 0..10 {
        w.append(&pattern(k, 1000), 0).unwrap();
    }
    finish(&w).unwrap();
    let want: Vec<u8> = (0..10).flat_map(|k| pattern(k, 1000)).collect();
    assert_eq!(drain(&r, 4096).0, want);
    assert_eq!(r.stats().dropped_writes, 0);
}

#[test]
fn a_unit_that_does_not_fit_is_dropped_whole_and_counted_once() {
    let (s, _) = stream(299, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(0, 100)).unwrap(); // queued: 100 of 299
    w.append(&pattern(1, 100), 0).unwrap();
    w.append(&pattern(2, 100), 0).unwrap();
    finish(&w).unwrap(); // 100 + 200 > 299: does not fit
    assert_eq!(drain(&r, 4096).0, pattern(0, 100), "nothing of the unit");
    let st = r.stats();
    assert_eq!((st.dropped_writes, st.dropped_bytes), (1, 200));
    assert_eq!(
        (s.stats().dropped_writes, s.stats().dropped_bytes),
        (1, 200)
    );
}

#[test]
fn units_of_two_writers_never_interleave() {
    // Writer A's first piece, then writer B's whole write, then A's last piece: readers get
    // B, then A whole, never A-head|B|A-tail.
    let (s, _) = stream(1 << 20, 1 << 20);
    let r = s.open_reader("r".into()).unwrap();
    let a = s.open_writer();
    let b = s.open_writer();
    a.append(b"A-head|", 0).unwrap();
    b.write(b"B|").unwrap();
    let (tx, rx) = mpsc::channel();
    a.submit(
        b"A-tail|",
        0,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap().unwrap();
    assert_eq!(drain(&r, 100).0, b"B|A-head|A-tail|".to_vec());
    let late = s.open_reader("late".into()).unwrap();
    assert_eq!(
        drain(&late, 100).0,
        b"B|A-head|A-tail|".to_vec(),
        "the ring too"
    );
    assert_eq!(s.stats().writes, 2);
}

#[test]
fn an_abandoned_unit_or_a_writer_gone_mid_unit_leaves_nothing() {
    let (s, pool) = stream(1 << 20, 1 << 20);
    let r = s.open_reader("r".into()).unwrap();
    let base = pool.used();
    let w = s.open_writer();
    w.append(&pattern(1, 5000), 0).unwrap();
    assert!(pool.used() > base, "pending pieces are charged");
    assert_eq!(w.abandon(), 5000);
    assert_eq!(pool.used(), base, "and refunded when abandoned");
    w.append(&pattern(2, 5000), 0).unwrap();
    drop(w);
    assert_eq!(pool.used(), base);
    assert_eq!(read_now(&r, 100), ReadOutcome::WouldBlock);
    assert_eq!(s.stats().written_bytes, 0);
}

#[test]
fn a_unit_past_max_write_is_applied_in_atomic_parts_of_at_most_max_write() {
    let (s, _) = stream(u64::MAX, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let piece = (MAX_WRITE / 2 - 10) as usize;
    for k in 0..3 {
        w.append(&pattern(k, piece), 0).unwrap();
    }
    // The third piece would pass MAX_WRITE: the first two were applied as one write.
    assert_eq!(s.stats().writes, 1);
    assert_eq!(s.stats().written_bytes, 2 * piece as u64);
    finish(&w).unwrap();
    assert_eq!(s.stats().writes, 2);
    let mut got = 0usize;
    while let ReadOutcome::Data(d) = read_now(&r, 1 << 20) {
        got += d.len();
    }
    assert_eq!(got, 3 * piece);
}

#[test]
fn the_ring_replays_a_unit_whole_and_trims_it_whole() {
    let (s, _) = stream(1 << 20, 2 * 100 + 10 - 1);
    let w = s.open_writer();
    w.append(&pattern(1, 100), 0).unwrap();
    w.append(&pattern(2, 100), 0).unwrap();
    finish(&w).unwrap();
    let r = s.open_reader("r".into()).unwrap();
    assert_eq!(
        drain(&r, 1000).0,
        concat(&[&pattern(1, 100), &pattern(2, 100)])
    );
    w.write(&pattern(3, 10)).unwrap(); // over the budget: the unit goes, whole
    assert_eq!(s.stats().ring_bytes, 10);
    let late = s.open_reader("late".into()).unwrap();
    assert_eq!(drain(&late, 1000).0, pattern(3, 10));
}

#[test]
fn appending_to_a_removed_stream_fails_and_abandons_the_unit() {
    let (s, pool) = stream(1 << 20, 1 << 20);
    let w = s.open_writer();
    w.append(b"x", 0).unwrap();
    s.remove();
    assert_eq!(w.append(b"y", 0), Err(StreamError::Removed));
    assert_eq!(w.pending(), 0);
    assert_eq!(finish(&w), Err(StreamError::Removed));
    assert_eq!(
        pool.used(),
        STREAM_COST,
        "only the stream's own state is charged"
    );
}

/// A stream that ends (removed, or its last writer gone under `on_writer_close=eof`) while
/// a reader has not read its small writes (kept in the open block): the reader still gets
/// them, and once it has read them and gone, the stream is charged for nothing but itself.
#[test]
fn an_ended_streams_unread_small_writes_are_freed_once_read() {
    type End = fn(&Arc<Stream>, Writer);
    let cases: [(&str, End); 2] = [
        ("removed", |s, _w| s.remove()),
        ("last writer closed", |s, w| {
            s.set_policy(policy(SlowReader::Drop, OnWriterClose::Eof));
            drop(w);
        }),
    ];
    for (name, end) in cases {
        let (s, pool) = stream(1 << 20, 1 << 20);
        let r = s.open_reader("r".into()).unwrap();
        let w = s.open_writer();
        w.write(b"one\n").unwrap();
        w.write(b"two\n").unwrap();
        end(&s, w);
        let (got, end) = drain(&r, 1000);
        assert_eq!(got, b"one\ntwo\n", "{name}");
        assert!(matches!(end, ReadOutcome::Eof), "{name}: {end:?}");
        drop(r);
        assert_eq!(pool.used(), STREAM_COST, "{name}: the writes were freed");
    }
}

// ---------------------------------------------------------------------------------------
// Memory: every chunk charged once; the limit sheds history, then readers furthest behind
// ---------------------------------------------------------------------------------------

fn limited(max_memory: u64, channel: u64, ring: u64, slow_reader: SlowReader) -> Namespace {
    Namespace::with_limits(
        budgets(channel, ring),
        Policy {
            slow_reader,
            ..Policy::default()
        },
        Limits {
            max_memory,
            max_streams: 100,
            max_readers: 100,
        },
    )
}

#[test]
fn a_chunk_is_charged_once_whatever_the_number_of_readers() {
    let (s, pool) = stream(1 << 20, 0);
    let readers: Vec<Reader> = (0..10)
        .map(|i| s.open_reader(format!("r{i}")).unwrap())
        .collect();
    let w = s.open_writer();
    let before = pool.used();
    w.write(&pattern(1, 10_000)).unwrap();
    assert_eq!(pool.used() - before, chunk_cost(10_000) + 10 * ENTRY_COST);
    for r in &readers {
        drain(r, 1 << 20);
    }
    assert_eq!(pool.used(), before, "read by all: the chunk is freed");
    drop(readers);
    drop(w);
    drop(s);
    assert_eq!(pool.used(), 0, "nothing is charged once everything is gone");
}

#[test]
fn the_limit_sheds_the_oldest_history_first_across_streams() {
    let ns = limited(64 << 10, 1 << 20, 60 << 10, SlowReader::Drop);
    let (old, _) = ns.create(b"old", meta()).unwrap();
    let (new, _) = ns.create(b"new", meta()).unwrap();
    old.open_writer().write(&pattern(1, 20_000)).unwrap();
    new.open_writer().write(&pattern(2, 20_000)).unwrap();
    // 40 KB of history; a 30 KB write needs room: the oldest history (old's) goes first.
    new.open_writer().write(&pattern(3, 30_000)).unwrap();
    assert_eq!(old.stats().ring_bytes, 0, "the oldest history was shed");
    assert_eq!(new.stats().ring_bytes, 50_000);
    assert!(ns.pool().used() <= 64 << 10);
    assert!(ns.pool().shed_bytes() >= 20_000);
}

#[test]
fn then_the_reader_furthest_behind_drops_its_queue_and_the_writer_never_fails() {
    let ns = limited(200 << 10, 1 << 20, 0, SlowReader::Drop);
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let stopped = s.open_reader("stopped".into()).unwrap();
    let live = s.open_reader("live".into()).unwrap();
    let w = s.open_writer();
    for k in 0..100 {
        w.write(&pattern(k, 10_000)).unwrap();
        drain(&live, 1 << 20);
        assert!(
            ns.pool().used() <= 200 << 10,
            "write {k}: {}",
            ns.pool().used()
        );
    }
    let st = stopped.stats();
    assert!(st.dropped_writes > 0, "the stopped reader paid: {st:?}");
    assert_eq!(
        live.stats().dropped_writes,
        0,
        "the reader that keeps up lost nothing"
    );
    assert_eq!(s.stats().writes, 100);
}

#[test]
fn under_disconnect_the_reader_furthest_behind_is_cut_off() {
    let ns = limited(200 << 10, 1 << 20, 0, SlowReader::Disconnect);
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let stopped = s.open_reader("stopped".into()).unwrap();
    let w = s.open_writer();
    for k in 0..30 {
        w.write(&pattern(k, 10_000)).unwrap();
    }
    assert!(stopped.stats().disconnected);
    assert_eq!(drain(&stopped, 1 << 20).1, ReadOutcome::Eof);
}

#[test]
fn block_streams_are_never_shed_a_write_that_cannot_fit_fails_with_no_memory() {
    let ns = limited(100 << 10, 10 << 20, 0, SlowReader::Block);
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let stopped = s.open_reader("stopped".into()).unwrap();
    let w = s.open_writer();
    let mut failed = None;
    for k in 0..20 {
        if let Err(e) = w.write(&pattern(k, 10_000)) {
            failed = Some((k, e));
            break;
        }
    }
    assert_eq!(failed.map(|f| f.1), Some(StreamError::NoMemory));
    assert_eq!(
        stopped.stats().dropped_writes,
        0,
        "nothing was dropped for it"
    );
}

#[test]
fn max_readers_and_max_streams_are_enforced() {
    let ns = Namespace::with_limits(
        budgets(1000, 0),
        Policy::default(),
        Limits {
            max_memory: u64::MAX,
            max_streams: 2,
            max_readers: 3,
        },
    );
    let (a, _) = ns.create(b"a", meta()).unwrap();
    ns.create(b"b", meta()).unwrap();
    assert_eq!(
        ns.create(b"c", meta()).err(),
        Some(StreamError::TooManyStreams)
    );
    assert!(
        ns.create(b"a", meta()).is_ok(),
        "an existing name is no new stream"
    );
    let readers: Vec<Reader> = (0..3).map(|_| a.open_reader("r".into()).unwrap()).collect();
    assert_eq!(a.open_reader("r".into()).err().map(|_| ()), Some(()));
    assert!(matches!(
        a.open_reader("r".into()),
        Err(StreamError::TooManyReaders)
    ));
    drop(readers);
    assert!(a.open_reader("r".into()).is_ok(), "closing frees the count");
}

#[test]
fn a_non_blocking_read_with_nothing_queued_would_block() {
    let (s, parked) = stream(100, 0);
    let r = s.open_reader("r".into()).unwrap();
    assert_eq!(read_now(&r, 10), ReadOutcome::WouldBlock);
    assert_eq!(parked.parked_total(), 0);
    assert!(s.parked_reads().is_empty());
}

#[test]
fn a_read_with_data_queued_is_answered_at_once_even_in_wait_mode() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let d = pattern(1, 10);
    w.write(&d).unwrap();
    let (id, rx) = read_wait(&r, 100, 1);
    assert_eq!(id, None);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Data(d.into()));
}

#[test]
fn a_parked_read_is_completed_by_a_later_write() {
    let (s, parked) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (id, rx) = read_wait(&r, 4, 42);
    let id = id.expect("parked");
    assert!(rx.try_recv().is_err(), "not answered yet");
    assert_eq!(parked.parked_total(), 1);
    let pr = s.parked_reads();
    assert_eq!(pr.len(), 1);
    assert_eq!((pr[0].reader, pr[0].read, pr[0].tag), (r.id(), id, 42));
    let d = pattern(1, 10);
    w.write(&d).unwrap();
    assert_eq!(
        rx.try_recv().unwrap(),
        ReadOutcome::Data(d[..4].to_vec().into())
    );
    assert!(rx.try_recv().is_err());
    assert_eq!(parked.parked_total(), 0);
    assert!(s.parked_reads().is_empty());
    // The rest stays queued.
    assert_eq!(read_now(&r, 100), ReadOutcome::Data(d[4..].to_vec().into()));
    assert_eq!(r.stats().delivered_bytes, 10);
}

#[test]
fn parked_reads_are_completed_oldest_first_while_data_lasts() {
    let (s, parked) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (_, rx1) = read_wait(&r, 3, 1);
    let (_, rx2) = read_wait(&r, 3, 2);
    let (_, rx3) = read_wait(&r, 3, 3);
    assert_eq!(parked.parked_total(), 3);
    let d = pattern(1, 5);
    w.write(&d).unwrap();
    assert_eq!(
        rx1.try_recv().unwrap(),
        ReadOutcome::Data(d[..3].to_vec().into())
    );
    assert_eq!(
        rx2.try_recv().unwrap(),
        ReadOutcome::Data(d[3..].to_vec().into())
    );
    assert!(rx3.try_recv().is_err(), "no data left for the third");
    assert_eq!(parked.parked_total(), 1);
    let e = pattern(2, 2);
    w.write(&e).unwrap();
    assert_eq!(rx3.try_recv().unwrap(), ReadOutcome::Data(e.into()));
    assert_eq!(parked.parked_total(), 0);
}

#[test]
fn a_parked_read_is_answered_from_another_thread() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (id, rx) = read_wait(&r, 100, 0);
    assert!(id.is_some());
    let d = pattern(5, 20);
    let d2 = d.clone();
    let t = std::thread::spawn(move || w.write(&d2).unwrap());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        ReadOutcome::Data(d.into())
    );
    t.join().unwrap();
}

#[test]
fn cancel_read_delivers_interrupted_exactly_once() {
    let (s, parked) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (id, rx) = read_wait(&r, 10, 0);
    let id = id.unwrap();
    assert!(s.cancel_read(r.id(), id));
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Interrupted);
    assert_eq!(parked.parked_total(), 0);
    assert!(!s.cancel_read(r.id(), id), "a second cancel finds nothing");
    // A later write goes to the queue, not to the cancelled read.
    let d = pattern(1, 5);
    w.write(&d).unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(read_now(&r, 10), ReadOutcome::Data(d.into()));
}

#[test]
fn cancel_read_after_completion_does_nothing() {
    let (s, parked) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (id, rx) = read_wait(&r, 10, 0);
    let id = id.unwrap();
    let d = pattern(1, 5);
    w.write(&d).unwrap();
    assert!(!s.cancel_read(r.id(), id));
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Data(d.into()));
    assert!(rx.try_recv().is_err());
    assert_eq!(parked.parked_total(), 0);
}

#[test]
fn cancel_read_of_an_unknown_reader_or_read_returns_false() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let (id, rx) = read_wait(&r, 10, 0);
    let id = id.unwrap();
    assert!(!s.cancel_read(r.id() + 1000, id));
    assert!(!s.cancel_read(r.id(), id + 1000));
    assert!(rx.try_recv().is_err(), "still parked");
    assert!(s.cancel_read(r.id(), id));
}

#[test]
fn cancel_read_picks_the_named_read_among_several() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (a, rxa) = read_wait(&r, 10, 1);
    let (b, rxb) = read_wait(&r, 10, 2);
    assert_ne!(a, b);
    assert!(s.cancel_read(r.id(), b.unwrap()));
    assert_eq!(rxb.try_recv().unwrap(), ReadOutcome::Interrupted);
    assert!(rxa.try_recv().is_err());
    let d = pattern(1, 3);
    w.write(&d).unwrap();
    assert_eq!(rxa.try_recv().unwrap(), ReadOutcome::Data(d.into()));
}

#[test]
fn dropping_a_reader_with_a_parked_read_answers_it_with_eof() {
    let (s, parked) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let (_, rx) = read_wait(&r, 10, 0);
    assert_eq!(parked.parked_total(), 1);
    drop(r);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(parked.parked_total(), 0);
    assert_eq!(s.stats().readers, 0);
}

#[test]
fn a_dropped_reader_no_longer_receives_or_counts() {
    let (s, _) = stream(100, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 100)).unwrap();
    drop(r);
    w.write(&pattern(2, 100)).unwrap();
    assert_eq!(s.stats().dropped_writes, 0);
    assert!(s.reader_stats().is_empty());
}

// ---------------------------------------------------------------------------------------
// Poll
// ---------------------------------------------------------------------------------------

#[test]
fn poll_reports_readable_and_keeps_the_wake_for_the_next_edge() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 3)).unwrap();
    let (wake, n) = waker();
    assert_eq!(r.poll(wake), Readiness::Readable);
    // More data on a non-empty queue is no new edge.
    w.write(&pattern(2, 3)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 0);
    // Drained, then written again: an edge-triggered poller must hear of it.
    let (got, _) = drain(&r, 64);
    assert_eq!(got.len(), 6);
    w.write(&pattern(3, 3)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn poll_wake_is_called_once_by_a_write() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (wake, n) = waker();
    assert_eq!(r.poll(wake), Readiness::Waiting);
    assert_eq!(n.load(Ordering::SeqCst), 0);
    w.write(&pattern(1, 3)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    w.write(&pattern(2, 3)).unwrap();
    s.remove();
    assert_eq!(n.load(Ordering::SeqCst), 1, "a wake is used once");
}

#[test]
fn poll_wake_is_called_by_remove() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let (wake, n) = waker();
    assert_eq!(r.poll(wake), Readiness::Waiting);
    s.remove();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    let (wake2, n2) = waker();
    assert_eq!(r.poll(wake2), Readiness::Ended);
    assert_eq!(n2.load(Ordering::SeqCst), 0);
}

#[test]
fn a_second_poll_replaces_the_first_wake() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (wake1, n1) = waker();
    let (wake2, n2) = waker();
    assert_eq!(r.poll(wake1), Readiness::Waiting);
    assert_eq!(r.poll(wake2), Readiness::Waiting);
    w.write(&pattern(1, 3)).unwrap();
    assert_eq!(n1.load(Ordering::SeqCst), 0);
    assert_eq!(n2.load(Ordering::SeqCst), 1);
}

#[test]
fn poll_is_readable_with_replayed_history() {
    let (s, _) = stream(1000, 1000);
    let w = s.open_writer();
    w.write(&pattern(1, 3)).unwrap();
    let r = s.open_reader("late".into()).unwrap();
    let (wake, _) = waker();
    assert_eq!(r.poll(wake), Readiness::Readable);
}

#[test]
fn poll_of_a_removed_stream_with_data_queued_is_readable_then_ended() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 3)).unwrap();
    s.remove();
    assert_eq!(r.poll(waker().0), Readiness::Readable);
    read_now(&r, 10);
    assert_eq!(r.poll(waker().0), Readiness::Ended);
}

// ---------------------------------------------------------------------------------------
// Removal
// ---------------------------------------------------------------------------------------

#[test]
fn remove_delivers_queued_data_then_eof() {
    let (s, _) = stream(1000, 1000);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (a, b) = (pattern(1, 10), pattern(2, 10));
    w.write(&a).unwrap();
    w.write(&b).unwrap();
    s.remove();
    assert!(s.stats().removed);
    assert_eq!(s.stats().ring_bytes, 0);
    let (got, end) = drain(&r, 7);
    assert_eq!(got, concat(&[&a, &b]));
    assert_eq!(end, ReadOutcome::Eof);
    assert_eq!(read_now(&r, 7), ReadOutcome::Eof, "EOF again");
    // A waiting read after the end is answered at once too.
    let (id, rx) = read_wait(&r, 7, 0);
    assert_eq!(id, None);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
}

#[test]
fn remove_answers_parked_reads_with_eof_at_once() {
    let (s, parked) = stream(1000, 0);
    let r1 = s.open_reader("r1".into()).unwrap();
    let r2 = s.open_reader("r2".into()).unwrap();
    let (_, rx1) = read_wait(&r1, 10, 0);
    let (_, rx2) = read_wait(&r2, 10, 0);
    let (_, rx3) = read_wait(&r2, 10, 0);
    assert_eq!(parked.parked_total(), 3);
    s.remove();
    for rx in [rx1, rx2, rx3] {
        assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
        assert!(rx.try_recv().is_err());
    }
    assert_eq!(parked.parked_total(), 0);
    assert!(s.parked_reads().is_empty());
}

#[test]
fn a_write_after_remove_fails_with_removed() {
    let (s, _) = stream(1000, 0);
    let w = s.open_writer();
    w.write(&pattern(1, 3)).unwrap();
    s.remove();
    assert_eq!(w.write(&pattern(2, 3)), Err(StreamError::Removed));
    assert_eq!(w.write(&[]), Err(StreamError::Removed));
    assert_eq!(w.write(&pattern(2, 3)), Err(StreamError::Removed));
    assert_eq!(s.stats().writes, 1);
    assert_eq!(s.stats().written_bytes, 3);
}

#[test]
fn remove_is_idempotent() {
    let (s, _) = stream(1000, 0);
    let r = s.open_reader("r".into()).unwrap();
    let (wake, n) = waker();
    r.poll(wake);
    s.remove();
    s.remove();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(read_now(&r, 1), ReadOutcome::Eof);
}

#[test]
fn a_reader_opened_on_a_removed_stream_reads_eof_at_once() {
    let (s, _) = stream(1000, 1000);
    let w = s.open_writer();
    w.write(&pattern(1, 3)).unwrap();
    s.remove();
    let r = s.open_reader("late".into()).unwrap();
    assert_eq!(read_now(&r, 10), ReadOutcome::Eof);
}

// ---------------------------------------------------------------------------------------
// Parked-read accounting across a namespace
// ---------------------------------------------------------------------------------------

#[test]
fn parked_total_counts_every_stream_and_returns_to_zero() {
    let ns = Namespace::new(budgets(1000, 0));
    let (a, _) = ns.create(b"a", meta()).unwrap();
    let (b, _) = ns.create(b"b", meta()).unwrap();
    let ra = a.open_reader("ra".into()).unwrap();
    let rb = b.open_reader("rb".into()).unwrap();
    let rb2 = b.open_reader("rb2".into()).unwrap();
    let wa = a.open_writer();

    let (ida, rxa) = read_wait(&ra, 10, 0);
    let (_, rxa2) = read_wait(&ra, 10, 0);
    let (idb, rxb) = read_wait(&rb, 10, 0);
    let (_, rxb2) = read_wait(&rb2, 10, 0);
    let (_, rxb3) = read_wait(&rb2, 10, 0);
    assert_eq!(ns.parked_total(), 5);

    // Completed by a write (one of two parked on `ra`: the write is consumed whole).
    wa.write(&pattern(1, 4)).unwrap();
    assert!(matches!(rxa.try_recv().unwrap(), ReadOutcome::Data(_)));
    assert_eq!(ns.parked_total(), 4);
    // Cancelled; a cancel of a completed read changes nothing.
    assert!(!a.cancel_read(ra.id(), ida.unwrap()));
    assert!(b.cancel_read(rb.id(), idb.unwrap()));
    assert_eq!(rxb.try_recv().unwrap(), ReadOutcome::Interrupted);
    assert_eq!(ns.parked_total(), 3);
    // Reader dropped.
    drop(ra);
    assert_eq!(rxa2.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(ns.parked_total(), 2);
    // Stream removed.
    ns.remove(b"b").unwrap();
    assert_eq!(rxb2.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(rxb3.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(ns.parked_total(), 0);
    drop((rb, rb2));
    assert_eq!(ns.parked_total(), 0);
}

// ---------------------------------------------------------------------------------------
// Namespace
// ---------------------------------------------------------------------------------------

#[test]
fn namespace_create_returns_the_existing_stream_the_second_time() {
    let ns = Namespace::new(budgets(123, 456));
    assert_eq!(ns.defaults(), budgets(123, 456));
    let (s1, created1) = ns.create(b"x", meta()).unwrap();
    let (s2, created2) = ns.create(b"x", meta()).unwrap();
    assert!(created1);
    assert!(!created2);
    assert!(Arc::ptr_eq(&s1, &s2));
    assert_eq!(s1.id(), FIRST_STREAM_ID);
    assert_eq!(s1.stats().budgets, budgets(123, 456));
    assert_eq!(s1.meta(), meta());
}

#[test]
fn namespace_lookup_and_get_find_live_streams() {
    let ns = Namespace::new(budgets(100, 100));
    let (s, _) = ns.create(b"name", meta()).unwrap();
    assert!(Arc::ptr_eq(&ns.lookup(b"name").unwrap(), &s));
    assert!(Arc::ptr_eq(&ns.get(s.id()).unwrap(), &s));
    assert!(ns.lookup(b"other").is_none());
    assert!(ns.get(s.id() + 1).is_none());
    // Names are raw bytes (not UTF-8 here; NUL is no name's: see the naming rule).
    let weird: &[u8] = b"\xff\xfea";
    let (t, created) = ns.create(weird, meta()).unwrap();
    assert!(created);
    assert!(Arc::ptr_eq(&ns.lookup(weird).unwrap(), &t));
}

#[test]
fn namespace_remove_ends_the_stream_and_frees_the_name() {
    let ns = Namespace::new(budgets(1000, 1000));
    let (s, _) = ns.create(b"x", meta()).unwrap();
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let d = pattern(1, 5);
    w.write(&d).unwrap();
    ns.remove(b"x").unwrap();
    assert!(ns.lookup(b"x").is_none());
    assert!(ns.get(s.id()).is_none());
    assert!(s.stats().removed);
    assert_eq!(w.write(&d), Err(StreamError::Removed));
    assert_eq!(drain(&r, 100), (d, ReadOutcome::Eof));
    assert_eq!(ns.remove(b"x"), Err(StreamError::NotFound));
    // The name can be created again: a new stream with a new id, no history.
    let (s2, created) = ns.create(b"x", meta()).unwrap();
    assert!(created);
    assert!(s2.id() > s.id());
    assert!(!s2.stats().removed);
    let r2 = s2.open_reader("r2".into()).unwrap();
    assert_eq!(read_now(&r2, 10), ReadOutcome::WouldBlock);
    // Removing the stream a caller checked leaves the one that replaced it alone.
    assert_eq!(ns.remove_stream(b"x", &s), Ok(false));
    assert!(!s2.stats().removed);
    assert!(Arc::ptr_eq(&ns.lookup(b"x").unwrap(), &s2));
    assert_eq!(ns.remove_stream(b"x", &s2), Ok(true));
    assert!(s2.stats().removed && ns.lookup(b"x").is_none());
    assert_eq!(ns.remove_stream(b"x", &s2), Ok(false));
}

#[test]
fn namespace_ids_are_never_reused() {
    let ns = Namespace::new(budgets(100, 100));
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (s, _) = ns.create(b"same", meta()).unwrap();
        ids.push(s.id());
        ns.remove(b"same").unwrap();
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "ids grow and never repeat");
}

#[test]
fn namespace_rename_moves_the_stream_to_the_new_name() {
    let ns = Namespace::new(budgets(100, 100));
    let (s, _) = ns.create(b"a", meta()).unwrap();
    ns.rename(b"a", b"b", false).unwrap();
    assert!(ns.lookup(b"a").is_none());
    assert!(Arc::ptr_eq(&ns.lookup(b"b").unwrap(), &s));
    assert_eq!(ns.list_after(0, 10), vec![(s.id(), b"b".to_vec())]);
    assert!(!s.stats().removed);
}

#[test]
fn namespace_rename_over_an_existing_name_removes_the_target() {
    let ns = Namespace::new(budgets(1000, 0));
    let (a, _) = ns.create(b"a", meta()).unwrap();
    let (b, _) = ns.create(b"b", meta()).unwrap();
    let rb = b.open_reader("rb".into()).unwrap();
    let (_, rx) = read_wait(&rb, 10, 0);
    ns.rename(b"a", b"b", false).unwrap();
    assert!(Arc::ptr_eq(&ns.lookup(b"b").unwrap(), &a));
    assert!(ns.lookup(b"a").is_none());
    assert!(ns.get(b.id()).is_none());
    assert!(b.stats().removed);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(ns.list_after(0, 10), vec![(a.id(), b"b".to_vec())]);
    assert_eq!(ns.parked_total(), 0);
}

#[test]
fn namespace_rename_no_replace_fails_with_exists_and_changes_nothing() {
    let ns = Namespace::new(budgets(100, 100));
    let (a, _) = ns.create(b"a", meta()).unwrap();
    let (b, _) = ns.create(b"b", meta()).unwrap();
    assert_eq!(ns.rename(b"a", b"b", true), Err(StreamError::Exists));
    assert!(Arc::ptr_eq(&ns.lookup(b"a").unwrap(), &a));
    assert!(Arc::ptr_eq(&ns.lookup(b"b").unwrap(), &b));
    assert!(!b.stats().removed);
    // To a free name it works.
    ns.rename(b"a", b"c", true).unwrap();
    assert!(Arc::ptr_eq(&ns.lookup(b"c").unwrap(), &a));
}

#[test]
fn namespace_rename_of_a_missing_name_fails_with_not_found() {
    let ns = Namespace::new(budgets(100, 100));
    assert_eq!(ns.rename(b"a", b"b", false), Err(StreamError::NotFound));
    assert_eq!(ns.rename(b"a", b"a", false), Err(StreamError::NotFound));
}

#[test]
fn namespace_rename_to_the_same_name_keeps_the_stream() {
    let ns = Namespace::new(budgets(100, 100));
    let (a, _) = ns.create(b"a", meta()).unwrap();
    ns.rename(b"a", b"a", false).unwrap();
    assert!(Arc::ptr_eq(&ns.lookup(b"a").unwrap(), &a));
    assert!(!a.stats().removed);
}

#[test]
fn namespace_list_after_pages_in_id_order() {
    let ns = Namespace::new(budgets(100, 100));
    let names: Vec<Vec<u8>> = (0..7).map(|i| format!("s{i}").into_bytes()).collect();
    let ids: Vec<u64> = names
        .iter()
        .map(|n| ns.create(n, meta()).unwrap().0.id())
        .collect();
    ns.remove(b"s3").unwrap();
    let mut listed = Vec::new();
    let mut after = 0;
    loop {
        let page = ns.list_after(after, 2);
        assert!(page.len() <= 2);
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        listed.extend(page);
    }
    let expect: Vec<(u64, Vec<u8>)> = ids
        .iter()
        .copied()
        .zip(names.iter().cloned())
        .filter(|(_, n)| n != b"s3")
        .collect();
    assert_eq!(listed, expect);
    assert!(ns.list_after(u64::MAX, 10).is_empty());
    assert!(ns.list_after(0, 0).is_empty());
    assert_eq!(ns.streams().len(), 6);
}

#[test]
fn namespace_shutdown_ends_every_stream_and_refuses_new_ones() {
    let ns = Namespace::new(budgets(1000, 1000));
    let (a, _) = ns.create(b"a", meta()).unwrap();
    let (b, _) = ns.create(b"b", meta()).unwrap();
    let ra = a.open_reader("ra".into()).unwrap();
    let rb = b.open_reader("rb".into()).unwrap();
    let wa = a.open_writer();
    let d = pattern(1, 8);
    wa.write(&d).unwrap();
    let (_, rx) = read_wait(&rb, 10, 0);
    ns.shutdown();
    assert!(a.stats().removed && b.stats().removed);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(drain(&ra, 3), (d.clone(), ReadOutcome::Eof));
    assert_eq!(wa.write(&d), Err(StreamError::Removed));
    assert_eq!(ns.create(b"c", meta()).err(), Some(StreamError::Removed));
    assert_eq!(ns.create(b"a", meta()).err(), Some(StreamError::Removed));
    assert!(ns.lookup(b"a").is_none());
    assert!(ns.list_after(0, 10).is_empty());
    assert!(ns.streams().is_empty());
    assert_eq!(ns.parked_total(), 0);
    ns.shutdown(); // idempotent
    assert_eq!(ns.remove(b"a"), Err(StreamError::NotFound));
}

#[test]
fn update_meta_changes_metadata_and_ctime() {
    let (s, _) = stream(100, 100);
    let m = s.update_meta(|m| m.mode = 0o600);
    assert_eq!(m.mode, 0o600);
    assert!(m.ctime > SystemTime::UNIX_EPOCH);
    assert_eq!(m.crtime, SystemTime::UNIX_EPOCH);
    assert_eq!(s.meta(), m);
}

// ---------------------------------------------------------------------------------------
// Callbacks run outside the locks (a callback that re-enters would deadlock otherwise)
// ---------------------------------------------------------------------------------------

/// Runs `f` on a thread and fails if it has not finished within a few seconds (a deadlock).
fn finishes<F: FnOnce() + Send + 'static>(what: &str, f: F) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: deadlock"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// A read whose answer re-enters the stream (and the namespace, when given) before it is
/// passed on.
fn reentrant_read(
    r: &Reader,
    ns: Option<Arc<Namespace>>,
    mode: ReadMode,
) -> (Option<u64>, mpsc::Receiver<ReadOutcome>) {
    let (tx, rx) = mpsc::channel();
    let s = r.stream().clone();
    let id = r.read(
        10,
        mode,
        0,
        Box::new(move |o| {
            let _ = s.stats();
            let _ = s.parked_reads();
            if let Some(ns) = ns {
                let _ = ns.lookup(b"x");
                let _ = ns.list_after(0, 10);
            }
            let _ = tx.send(o);
        }),
    );
    (id, rx)
}

#[test]
fn read_answers_and_wakes_run_outside_the_stream_lock() {
    finishes("answer at once", || {
        let (s, _) = stream(1000, 0);
        let r = s.open_reader("r".into()).unwrap();
        let (_, rx) = reentrant_read(&r, None, ReadMode::NonBlocking);
        assert_eq!(rx.try_recv().unwrap(), ReadOutcome::WouldBlock);
    });
    finishes("answer by a write, wake by a write", || {
        let (s, _) = stream(1000, 0);
        let r = s.open_reader("r".into()).unwrap();
        let (_, rx) = reentrant_read(&r, None, ReadMode::Wait);
        let s2 = s.clone();
        let (tx, woke) = mpsc::channel();
        let r2 = s.open_reader("r2".into()).unwrap();
        assert_eq!(
            r2.poll(Box::new(move || {
                let _ = s2.stats();
                let _ = tx.send(());
            })),
            Readiness::Waiting
        );
        s.open_writer().write(b"abc").unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            ReadOutcome::Data(b"abc".to_vec().into())
        );
        woke.try_recv().unwrap();
    });
    finishes("answer by a cancel", || {
        let (s, _) = stream(1000, 0);
        let r = s.open_reader("r".into()).unwrap();
        let (id, rx) = reentrant_read(&r, None, ReadMode::Wait);
        assert!(s.cancel_read(r.id(), id.unwrap()));
        assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Interrupted);
    });
    finishes("answer by a reader drop", || {
        let (s, _) = stream(1000, 0);
        let r = s.open_reader("r".into()).unwrap();
        let (_, rx) = reentrant_read(&r, None, ReadMode::Wait);
        drop(r);
        assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
    });
    finishes("answer and wake by remove", || {
        let (s, _) = stream(1000, 0);
        let r = s.open_reader("r".into()).unwrap();
        let (_, rx) = reentrant_read(&r, None, ReadMode::Wait);
        let s2 = s.clone();
        let (tx, woke) = mpsc::channel();
        let r2 = s.open_reader("r2".into()).unwrap();
        r2.poll(Box::new(move || {
            let _ = s2.stats();
            let _ = tx.send(());
        }));
        s.remove();
        assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
        woke.try_recv().unwrap();
    });
}

#[test]
fn namespace_removals_answer_reads_outside_the_namespace_lock() {
    for how in ["remove", "rename", "shutdown"] {
        finishes(how, move || {
            let ns = Arc::new(Namespace::new(budgets(1000, 0)));
            let (s, _) = ns.create(b"x", meta()).unwrap();
            ns.create(b"y", meta()).unwrap();
            let r = s.open_reader("r".into()).unwrap();
            let (_, rx) = reentrant_read(&r, Some(ns.clone()), ReadMode::Wait);
            match how {
                "remove" => ns.remove(b"x").unwrap(),
                "rename" => ns.rename(b"y", b"x", false).unwrap(),
                _ => ns.shutdown(),
            }
            assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Policy `Block`: lossless, writers wait
// ---------------------------------------------------------------------------------------

fn policy(slow_reader: SlowReader, on_writer_close: OnWriterClose) -> Policy {
    Policy {
        slow_reader,
        on_writer_close,
        ..Policy::default()
    }
}

/// A stream under policy `Block`.
fn blocking(channel: u64) -> (Arc<Stream>, Arc<Pool>) {
    let (s, parked) = stream(channel, 0);
    s.set_policy(policy(SlowReader::Block, OnWriterClose::Keep));
    (s, parked)
}

/// Submits a write: returns the blocked write's id (if it blocked) and where its result
/// arrives.
fn submit(
    w: &Writer,
    data: &[u8],
    tag: u32,
) -> (Option<u64>, mpsc::Receiver<Result<(), StreamError>>) {
    let (tx, rx) = mpsc::channel();
    let id = w.submit(
        data,
        tag,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    (id, rx)
}

#[test]
fn block_parks_a_write_until_every_reader_has_room() {
    let (s, parked) = blocking(200);
    let slow = s.open_reader("slow".into()).unwrap();
    let fast = s.open_reader("fast".into()).unwrap();
    let w = s.open_writer();
    let (a, b) = (pattern(1, 150), pattern(2, 100));
    let (id, rx) = submit(&w, &a, 1);
    assert_eq!(id, None, "fits: written at once");
    assert_eq!(rx.try_recv().unwrap(), Ok(()));
    drain(&fast, 1000);
    let (id, rx) = submit(&w, &b, 7);
    let id = id.expect("150 + 100 > 200: blocked");
    assert!(rx.try_recv().is_err());
    assert_eq!(s.blocked_writes(), vec![(id, 7)]);
    assert_eq!(s.stats().blocked_writes, 1);
    assert_eq!(parked.parked_total(), 1);
    assert_eq!(s.stats().writes, 1, "not written while blocked");
    assert_eq!(read_now(&fast, 10), ReadOutcome::WouldBlock);
    // A partial read frees the bytes it took: 101 + 100 is still too much.
    read_now(&slow, 49);
    assert!(rx.try_recv().is_err());
    // 100 + 100 fits.
    read_now(&slow, 1);
    assert_eq!(rx.try_recv().unwrap(), Ok(()));
    assert_eq!(parked.parked_total(), 0);
    assert!(s.blocked_writes().is_empty());
    assert_eq!(drain(&slow, 1000).0, concat(&[&a[50..], &b]));
    assert_eq!(drain(&fast, 1000).0, b);
    assert_eq!(s.stats().dropped_writes, 0);
}

#[test]
fn block_keeps_a_fitting_write_behind_a_blocked_one() {
    let (s, _) = blocking(199);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (a, b, c) = (pattern(1, 100), pattern(2, 100), pattern(3, 100));
    submit(&w, &a, 0);
    let (idb, rxb) = submit(&w, &b, 0);
    let (idc, rxc) = submit(&w, &c, 0);
    assert!(idb.is_some());
    assert!(idc.is_some(), "c must not overtake b");
    assert_eq!(s.stats().blocked_writes, 2);
    assert_eq!(read_now(&r, 1000), ReadOutcome::Data(a.into()));
    assert_eq!(rxb.try_recv().unwrap(), Ok(()));
    assert!(rxc.try_recv().is_err(), "100 + 100 > 199");
    assert_eq!(read_now(&r, 1000), ReadOutcome::Data(b.into()));
    assert_eq!(rxc.try_recv().unwrap(), Ok(()));
    assert_eq!(read_now(&r, 1000), ReadOutcome::Data(c.into()));
}

#[test]
fn block_cancel_write_interrupts_it_writes_nothing_and_releases_the_rest() {
    let (s, parked) = blocking(299);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let (a, big, small) = (pattern(1, 100), pattern(2, 200), pattern(3, 50));
    submit(&w, &a, 0);
    let (idbig, rxbig) = submit(&w, &big, 0);
    let (_, rxsmall) = submit(&w, &small, 0);
    assert_eq!(parked.parked_total(), 2);
    assert!(s.cancel_write(idbig.unwrap()));
    assert_eq!(rxbig.try_recv().unwrap(), Err(StreamError::Interrupted));
    // 100 + 50 <= 299: the small one behind goes through at once.
    assert_eq!(rxsmall.try_recv().unwrap(), Ok(()));
    assert_eq!(parked.parked_total(), 0);
    assert!(!s.cancel_write(idbig.unwrap()), "only once");
    assert_eq!(s.stats().written_bytes, 150);
    assert_eq!(drain(&r, 1000).0, concat(&[&a, &small]));
}

#[test]
fn block_remove_fails_blocked_writes_with_removed() {
    let (s, parked) = blocking(99);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let a = pattern(1, 50);
    submit(&w, &a, 0);
    let (id, rx) = submit(&w, &pattern(2, 50), 0);
    assert!(id.is_some());
    s.remove();
    assert_eq!(rx.try_recv().unwrap(), Err(StreamError::Removed));
    assert_eq!(parked.parked_total(), 0);
    assert_eq!(drain(&r, 1000), (a, ReadOutcome::Eof));
}

#[test]
fn block_expiry_cuts_off_the_readers_a_write_waited_too_long_for() {
    let (s, parked) = blocking(99);
    let slow = s.open_reader("slow".into()).unwrap();
    let fast = s.open_reader("fast".into()).unwrap();
    let w = s.open_writer();
    let (a, b, c) = (pattern(1, 50), pattern(2, 50), pattern(3, 30));
    submit(&w, &a, 0);
    drain(&fast, 1000);
    let (_, rxb) = submit(&w, &b, 0);
    let (_, rxc) = submit(&w, &c, 0);
    // Not waited that long yet: nothing changes.
    assert!(!s.expire_blocked(Duration::from_secs(3600)));
    assert!(rxb.try_recv().is_err());
    assert!(!slow.stats().disconnected);
    // Waited long enough: the reader without room is cut off, both writes go.
    assert!(s.expire_blocked(Duration::ZERO));
    assert_eq!(rxb.try_recv().unwrap(), Ok(()));
    assert_eq!(rxc.try_recv().unwrap(), Ok(()));
    assert_eq!(parked.parked_total(), 0);
    assert!(slow.stats().disconnected);
    assert_eq!(s.stats().dropped_writes, 0, "cut off, not dropped");
    // The slow reader reads what it had, then EOF; the other gets everything.
    assert_eq!(drain(&slow, 1000), (a, ReadOutcome::Eof));
    assert_eq!(drain(&fast, 1000).0, concat(&[&b, &c]));
    assert!(!s.expire_blocked(Duration::ZERO), "nothing left waiting");
}

#[test]
fn block_closing_the_slow_reader_releases_blocked_writes() {
    let (s, _) = blocking(99);
    let slow = s.open_reader("slow".into()).unwrap();
    let w = s.open_writer();
    submit(&w, &pattern(1, 50), 0);
    let (_, rx) = submit(&w, &pattern(2, 50), 0);
    assert!(rx.try_recv().is_err());
    drop(slow);
    assert_eq!(rx.try_recv().unwrap(), Ok(()));
}

#[test]
fn block_raising_the_budget_releases_blocked_writes() {
    let (s, _) = blocking(99);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    submit(&w, &pattern(1, 50), 0);
    let (_, rx) = submit(&w, &pattern(2, 50), 0);
    let (_, rx2) = submit(&w, &pattern(3, 50), 0);
    assert!(rx.try_recv().is_err());
    s.set_budgets(budgets(1000, 0));
    // Every blocked write that fits goes, in order.
    assert_eq!(rx.try_recv().unwrap(), Ok(()));
    assert_eq!(rx2.try_recv().unwrap(), Ok(()));
    assert_eq!(r.stats().queued_bytes, 150);
    assert_eq!(
        drain(&r, 1000).0,
        concat(&[&pattern(1, 50), &pattern(2, 50), &pattern(3, 50)])
    );
}

#[test]
fn block_leaving_the_policy_releases_blocked_writes_under_the_new_one() {
    let (s, _) = blocking(99);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let a = pattern(1, 50);
    submit(&w, &a, 0);
    let (_, rx) = submit(&w, &pattern(2, 50), 0);
    s.set_policy(Policy::default());
    assert_eq!(rx.try_recv().unwrap(), Ok(()));
    // Written, and dropped for the reader that had no room.
    assert_eq!(s.stats().writes, 2);
    assert_eq!(r.stats().dropped_writes, 1);
    assert_eq!(drain(&r, 1000).0, a);
}

#[test]
fn block_writer_write_waits_on_its_thread_until_there_is_room() {
    finishes("blocked Writer::write", || {
        let (s, _) = blocking(99);
        let r = s.open_reader("r".into()).unwrap();
        let w = s.open_writer();
        let (a, b) = (pattern(1, 50), pattern(2, 50));
        w.write(&a).unwrap();
        let b2 = b.clone();
        let t = std::thread::spawn(move || w.write(&b2));
        // Wait until the write is blocked, then make room.
        while s.stats().blocked_writes == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(read_now(&r, 1000), ReadOutcome::Data(a.into()));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(drain(&r, 1000).0, b);
    });
}

#[test]
fn block_does_not_wait_for_readers_that_ended() {
    // A disconnected reader is ended: under Block it holds no writer back.
    let (s, _) = stream(99, 0);
    s.set_policy(policy(SlowReader::Disconnect, OnWriterClose::Keep));
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 50)).unwrap();
    w.write(&pattern(2, 50)).unwrap(); // r overflows: disconnected
    assert!(r.stats().disconnected);
    s.set_policy(policy(SlowReader::Block, OnWriterClose::Keep));
    let (id, rx) = submit(&w, &pattern(3, 50), 0);
    assert_eq!(id, None);
    assert_eq!(rx.try_recv().unwrap(), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Policy `Disconnect`
// ---------------------------------------------------------------------------------------

#[test]
fn disconnect_cuts_off_an_overflowing_reader_after_its_queue() {
    let (s, _) = stream(199, 0);
    s.set_policy(policy(SlowReader::Disconnect, OnWriterClose::Keep));
    let slow = s.open_reader("slow".into()).unwrap();
    let fast = s.open_reader("fast".into()).unwrap();
    let w = s.open_writer();
    let writes: Vec<Vec<u8>> = (0..4).map(|k| pattern(k, 100)).collect();
    w.write(&writes[0]).unwrap(); // 100 each: one fits in 199
    drain(&fast, 1000);
    w.write(&writes[1]).unwrap(); // slow overflows
    assert_eq!(drain(&fast, 1000).0, writes[1]);
    let st = slow.stats();
    assert!(st.disconnected);
    assert_eq!((st.dropped_writes, st.dropped_bytes), (1, 100));
    assert_eq!(
        s.stats().readers,
        1,
        "a disconnected reader no longer counts"
    );
    assert_eq!(s.stats().dropped_writes, 1);
    // It receives and counts nothing more.
    w.write(&writes[2]).unwrap();
    assert_eq!(slow.stats().dropped_writes, 1);
    // It reads what it had, then EOF, at once even in wait mode.
    assert_eq!(drain(&slow, 30), (writes[0].clone(), ReadOutcome::Eof));
    let (id, rx) = read_wait(&slow, 10, 0);
    assert_eq!(id, None);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(slow.poll(waker().0), Readiness::Ended);
    // The fast reader is not affected.
    assert!(!fast.stats().disconnected);
    assert_eq!(drain(&fast, 1000).0, writes[2]);
    assert_eq!(s.reader_stats().len(), 2);
}

// ---------------------------------------------------------------------------------------
// Policy `OnWriterClose`
// ---------------------------------------------------------------------------------------

#[test]
fn on_writer_close_keep_lets_readers_wait_for_a_next_writer() {
    let (s, _) = stream(1000, 1000);
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let a = pattern(1, 10);
    w.write(&a).unwrap();
    drop(w);
    assert_eq!(drain(&r, 100), (a, ReadOutcome::WouldBlock));
    assert_eq!(s.stats().ring_bytes, 10);
    let (id, rx) = read_wait(&r, 100, 0);
    assert!(id.is_some());
    let b = pattern(2, 10);
    s.open_writer().write(&b).unwrap();
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Data(b.into()));
}

#[test]
fn on_writer_close_eof_ends_readers_when_the_last_writer_closes() {
    let (s, parked) = stream(1000, 1000);
    s.set_policy(policy(SlowReader::Drop, OnWriterClose::Eof));
    let queued = s.open_reader("queued".into()).unwrap();
    let waiting = s.open_reader("waiting".into()).unwrap();
    let polling = s.open_reader("polling".into()).unwrap();
    let w1 = s.open_writer();
    let w2 = s.open_writer();
    let a = pattern(1, 10);
    w1.write(&a).unwrap();
    drain(&waiting, 100);
    drain(&polling, 100);
    let (_, rx) = read_wait(&waiting, 100, 0);
    let (wake, n) = waker();
    assert_eq!(polling.poll(wake), Readiness::Waiting);
    drop(w1);
    assert!(rx.try_recv().is_err(), "a writer is still open");
    drop(w2);
    assert_eq!(rx.try_recv().unwrap(), ReadOutcome::Eof);
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(parked.parked_total(), 0);
    assert_eq!(s.stats().ring_bytes, 0, "the ring is emptied");
    assert_eq!(drain(&queued, 3), (a, ReadOutcome::Eof));
    assert_eq!(read_now(&polling, 10), ReadOutcome::Eof);
    assert!(!s.stats().removed);
}

#[test]
fn on_writer_close_eof_a_new_session_reaches_only_readers_opened_after_the_end() {
    let (s, _) = stream(1000, 1000);
    s.set_policy(policy(SlowReader::Drop, OnWriterClose::Eof));
    let old = s.open_reader("old".into()).unwrap();
    let w = s.open_writer();
    w.write(&pattern(1, 10)).unwrap();
    drop(w);
    let between = s.open_reader("between".into()).unwrap();
    assert_eq!(
        read_now(&between, 10),
        ReadOutcome::WouldBlock,
        "no history, no EOF"
    );
    let w = s.open_writer();
    let b = pattern(2, 10);
    w.write(&b).unwrap();
    let after = s.open_reader("after".into()).unwrap();
    assert_eq!(drain(&between, 100), (b.clone(), ReadOutcome::WouldBlock));
    assert_eq!(drain(&after, 100), (b.clone(), ReadOutcome::WouldBlock));
    assert_eq!(drain(&old, 100), (pattern(1, 10), ReadOutcome::Eof));
    assert_eq!(
        old.stats().dropped_writes,
        0,
        "an ended reader counts nothing"
    );
    drop(w);
    assert_eq!(read_now(&between, 10), ReadOutcome::Eof);
    assert_eq!(read_now(&after, 10), ReadOutcome::Eof);
}

#[test]
fn namespace_with_policy_gives_new_streams_its_policy() {
    let p = policy(SlowReader::Block, OnWriterClose::Eof);
    let ns = Namespace::with_policy(budgets(100, 0), p);
    assert_eq!(ns.default_policy(), p);
    let (s, _) = ns.create(b"x", meta()).unwrap();
    assert_eq!(s.stats().policy, p);
    assert_eq!(
        Namespace::new(budgets(100, 0)).default_policy(),
        Policy::default()
    );
    assert_eq!(
        Policy::default(),
        policy(SlowReader::Drop, OnWriterClose::Keep)
    );
}

#[test]
fn namespace_parked_total_counts_blocked_writes() {
    let ns = Namespace::with_policy(
        budgets(99, 0),
        policy(SlowReader::Block, OnWriterClose::Keep),
    );
    let (s, _) = ns.create(b"x", meta()).unwrap();
    let _r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    submit(&w, &pattern(1, 50), 0);
    let (_, rx) = submit(&w, &pattern(2, 50), 0);
    assert_eq!(ns.parked_total(), 1);
    ns.shutdown();
    assert_eq!(rx.try_recv().unwrap(), Err(StreamError::Removed));
    assert_eq!(ns.parked_total(), 0);
}

// ---------------------------------------------------------------------------------------
// Write rate
// ---------------------------------------------------------------------------------------

#[test]
fn write_rate_shows_a_burst_at_once() {
    let (s, _) = stream(1 << 20, 0);
    let w = s.open_writer();
    assert_eq!(s.stats().write_rate, 0);
    w.write(&pattern(1, 60_000)).unwrap();
    // At once, not after the second it happened in: averaged over at most the six seconds
    // of the window (here: over the stream's age, at least one second).
    let rate = s.stats().write_rate;
    assert!((10_000..=60_000).contains(&rate), "rate {rate}");
}

#[test]
fn a_reserved_unit_cannot_fail_at_a_later_piece_and_gives_back_what_it_did_not_use() {
    let ns = limited(200 << 10, 1 << 20, 0, SlowReader::Drop);
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let (other, _) = ns.create(b"other", meta()).unwrap();
    let _stopped = other.open_reader("stopped".into()).unwrap();
    let w = s.open_writer();
    let before = ns.pool().used();
    assert_eq!(
        w.reserve(1 << 30),
        Err(StreamError::NoMemory),
        "more than the limit"
    );
    assert_eq!(
        ns.pool().used(),
        before,
        "a refused reservation charges nothing"
    );
    w.reserve(90_000).unwrap();
    // Another stream fills what is left (its stopped reader's queue can be shed, the
    // reservation cannot).
    let o = other.open_writer();
    for k in 0..30 {
        let _ = o.write(&pattern(k, 10_000));
    }
    for k in 0..3 {
        w.append(&pattern(100 + k, 30_000), 0).unwrap();
    }
    assert_eq!(finish(&w), Ok(()));
    assert_eq!(s.stats().writes, 1);
    // A reservation that no piece used is given back whole by abandon (and by finish).
    let used = ns.pool().used();
    w.reserve(50_000).unwrap();
    assert!(ns.pool().used() >= used + 50_000);
    w.abandon();
    assert_eq!(ns.pool().used(), used, "given back whole");
}

#[test]
fn new_names_follow_one_rule_for_every_front_door() {
    let ns = Namespace::new(budgets(100, 100));
    let long = vec![b'x'; 256];
    let cases: &[(&[u8], Option<StreamError>)] = &[
        (b"cam1", None),
        (&[b'x'; 255], None),
        (&long, Some(StreamError::NameTooLong)),
        (b"cam@live", Some(StreamError::InvalidName)),
        (b"a/b", Some(StreamError::InvalidName)),
        (b"a\0b", Some(StreamError::InvalidName)),
        (b"", Some(StreamError::InvalidName)),
        (b"..", Some(StreamError::InvalidName)),
    ];
    for (name, want) in cases {
        let got = ns.create(name, meta()).err();
        assert_eq!(&got, want, "create {:?}", String::from_utf8_lossy(name));
        if want.is_some() {
            let got = ns.rename(b"cam1", name, false).err();
            assert_eq!(&got, want, "rename to {:?}", String::from_utf8_lossy(name));
        }
    }
    assert!(
        ns.lookup(b"cam1").is_some(),
        "refused renames changed nothing"
    );
}
