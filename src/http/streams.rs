//! The native API, one URL per stream: `GET` (replay then live, or SSE), `HEAD` (its
//! statistics), `PUT`/`POST` (append the body, creating the stream), `DELETE` (rm). Maps each
//! request onto the core's `Stream`, `Reader` and `Writer`, and core errors onto statuses.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::access::{self, Op, Peer};
use super::body::{Body, ReaderBody, ReqBody, SseBody, TAG};
use super::server::{Answer, Ctx, not_allowed, text};
use super::url::Query;
use crate::start::{Origin, Start};
use crate::stream::{MAX_WRITE, Reader, Stream, StreamError, Writer};

/// Longest line `?frame=line` holds back waiting for its newline; a longer one is written
/// in pieces of about this size.
const LINE_MAX: usize = 64 << 10;

/// How long a body with a `Content-Length` may go without sending a byte: what it sent is
/// held (as its unit) until it ends.
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Most bytes of a chunked body gathered into one write when they arrive together.
const COALESCE: usize = 1 << 20;

/// One MPEG-TS packet, the unit of `?frame=ts`.
const TS_PACKET: usize = 188;

pub fn no_stream(name: &[u8]) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("no stream named {}", crate::escape::escape_bytes(name)),
    )
}

fn header_u64(r: &mut Response<Body>, name: &'static str, v: u64) {
    r.headers_mut()
        .insert(name, HeaderValue::from_str(&v.to_string()).expect("digits"));
}

/// The status and message of a core error.
pub fn stream_error(e: &StreamError) -> (StatusCode, String) {
    let status = match e {
        StreamError::NotFound => StatusCode::NOT_FOUND,
        StreamError::Removed => StatusCode::GONE,
        StreamError::InvalidName | StreamError::NameTooLong => StatusCode::BAD_REQUEST,
        StreamError::Exists => StatusCode::CONFLICT,
        StreamError::TooOld => StatusCode::GONE,
        // The daemon's own limits (max_memory, max_streams): like a full disk.
        StreamError::NoMemory | StreamError::TooManyStreams => StatusCode::INSUFFICIENT_STORAGE,
        StreamError::TooManyReaders => StatusCode::SERVICE_UNAVAILABLE,
        StreamError::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        // The engine shared with other hosts (NATS) did not answer in time.
        StreamError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        StreamError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        StreamError::Unsupported => StatusCode::NOT_IMPLEMENTED,
    };
    (status, e.to_string())
}

fn error_response(e: &StreamError) -> Response<Body> {
    let (status, msg) = stream_error(e);
    text(status, msg)
}

/// `/streams/NAME`.
pub fn stream<'a>(req: Request<ReqBody>, ctx: &'a Ctx, name: Vec<u8>, remote: Peer) -> Answer<'a> {
    let resp = match *req.method() {
        Method::GET => match read(&req, ctx, &name, remote) {
            Ok(r) => r,
            Err(r) => r,
        },
        Method::HEAD => match read_request(&req, ctx, &name, remote).and_then(|r| head(&r)) {
            Ok(r) => r,
            Err(r) => r,
        },
        Method::PUT | Method::POST => {
            let query = Query::parse(req.uri().query());
            let framing = match Framing::parse(query.get("frame")) {
                Ok(f) => f,
                Err(r) => return r.into(),
            };
            return Answer::later(async move {
                match upload(req, ctx, &name, framing, remote).await {
                    Ok((stream, _)) => {
                        let mut r = Response::new(Body::empty());
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        header_u64(&mut r, "stream-next-offset", stream.stats().written_bytes);
                        r
                    }
                    Err(r) => r,
                }
            });
        }
        Method::DELETE => match access::remove(ctx, remote, &name) {
            Ok(()) => {
                log::info!(
                    "http: stream {} removed",
                    crate::escape::escape_bytes(&name)
                );
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Err(refused) => refused.unwrap_or_else(|| no_stream(&name)),
        },
        _ => not_allowed("GET, HEAD, PUT, POST, DELETE"),
    };
    resp.into()
}

/// `HEAD`: what the `GET` of the same URL would answer, with no body and no reader opened
/// (its status, its type and `Stream-Offset`: where it would start now), and the stream's
/// statistics as headers.
fn head(req: &ReadRequest) -> Result<Response<Body>, Response<Body>> {
    let s = &req.stream;
    let offset = resolve(s, req.start)?;
    let st = s.stats();
    let mut r = Response::new(Body::empty());
    req.headers(&mut r, offset);
    header_u64(&mut r, "stream-next-offset", st.written_bytes);
    header_u64(&mut r, "stream-ring-start", st.ring_start);
    header_u64(&mut r, "stream-readers", st.readers as u64);
    header_u64(&mut r, "stream-writers", st.writers as u64);
    Ok(r)
}

fn set_type(r: &mut Response<Body>, s: &Stream) {
    let t = s.content_type();
    let t = t.as_deref().unwrap_or(crate::xattr::DEFAULT_CONTENT_TYPE);
    if let Ok(v) = HeaderValue::from_str(t) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
}

/// The reader's label in listings: the client's address and its user agent.
pub fn label(req: &Request<ReqBody>, remote: Peer) -> String {
    let agent = req.headers().get(header::USER_AGENT).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(64)
            .collect::<String>()
    });
    match agent {
        Some(a) => format!("http {remote} ({})", crate::escape::escape(&a)),
        None => format!("http {remote}"),
    }
}

/// Opens a reader of `stream` for a request: at `from` (a start spec) or the stream's
/// default; `410` for an offset older than the ring, `400` for a bad spec.
pub fn open(
    stream: &Arc<Stream>,
    from: Option<&str>,
    label: String,
) -> Result<Reader, Response<Body>> {
    open_at(stream, parse_from(from)?, label)
}

/// A start spec (`?from=`, `NAME@SPEC`), or `400` naming it.
fn parse_from(from: Option<&str>) -> Result<Option<Start>, Response<Body>> {
    from.map(|spec| {
        crate::start::parse_start(spec).map_err(|e| text(StatusCode::BAD_REQUEST, e.to_string()))
    })
    .transpose()
}

/// Where a reader that asks for `from` would start now, without opening one; the answer
/// its `GET` would get when it cannot (see [`open`]).
pub fn would_start(stream: &Stream, from: Option<&str>) -> Result<u64, Response<Body>> {
    resolve(stream, parse_from(from)?)
}

fn resolve(stream: &Stream, start: Option<Start>) -> Result<u64, Response<Body>> {
    let start = start.unwrap_or_else(|| stream.default_start());
    let (offset, _) = stream.resolve(start).map_err(|e| open_error(stream, &e))?;
    Ok(offset)
}

fn open_at(
    stream: &Arc<Stream>,
    start: Option<Start>,
    label: String,
) -> Result<Reader, Response<Body>> {
    let r = match start {
        Some(s) => stream.open_reader_at(label, s),
        None => stream.open_reader(label),
    };
    r.map_err(|e| open_error(stream, &e))
}

/// The answer to a start that cannot be served: `410` for an offset older than the ring.
fn open_error(stream: &Stream, e: &StreamError) -> Response<Body> {
    match e {
        StreamError::TooOld => text(
            StatusCode::GONE,
            format!(
                "that offset is older than the ring, which starts at {}",
                stream.stats().ring_start
            ),
        ),
        e => error_response(e),
    }
}

/// The headers of every live read.
pub fn read_headers(r: &mut Response<Body>, stream: &Stream, offset: u64) {
    set_type(r, stream);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    header_u64(r, "stream-offset", offset);
}

/// What a `GET` of a stream asks for (a `HEAD` of the same URL too).
struct ReadRequest {
    stream: Arc<Stream>,
    /// `None`: the stream's default start.
    start: Option<Start>,
    sse: bool,
}

impl ReadRequest {
    /// The headers of its answer, which starts at `offset`.
    fn headers(&self, r: &mut Response<Body>, offset: u64) {
        read_headers(r, &self.stream, offset);
        if self.sse {
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
        }
    }
}

/// `GET`: the stream from its start position, raw or as SSE.
fn read(
    req: &Request<ReqBody>,
    ctx: &Ctx,
    name: &[u8],
    remote: Peer,
) -> Result<Response<Body>, Response<Body>> {
    let read = read_request(req, ctx, name, remote)?;
    let reader = open_at(&read.stream, read.start, label(req, remote))?;
    let offset = reader.stats().start;
    let mut r = if read.sse {
        Response::new(Body::Sse(Box::new(SseBody::new(reader, offset))))
    } else {
        Response::new(Body::Stream(ReaderBody::with_coalesce(
            reader,
            ctx.mount.http.coalesce,
        )))
    };
    read.headers(&mut r, offset);
    Ok(r)
}

/// The stream a read names, where it starts and how it is sent; the answer to a request
/// that names none, or a bad one.
fn read_request(
    req: &Request<ReqBody>,
    ctx: &Ctx,
    name: &[u8],
    remote: Peer,
) -> Result<ReadRequest, Response<Body>> {
    // `GET /streams/NAME@SPEC` is `?from=SPEC`, as `NAME@SPEC` is on the mount (no stream's
    // name holds an `@`).
    let (name, path_spec) = match name.iter().position(|&b| b == b'@') {
        Some(at) => (&name[..at], Some(&name[at + 1..])),
        None => (name, None),
    };
    let stream = ctx.ns.lookup(name).ok_or_else(|| no_stream(name))?;
    access::check(ctx, remote, Op::Read(&stream.meta()))?;
    let query = Query::parse(req.uri().query());
    let path_spec = match path_spec.map(std::str::from_utf8) {
        Some(Err(_)) => return Err(text(StatusCode::BAD_REQUEST, "invalid start: not UTF-8")),
        Some(Ok(_)) if query.bytes("from").is_some() => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "two starts: NAME@SPEC in the path and ?from=; give one",
            ));
        }
        Some(Ok(spec)) => Some(spec),
        None => None,
    };
    let accept_sse = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if query.bytes("from").is_some() && query.get("from").is_none() {
        return Err(text(StatusCode::BAD_REQUEST, "invalid start: not UTF-8"));
    }
    let sse = match query.get("format") {
        Some("sse") => true,
        Some("raw") | None => accept_sse,
        Some(f) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("unknown format '{}': expected raw or sse", f.escape_debug()),
            ));
        }
    };
    // An SSE client resumes after the last event it saw: its id is the offset to go on at.
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.get("last_event_id").map(str::to_string))
        .filter(|_| sse);
    let mut start = parse_from(query.get("from").or(path_spec))?;
    if let Some(id) = resume {
        let Ok(offset) = id.trim().parse::<u64>() else {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid Last-Event-ID '{}': expected a byte offset",
                    id.escape_debug()
                ),
            ));
        };
        // The id says where to go on; a snapshot asked for stays one.
        start = Some(Start {
            from: Origin::Offset(offset),
            snapshot: start.is_some_and(|s| s.snapshot),
        });
    }
    Ok(ReadRequest { stream, start, sse })
}

/// Where a chunked upload is cut into writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// At each piece of the body as it arrives.
    Frames,
    /// After each newline: every write is whole lines.
    Line,
    /// At 188-byte MPEG-TS packets.
    Ts,
}

impl Framing {
    fn parse(v: Option<&str>) -> Result<Framing, Response<Body>> {
        match v {
            None | Some("frames") => Ok(Framing::Frames),
            Some("line") => Ok(Framing::Line),
            Some("ts") => Ok(Framing::Ts),
            Some(f) => Err(text(
                StatusCode::BAD_REQUEST,
                format!("unknown frame '{}': expected line or ts", f.escape_debug()),
            )),
        }
    }

    /// How many bytes of `data`, coming after `held` bytes of an unfinished unit, end
    /// whole units (0: none does).
    fn cut(self, held: usize, data: &[u8]) -> usize {
        match self {
            Framing::Frames => data.len(),
            Framing::Line => match data.iter().rposition(|b| *b == b'\n') {
                Some(nl) => nl + 1,
                None if held + data.len() >= LINE_MAX => data.len(),
                None => 0,
            },
            Framing::Ts => ((held + data.len()) / TS_PACKET * TS_PACKET).saturating_sub(held),
        }
    }
}

/// Cancels a write parked under `slow_reader=block` when the request goes away first.
struct Parked<'a>(&'a Stream, Option<u64>);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.1 {
            self.0.cancel_write(id);
        }
    }
}

/// Finishes the writer's unit (with `data` appended, when given) and waits for it to be
/// applied: at once, or once every reader has room under `slow_reader=block`.
async fn commit(stream: &Stream, writer: &Writer, data: Option<&[u8]>) -> Result<(), StreamError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = Box::new(move |r| {
        let _ = tx.send(r);
    });
    let id = match data {
        Some(d) => writer.submit(d, TAG, done),
        None => writer.finish(TAG, done),
    };
    let mut guard = Parked(stream, id);
    let r = rx.await.unwrap_or(Err(StreamError::Interrupted));
    guard.1 = None;
    r
}

fn length(req: &Request<ReqBody>) -> Result<Option<u64>, Response<Body>> {
    match req.headers().get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "invalid Content-Length")),
    }
}

/// Appends a request's body to the stream `name`, creating it if missing. A body with a
/// `Content-Length` is one atomic write (at most [`MAX_WRITE`], else `413`); a chunked one
/// is written as it arrives, cut by `framing`. The upload is one of the stream's writers
/// while it lasts. Returns the stream and the body's length.
pub async fn upload(
    req: Request<ReqBody>,
    ctx: &Ctx,
    name: &[u8],
    framing: Framing,
    remote: Peer,
) -> Result<(Arc<Stream>, u64), Response<Body>> {
    let len = length(&req)?;
    if let Some(n) = len.filter(|n| *n > MAX_WRITE) {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a body of {n} bytes is over the atomic write limit of {MAX_WRITE} bytes; \
                 send it chunked (without Content-Length) to stream it"
            ),
        ));
    }
    let (stream, created) = access::create(ctx, remote, name, |e| match e {
        // The namespace refuses new streams only once it is shut down.
        StreamError::Removed => text(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
        e => error_response(&e),
    })?;
    let writer = stream.open_writer();
    let result = write_body(&stream, &writer, req.into_body(), len, framing).await;
    drop(writer);
    match result {
        Ok(n) => {
            if created {
                log::info!("http: stream {} created", crate::escape::escape_bytes(name));
            }
            Ok((stream, n))
        }
        Err(r) => {
            // A refused upload leaves nothing behind: the stream it made goes again, unless
            // someone else began to use it meanwhile (or it was replaced).
            let st = stream.stats();
            let untouched = st.written_bytes == 0 && st.readers == 0 && st.writers == 0;
            if created && untouched {
                let _ = ctx.ns.remove_stream(name, &stream);
            }
            Err(r)
        }
    }
}

/// Writes the body through `writer` (see [`upload`]); returns its length.
async fn write_body(
    stream: &Arc<Stream>,
    writer: &Writer,
    mut body: ReqBody,
    len: Option<u64>,
    framing: Framing,
) -> Result<u64, Response<Body>> {
    let failed = |e: StreamError| error_response(&e);
    if let Some(n) = len {
        // One unit: nothing reaches readers until the whole body is in. Its bytes are
        // charged as they arrive, not reserved at its head: a client that announces a
        // length and then trickles would hold the memory (and shed other streams' history
        // for it) at no cost. A length that could never fit is refused before any byte.
        writer.admits(n).map_err(failed)?;
        let mut got = 0u64;
        loop {
            let Ok(frame) = tokio::time::timeout(BODY_STALL, body.frame()).await else {
                return Err(text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("no byte of the body for {} s", BODY_STALL.as_secs()),
                ));
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| body_error(&e))?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                writer.append(&data, TAG).map_err(failed)?;
            }
        }
        if got != n {
            writer.abandon();
            return Err(text(
                StatusCode::BAD_REQUEST,
                "the body is shorter than its Content-Length",
            ));
        }
        commit(stream, writer, None).await.map_err(failed)?;
        return Ok(n);
    }
    // A write is what has arrived by the time the body would wait (at most COALESCE): a
    // fast sender makes large writes, a live one (ffmpeg -re) one per piece it sends.
    // Whole units go to the writer's unit at once (charged to the memory pool, as every
    // byte the daemon holds); only an unfinished line or packet waits here, at most
    // LINE_MAX bytes.
    let mut held: Vec<u8> = Vec::new();
    let mut ended = false;
    let mut total = 0u64;
    let take = |data: bytes::Bytes, held: &mut Vec<u8>| -> Result<usize, StreamError> {
        let k = framing.cut(held.len(), &data);
        if k > 0 {
            if !held.is_empty() {
                writer.append(held, TAG)?;
                held.clear();
            }
            writer.append(&data[..k], TAG)?;
        }
        held.extend_from_slice(&data[k..]);
        Ok(data.len())
    };
    while !ended {
        let Some(frame) = body.frame().await else {
            break;
        };
        let mut unit = 0usize;
        if let Ok(data) = frame.map_err(|e| body_error(&e))?.into_data() {
            unit += take(data, &mut held).map_err(failed)?;
        }
        while unit < COALESCE {
            match now(&mut body).await {
                Some(Some(frame)) => {
                    if let Ok(data) = frame.map_err(|e| body_error(&e))?.into_data() {
                        unit += take(data, &mut held).map_err(failed)?;
                    }
                }
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        total += unit as u64;
        commit(stream, writer, None).await.map_err(failed)?;
    }
    if !held.is_empty() {
        commit(stream, writer, Some(&held)).await.map_err(failed)?;
    }
    Ok(total)
}

/// The body's next frame if it is here already: `Some(None)` at its end, `None` when it
/// would wait.
async fn now(
    body: &mut ReqBody,
) -> Option<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
    std::future::poll_fn(|cx| {
        use hyper::body::Body as _;
        match std::pin::Pin::new(&mut *body).poll_frame(cx) {
            std::task::Poll::Ready(f) => std::task::Poll::Ready(Some(f)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        }
    })
    .await
}

fn body_error(e: &hyper::Error) -> Response<Body> {
    text(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_cuts_whole_units() {
        for (f, held, data, want) in [
            (Framing::Frames, 0, &b"abc"[..], 3),
            (Framing::Line, 0, b"a\nb\nc", 4),
            (Framing::Line, 5, b"abc", 0),
            (Framing::Line, LINE_MAX - 2, b"abc", 3),
            (Framing::Ts, 0, &[0u8; 400][..], 376),
            (Framing::Ts, 100, &[0u8; 300][..], 276),
            (Framing::Ts, 0, &[0u8; 100][..], 0),
            (Framing::Ts, 187, &[0u8; 1][..], 1),
        ] {
            assert_eq!(f.cut(held, data), want, "{f:?} {held} {data:?}");
        }
    }
}
