//! HTTP load client of `scripts/bench`'s `http` scenario, built with `cargo build --release
//! --example httpload`; not meant to be run by hand.
//!
//! One thread, one epoll set, N connections to one URL, each counting the body bytes it
//! received (chunked bodies are decoded, so framing is not counted). Measuring with one
//! process instead of N keeps the client's own cost small and steady, so that what the bench
//! reports is the server's.
//!
//! ```text
//! httpload listen URL N WARMUP_S MEASURE_S [WINDOW]
//!                                            N listeners, WINDOW handshakes at a time
//!                                            (default 256); prints `connected`, then
//!                                            `mark` lines, then `result` (see below)
//! httpload drain URL                         one listener, read to the body's end; prints
//!                                            `result bytes=B secs=S`
//! ```
//!
//! `listen` connects N clients (at most WINDOW handshakes at a time, so that no listen
//! backlog overflows), waits until every one has its response headers, prints `connected ok=K
//! failed=F`, reads for WARMUP_S seconds, prints `mark start`, reads for MEASURE_S seconds,
//! prints `mark end` and then one line `result key=value ...`: the bytes each connection got
//! between the marks (min, p50, max), their sum, how many connections ended early, the
//! window's length in seconds. The caller samples the server between the marks.

use std::collections::VecDeque;
use std::io::{Write, stdout};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::process::exit;
use std::time::{Duration, Instant};

/// Where a response stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Non-blocking connect in progress.
    Connecting,
    /// Request partly sent.
    Sending(usize),
    /// Reading the status line and headers.
    Head,
    /// Reading the body.
    Body,
    /// Closed: by the server, by an error, or at the end of a chunked body.
    Done,
}

/// Chunked transfer decoding: only the sizes are parsed, data is counted and skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Not chunked: the body runs to the connection's end.
    Off,
    /// Reading a size line (hex digits, then maybe extensions, then CRLF).
    Size {
        size: u64,
        digits: bool,
        ext: bool,
    },
    /// `left` data bytes, then CRLF.
    Data {
        left: u64,
    },
    /// The CRLF after data: bytes of it still to skip.
    DataEnd {
        left: u8,
    },
    /// After the last chunk: trailers until an empty line.
    Trailer {
        line_len: usize,
    },
    Finished,
}

struct Conn {
    fd: RawFd,
    phase: Phase,
    head: Vec<u8>,
    chunked: Chunked,
    /// Body bytes received (after decoding).
    body: u64,
    /// `body` at the start mark.
    mark: u64,
    status: u16,
}

fn die(msg: &str) -> ! {
    eprintln!("httpload: {msg}");
    exit(2)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Raises the soft limit on open files to the hard one (and the hard one too, when allowed),
/// so that N sockets fit.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_max < want {
        lim.rlim_max = want;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// `http://HOST:PORT/PATH` into the address and the request to send.
fn parse_url(url: &str) -> (SocketAddr, Vec<u8>) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| die(&format!("URL '{url}': expected http://HOST:PORT/PATH")));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| die(&format!("URL '{url}': cannot resolve '{host}'")));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: httpload\r\nAccept: */*\r\n\r\n"
    );
    (addr, req.into_bytes())
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A non-blocking socket with a connect under way, registered in `ep` under `token`.
fn start_connect(ep: RawFd, addr: &SocketAddr, token: u64) -> Option<RawFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        eprintln!("httpload: socket: {}", std::io::Error::last_os_error());
        return None;
    }
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss holds a valid address of length len.
    let rc = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 && errno() != libc::EINPROGRESS {
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        return None;
    }
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    // SAFETY: ep and fd are open descriptors; ev is valid.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    Some(fd)
}

/// Counts body bytes of `data` (after the headers), decoding chunked framing.
fn count_body(c: &mut Conn, mut data: &[u8]) {
    if c.chunked == Chunked::Off {
        c.body += data.len() as u64;
        return;
    }
    while !data.is_empty() {
        match c.chunked {
            Chunked::Off | Chunked::Finished => return,
            Chunked::Data { left } => {
                let n = (left as usize).min(data.len());
                c.body += n as u64;
                data = &data[n..];
                c.chunked = if left as usize == n {
                    Chunked::DataEnd { left: 2 }
                } else {
                    Chunked::Data {
                        left: left - n as u64,
                    }
                };
            }
            Chunked::DataEnd { left } => {
                data = &data[1..];
                c.chunked = if left == 1 {
                    Chunked::Size {
                        size: 0,
                        digits: false,
                        ext: false,
                    }
                } else {
                    Chunked::DataEnd { left: left - 1 }
                };
            }
            Chunked::Size { size, digits, ext } => {
                let b = data[0];
                data = &data[1..];
                c.chunked = match b {
                    b'\n' if digits && size == 0 => Chunked::Trailer { line_len: 0 },
                    b'\n' => Chunked::Data { left: size },
                    b'\r' => c.chunked,
                    _ if ext => c.chunked,
                    b';' | b' ' => Chunked::Size {
                        size,
                        digits,
                        ext: true,
                    },
                    _ => match (b as char).to_digit(16) {
                        Some(d) => Chunked::Size {
                            size: size.saturating_mul(16) + u64::from(d),
                            digits: true,
                            ext,
                        },
                        None => die("bad chunk size in the response"),
                    },
                };
            }
            Chunked::Trailer { line_len } => {
                let b = data[0];
                data = &data[1..];
                c.chunked = match b {
                    b'\n' if line_len == 0 => Chunked::Finished,
                    b'\n' => Chunked::Trailer { line_len: 0 },
                    b'\r' => c.chunked,
                    _ => Chunked::Trailer {
                        line_len: line_len + 1,
                    },
                };
            }
        }
    }
}

/// Parses the response head once it is complete; returns the body bytes that followed it.
fn parse_head(c: &mut Conn) -> Option<Vec<u8>> {
    let end = c.head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&c.head[..end]).to_ascii_lowercase();
    c.status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        c.chunked = Chunked::Size {
            size: 0,
            digits: false,
            ext: false,
        };
    }
    let rest = c.head[end + 4..].to_vec();
    c.head = Vec::new();
    Some(rest)
}

fn close_conn(c: &mut Conn) {
    if c.phase != Phase::Done {
        // SAFETY: fd is ours and still open (phase is not Done).
        unsafe { libc::close(c.fd) };
        c.phase = Phase::Done;
    }
}

/// Drives one connection after an event.
fn on_event(ep: RawFd, token: u64, c: &mut Conn, req: &[u8], buf: &mut [u8]) {
    if c.phase == Phase::Connecting {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err and len are valid for getsockopt's SO_ERROR.
        unsafe {
            libc::getsockopt(
                c.fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if err != 0 {
            close_conn(c);
            return;
        }
        c.phase = Phase::Sending(0);
    }
    if let Phase::Sending(sent) = c.phase {
        // SAFETY: the range is within req.
        let n = unsafe {
            libc::send(
                c.fd,
                req[sent..].as_ptr().cast(),
                req.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            if errno() != libc::EAGAIN {
                close_conn(c);
            }
            return;
        }
        c.phase = if sent + n as usize == req.len() {
            // Sent: from now on only readability matters (a level-triggered EPOLLOUT would
            // fire on every wait).
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                u64: token,
            };
            // SAFETY: ep and fd are open descriptors; ev is valid.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.fd, &mut ev) };
            Phase::Head
        } else {
            Phase::Sending(sent + n as usize)
        };
    }
    loop {
        if matches!(c.phase, Phase::Done | Phase::Sending(_)) {
            return;
        }
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(c.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == 0 {
            close_conn(c);
            return;
        }
        if n < 0 {
            if errno() != libc::EAGAIN {
                close_conn(c);
            }
            return;
        }
        let data = &buf[..n as usize];
        if c.phase == Phase::Head {
            c.head.extend_from_slice(data);
            if let Some(rest) = parse_head(c) {
                c.phase = Phase::Body;
                count_body(c, &rest);
            } else if c.head.len() > 64 << 10 {
                close_conn(c);
            }
        } else {
            count_body(c, data);
        }
        if c.chunked == Chunked::Finished {
            close_conn(c);
        }
        if (n as usize) < buf.len() {
            return;
        }
    }
}

struct Load {
    ep: RawFd,
    addr: SocketAddr,
    req: Vec<u8>,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    events: Vec<libc::epoll_event>,
}

impl Load {
    fn new(url: &str, n: usize, buf: usize) -> Load {
        raise_nofile(n as u64 + 64);
        let (addr, req) = parse_url(url);
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            die("epoll_create1 failed");
        }
        Load {
            ep,
            addr,
            req,
            conns: Vec::with_capacity(n),
            buf: vec![0u8; buf],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        }
    }

    /// Waits up to `timeout` for events and handles them.
    fn poll(&mut self, timeout: Duration) {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: events is writable for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.ep,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        for i in 0..n.max(0) as usize {
            let token = self.events[i].u64 as usize;
            let c = &mut self.conns[token];
            on_event(self.ep, token as u64, c, &self.req, &mut self.buf);
        }
    }

    /// Opens `n` connections, at most `window` handshakes at a time, and waits for every
    /// response head (or failure) up to `limit`.
    fn connect_all(&mut self, n: usize, window: usize, limit: Duration) -> (usize, usize) {
        let end = Instant::now() + limit;
        let mut pending: VecDeque<usize> = VecDeque::new();
        while (self.conns.len() < n || !pending.is_empty()) && Instant::now() < end {
            while self.conns.len() < n && pending.len() < window {
                let token = self.conns.len();
                let fd = start_connect(self.ep, &self.addr, token as u64);
                self.conns.push(Conn {
                    fd: fd.unwrap_or(-1),
                    phase: if fd.is_some() {
                        Phase::Connecting
                    } else {
                        Phase::Done
                    },
                    head: Vec::new(),
                    chunked: Chunked::Off,
                    body: 0,
                    mark: 0,
                    status: 0,
                });
                pending.push_back(token);
            }
            self.poll(Duration::from_millis(10));
            pending.retain(|&t| {
                matches!(
                    self.conns[t].phase,
                    Phase::Connecting | Phase::Sending(_) | Phase::Head
                )
            });
        }
        let ok = self
            .conns
            .iter()
            .filter(|c| c.phase == Phase::Body && c.status == 200)
            .count();
        (ok, self.conns.len() - ok)
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end {
                return;
            }
            self.poll(end - now);
        }
    }
}

fn listen(url: &str, n: usize, warmup: f64, measure: f64, window: usize) {
    // 64 KiB reads: a listener of a 2 Mbit/s stream never has more queued.
    let mut load = Load::new(url, n, 64 << 10);
    let (ok, failed) = load.connect_all(n, window.max(1), Duration::from_secs(300));
    println!("connected ok={ok} failed={failed}");
    let _ = stdout().flush();
    load.run_for(Duration::from_secs_f64(warmup));
    let live: Vec<bool> = load.conns.iter().map(|c| c.phase == Phase::Body).collect();
    for c in &mut load.conns {
        c.mark = c.body;
    }
    let t0 = Instant::now();
    println!("mark start");
    let _ = stdout().flush();
    load.run_for(Duration::from_secs_f64(measure));
    let secs = t0.elapsed().as_secs_f64();
    println!("mark end");
    let _ = stdout().flush();
    let mut got: Vec<u64> = load
        .conns
        .iter()
        .zip(&live)
        .filter(|(_, l)| **l)
        .map(|(c, _)| c.body - c.mark)
        .collect();
    let ended = load
        .conns
        .iter()
        .zip(&live)
        .filter(|(c, l)| **l && c.phase == Phase::Done)
        .count();
    got.sort_unstable();
    let pick = |q: f64| {
        got.get(((got.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "result listeners={} min={} p50={} max={} sum={} ended={ended} secs={secs:.3}",
        got.len(),
        pick(0.0),
        pick(0.5),
        pick(1.0),
        got.iter().sum::<u64>()
    );
    let _ = stdout().flush();
}

fn drain(url: &str) {
    // 1 MiB reads, as `dd bs=1M` reads the mount in the same scenario.
    let mut load = Load::new(url, 1, 1 << 20);
    let t0 = Instant::now();
    let (ok, _) = load.connect_all(1, 1, Duration::from_secs(30));
    if ok != 1 {
        die("the request failed");
    }
    while load.conns[0].phase != Phase::Done {
        load.poll(Duration::from_secs(1));
    }
    println!(
        "result bytes={} secs={:.6}",
        load.conns[0].body,
        t0.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &str| -> f64 {
        s.parse()
            .unwrap_or_else(|_| die(&format!("'{s}' is not a number")))
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["listen", url, n, warmup, measure] => {
            listen(url, num(n) as usize, num(warmup), num(measure), 256)
        }
        ["listen", url, n, warmup, measure, window] => listen(
            url,
            num(n) as usize,
            num(warmup),
            num(measure),
            num(window) as usize,
        ),
        ["drain", url] => drain(url),
        _ => die("usage: httpload listen URL N WARMUP_S MEASURE_S | httpload drain URL"),
    }
}
