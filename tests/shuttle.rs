//! Model checks of the stream core's concurrent paths with shuttle, which explores thread
//! interleavings of the core's locks and atomics (switched in by `src/sync.rs`).
//! Run: `cargo test --features shuttle --test shuttle`. Each check accounts for every write:
//! delivered, counted as dropped, or refused, exactly once.
#![cfg(feature = "shuttle")]

use std::sync::Mutex as StdMutex;
use std::time::SystemTime;

use shuttle::sync::Arc;
use shuttle::thread;
use streamfs::namespace::Namespace;
use streamfs::stream::{
    Budgets, Meta, Origin, Policy, ReadMode, ReadOutcome, Reader, SlowReader, Start, Stream,
    StreamError, Writer,
};

const ITERATIONS: usize = 2000;

fn meta() -> Meta {
    let now = SystemTime::UNIX_EPOCH;
    Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        crtime: now,
        ctime: now,
    }
}

fn stream(channel: u64, ring: u64, policy: Policy) -> (Arc<Namespace>, Arc<Stream>) {
    let ns = Arc::new(Namespace::with_policy(Budgets::new(channel, ring), policy));
    let (s, _) = ns.create(b"s", meta()).unwrap();
    (ns, s)
}

/// One non-blocking read of up to `max` bytes (answered before `read` returns).
fn read_now(r: &Reader, max: usize) -> ReadOutcome {
    let got = Arc::new(StdMutex::new(None));
    let g = got.clone();
    r.read(
        max,
        ReadMode::NonBlocking,
        0,
        Box::new(move |o| *g.lock().unwrap() = Some(o)),
    );
    let outcome = got.lock().unwrap().take();
    outcome.expect("non-blocking reads answer at once")
}

/// Reads everything until EOF without waiting (the stream must have ended).
fn drain(r: &Reader) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        match read_now(r, 1 << 20) {
            ReadOutcome::Data(d) => out.extend_from_slice(&d),
            ReadOutcome::Eof => return out,
            other => panic!("unexpected {other:?} after the stream ended"),
        }
    }
}

/// A policy with `slow_reader=block`.
fn blocking() -> Policy {
    Policy {
        slow_reader: SlowReader::Block,
        ..Policy::default()
    }
}

/// Writes, waiting on a shuttle channel when the write parks (a blocking channel that
/// shuttle does not model would stall its scheduler).
fn write(wr: &Writer, data: &[u8]) -> Result<(), StreamError> {
    let (tx, rx) = shuttle::sync::mpsc::channel();
    wr.submit(
        data,
        0,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().expect("every write is answered")
}

/// Splits a byte stream of 2-byte records (writer, sequence) into records.
fn records(bytes: &[u8]) -> Vec<(u8, u8)> {
    assert_eq!(bytes.len() % 2, 0, "a torn record");
    bytes.chunks(2).map(|c| (c[0], c[1])).collect()
}

#[test]
fn concurrent_writers_are_atomic_and_in_one_order() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(1 << 20, 1 << 20, Policy::default());
            let r1 = s.open_reader("r1".into()).unwrap();
            let r2 = s.open_reader("r2".into()).unwrap();
            let writers: Vec<_> = (0..3u8)
                .map(|w| {
                    let s = s.clone();
                    thread::spawn(move || {
                        let wr = s.open_writer();
                        for seq in 0..3u8 {
                            write(&wr, &[w, seq]).unwrap();
                        }
                    })
                })
                .collect();
            for t in writers {
                t.join().unwrap();
            }
            ns.shutdown();
            let a = records(&drain(&r1));
            let b = records(&drain(&r2));
            assert_eq!(a.len(), 9);
            assert_eq!(a, b, "readers disagree on the order");
            for w in 0..3u8 {
                let seqs: Vec<u8> = a.iter().filter(|r| r.0 == w).map(|r| r.1).collect();
                assert_eq!(seqs, [0, 1, 2], "writer {w} reordered");
            }
        },
        ITERATIONS,
    );
}

#[test]
fn a_reader_opening_during_writes_gets_history_and_live_without_gap_or_duplicate() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(1 << 20, 1 << 20, Policy::default());
            let w = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    for seq in 0..6u8 {
                        write(&wr, &[0, seq]).unwrap();
                    }
                })
            };
            let late = {
                let s = s.clone();
                thread::spawn(move || s.open_reader("late".into()).unwrap())
            };
            let r = late.join().unwrap();
            w.join().unwrap();
            ns.shutdown();
            let got: Vec<u8> = records(&drain(&r)).into_iter().map(|r| r.1).collect();
            // The ring holds all six writes: a late joiner sees them all, once, in order.
            assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        },
        ITERATIONS,
    );
}

#[test]
fn drops_are_accounted_exactly_once_with_a_small_ring() {
    shuttle::check_random(
        || {
            // The ring keeps one write, the channel about two: drops and trimming happen.
            let (ns, s) = stream(2 * 66, 66, Policy::default());
            let w = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    for seq in 0..6u8 {
                        write(&wr, &[1, seq]).unwrap();
                    }
                })
            };
            let r = s.open_reader("r".into()).unwrap();
            w.join().unwrap();
            ns.shutdown();
            let stats = r.stats();
            let got = records(&drain(&r));
            let seqs: Vec<u8> = got.iter().map(|r| r.1).collect();
            assert!(
                seqs.windows(2).all(|p| p[0] < p[1]),
                "reordered or duplicated: {seqs:?}"
            );
            // The reader replayed the write before its first live one (if any), then got
            // or dropped every later write once: records + drops == 6 - first sequence.
            let first = seqs[0];
            assert_eq!(
                got.len() as u64 + stats.dropped_writes,
                6 - u64::from(first),
                "delivered {got:?}, dropped {}",
                stats.dropped_writes
            );
        },
        ITERATIONS,
    );
}

#[test]
fn closing_a_reader_during_fanout_and_parked_reads_leave_nothing_behind() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(1 << 20, 0, Policy::default());
            let r = s.open_reader("r".into()).unwrap();
            let answered = Arc::new(StdMutex::new(Vec::new()));
            let a = answered.clone();
            r.read(
                16,
                ReadMode::Wait,
                0,
                Box::new(move |o| a.lock().unwrap().push(o)),
            );
            let w = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    write(&wr, b"ab").unwrap();
                    write(&wr, b"cd").unwrap();
                })
            };
            let closer = thread::spawn(move || drop(r));
            w.join().unwrap();
            closer.join().unwrap();
            // The parked read was answered exactly once: with data, or EOF at close.
            let got = answered.lock().unwrap();
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(ns.parked_total(), 0);
        },
        ITERATIONS,
    );
}

#[test]
fn removal_during_writes_refuses_or_delivers_each_write_once() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(1 << 20, 0, Policy::default());
            let r = s.open_reader("r".into()).unwrap();
            let w = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    (0..4u8)
                        .map(|seq| write(&wr, &[2, seq]))
                        .collect::<Vec<_>>()
                })
            };
            let remover = {
                let ns = ns.clone();
                thread::spawn(move || ns.remove(b"s").unwrap())
            };
            let results = w.join().unwrap();
            remover.join().unwrap();
            let got: Vec<u8> = records(&drain(&r)).into_iter().map(|r| r.1).collect();
            let ok: Vec<u8> = (0..4u8).filter(|i| results[*i as usize].is_ok()).collect();
            assert_eq!(got, ok, "delivered writes differ from accepted ones");
            // Once refused, every later write is refused too.
            let first_refused = results.iter().position(|r| r.is_err()).unwrap_or(4);
            assert!(
                results[first_refused..]
                    .iter()
                    .all(|r| *r == Err(StreamError::Removed))
            );
        },
        ITERATIONS,
    );
}

#[test]
fn shutdown_during_waits_answers_every_parked_read_and_write() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(70, 0, blocking());
            let slow = s.open_reader("slow".into()).unwrap();
            let idle_answers = Arc::new(StdMutex::new(Vec::new()));
            let idle = s.open_reader("idle".into()).unwrap();
            let writer = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    // The second write cannot fit while nobody reads: it blocks.
                    (write(&wr, b"x"), write(&wr, &[b'y'; 10]))
                })
            };
            let a = idle_answers.clone();
            let reader = thread::spawn(move || {
                idle.read(
                    64,
                    ReadMode::Wait,
                    0,
                    Box::new(move |o| a.lock().unwrap().push(o)),
                );
                idle
            });
            let stopper = {
                let ns = ns.clone();
                thread::spawn(move || ns.shutdown())
            };
            let (first, second) = writer.join().unwrap();
            let idle = reader.join().unwrap();
            stopper.join().unwrap();
            assert!(first.is_ok() || first == Err(StreamError::Removed));
            assert!(second.is_ok() || second == Err(StreamError::Removed));
            assert_eq!(ns.parked_total(), 0, "a parked operation was left behind");
            let answers = idle_answers.lock().unwrap().len();
            assert!(answers <= 1);
            let slow_got = drain(&slow).len();
            let idle_got = drain(&idle).len();
            let written = [first, second]
                .iter()
                .zip([1usize, 10])
                .filter(|(r, _)| r.is_ok())
                .map(|(_, n)| n)
                .sum::<usize>();
            assert_eq!(
                slow_got, written,
                "lossless policy lost or duplicated bytes"
            );
            assert!(idle_got <= written);
        },
        ITERATIONS,
    );
}

#[test]
fn block_policy_delivers_everything_to_a_concurrent_reader() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(70, 0, blocking());
            let r = s.open_reader("r".into()).unwrap();
            let w = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    for seq in 0..4u8 {
                        write(&wr, &[3, seq]).unwrap();
                    }
                })
            };
            let mut got = Vec::new();
            while got.len() < 8 {
                match read_now(&r, 64) {
                    ReadOutcome::Data(d) => got.extend_from_slice(&d),
                    ReadOutcome::WouldBlock => thread::yield_now(),
                    other => panic!("{other:?}"),
                }
            }
            w.join().unwrap();
            let seqs: Vec<u8> = records(&got).into_iter().map(|r| r.1).collect();
            assert_eq!(seqs, [0, 1, 2, 3]);
            assert_eq!(s.stats().dropped_writes, 0);
            assert_eq!(ns.parked_total(), 0);
        },
        ITERATIONS,
    );
}

/// Finishes `wr`'s unit, waiting on a shuttle channel when it parks.
fn finish(wr: &Writer) -> Result<(), StreamError> {
    let (tx, rx) = shuttle::sync::mpsc::channel();
    wr.finish(
        0,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().expect("every finish is answered")
}

/// Splits bytes of 3-byte records (writer, unit, piece) into units: a unit's pieces must
/// come together and in order, each unit with `pieces(writer)` of them.
fn units(bytes: &[u8], pieces: impl Fn(u8) -> u8) -> Vec<(u8, u8)> {
    assert_eq!(bytes.len() % 3, 0, "a torn record");
    let mut out = Vec::new();
    let mut next = 0u8;
    for rec in bytes.chunks(3) {
        let (w, u, p) = (rec[0], rec[1], rec[2]);
        assert_eq!(p, next, "unit ({w}, {u}) torn or interleaved in {bytes:?}");
        if p == 0 {
            out.push((w, u));
        } else {
            assert_eq!(out.last(), Some(&(w, u)), "pieces of two units interleave");
        }
        next = if p + 1 == pieces(w) { 0 } else { p + 1 };
    }
    assert_eq!(next, 0, "the last unit is cut short");
    out
}

/// Reads until `want` bytes arrived, yielding while nothing is queued.
fn read_all(r: &Reader, want: usize, max: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match read_now(r, max) {
            ReadOutcome::Data(d) => got.extend_from_slice(&d),
            ReadOutcome::WouldBlock => thread::yield_now(),
            other => panic!("{other:?} before every write arrived"),
        }
    }
    got
}

/// Two writers each write two units of three pieces while a third writes whole writes and
/// two readers read: both readers get every unit whole, and in the same order. Under
/// `policy` and a channel of `channel` bytes (`Block` with room for one unit: writers park
/// and are released by the readers).
fn units_with_whole_writes_and_readers(policy: Policy, channel: u64) {
    let (ns, s) = stream(channel, 1 << 20, policy);
    let readers: Vec<Reader> = (0..2)
        .map(|i| s.open_reader(format!("r{i}")).unwrap())
        .collect();
    let mut threads: Vec<_> = (0..2u8)
        .map(|w| {
            let s = s.clone();
            thread::spawn(move || {
                let wr = s.open_writer();
                for u in 0..2u8 {
                    wr.append(&[w, u, 0], 0).unwrap();
                    wr.append(&[w, u, 1], 0).unwrap();
                    // The last piece by submit for one writer, by append + finish for the
                    // other.
                    if w == 0 {
                        write(&wr, &[w, u, 2]).unwrap();
                    } else {
                        wr.append(&[w, u, 2], 0).unwrap();
                        finish(&wr).unwrap();
                    }
                }
            })
        })
        .collect();
    threads.push({
        let s = s.clone();
        thread::spawn(move || {
            let wr = s.open_writer();
            for u in 0..3u8 {
                write(&wr, &[2, u, 0]).unwrap();
            }
        })
    });
    let total = 2 * 2 * 9 + 3 * 3;
    let readers: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, r)| thread::spawn(move || read_all(&r, total, [4, 64][i])))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got: Vec<Vec<u8>> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let pieces = |w: u8| if w == 2 { 1 } else { 3 };
    let a = units(&got[0], pieces);
    let b = units(&got[1], pieces);
    assert_eq!(a.len(), 7);
    assert_eq!(a, b, "readers disagree on the order");
    for w in 0..3u8 {
        let mine: Vec<u8> = a.iter().filter(|x| x.0 == w).map(|x| x.1).collect();
        let want: Vec<u8> = (0..if w == 2 { 3 } else { 2 }).collect();
        assert_eq!(mine, want, "writer {w}'s units reordered");
    }
    assert_eq!(s.stats().writes, 7);
    assert_eq!(s.stats().dropped_writes, 0);
    assert_eq!(ns.parked_total(), 0);
}

#[test]
fn units_of_two_writers_and_whole_writes_reach_concurrent_readers_whole_in_one_order() {
    shuttle::check_random(
        || units_with_whole_writes_and_readers(Policy::default(), 1 << 20),
        ITERATIONS,
    );
}

#[test]
fn under_block_units_park_and_still_reach_every_reader_whole_in_one_order() {
    // Room for one three-piece unit (3 × (3 + 64) bytes): the rest park behind it.
    shuttle::check_random(
        || units_with_whole_writes_and_readers(blocking(), 3 * 67),
        ITERATIONS,
    );
}

#[test]
fn cancel_read_racing_a_write_answers_the_read_once_and_loses_nothing() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(1 << 20, 0, Policy::default());
            let r = s.open_reader("r".into()).unwrap();
            let answers = Arc::new(StdMutex::new(Vec::new()));
            let a = answers.clone();
            let read = r
                .read(
                    64,
                    ReadMode::Wait,
                    0,
                    Box::new(move |o| a.lock().unwrap().push(o)),
                )
                .expect("nothing is queued: the read parks");
            let writer = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    write(&wr, b"hello").unwrap();
                })
            };
            let canceller = {
                let s = s.clone();
                let id = r.id();
                thread::spawn(move || s.cancel_read(id, read))
            };
            writer.join().unwrap();
            let cancelled = canceller.join().unwrap();
            let got = std::mem::take(&mut *answers.lock().unwrap());
            match got.as_slice() {
                [ReadOutcome::Data(d)] => {
                    assert!(!cancelled, "cancel_read claimed an answered read");
                    assert_eq!(&d[..], b"hello");
                    assert_eq!(read_now(&r, 64), ReadOutcome::WouldBlock, "read twice");
                }
                [ReadOutcome::Interrupted] => {
                    assert!(cancelled);
                    assert_eq!(
                        read_now(&r, 64),
                        ReadOutcome::Data(b"hello".to_vec().into()),
                        "the write's bytes went to the interrupted read"
                    );
                }
                other => panic!("the parked read was answered {other:?}"),
            }
            assert_eq!(ns.parked_total(), 0);
            assert_eq!(r.stats().dropped_writes, 0);
        },
        ITERATIONS,
    );
}

#[test]
fn a_unit_appended_while_its_stream_is_removed_is_applied_whole_or_not_at_all() {
    shuttle::check_random(
        || {
            let (ns, s) = stream(1 << 20, 1 << 20, Policy::default());
            let r = s.open_reader("r".into()).unwrap();
            let writer = {
                let s = s.clone();
                thread::spawn(move || {
                    let wr = s.open_writer();
                    let a = wr.append(&[7, 0, 0], 0);
                    let b = wr.append(&[7, 0, 1], 0);
                    let f = finish(&wr);
                    (a, b, f, wr.pending())
                })
            };
            let remover = {
                let ns = ns.clone();
                thread::spawn(move || ns.remove(b"s").unwrap())
            };
            let (a, b, f, pending) = writer.join().unwrap();
            remover.join().unwrap();
            assert_eq!(pending, 0, "a finished or refused unit leaves nothing open");
            let results = [a, b, f];
            // Once refused, refused for good, and only as Removed.
            let first_err = results.iter().position(|r| r.is_err()).unwrap_or(3);
            assert!(
                results[first_err..]
                    .iter()
                    .all(|r| *r == Err(StreamError::Removed)),
                "{results:?}"
            );
            let got = drain(&r);
            if first_err == 3 {
                assert_eq!(
                    got,
                    [7, 0, 0, 7, 0, 1],
                    "an accepted unit reaches the reader whole"
                );
                assert_eq!(s.stats().writes, 1);
            } else {
                assert!(got.is_empty(), "a refused unit reached a reader: {got:?}");
                assert_eq!(s.stats().writes, 0, "a unit was applied after removal");
            }
            assert!(s.is_removed());
            drop(r);
            assert_eq!(
                ns.pool().used(),
                streamfs::memory::STREAM_COST,
                "the unit's pieces were freed"
            );
        },
        ITERATIONS,
    );
}

/// Opens of `a_reader_opened_at` that were surely ahead of the end (counted outside
/// shuttle's model).
static OPENED_AHEAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Three whole writes of history (9 bytes), then, concurrently, a writer of two-piece units,
/// a writer of whole writes and a reader opening at `from`: the reader gets exactly the
/// stream's bytes from where it starts (as a reader of the whole stream sees them), with no
/// gap and no duplicate between its replay and the live writes. Records are 3 bytes
/// (writer, unit, piece); a write starts at a record whose piece is 0.
fn a_reader_opened_at(from: Origin) {
    let (ns, s) = stream(1 << 20, 1 << 20, Policy::default());
    let all = s.open_reader("all".into()).unwrap();
    let history = s.open_writer();
    for u in 0..3u8 {
        write(&history, &[9, u, 0]).unwrap();
    }
    let unit_writer = {
        let s = s.clone();
        thread::spawn(move || {
            let wr = s.open_writer();
            for u in 0..2u8 {
                wr.append(&[0, u, 0], 0).unwrap();
                wr.append(&[0, u, 1], 0).unwrap();
                finish(&wr).unwrap();
            }
        })
    };
    let wholes = {
        let s = s.clone();
        thread::spawn(move || {
            let wr = s.open_writer();
            for u in 0..2u8 {
                write(&wr, &[1, u, 0]).unwrap();
            }
        })
    };
    let opener = {
        let s = s.clone();
        thread::spawn(move || {
            let start = Start {
                from,
                snapshot: false,
            };
            let r = s.open_reader_at("at".into(), start).unwrap();
            let first = r.stats().start;
            // (surely opened ahead of the end when still ahead now)
            if first > s.stats().written_bytes {
                OPENED_AHEAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (r, first)
        })
    };
    unit_writer.join().unwrap();
    wholes.join().unwrap();
    let (r, first) = opener.join().unwrap();
    ns.shutdown();
    let whole = drain(&all);
    assert_eq!(whole.len(), 9 + 2 * 6 + 2 * 3);
    let pieces = |w: u8| if w == 0 { 2 } else { 1 };
    units(&whole, pieces);
    let got = drain(&r);
    assert_eq!(r.stats().dropped_writes, 0);
    let at = first as usize;
    match from {
        Origin::Offset(o) => assert_eq!(first, o, "an exact offset starts there"),
        Origin::Start => assert_eq!(first, 0, "the ring holds everything"),
        _ => assert!(
            at == whole.len() || at.is_multiple_of(3) && whole[at + 2] == 0,
            "{from:?} starts at {at}, not at a write in {whole:?}"
        ),
    }
    assert_eq!(
        got,
        whole[at..],
        "{from:?}: from {at}, got {got:?} of the stream {whole:?}"
    );
}

#[test]
fn a_reader_opened_at_an_offset_in_the_ring_during_writes_gets_every_byte_from_it_once() {
    // Inside the second write of history, in the middle of a record.
    shuttle::check_random(|| a_reader_opened_at(Origin::Offset(4)), ITERATIONS);
}

#[test]
fn a_reader_opened_at_an_offset_the_writes_reach_meanwhile_gets_every_byte_from_it_once() {
    // Inside the concurrent writes: ahead of the end or in the ring, as the open falls.
    shuttle::check_random(|| a_reader_opened_at(Origin::Offset(13)), ITERATIONS);
    let ahead = OPENED_AHEAD.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ahead > 0,
        "no open was ahead of the end: the waiting path went unchecked"
    );
}

#[test]
fn a_live_reader_opened_during_writes_gets_every_write_after_it_once() {
    shuttle::check_random(|| a_reader_opened_at(Origin::Live), ITERATIONS);
}

#[test]
fn a_reader_opened_at_the_start_during_writes_gets_the_whole_stream_once() {
    shuttle::check_random(|| a_reader_opened_at(Origin::Start), ITERATIONS);
}
