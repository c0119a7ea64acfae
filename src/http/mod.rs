//! The HTTP gateway: a second front door onto the same core as the FUSE adapter. It maps
//! requests onto `Namespace`, `Stream`, `Reader` and `Writer` and knows nothing of FUSE.

pub mod observe;
