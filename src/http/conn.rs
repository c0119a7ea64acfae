//! A live body's connection on a sender thread (`send.rs`): how a write is framed (a chunk,
//! its CRLF, the last chunk), written until the socket is full and resumed from where it
//! stopped, and what the connection does once it is out.

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use super::body::COALESCE_TARGET;
use super::send::{MAX_PIPELINED, PIECES, Rest};
use crate::stream::{Bytes, Reader};

/// A connection in its live body.
pub(super) struct Conn {
    pub(super) rest: Rest,
    pub(super) reader: Reader,
    pub(super) chunked: bool,
    pub(super) keep: bool,
    /// The read parked in the core (its id; 0: none), until its answer is taken.
    pub(super) parked: u64,
    /// Waiting out a hold before the next read.
    pub(super) holding: bool,
    /// A write the socket has not taken all of: its pieces (none but while one is under
    /// way, so that a listener that keeps up holds no buffer), its length (the chunk's
    /// size), its tail, the bytes of it that are out, and what comes after it.
    pub(super) out: Box<[Bytes]>,
    pub(super) len: u32,
    pub(super) tail: Tail,
    pub(super) done: u32,
    pub(super) after: Option<After>,
}

/// What ends a write: a chunk's CRLF, and the last chunk when the body ends.
#[derive(Clone, Copy)]
pub(super) enum Tail {
    None,
    Crlf,
    CrlfLast,
    Last,
}

impl Tail {
    fn bytes(self) -> &'static [u8] {
        match self {
            Tail::None => b"",
            Tail::Crlf => b"\r\n",
            Tail::CrlfLast => b"\r\n0\r\n\r\n",
            Tail::Last => b"0\r\n\r\n",
        }
    }
}

/// What a connection does next.
pub(super) enum Next {
    /// Wait for the socket (`EPOLLOUT`) or the core (a parked read).
    Wait,
    /// Hold the next read for `coalesce`.
    Hold,
    /// Take what is queued now.
    Read,
    /// Park a read in the core.
    Park,
    Close,
    HandBack,
}

/// What follows a write once all of it is out.
#[derive(Clone, Copy)]
pub(super) enum After {
    /// More is queued: take it.
    More,
    /// The queue is empty; the write was this long.
    Drained(u32),
    /// That was the body's end.
    End,
}

impl Conn {
    /// Frames a write of `len` bytes: one chunk (and the last chunk when it ends the body),
    /// or the bare bytes of an HTTP/1.0 body.
    pub(super) fn frame(&mut self, len: usize, end: bool) {
        self.done = 0;
        self.len = len as u32;
        self.tail = match (self.chunked, len > 0, end) {
            (false, ..) => Tail::None,
            (true, true, false) => Tail::Crlf,
            (true, true, true) => Tail::CrlfLast,
            (true, false, true) => Tail::Last,
            (true, false, false) => Tail::None,
        };
    }

    /// What follows a write that is all out.
    pub(super) fn then(&mut self, after: After, coalesce: Duration) -> Next {
        match after {
            After::More => Next::Read,
            After::End if self.keep => Next::HandBack,
            After::End => Next::Close,
            After::Drained(len)
                if len > 0 && (len as usize) < COALESCE_TARGET && !coalesce.is_zero() =>
            {
                self.holding = true;
                Next::Hold
            }
            After::Drained(_) => Next::Park,
        }
    }

    /// Writes the framed `pieces` until the socket is full: whether all of it is out.
    pub(super) fn write(&mut self, pieces: &[Bytes]) -> io::Result<bool> {
        let tail = self.tail.bytes();
        let mut head = [0u8; 18];
        let head_len = if self.chunked && self.len > 0 {
            super::lean::chunk_size(&mut head, self.len as usize)
        } else {
            0
        };
        debug_assert_eq!(
            pieces.iter().map(|b| b.len()).sum::<usize>(),
            self.len as usize
        );
        let total = head_len + self.len as usize + tail.len();
        while (self.done as usize) < total {
            let mut parts = [IoSlice::new(&[]); PIECES + 3];
            parts[0] = IoSlice::new(&head[..head_len]);
            let mut n = 1;
            for b in pieces {
                parts[n] = IoSlice::new(b);
                n += 1;
            }
            parts[n] = IoSlice::new(tail);
            let mut rest = &mut parts[..n + 1];
            IoSlice::advance_slices(&mut rest, self.done as usize);
            match (&self.rest.socket).write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.done += n as u32,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads what the client sent (kept for after the body); an error once it closed or
    /// sent too much.
    pub(super) fn take_input(&mut self) -> io::Result<()> {
        let mut scratch = [0u8; 512];
        loop {
            if self.rest.pipelined.len() >= MAX_PIPELINED {
                return Err(io::ErrorKind::OutOfMemory.into());
            }
            match (&self.rest.socket).read(&mut scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.rest.pipelined.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
