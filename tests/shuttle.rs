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
    Budgets, Meta, OnWriterClose, Policy, ReadMode, ReadOutcome, Reader, SlowReader, Stream,
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
