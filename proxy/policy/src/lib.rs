//! wharf's policy floor: who is asking and what they may do. Identity and rules (`auth`: htpasswd,
//! tokens and wharf's own token endpoint, the `[[auth.rule]]`s, failed-login limits), the plugin
//! host (`plugin`: wasmtime and the `wharf:policy` components; wasmtime lives here and only here),
//! the policy phases a request passes (`policy`: access, manifest rewrites and the checks that keep a
//! rewrite servable), and the denials those phases record as data for the status page (`denials`).
//!
//! Stands on the model, storage, the protocol and the counters; the features and the front door
//! above call in.

pub mod auth;
pub mod denials;
pub mod plugin;
pub mod policy;
