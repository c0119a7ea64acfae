//! The write side of one shared stream on one host: writes go out one at a time, in the
//! order they were finished here, each retried (under the same message ids, which the server
//! deduplicates) until JetStream acknowledges every part or the timeout passes. Knows
//! nothing of the feed: a write reaches this host's readers only through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::parts::PartId;
use crate::memory::Chunk;
use crate::stream::{StreamError, WriteDone};

/// How long one try waits for its acknowledgement (normally a millisecond away): an ack lost
/// with a dead server is retried after this, not after the client's 5 s request timeout.
const ACK_TRY: Duration = Duration::from_secs(1);

/// Wait between two tries of a part the cluster did not take (no leader, disconnected).
const RETRY_AFTER: Duration = Duration::from_millis(100);

struct Job {
    id: u64,
    parts: Vec<Chunk>,
    deadline: Instant,
}

/// The publisher of one stream on this host.
pub struct StreamPublisher {
    tx: mpsc::UnboundedSender<Job>,
    /// The answers of writes not yet answered, by write id; a cancelled write's is gone.
    pending: Arc<Mutex<HashMap<u64, WriteDone>>>,
    next_id: std::sync::atomic::AtomicU64,
    timeout: Duration,
    /// What JetStream keeps of the stream: a longer write would be evicted in part before
    /// the hosts' feeds could read it, and lost though acknowledged.
    max_write: u64,
}

impl StreamPublisher {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        rt: &tokio::runtime::Handle,
        client: async_nats::Client,
        js: jetstream::Context,
        subject: String,
        key: String,
        max_part: usize,
        timeout: Duration,
        max_write: u64,
    ) -> Arc<StreamPublisher> {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        rt.spawn(run(client, js, subject, key, max_part, rx, pending.clone()));
        Arc::new(StreamPublisher {
            tx,
            pending,
            next_id: std::sync::atomic::AtomicU64::new(1),
            timeout,
            max_write,
        })
    }
}

impl crate::engine::Publisher for StreamPublisher {
    fn publish(&self, parts: Vec<Chunk>, done: WriteDone) -> Option<u64> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pending.lock().unwrap().insert(id, done);
        let job = Job {
            id,
            parts,
            deadline: Instant::now() + self.timeout,
        };
        if self.tx.send(job).is_err() {
            if let Some(done) = self.pending.lock().unwrap().remove(&id) {
                done(Err(StreamError::Unavailable));
            }
            return None;
        }
        Some(id)
    }

    fn max_write(&self) -> u64 {
        self.max_write
    }

    fn cancel(&self, write: u64) -> bool {
        let done = self.pending.lock().unwrap().remove(&write);
        match done {
            Some(done) => {
                done(Err(StreamError::Interrupted));
                true
            }
            None => false,
        }
    }
}

/// The payloads of a write of `len` bytes: parts of at most `max_part` bytes, of equal
/// size (a 1 MiB write under a 1 MiB limit is two halves, not a full part and a sliver).
fn split(data: Bytes, max_part: usize) -> Vec<Bytes> {
    let n = data.len().div_ceil(max_part).max(1);
    let size = data.len().div_ceil(n);
    (0..n)
        .map(|i| data.slice(i * size..((i + 1) * size).min(data.len())))
        .collect()
}

async fn run(
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
    key: String,
    max_part: usize,
    mut rx: mpsc::UnboundedReceiver<Job>,
    pending: Arc<Mutex<HashMap<u64, WriteDone>>>,
) {
    // Counted only for writes of which something was sent (see `parts.rs`).
    let (mut write_no, mut before) = (0u64, 0u64);
    while let Some(job) = rx.recv().await {
        let waiting = || pending.lock().unwrap().contains_key(&job.id);
        if !waiting() {
            // Cancelled before anything of it was sent.
            continue;
        }
        // The common write of one piece is sent from its chunk as it is; the pieces of a
        // longer write() are joined first (one copy).
        let data = if job.parts.len() == 1 {
            Bytes::from_owner(job.parts.into_iter().next().expect("one part"))
        } else {
            let mut data = Vec::with_capacity(job.parts.iter().map(|c| c.len()).sum());
            for c in &job.parts {
                data.extend_from_slice(c);
            }
            Bytes::from(data)
        };
        let len = data.len() as u64;
        let payloads = split(data, max_part);
        let n = payloads.len() as u32;
        let id = PartId {
            key: key.clone(),
            write: write_no + 1,
            before,
            index: 0,
            parts: n,
        };
        let (ok, sent) = send_write(
            &client,
            &js,
            &subject,
            id,
            &payloads,
            job.deadline,
            &waiting,
        )
        .await;
        if sent {
            write_no += 1;
            before += len;
        }
        let answer = if ok {
            Ok(())
        } else {
            Err(StreamError::Unavailable)
        };
        if !ok {
            crate::ratelimit::OPENS
                .log(|| format!("a write of {n} part(s) was not taken by NATS in time: EIO"));
        }
        if let Some(done) = pending.lock().unwrap().remove(&job.id) {
            done(answer);
        }
    }
}

/// Sends every part of one write, all at once, then retries each part not acknowledged
/// until all are or the deadline passes (or the write is cancelled). Returns whether all
/// were. Nothing is sent while the client is disconnected: the client would keep it and
/// send it on reconnecting, after the write was answered EIO or EINTR. Also returns
/// whether anything was sent.
async fn send_write(
    client: &async_nats::Client,
    js: &jetstream::Context,
    subject: &str,
    id: PartId,
    payloads: &[Bytes],
    deadline: Instant,
    waiting: &impl Fn() -> bool,
) -> (bool, bool) {
    let n = payloads.len() as u32;
    let mut left: Vec<u32> = (0..n).collect();
    let mut sent_any = false;
    loop {
        while client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() + RETRY_AFTER >= deadline || !waiting() {
                return (false, sent_any);
            }
            tokio::time::sleep(RETRY_AFTER / 2).await;
        }
        let mut acks = Vec::with_capacity(left.len());
        sent_any = true;
        for &i in &left {
            let part = PartId {
                index: i,
                ..id.clone()
            };
            let msg = PublishMessage::build()
                .payload(payloads[i as usize].clone())
                .message_id(part.text());
            let sent = tokio::time::timeout_at(deadline, js.send_publish(subject.to_string(), msg));
            acks.push((i, sent.await));
        }
        let mut failed = Vec::new();
        for (i, sent) in acks {
            let acked = match sent {
                Ok(Ok(ack)) => {
                    let until = deadline.min(Instant::now() + ACK_TRY);
                    matches!(tokio::time::timeout_at(until, ack).await, Ok(Ok(_)))
                }
                _ => false,
            };
            if !acked {
                failed.push(i);
            }
        }
        if failed.is_empty() {
            return (true, true);
        }
        if Instant::now() + RETRY_AFTER >= deadline || !waiting() {
            return (false, true);
        }
        tokio::time::sleep(RETRY_AFTER).await;
        left = failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_split_into_equal_parts_under_the_limit() {
        for (len, max, want) in [
            (10, 10, vec![10]),
            (11, 10, vec![6, 5]),
            (1 << 20, (1 << 20) - 256, vec![1 << 19, 1 << 19]),
            (1, 10, vec![1]),
            (30, 10, vec![10, 10, 10]),
        ] {
            let got: Vec<usize> = split(Bytes::from(vec![0u8; len]), max)
                .iter()
                .map(|b| b.len())
                .collect();
            assert_eq!(got, want, "{len} under {max}");
        }
    }
}
