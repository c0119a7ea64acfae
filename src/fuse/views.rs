//! `STREAM@SPEC` names: the same stream, opened at another start (see `start.rs`). FUSE's
//! OPEN carries only an inode, so each looked-up (stream, spec) pair gets an inode of its
//! own, in a range that stream ids never reach, kept while the kernel holds a lookup of it
//! (until FORGET). Views are not listed by readdir and cannot be created.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::start::Start;
use crate::stream::Stream;

/// The first view inode: far above any stream id (ids count up from 2).
pub const FIRST_VIEW: u64 = 1 << 62;

/// Splits `name@spec` at its last `@`; `None` when the name has none.
pub fn split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = name.iter().rposition(|b| *b == b'@')?;
    Some((&name[..at], &name[at + 1..]))
}

/// One looked-up view.
pub struct View {
    pub stream: Arc<Stream>,
    pub start: Start,
    /// Lookups the kernel holds (FORGET gives them back).
    lookups: u64,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<u64, View>,
    /// Invariant: maps exactly the (stream id, start) pairs of `by_ino` to their inodes.
    by_key: HashMap<(u64, String), u64>,
    next: u64,
}

/// The mount's views.
#[derive(Default)]
pub struct Views(Mutex<Table>);

impl Views {
    /// The inode of the view of `stream` at `start`, counting one more lookup.
    pub fn lookup(&self, stream: &Arc<Stream>, start: Start) -> u64 {
        let mut t = self.0.lock();
        let key = (stream.id(), start.to_string());
        if let Some(&ino) = t.by_key.get(&key) {
            t.by_ino
                .get_mut(&ino)
                .expect("by_key and by_ino agree")
                .lookups += 1;
            return ino;
        }
        let ino = FIRST_VIEW + t.next;
        t.next += 1;
        t.by_key.insert(key, ino);
        t.by_ino.insert(
            ino,
            View {
                stream: stream.clone(),
                start,
                lookups: 1,
            },
        );
        ino
    }

    /// The view with this inode: its stream and start.
    pub fn get(&self, ino: u64) -> Option<(Arc<Stream>, Start)> {
        self.0
            .lock()
            .by_ino
            .get(&ino)
            .map(|v| (v.stream.clone(), v.start))
    }

    /// The kernel forgets `n` lookups of `ino`; the view goes with the last.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.0.lock();
        let Some(v) = t.by_ino.get_mut(&ino) else {
            return;
        };
        v.lookups = v.lookups.saturating_sub(n);
        if v.lookups == 0 {
            let v = t.by_ino.remove(&ino).expect("just found");
            t.by_key.remove(&(v.stream.id(), v.start.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Budgets, Meta, Pool};

    #[test]
    fn names_split_at_their_last_at() {
        assert_eq!(split(b"cam1@live"), Some((&b"cam1"[..], &b"live"[..])));
        assert_eq!(split(b"a@b@-10s"), Some((&b"a@b"[..], &b"-10s"[..])));
        assert_eq!(split(b"plain"), None);
    }

    #[test]
    fn a_view_lives_while_the_kernel_holds_a_lookup() {
        let now = std::time::SystemTime::UNIX_EPOCH;
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            crtime: now,
            ctime: now,
        };
        let s = Stream::new(2, Budgets::new(10, 10), meta, Pool::unlimited());
        let views = Views::default();
        let live = crate::start::parse_start("live").unwrap();
        let a = views.lookup(&s, live);
        assert!(a >= FIRST_VIEW);
        assert_eq!(views.lookup(&s, live), a, "one inode per (stream, start)");
        assert_ne!(views.lookup(&s, Start::RING), a);
        views.forget(a, 1);
        assert!(views.get(a).is_some(), "one lookup left");
        views.forget(a, 1);
        assert!(views.get(a).is_none());
        let b = views.lookup(&s, live);
        assert!(views.get(b).is_some(), "looked up again: a view again");
    }
}
