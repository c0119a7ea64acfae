//! The feed of one shared stream on one host: an ephemeral pull consumer that delivers the
//! JetStream stream in sequence, reassembled into whole writes applied to the local stream.
//! After any fault (a missed heartbeat, the consumer's server gone, a disconnection) the
//! consumer is made again from the next sequence, so nothing is applied twice and a gap
//! (what the retention evicted meanwhile) is counted as dropped, never hidden. Knows nothing
//! of the publisher.

use std::sync::Weak;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;

use super::parts::{Assembler, Event, parse_id};
use crate::memory::Chunk;
use crate::stream::Stream;

/// The consumer's idle heartbeat: two missed ones (a dead server) make it anew, so a reader
/// stalls about twice this after its consumer's server dies.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A consumer no feed pulls from is removed by the server after this.
const INACTIVE: Duration = Duration::from_secs(10);

/// The most messages of one gap fetched one by one from the leader; a longer gap (a host
/// far behind) is counted as lost.
const MAX_FILL: u64 = 10_000;

/// Wait before making the consumer again after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Whether the feed's stream is still there to feed.
fn alive(stream: &Weak<Stream>) -> bool {
    stream.upgrade().is_some_and(|s| !s.is_removed())
}

/// A consumer of `js_name` as `config` says, and its messages.
async fn open(
    js: &jetstream::Context,
    js_name: &str,
    config: pull::Config,
) -> Result<pull::Stream, async_nats::Error> {
    let consumer = js.create_consumer_on_stream(config, js_name).await?;
    log::debug!("feed of {js_name}: consumer made");
    Ok(consumer
        .stream()
        .max_messages_per_batch(1000)
        .max_bytes_per_batch(16 << 20)
        .heartbeat(HEARTBEAT)
        .expires(HEARTBEAT * 10)
        .messages()
        .await?)
}

pub async fn run(js: jetstream::Context, js_name: String, stream: Weak<Stream>) {
    let mut asm = Assembler::default();
    let mut events = Vec::new();
    // Where this host joins: the oldest message retained now (its replay). What is evicted
    // from here on before the feed has it was lost by this host, and is counted.
    loop {
        if !alive(&stream) {
            return;
        }
        // The answer to get_stream is the stream's info: no second request for it.
        match js.get_stream(&js_name).await {
            Ok(s) => {
                let st = &s.cached_info().state;
                let first = if st.messages == 0 {
                    st.last_sequence + 1
                } else {
                    st.first_sequence.max(1)
                };
                asm.start_at(first);
                break;
            }
            Err(e) => log::debug!("feed of {js_name}: {e}"),
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
    loop {
        if !alive(&stream) {
            return;
        }
        let deliver_policy = DeliverPolicy::ByStartSequence {
            start_sequence: asm.next_seq(),
        };
        let config = pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: INACTIVE,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        log::debug!("feed of {js_name}: consumer from {deliver_policy:?}");
        let mut messages = match open(&js, &js_name, config).await {
            Ok(m) => m,
            Err(e) => {
                // A stream removed elsewhere is ended by the listing loop.
                log::debug!("feed of {js_name}: {e}");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    log::debug!("feed of {js_name}: {e}; making its consumer again");
                    break;
                }
            };
            let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                continue;
            };
            if seq > asm.next_seq() && !fill_gap(&js, &js_name, seq, &mut asm, &mut events).await {
                // The leader did not answer: the next consumer resumes where the gap began.
                break;
            }
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .and_then(|v| parse_id(v.as_str()));
            asm.push(seq, id, m.payload.clone(), &mut events);
            let Some(s) = stream.upgrade() else { return };
            for e in events.drain(..) {
                match e {
                    Event::Write(parts) => {
                        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
                        let chunks: Result<Vec<Chunk>, _> =
                            parts.iter().map(|p| Chunk::new(s.pool(), p)).collect();
                        match chunks {
                            Ok(chunks) => {
                                if !s.apply_remote(chunks) {
                                    return;
                                }
                            }
                            // No room under max_memory: this host drops it, as a reader
                            // without room would.
                            Err(_) => s.count_lost(1, bytes),
                        }
                    }
                    Event::Lost { writes, bytes } => {
                        log::info!("{js_name}: {writes} write(s) lost before this host got them");
                        s.count_lost(writes, bytes);
                    }
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Fetches from the stream's leader the messages before `upto` that the consumer skipped
/// and pushes them in order. A consumer on a replica that has not caught up (a server just
/// restarted with an empty memory store) delivers the next message it has, past messages
/// the stream still holds: they are not lost, only missing there. What the leader no
/// longer has (evicted) stays a gap, counted by the assembler. Returns false when the
/// leader could not be asked.
async fn fill_gap(
    js: &jetstream::Context,
    js_name: &str,
    upto: u64,
    asm: &mut Assembler,
    events: &mut Vec<Event>,
) -> bool {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let Ok(stream) = js.get_stream(js_name).await else {
        return false;
    };
    let first = stream.cached_info().state.first_sequence;
    let from = asm.next_seq().max(first);
    if upto.saturating_sub(from) > MAX_FILL {
        return true;
    }
    log::debug!("feed of {js_name}: fetching {from}..{upto} skipped by the consumer");
    for seq in from..upto {
        match stream.get_raw_message(seq).await {
            Ok(m) => {
                let id = m
                    .headers
                    .get("Nats-Msg-Id")
                    .and_then(|v| parse_id(v.as_str()));
                asm.push(seq, id, m.payload, events);
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
            Err(e) => {
                log::debug!("feed of {js_name}: fetching {seq}: {e}");
                return false;
            }
        }
    }
    true
}
