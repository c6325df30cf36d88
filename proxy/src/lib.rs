//! wharf: a registry-protocol proxy for container images. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod archive;
pub mod body;
pub mod config;
pub mod digest;
pub mod error;
pub mod fill;
pub mod gc;
pub mod images;
pub mod inflight;
pub mod lease;
pub mod logbuf;
pub mod manifest;
pub mod meta;
pub mod mirror;
pub mod plugin;
pub mod policy;
pub mod push;
pub mod range;
pub mod reference;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod zerocopy;
