//! The HTTP gateway: a second front door onto the same core as the FUSE adapter. It maps
//! requests onto `Namespace`, `Stream`, `Reader` and `Writer` and knows nothing of FUSE.
//!
//! `config` parses its options; `server` binds (before mounting), runs the runtime (after
//! any fork), limits and authorizes connections and routes requests; `lean` reads request
//! heads and writes live responses without hyper's buffers, `send` the threads that then
//! write plain live bodies from their own epoll loops; `streams` is the
//! native API (`/streams/NAME`), `agfs` the original server's API (`/api/v1/...`), `body`
//! the live response bodies, `observe` the listings, metrics and status page; `access`
//! gives a tokenless local client its user's rights on the mount, found by `peer`.

// Handlers return their error answers as `Err(Response)`: one per request, moved once, so
// their size costs nothing worth boxing.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod agfs;
pub mod body;
pub mod config;
mod conn;
pub mod lean;
pub mod observe;
pub mod peer;
pub mod send;
pub mod server;
pub mod streams;
pub mod url;

pub use server::{BindError, Gateway};
