//! The NATS JetStream engine: streams shared by every host mounted on the same NATS account
//! and prefix. Implements `engine.rs`'s hooks; knows nothing of FUSE or HTTP.
//!
//! Each host keeps the core's streams as a cache: one JetStream stream per stream (see
//! `names.rs`), one feed per stream and host (an ephemeral pull consumer, recreated where it
//! left off after any fault) that fills the local ring from retention and then applies every
//! write, this host's own included, in JetStream's sequence; a local write is published
//! (split into parts when larger than the server's payload limit, see `parts.rs`) instead of
//! applied. A listing loop makes streams created or removed on other hosts appear or end
//! here. Everything runs on one tokio runtime on its own thread, started by the daemon after
//! it forked.

mod feed;
pub mod names;
mod parts;
mod publish;
pub mod settings;

pub use settings::Settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::namespace::Namespace;
use crate::stream::{Meta, Stream, StreamError};

/// JetStream keeps at least this much of each stream, whatever its ring: a message larger
/// than `max_bytes` would be acknowledged and evicted at once, and a feed that lags a little
/// must still find the writes it has not read yet.
const MIN_RETENTION: u64 = 16 << 20;

/// How long JetStream remembers message ids to drop a part a retry published twice: longer
/// than any retry goes on (`nats_timeout`).
const DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// How often the listing loop looks for streams created or removed elsewhere.
const LIST_EVERY: Duration = Duration::from_millis(250);

/// Room left in a message for its headers under the server's payload limit.
const HEADER_ROOM: usize = 256;

/// The engine of one mount.
pub struct Nats {
    rt: tokio::runtime::Handle,
    client: async_nats::Client,
    js: jetstream::Context,
    settings: Settings,
    ns: Weak<Namespace>,
    /// Metadata given to streams made on other hosts.
    remote_meta: Meta,
    /// Largest payload of one part.
    max_part: usize,
    /// This host's key in message ids (see `parts.rs`).
    host: String,
    /// The ring budget of new streams, for their JetStream retention.
    ring: u64,
    ring_time: Option<Duration>,
    /// When a name was last created or removed here: the listing loop leaves alone names
    /// changed since its listing began.
    changed: Mutex<HashMap<Vec<u8>, Instant>>,
    /// Creation time of each local stream's JetStream stream, when known (a stream removed
    /// and made again elsewhere under the same name is another stream).
    created: Mutex<HashMap<Vec<u8>, async_nats::jetstream::stream::Info>>,
    next_key: std::sync::atomic::AtomicU64,
}

/// The wait before reconnect attempt `attempts` (1 is the first): none, then doubling from
/// 2 ms up to [`RECONNECT_MAX`]. The client's own default grows to 4 s, and a write waiting
/// `nats_timeout` (2 s, say) could fail with EIO while the cluster was back, the client
/// still asleep.
fn reconnect_delay(attempts: usize) -> Duration {
    let exp = attempts.saturating_sub(1).min(16) as u32;
    match attempts {
        0 | 1 => Duration::ZERO,
        _ => Duration::from_millis(1 << exp).min(RECONNECT_MAX),
    }
}

/// The longest wait between two reconnect attempts: a cluster back is seen within it.
const RECONNECT_MAX: Duration = Duration::from_millis(500);

impl Nats {
    /// Starts the runtime thread, connects (failing with a one-line reason naming the URLs)
    /// and adopts the streams that exist already, then keeps the namespace in step.
    pub fn start(
        settings: &Settings,
        ns: &Arc<Namespace>,
        remote_meta: Meta,
    ) -> Result<Arc<Nats>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS runtime: {e}"))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("nats".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("thread: {e}"))?;
        let urls = settings.urls.join(",");
        let s = settings.clone();
        let connected = block_on(&handle, settings.timeout, async move {
            let mut opts = async_nats::ConnectOptions::new()
                .name("streamfs")
                .max_reconnects(None)
                .reconnect_delay_callback(reconnect_delay)
                .connection_timeout(s.timeout.min(Duration::from_secs(5)));
            if let Some(creds) = &s.creds {
                opts = opts
                    .credentials_file(creds)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", creds.display()))?;
            }
            let client = opts
                .connect(s.urls.as_slice())
                .await
                .map_err(|e| e.to_string())?;
            let js = jetstream::new(client.clone());
            Ok::<_, String>((client, js))
        })
        .unwrap_or_else(|| Err("no answer in time".into()));
        let (client, js) = connected.map_err(|e| format!("cannot reach NATS at {urls}: {e}"))?;
        let max_payload = client.server_info().max_payload.max(4096);
        let budgets = ns.defaults();
        let nats = Arc::new(Nats {
            rt: handle,
            client,
            js,
            settings: settings.clone(),
            ns: Arc::downgrade(ns),
            remote_meta,
            max_part: max_payload - HEADER_ROOM,
            host: format!("{:x}{:x}", std::process::id(), nanos()),
            ring: budgets.ring,
            ring_time: budgets.ring_time,
            changed: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
            next_key: std::sync::atomic::AtomicU64::new(0),
        });
        ns.set_engine(nats.clone());
        // The streams that exist already are listed by the time the mount is.
        let first = nats.clone();
        block_on(
            &nats.rt,
            settings.timeout,
            async move { first.sync().await },
        )
        .unwrap_or_else(|| Err("no answer in time".into()))
        .map_err(|e| format!("no JetStream at {urls} (is it enabled? nats-server -js): {e}"))?;
        let looped = Arc::downgrade(&nats);
        nats.rt.spawn(async move {
            loop {
                tokio::time::sleep(LIST_EVERY).await;
                let Some(n) = looped.upgrade() else { return };
                if let Err(e) = n.sync().await {
                    crate::ratelimit::OPENS.log(|| format!("NATS listing failed: {e}"));
                }
            }
        });
        Ok(nats)
    }

    /// What JetStream keeps of each stream (`max_bytes`): the ring, at least
    /// [`MIN_RETENTION`]. Also the longest write a stream takes.
    fn retention(&self) -> u64 {
        self.ring.max(MIN_RETENTION)
    }

    /// `Unavailable` while the client is not connected. Checked before a create or a
    /// remove: sent while disconnected, the request would wait in the client and take
    /// effect once the cluster is back, after the caller had been told it failed.
    fn connected(&self) -> Result<(), StreamError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(StreamError::Unavailable),
        }
    }

    fn config(&self, name: &[u8]) -> Result<jetstream::stream::Config, StreamError> {
        let js_name =
            names::stream_name(&self.settings.prefix, name).ok_or(StreamError::NameTooLong)?;
        let retention = self.retention();
        Ok(jetstream::stream::Config {
            name: js_name,
            subjects: vec![names::subject(&self.settings.prefix, name)],
            max_bytes: retention as i64,
            // The gotcha: without it a message larger than max_bytes is acked, then evicted.
            max_message_size: (self.max_part + HEADER_ROOM).min(retention as usize) as i32,
            discard: jetstream::stream::DiscardPolicy::Old,
            max_age: self.ring_time.unwrap_or_default(),
            storage: if self.settings.file_storage {
                jetstream::stream::StorageType::File
            } else {
                jetstream::stream::StorageType::Memory
            },
            num_replicas: self.settings.replicas,
            // JetStream refuses a duplicate window longer than max_age.
            duplicate_window: self.ring_time.map_or(DEDUP_WINDOW, |t| t.min(DEDUP_WINDOW)),
            ..Default::default()
        })
    }

    /// Makes the namespace match the cluster's streams of this prefix.
    async fn sync(self: &Arc<Self>) -> Result<(), String> {
        use futures_util::StreamExt;
        let began = Instant::now();
        // Only changes newer than a listing matter; older ones are forgotten.
        self.changed
            .lock()
            .unwrap()
            .retain(|_, t| began.duration_since(*t) < Duration::from_secs(60));
        let Some(ns) = self.ns.upgrade() else {
            return Ok(());
        };
        let mut listed = HashMap::new();
        let mut streams = self.js.streams();
        while let Some(info) = streams.next().await {
            let info = info.map_err(|e| e.to_string())?;
            if let Some(name) = names::decode(&self.settings.prefix, &info.config.name) {
                listed.insert(name, info);
            }
        }
        let recent = |name: &[u8]| {
            self.changed
                .lock()
                .unwrap()
                .get(name)
                .is_some_and(|t| *t >= began)
        };
        for (name, stream) in ns.entries() {
            if recent(&name) {
                continue;
            }
            let known = self.created.lock().unwrap().get(&name).map(|i| i.created);
            let same = match (listed.get(&name), known) {
                (Some(l), Some(k)) => l.created == k,
                (Some(_), None) => true,
                // Missing from a listing is not gone: a listing made during an election or
                // a recovery can leave streams out. Only JetStream's "not found" is.
                (None, _) => !self.confirmed_gone(&name).await,
            };
            if !same {
                // Removed elsewhere (or removed and made again: a new stream).
                ns.forget_stream(&name, &stream);
                self.created.lock().unwrap().remove(&name);
            }
        }
        for (name, info) in listed {
            if recent(&name) || ns.lookup(&name).is_some() {
                continue;
            }
            self.created.lock().unwrap().insert(name.clone(), info);
            let mut meta = self.remote_meta;
            meta.crtime = std::time::SystemTime::now();
            meta.ctime = meta.crtime;
            if let Err(e) = ns.adopt(&name, meta) {
                crate::ratelimit::OPENS.log(|| format!("cannot show a stream of NATS here: {e}"));
            }
        }
        Ok(())
    }

    /// Whether JetStream says the stream `name` does not exist (not merely no answer).
    async fn confirmed_gone(&self, name: &[u8]) -> bool {
        let Some(js_name) = names::stream_name(&self.settings.prefix, name) else {
            return true;
        };
        match self.js.get_stream(js_name).await {
            Ok(_) => false,
            Err(e) => matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND),
        }
    }

    fn touch(&self, name: &[u8]) {
        self.changed
            .lock()
            .unwrap()
            .insert(name.to_vec(), Instant::now());
    }
}

impl crate::engine::Engine for Nats {
    fn create(&self, name: &[u8]) -> Result<(), StreamError> {
        let config = self.config(name)?;
        self.connected()?;
        self.touch(name);
        let js = self.js.clone();
        let info = block_on(&self.rt, self.settings.timeout, async move {
            js.get_or_create_stream(config).await
        })
        .ok_or(StreamError::Unavailable)?
        .map_err(|e| {
            log::warn!("cannot create a stream on NATS: {e}");
            StreamError::Unavailable
        })?;
        self.created
            .lock()
            .unwrap()
            .insert(name.to_vec(), info.cached_info().clone());
        self.touch(name);
        Ok(())
    }

    fn remove(&self, name: &[u8]) -> Result<(), StreamError> {
        let js_name =
            names::stream_name(&self.settings.prefix, name).ok_or(StreamError::NotFound)?;
        self.connected()?;
        self.touch(name);
        let js = self.js.clone();
        let done = block_on(&self.rt, self.settings.timeout, async move {
            js.delete_stream(js_name).await
        })
        .ok_or(StreamError::Unavailable)?;
        self.touch(name);
        self.created.lock().unwrap().remove(name);
        match done {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                // Gone already (removed elsewhere meanwhile): removed all the same.
                Ok(())
            }
            Err(e) => {
                log::warn!("cannot remove a stream on NATS: {e}");
                Err(StreamError::Unavailable)
            }
        }
    }

    fn attach(&self, name: &[u8], stream: &Arc<Stream>) {
        let Some(js_name) = names::stream_name(&self.settings.prefix, name) else {
            return;
        };
        let key = format!(
            "{}.{}",
            self.host,
            self.next_key
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let publisher = publish::StreamPublisher::start(
            &self.rt,
            self.client.clone(),
            self.js.clone(),
            names::subject(&self.settings.prefix, name),
            key,
            self.max_part,
            self.settings.timeout,
            self.retention(),
        );
        stream.set_publisher(publisher);
        self.rt
            .spawn(feed::run(self.js.clone(), js_name, Arc::downgrade(stream)));
    }

    fn status(&self) -> String {
        let state = match self.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "connecting",
        };
        let info = self.client.server_info();
        format!(
            "nats {} {state} to {} (prefix {}, {} replica(s), {} storage, timeout {:?})",
            self.settings.urls.join(","),
            info.server_name,
            self.settings.prefix,
            self.settings.replicas,
            if self.settings.file_storage {
                "file"
            } else {
                "memory"
            },
            self.settings.timeout,
        )
    }
}

/// Runs `f` on the runtime and waits up to `timeout` for it, from a thread outside it.
fn block_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    timeout: Duration,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    let got = rx.recv_timeout(timeout).ok();
    task.abort();
    got
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_attempts_wait_at_most_half_a_second() {
        let ms = |a| reconnect_delay(a).as_millis();
        let got: Vec<u128> = [1, 2, 3, 9, 10, 11, 100, usize::MAX].map(ms).to_vec();
        assert_eq!(got, [0, 2, 4, 256, 500, 500, 500, 500]);
    }
}
