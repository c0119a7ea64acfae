//! The gateway's server: the listener bound before mounting, the runtime started inside the
//! daemon, the accept loop and its limits (connections, header timeout, keepalive), bearer
//! tokens, CORS and the routing of requests to `streams.rs`, `agfs.rs` and `observe.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{error, info, warn};

use super::access::{Op, Peer};
use super::body::{Body, ReqBody};
use super::config::read_token;
use super::observe::{self, HttpStats};
use crate::namespace::Namespace;
use crate::options::MountSettings;

/// How long a client may take to send a request's headers (a slowloris is cut after it).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head; a larger one is answered `431`.
pub const MAX_HEAD: usize = 32 << 10;

/// Runtime worker threads, and sender threads.
const THREADS: usize = 2;

/// The headers a browser script may read from a cross-origin response.
const EXPOSED: &str = "Stream-Offset, Stream-Next-Offset, Stream-Ring-Start, Stream-Readers, \
    Stream-Writers, Content-Type";

/// Why the gateway cannot start: a bad option (exit 2) or a failure to bind (exit 1).
#[derive(Debug)]
pub enum BindError {
    Usage(String),
    Failed(String),
}

/// The tokens a request may carry.
#[derive(Clone, Default)]
pub struct Auth {
    /// Allows every request.
    pub full: Option<String>,
    /// Allows GET and HEAD only.
    pub read: Option<String>,
}

impl Auth {
    fn required(&self) -> bool {
        self.full.is_some() || self.read.is_some()
    }
}

/// What the handlers share: the namespace, the gateway's counters and its settings.
pub struct Ctx {
    pub ns: Arc<Namespace>,
    pub stats: Arc<HttpStats>,
    pub auth: Auth,
    pub cors: Option<String>,
    /// The compatibility API's path prefix (`/streamfs`), or empty.
    pub api_prefix: String,
    pub mount: MountSettings,
    /// The threads that send plain live bodies.
    pub senders: super::send::Senders,
}

/// A gateway bound to its address and holding its tokens, not serving yet: made before the
/// daemon mounts or forks, so that a port in use or an unreadable token file is reported
/// before anything happens.
pub struct Gateway {
    listener: TcpListener,
    auth: Auth,
    mount: MountSettings,
}

impl Gateway {
    /// Binds the gateway of `mount.http`, or `None` when none is asked for.
    pub fn bind(mount: &MountSettings) -> Result<Option<Gateway>, BindError> {
        let h = &mount.http;
        h.check().map_err(BindError::Usage)?;
        let Some(addr) = h.addr else {
            return Ok(None);
        };
        let token = |opt: &str, f: &Option<std::path::PathBuf>| {
            f.as_deref()
                .map(|p| read_token(opt, p))
                .transpose()
                .map_err(BindError::Usage)
        };
        let auth = Auth {
            full: token("http_token", &h.token_file)?,
            read: token("http_read_token", &h.read_token_file)?,
        };
        let listener = TcpListener::bind(addr)
            .map_err(|e| BindError::Failed(format!("cannot listen on {addr} (--http): {e}")))?;
        Ok(Some(Gateway {
            listener,
            auth,
            mount: mount.clone(),
        }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `ns` on a runtime of its own threads; call it after any fork.
    pub fn start(self, ns: Arc<Namespace>) -> std::io::Result<Arc<HttpStats>> {
        raise_fd_limit();
        let addr = self.listener.local_addr()?;
        self.listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("http")
            .enable_io()
            .enable_time()
            .build()?;
        let senders = super::send::Senders::start(
            THREADS,
            self.mount.http.coalesce,
            runtime.handle().clone(),
        )?;
        let stats = Arc::new(HttpStats::default());
        let ctx = Arc::new(Ctx {
            ns,
            stats: stats.clone(),
            auth: self.auth,
            cors: self.mount.http.cors.clone(),
            api_prefix: self.mount.http.api_prefix.clone(),
            mount: self.mount,
            senders,
        });
        let loopback = addr.ip().is_loopback();
        if !loopback && !ctx.auth.required() {
            warn!(
                "http: {addr} is not a loopback address, and no --http-token is set: a client \
                 on another host that reaches it can read, write and remove every stream"
            );
        }
        let std_listener = self.listener;
        crate::panics::spawn_essential("http-accept", move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => accept_loop(l, ctx).await,
                    Err(e) => error!("http: {e}"),
                }
            })
        })?;
        info!("http: listening on {addr}");
        Ok(stats)
    }
}

/// Raises the soft limit of open files to the hard one: each HTTP client is a socket.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the local struct only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) {
    let max = ctx.mount.http.max_connections as u64;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: wait a little rather than spin.
                crate::ratelimit::OPENS.log(|| format!("http: accept: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
        if ctx.stats.connections.load(Ordering::Relaxed) >= max {
            tokio::spawn(refuse(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        // A client whose host vanished without a FIN is found by keepalive probes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
        let open = Open(ctx.stats.clone());
        tokio::spawn(super::lean::serve(stream, ctx.clone(), remote, open));
    }
}

/// Serves the rest of a connection with hyper: every request but the live `GET`s
/// `lean.rs` answers; `timeout` bounds the time to the end of the first head.
pub async fn serve_hyper(io: super::lean::Replay, ctx: Arc<Ctx>, remote: Peer, timeout: Duration) {
    let service = {
        let ctx = ctx.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let ctx = ctx.clone();
            async move {
                let answer = handle(req.map(ReqBody::Hyper), &ctx, remote);
                Ok::<_, Infallible>(answer.response().await)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        // A client may shut down its side once its request is sent (`nc -N`, `socat`):
        // the request is still answered, not dropped at the end of file.
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        log::debug!("http: {remote}: {e}");
    }
}

/// Counts a connection as open until dropped, however its task ends.
pub struct Open(Arc<HttpStats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over the limit with `503` and closes it.
async fn refuse(stream: tokio::net::TcpStream) {
    let msg = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
        Content-Length: 21\r\n\r\ntoo many connections\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            stream.writable().await?;
            match stream.try_write(msg) {
                Ok(_) => return Ok::<_, std::io::Error>(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
}

/// A plain-text answer.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    let mut r = Response::new(Body::text(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `405` naming the methods the path takes.
pub fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; this path takes {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A fixed body of the given type.
pub fn typed(content_type: &'static str, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::text(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What a request gets: its response at once, or, for an upload (which reads its body as
/// it comes), a future of it. Every other request is answered without waiting, so a
/// connection's future need not have room for an upload's state: the future of a request
/// on the lean path was 3.9 kB, now 0.8 kB, and a connection waiting for the rest of its
/// head costs the daemon 4 kB of RSS, not 7 kB.
pub enum Answer<'a> {
    Now(Response<Body>),
    Later(Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>),
}

impl<'a> Answer<'a> {
    pub fn later(f: impl Future<Output = Response<Body>> + Send + 'a) -> Self {
        Answer::Later(Box::pin(f))
    }

    /// The same answer with `f` applied to its response, whenever that comes.
    pub fn map(self, f: impl FnOnce(Response<Body>) -> Response<Body> + Send + 'a) -> Self {
        match self {
            Answer::Now(r) => Answer::Now(f(r)),
            Answer::Later(fut) => Answer::later(async move { f(fut.await) }),
        }
    }

    pub async fn response(self) -> Response<Body> {
        match self {
            Answer::Now(r) => r,
            Answer::Later(fut) => fut.await,
        }
    }
}

impl From<Response<Body>> for Answer<'_> {
    fn from(r: Response<Body>) -> Self {
        Answer::Now(r)
    }
}

pub fn handle<'a>(req: Request<ReqBody>, ctx: &'a Ctx, remote: Peer) -> Answer<'a> {
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let answer = route(req, ctx, remote);
    match (&ctx.cors, origin) {
        (Some(allowed), Some(origin)) => answer.map(move |resp| cors(resp, allowed, origin)),
        _ => answer,
    }
}

/// `resp` with the CORS headers the client's `origin` gets when `allowed` may use the API.
fn cors(mut resp: Response<Body>, allowed: &str, origin: HeaderValue) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    // Another origin gets no grant at all: not `null`, which is what sandboxed frames,
    // `data:` and `file:` pages send, and which a browser would then let through.
    let value = if allowed == "*" {
        Some(HeaderValue::from_static("*"))
    } else {
        (origin.as_bytes() == allowed.as_bytes()).then_some(origin)
    };
    if let Some(value) = value {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
    resp
}

/// Whether the request carries a token that allows it: `Authorization: Bearer TOKEN`, or
/// `?access_token=TOKEN` (RFC 6750) for what a browser opens itself (the status page).
fn authorize(req: &Request<ReqBody>, auth: &Auth) -> Result<(), Response<Body>> {
    if !auth.required() {
        return Ok(());
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    let query = super::url::Query::parse(req.uri().query());
    let given = bearer.or_else(|| query.get("access_token").map(str::to_string));
    let matches = |t: &Option<String>| match (t, &given) {
        (Some(t), Some(g)) => same(t.as_bytes(), g.as_bytes()),
        _ => false,
    };
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    if matches(&auth.full) || (reading && matches(&auth.read)) {
        return Ok(());
    }
    if matches(&auth.read) {
        return Err(text(
            StatusCode::FORBIDDEN,
            "the read token allows GET and HEAD only",
        ));
    }
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        if given.is_some() {
            "wrong token"
        } else {
            "a token is needed: Authorization: Bearer TOKEN"
        },
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"streamfs\""),
    );
    Err(r)
}

/// The token of an `Authorization` value of the Bearer scheme, whose name is
/// case-insensitive (RFC 9110 11.1): `None` for another scheme or no token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without stopping at the first difference, so timing tells nothing of a token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The answer to a CORS preflight (or a plain OPTIONS).
fn preflight(ctx: &Ctx) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    let methods = HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS");
    h.insert(header::ALLOW, methods.clone());
    if ctx.cors.is_some() {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    r
}

/// Whether a request that takes no body came with one.
fn has_body(req: &Request<ReqBody>) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn route<'a>(req: Request<ReqBody>, ctx: &'a Ctx, remote: Peer) -> Answer<'a> {
    if req.method() == Method::OPTIONS {
        return preflight(ctx).into();
    }
    if let Err(r) = authorize(&req, &ctx.auth) {
        return r.into();
    }
    if let Err(r) = super::access::check(ctx, remote, Op::List) {
        return r.into();
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::DELETE) && has_body(&req) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("a {} request takes no body", req.method()),
        )
        .into();
    }
    let path = req.uri().path().to_string();
    // A stream's figures and readers are for those who may read it, as its xattrs are on
    // the mount; the listing leaves out the others.
    let readable = super::access::reader_of(ctx, remote);
    let get_only = |req: &Request<ReqBody>, f: &dyn Fn() -> Response<Body>| {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            f()
        } else {
            not_allowed("GET, HEAD")
        }
    };
    let resp = match path.as_str() {
        "/" => get_only(&req, &|| typed("text/html; charset=utf-8", observe::page())),
        "/metrics" => get_only(&req, &|| {
            typed(
                observe::METRICS_CONTENT_TYPE,
                observe::metrics(&ctx.ns, &ctx.stats, &readable),
            )
        }),
        "/streams" | "/streams/" => get_only(&req, &|| {
            typed(
                "application/json",
                observe::streams_json(&ctx.ns, &readable),
            )
        }),
        p if p.starts_with("/streams/") => {
            let rest = &p["/streams/".len()..];
            let (name, sub) = match rest.split_once('/') {
                Some((n, s)) => (n, Some(s)),
                None => (rest, None),
            };
            let Some(name) = super::url::decode(name, false) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "malformed %-escape in the stream name",
                )
                .into();
            };
            match sub {
                None => return super::streams::stream(req, ctx, name, remote),
                Some("readers") => get_only(&req, &|| match ctx.ns.lookup(&name) {
                    Some(s) => match super::access::check(ctx, remote, Op::Read(&s.meta())) {
                        Ok(()) => typed("application/json", observe::readers_json(&name, &s)),
                        Err(refused) => refused,
                    },
                    None => super::streams::no_stream(&name),
                }),
                Some(_) => text(StatusCode::NOT_FOUND, "no such path"),
            }
        }
        p if p.starts_with("/api/v1/") => return super::agfs::route(req, ctx, remote),
        _ => text(StatusCode::NOT_FOUND, "no such path"),
    };
    resp.into()
}
