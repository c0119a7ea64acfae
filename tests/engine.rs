//! The core's hooks for a distributed engine (`src/engine.rs`), with a fake engine in
//! memory: the namespace asks it before names change, and a shared stream's writes go to its
//! publisher and reach readers only when the engine applies them. No NATS, no FUSE.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use streamfs::engine::{Engine, Publisher};
use streamfs::memory::Chunk;
use streamfs::namespace::Namespace;
use streamfs::stream::{Budgets, Meta, ReadMode, ReadOutcome, Stream, StreamError, WriteDone};

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        crtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
    }
}

/// Writes kept by the publisher until the test delivers them.
type Held = Arc<Mutex<Vec<(u64, Vec<Chunk>, Option<WriteDone>)>>>;

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    held: Held,
    refuse: Mutex<bool>,
}

struct FakePublisher(Held);

impl Publisher for FakePublisher {
    fn publish(&self, parts: Vec<Chunk>, done: WriteDone) -> Option<u64> {
        let mut h = self.0.lock().unwrap();
        let id = h.len() as u64 + 1;
        h.push((id, parts, Some(done)));
        Some(id)
    }

    fn cancel(&self, write: u64) -> bool {
        let done = self.0.lock().unwrap()[write as usize - 1].2.take();
        done.map(|d| d(Err(StreamError::Interrupted))).is_some()
    }
}

impl Engine for Fake {
    fn create(&self, name: &[u8]) -> Result<(), StreamError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("create {}", String::from_utf8_lossy(name)));
        if *self.refuse.lock().unwrap() {
            return Err(StreamError::Unavailable);
        }
        Ok(())
    }
    fn remove(&self, name: &[u8]) -> Result<(), StreamError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("remove {}", String::from_utf8_lossy(name)));
        Ok(())
    }
    fn attach(&self, name: &[u8], stream: &Arc<Stream>) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("attach {}", String::from_utf8_lossy(name)));
        stream.set_publisher(Arc::new(FakePublisher(self.held.clone())));
    }
    fn status(&self) -> String {
        "fake".into()
    }
}

fn shared() -> (Arc<Namespace>, Arc<Fake>) {
    let ns = Arc::new(Namespace::new(Budgets::new(1 << 20, 1 << 20)));
    let fake = Arc::new(Fake::default());
    ns.set_engine(fake.clone());
    (ns, fake)
}

fn read_now(r: &streamfs::stream::Reader) -> ReadOutcome {
    let (tx, rx) = std::sync::mpsc::channel();
    r.read(
        1 << 20,
        ReadMode::NonBlocking,
        0,
        Box::new(move |o| tx.send(o).unwrap()),
    );
    rx.recv().unwrap()
}

#[test]
fn names_change_on_the_engine_first() {
    let (ns, fake) = shared();
    *fake.refuse.lock().unwrap() = true;
    assert_eq!(
        ns.create(b"cam", meta()).err(),
        Some(StreamError::Unavailable)
    );
    assert!(ns.lookup(b"cam").is_none(), "a refused create left a name");
    *fake.refuse.lock().unwrap() = false;
    let (s, created) = ns.create(b"cam", meta()).unwrap();
    assert!(created && s.publisher().is_some());
    assert_eq!(
        ns.rename(b"cam", b"cam2", false),
        Err(StreamError::Unsupported)
    );
    // Made elsewhere: adopted without asking the engine to create it.
    ns.adopt(b"other", meta()).unwrap();
    ns.remove(b"cam").unwrap();
    assert_eq!(ns.remove(b"nothing"), Err(StreamError::NotFound));
    assert_eq!(
        *fake.calls.lock().unwrap(),
        [
            "create cam",
            "create cam",
            "attach cam",
            "attach other",
            "remove cam"
        ]
    );
    // Gone elsewhere: this host forgets it, and its readers end.
    let other = ns.lookup(b"other").unwrap();
    let r = other.open_reader("r".into()).unwrap();
    assert!(ns.forget_stream(b"other", &other));
    assert_eq!(read_now(&r), ReadOutcome::Eof);
}

#[test]
fn a_shared_write_reaches_readers_only_through_the_engine() {
    let (ns, fake) = shared();
    let (s, _) = ns.create(b"cam", meta()).unwrap();
    let r = s.open_reader("r".into()).unwrap();
    let w = s.open_writer();
    let answer = Arc::new(Mutex::new(None));
    let a = answer.clone();
    let id = w.submit(
        b"hello",
        0,
        Box::new(move |res| *a.lock().unwrap() = Some(res)),
    );
    assert_eq!(id, Some(1), "the write waits for the engine");
    assert_eq!(
        read_now(&r),
        ReadOutcome::WouldBlock,
        "applied before the engine ordered it"
    );
    let (_, parts, done) = fake.held.lock().unwrap().pop().unwrap();
    assert!(s.apply_remote(parts));
    done.unwrap()(Ok(()));
    assert_eq!(*answer.lock().unwrap(), Some(Ok(())));
    match read_now(&r) {
        ReadOutcome::Data(b) => assert_eq!(&*b, b"hello"),
        o => panic!("{o:?}"),
    }
    // A waiting write is cancelled through its publisher.
    let a = answer.clone();
    let id = w.submit(b"x", 0, Box::new(move |res| *a.lock().unwrap() = Some(res)));
    assert!(s.cancel_write(id.unwrap()));
    assert_eq!(*answer.lock().unwrap(), Some(Err(StreamError::Interrupted)));
    // Losses the engine reports count for the stream and every reader.
    s.count_lost(3, 300);
    let st = s.stats();
    assert_eq!((st.dropped_writes, st.dropped_bytes), (3, 300));
    assert_eq!(r.stats().dropped_writes, 3);
    // After removal a write fails at once, without reaching the engine.
    s.remove();
    let published = fake.held.lock().unwrap().len();
    assert_eq!(w.write(b"late"), Err(StreamError::Removed));
    assert_eq!(
        fake.held.lock().unwrap().len(),
        published,
        "published after removal"
    );
}
