//! A raw HTTP client connection for the gateway's tests: it writes requests as given and
//! reads answers off the socket (heads, chunks, the close), so that a live body, which
//! never ends, can be read as far as a test needs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A raw client connection that reads HTTP answers off the socket.
pub struct Client {
    pub s: TcpStream,
    /// Bytes read and not taken yet.
    pub buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).unwrap();
    }

    /// Reads until `buf` holds `n` bytes; panics on EOF or after the read timeout.
    pub fn fill(&mut self, n: usize) {
        let mut chunk = [0u8; 64 << 10];
        while self.buf.len() < n {
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// Takes bytes up to and including `delim`.
    pub fn until(&mut self, delim: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return self.buf.drain(..i + delim.len()).collect();
            }
            let want = self.buf.len() + 1;
            self.fill(want);
        }
    }

    /// The next answer's head, lower-cased.
    pub fn head(&mut self) -> String {
        String::from_utf8(self.until(b"\r\n\r\n"))
            .unwrap()
            .to_ascii_lowercase()
    }

    /// The next chunk of a chunked body (empty: the last chunk, whose CRLF is taken too).
    pub fn chunk(&mut self) -> Vec<u8> {
        let line = self.until(b"\r\n");
        let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap();
        let size = usize::from_str_radix(size, 16).unwrap_or_else(|_| panic!("size {size:?}"));
        self.fill(size + 2);
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(
            self.buf.drain(..2).collect::<Vec<_>>(),
            b"\r\n",
            "chunk end"
        );
        data
    }

    /// Chunks until `n` body bytes came.
    pub fn body(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let c = self.chunk();
            assert!(
                !c.is_empty(),
                "the body ended after {} of {n} bytes",
                out.len()
            );
            out.extend_from_slice(&c);
        }
        out
    }

    /// Whether the server closes the connection within `limit` (bytes before it are kept).
    pub fn closes_within(&mut self, limit: Duration) -> bool {
        self.s.set_read_timeout(Some(limit)).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
