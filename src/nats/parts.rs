//! Writes as JetStream messages: the id each message carries, and the reassembly of writes
//! split into parts, from messages in stream-sequence order, with an exact count of the
//! writes (and bytes) a host lost. Knows nothing of connections or the core.
//!
//! Every message carries `Nats-Msg-Id: K:W:B:I:N`: K the publishing host's key for the
//! stream (one publisher per stream per host, so K's writes never interleave with each
//! other), W the write's number under K (from 1, counting only writes of which something
//! was sent), B the bytes of K's earlier such writes, I the part's index and N the number
//! of parts. The id also makes the server drop a part published twice by a retry (its
//! duplicate window). Parts of different hosts' writes may interleave in the stream; a write
//! takes its place in the order at its last part, on every host alike, and reaches readers
//! only whole. When K's next write arrives, the writes of K that never became whole here
//! (evicted before this host read them, or a part lost) are counted from W and B.

use std::collections::HashMap;

use bytes::Bytes;

/// What a message id says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartId {
    pub key: String,
    pub write: u64,
    /// Bytes of the key's earlier writes.
    pub before: u64,
    pub index: u32,
    pub parts: u32,
}

impl PartId {
    /// The message id, as sent.
    pub fn text(&self) -> String {
        let PartId {
            key,
            write,
            before,
            index,
            parts,
        } = self;
        format!("{key}:{write}:{before}:{index}:{parts}")
    }
}

/// Reads a message id; `None` for one not made by [`PartId::text`].
pub fn parse_id(id: &str) -> Option<PartId> {
    let mut it = id.rsplitn(5, ':');
    let parts: u32 = it.next()?.parse().ok()?;
    let index: u32 = it.next()?.parse().ok()?;
    let before: u64 = it.next()?.parse().ok()?;
    let write: u64 = it.next()?.parse().ok()?;
    let key = it.next()?.to_string();
    (parts > 0 && index < parts && write > 0).then_some(PartId {
        key,
        write,
        before,
        index,
        parts,
    })
}

/// What reassembly yields, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole write: its parts' payloads, in order.
    Write(Vec<Bytes>),
    /// Writes this host lost, and their bytes.
    Lost { writes: u64, bytes: u64 },
}

/// What is known of one key's writes.
struct Key {
    /// The write expected next, and the bytes of the key's writes before it.
    next: u64,
    next_before: u64,
    /// The write being reassembled, when its parts are not all here.
    open: Option<Open>,
}

struct Open {
    write: u64,
    got: Vec<Option<Bytes>>,
    have: usize,
    /// Begun by a tail whose head came before this host joined: not a loss when it never
    /// completes (as a late joiner skips a ring's partial head).
    uncounted: bool,
}

/// Reassembles writes from one stream's messages.
#[derive(Default)]
pub struct Assembler {
    /// The sequence expected next; `None` before the first message.
    next_seq: Option<u64>,
    keys: HashMap<String, Key>,
    /// Whether messages were missed since the feed began: a key first seen after that may
    /// have lost writes, one first seen before wrote its earlier writes before this host
    /// joined.
    gapped: bool,
}

impl Assembler {
    /// The sequence expected next, where a new feed resumes (1 before any).
    pub fn next_seq(&self) -> u64 {
        self.next_seq.unwrap_or(1)
    }

    /// Begins at sequence `seq`, the oldest retained when the host joined: missing it or
    /// any after it is a loss.
    pub fn start_at(&mut self, seq: u64) {
        self.next_seq = Some(seq);
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
            // Messages this host never got: counted per key when its next write comes.
            self.gapped |= seq > next;
        }
        self.next_seq = Some(seq + 1);
        let Some(id) = id else {
            // Not one of ours (a plain publisher on the subject): a whole write.
            out.push(Event::Write(vec![payload]));
            return;
        };
        let gapped = self.gapped;
        let (is_new, key) = match self.keys.entry(id.key) {
            std::collections::hash_map::Entry::Occupied(e) => (false, e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                if gapped && (id.write > 1 || id.before > 0) {
                    out.push(Event::Lost {
                        writes: id.write - 1,
                        bytes: id.before,
                    });
                }
                let key = e.insert(Key {
                    next: id.write,
                    next_before: id.before,
                    open: None,
                });
                (true, key)
            }
        };
        if key
            .open
            .as_ref()
            .is_some_and(|o| o.uncounted && o.write < id.write)
        {
            // The tail this host joined in the middle of is over: start from here.
            key.open = None;
            key.next = id.write;
            key.next_before = id.before;
        }
        if id.write < key.next {
            return;
        }
        if id.write > key.next {
            out.push(Event::Lost {
                writes: id.write - key.next,
                bytes: id.before.saturating_sub(key.next_before),
            });
            key.open = None;
            key.next = id.write;
            key.next_before = id.before;
        }
        let len = payload.len() as u64;
        if id.parts == 1 {
            key.open = None;
            key.next = id.write + 1;
            key.next_before = id.before + len;
            out.push(Event::Write(vec![payload]));
            return;
        }
        let open = key.open.get_or_insert_with(|| Open {
            write: id.write,
            got: vec![None; id.parts as usize],
            have: 0,
            // A key's first message, at the start, not a head: the head was before this
            // host joined.
            uncounted: is_new && !gapped && id.index != 0,
        });
        if let Some(slot) = open.got.get_mut(id.index as usize)
            && slot.is_none()
        {
            *slot = Some(payload);
            open.have += 1;
        }
        if open.have == open.got.len() {
            let o = key.open.take().expect("just filled");
            let parts: Vec<Bytes> = o.got.into_iter().flatten().collect();
            key.next = id.write + 1;
            key.next_before = id.before + parts.iter().map(|p| p.len() as u64).sum::<u64>();
            out.push(Event::Write(parts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message: (seq, key, write, bytes before, index, parts, payload).
    type Msg<'a> = (u64, &'a str, u64, u64, u32, u32, &'a str);

    /// Messages in, events out.
    fn run(msgs: &[Msg]) -> Vec<Event> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for &(seq, key, write, before, index, parts, p) in msgs {
            let id = PartId {
                key: key.into(),
                write,
                before,
                index,
                parts,
            };
            let b = Bytes::copy_from_slice(p.as_bytes());
            a.push(seq, parse_id(&id.text()), b, &mut out);
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
        let id = PartId {
            key: "h:1".into(),
            write: 7,
            before: 99,
            index: 2,
            parts: 3,
        };
        assert_eq!(parse_id(&id.text()), Some(id));
        for bad in [
            "",
            "a:1:0:2",
            "a:1:0:3:3",
            "a:x:0:0:1",
            "a:1:0:0:0",
            "a:0:0:0:1",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn reassembly() {
        let cases: &[(&str, &[Msg], Vec<Event>)] = &[
            (
                "whole writes in order",
                &[(1, "a", 1, 0, 0, 1, "x"), (2, "b", 1, 0, 0, 1, "y")],
                vec![w(&["x"]), w(&["y"])],
            ),
            (
                "interleaved parts: each write whole, at its last part",
                &[
                    (1, "a", 1, 0, 0, 2, "a0"),
                    (2, "b", 1, 0, 0, 2, "b0"),
                    (3, "b", 1, 0, 1, 2, "b1"),
                    (4, "a", 1, 0, 1, 2, "a1"),
                ],
                vec![w(&["b0", "b1"]), w(&["a0", "a1"])],
            ),
            (
                "a redelivered message is taken once",
                &[
                    (1, "a", 1, 0, 0, 1, "x"),
                    (1, "a", 1, 0, 0, 1, "x"),
                    (2, "a", 2, 1, 0, 1, "y"),
                ],
                vec![w(&["x"]), w(&["y"])],
            ),
            (
                "a gap counts exactly the writes of each key it held, at the key's next write",
                &[
                    (1, "a", 1, 0, 0, 2, "a0"),
                    (2, "b", 1, 0, 0, 1, "b"),
                    // seq 3-9 lost: a's write 1 (its part 1), writes 2 and 3 (9 bytes in
                    // all), b's write 2 (4 bytes).
                    (10, "b", 3, 5, 0, 1, "y"),
                    (11, "a", 4, 13, 0, 1, "z"),
                ],
                vec![w(&["b"]), lost(1, 4), w(&["y"]), lost(3, 13), w(&["z"])],
            ),
            (
                "a key first seen after a gap lost its earlier writes",
                &[(1, "a", 1, 0, 0, 1, "x"), (5, "c", 3, 20, 0, 1, "y")],
                vec![w(&["x"]), lost(2, 20), w(&["y"])],
            ),
            (
                "a key first seen at the start wrote its earlier writes before this host joined",
                &[(7, "c", 3, 20, 0, 1, "y")],
                vec![w(&["y"])],
            ),
            (
                "a write whose publisher gave up is lost at the key's next write",
                &[(1, "a", 1, 0, 0, 3, "a0"), (2, "a", 2, 6, 0, 1, "z")],
                vec![lost(1, 6), w(&["z"])],
            ),
            (
                "a tail whose head came before this host joined is skipped, not lost",
                &[(7, "a", 1, 0, 1, 2, "a1"), (8, "a", 2, 4, 0, 1, "z")],
                vec![w(&["z"])],
            ),
            (
                "parts out of order within a write (a retried part) still make it whole",
                &[(7, "a", 1, 0, 1, 2, "a1"), (8, "a", 1, 0, 0, 2, "a0")],
                vec![w(&["a0", "a1"])],
            ),
        ];
        for (name, msgs, want) in cases {
            assert_eq!(&run(msgs), want, "{name}");
        }
    }
}
