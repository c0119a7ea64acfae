//! Response bodies: a live stream read from a core [`Reader`] (raw bytes, or Server-Sent
//! Events of its lines), and small fixed bodies; and the body of a request, hyper's or none
//! (a request whose head the gateway parsed itself takes no body). The stream's body pulls:
//! its sender (`lean.rs`, or hyper) polls it only once the socket took the previous frame,
//! so a slow client is a slow core reader and the stream's `slow_reader` policy applies.
//! Knows nothing of routes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;

use crate::stream::{ReadMode, ReadOutcome, Reader};

/// Most bytes asked of the core per read: a reader that keeps up gets each write as a
/// range of its shared chunk whatever this is; one that is behind gets small writes
/// coalesced into one frame (the core copies them) and large ones cut into ranges of this.
pub const READ_MAX: usize = 256 << 10;

/// A read of at least this much is sent without waiting for more (see
/// [`ReaderBody::with_coalesce`]): sends this large cost the kernel little more per byte
/// than larger ones.
pub const COALESCE_TARGET: usize = 32 << 10;

/// The tag of the gateway's parked reads and writes (the core keeps it for watchdogs).
pub const TAG: u32 = 0;

/// How often an idle SSE stream sends a comment, so that proxies and clients with an
/// inactivity timeout keep it open.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// The longest line an SSE event holds; a longer one is sent in events of this size.
const SSE_LINE_MAX: usize = 64 << 10;

/// A core chunk as the owner of a `bytes::Bytes`: the HTTP body sends the core's shared
/// bytes without copying them.
struct Owned(crate::stream::Bytes);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Where a parked read's answer waits for the body's next poll.
#[derive(Default)]
struct Slot {
    outcome: Option<ReadOutcome>,
    waker: Option<Waker>,
}

/// The bytes of one reader, pulled read by read.
pub struct ReaderBody {
    reader: Option<Reader>,
    slot: Arc<Mutex<Slot>>,
    /// The id of the read parked in the core, until its answer is taken.
    parked: Option<u64>,
    /// How long a short read holds back the next one (zero: never).
    coalesce: Duration,
    /// Until when the next read waits, so that the writes arriving meanwhile come as one
    /// (the core gathers a reader's pending writes into one read); made on first use.
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
    holding: bool,
}

impl ReaderBody {
    /// Every read sent as soon as it comes.
    pub fn new(reader: Reader) -> ReaderBody {
        ReaderBody {
            reader: Some(reader),
            slot: Arc::default(),
            parked: None,
            coalesce: Duration::ZERO,
            hold: None,
            holding: false,
        }
    }

    /// After a read shorter than [`COALESCE_TARGET`], the next waits `coalesce`: at a low
    /// rate, sends are fewer and larger (the kernel's cost is per send), each byte later by
    /// up to `coalesce`; a reader behind or a fast stream gets long reads and never waits.
    pub fn with_coalesce(reader: Reader, coalesce: Duration) -> ReaderBody {
        let mut body = ReaderBody::new(reader);
        body.coalesce = coalesce;
        body
    }

    /// The next outcome of the core: at once, or `Pending` with the waker kept.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<crate::stream::Bytes>> {
        let Some(reader) = &self.reader else {
            return Poll::Ready(None);
        };
        if self.holding {
            if let Some(h) = &mut self.hold
                && h.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            self.holding = false;
        }
        if self.parked.is_none() {
            let slot = self.slot.clone();
            let deliver = Box::new(move |o: ReadOutcome| {
                let waker = {
                    let mut s = slot.lock();
                    s.outcome = Some(o);
                    s.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
            // Marked parked before the read: its answer may come before `read` returns.
            self.parked = Some(u64::MAX);
            match reader.read(READ_MAX, ReadMode::Wait, TAG, deliver) {
                Some(id) => self.parked = Some(id),
                None => self.parked = Some(u64::MAX),
            }
        }
        let outcome = {
            let mut s = self.slot.lock();
            match s.outcome.take() {
                Some(o) => o,
                None => {
                    s.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        self.parked = None;
        match outcome {
            ReadOutcome::Data(b) => {
                if !self.coalesce.is_zero() && b.len() < COALESCE_TARGET {
                    let until = tokio::time::Instant::now() + self.coalesce;
                    match &mut self.hold {
                        Some(h) => h.as_mut().reset(until),
                        None => self.hold = Some(Box::pin(tokio::time::sleep_until(until))),
                    }
                    self.holding = true;
                }
                Poll::Ready(Some(b))
            }
            // Removed, session over, cut off (or a cancellation): the clean end of the body.
            ReadOutcome::Eof | ReadOutcome::Interrupted | ReadOutcome::WouldBlock => {
                self.release();
                Poll::Ready(None)
            }
        }
    }

    /// The reader, for a sender that reads it itself; `None` once the body has read (only
    /// an unread body is handed over).
    pub fn into_reader(mut self) -> Option<Reader> {
        if self.parked.is_some() {
            return None;
        }
        self.reader.take()
    }

    /// Cancels a parked read and unregisters the reader: the client is gone or done.
    fn release(&mut self) {
        if let (Some(reader), Some(read)) = (&self.reader, self.parked.take())
            && read != u64::MAX
        {
            reader.stream().cancel_read(reader.id(), read);
        }
        self.reader = None;
    }
}

impl Drop for ReaderBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// Server-Sent Events of a reader's lines: `id:` is the byte offset just after each line's
/// newline, so a client resumes exactly with `Last-Event-ID`.
pub struct SseBody {
    inner: ReaderBody,
    /// Offset of the first byte of `partial`.
    offset: u64,
    /// The start of a line whose newline has not come yet.
    partial: Vec<u8>,
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    ended: bool,
}

impl SseBody {
    /// Events from `reader`, whose first byte is at `offset`.
    pub fn new(reader: Reader, offset: u64) -> SseBody {
        SseBody {
            inner: ReaderBody::new(reader),
            offset,
            partial: Vec::new(),
            heartbeat: Box::pin(tokio::time::sleep(SSE_HEARTBEAT)),
            ended: false,
        }
    }

    /// The events of the whole lines in `partial` (and of an over-long line's head).
    fn events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.partial[start..];
            let cut = match rest.iter().position(|b| *b == b'\n') {
                Some(nl) => Some((nl, nl + 1)),
                None if rest.len() >= SSE_LINE_MAX => Some((SSE_LINE_MAX, SSE_LINE_MAX)),
                None => None,
            };
            let Some((len, used)) = cut else { break };
            let line = &rest[..len];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let id = self.offset + (start + used) as u64;
            event(&mut out, id, line);
            start += used;
        }
        self.partial.drain(..start);
        self.offset += start as u64;
        out
    }
}

fn event(out: &mut Vec<u8>, id: u64, line: &[u8]) {
    out.extend_from_slice(format!("id: {id}\ndata: ").as_bytes());
    // SSE is UTF-8 text; a stray CR would end the data line early.
    let text = String::from_utf8_lossy(line).replace('\r', "");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A request's body: hyper's, or none at all.
pub enum ReqBody {
    Hyper(hyper::body::Incoming),
    Empty,
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body: a live stream, its SSE events, or a fixed body.
pub enum Body {
    Full(Option<Bytes>),
    Stream(ReaderBody),
    Sse(Box<SseBody>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    pub fn text(s: impl Into<String>) -> Body {
        Body::Full(Some(Bytes::from(s.into())))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Body::Stream(r) => r
                .poll_read(cx)
                .map(|o| o.map(|b| Ok(Frame::data(Bytes::from_owner(Owned(b)))))),
            Body::Sse(s) => loop {
                if s.ended {
                    return Poll::Ready(None);
                }
                match s.inner.poll_read(cx) {
                    Poll::Ready(Some(b)) => {
                        s.partial.extend_from_slice(&b);
                        let out = s.events();
                        if !out.is_empty() {
                            s.heartbeat
                                .as_mut()
                                .reset(tokio::time::Instant::now() + SSE_HEARTBEAT);
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Poll::Ready(None) => {
                        s.ended = true;
                        // A last line without its newline is still a line.
                        if s.partial.is_empty() {
                            return Poll::Ready(None);
                        }
                        let mut out = Vec::new();
                        let id = s.offset + s.partial.len() as u64;
                        event(&mut out, id, &s.partial);
                        s.partial.clear();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    Poll::Pending => {
                        if s.heartbeat.as_mut().poll(cx).is_ready() {
                            s.heartbeat
                                .as_mut()
                                .reset(tokio::time::Instant::now() + SSE_HEARTBEAT);
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                                b":\n\n",
                            )))));
                        }
                        return Poll::Pending;
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_carry_the_offset_after_each_line() {
        let mut out = Vec::new();
        event(&mut out, 6, b"hello");
        assert_eq!(out, b"id: 6\ndata: hello\n\n");
    }
}
