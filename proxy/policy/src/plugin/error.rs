//! Why a plugin could not be loaded or did not answer (`PluginError`), for the loader, the host and
//! the chain alike.

use std::path::PathBuf;

use super::wit::WIT_PACKAGE;

/// Why a plugin could not be loaded or did not answer. Never a decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: cannot read {path}: {reason} (check path in its [[plugin]] entry)")]
    Read {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin {plugin}: {path} is not a WebAssembly component wharf can run: {reason} (build it \
         for wasm32-wasip2, or as a component with componentize-py / componentize-js, against \
         wit/policy.wit)"
    )]
    Load {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin {plugin}: {path} exports none of {WIT_PACKAGE}'s interfaces (access, platforms, \
         manifests); build it for one of the worlds in wit/policy.wit, e.g. access-policy"
    )]
    NoCapability { plugin: String, path: PathBuf },
    #[error(
        "plugin {plugin}: init refused its config: {reason} (fix config in its [[plugin]] entry)"
    )]
    Init { plugin: String, reason: String },
    #[error(
        "plugin {plugin} did not answer within {timeout_ms} ms (raise timeout_ms in its [[plugin]] \
         entry, or fix the plugin)"
    )]
    Timeout { plugin: String, timeout_ms: u64 },
    #[error("plugin {plugin} failed: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin {plugin} returned an error: {reason}")]
    Returned { plugin: String, reason: String },
    #[error(
        "plugin {plugin} handed wharf more than {limit} bytes at once (a manifest, a reason, a log \
         line); wharf refused them without copying them out (the limit is \
         registry.max_manifest_bytes, at least 1 MiB): fix the plugin"
    )]
    TooLarge { plugin: String, limit: usize },
    #[error("plugin {plugin}'s rewrite cannot be served: {reason}")]
    Unservable { plugin: String, reason: String },
}
