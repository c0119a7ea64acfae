//! One typed snapshot of a namespace's statistics, taken from the core's counters and
//! rendered by every front door: as extended attributes (`xattr.rs`, which `status` reads
//! back), as the JSON of `GET /streams` and as Prometheus text (`http::observe`). The list of
//! fields and their names lives here once, so that the renderings cannot drift apart. Knows
//! nothing of FUSE, HTTP or any text format.

#![forbid(unsafe_code)]

use crate::namespace::Namespace;
use crate::stream::{OnWriterClose, ReaderStats, SlowReader, Stream, StreamStats};
use crate::xattr::DEFAULT_CONTENT_TYPE;

/// A field's value: a count or a setting's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Num(u64),
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// One reader of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderSnapshot {
    /// Who opened it (`pid N (COMMAND)` on the mount, the remote address over HTTP), escaped
    /// by the front door that made it.
    pub label: String,
    pub stats: ReaderStats,
    /// The stream's channel budget, against which `queued` overflows.
    pub budget: u64,
}

impl ReaderSnapshot {
    /// The counters of the reader's line, in order: `queued` is the live cost compared with
    /// `budget`.
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        let r = &self.stats;
        [
            ("queued", r.live_cost),
            ("budget", self.budget),
            ("delivered", r.delivered_bytes),
            ("dropped_writes", r.dropped_writes),
            ("dropped_bytes", r.dropped_bytes),
            ("start", r.start),
        ]
    }

    /// Whether the reader was cut off, and whether a read of it waits for data now.
    pub fn disconnected(&self) -> bool {
        self.stats.disconnected
    }

    pub fn waiting(&self) -> bool {
        !self.stats.disconnected && self.stats.parked_reads > 0
    }

    /// The reader's line of `reader_list`: `LABEL\tkey=value ...`, then `disconnected` or
    /// `waiting` when it is so.
    pub fn line(&self) -> String {
        let mut l = self.label.clone();
        for (i, (k, v)) in self.fields().iter().enumerate() {
            l.push(if i == 0 { '\t' } else { ' ' });
            l.push_str(k);
            l.push('=');
            l.push_str(&v.to_string());
        }
        if self.disconnected() {
            l.push_str(" disconnected");
        } else if self.waiting() {
            l.push_str(" waiting");
        }
        l
    }
}

/// One stream, with its readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// The name, as bytes (it need not be UTF-8).
    pub name: Vec<u8>,
    pub stats: StreamStats,
    /// Why the stream's last setting was refused.
    pub last_error: Option<String>,
    /// The media type HTTP readers are told (`content_type`).
    pub content_type: String,
    pub readers: Vec<ReaderSnapshot>,
}

impl StreamSnapshot {
    /// The statistics of `stream`, named `name`.
    pub fn of(name: &[u8], stream: &Stream) -> StreamSnapshot {
        let stats = stream.stats();
        let budget = stats.budgets.channel;
        let readers = stream
            .reader_stats()
            .into_iter()
            .map(|(label, stats)| ReaderSnapshot {
                label,
                stats,
                budget,
            })
            .collect::<Vec<_>>();
        StreamSnapshot {
            name: name.to_vec(),
            last_error: stream.last_error(),
            content_type: stream
                .content_type()
                .map_or(DEFAULT_CONTENT_TYPE.to_string(), |c| c.to_string()),
            readers,
            stats,
        }
    }

    /// Reads of its readers waiting for data now.
    pub fn parked_reads(&self) -> u64 {
        self.readers
            .iter()
            .map(|r| r.stats.parked_reads as u64)
            .sum()
    }

    /// Every statistic and setting but the reader list, in their stable order. These are the
    /// stream's attributes (`user.streamfs.NAME`) and the fields of its `status --json` and
    /// `GET /streams` objects.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let s = &self.stats;
        let n = |v: u64| Value::Num(v);
        let t = |v: String| Value::Text(v);
        vec![
            ("bytes_written", n(s.written_bytes)),
            ("writes", n(s.writes)),
            ("readers", n(s.readers as u64)),
            ("writers", n(s.writers as u64)),
            ("ring_bytes", n(s.ring_bytes)),
            ("ring_start", n(s.ring_start)),
            ("dropped_writes", n(s.dropped_writes)),
            ("dropped_bytes", n(s.dropped_bytes)),
            ("channel_buffer_size", n(s.budgets.channel)),
            ("ring_buffer_size", n(s.budgets.ring)),
            (
                "slow_reader",
                t(slow_reader_name(s.policy.slow_reader).into()),
            ),
            (
                "on_writer_close",
                t(on_writer_close_name(s.policy.on_writer_close).into()),
            ),
            ("start", t(s.policy.start.to_string())),
            ("replay_align", t(s.policy.align.to_string())),
            (
                "ring_buffer_time",
                t(s.budgets
                    .ring_time
                    .map_or("unlimited".into(), |d| format!("{}ms", d.as_millis()))),
            ),
            ("write_rate", n(s.write_rate)),
            ("blocked_writes", n(s.blocked_writes as u64)),
            ("last_error", t(self.last_error.clone().unwrap_or_default())),
            ("content_type", t(self.content_type.clone())),
        ]
    }
}

/// The namespace's own figures: limits, defaults and totals over live streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSnapshot {
    /// The daemon's process id (what `streamfs stop` signals).
    pub pid: u32,
    /// Where the daemon logs.
    pub log: String,
    pub streams: u64,
    pub bytes_written: u64,
    pub writes: u64,
    pub readers: u64,
    pub writers: u64,
    pub dropped_writes: u64,
    pub dropped_bytes: u64,
    pub ring_bytes: u64,
    pub parked_reads: u64,
    pub blocked_writes: u64,
    pub memory: u64,
    pub max_memory: u64,
    pub shed_bytes: u64,
    pub max_streams: u64,
    pub channel_buffer_size: u64,
    pub ring_buffer_size: u64,
    pub slow_reader: SlowReader,
    pub on_writer_close: OnWriterClose,
    /// Where the streams live: `local`, or the engine's connection state (`nats://...`).
    pub backend: String,
}

impl MountSnapshot {
    /// The root's attributes, in their stable order (the `mount` object of `status --json`).
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let n = Value::Num;
        vec![
            ("pid", n(u64::from(self.pid))),
            ("log", Value::Text(self.log.clone())),
            ("streams", n(self.streams)),
            ("bytes_written", n(self.bytes_written)),
            ("readers", n(self.readers)),
            ("writers", n(self.writers)),
            ("dropped_writes", n(self.dropped_writes)),
            ("memory", n(self.memory)),
            ("max_memory", n(self.max_memory)),
            ("shed_bytes", n(self.shed_bytes)),
            ("max_streams", n(self.max_streams)),
            ("channel_buffer_size", n(self.channel_buffer_size)),
            ("ring_buffer_size", n(self.ring_buffer_size)),
            (
                "slow_reader",
                Value::Text(slow_reader_name(self.slow_reader).into()),
            ),
            (
                "on_writer_close",
                Value::Text(on_writer_close_name(self.on_writer_close).into()),
            ),
            ("backend", Value::Text(self.backend.clone())),
        ]
    }
}

/// The whole namespace at one moment (each stream read under its own lock, one after the
/// other: totals are the sums of every stream's figures, shown or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub mount: MountSnapshot,
    /// Sorted by name, as `status` sorts them.
    pub streams: Vec<StreamSnapshot>,
}

impl Snapshot {
    /// Every stream's statistics and the mount's. `log` is where the daemon logs.
    pub fn of(ns: &Namespace, log: String) -> Snapshot {
        Snapshot::showing(ns, log, &|_| true)
    }

    /// The mount's statistics (over every stream), and those of the streams `shown` lets
    /// through: what a requester who may read only some streams is shown.
    pub fn showing(ns: &Namespace, log: String, shown: &dyn Fn(&Stream) -> bool) -> Snapshot {
        let mut parked = 0;
        let mut stats = Vec::new();
        let mut streams = Vec::new();
        for (name, s) in ns.entries() {
            if shown(&s) {
                let snap = StreamSnapshot::of(&name, &s);
                parked += snap.parked_reads();
                streams.push(snap);
            } else {
                // Counted in the totals; its readers are not listed, so not gathered.
                parked += s.parked_reads().len() as u64;
                stats.push(s.stats());
            }
        }
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        let all: Vec<&StreamStats> = streams.iter().map(|s| &s.stats).chain(&stats).collect();
        let mount = MountSnapshot::from_stats(ns, log, &all, parked);
        Snapshot { mount, streams }
    }
}

impl MountSnapshot {
    /// The mount's figures without its readers' (cheap with many readers): parked reads are
    /// the namespace's parked operations less the blocked writes.
    pub fn of(ns: &Namespace, log: String) -> MountSnapshot {
        let stats: Vec<StreamStats> = ns.streams().iter().map(|s| s.stats()).collect();
        let stats: Vec<&StreamStats> = stats.iter().collect();
        let blocked: u64 = stats.iter().map(|s| s.blocked_writes as u64).sum();
        let parked = (ns.parked_total() as u64).saturating_sub(blocked);
        MountSnapshot::from_stats(ns, log, &stats, parked)
    }

    fn from_stats(
        ns: &Namespace,
        log: String,
        streams: &[&StreamStats],
        parked_reads: u64,
    ) -> MountSnapshot {
        let sum = |f: &dyn Fn(&StreamStats) -> u64| streams.iter().map(|s| f(s)).sum::<u64>();
        MountSnapshot {
            pid: std::process::id(),
            log,
            streams: streams.len() as u64,
            bytes_written: sum(&|s| s.written_bytes),
            writes: sum(&|s| s.writes),
            readers: sum(&|s| s.readers as u64),
            writers: sum(&|s| s.writers as u64),
            dropped_writes: sum(&|s| s.dropped_writes),
            dropped_bytes: sum(&|s| s.dropped_bytes),
            ring_bytes: sum(&|s| s.ring_bytes),
            parked_reads,
            blocked_writes: sum(&|s| s.blocked_writes as u64),
            memory: ns.pool().used(),
            max_memory: ns.pool().limit(),
            shed_bytes: ns.pool().shed_bytes(),
            max_streams: ns.max_streams() as u64,
            channel_buffer_size: ns.defaults().channel,
            ring_buffer_size: ns.defaults().ring,
            slow_reader: ns.default_policy().slow_reader,
            on_writer_close: ns.default_policy().on_writer_close,
            backend: ns
                .engine()
                .map(|e| e.status())
                .unwrap_or_else(|| "local".into()),
        }
    }
}

/// The policy's name, as the option and the attribute spell it.
pub fn slow_reader_name(p: SlowReader) -> &'static str {
    match p {
        SlowReader::Drop => "drop",
        SlowReader::Block => "block",
        SlowReader::Disconnect => "disconnect",
    }
}

/// The policy's name, as the option and the attribute spell it.
pub fn on_writer_close_name(p: OnWriterClose) -> &'static str {
    match p {
        OnWriterClose::Keep => "keep",
        OnWriterClose::Eof => "eof",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Budgets, Meta, ReadMode};
    use std::time::SystemTime;

    fn meta() -> Meta {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            crtime: SystemTime::now(),
            ctime: SystemTime::now(),
        }
    }

    #[test]
    fn policy_names_parse_back_as_options() {
        use crate::options::{parse_on_writer_close, parse_slow_reader};
        for p in [SlowReader::Drop, SlowReader::Block, SlowReader::Disconnect] {
            assert_eq!(parse_slow_reader(slow_reader_name(p)).unwrap(), p);
        }
        for p in [OnWriterClose::Keep, OnWriterClose::Eof] {
            assert_eq!(parse_on_writer_close(on_writer_close_name(p)).unwrap(), p);
        }
    }

    #[test]
    fn a_snapshot_holds_every_stream_sorted_and_the_totals() {
        let ns = Namespace::new(Budgets::new(100, 1000));
        let (b, _) = ns.create(b"b", meta()).unwrap();
        let (a, _) = ns.create(b"a", meta()).unwrap();
        let r = a.open_reader("pid 1 (cat)".into()).unwrap();
        let w = a.open_writer();
        w.write(b"hello").unwrap();
        // Over the channel budget of 100 bytes: dropped for the reader that has "hello" queued.
        w.write(&[0u8; 200]).unwrap();
        b.open_writer().write(b"xyz").unwrap();
        let snap = Snapshot::of(&ns, "stderr".into());
        let names: Vec<&[u8]> = snap.streams.iter().map(|s| &s.name[..]).collect();
        assert_eq!(names, [&b"a"[..], b"b"]);
        let m = &snap.mount;
        assert_eq!((m.streams, m.bytes_written, m.writes), (2, 208, 3));
        assert_eq!((m.readers, m.writers, m.dropped_writes), (1, 1, 1));
        assert_eq!(m.dropped_bytes, 200);
        let line = snap.streams[0].readers[0].line();
        assert_eq!(
            line,
            "pid 1 (cat)\tqueued=5 budget=100 delivered=0 dropped_writes=1 dropped_bytes=200 \
             start=0"
        );
        // A parked read shows as `waiting` once the queue is read.
        r.read(1 << 20, ReadMode::NonBlocking, 0, Box::new(|_| {}));
        r.read(1 << 20, ReadMode::Wait, 0, Box::new(|_| {}));
        let snap = Snapshot::of(&ns, String::new());
        assert!(snap.streams[0].readers[0].line().ends_with(" waiting"));
        assert_eq!(snap.mount.parked_reads, 1);
        // The mount's figures without the readers' agree with the full snapshot's.
        assert_eq!(MountSnapshot::of(&ns, String::new()), snap.mount);
        // A requester shown only `b` sees b alone, and the mount's totals over both.
        let shown = Snapshot::showing(&ns, String::new(), &|s| std::ptr::eq(s, &*b));
        let names: Vec<&[u8]> = shown.streams.iter().map(|s| &s.name[..]).collect();
        assert_eq!(names, [&b"b"[..]]);
        assert_eq!(shown.mount, snap.mount);
        let fields = snap.streams[0].fields();
        assert_eq!(fields[0], ("bytes_written", Value::Num(205)));
        assert_eq!(
            fields.iter().find(|(k, _)| *k == "slow_reader").unwrap().1,
            Value::Text("drop".into())
        );
        drop(w);
    }
}
