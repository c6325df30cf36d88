//! The OCI distribution protocol as wharf speaks it, on both sides: errors and their OCI codes
//! (`error`), response bodies that stream from the store or leave by `sendfile` (`body`,
//! `zerocopy`), what a request path means (`route`), the responses every endpoint builds
//! (`respond`, `referrers`), and the client for upstream registries (`upstream`).
//!
//! Stands on the model, the storage floor (a body streams a stored blob; a manifest answer reads
//! its record) and the counters. Knows nothing of policy, features, the server or the CLI.

pub mod body;
pub mod error;
pub mod referrers;
pub mod respond;
pub mod route;
pub mod upstream;
pub mod zerocopy;
