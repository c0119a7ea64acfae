//! Raw JetStream probe of `scripts/bench`'s `nats` scenario, built with `cargo build --release
//! --example jsraw`; not meant to be run by hand. It does what streamfs's NATS engine does
//! for one stream, without FUSE and without streamfs: publish writes (split in equal parts
//! under the server's payload limit) to a fresh memory stream, and read them back with an
//! ordered consumer: the engine's own ceiling on this cluster.
//!
//! ```text
//! jsraw tput URLS REPLICAS SIZE COUNT WINDOW   -> "bytes SECONDS"
//! jsraw lat  URLS REPLICAS SIZE COUNT INTERVAL_US  -> "p50_us p99_us"
//! ```
//!
//! WINDOW is how many writes may wait for their acknowledgement at once (1: one at a time,
//! as streamfs publishes the writes of one stream on one host). The stream is deleted at the
//! end.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures_util::StreamExt;

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("jsraw: bad or missing argument {i}");
        std::process::exit(2)
    })
}

fn parts(data: Bytes, max: usize) -> Vec<Bytes> {
    let n = data.len().div_ceil(max).max(1);
    let size = data.len().div_ceil(n);
    (0..n)
        .map(|i| data.slice(i * size..((i + 1) * size).min(data.len())))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, 1);
    let urls: String = arg(&args, 2);
    let replicas: usize = arg(&args, 3);
    let size: usize = arg(&args, 4);
    let count: usize = arg(&args, 5);
    let sixth: u64 = arg(&args, 6);
    let addrs: Vec<&str> = urls.split(',').collect();
    let client = async_nats::connect(addrs.as_slice())
        .await
        .expect("connect");
    let max = client.server_info().max_payload - 256;
    let js = jetstream::new(client.clone());
    let name = format!("jsraw_{}", std::process::id());
    let subject = format!("jsraw.{}", std::process::id());
    let st = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            max_bytes: 64 << 20,
            max_message_size: (max + 256) as i32,
            storage: stream::StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer = st
        .create_consumer(pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let mut msgs = consumer.messages().await.expect("messages");
    let per = parts(Bytes::from(vec![7u8; size]), max).len();
    let reader = tokio::spawn(async move {
        let mut lat = Vec::new();
        let (mut got, mut n) = (0usize, 0usize);
        while n < count * per {
            let m = msgs.next().await.expect("message").expect("ok message");
            got += m.payload.len();
            n += 1;
            if m.payload.len() >= 8 && n % per == 0 {
                let sent = u64::from_le_bytes(m.payload[..8].try_into().unwrap());
                lat.push(now_ns().saturating_sub(sent));
            }
        }
        (got, Instant::now(), lat)
    });
    let t0 = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    let window = if mode == "tput" { sixth as usize } else { 1 };
    for i in 0..count {
        if mode == "lat" {
            let due = t0 + Duration::from_micros(sixth * i as u64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut data = vec![7u8; size];
        let stamp = now_ns().to_le_bytes();
        data[..8.min(size)].copy_from_slice(&stamp[..8.min(size)]);
        for p in parts(Bytes::from(data), max) {
            inflight.push_back(js.publish(subject.clone(), p).await.expect("publish"));
        }
        while inflight.len() > (window.max(1) - 1) * per {
            inflight.pop_front().unwrap().await.expect("ack");
        }
    }
    for a in inflight {
        a.await.expect("ack");
    }
    let (got, t1, mut lat) = reader.await.unwrap();
    let _ = js.delete_stream(&name).await;
    if mode == "tput" {
        println!("{got} {}", (t1 - t0).as_secs_f64());
    } else {
        lat.sort_unstable();
        let pct = |q: f64| {
            lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1] as f64 / 1e3
        };
        println!("{:.0} {:.0}", pct(0.5), pct(0.99));
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
