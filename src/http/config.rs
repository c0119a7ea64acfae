//! The gateway's settings (`--http ADDR` and its other flags, `-o http=ADDR`, tokens, CORS, the
//! compatibility prefix), parsed and checked before anything is bound or mounted. Knows nothing
//! of sockets or the core.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::options::{OptionError, err};

/// Connections served at once; more are answered `503` and closed. Far above the 5,000
/// listeners the gateway is measured with, far below what a file descriptor limit allows.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// How long a live read waits, by default, to gather a small write with the next ones
/// before sending it: the kernel's cost is per send, so a 2 Mbit/s stream sent as 4 KiB
/// writes costs several times what it costs sent in tens of KiB.
pub const DEFAULT_COALESCE_MS: u64 = 60;

/// The longest `http_coalesce` taken: more would be a delay, not a batching.
pub const MAX_COALESCE_MS: u64 = 1000;

/// What `--http*` and `-o http*=` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Where to listen; `None`: no gateway.
    pub addr: Option<SocketAddr>,
    /// The token that allows every request (its file's first line).
    pub token_file: Option<PathBuf>,
    /// A token that allows reading only (GET, HEAD).
    pub read_token_file: Option<PathBuf>,
    /// `Access-Control-Allow-Origin` for browsers: an origin or `*`.
    pub cors: Option<String>,
    /// The prefix of the compatibility API's `path=` (`/streamfs` for clients of a server
    /// where the original plugin was mounted there); empty: streams are at `/NAME`.
    pub api_prefix: String,
    pub max_connections: usize,
    /// How long a live read (raw bytes, not SSE) holds a small read to send it with the
    /// writes that follow; 0: every write is sent at once.
    pub coalesce: std::time::Duration,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            addr: None,
            token_file: None,
            read_token_file: None,
            cors: None,
            api_prefix: String::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            coalesce: std::time::Duration::from_millis(DEFAULT_COALESCE_MS),
        }
    }
}

/// Parses a listen address: `PORT` or `:PORT` (loopback), `IP:PORT`, `[IPv6]:PORT` or
/// `HOST:PORT` (resolved now, the first address).
pub fn parse_addr(value: &str) -> Result<SocketAddr, OptionError> {
    let v = value.trim();
    let expected = "expected PORT, IP:PORT, [IPv6]:PORT or HOST:PORT";
    let port_only = v.strip_prefix(':').unwrap_or(v);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only
            .parse()
            .map_err(|_| err("http", value, "a port is at most 65535"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !v.contains(':') || v.starts_with('[') {
        return Err(err("http", value, expected));
    }
    match v.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| err("http", value, "the host has no address")),
        Err(e) => Err(err("http", value, format!("{expected} ({e})"))),
    }
}

/// Parses `http_api_prefix`: empty, or `/` and path segments, without a trailing `/`.
pub fn parse_api_prefix(value: &str) -> Result<String, OptionError> {
    let v = value.trim().trim_end_matches('/');
    if v.is_empty() {
        return Ok(String::new());
    }
    if !v.starts_with('/') || v.contains("//") || v.bytes().any(|b| b.is_ascii_control()) {
        return Err(err(
            "http_api_prefix",
            value,
            "expected a path such as /streamfs",
        ));
    }
    Ok(v.to_string())
}

/// Parses `http_cors`: `*` or an origin (`scheme://host[:port]`).
pub fn parse_cors(value: &str) -> Result<String, OptionError> {
    let v = value.trim();
    let ok = v == "*"
        || (v.contains("://")
            && !v.ends_with('/')
            && v.bytes().all(|b| b.is_ascii_graphic() && b != b','));
    if ok {
        Ok(v.to_string())
    } else {
        Err(err(
            "http_cors",
            value,
            "expected * or an origin such as https://example.org",
        ))
    }
}

impl HttpOptions {
    /// Applies one `-o` key of the gateway; `None` when the key is not one.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<Result<(), OptionError>> {
        let r = match key {
            "http" => parse_addr(value).map(|a| self.addr = Some(a)),
            "http_token" => non_empty(key, value).map(|p| self.token_file = Some(p)),
            "http_read_token" => non_empty(key, value).map(|p| self.read_token_file = Some(p)),
            "http_cors" => parse_cors(value).map(|c| self.cors = Some(c)),
            "http_api_prefix" => parse_api_prefix(value).map(|p| self.api_prefix = p),
            "http_max_connections" => match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => {
                    self.max_connections = n;
                    Ok(())
                }
                _ => Err(err(key, value, "expected a whole number above 0")),
            },
            "http_coalesce" => match value.trim().trim_end_matches("ms").parse::<u64>() {
                Ok(ms) if ms <= MAX_COALESCE_MS => {
                    self.coalesce = std::time::Duration::from_millis(ms);
                    Ok(())
                }
                _ => Err(err(
                    key,
                    value,
                    format!("expected milliseconds from 0 (off) to {MAX_COALESCE_MS}"),
                )),
            },
            _ => return None,
        };
        Some(r)
    }

    /// The keys [`HttpOptions::apply`] takes, all with a value.
    pub const KEYS: &'static [&'static str] = &[
        "http",
        "http_token",
        "http_read_token",
        "http_cors",
        "http_api_prefix",
        "http_max_connections",
        "http_coalesce",
    ];

    /// Options that mean nothing without an address, named for the error.
    pub fn check(&self) -> Result<(), String> {
        if self.addr.is_none() {
            let orphan = [
                ("http_token", self.token_file.is_some()),
                ("http_read_token", self.read_token_file.is_some()),
                ("http_cors", self.cors.is_some()),
                ("http_api_prefix", !self.api_prefix.is_empty()),
            ];
            if let Some((name, _)) = orphan.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} is set but no gateway is: add --http ADDR (or -o http=ADDR)"
                ));
            }
        }
        Ok(())
    }
}

fn non_empty(key: &str, value: &str) -> Result<PathBuf, OptionError> {
    if value.trim().is_empty() {
        Err(err(key, value, "expected a file name"))
    } else {
        Ok(PathBuf::from(value))
    }
}

/// Reads a token: the file's first line, trimmed; empty or unreadable is an error.
pub fn read_token(option: &str, path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("invalid {option} '{}': {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid {option} '{}': its first line must hold the token (visible ASCII, no spaces)",
            path.display()
        ));
    }
    Ok(token)
}

/// The gateway's command-line flags, the same as its -o options.
#[derive(clap::Args, Debug, Default)]
pub struct HttpArgs {
    // The help is an attribute: rustdoc would take "[IPv6]" in a doc comment for a link.
    #[arg(
        long,
        value_name = "ADDR",
        help = "Serve the streams over HTTP on ADDR (IP:PORT, [IPv6]:PORT, HOST:PORT, or \
                PORT alone for loopback); also -o http=ADDR"
    )]
    pub http: Option<String>,

    /// Require `Authorization: Bearer TOKEN` (the file's first line) on every request
    #[arg(long, value_name = "FILE")]
    pub http_token: Option<String>,

    /// A second token that allows reading only (GET, HEAD)
    #[arg(long, value_name = "FILE")]
    pub http_read_token: Option<String>,

    /// Let browser scripts of ORIGIN (or * for any) read the streams
    #[arg(long, value_name = "ORIGIN")]
    pub http_cors: Option<String>,

    /// The prefix of path= in the original server's API (/api/v1/...), e.g. /streamfs
    #[arg(long, value_name = "PATH")]
    pub http_api_prefix: Option<String>,
}

impl HttpArgs {
    /// Applies the flags over the -o options, naming the flag in an error.
    pub fn apply(&self, m: &mut crate::options::MountSettings) -> Result<(), String> {
        for (key, flag, v) in [
            ("http", "--http", &self.http),
            ("http_token", "--http-token", &self.http_token),
            (
                "http_read_token",
                "--http-read-token",
                &self.http_read_token,
            ),
            ("http_cors", "--http-cors", &self.http_cors),
            (
                "http_api_prefix",
                "--http-api-prefix",
                &self.http_api_prefix,
            ),
        ] {
            if let Some(v) = v
                && let Some(Err(e)) = m.http.apply(key, v)
            {
                return Err(format!(
                    "invalid {flag} '{}': {}",
                    e.value.escape_debug(),
                    e.reason
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let loopback = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        for (input, want) in [
            ("8080", loopback(8080)),
            (":8080", loopback(8080)),
            ("127.0.0.1:0", loopback(0)),
            ("0.0.0.0:80", "0.0.0.0:80".parse().unwrap()),
            ("[::1]:9000", "[::1]:9000".parse().unwrap()),
        ] {
            assert_eq!(parse_addr(input).unwrap(), want, "{input}");
        }
        for bad in [
            "",
            "70000",
            "1.2.3.4",
            "[::1]",
            "host",
            "1.2.3.4:99999",
            "a b:1",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert_eq!((e.option.as_str(), e.value.as_str()), ("http", bad));
        }
    }

    #[test]
    fn prefixes_and_origins() {
        assert_eq!(parse_api_prefix("/streamfs/").unwrap(), "/streamfs");
        assert_eq!(parse_api_prefix("").unwrap(), "");
        assert!(parse_api_prefix("streamfs").is_err());
        assert_eq!(parse_cors("*").unwrap(), "*");
        assert!(parse_cors("https://a.example:8443").is_ok());
        assert!(parse_cors("a.example").is_err());
    }

    #[test]
    fn options_need_an_address() {
        let mut h = HttpOptions::default();
        h.apply("http_cors", "*").unwrap().unwrap();
        assert!(h.check().unwrap_err().contains("http_cors"));
        h.apply("http", "9000").unwrap().unwrap();
        assert!(h.check().is_ok());
        assert!(h.apply("http_max_connections", "0").unwrap().is_err());
        h.apply("http_coalesce", "0").unwrap().unwrap();
        assert!(h.coalesce.is_zero());
        h.apply("http_coalesce", "25ms").unwrap().unwrap();
        assert_eq!(h.coalesce.as_millis(), 25);
        for bad in ["", "-1", "1001", "fast"] {
            let e = h.apply("http_coalesce", bad).unwrap().unwrap_err();
            assert_eq!(
                (e.option.as_str(), e.value.as_str()),
                ("http_coalesce", bad)
            );
        }
        assert!(h.apply("ring_buffer_size", "1").is_none());
    }
}
