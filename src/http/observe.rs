//! What the gateway shows about the namespace: the JSON listing of streams and readers (the
//! fields of `streamfs status --json`), Prometheus metrics and the live status page.

use std::sync::atomic::AtomicU64;

use crate::namespace::Namespace;
use crate::stream::Stream;

/// Counters of the gateway itself, kept by the server and shown by `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Requests answered since start.
    pub requests: AtomicU64,
}

/// `GET /streams`: a JSON array of every stream (an array even for one or none).
pub fn streams_json(_ns: &Namespace) -> String {
    "[]".to_string()
}

/// `GET /streams/NAME/readers`: a JSON array of the stream's readers.
pub fn readers_json(_ns: &Namespace, _name: &[u8], _stream: &Stream) -> String {
    "[]".to_string()
}

/// `GET /metrics`: Prometheus text exposition format.
pub fn metrics(_ns: &Namespace, _http: &HttpStats) -> String {
    String::new()
}

/// `GET /`: the status page, one HTML file served from the binary.
pub fn page() -> &'static str {
    "<!doctype html><title>streamfs</title>"
}
