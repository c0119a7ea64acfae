//! Where a reader starts: the specs of `STREAM@SPEC` names (and, later, of the HTTP
//! gateway's `?from=`), parsed in one place. Knows nothing of streams or FUSE; the core
//! resolves a [`Start`] against a stream's ring (`Stream::open_reader_at`).
//!
//! ```text
//! live            only what is written after the open
//! start           the whole ring (the default)
//! -10s  -1.5m     from the first write of the last 10 seconds (ms, s, m, h; decimals)
//! -64KB           the newest whole writes totalling at most 64 KB (at least one)
//! 123456789       from that absolute byte offset (as st_size and ring_start count)
//! snapshot        the ring as it is at the open, then end of file
//! -10s,snapshot   any of the above, then end of file instead of live data
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use crate::size::parse_size;

/// Where the replay begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The oldest byte of the ring (at its alignment).
    Start,
    /// After the newest byte: no history (with `mpegts` alignment, the newest keyframe).
    Live,
    /// The first write that arrived within this long before the open.
    Back(Duration),
    /// The newest whole writes totalling at most this many bytes, at least one.
    BackBytes(u64),
    /// Exactly this absolute offset, even inside a write; ahead of the end it waits.
    Offset(u64),
}

/// A reader's start: where, and whether it ends with the replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    pub from: Origin,
    /// End of file after the replay instead of live data.
    pub snapshot: bool,
}

impl Start {
    /// The default of every stream: the whole ring, then live.
    pub const RING: Start = Start {
        from: Origin::Start,
        snapshot: false,
    };
}

impl Default for Start {
    fn default() -> Start {
        Start::RING
    }
}

/// Where a replay may begin (`replay_align`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Align {
    /// At the first byte of a write.
    #[default]
    Write,
    /// At the first byte of a line (after a `\n`), for writers whose writes cut lines.
    Line,
    /// At an MPEG-TS random access point, after the latest PAT and PMT.
    MpegTs,
}

/// A spec that does not parse; the message repeats it and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid start '{spec}': {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

const EXPECTED: &str = "expected live, start, snapshot, -DURATION (ms, s, m, h), -SIZE \
    (B, KB, MB, GB), a byte offset, or one of them followed by ,snapshot";

fn spec_err(spec: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        spec: spec.escape_debug().to_string(),
        reason: reason.into(),
    }
}

/// Parses a duration: a decimal number and a unit `ms`, `s`, `m` or `h` ("2s", "1.5m").
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err("a duration needs a unit: ms, s, m or h (e.g. 10s)".into()),
        u => return Err(format!("unknown unit '{u}': expected ms, s, m or h")),
    };
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return Err("expected a number and a unit, e.g. 10s or 1.5m".into());
    }
    let n: f64 = number
        .parse()
        .map_err(|_| "expected a number and a unit, e.g. 10s or 1.5m".to_string())?;
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err("too long".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_from(part: &str, spec: &str) -> Result<Origin, SpecError> {
    Ok(match part {
        "live" => Origin::Live,
        "start" => Origin::Start,
        _ if part.starts_with('-') => {
            // A number with a lower-case ms, s, m or h is a duration ("-5m": five minutes);
            // anything else is a size as in the options ("-5M", "-64KB", "-500").
            let back = &part[1..];
            let number = back.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &back[number.len()..];
            if matches!(unit, "ms" | "s" | "m" | "h") {
                Origin::Back(parse_duration(back).map_err(|e| spec_err(spec, e))?)
            } else {
                Origin::BackBytes(parse_size(back).map_err(|e| spec_err(spec, e.to_string()))?)
            }
        }
        _ if part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty() => Origin::Offset(
            part.parse()
                .map_err(|_| spec_err(spec, "the offset is too large"))?,
        ),
        _ => return Err(spec_err(spec, EXPECTED)),
    })
}

/// Parses a start spec (see the module's table).
pub fn parse_start(spec: &str) -> Result<Start, SpecError> {
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    match parts.as_slice() {
        ["snapshot"] => Ok(Start {
            from: Origin::Start,
            snapshot: true,
        }),
        [from] => Ok(Start {
            from: parse_from(from, spec)?,
            snapshot: false,
        }),
        [from, "snapshot"] | ["snapshot", from] if *from != "snapshot" => Ok(Start {
            from: parse_from(from, spec)?,
            snapshot: true,
        }),
        _ => Err(spec_err(spec, EXPECTED)),
    }
}

/// Parses a `replay_align` value.
pub fn parse_align(value: &str) -> Result<Align, String> {
    match value {
        "write" => Ok(Align::Write),
        "line" => Ok(Align::Line),
        "mpegts" => Ok(Align::MpegTs),
        _ => Err("expected write, line or mpegts".into()),
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Origin::Start if self.snapshot => return f.write_str("snapshot"),
            Origin::Start => f.write_str("start")?,
            Origin::Live => f.write_str("live")?,
            Origin::Back(d) => write!(f, "-{}ms", d.as_millis())?,
            Origin::BackBytes(n) => write!(f, "-{n}B")?,
            Origin::Offset(o) => write!(f, "{o}")?,
        }
        if self.snapshot {
            f.write_str(",snapshot")?;
        }
        Ok(())
    }
}

impl fmt::Display for Align {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Align::Write => "write",
            Align::Line => "line",
            Align::MpegTs => "mpegts",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> Start {
        parse_start(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    #[test]
    fn the_specs_of_the_table() {
        let cases: &[(&str, Origin, bool)] = &[
            ("live", Origin::Live, false),
            ("start", Origin::Start, false),
            ("snapshot", Origin::Start, true),
            ("-10s", Origin::Back(Duration::from_secs(10)), false),
            ("-1.5m", Origin::Back(Duration::from_secs(90)), false),
            ("-250ms", Origin::Back(Duration::from_millis(250)), false),
            ("-2h", Origin::Back(Duration::from_secs(7200)), false),
            ("-64KB", Origin::BackBytes(64 << 10), false),
            ("-1MiB", Origin::BackBytes(1 << 20), false),
            ("-500", Origin::BackBytes(500), false),
            ("123456789", Origin::Offset(123_456_789), false),
            ("0", Origin::Offset(0), false),
            ("-10s,snapshot", Origin::Back(Duration::from_secs(10)), true),
            ("live,snapshot", Origin::Live, true),
            ("snapshot,-64KB", Origin::BackBytes(64 << 10), true),
        ];
        for &(spec, from, snapshot) in cases {
            assert_eq!(ok(spec), Start { from, snapshot }, "{spec}");
        }
    }

    #[test]
    fn bad_specs_repeat_the_input() {
        for spec in [
            "",
            "later",
            "-",
            "-10x",
            "-1.2.3s",
            "snapshot,snapshot",
            "1,2",
            "99999999999999999999",
            "-s",
            "+5",
            "12a",
        ] {
            let e = parse_start(spec).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid start '{spec}'")),
                "{e}"
            );
        }
        let e = parse_start("-10x").unwrap_err();
        assert!(e.reason.contains("unknown unit"), "{e}");
        let e = parse_start("a\nb").unwrap_err();
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(
            parse_duration("10d")
                .unwrap_err()
                .contains("unknown unit 'd'")
        );
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn display_parses_back_to_the_same_start() {
        for spec in [
            "live",
            "start",
            "snapshot",
            "-10s",
            "-64KB",
            "42",
            "-1.5m,snapshot",
        ] {
            let s = ok(spec);
            assert_eq!(ok(&s.to_string()), s, "{spec} -> {s}");
        }
    }

    #[test]
    fn alignments() {
        assert_eq!(parse_align("line"), Ok(Align::Line));
        assert_eq!(parse_align("mpegts"), Ok(Align::MpegTs));
        assert!(parse_align("ts").is_err());
        assert_eq!(Align::default().to_string(), "write");
    }
}
