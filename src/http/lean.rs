//! The lean path of a connection: the gateway reads each request head itself, answers a
//! `GET` of a stream (`/streams/...`, `/api/v1/files`) by writing the response's head and
//! handing a plain live body to a sender thread (`send.rs`; an SSE body is sent here), and
//! gives every other request to hyper with the bytes read so far replayed in front of the
//! socket. hyper keeps a read and a write buffer of 8 KiB each for a connection's whole
//! life, which would be most of what a listener of a live stream costs; here a listener
//! holds its socket and its reader. Knows nothing of routes beyond telling those `GET`s
//! apart: the answers themselves come from `server::handle`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::access::Peer;
use super::body::{Body, ReqBody};
use super::send::{Job, MAX_PIPELINED, Rest};
use super::server::{Answer, Ctx, HEADER_TIMEOUT, MAX_HEAD, Open, handle};

/// Most headers a head parsed here may have; one with more goes to hyper, which takes 100.
const MAX_HEADERS: usize = 48;

/// The end of a head read here.
// Lives only between reading a head and answering it, in a boxed future: its size costs
// nothing a listener keeps.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A request for the lean path, and the length of its head in the buffer.
    Lean(Request<ReqBody>, usize),
    /// Anything else: hyper answers it (including a malformed head, with its own status).
    Hyper,
    /// A head over [`MAX_HEAD`]: hyper reads on and answers `431`.
    TooLarge,
    /// The client closed, failed or took longer than [`HEADER_TIMEOUT`].
    Gone,
}

/// What comes after a request's head (and a fixed body) is answered.
enum Step {
    /// The next request, on the lean path.
    Next,
    /// A live body to send, then `Next` if `keep`.
    Live {
        body: Box<Body>,
        chunked: bool,
        keep: bool,
    },
    /// The rest of the connection is hyper's; the time it has for its first head.
    Hyper(Duration),
    /// The connection ends.
    Close,
}

/// Serves one connection: lean `GET`s of streams here, as long as its requests are those,
/// then the rest of it by hyper. A plain live body is sent by a sender thread (`send.rs`),
/// which gives the connection back when the body ends and it stays open; an SSE body is
/// sent here, and then what the task keeps is only the socket, the body and the leftover
/// bytes: reading a head and answering it run boxed, and so does hyper.
pub async fn serve(stream: TcpStream, ctx: Arc<Ctx>, remote: SocketAddr, open: Open) {
    let remote = Peer::of(&ctx, remote, &stream);
    run(stream, ctx, remote, open, Vec::new()).await
}

/// Goes on with a connection a sender gives back, its body over.
pub async fn resume(rest: Rest) {
    let Rest {
        socket,
        pipelined,
        ctx,
        peer,
        open,
    } = rest;
    match TcpStream::from_std(socket) {
        Ok(stream) => run(stream, ctx, peer, open, pipelined).await,
        Err(e) => log::debug!("http: {peer}: {e}"),
    }
}

async fn run(stream: TcpStream, ctx: Arc<Ctx>, remote: Peer, open: Open, mut buf: Vec<u8>) {
    loop {
        match boxed(request(&stream, &ctx, remote, &mut buf)).await {
            Step::Next => {}
            Step::Live {
                body,
                chunked,
                keep,
            } => match *body {
                Body::Stream(body) => {
                    // A body not read yet always gives its reader.
                    let (Some(reader), Ok(socket)) = (body.into_reader(), stream.into_std()) else {
                        return;
                    };
                    let rest = Rest {
                        socket,
                        pipelined: buf,
                        ctx: ctx.clone(),
                        peer: remote,
                        open,
                    };
                    ctx.senders.adopt(Job {
                        rest,
                        reader,
                        chunked,
                        keep,
                    });
                    return;
                }
                body => match Live::new(&stream, Box::new(body), chunked, &mut buf).await {
                    Ok(()) if keep => {}
                    _ => return,
                },
            },
            Step::Hyper(timeout) => {
                let io = Replay {
                    pre: Bytes::from(buf),
                    inner: stream,
                };
                boxed(super::server::serve_hyper(io, ctx, remote, timeout)).await;
                return;
            }
            Step::Close => return,
        }
    }
}

/// `f` on the heap. A plain function, so that `f` is moved into the box as soon as it is
/// made: `Box::pin` in an `async fn` left room for `f` in that function's own future too
/// (measured: the connection's task as large as the request's future).
fn boxed<F: Future>(f: F) -> Pin<Box<F>> {
    Box::pin(f)
}

/// Reads a head, answers it and writes the answer's head (and a fixed body).
async fn request(stream: &TcpStream, ctx: &Ctx, remote: Peer, buf: &mut Vec<u8>) -> Step {
    let deadline = Instant::now() + HEADER_TIMEOUT;
    let (req, len) = match read_head(stream, buf, deadline).await {
        Head::Lean(req, len) => (req, len),
        Head::Hyper => return Step::Hyper(HEADER_TIMEOUT),
        // A slow client does not get a second timeout by it.
        Head::TooLarge => return Step::Hyper(deadline.saturating_duration_since(Instant::now())),
        Head::Gone => return Step::Close,
    };
    buf.drain(..len);
    buf.shrink_to_fit();
    let keep = keep_alive(&req);
    let http10 = req.version() == Version::HTTP_10;
    // Answered at once but for an upload, which hyper takes (a body): what this future
    // keeps across the awaits below is a pointer at most.
    let resp = match handle(req, ctx, remote) {
        Answer::Now(r) => r,
        Answer::Later(f) => f.await,
    };
    let (head, fixed, step) = encode(resp, keep && !http10, http10);
    match write_all(stream, &mut [IoSlice::new(&head), IoSlice::new(&fixed)]).await {
        Ok(()) => step,
        Err(_) => Step::Close,
    }
}

/// Reads until `buf` holds a whole head (some of it may be there already) and tells what it is.
async fn read_head(stream: &TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Head {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok(Some(head)) => return head,
                Ok(None) => {}
                Err(()) => return Head::Hyper,
            }
        }
        if buf.len() >= MAX_HEAD {
            return Head::TooLarge;
        }
        // Read into the buffer itself: a scratch array would be kept in the task.
        let read = async {
            loop {
                stream.readable().await?;
                let len = buf.len();
                buf.resize((len + 1024).min(MAX_HEAD), 0);
                let r = stream.try_read(&mut buf[len..]);
                buf.truncate(len + r.as_ref().map_or(0, |n| *n));
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Head::Gone,
        }
    }
}

/// The head at the start of `buf`: `Ok(None)` while it is incomplete, `Err` for what hyper
/// should see (a malformed head or one this path does not serve).
fn parse(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut p = httparse::Request::new(&mut headers);
    let len = match p.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (Some(method), Some(path), Some(version)) = (p.method, p.path, p.version) else {
        return Err(());
    };
    if method != "GET" || !(path.starts_with("/streams/") || path.starts_with("/api/v1/files")) {
        return Err(());
    }
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(if version == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for h in p.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
        // A body, an upgrade or an expectation: hyper's to answer.
        let taken = name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
            || (name == header::CONTENT_LENGTH && h.value.trim_ascii() != b"0");
        if taken {
            return Err(());
        }
        b = b.header(name, HeaderValue::from_bytes(h.value).map_err(|_| ())?);
    }
    let req = b.body(ReqBody::Empty).map_err(|_| ())?;
    Ok(Some(Head::Lean(req, len)))
}

/// Whether the connection may take another request after this one's answer.
fn keep_alive(req: &Request<ReqBody>) -> bool {
    !req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// `resp`'s head, its body when it is a fixed one, and what comes once they are written.
fn encode(resp: Response<Body>, keep: bool, http10: bool) -> (Vec<u8>, Bytes, Step) {
    let (parts, mut body) = resp.into_parts();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    let fixed = match &mut body {
        Body::Full(b) => Some(b.take().unwrap_or_default()),
        _ => None,
    };
    let chunked = fixed.is_none() && !http10;
    match &fixed {
        Some(b) => head.extend_from_slice(format!("content-length: {}\r\n", b.len()).as_bytes()),
        None if chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    // An HTTP/1.0 live body ends when the connection does.
    let keep = keep && (fixed.is_some() || chunked);
    if !keep {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let step = match body {
        Body::Full(_) if keep => Step::Next,
        Body::Full(_) => Step::Close,
        body => Step::Live {
            body: Box::new(body),
            chunked,
            keep,
        },
    };
    (head, fixed.unwrap_or_default(), step)
}

/// A live body (SSE) on its way, sent chunk by chunk as the core hands them over, each written
/// before the next is asked for: a client that reads slowly is a slow core reader. The
/// client closing, even while no data comes, ends it at once (and releases the reader).
/// A listener's task waits in it for as long as it listens: written by hand, it is a third
/// of what an `async fn` doing the same keeps.
struct Live<'a> {
    stream: &'a TcpStream,
    body: Box<Body>,
    /// Bytes the client sends meanwhile (a pipelined request), kept for after the body.
    pipelined: &'a mut Vec<u8>,
    chunked: bool,
    /// The piece being written: `head` (a chunk's size line, or the last chunk), the data,
    /// and the chunk's closing CRLF; `done` bytes of them are out.
    out: Option<Bytes>,
    head: [u8; 18],
    head_len: u8,
    tail: &'static [u8],
    done: usize,
    ended: bool,
}

impl<'a> Live<'a> {
    fn new(
        stream: &'a TcpStream,
        body: Box<Body>,
        chunked: bool,
        pipelined: &'a mut Vec<u8>,
    ) -> Self {
        Live {
            stream,
            body,
            pipelined,
            chunked,
            out: None,
            head: [0; 18],
            head_len: 0,
            tail: b"",
            done: 0,
            ended: false,
        }
    }

    /// Writes the piece in `out` until all of it is out.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(data) = &self.out else {
                return Poll::Ready(Ok(()));
            };
            let total = self.head_len as usize + data.len() + self.tail.len();
            if self.done >= total {
                self.out = None;
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(self.stream.poll_write_ready(cx))?;
            let mut parts = [
                IoSlice::new(&self.head[..self.head_len as usize]),
                IoSlice::new(data),
                IoSlice::new(self.tail),
            ];
            let mut rest = &mut parts[..];
            IoSlice::advance_slices(&mut rest, self.done);
            match self.stream.try_write_vectored(rest) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The body's next bytes (`None` at its end), watching the socket meanwhile: an error
    /// when the client has closed.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if let Poll::Ready(frame) = Pin::new(&mut *self.body).poll_frame(cx) {
            let data = frame.and_then(|f| match f {
                Ok(f) => f.into_data().ok(),
                Err(never) => match never {},
            });
            return Poll::Ready(Ok(data));
        }
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            if self.pipelined.len() >= MAX_PIPELINED {
                return Poll::Ready(Err(io::ErrorKind::OutOfMemory.into()));
            }
            let mut scratch = [0u8; 512];
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => self.pipelined.extend_from_slice(&scratch[..n]),
                // Readiness is cleared: the next poll registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl std::future::Future for Live<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            std::task::ready!(this.poll_write(cx))?;
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let next = std::task::ready!(this.poll_next(cx))?;
            this.done = 0;
            match next {
                Some(data) if data.is_empty() => {}
                Some(data) if this.chunked => {
                    this.head_len = chunk_size(&mut this.head, data.len()) as u8;
                    this.tail = b"\r\n";
                    this.out = Some(data);
                }
                Some(data) => this.out = Some(data),
                None => {
                    this.ended = true;
                    if this.chunked {
                        this.head[..5].copy_from_slice(b"0\r\n\r\n");
                        this.head_len = 5;
                        this.tail = b"";
                        this.out = Some(Bytes::new());
                    }
                }
            }
        }
    }
}

/// Writes a chunk's size line (`{len:x}\r\n`) into `out`, returning its length.
pub(super) fn chunk_size(out: &mut [u8; 18], len: usize) -> usize {
    let digits = (len.max(1).ilog2() / 4 + 1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = b"0123456789abcdef"[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// Writes every byte of `parts`, waiting for the socket to take them. Polls readiness
/// itself: tokio's `writable()` future is 150 bytes that a listener's task would keep.
async fn write_all(stream: &TcpStream, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        while !parts.is_empty() {
            if let Err(e) = std::task::ready!(stream.poll_write_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            match stream.try_write_vectored(parts) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// The socket with the bytes already read from it in front: what hyper reads first.
pub struct Replay {
    pre: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            let pre = self.pre.split_to(n);
            buf.put_slice(&pre);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_hex_lines() {
        for len in [1, 9, 15, 16, 4096, 65535, 1 << 20, usize::MAX] {
            let mut out = [0u8; 18];
            let n = chunk_size(&mut out, len);
            assert_eq!(out[..n], *format!("{len:x}\r\n").as_bytes(), "{len}");
        }
    }
}
