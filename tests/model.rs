//! The stream core's contract, checked on random operation sequences with proptest.
//!
//! This is not a second implementation of the core. It drives a `Namespace` (several
//! streams, two or three writers each, readers opened at random moments, reads of random
//! sizes that return at once or park, budgets and policies changed mid-run, renames,
//! removals, a shutdown) and only records what it can see from outside: which writes were
//! finished and what each finish answered, the bytes each reader received, and the
//! counters the core reports. Every piece written is self-describing (a header with the
//! number of its unit, its index in the unit, its writer and its length, then bytes that
//! depend on all three), so the writes a reader got can be recovered from its bytes alone.
//! The checks are the contract's statements (module docs of `src/stream.rs`,
//! `src/memory.rs`, `src/namespace.rs`):
//!
//! - a reader receives whole writes only, each unit with all of its pieces and nothing
//!   else, in the one order of the stream (the order in which finishes were answered `Ok`,
//!   which is also the order they were called in: writes parked by policy `Block` are
//!   applied in submission order, and nothing overtakes them);
//! - a reader receives, from where it started, every write of that order except those it
//!   counts as dropped: its `dropped_writes`/`dropped_bytes` are exactly the writes it is
//!   missing among its replay and the writes applied while it received; its replay is a
//!   contiguous suffix of the applied writes ending with the newest (the ring at open);
//! - no duplicates, nothing from before the replay, abandoned or failed units nowhere;
//!   a removed stream's readers get their queue then EOF, writes to it fail `Removed`;
//! - a write whose bytes fit a reader's budget (its live bytes plus the write's at most
//!   `channel`) while the runs it may need fit the queue's bound (`live_runs` plus its
//!   pieces at most one per `CHANNEL_BYTES_PER_RUN` of the budget, or 16), or that meets an
//!   empty live queue, is queued for it; one whose bytes do not fit is dropped for it, or
//!   cuts it off (`Disconnect`), or parks (`Block`); in between (bytes fit, runs may not:
//!   the write may extend the queue's last run) either, whole; a parked write stays parked
//!   only while some reader may have no room; readers of a `Block` stream never lose a
//!   write;
//! - the ring holds a suffix of whole writes whose data bytes are within its budget and
//!   that count at most one per `RING_BYTES_PER_WRITE` of it, unless it is a single write,
//!   and the newest write is kept;
//! - the pool's `used()` passes `max_memory` by at most one write's queue entries, and is 0
//!   once everything is dropped; `parked_total()` is the number of reads and writes parked;
//! - a reader opened at a start position (`src/start.rs`) begins where the spec says, as
//!   `ReaderStats::start` reports: an exact offset at that byte (inside a write too; one
//!   older than the ring fails `TooOld`, one ahead of the end waits for it), `live` at the
//!   end, `start`/`-DURATION`/`-SIZE` at the write (`replay_align=write`) or line start
//!   (`line`) the spec names in the ring at the open (`-DURATION` against instants taken
//!   around each write and the open), `,snapshot` then EOF; `Stream::resolve` agrees; its
//!   bytes are the stream's from there (the model keeps every byte applied), the rest of the
//!   write it starts in first, then whole writes as above; an open trims from the ring the
//!   writes older than `ring_buffer_time`, and only those.
//!
//! A coverage count makes sure drops, disconnects, blocking, shedding, memory refusals,
//! parked reads, cancellations, session ends, units, replays and every kind of start all
//! occur over the cases.
//! Shrunk failures are kept below as `regression_*` tests.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use streamfs::memory::{ENTRY_COST, READER_COST};
use streamfs::namespace::{Limits, Namespace};
use streamfs::stream::{
    Align, Budgets, CHANNEL_BYTES_PER_RUN, Meta, OnWriterClose, Origin, Policy, Pool,
    RING_BYTES_PER_WRITE, RING_ENTRY_COST, ReadMode, ReadOutcome, Reader, ReaderStats, SlowReader,
    Start, Stream, StreamError, StreamStats, Writer,
};
use streamfs::sync::Arc;

/// Cases of the main property; `MODEL_CASES` overrides.
const CASES: u32 = 1000;

const NAMES: [&[u8]; 3] = [b"a", b"b", b"c"];

/// Header of a piece: unit (u32), piece index (u16), writer (u16), piece length (u32).
const HEADER: usize = 12;

/// Was an open breach, reproduced by `regression_releasing_parked_writes_keeps_within_the_memory_limit`
/// and fixed (a parked write's queue entries are charged when it parks): releasing several
/// parked (`Block`) writes in one step charged the queue entries of all of them past
/// `max_memory`. With `true` the pool check would tolerate the entries of every write
/// applied in one step.
const OPEN_RELEASE_OVERSHOOT: bool = false;

/// Fixed (was open, reproduced by `regression_an_open_refused_as_too_old_gives_back_its_reservation`):
/// `Stream::open_reader_at` reserves the queue entries of the replay (the ring's entries and
/// those of parked writes) before it resolves the start, and returns `TooOld` without giving
/// them back: the pool stays charged for them for good. With `true` the model tolerates
/// exactly that much memory left charged at the end.
const OPEN_TOO_OLD_LEAK: bool = false;

/// Fixed (was open, reproduced by `regression_an_offset_ahead_never_starts_before_it`): a reader that
/// asks for an offset ahead of the end starts at the end instead when the pool has no room
/// for its replay's queue entries (it has no replay): it receives bytes before its offset.
/// With `true` the model accepts that start under a memory limit.
const OPEN_AHEAD_STARTS_AT_END: bool = false;

/// Fixed (was open, reproduced by `regression_a_reader_opening_beside_parked_writes_keeps_within_the_memory_limit`):
/// a reader that opens while writes are parked (`Block`) is charged its queue entries of
/// all of them, unchecked, even when the pool refused to reserve them: each such open
/// passes `max_memory` by the entries of every parked write. With `true` the pool check
/// tolerates the entries of every parked write for every reader.
const OPEN_PARKED_OVERCHARGE: bool = false;

/// Most live writers per stream.
const WRITERS_PER_STREAM: usize = 3;

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Cfg {
    defaults: Budgets,
    policy: Policy,
    limits: Limits,
}

#[derive(Clone, Debug)]
enum Op {
    /// Creates the stream of name slot `name` (or finds it).
    Create {
        name: u8,
    },
    OpenWriter {
        s: u8,
    },
    /// A whole write, or the last piece of the writer's open unit; `sync` uses
    /// `Writer::write` (on streams that do not block) instead of `submit`.
    Whole {
        w: u8,
        len: u16,
        sync: bool,
    },
    Append {
        w: u8,
        len: u16,
    },
    Finish {
        w: u8,
    },
    Abandon {
        w: u8,
    },
    /// Drops a writer (mid-unit or not), never one with a write parked.
    DropWriter {
        w: u8,
    },
    /// Opens a reader at the stream's default start.
    OpenReader {
        s: u8,
    },
    /// Opens a reader at a start position (`probe`: asks `Stream::resolve` first).
    OpenReaderAt {
        s: u8,
        from: FromGen,
        snapshot: bool,
        probe: bool,
    },
    /// Lets time pass, so that durations (`-DURATION`, `ring_buffer_time`) split the writes.
    Sleep {
        us: u16,
    },
    Read {
        r: u8,
        max: u16,
        wait: bool,
    },
    /// Cancels one of the reads a reader ever parked (answered or not).
    CancelRead {
        r: u8,
        k: u8,
    },
    /// Closes a reader, after reading all it has queued (`drain`) or not.
    CloseReader {
        r: u8,
        drain: bool,
    },
    /// Cancels one of the writes that ever parked (answered or not).
    CancelWrite {
        k: u8,
    },
    SetBudgets {
        s: u8,
        budgets: Budgets,
    },
    SetPolicy {
        s: u8,
        policy: Policy,
    },
    Rename {
        from: u8,
        to: u8,
        no_replace: bool,
    },
    Remove {
        name: u8,
    },
    Shutdown,
}

/// Where an `OpenReaderAt` starts; offsets are chosen against the stream's ring when the
/// step runs.
#[derive(Clone, Copy, Debug)]
enum FromGen {
    Start,
    Live,
    /// `BACKS[i]`.
    Back(usize),
    BackBytes(u64),
    /// `anchor` 0: the ring's start + `delta`; 1: the stream's end + `delta`; 2: `frac` of
    /// the way from the ring's start to the end, + `delta`.
    Offset {
        anchor: u8,
        frac: u16,
        delta: i8,
    },
}

/// The durations of `Origin::Back`: none, a few writes, many, all.
const BACKS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_micros(150),
    Duration::from_millis(1),
    Duration::from_millis(8),
    Duration::from_secs(3600),
];

fn from_strategy() -> impl Strategy<Value = FromGen> {
    prop_oneof![
        2 => Just(FromGen::Start),
        2 => Just(FromGen::Live),
        3 => (0..BACKS.len()).prop_map(FromGen::Back),
        3 => prop_oneof![0u64..=200, 0u64..=1500].prop_map(FromGen::BackBytes),
        5 => (0u8..3, any::<u16>(), -3i8..=5).prop_map(|(anchor, frac, delta)| FromGen::Offset {
            anchor,
            frac,
            delta
        }),
    ]
}

fn budgets_strategy() -> impl Strategy<Value = Budgets> {
    (
        prop_oneof![Just(0u64), Just(100), Just(300), Just(700), Just(1 << 20)],
        prop_oneof![Just(0u64), Just(100), Just(400), Just(1500)],
        prop_oneof![
            4 => Just(None),
            1 => Just(Some(Duration::from_micros(200))),
            1 => Just(Some(Duration::from_millis(2)))
        ],
    )
        .prop_map(|(channel, ring, ring_time)| Budgets {
            channel,
            ring,
            ring_time,
        })
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(SlowReader::Drop),
            Just(SlowReader::Block),
            Just(SlowReader::Disconnect)
        ],
        prop_oneof![3 => Just(OnWriterClose::Keep), 1 => Just(OnWriterClose::Eof)],
        prop_oneof![Just(Align::Write), Just(Align::Line)],
    )
        .prop_map(|(slow_reader, on_writer_close, align)| Policy {
            slow_reader,
            on_writer_close,
            align,
            ..Policy::default()
        })
}

fn cfg_strategy() -> impl Strategy<Value = Cfg> {
    (
        budgets_strategy(),
        policy_strategy(),
        prop_oneof![
            2 => Just(u64::MAX),
            1 => Just(5000u64),
            1 => Just(7000u64),
            1 => Just(10_000u64),
            1 => Just(16_000u64)
        ],
        prop_oneof![3 => Just(usize::MAX), 1 => Just(2usize)],
        prop_oneof![3 => Just(usize::MAX), 1 => Just(4usize)],
    )
        .prop_map(
            |(defaults, policy, max_memory, max_streams, max_readers)| Cfg {
                defaults,
                policy,
                limits: Limits {
                    max_memory,
                    max_streams,
                    max_readers,
                },
            },
        )
}

fn len_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![4 => HEADER as u16..=80, 1 => HEADER as u16..=700]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let i = || any::<u8>();
    prop_oneof![
        2 => i().prop_map(|name| Op::Create { name }),
        3 => i().prop_map(|s| Op::OpenWriter { s }),
        12 => (i(), len_strategy(), any::<bool>()).prop_map(|(w, len, sync)| Op::Whole { w, len, sync }),
        8 => (i(), len_strategy()).prop_map(|(w, len)| Op::Append { w, len }),
        4 => i().prop_map(|w| Op::Finish { w }),
        1 => i().prop_map(|w| Op::Abandon { w }),
        1 => i().prop_map(|w| Op::DropWriter { w }),
        1 => i().prop_map(|s| Op::OpenReader { s }),
        4 => (i(), from_strategy(), prop::bool::weighted(0.2), prop::bool::weighted(0.3))
            .prop_map(|(s, from, snapshot, probe)| Op::OpenReaderAt { s, from, snapshot, probe }),
        1 => (100u16..=800).prop_map(|us| Op::Sleep { us }),
        12 => (i(), prop_oneof![1 => 1u16..=8, 3 => 1u16..=400], any::<bool>())
            .prop_map(|(r, max, wait)| Op::Read { r, max, wait }),
        1 => (i(), i()).prop_map(|(r, k)| Op::CancelRead { r, k }),
        2 => (i(), any::<bool>()).prop_map(|(r, drain)| Op::CloseReader { r, drain }),
        2 => i().prop_map(|k| Op::CancelWrite { k }),
        2 => (i(), budgets_strategy()).prop_map(|(s, budgets)| Op::SetBudgets { s, budgets }),
        2 => (i(), policy_strategy()).prop_map(|(s, policy)| Op::SetPolicy { s, policy }),
        1 => (0u8..3, 0u8..3, any::<bool>()).prop_map(|(from, to, no_replace)| Op::Rename {
            from,
            to,
            no_replace
        }),
        1 => (0u8..3).prop_map(|name| Op::Remove { name }),
    ]
}

/// Operations, with a shutdown somewhere in a third of the runs (it ends everything, so
/// it comes late).
fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    (
        prop::collection::vec(op_strategy(), 1..120),
        prop_oneof![2 => Just(None), 1 => (0.5f64..1.0).prop_map(Some)],
    )
        .prop_map(|(mut ops, shutdown)| {
            if let Some(at) = shutdown {
                let at = (ops.len() as f64 * at) as usize;
                ops.insert(at, Op::Shutdown);
            }
            ops
        })
}

// ---------------------------------------------------------------------------------------
// Self-describing pieces
// ---------------------------------------------------------------------------------------

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Byte `i` (past the header) of piece `piece` of unit `unit`, of `len` bytes: one in about
/// 25 is a newline, and so is the last of a quarter of the pieces (for `replay_align=line`).
fn body_byte(unit: u64, piece: u16, len: usize, i: usize) -> u8 {
    let x = mix(unit << 24 ^ u64::from(piece) << 48 ^ i as u64);
    let b = (x >> 56) as u8;
    if b < 10 || i + 1 == len && x & 3 == 0 {
        b'\n'
    } else {
        b
    }
}

fn make_piece(unit: u64, piece: u16, writer: u16, len: usize) -> Vec<u8> {
    assert!(len >= HEADER);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(unit as u32).to_le_bytes());
    v.extend_from_slice(&piece.to_le_bytes());
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend((HEADER..len).map(|i| body_byte(unit, piece, len, i)));
    v
}

/// A piece recovered from a reader's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    unit: u64,
    piece: u16,
    writer: u16,
    len: usize,
}

/// Splits received bytes into pieces. The last one may be cut short (`partial`) when the
/// reader was closed before it read everything; any other damage is an error.
fn parse(buf: &[u8]) -> Result<(Vec<Piece>, Option<Piece>), String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < HEADER {
            return Ok((
                out,
                Some(Piece {
                    unit: u64::MAX,
                    piece: 0,
                    writer: 0,
                    len: 0,
                }),
            ));
        }
        let unit = u64::from(u32::from_le_bytes(rest[0..4].try_into().unwrap()));
        let piece = u16::from_le_bytes(rest[4..6].try_into().unwrap());
        let writer = u16::from_le_bytes(rest[6..8].try_into().unwrap());
        let len = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        if !(HEADER..=1 << 16).contains(&len) {
            return Err(format!(
                "bytes at offset {at} are no piece's header: {:?}",
                &rest[..HEADER]
            ));
        }
        let p = Piece {
            unit,
            piece,
            writer,
            len,
        };
        let have = rest.len().min(len);
        for (i, &b) in rest[HEADER..have].iter().enumerate() {
            if b != body_byte(unit, piece, len, HEADER + i) {
                return Err(format!(
                    "piece {p:?} at offset {at} is damaged at its byte {} (torn or interleaved)",
                    HEADER + i
                ));
            }
        }
        if have < len {
            return Ok((out, Some(p)));
        }
        out.push(p);
        at += len;
    }
    Ok((out, None))
}

// ---------------------------------------------------------------------------------------
// Coverage: the model is not vacuous
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Cover {
    DropByBudget,
    Disconnect,
    Parked,
    Released,
    Shed,
    QueueShed,
    NoMemory,
    ParkedReadData,
    CancelledRead,
    CancelledWrite,
    EofAfterRemove,
    SessionEnd,
    UnitDelivered,
    Abandoned,
    Replay,
    RingTrimmed,
    RingOversize,
    RenameOver,
    Shutdown,
    StartReplay,
    LiveAfterHistory,
    BackPartial,
    BackBytesPartial,
    OffsetInsideWrite,
    OffsetAheadReached,
    TooOld,
    SnapshotReplay,
    LineInsideWrite,
    RingTimeTrimmed,
    ResolveAgrees,
    TooMany,
}

const COVER_KINDS: usize = Cover::TooMany as usize + 1;

static COVERAGE: [AtomicUsize; COVER_KINDS] = [const { AtomicUsize::new(0) }; COVER_KINDS];

static SLEPT: AtomicUsize = AtomicUsize::new(0);

fn cover(c: Cover) {
    COVERAGE[c as usize].fetch_add(1, StdOrdering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        crtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum UnitState {
    /// Pieces appended, not finished.
    Open,
    /// Abandoned, dropped with its writer, or refused at an append.
    Gone,
    /// Finished, answer not yet given (parked under `Block` when `parked` is set).
    Submitted {
        parked: Option<u64>,
    },
    /// Applied at this position of its stream's order.
    Applied(usize),
    Failed(StreamError),
}

struct Unit {
    inc: usize,
    writer: u16,
    pieces: Vec<usize>,
    state: UnitState,
    /// Parked at least once (for CancelWrite).
    ever_parked: Option<u64>,
}

impl Unit {
    fn len(&self) -> u64 {
        self.pieces.iter().map(|&l| l as u64).sum()
    }

    fn pieces(&self) -> usize {
        self.pieces.len()
    }
}

/// One stream (one incarnation of a name).
struct Inc {
    real: Arc<Stream>,
    removed: bool,
    /// Units in the stream's order.
    applied: Vec<u64>,
    /// Units in the order their finishes were called.
    submitted: Vec<u64>,
    /// Units parked now, in submission order.
    parked: VecDeque<u64>,
    /// Live writers.
    writers: usize,
    /// Position of the first write of the current writer session (`OnWriterClose::Eof`).
    session_start: usize,
    /// Every byte applied, in the stream's order; the offset of each applied write; and
    /// instants before and after the call that applied it (its arrival is between them).
    bytes: Vec<u8>,
    offs: Vec<u64>,
    times: Vec<(Instant, Instant)>,
}

impl Inc {
    fn end(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether offset `x` starts a line: the byte before it is a newline, or there is none.
    fn line_start(&self, x: u64) -> bool {
        x == 0 || self.bytes[x as usize - 1] == b'\n'
    }

    /// The first line start at or after `x` and before the end, else the end.
    fn first_line_start(&self, x: u64) -> u64 {
        (x..self.end())
            .find(|&y| self.line_start(y))
            .unwrap_or(self.end())
    }
}

/// Where a reader stopped receiving: its window of the stream's order ends at this
/// position, known exactly or within a range (a disconnect seen after a step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Open,
    At(usize),
    Between(usize, usize),
}

struct Rd {
    inc: usize,
    real: Option<Reader>,
    id: u64,
    /// Applied writes when it opened, and the offset of the first byte it is given (or
    /// waits for: ahead of the end then).
    opened_at: usize,
    from: u64,
    /// How it was opened, for messages.
    how: String,
    end: End,
    /// What Data answers brought, in the order they were answered.
    buf: Arc<StdMutex<Vec<u8>>>,
    /// Its stats when it was closed, and whether it had bytes still queued then.
    closed: Option<(ReaderStats, bool)>,
    /// Every moment of its life was under `Block`.
    only_block: bool,
}

impl Rd {
    fn live(&self) -> bool {
        self.real.is_some()
    }
}

#[derive(Clone, Debug)]
enum Answer {
    Data(usize),
    Eof,
    WouldBlock,
    Interrupted,
}

struct ReadRec {
    reader: usize,
    max: usize,
    parked: Option<u64>,
    answers: Arc<StdMutex<Vec<Answer>>>,
    /// `cancel_read` said it interrupted this read.
    cancelled: bool,
    inspected: usize,
}

impl ReadRec {
    fn outstanding(&self) -> bool {
        self.parked.is_some() && self.answers.lock().unwrap().is_empty()
    }
}

struct Wr {
    inc: usize,
    real: Option<Writer>,
    unit: Option<u64>,
}

type Log = Arc<StdMutex<Vec<(u64, Result<(), StreamError>)>>>;

struct Harness {
    ns: Option<Namespace>,
    pool: Arc<Pool>,
    limited: bool,
    max_streams: usize,
    max_readers: usize,
    names: [Option<usize>; 3],
    shut: bool,
    incs: Vec<Inc>,
    writers: Vec<Wr>,
    readers: Vec<Rd>,
    units: Vec<Unit>,
    reads: Vec<ReadRec>,
    log: Log,
    /// Most pieces of one unit so far (the pool's tolerance is one write's entries), and
    /// most pieces applied in one step (see [`OPEN_RELEASE_OVERSHOOT`]).
    max_pieces: u64,
    max_step_pieces: u64,
    /// Each reader's dropped writes after the last step.
    dropped_before: Vec<u64>,
    /// Applied writes of each stream before the current step.
    before: Vec<usize>,
    trace: Vec<String>,
    /// An instant before anything the current step applied (writes answered `Ok` arrived
    /// between it and their answer's processing), and the start of the step.
    mark: Instant,
    step_start: Instant,
    /// The pool's total when the current step began.
    used_before: u64,
    /// Bounds of the memory left charged by opens refused `TooOld` (see
    /// [`OPEN_TOO_OLD_LEAK`]).
    leaked: (u64, u64),
}

impl Harness {
    fn new(cfg: &Cfg) -> Harness {
        let ns = Namespace::with_limits(cfg.defaults, cfg.policy, cfg.limits);
        let pool = ns.pool().clone();
        let mut h = Harness {
            ns: Some(ns),
            pool,
            limited: cfg.limits.max_memory != u64::MAX,
            max_streams: cfg.limits.max_streams,
            max_readers: cfg.limits.max_readers,
            names: [None; 3],
            shut: false,
            incs: Vec::new(),
            writers: Vec::new(),
            readers: Vec::new(),
            units: Vec::new(),
            reads: Vec::new(),
            log: Arc::new(StdMutex::new(Vec::new())),
            max_pieces: 1,
            max_step_pieces: 1,
            dropped_before: Vec::new(),
            before: Vec::new(),
            trace: Vec::new(),
            mark: Instant::now(),
            step_start: Instant::now(),
            used_before: 0,
            leaked: (0, 0),
        };
        h.create(0, cfg);
        h.create(1, cfg);
        h
    }

    fn ns(&self) -> &Namespace {
        self.ns.as_ref().expect("the namespace lives until the end")
    }

    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self.trace.iter().rev().take(12).collect();
        panic!("{what}\nlast steps (newest first): {tail:#?}");
    }

    fn check(&self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.fail(what());
        }
    }

    fn create(&mut self, name: usize, cfg: &Cfg) {
        let res = self.ns().create(NAMES[name], meta());
        let named = self.names.iter().flatten().count();
        match (res, self.names[name]) {
            (Err(e), _) if self.shut => self.check(e == StreamError::Removed, || {
                format!("create after shutdown: {e:?}")
            }),
            (Ok(_), _) if self.shut => self.fail("create after shutdown succeeded".into()),
            (Ok((s, created)), Some(i)) => self
                .check(!created && Arc::ptr_eq(&s, &self.incs[i].real), || {
                    "create of an existing name must return its stream".into()
                }),
            (Err(e), Some(_)) => self.fail(format!("create of an existing name failed: {e:?}")),
            (Err(StreamError::TooManyStreams), None) => {
                self.check(named >= self.max_streams, || {
                    format!("TooManyStreams with {named} of {}", self.max_streams)
                });
                cover(Cover::TooMany);
            }
            (Err(StreamError::NoMemory), None) if self.limited => cover(Cover::NoMemory),
            (Err(e), None) => self.fail(format!("create failed: {e:?}")),
            (Ok((s, created)), None) => {
                self.check(created && named < self.max_streams, || {
                    format!("created {created} with {named} of {}", self.max_streams)
                });
                let st = s.stats();
                self.check(
                    st.budgets == cfg.defaults && st.policy == cfg.policy,
                    || format!("a new stream has the namespace's defaults: {st:?}"),
                );
                self.incs.push(Inc {
                    real: s,
                    removed: false,
                    applied: Vec::new(),
                    submitted: Vec::new(),
                    parked: VecDeque::new(),
                    writers: 0,
                    session_start: 0,
                    bytes: Vec::new(),
                    offs: Vec::new(),
                    times: Vec::new(),
                });
                self.before.push(0);
                self.names[name] = Some(self.incs.len() - 1);
            }
        }
    }

    fn pick_inc(&self, s: u8) -> Option<usize> {
        (!self.incs.is_empty()).then(|| s as usize % self.incs.len())
    }

    fn pick_writer(&self, w: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.writers.len())
            .filter(|&i| self.writers[i].real.is_some())
            .collect();
        (!live.is_empty()).then(|| live[w as usize % live.len()])
    }

    fn pick_reader(&self, r: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.readers.len())
            .filter(|&i| self.readers[i].live())
            .collect();
        (!live.is_empty()).then(|| live[r as usize % live.len()])
    }

    fn registered_readers(&self) -> usize {
        self.readers.iter().filter(|r| r.live()).count()
    }

    /// Model side of a stream's end: its readers stop receiving.
    fn model_remove(&mut self, inc: usize) {
        self.incs[inc].removed = true;
        let n = self.incs[inc].applied.len();
        for r in self.readers.iter_mut().filter(|r| r.inc == inc && r.live()) {
            if r.end == End::Open {
                r.end = End::At(n);
            }
        }
    }

    /// Takes the write answers given since the last call, in the order they were given.
    fn process_log(&mut self) {
        let answers = std::mem::take(&mut *self.log.lock().unwrap());
        for (unit, res) in answers {
            let u = &self.units[unit as usize];
            let inc = u.inc;
            let parked = match u.state {
                UnitState::Submitted { parked } => parked,
                ref other => self.fail(format!("unit {unit} answered {res:?} in state {other:?}")),
            };
            if parked.is_some() {
                let pos = self.incs[inc].parked.iter().position(|&x| x == unit);
                let Some(pos) = pos else {
                    self.fail(format!("parked unit {unit} is not parked in the model"));
                };
                if res.is_ok() {
                    self.check(pos == 0, || {
                        format!(
                            "parked unit {unit} applied before {:?} parked ahead of it",
                            self.incs[inc].parked
                        )
                    });
                    cover(Cover::Released);
                }
                self.incs[inc].parked.remove(pos);
            } else if res.is_ok() {
                self.check(self.incs[inc].parked.is_empty(), || {
                    format!(
                        "unit {unit} applied at once past parked units {:?}",
                        self.incs[inc].parked
                    )
                });
            }
            self.units[unit as usize].state = match res {
                Ok(()) => {
                    let pos = self.incs[inc].applied.len();
                    let bytes = self.unit_bytes(unit);
                    let now = Instant::now();
                    let i = &mut self.incs[inc];
                    i.applied.push(unit);
                    i.offs.push(i.bytes.len() as u64);
                    i.bytes.extend_from_slice(&bytes);
                    i.times.push((self.mark, now));
                    UnitState::Applied(pos)
                }
                Err(e) => {
                    if e == StreamError::Interrupted {
                        cover(Cover::CancelledWrite);
                    }
                    UnitState::Failed(e)
                }
            };
        }
    }

    /// The bytes of a unit, as written.
    fn unit_bytes(&self, unit: u64) -> Vec<u8> {
        let u = &self.units[unit as usize];
        (0..u.pieces.len())
            .flat_map(|k| make_piece(unit, k as u16, u.writer, u.pieces[k]))
            .collect()
    }

    /// The receiving readers of `inc` with their stats now.
    fn reader_snapshot(&self, inc: usize) -> Vec<(usize, ReaderStats)> {
        self.readers
            .iter()
            .enumerate()
            .filter(|(_, r)| r.inc == inc && r.live() && r.end == End::Open)
            .map(|(i, r)| (i, r.real.as_ref().unwrap().stats()))
            .collect()
    }

    /// After a finish of `unit` that was applied at once (or parked), in a step without
    /// shedding: each receiving reader took it iff it fit (contract: fits its budget, or
    /// its live queue was empty), else dropped it or was cut off; under `Block` it parked
    /// iff a reader had no room or a write was parked already.
    fn check_fanout(
        &self,
        unit: u64,
        before: &[(usize, ReaderStats)],
        offset: u64,
        budgets: Budgets,
        slow: SlowReader,
        parked_ahead: bool,
    ) {
        let u = &self.units[unit as usize];
        let len = u.len();
        let max_runs = (budgets.channel / CHANNEL_BYTES_PER_RUN).max(16) as usize;
        // Surely taken: its bytes and a run per piece fit, or nothing live is queued.
        let fits = |s: &ReaderStats| {
            s.live_cost == 0
                || s.live_cost + len <= budgets.channel && s.live_runs + u.pieces() <= max_runs
        };
        // Surely not taken: its bytes do not fit.
        let over = |s: &ReaderStats| s.live_cost != 0 && s.live_cost + len > budgets.channel;
        match u.state {
            UnitState::Submitted { parked: Some(_) } => {
                self.check(slow == SlowReader::Block, || {
                    format!("unit {unit} parked under {slow:?}")
                });
                self.check(parked_ahead || before.iter().any(|(_, s)| !fits(s)), || {
                    format!("unit {unit} ({len} bytes) parked though every reader had room: {before:?}, {budgets:?}")
                });
            }
            UnitState::Applied(_) => {
                self.check(!(slow == SlowReader::Block && parked_ahead), || {
                    format!("unit {unit} overtook parked writes")
                });
                for (i, b) in before {
                    let after = self.readers[*i].real.as_ref().unwrap().stats();
                    let took = after.delivered_bytes + after.queued_bytes
                        - (b.delivered_bytes + b.queued_bytes);
                    let dropped = after.dropped_writes - b.dropped_writes;
                    if b.start > offset {
                        // It waits for an offset ahead: it takes the write's bytes from
                        // there on, whatever its budget, and nothing before.
                        let want = (offset + len).saturating_sub(b.start).min(len);
                        self.check(took == want && dropped == 0, || {
                            format!("reader {i} waits for offset {}: of the write at {offset} ({len} bytes) it took {took}, not {want}, dropped {dropped}", b.start)
                        });
                        if want > 0 {
                            cover(Cover::OffsetAheadReached);
                        }
                    } else if fits(b) {
                        self.check(took == len && dropped == 0, || {
                            format!("reader {i} had room (live cost {} + {len} within {}) but took {took} of {len} bytes, dropped {dropped}", b.live_cost, budgets.channel)
                        });
                    } else if !over(b) && took == len && dropped == 0 {
                        // Its bytes fitted and it extended the queue's last run.
                    } else {
                        self.check(slow != SlowReader::Block, || {
                            format!("unit {unit} applied under Block though reader {i} had no room")
                        });
                        self.check(
                            took == 0
                                && dropped == 1
                                && after.dropped_bytes - b.dropped_bytes == len,
                            || {
                                format!("reader {i} had no room (live cost {} + {len} over {}) but took {took} bytes, dropped {dropped}", b.live_cost, budgets.channel)
                            },
                        );
                        cover(Cover::DropByBudget);
                        if slow == SlowReader::Disconnect {
                            self.check(after.disconnected, || {
                                format!(
                                    "reader {i} overflowed under Disconnect but was not cut off"
                                )
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Finishes `w`'s unit (appending `last` first when given) through `submit`/`finish`, or
    /// `Writer::write` when `sync` and the stream does not block.
    fn finish_unit(&mut self, wi: usize, last: Option<usize>, sync: bool) {
        let inc = self.writers[wi].inc;
        let removed = self.incs[inc].removed;
        let unit = match (self.writers[wi].unit, last) {
            (Some(u), _) => Some(u),
            (None, Some(_)) => {
                self.units.push(Unit {
                    inc,
                    writer: wi as u16,
                    pieces: Vec::new(),
                    state: UnitState::Open,
                    ever_parked: None,
                });
                Some(self.units.len() as u64 - 1)
            }
            (None, None) => None,
        };
        let Some(unit) = unit else {
            // Nothing open: nothing is written.
            let writes = self.incs[inc].real.stats().writes;
            let res = Arc::new(StdMutex::new(None));
            let r2 = res.clone();
            let id = self.writers[wi]
                .real
                .as_ref()
                .unwrap()
                .finish(0, Box::new(move |r| *r2.lock().unwrap() = Some(r)));
            let got = res.lock().unwrap().take();
            self.check(id.is_none(), || "an empty finish parked".into());
            self.check(
                got == Some(Ok(())) || removed && got == Some(Err(StreamError::Removed)),
                || format!("an empty finish answered {got:?}"),
            );
            self.check(self.incs[inc].real.stats().writes == writes, || {
                "an empty finish wrote".into()
            });
            return;
        };
        let data = last.map(|len| {
            let piece = self.units[unit as usize].pieces.len() as u16;
            make_piece(unit, piece, wi as u16, len)
        });
        if let Some(len) = last {
            self.units[unit as usize].pieces.push(len);
        }
        self.units[unit as usize].state = UnitState::Submitted { parked: None };
        self.incs[inc].submitted.push(unit);
        self.writers[wi].unit = None;
        self.max_pieces = self
            .max_pieces
            .max(self.units[unit as usize].pieces.len() as u64);

        let stream = self.incs[inc].real.clone();
        let st = stream.stats();
        let before = self.reader_snapshot(inc);
        let parked_ahead = !self.incs[inc].parked.is_empty();
        let shed_before = self.pool.shed_bytes();
        let writer = self.writers[wi].real.as_ref().unwrap();
        let use_sync = sync && data.is_some() && st.policy.slow_reader != SlowReader::Block;
        self.check(self.log.lock().unwrap().is_empty(), || {
            "write answers left unprocessed".into()
        });
        self.mark = Instant::now();
        if use_sync {
            let res = writer.write(data.as_deref().unwrap());
            self.log.lock().unwrap().push((unit, res));
        } else {
            let log = self.log.clone();
            let done = Box::new(move |r| log.lock().unwrap().push((unit, r)));
            let id = match &data {
                Some(d) => writer.submit(d, unit as u32, done),
                None => writer.finish(unit as u32, done),
            };
            if let Some(id) = id {
                let answered = self.log.lock().unwrap().iter().any(|(u, _)| *u == unit);
                self.check(!answered, || {
                    format!("unit {unit} parked and answered at once")
                });
                self.units[unit as usize].state = UnitState::Submitted { parked: Some(id) };
                self.units[unit as usize].ever_parked = Some(id);
                self.incs[inc].parked.push_back(unit);
                cover(Cover::Parked);
            } else {
                let answered = self.log.lock().unwrap().iter().any(|(u, _)| *u == unit);
                self.check(answered, || {
                    format!("unit {unit} neither parked nor answered")
                });
            }
        }
        self.process_log();
        if let UnitState::Failed(e) = &self.units[unit as usize].state {
            let ok = match e {
                StreamError::Removed => removed,
                StreamError::NoMemory => self.limited && data.is_some(),
                _ => false,
            };
            self.check(ok, || {
                format!("unit {unit} failed with {e:?} (removed: {removed})")
            });
            if *e == StreamError::NoMemory {
                cover(Cover::NoMemory);
            }
            return;
        }
        self.check(!removed, || {
            format!("unit {unit} was accepted by a removed stream")
        });
        if self.pool.shed_bytes() == shed_before {
            self.check_fanout(
                unit,
                &before,
                st.written_bytes,
                st.budgets,
                st.policy.slow_reader,
                parked_ahead,
            );
        }
    }

    fn append(&mut self, wi: usize, len: usize) {
        let inc = self.writers[wi].inc;
        let unit = match self.writers[wi].unit {
            Some(u) => u,
            None => {
                self.units.push(Unit {
                    inc,
                    writer: wi as u16,
                    pieces: Vec::new(),
                    state: UnitState::Open,
                    ever_parked: None,
                });
                let u = self.units.len() as u64 - 1;
                self.writers[wi].unit = Some(u);
                u
            }
        };
        let piece = self.units[unit as usize].pieces.len() as u16;
        let data = make_piece(unit, piece, wi as u16, len);
        let writer = self.writers[wi].real.as_ref().unwrap();
        match writer.append(&data, unit as u32) {
            Ok(()) => {
                self.check(!self.incs[inc].removed, || {
                    "append to a removed stream".into()
                });
                self.units[unit as usize].pieces.push(len);
                let pending = writer.pending();
                self.check(pending == self.units[unit as usize].len(), || {
                    format!("pending {pending} for unit {unit}")
                });
            }
            Err(e) => {
                let ok = match e {
                    StreamError::Removed => self.incs[inc].removed,
                    StreamError::NoMemory => self.limited,
                    _ => false,
                };
                self.check(ok, || format!("append failed with {e:?}"));
                if e == StreamError::NoMemory {
                    cover(Cover::NoMemory);
                }
                self.check(writer.pending() == 0, || {
                    "a failed append keeps its unit".into()
                });
                self.units[unit as usize].state = UnitState::Gone;
                self.writers[wi].unit = None;
            }
        }
    }

    /// Issues one read and checks how it was answered at once.
    fn read(&mut self, ri: usize, max: usize, mode: ReadMode) -> Answer {
        let answers = Arc::new(StdMutex::new(Vec::new()));
        let (a2, buf) = (answers.clone(), self.readers[ri].buf.clone());
        let deliver = Box::new(move |o: ReadOutcome| {
            let a = match o {
                ReadOutcome::Data(d) => {
                    buf.lock().unwrap().extend_from_slice(&d);
                    Answer::Data(d.len())
                }
                ReadOutcome::Eof => Answer::Eof,
                ReadOutcome::WouldBlock => Answer::WouldBlock,
                ReadOutcome::Interrupted => Answer::Interrupted,
            };
            a2.lock().unwrap().push(a);
        });
        let r = &self.readers[ri];
        let real = r.real.as_ref().unwrap();
        let queued = real.stats().queued_bytes;
        let ended = r.end != End::Open;
        let parked = real.read(max, mode, self.reads.len() as u32, deliver);
        let got = answers.lock().unwrap().clone();
        self.reads.push(ReadRec {
            reader: ri,
            max,
            parked,
            answers,
            cancelled: false,
            inspected: 0,
        });
        let answer = match (parked, got.as_slice()) {
            (Some(_), []) if mode == ReadMode::Wait => Answer::WouldBlock,
            (None, [a]) => a.clone(),
            _ => self.fail(format!(
                "read ({mode:?}) returned {parked:?} with answers {got:?}"
            )),
        };
        if parked.is_some() {
            self.check(queued == 0 && !ended, || {
                format!("a read parked with {queued} bytes queued, ended: {ended}")
            });
            return answer;
        }
        match answer {
            Answer::Data(_) => self.check(queued > 0, || "data from an empty queue".into()),
            Answer::Eof => self.check(queued == 0 && ended, || {
                format!("EOF with {queued} bytes queued, ended: {ended}")
            }),
            Answer::WouldBlock => {
                let st = self.readers[ri].real.as_ref().unwrap().stats();
                self.check(
                    mode == ReadMode::NonBlocking && !ended && queued == 0 && st.live_cost == 0,
                    || format!("WouldBlock ({mode:?}), ended: {ended}, stats {st:?}"),
                );
            }
            Answer::Interrupted => self.fail("a new read was interrupted".into()),
        }
        answer
    }

    /// Reads until nothing is queued; returns whether anything was read.
    fn drain(&mut self, ri: usize, max: usize) -> (bool, Answer) {
        let mut any = false;
        loop {
            let a = self.read(ri, max, ReadMode::NonBlocking);
            self.process_log();
            match a {
                Answer::Data(_) => any = true,
                other => return (any, other),
            }
        }
    }

    /// The start `spec` names on `inc` now (offsets against its ring and end).
    fn make_start(&self, inc: usize, spec: FromGen, snapshot: bool) -> Start {
        let st = self.incs[inc].real.stats();
        let (r, e) = (st.ring_start, st.written_bytes);
        let from = match spec {
            FromGen::Start => Origin::Start,
            FromGen::Live => Origin::Live,
            FromGen::Back(k) => Origin::Back(BACKS[k]),
            FromGen::BackBytes(n) => Origin::BackBytes(n),
            FromGen::Offset {
                anchor,
                frac,
                delta,
            } => {
                let base = match anchor {
                    0 => r,
                    1 => e,
                    _ => r + (((e - r + 1) * u64::from(frac)) >> 16),
                };
                Origin::Offset(base.saturating_add_signed(i64::from(delta)))
            }
        };
        Start { from, snapshot }
    }

    /// Where a reader opened at `start` on `inc` may begin by the contract, its ring
    /// beginning at `r` when it opened between `o_lo` and `o_hi`; `None`: it fails `TooOld`.
    /// Several offsets when the arrival of writes near `-DURATION` is not known exactly.
    fn allowed_starts(
        &self,
        inc: usize,
        start: Start,
        align: Align,
        r: u64,
        (o_lo, o_hi): (Instant, Instant),
    ) -> Option<Vec<u64>> {
        let i = &self.incs[inc];
        let (e, n) = (i.end(), i.offs.len());
        // The ring's writes are those from position q on.
        let q = i.offs.partition_point(|&o| o < r);
        let at = |k: usize| if k < n { i.offs[k] } else { e };
        let aligned = |w: u64| match align {
            Align::Line => i.first_line_start(w),
            _ => w,
        };
        Some(match start.from {
            Origin::Offset(o) if o < r => return None,
            Origin::Offset(o) => vec![o],
            Origin::Live => vec![e],
            Origin::Start => vec![aligned(r)],
            Origin::Back(d) => {
                // The replay begins at a write between the first that may have arrived
                // within `d` of the open and the first that surely did.
                let old = |k: usize| i.times[k].1 + d < o_lo;
                let young = |k: usize| i.times[k].0 + d >= o_hi;
                let lo = (q..n).find(|&k| !old(k)).unwrap_or(n);
                let hi = (q..n).find(|&k| young(k)).unwrap_or(n);
                (lo..=hi).map(|k| aligned(at(k))).collect()
            }
            Origin::BackBytes(m) => match align {
                Align::Line => {
                    // The newest whole lines totalling at most m, else the newest line.
                    let p = i.first_line_start(e.saturating_sub(m).max(r));
                    if p < e {
                        vec![p]
                    } else {
                        vec![(r..e).rev().find(|&y| i.line_start(y)).unwrap_or(e)]
                    }
                }
                _ => {
                    // The newest whole writes totalling at most m, else the newest write.
                    let w = (q..n)
                        .map(at)
                        .find(|&w| e - w <= m)
                        .or((q < n).then(|| at(n - 1)))
                        .unwrap_or(e);
                    vec![w]
                }
            },
        })
    }

    /// The cost of the queue entries an open reserves when the ring begins at `from`: one
    /// per piece of the ring's writes and of the parked writes.
    fn replay_entries(&self, inc: usize, from: u64) -> u64 {
        let i = &self.incs[inc];
        let pieces = |u: u64| self.units[u as usize].pieces.len();
        let ring: usize = (0..i.offs.len())
            .filter(|&k| i.offs[k] >= from)
            .map(|k| pieces(i.applied[k]))
            .sum();
        let parked: usize = i.parked.iter().map(|&u| pieces(u)).sum();
        (ring + parked) as u64 * ENTRY_COST
    }

    /// Opens a reader at the stream's default start, or at `at` (with `snapshot`, and
    /// asking `Stream::resolve` first when `probe`), and checks where it begins.
    fn open_reader(&mut self, inc: usize, at: Option<(FromGen, bool, bool)>) {
        self.process_log();
        let stream = self.incs[inc].real.clone();
        let registered = self.registered_readers();
        let start = match at {
            Some((spec, snapshot, _)) => self.make_start(inc, spec, snapshot),
            None => stream.stats().policy.start,
        };
        let probed = at
            .filter(|a| a.2)
            .map(|_| (stream.resolve(start), stream.stats().ring_start));
        let r_before = stream.stats().ring_start;
        // Nothing is shed by the open when the reader and every entry it may reserve fit.
        let most = READER_COST + self.replay_entries(inc, r_before);
        let no_shed = self.pool.used().saturating_add(most) <= self.pool.budget();
        let label = format!("r{}", self.readers.len());
        let o_lo = Instant::now();
        let res = match at {
            Some(_) => stream.open_reader_at(label, start),
            None => stream.open_reader(label),
        };
        let o_hi = Instant::now();
        self.process_log();
        let ss = stream.stats();
        let r = ss.ring_start;
        let how = format!("{start} ({}, ring from {r})", ss.policy.align);
        // `ring_buffer_time`: the open trimmed the writes older than it, and only those
        // (unless it shed history to make room: shedding may trim it without freeing
        // anything, which no statistic shows).
        let trimmed = matches!(res, Ok(_) | Err(StreamError::TooOld)) && no_shed;
        if let (Some(t), true) = (ss.budgets.ring_time, trimmed) {
            let i = &self.incs[inc];
            for (k, &o) in i.offs.iter().enumerate() {
                let (lo, hi) = i.times[k];
                if (r_before..r).contains(&o) {
                    self.check(lo + t < o_hi, || {
                        format!("opening {how} trimmed the write at {o}, younger than {t:?}")
                    });
                } else if o >= r {
                    self.check(hi + t >= o_lo, || {
                        format!("opening {how} kept the write at {o}, older than {t:?}")
                    });
                }
            }
            if r > r_before {
                cover(Cover::RingTimeTrimmed);
            }
        }
        let allowed = self.allowed_starts(inc, start, ss.policy.align, r, (o_lo, o_hi));
        let real = match res {
            Err(StreamError::TooManyReaders) => {
                self.check(registered >= self.max_readers, || {
                    format!("TooManyReaders with {registered} of {}", self.max_readers)
                });
                cover(Cover::TooMany);
                return;
            }
            Err(StreamError::NoMemory) if self.limited => {
                cover(Cover::NoMemory);
                return;
            }
            Err(StreamError::TooOld) => {
                self.check(allowed.is_none(), || {
                    format!("opening {how} failed TooOld; it may start at {allowed:?}")
                });
                if let Some((res, pr)) = probed.filter(|p| p.1 == r) {
                    self.check(res == Err(StreamError::TooOld), || {
                        format!(
                            "opening {how} failed TooOld; resolve said {res:?} (ring from {pr})"
                        )
                    });
                }
                if OPEN_TOO_OLD_LEAK {
                    // The ring's entries when it reserved (between the ring before the open
                    // and after: exactly after, unless something was shed) and the parked
                    // writes' pieces, unless the reservation itself failed.
                    let lo = if no_shed {
                        self.replay_entries(inc, r)
                    } else {
                        0
                    };
                    self.leaked.0 += lo;
                    self.leaked.1 += self.replay_entries(inc, r_before);
                }
                cover(Cover::TooOld);
                return;
            }
            Err(e) => self.fail(format!("open_reader failed: {e:?}")),
            Ok(r) => r,
        };
        self.check(registered < self.max_readers, || {
            "max_readers passed".into()
        });
        let Some(allowed) = allowed else {
            self.fail(format!(
                "opening {how} succeeded: the offset is older than the ring"
            ))
        };
        let rs = real.stats();
        let i = &self.incs[inc];
        let (e, n) = (i.end(), i.offs.len());
        self.check(ss.written_bytes == e, || {
            format!("the stream's end is {}, the model's {e}", ss.written_bytes)
        });
        self.check(r == e || i.offs.binary_search(&r).is_ok(), || {
            format!("the ring begins at {r}, inside a write")
        });
        self.check(
            rs.live_cost == 0 && rs.dropped_writes == 0 && !rs.disconnected,
            || format!("a new reader's stats: {rs:?}"),
        );
        let s = rs.start;
        // With no room for its replay's queue entries a reader starts at the end ("may get
        // less history, or none"), but never before an offset it asked for.
        let ahead = matches!(start.from, Origin::Offset(o) if o > e);
        let fallback =
            self.limited && s == e && !allowed.contains(&s) && (!ahead || OPEN_AHEAD_STARTS_AT_END);
        self.check(allowed.contains(&s) || fallback, || {
            format!("a reader opened at {how} starts at {s}; the contract says one of {allowed:?} (end {e})")
        });
        self.check(rs.queued_bytes == e.saturating_sub(s), || {
            format!(
                "a reader opened at {how} starting at {s} has {} bytes queued, not {}",
                rs.queued_bytes,
                e.saturating_sub(s)
            )
        });
        if s < e {
            self.check(s >= r, || {
                format!("{how}: replay from {s}, before the ring")
            });
            if i.session_start < n {
                self.check(s >= i.offs[i.session_start], || {
                    "replay reaches before the writer session".into()
                });
            }
            let exact = matches!(start.from, Origin::Offset(_));
            if ss.policy.align == Align::Line && !exact {
                self.check(i.line_start(s), || {
                    format!("{how}: a line-aligned replay from {s}, not at a line start")
                });
                if i.offs.binary_search(&s).is_err() {
                    cover(Cover::LineInsideWrite);
                }
            }
            cover(Cover::Replay);
            match start.from {
                Origin::Start => cover(Cover::StartReplay),
                Origin::Back(_) if s > r => cover(Cover::BackPartial),
                Origin::BackBytes(_) if s > r => cover(Cover::BackBytesPartial),
                Origin::Offset(_) if i.offs.binary_search(&s).is_err() => {
                    cover(Cover::OffsetInsideWrite)
                }
                _ => {}
            }
            if start.snapshot {
                cover(Cover::SnapshotReplay);
            }
        }
        if matches!(start.from, Origin::Live) && r < e {
            cover(Cover::LiveAfterHistory);
        }
        if let Some((res, pr)) = probed.filter(|p| p.1 == r)
            && !matches!(start.from, Origin::Back(_))
            && !fallback
        {
            self.check(res == Ok((s, e)), || {
                    format!("{how}: the reader starts at {s} (end {e}); resolve said {res:?} (ring from {pr})")
                });
            cover(Cover::ResolveAgrees);
        }
        if i.removed {
            self.check(rs.queued_bytes == 0, || "a removed stream replays".into());
        }
        let end = if i.removed || start.snapshot {
            End::At(n)
        } else {
            End::Open
        };
        self.readers.push(Rd {
            inc,
            id: real.id(),
            real: Some(real),
            opened_at: n,
            from: s,
            how,
            end,
            buf: Arc::new(StdMutex::new(Vec::new())),
            closed: None,
            only_block: ss.policy.slow_reader == SlowReader::Block,
        });
    }

    /// How many of the newest applied writes of `inc` make exactly `bytes`.
    fn suffix(&self, inc: usize, bytes: u64) -> Option<usize> {
        let mut sum = 0;
        for (k, &u) in self.incs[inc].applied.iter().rev().enumerate() {
            if sum == bytes {
                return Some(k);
            }
            sum += self.units[u as usize].len();
            if sum > bytes {
                return None;
            }
        }
        (sum == bytes).then_some(self.incs[inc].applied.len())
    }

    fn close_reader(&mut self, ri: usize, drain: bool) {
        if drain {
            self.drain(ri, 97);
        }
        self.observe_disconnect(ri);
        let stats = self.readers[ri].real.as_ref().unwrap().stats();
        let inc = self.readers[ri].inc;
        let n = self.incs[inc].applied.len();
        let r = &mut self.readers[ri];
        r.closed = Some((stats.clone(), stats.queued_bytes > 0));
        if r.end == End::Open {
            r.end = End::At(n);
        }
        r.real = None;
        self.process_log();
    }

    fn observe_disconnect(&mut self, ri: usize) {
        let r = &self.readers[ri];
        if !r.live() {
            return;
        }
        let st = r.real.as_ref().unwrap().stats();
        if st.disconnected && r.end == End::Open {
            let lo = self.before[r.inc];
            let hi = self.incs[r.inc].applied.len();
            self.readers[ri].end = End::Between(lo, hi);
            cover(Cover::Disconnect);
        } else if st.disconnected {
            self.check(matches!(r.end, End::Between(..)), || {
                format!("reader {ri} disconnected after it ended ({:?})", r.end)
            });
        }
    }

    fn drop_writer(&mut self, wi: usize) {
        if self.units.iter().any(|u| {
            u.writer as usize == wi && matches!(u.state, UnitState::Submitted { parked: Some(_) })
        }) {
            return; // the kernel never releases a file with a write in flight
        }
        if let Some(u) = self.writers[wi].unit.take() {
            self.units[u as usize].state = UnitState::Gone;
            cover(Cover::Abandoned);
        }
        let inc = self.writers[wi].inc;
        self.writers[wi].real = None;
        self.incs[inc].writers -= 1;
        self.process_log();
        let i = &self.incs[inc];
        let st = i.real.stats();
        if i.writers == 0 && st.policy.on_writer_close == OnWriterClose::Eof && !i.removed {
            // The session is over: its readers stop receiving, the ring is emptied.
            let n = i.applied.len();
            for r in self.readers.iter_mut().filter(|r| r.inc == inc && r.live()) {
                if r.end == End::Open {
                    r.end = End::At(n);
                }
            }
            self.incs[inc].session_start = n;
            self.check(st.ring_bytes == 0, || {
                "the ring outlived its session".into()
            });
            cover(Cover::SessionEnd);
        }
    }

    fn apply(&mut self, op: &Op, cfg: &Cfg) {
        match *op {
            Op::Create { name } => self.create(name as usize % 3, cfg),
            Op::OpenWriter { s } => {
                let Some(inc) = self.pick_inc(s) else { return };
                if self.incs[inc].writers >= WRITERS_PER_STREAM {
                    return;
                }
                let w = self.incs[inc].real.open_writer();
                self.incs[inc].writers += 1;
                self.writers.push(Wr {
                    inc,
                    real: Some(w),
                    unit: None,
                });
            }
            Op::Whole { w, len, sync } => {
                let Some(wi) = self.pick_writer(w) else {
                    return;
                };
                self.finish_unit(wi, Some(len as usize), sync);
            }
            Op::Append { w, len } => {
                let Some(wi) = self.pick_writer(w) else {
                    return;
                };
                self.append(wi, len as usize);
            }
            Op::Finish { w } => {
                let Some(wi) = self.pick_writer(w) else {
                    return;
                };
                self.finish_unit(wi, None, false);
            }
            Op::Abandon { w } => {
                let Some(wi) = self.pick_writer(w) else {
                    return;
                };
                let want = self.writers[wi]
                    .unit
                    .map_or(0, |u| self.units[u as usize].len());
                let got = self.writers[wi].real.as_ref().unwrap().abandon();
                self.check(got == want, || {
                    format!("abandon returned {got}, not {want}")
                });
                if let Some(u) = self.writers[wi].unit.take() {
                    self.units[u as usize].state = UnitState::Gone;
                    cover(Cover::Abandoned);
                }
            }
            Op::DropWriter { w } => {
                let Some(wi) = self.pick_writer(w) else {
                    return;
                };
                self.drop_writer(wi);
            }
            Op::OpenReader { s } => {
                let Some(inc) = self.pick_inc(s) else { return };
                self.open_reader(inc, None);
            }
            Op::OpenReaderAt {
                s,
                from,
                snapshot,
                probe,
            } => {
                let Some(inc) = self.pick_inc(s) else { return };
                self.open_reader(inc, Some((from, snapshot, probe)));
            }
            Op::Sleep { us } => {
                let t = Instant::now();
                std::thread::sleep(Duration::from_micros(u64::from(us)));
                SLEPT.fetch_add(t.elapsed().as_micros() as usize, StdOrdering::Relaxed);
            }
            Op::Read { r, max, wait } => {
                let Some(ri) = self.pick_reader(r) else {
                    return;
                };
                let mode = if wait {
                    ReadMode::Wait
                } else {
                    ReadMode::NonBlocking
                };
                self.read(ri, max as usize, mode);
                self.process_log();
            }
            Op::CancelRead { r, k } => {
                let waited: Vec<usize> = (0..self.reads.len())
                    .filter(|&i| {
                        self.reads[i].parked.is_some() && self.readers[self.reads[i].reader].live()
                    })
                    .collect();
                if waited.is_empty() {
                    return;
                }
                let rec = waited[(r as usize * 7 + k as usize) % waited.len()];
                let outstanding = self.reads[rec].outstanding();
                let rd = &self.readers[self.reads[rec].reader];
                let stream = self.incs[rd.inc].real.clone();
                let cancelled = stream.cancel_read(rd.id, self.reads[rec].parked.unwrap());
                self.check(cancelled == outstanding, || {
                    format!("cancel_read said {cancelled} of a read outstanding: {outstanding}")
                });
                self.reads[rec].cancelled = cancelled;
                if cancelled {
                    cover(Cover::CancelledRead);
                }
            }
            Op::CloseReader { r, drain } => {
                let Some(ri) = self.pick_reader(r) else {
                    return;
                };
                self.close_reader(ri, drain);
            }
            Op::CancelWrite { k } => {
                let ever: Vec<u64> = (0..self.units.len() as u64)
                    .filter(|&u| self.units[u as usize].ever_parked.is_some())
                    .collect();
                if ever.is_empty() {
                    return;
                }
                let unit = ever[k as usize % ever.len()];
                let u = &self.units[unit as usize];
                let outstanding = matches!(u.state, UnitState::Submitted { .. });
                let stream = self.incs[u.inc].real.clone();
                let cancelled = stream.cancel_write(u.ever_parked.unwrap());
                self.check(cancelled == outstanding, || {
                    format!("cancel_write said {cancelled} of a write outstanding: {outstanding}")
                });
                self.process_log();
                if cancelled {
                    let state = &self.units[unit as usize].state;
                    self.check(
                        *state == UnitState::Failed(StreamError::Interrupted),
                        || format!("a cancelled write ended {state:?}"),
                    );
                }
            }
            Op::SetBudgets { s, budgets } => {
                let Some(inc) = self.pick_inc(s) else { return };
                self.incs[inc].real.set_budgets(budgets);
                self.process_log();
                let got = self.incs[inc].real.stats().budgets;
                self.check(got == budgets, || format!("budgets {got:?}"));
            }
            Op::SetPolicy { s, policy } => {
                let Some(inc) = self.pick_inc(s) else { return };
                if policy.slow_reader != SlowReader::Block {
                    for r in self.readers.iter_mut().filter(|r| r.inc == inc) {
                        r.only_block = false;
                    }
                }
                self.incs[inc].real.set_policy(policy);
                self.process_log();
                let got = self.incs[inc].real.stats().policy;
                self.check(got == policy, || format!("policy {got:?}"));
            }
            Op::Rename {
                from,
                to,
                no_replace,
            } => {
                let (from, to) = (from as usize % 3, to as usize % 3);
                let res = self.ns().rename(NAMES[from], NAMES[to], no_replace);
                let want = match (self.names[from], self.names[to]) {
                    (None, _) => Err(StreamError::NotFound),
                    _ if from == to => Ok(()),
                    (Some(_), Some(_)) if no_replace => Err(StreamError::Exists),
                    _ => Ok(()),
                };
                self.check(res == want, || {
                    format!("rename answered {res:?}, not {want:?}")
                });
                if res.is_ok() && from != to {
                    if let Some(old) = self.names[to].take() {
                        self.model_remove(old);
                        cover(Cover::RenameOver);
                    }
                    self.names[to] = self.names[from].take();
                }
                self.process_log();
            }
            Op::Remove { name } => {
                let name = name as usize % 3;
                let res = self.ns().remove(NAMES[name]);
                match self.names[name].take() {
                    Some(inc) => {
                        self.check(res.is_ok(), || format!("remove answered {res:?}"));
                        self.model_remove(inc);
                    }
                    None => self.check(res == Err(StreamError::NotFound), || {
                        format!("remove of a missing name answered {res:?}")
                    }),
                }
                self.process_log();
            }
            Op::Shutdown => {
                self.ns().shutdown();
                self.shut = true;
                for name in 0..3 {
                    if let Some(inc) = self.names[name].take() {
                        self.model_remove(inc);
                    }
                }
                self.process_log();
                self.check(self.ns().is_empty(), || "streams outlived shutdown".into());
                cover(Cover::Shutdown);
            }
        }
    }

    /// The checks that hold after every step.
    fn check_step(&mut self, shed_before: u64) {
        self.process_log();
        for ri in 0..self.readers.len() {
            self.observe_disconnect(ri);
        }
        // Answers of reads.
        for i in 0..self.reads.len() {
            let answers = self.reads[i].answers.lock().unwrap().clone();
            self.check(answers.len() <= 1, || {
                format!("read {i} answered {answers:?}")
            });
            if self.reads[i].inspected == answers.len() {
                continue;
            }
            self.reads[i].inspected = answers.len();
            let rec = &self.reads[i];
            let r = &self.readers[rec.reader];
            match answers[0] {
                Answer::Data(n) => {
                    self.check(n > 0 && n <= rec.max, || {
                        format!("read of {} got {n}", rec.max)
                    });
                    if rec.parked.is_some() {
                        cover(Cover::ParkedReadData);
                    }
                }
                Answer::Eof => {
                    self.check(r.end != End::Open || !r.live(), || {
                        format!("reader {} got EOF while it receives", rec.reader)
                    });
                    if self.incs[r.inc].removed {
                        cover(Cover::EofAfterRemove);
                    }
                }
                Answer::Interrupted => self.check(rec.cancelled, || {
                    format!("read {i} interrupted without cancel_read")
                }),
                Answer::WouldBlock => self.check(rec.parked.is_none(), || {
                    "a parked read answered WouldBlock".into()
                }),
            }
        }
        // Readers.
        let mut outstanding_reads = 0;
        for ri in 0..self.readers.len() {
            let r = &self.readers[ri];
            let mine = self
                .reads
                .iter()
                .filter(|p| p.reader == ri && p.outstanding())
                .count();
            outstanding_reads += mine;
            let Some(real) = &r.real else {
                self.check(mine == 0, || {
                    format!("closed reader {ri} left reads parked")
                });
                continue;
            };
            let st = real.stats();
            self.check(st.parked_reads == mine, || {
                format!(
                    "reader {ri}: {} parked reads, the model has {mine}",
                    st.parked_reads
                )
            });
            if mine > 0 {
                self.check(st.queued_bytes == 0 && r.end == End::Open, || {
                    format!(
                        "reader {ri} has reads parked with {} bytes queued, {:?}",
                        st.queued_bytes, r.end
                    )
                });
            }
            if r.only_block {
                self.check(st.dropped_writes == 0, || {
                    format!("reader {ri} of a Block stream lost writes: {st:?}")
                });
            }
        }
        // Streams.
        let mut parked_writes = 0;
        for inc in 0..self.incs.len() {
            let i = &self.incs[inc];
            let st = i.real.stats();
            parked_writes += i.parked.len();
            let applied_bytes: u64 = i
                .applied
                .iter()
                .map(|&u| self.units[u as usize].len())
                .sum();
            self.check(
                st.writes == i.applied.len() as u64 && st.written_bytes == applied_bytes,
                || format!("stream {inc}: {} writes, {} bytes; the model applied {} writes, {applied_bytes} bytes", st.writes, st.written_bytes, i.applied.len()),
            );
            self.check(st.removed == i.removed && st.writers == i.writers, || {
                format!(
                    "stream {inc}: removed {} writers {}, model {} {}",
                    st.removed, st.writers, i.removed, i.writers
                )
            });
            self.check(st.blocked_writes == i.parked.len(), || {
                format!(
                    "stream {inc}: {} blocked writes, model {:?}",
                    st.blocked_writes, i.parked
                )
            });
            let receivers = self
                .readers
                .iter()
                .filter(|r| r.inc == inc && r.live() && !matches!(r.end, End::Between(..)))
                .count();
            self.check(st.readers == receivers, || {
                format!("stream {inc}: {} readers, model {receivers}", st.readers)
            });
            let (mut dw, mut db) = (0, 0);
            for r in self.readers.iter().filter(|r| r.inc == inc) {
                let s = match (&r.real, &r.closed) {
                    (Some(real), _) => real.stats(),
                    (None, Some((s, _))) => s.clone(),
                    (None, None) => unreachable!(),
                };
                dw += s.dropped_writes;
                db += s.dropped_bytes;
            }
            self.check(st.dropped_writes == dw && st.dropped_bytes == db, || {
                format!(
                    "stream {inc}: dropped {} writes {} bytes; its readers {dw} {db}",
                    st.dropped_writes, st.dropped_bytes
                )
            });
            self.check_ring(inc, &st, shed_before);
            // A parked write waits only while some reader has no room, or while the pool is
            // past its limit (releasing it would charge its queue entries past it).
            let over = self.pool.used() > self.pool.budget();
            if let Some(&front) = i.parked.front().filter(|_| !over) {
                self.check(st.policy.slow_reader == SlowReader::Block, || {
                    format!("stream {inc}: writes parked under {:?}", st.policy)
                });
                let (cost, pieces) = {
                    let u = &self.units[front as usize];
                    (u.len(), u.pieces())
                };
                let max_runs = (st.budgets.channel / CHANNEL_BYTES_PER_RUN).max(16) as usize;
                let full = self
                    .readers
                    .iter()
                    .filter(|r| r.inc == inc && r.live() && r.end == End::Open)
                    .map(|r| r.real.as_ref().unwrap().stats())
                    .any(|s| {
                        s.live_cost != 0
                            && (s.live_cost + cost > st.budgets.channel
                                || s.live_runs + pieces > max_runs)
                    });
                self.check(full, || {
                    format!("stream {inc}: unit {front} (cost {cost}) stays parked though every reader has room")
                });
            }
        }
        let parked_total = self.pool.parked_total();
        self.check(parked_total == outstanding_reads + parked_writes, || {
            format!("parked_total {parked_total}, model {outstanding_reads} reads + {parked_writes} writes")
        });
        // Memory.
        let step_pieces: u64 = self
            .incs
            .iter()
            .zip(&self.before)
            .flat_map(|(i, &b)| &i.applied[b..])
            .map(|&u| self.units[u as usize].pieces.len() as u64)
            .sum();
        self.max_step_pieces = self.max_step_pieces.max(step_pieces);
        let pieces = if OPEN_RELEASE_OVERSHOOT {
            self.max_step_pieces.max(self.max_pieces)
        } else {
            self.max_pieces
        };
        let used = self.pool.used();
        let parked_pieces: u64 = if OPEN_PARKED_OVERCHARGE {
            self.incs
                .iter()
                .flat_map(|i| &i.parked)
                .map(|&u| self.units[u as usize].pieces.len() as u64)
                .sum()
        } else {
            0
        };
        // Queue entries of every reader, and the write's ring entries.
        let slack = (ENTRY_COST * self.pool.readers() as u64 + RING_ENTRY_COST) * pieces
            + ENTRY_COST * self.pool.readers() as u64 * parked_pieces;
        // A step never adds more than its write's entries past the budget: an excess left
        // by earlier unchecked charges is shed back by the next reserving write (a unit's
        // finish reserves nothing: its pieces did when they were appended).
        let base = self.pool.budget().max(self.used_before);
        self.check(used <= base.saturating_add(slack), || {
            format!(
                "pool uses {used}, over max(its budget {}, {} before the step) by more than one write's entries ({slack})",
                self.pool.budget(),
                self.used_before
            )
        });
        // Shedding takes history before any reader's queue: a step that applied nothing
        // but dropped queued writes found every ring empty.
        self.dropped_before.resize(self.readers.len(), 0);
        let mut shed_queues = false;
        for (ri, r) in self.readers.iter().enumerate() {
            let dropped = match (&r.real, &r.closed) {
                (Some(real), _) => real.stats().dropped_writes,
                (None, Some((s, _))) => s.dropped_writes,
                (None, None) => unreachable!(),
            };
            shed_queues |= dropped > self.dropped_before[ri];
            self.dropped_before[ri] = dropped;
        }
        if shed_queues && step_pieces == 0 {
            cover(Cover::QueueShed);
            for (inc, i) in self.incs.iter().enumerate() {
                let ring = i.real.stats().ring_bytes;
                self.check(ring == 0, || {
                    format!(
                        "a reader's queue was shed while stream {inc} kept {ring} bytes of history"
                    )
                });
            }
        }
        for (b, i) in self.before.iter_mut().zip(&self.incs) {
            *b = i.applied.len();
        }
    }

    /// The ring holds a suffix of whole writes within its budget, or a single write.
    fn check_ring(&self, inc: usize, st: &StreamStats, shed_before: u64) {
        let i = &self.incs[inc];
        let Some(k) = self.suffix(inc, st.ring_bytes) else {
            self.fail(format!(
                "stream {inc}: the ring's {} bytes are no suffix of whole writes",
                st.ring_bytes
            ));
        };
        self.check(k <= i.applied.len() - i.session_start, || {
            format!("stream {inc}: the ring holds writes of an ended session")
        });
        let cost: u64 = i.applied[i.applied.len() - k..]
            .iter()
            .map(|&u| self.units[u as usize].len())
            .sum();
        self.check(cost <= st.budgets.ring || k == 1, || {
            format!(
                "stream {inc}: the ring holds {cost} bytes, over its budget {} with {k} writes",
                st.budgets.ring
            )
        });
        let max_writes = (st.budgets.ring / RING_BYTES_PER_WRITE).max(1) as usize;
        self.check(k <= max_writes, || {
            format!(
                "stream {inc}: the ring holds {k} writes, over one per {RING_BYTES_PER_WRITE} bytes of its budget {}",
                st.budgets.ring
            )
        });
        if i.removed {
            self.check(k == 0, || {
                format!("stream {inc}: a removed stream keeps a ring")
            });
        }
        if k == 1 && cost > st.budgets.ring {
            cover(Cover::RingOversize);
        }
        if k > 0 && k < i.applied.len() - i.session_start {
            cover(Cover::RingTrimmed);
        }
        // The newest write is kept when this step applied one, nothing was shed and replay
        // is on.
        let applied_now = i.applied.len() > self.before[inc];
        // (unless `ring_buffer_time` may have passed since the write arrived)
        let young = st
            .budgets
            .ring_time
            .is_none_or(|t| self.step_start.elapsed() < t);
        if applied_now
            && young
            && st.budgets.ring > 0
            && !i.removed
            && self.pool.shed_bytes() == shed_before
        {
            self.check(k >= 1, || {
                format!("stream {inc}: the newest write is not in the ring")
            });
        }
    }

    /// Reads everything, shuts down, reads to EOF, then checks every reader's bytes and
    /// counters and that dropping everything frees all memory.
    fn finish_run(mut self) {
        loop {
            let mut any = false;
            for ri in 0..self.readers.len() {
                if self.readers[ri].live() {
                    any |= self.drain(ri, 4096).0;
                }
            }
            if !any {
                break;
            }
        }
        self.trace.push("end: drained".into());
        let shed = self.pool.shed_bytes();
        self.check_step(shed);
        self.ns().shutdown();
        for name in 0..3 {
            if let Some(inc) = self.names[name].take() {
                self.model_remove(inc);
            }
        }
        self.shut = true;
        self.process_log();
        for ri in 0..self.readers.len() {
            if self.readers[ri].live() {
                let (_, end) = self.drain(ri, 4096);
                self.check(matches!(end, Answer::Eof), || {
                    format!("reader {ri} of a removed stream ended its queue with {end:?}")
                });
            }
        }
        self.trace.push("end: shut down and read to EOF".into());
        self.check_step(shed);
        for ri in 0..self.readers.len() {
            if self.readers[ri].live() {
                self.close_reader(ri, false);
            }
        }
        for ri in 0..self.readers.len() {
            self.check_reader(ri);
        }
        for (n, r) in self.reads.iter().enumerate() {
            let a = r.answers.lock().unwrap().len();
            self.check(a == 1, || format!("read {n} was answered {a} times"));
        }
        for (inc, i) in self.incs.iter().enumerate() {
            let ok: Vec<u64> = i
                .submitted
                .iter()
                .copied()
                .filter(|&u| matches!(self.units[u as usize].state, UnitState::Applied(_)))
                .collect();
            self.check(ok == i.applied, || {
                format!(
                    "stream {inc}: applied {:?}, submitted and accepted {ok:?}",
                    i.applied
                )
            });
            for &u in &i.submitted {
                let s = &self.units[u as usize].state;
                self.check(!matches!(s, UnitState::Submitted { .. }), || {
                    format!("unit {u} was never answered")
                });
            }
        }
        if self.pool.shed_bytes() > 0 {
            cover(Cover::Shed);
        }
        let pool = self.pool.clone();
        let Harness {
            ns,
            incs,
            writers,
            readers,
            leaked,
            ..
        } = self;
        drop(writers);
        drop(readers);
        drop(incs);
        drop(ns);
        let (lo, hi) = leaked;
        let used = pool.used();
        assert!(
            (lo..=hi).contains(&used),
            "memory left charged after everything was dropped: {used} (opens refused TooOld leaked {lo} to {hi})"
        );
        assert_eq!(pool.readers(), 0);
        assert_eq!(pool.parked_total(), 0);
    }

    /// A reader's bytes against the stream's order and its counters.
    fn check_reader(&self, ri: usize) {
        let r = &self.readers[ri];
        let (stats, undrained) = r.closed.clone().expect("every reader is closed by now");
        let buf = r.buf.lock().unwrap().clone();
        self.check(stats.delivered_bytes == buf.len() as u64, || {
            format!(
                "reader {ri}: {} bytes delivered, {} received",
                stats.delivered_bytes,
                buf.len()
            )
        });
        // Where it began: inside a write (an exact offset, a line start), the rest of that
        // write comes first, byte for byte, then whole writes.
        let i = &self.incs[r.inc];
        let s = r.from;
        let p = i.offs.partition_point(|&o| o < s);
        let head = (p > 0 && i.offs[p - 1] + self.units[i.applied[p - 1] as usize].len() > s)
            .then(|| p - 1);
        let start = p;
        let head_bytes: &[u8] = match head {
            Some(h) => {
                &i.bytes[s as usize..i.offs.get(h + 1).map_or(i.bytes.len(), |&o| o as usize)]
            }
            None => &[],
        };
        let have = buf.len().min(head_bytes.len());
        self.check(buf[..have] == head_bytes[..have], || {
            format!(
                "reader {ri} ({}) starts at {s}, but its first {have} bytes are not the stream's from there",
                r.how
            )
        });
        let got_head = head.is_some() && have > 0;
        self.check(have == head_bytes.len() || buf.len() == have && (undrained || have == 0), || {
            format!("reader {ri} ({}) received {have} of the {} bytes of the write it starts in, then others", r.how, head_bytes.len())
        });
        let rest = &buf[have..];
        let (pieces, partial) = parse(rest).unwrap_or_else(|e| {
            self.fail(format!(
                "reader {ri} ({}, after {have} bytes of its first write): {e}",
                r.how
            ))
        });
        self.check(partial.is_none() || undrained, || {
            format!("reader {ri} received a write cut short: {partial:?}")
        });
        // Group the pieces into units: each must be all of its unit, in piece order.
        let mut got: Vec<usize> = Vec::new();
        let mut open: Option<(u64, u16)> = None;
        let all = pieces.iter().chain(partial.iter().filter(|p| p.len > 0));
        let n_whole = pieces.len();
        for (n, p) in all.enumerate() {
            let u = self
                .units
                .get(p.unit as usize)
                .unwrap_or_else(|| self.fail(format!("reader {ri}: piece of unknown unit {p:?}")));
            self.check(
                p.writer == u.writer
                    && (p.piece as usize) < u.pieces.len()
                    && (u.pieces[p.piece as usize] == p.len),
                || format!("reader {ri}: piece {p:?} is not one that was written"),
            );
            let UnitState::Applied(pos) = u.state else {
                self.fail(format!(
                    "reader {ri} received unit {} which was {:?}",
                    p.unit, u.state
                ));
            };
            self.check(u.inc == r.inc, || {
                format!("reader {ri} received unit {} of another stream", p.unit)
            });
            if p.piece == 0 {
                if let Some((unit, last)) = open {
                    self.check(
                        last as usize + 1 == self.units[unit as usize].pieces.len(),
                        || format!("reader {ri}: unit {unit} torn after its piece {last}"),
                    );
                }
                open = Some((p.unit, 0));
                got.push(pos);
            } else {
                self.check(open == Some((p.unit, p.piece - 1)), || {
                    format!("reader {ri}: piece {p:?} follows {open:?}")
                });
                open = Some((p.unit, p.piece));
            }
            if u.pieces.len() > 1 && p.piece as usize + 1 == u.pieces.len() && n < n_whole {
                cover(Cover::UnitDelivered);
            }
        }
        let complete = match open {
            Some((unit, last)) => last as usize + 1 == self.units[unit as usize].pieces.len(),
            None => true,
        };
        let complete = complete && partial.is_none();
        self.check(complete || undrained, || {
            format!("reader {ri}: its last unit is torn")
        });
        // One order, no duplicates.
        self.check(got.windows(2).all(|w| w[0] < w[1]), || {
            format!("reader {ri} received positions {got:?}: out of order or twice")
        });
        // Its window: the replay, then every write applied until it stopped receiving.
        let ends = match r.end {
            End::Open => vec![i.applied.len()],
            End::At(e) => vec![e],
            End::Between(lo, hi) => (lo..=hi).collect(),
        };
        let len_at = |p: usize| self.units[i.applied[p] as usize].len();
        let got_set: BTreeSet<usize> = got.iter().copied().collect();
        let mut why = Vec::new();
        for &e in &ends {
            if let Some(h) = head.filter(|&h| got_head && h >= e) {
                why.push(format!("end {e}: it received the write at position {h}"));
                continue;
            }
            if head.is_some_and(|h| h < e) && !got_head && !undrained {
                why.push(format!("end {e}: it missed the rest of its first write"));
                continue;
            }
            if let Some(&bad) = got.iter().find(|&&p| p < start || p >= e) {
                why.push(format!("end {e}: position {bad} is outside [{start}, {e})"));
                continue;
            }
            let missing: Vec<usize> = (start..e).filter(|p| !got_set.contains(p)).collect();
            let (mw, mb) = (
                missing.len() as u64,
                missing.iter().map(|&p| len_at(p)).sum::<u64>(),
            );
            let ok = if undrained {
                // Writes after the last one received may still have been queued.
                let last = got.last().copied().unwrap_or(start);
                let before: Vec<&usize> = missing.iter().filter(|&&p| p < last).collect();
                let bw = before.len() as u64;
                let bb: u64 = before.iter().map(|&&p| len_at(p)).sum();
                bw <= stats.dropped_writes
                    && stats.dropped_writes <= mw
                    && bb <= stats.dropped_bytes
                    && stats.dropped_bytes <= mb
            } else {
                stats.dropped_writes == mw && stats.dropped_bytes == mb
            };
            if ok {
                return;
            }
            why.push(format!(
                "end {e}: missing {missing:?} ({mw} writes, {mb} bytes)"
            ));
        }
        self.fail(format!(
            "reader {ri} (opened at {} writes at {}, from {s}, window from {start}, head {head:?}, {:?}, undrained {undrained}) received {got:?}, counts {} dropped writes {} bytes: {why:?}",
            r.opened_at, r.how, r.end, stats.dropped_writes, stats.dropped_bytes
        ));
    }
}

fn run(cfg: &Cfg, ops: &[Op]) {
    let mut h = Harness::new(cfg);
    let shed = h.pool.shed_bytes();
    h.check_step(shed);
    for op in ops {
        h.trace.push(format!("{op:?}"));
        let shed = h.pool.shed_bytes();
        h.used_before = h.pool.used();
        h.step_start = Instant::now();
        h.mark = h.step_start;
        h.apply(op, cfg);
        h.check_step(shed);
    }
    h.finish_run();
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES)
}

#[test]
fn the_core_keeps_its_contract_on_random_operations() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (cfg_strategy(), ops_strategy());
    let result = runner.run(&strategy, |(cfg, ops)| {
        run(&cfg, &ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let counts: Vec<(Cover, usize)> = (0..COVER_KINDS)
        .map(|k| (COVER_LIST[k], COVERAGE[k].load(StdOrdering::Relaxed)))
        .collect();
    eprintln!("coverage: {counts:?}");
    eprintln!("slept {} ms", SLEPT.load(StdOrdering::Relaxed) / 1000);
    for (kind, n) in counts {
        assert!(n > 0, "the model never saw {kind:?}: it is vacuous there");
    }
}

const COVER_LIST: [Cover; COVER_KINDS] = [
    Cover::DropByBudget,
    Cover::Disconnect,
    Cover::Parked,
    Cover::Released,
    Cover::Shed,
    Cover::QueueShed,
    Cover::NoMemory,
    Cover::ParkedReadData,
    Cover::CancelledRead,
    Cover::CancelledWrite,
    Cover::EofAfterRemove,
    Cover::SessionEnd,
    Cover::UnitDelivered,
    Cover::Abandoned,
    Cover::Replay,
    Cover::RingTrimmed,
    Cover::RingOversize,
    Cover::RenameOver,
    Cover::Shutdown,
    Cover::StartReplay,
    Cover::LiveAfterHistory,
    Cover::BackPartial,
    Cover::BackBytesPartial,
    Cover::OffsetInsideWrite,
    Cover::OffsetAheadReached,
    Cover::TooOld,
    Cover::SnapshotReplay,
    Cover::LineInsideWrite,
    Cover::RingTimeTrimmed,
    Cover::ResolveAgrees,
    Cover::TooMany,
];

// ---------------------------------------------------------------------------------------
// Shrunk failures, kept
// ---------------------------------------------------------------------------------------
/// A `Block` namespace with no channel room and no ring, limited to `limit` bytes: every
/// write after the first parks, until the memory limit refuses one.
fn blocking_namespace(limit: u64) -> Namespace {
    Namespace::with_limits(
        Budgets::new(0, 0),
        Policy {
            slow_reader: SlowReader::Block,
            ..Policy::default()
        },
        Limits {
            max_memory: limit,
            ..Limits::NONE
        },
    )
}

/// Submits 1-byte writes through `w` until one is refused, which must be for memory;
/// returns the ids of those that parked.
fn park_until_refused(w: &Writer) -> Vec<u64> {
    let refused = Arc::new(StdMutex::new(None));
    let mut parked = Vec::new();
    while refused.lock().unwrap().is_none() {
        let r2 = refused.clone();
        let id = w.submit(
            b"x",
            0,
            Box::new(move |r| {
                if let Err(e) = r {
                    *r2.lock().unwrap() = Some(e);
                }
            }),
        );
        parked.extend(id);
    }
    assert_eq!(*refused.lock().unwrap(), Some(StreamError::NoMemory));
    parked
}

/// Regression (open): releasing parked writes passes `max_memory` by far more than one
/// write's queue entries. `memory.rs`: "A write's queue entries are charged when it is
/// applied, under its stream's lock, where nothing can be shed: the total may pass the
/// limit by the entries of one write". `State::release_blocked` applies every parked write
/// that fits in one go and charges all their entries unchecked. Minimal sequence (found by
/// the model with 5 readers and `max_memory` 7000): a `Block` stream with channel 0 and no
/// ring, `max_memory` 8000, 4 readers; 1-byte writes (the first is queued, the rest park)
/// until one fails with `NoMemory`; then raising the channel budget releases the parked
/// ones at once, 4 × `ENTRY_COST` each: 72 of them take the pool to 17161 bytes, over twice
/// the limit (more readers, more).
#[test]
fn regression_releasing_parked_writes_keeps_within_the_memory_limit() {
    let limit = 8000;
    let ns = blocking_namespace(limit);
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let readers: Vec<Reader> = (0..4)
        .map(|i| s.open_reader(format!("r{i}")).unwrap())
        .collect();
    let w = s.open_writer();
    let parked = park_until_refused(&w).len();
    // Parked writes had their queue entries charged as they parked: the last one may
    // pass the limit by its own.
    let one_write = ENTRY_COST * readers.len() as u64;
    assert!(ns.pool().used() <= limit + one_write);
    s.set_budgets(Budgets::new(1 << 20, 0));
    let used = ns.pool().used();
    assert!(
        used <= limit + one_write,
        "released writes: the pool uses {used}, limit {limit} + one write's entries {one_write}"
    );
    // Reading frees room, and each read that does releases more, within the limit again.
    while s.stats().writes < 1 + parked as u64 {
        for r in &readers {
            let (tx, rx) = std::sync::mpsc::channel();
            r.read(
                1 << 20,
                ReadMode::NonBlocking,
                0,
                Box::new(move |o| {
                    let _ = tx.send(o);
                }),
            );
            let _ = rx.recv();
        }
        let used = ns.pool().used();
        assert!(used <= limit + one_write, "the pool uses {used}");
    }
}

/// Regression (open): an open refused `TooOld` leaves its reservation charged for good.
/// `Stream::open_reader_at` reserves the replay's queue entries (one per ring entry and per
/// piece of a parked write) before it resolves the start, and the `?` on `State::resolve`
/// returns without refunding them. Minimal sequence: a ring of 100 bytes holding one write
/// (6 bytes, then 100: the first is trimmed, the ring starts at 6); `open_reader_at(Offset(0))`
/// fails `TooOld` as it should, but the pool now uses `ENTRY_COST` more, and every further
/// refused open adds as many again (a client retrying an old offset exhausts `max_memory`).
#[test]
fn regression_an_open_refused_as_too_old_gives_back_its_reservation() {
    let ns = Namespace::new(Budgets::new(1 << 20, 100));
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let w = s.open_writer();
    w.write(b"hello\n").unwrap();
    w.write(&[b'x'; 100]).unwrap();
    assert_eq!(s.stats().ring_start, 6);
    let before = ns.pool().used();
    for _ in 0..3 {
        let start = Start {
            from: Origin::Offset(0),
            snapshot: false,
        };
        let e = s.open_reader_at("old".into(), start).err();
        assert_eq!(e, Some(StreamError::TooOld));
    }
    assert_eq!(
        ns.pool().used(),
        before,
        "three opens refused TooOld left memory charged"
    );
}

/// Regression (open): a reader that asks for an offset ahead of the stream's end starts at
/// the end instead when the pool cannot reserve the (estimated) replay entries, although it
/// replays nothing: it then receives bytes before the offset it asked for, and its
/// `ReaderStats::start` says the end. (`open_reader_at`: `_ if !reserved => (st.written, 0)`
/// comes before `Position::Ahead`.) Minimal sequence: `max_memory` 20000, a `Block` stream
/// (its reader is never shed) with big budgets, a reader that never reads, 100-byte writes
/// until the free memory is below a reader's cost plus the ring's entries; then
/// `open_reader_at(Offset(end + 5))` starts at `end`, not `end + 5`. (The failed reservation
/// also sheds the whole ring on its way, though that frees nothing: the reader's queue
/// holds the same chunks.)
#[test]
fn regression_an_offset_ahead_never_starts_before_it() {
    let ns = Namespace::with_limits(
        Budgets::new(1 << 20, 1 << 20),
        Policy {
            slow_reader: SlowReader::Block,
            ..Policy::default()
        },
        Limits {
            max_memory: 20_000,
            ..Limits::NONE
        },
    );
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let _slow = s.open_reader("slow".into()).unwrap();
    let w = s.open_writer();
    let mut writes = 0u64;
    while ns.pool().budget() - ns.pool().used() >= READER_COST + writes * ENTRY_COST {
        w.write(&[b'x'; 100]).unwrap();
        writes += 1;
    }
    let end = s.stats().written_bytes;
    let start = Start {
        from: Origin::Offset(end + 5),
        snapshot: false,
    };
    let r = s.open_reader_at("ahead".into(), start).unwrap();
    assert_eq!(
        r.stats().start,
        end + 5,
        "an offset ahead of the end ({end}) must be waited for"
    );
}

/// Regression (open): a reader that opens beside parked (`Block`) writes is charged its
/// queue entries of all of them even when the pool refused to reserve them, passing
/// `max_memory` by far more than one write's entries. (`open_reader_at` adds
/// `w.parts.len() * ENTRY_COST` per parked write to `charged` whether `reserved` or not.)
/// Minimal sequence: `max_memory` 8000, a `Block` stream with channel 0 and no ring, one
/// reader; 1-byte writes (the first is queued, the rest park) until one fails `NoMemory`;
/// 8 of the parked writes cancelled (room for a reader's state, not for 57 entries); then
/// `open_reader_at(Live)` takes the pool to 9498 bytes.
#[test]
fn regression_a_reader_opening_beside_parked_writes_keeps_within_the_memory_limit() {
    let limit = 8000;
    let ns = blocking_namespace(limit);
    let (s, _) = ns.create(b"s", meta()).unwrap();
    let _first = s.open_reader("first".into()).unwrap();
    let w = s.open_writer();
    let mut parked = park_until_refused(&w);
    for id in parked.drain(..8) {
        assert!(s.cancel_write(id));
    }
    let start = Start {
        from: Origin::Live,
        snapshot: false,
    };
    // Fixed: without room for those entries the reader is refused (and nothing stays
    // charged); with room, they are charged within the limit.
    let second = s.open_reader_at("second".into(), start);
    assert!(
        matches!(second, Ok(_) | Err(StreamError::NoMemory)),
        "{:?}",
        second.as_ref().err()
    );
    let used = ns.pool().used();
    let one_write = 2 * ENTRY_COST;
    assert!(
        used <= limit + one_write,
        "beside {} parked writes the pool uses {used}, limit {limit} + one write's entries {one_write}",
        parked.len()
    );
}
