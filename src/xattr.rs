//! The statistics a mount exposes as extended attributes (`getfattr -d -m - FILE`): plain
//! decimal text under `user.streamfs.`. Pure formatting over the core's counters; knows
//! nothing of FUSE.

use crate::namespace::Namespace;
use crate::stream::Stream;

/// Prefix of every attribute streamfs answers.
pub const PREFIX: &str = "user.streamfs.";

/// A stream's attributes, in a stable order.
pub fn stream_attrs(stream: &Stream) -> Vec<(String, String)> {
    let s = stream.stats();
    let mut lines = String::new();
    for (label, r) in stream.reader_stats() {
        lines.push_str(&format!(
            "{label}\tqueued={} budget={} delivered={} dropped_writes={} dropped_bytes={}\n",
            r.live_cost, s.budgets.channel, r.delivered_bytes, r.dropped_writes, r.dropped_bytes
        ));
    }
    [
        ("bytes_written", s.written_bytes.to_string()),
        ("writes", s.writes.to_string()),
        ("readers", s.readers.to_string()),
        ("writers", s.writers.to_string()),
        ("ring_bytes", s.ring_bytes.to_string()),
        ("ring_start", s.ring_start.to_string()),
        ("dropped_writes", s.dropped_writes.to_string()),
        ("dropped_bytes", s.dropped_bytes.to_string()),
        ("channel_buffer_size", s.budgets.channel.to_string()),
        ("ring_buffer_size", s.budgets.ring.to_string()),
        ("reader_list", lines),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{PREFIX}{k}"), v))
    .collect()
}

/// The root's attributes: totals over live streams, and the daemon's pid (used by
/// `streamfs stop` to find the daemon through the mount).
pub fn root_attrs(ns: &Namespace) -> Vec<(String, String)> {
    let (mut written, mut readers, mut writers, mut drops) = (0u64, 0usize, 0usize, 0u64);
    let streams = ns.streams();
    for (_, s) in &streams {
        let st = s.stats();
        written += st.written_bytes;
        readers += st.readers;
        writers += st.writers;
        drops += st.dropped_writes;
    }
    [
        ("pid", std::process::id().to_string()),
        ("streams", streams.len().to_string()),
        ("bytes_written", written.to_string()),
        ("readers", readers.to_string()),
        ("writers", writers.to_string()),
        ("dropped_writes", drops.to_string()),
        ("channel_buffer_size", ns.defaults().channel.to_string()),
        ("ring_buffer_size", ns.defaults().ring.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{PREFIX}{k}"), v))
    .collect()
}
