//! Writes as JetStream messages: the id each message carries, and the reassembly of writes
//! split into parts, from messages in stream-sequence order. Knows nothing of connections
//! or the core.
//!
//! Every message carries `Nats-Msg-Id: K:W:I:N`: K the publishing host's key for the stream
//! (one publisher per stream per host, so K's writes never interleave with each other), W
//! the write's number under K, I the part's index and N the number of parts. The id also
//! makes the server drop a part published twice by a retry (its duplicate window). Parts of
//! different hosts' writes may interleave in the stream; a write takes its place in the
//! order at its last part, on every host alike, and reaches readers only whole.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

/// The id of part `index` of `parts` of write `write` under key `key`.
pub fn message_id(key: &str, write: u64, index: u32, parts: u32) -> String {
    format!("{key}:{write}:{index}:{parts}")
}

/// What a message id says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartId {
    pub key: String,
    pub write: u64,
    pub index: u32,
    pub parts: u32,
}

/// Reads a message id; `None` for one not made by [`message_id`].
pub fn parse_id(id: &str) -> Option<PartId> {
    let mut it = id.rsplitn(4, ':');
    let parts: u32 = it.next()?.parse().ok()?;
    let index: u32 = it.next()?.parse().ok()?;
    let write: u64 = it.next()?.parse().ok()?;
    let key = it.next()?.to_string();
    (parts > 0 && index < parts).then_some(PartId {
        key,
        write,
        index,
        parts,
    })
}

/// What reassembly yields, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole write: its parts' payloads, in order.
    Write(Vec<Bytes>),
    /// Writes this host lost (messages its feed never received, or a write missing a
    /// part), and the bytes of them it knows of.
    Lost { writes: u64, bytes: u64 },
}

struct Open {
    write: u64,
    got: Vec<Option<Bytes>>,
    have: usize,
    /// Begun by a tail whose head came before this host joined: not a loss when it never
    /// completes (as a late joiner skips a ring's partial head).
    uncounted: bool,
}

impl Open {
    fn bytes(&self) -> u64 {
        self.got.iter().flatten().map(|b| b.len() as u64).sum()
    }
}

/// Reassembles writes from one stream's messages.
#[derive(Default)]
pub struct Assembler {
    /// The sequence expected next; `None` before the first message.
    next_seq: Option<u64>,
    open: HashMap<String, Open>,
    /// Keys seen since the feed began.
    seen: HashSet<String>,
}

impl Assembler {
    /// The sequence expected next, where a new feed resumes.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Takes message `seq` (id `id`, when it had one) and adds what it completes to `out`.
    /// Parts of one write may come in any order (a publisher retries a part while sending
    /// the next); the write is whole when its last missing part comes.
    pub fn push(&mut self, seq: u64, id: Option<PartId>, payload: Bytes, out: &mut Vec<Event>) {
        if let Some(next) = self.next_seq {
            if seq < next {
                // Delivered again after a feed was recreated: already taken.
                return;
            }
            if seq > next {
                // Messages this host never got: each was (part of) a write, and every
                // write still open may have had a part among them.
                let open: Vec<Open> = self.open.drain().map(|(_, o)| o).collect();
                out.push(Event::Lost {
                    writes: seq - next + open.iter().filter(|o| !o.uncounted).count() as u64,
                    bytes: open.iter().map(Open::bytes).sum(),
                });
            }
        }
        self.next_seq = Some(seq + 1);
        let id = match id {
            Some(id) if id.parts > 1 => id,
            whole => {
                if let Some(id) = whole {
                    self.abandon(&id.key, out);
                    self.seen.insert(id.key);
                }
                out.push(Event::Write(vec![payload]));
                return;
            }
        };
        let first_seen = self.seen.insert(id.key.clone());
        if self.open.get(&id.key).is_none_or(|o| o.write != id.write) {
            self.abandon(&id.key, out);
            self.open.insert(
                id.key.clone(),
                Open {
                    write: id.write,
                    got: vec![None; id.parts as usize],
                    have: 0,
                    uncounted: first_seen && id.index != 0,
                },
            );
        }
        let o = self.open.get_mut(&id.key).expect("just made");
        let Some(slot) = o.got.get_mut(id.index as usize) else {
            return;
        };
        if slot.is_none() {
            *slot = Some(payload);
            o.have += 1;
        }
        if o.have == o.got.len() {
            let o = self.open.remove(&id.key).expect("just found");
            out.push(Event::Write(o.got.into_iter().flatten().collect()));
        }
    }

    /// A write of `key` left open (its publisher gave up on the rest) is lost.
    fn abandon(&mut self, key: &str, out: &mut Vec<Event>) {
        if let Some(o) = self.open.remove(key).filter(|o| !o.uncounted) {
            out.push(Event::Lost {
                writes: 1,
                bytes: o.bytes(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str, write: u64, index: u32, parts: u32) -> Option<PartId> {
        parse_id(&message_id(key, write, index, parts))
    }

    /// A message: (seq, key, write, index, parts, payload).
    type Msg<'a> = (u64, &'a str, u64, u32, u32, &'a str);

    /// Messages in, events out.
    fn run(msgs: &[Msg]) -> Vec<Event> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for &(seq, key, write, index, parts, p) in msgs {
            let b = Bytes::copy_from_slice(p.as_bytes());
            a.push(seq, id(key, write, index, parts), b, &mut out);
        }
        out
    }

    fn w(parts: &[&str]) -> Event {
        Event::Write(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        )
    }

    fn lost(writes: u64, bytes: u64) -> Event {
        Event::Lost { writes, bytes }
    }

    #[test]
    fn ids_round_trip() {
        let i = parse_id(&message_id("h:1", 7, 2, 3)).unwrap();
        assert_eq!(
            (i.key.as_str(), i.write, i.index, i.parts),
            ("h:1", 7, 2, 3)
        );
        for bad in ["", "a:1:2", "a:1:3:3", "a:x:0:1", "a:1:0:0"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn reassembly() {
        let cases: &[(&str, &[Msg], Vec<Event>)] = &[
            (
                "whole writes in order",
                &[(1, "a", 1, 0, 1, "x"), (2, "b", 1, 0, 1, "y")],
                vec![w(&["x"]), w(&["y"])],
            ),
            (
                "interleaved parts: each write whole, at its last part",
                &[
                    (1, "a", 1, 0, 2, "a0"),
                    (2, "b", 1, 0, 2, "b0"),
                    (3, "b", 1, 1, 2, "b1"),
                    (4, "a", 1, 1, 2, "a1"),
                ],
                vec![w(&["b0", "b1"]), w(&["a0", "a1"])],
            ),
            (
                "a redelivered message is taken once",
                &[
                    (1, "a", 1, 0, 1, "x"),
                    (1, "a", 1, 0, 1, "x"),
                    (2, "a", 2, 0, 1, "y"),
                ],
                vec![w(&["x"]), w(&["y"])],
            ),
            (
                "a gap is lost, with the open write it may have cut",
                &[(1, "a", 1, 0, 2, "a0"), (5, "b", 1, 0, 1, "y")],
                vec![lost(4, 2), w(&["y"])],
            ),
            (
                "a write whose publisher gave up is lost at the key's next write",
                &[(1, "a", 1, 0, 3, "a0"), (2, "a", 2, 0, 1, "z")],
                vec![lost(1, 2), w(&["z"])],
            ),
            (
                "a tail whose head came before this host joined is skipped, not lost",
                &[(7, "a", 1, 1, 2, "a1"), (8, "a", 2, 0, 1, "z")],
                vec![w(&["z"])],
            ),
            (
                "parts out of order within a write (a retried part) still make it whole",
                &[(7, "a", 1, 1, 2, "a1"), (8, "a", 1, 0, 2, "a0")],
                vec![w(&["a0", "a1"])],
            ),
            (
                "a known key's tail without its head is lost once, at its next write",
                &[
                    (1, "a", 1, 0, 1, "x"),
                    (2, "a", 2, 1, 3, "p1"),
                    (3, "a", 2, 2, 3, "p2"),
                    (4, "a", 3, 0, 1, "z"),
                ],
                vec![w(&["x"]), lost(1, 4), w(&["z"])],
            ),
        ];
        for (name, msgs, want) in cases {
            assert_eq!(&run(msgs), want, "{name}");
        }
    }
}
