//! Where a reader starts: a [`Start`](crate::start::Start) resolved against the ring, at the
//! stream's alignment (whole writes, lines, MPEG-TS random access points), under the lock
//! that registers the reader.

use super::StreamError;
use super::state::{State, clock};
use super::store::Bound;

/// Where a reader starts, resolved against the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Position {
    /// At this absolute offset, within the ring or at its end.
    At(u64),
    /// At this offset ahead of the stream's end: it waits for it.
    Ahead(u64),
}

impl State {
    /// The ring's oldest offset.
    pub fn ring_start(&self) -> u64 {
        self.bounds.front().map_or(self.written, |b| b.offset)
    }

    /// The first line start (a write start after a newline, or the byte after a newline)
    /// at or after `from`, or the end.
    fn line_start_from(&self, from: u64) -> u64 {
        let ring_start = self.ring_start();
        if from == ring_start && self.bounds.front().is_some_and(|b| b.line_start()) {
            return from;
        }
        if from > ring_start && self.byte_at(from - 1) == Some(b'\n') {
            return from;
        }
        // A newline at a write's end: the line starts at the next write (or the end).
        self.newline_after(from)
    }

    /// The newest line start before `before`, if any.
    fn line_start_before(&self, before: u64) -> Option<u64> {
        let mut at = before;
        while at > self.ring_start() {
            at -= 1;
            let b = self.byte_at(at)?;
            if b == b'\n' && at + 1 < before {
                return Some(at + 1);
            }
        }
        let first = self.bounds.front()?;
        (first.line_start() && first.offset < before).then_some(first.offset)
    }

    /// Where `start` begins in the ring, at `align` (the MPEG-TS points are the caller's).
    pub fn resolve(
        &self,
        start: crate::start::Start,
        align: crate::start::Align,
        keyframes: &[u64],
    ) -> Result<Position, StreamError> {
        use crate::start::{Align, Origin};
        let (ring_start, end) = (self.ring_start(), self.written);
        // The first write for which `pred` holds; it holds from some write on (arrival times
        // only grow, and so do offsets), so it is found by binary search.
        let write_start = |pred: &dyn Fn(&Bound) -> bool| {
            let i = self.bounds.partition_point(|b| !pred(b));
            self.bounds.get(i).map(|b| b.offset)
        };
        // The write-aligned position each start names.
        let w = match start.from {
            Origin::Offset(o) if o < ring_start => return Err(StreamError::TooOld),
            Origin::Offset(o) if o > end => return Ok(Position::Ahead(o)),
            Origin::Offset(o) => return Ok(Position::At(o)),
            Origin::Start => ring_start,
            Origin::Live => end,
            Origin::Back(d) => {
                let since = clock().saturating_sub(d.as_nanos() as u64);
                write_start(&|b| b.at() >= since).unwrap_or(end)
            }
            Origin::BackBytes(n) => write_start(&|b| end - b.offset <= n)
                .or_else(|| self.bounds.back().map(|b| b.offset))
                .unwrap_or(end),
        };
        Ok(Position::At(match align {
            Align::Write => w,
            Align::Line => match start.from {
                Origin::Live => end,
                Origin::BackBytes(n) => {
                    let p = self.line_start_from(end.saturating_sub(n).max(ring_start));
                    if p < end {
                        p
                    } else {
                        self.line_start_before(end).unwrap_or(p)
                    }
                }
                _ => self.line_start_from(w),
            },
            Align::MpegTs => {
                let in_ring: Vec<u64> = keyframes
                    .iter()
                    .copied()
                    .filter(|k| (ring_start..end).contains(k))
                    .collect();
                let before = in_ring.iter().rev().find(|k| **k <= w).copied();
                let after = in_ring.iter().find(|k| **k >= w).copied();
                match start.from {
                    // The GOP cache: the newest keyframe, so the first frame shows at once.
                    Origin::Live => in_ring.last().copied().unwrap_or(end),
                    Origin::Start => after.unwrap_or(w),
                    _ => before.or(after).unwrap_or(w),
                }
            }
        }))
    }
}
