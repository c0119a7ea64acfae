//! streamfs: a FUSE filesystem whose files are live, in-memory broadcast streams.
//!
//! The core (`stream`, `namespace`, `memory`, `start`, `mpegts`) knows nothing of FUSE and is
//! tested alone; `fuse` is the front door that adapts it to the kernel (with `mount`);
//! `daemon` and `control` are the command line's machinery.

pub mod allocator;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod escape;
pub mod fuse;
pub mod http;
pub mod json;
pub mod logging;
pub mod memory;
pub mod mpegts;
pub mod namespace;
pub mod nats;
pub mod options;
pub mod panics;
pub mod ratelimit;
pub mod size;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod stream;
pub mod sync;
pub mod xattr;
