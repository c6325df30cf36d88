//! wharf's vocabulary, the ground floor every other part stands on: content digests, repository
//! names and references, byte ranges, manifests and their descriptors, platforms, what a request is
//! (its operation, its caller, what a token grants), the one clock, units as people read them, and
//! the configuration schema.
//! Values and pure functions only: no I/O but reading a config file, nothing of wharf above it.

pub mod clock;
pub mod config;
pub mod digest;
pub mod manifest;
pub mod operation;
pub mod platform;
pub mod range;
pub mod reference;
pub mod request;
pub mod scope;
pub mod units;
