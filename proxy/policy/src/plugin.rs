//! Policy plugins: WebAssembly components that implement `wharf:policy@0.1.0` (`wit/policy.wit`), run
//! sandboxed on the request path.
//!
//! The chain (`Plugins`) is what the registry's phases call: `access` (first deny wins), `platforms`
//! (subsets intersect), `rewrite` (rewrites apply in order). Each call of a plugin is bounded (an epoch
//! deadline, memory and table limits; `host.rs`), and a failure — a trap, a timeout, an `err` result — is
//! an error of the plugin, never a decision: the plugin's fail policy decides what it means (`closed`:
//! deny; `open`: as if the plugin were not there). Access checks fail closed by default, platform
//! choice and rewrites fail open. A rewrite the caller's `RewriteCheck` refuses (one naming content
//! the repository cannot serve, one too large) is its plugin's failure too; a rewrite that fails
//! closed refuses the tag.
//!
//! Calls run inline on the request's task (on a wasmtime fiber, with WASI's async bindings), yielding
//! the worker thread every epoch tick; loading runs on the blocking pool (it compiles).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use wharf_metrics::PluginCall;
use wharf_model::config::{FailPolicy, PluginConfig};
use wharf_model::platform::Platform;
use wharf_model::request::Operation;
use wharf_model::request::RequestCtx;

mod error;
mod host;
#[cfg(test)]
mod tests;
mod wit;

pub use error::PluginError;
pub use host::{block_on, Capabilities, Host, Inspection, Loaded};
pub use wit::{WIT_PACKAGE, WIT_TEXT};

/// What a rewrite must be before the next plugin sees it or wharf keeps it: a rewrite that is not
/// is its plugin's failure (`Err`: why, for the log and a fail-closed refusal).
pub trait RewriteCheck: Sync {
    fn check(&self, out: &[u8]) -> impl Future<Output = Result<(), String>> + Send;
}

/// What the rewrite chain made of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The manifest after every plugin; `None` when it stays as it is.
    pub bytes: Option<Bytes>,
    /// A plugin failed on the way (and failed open): the outcome holds for now, but is no answer to
    /// remember for good (the plugin may be fixed, a missing child pushed).
    pub failed: bool,
}

impl Rewritten {
    /// `bytes`, made by wharf itself (a reduced index): no plugin could fail.
    pub fn made(bytes: Bytes) -> Rewritten {
        Rewritten {
            bytes: Some(bytes),
            failed: false,
        }
    }
}

/// A refusal by a chain: the reason the client sees, and which plugin gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub plugin: String,
    pub reason: String,
}

/// One configured plugin: the loaded component and how the chain treats it.
pub struct Plugin {
    pub name: String,
    loaded: Loaded,
    on: Option<Vec<Operation>>,
    fail: Option<FailPolicy>,
    /// Failures (traps, timeouts, `err` results) since wharf started.
    failures: AtomicU64,
    /// The file and its modification time, to notice a change.
    path: PathBuf,
    modified: Option<SystemTime>,
}

impl Plugin {
    fn sees(&self, op: Operation) -> bool {
        self.on.as_ref().is_none_or(|ops| ops.contains(&op))
    }

    fn failed(&self, e: &PluginError, what: &str, policy: FailPolicy) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        wharf_metrics::plugin_error(&self.name);
        tracing::warn!(
            plugin = %self.name, error = %e, failures = n,
            fail = ?policy, "{what} failed"
        );
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The loaded plugins, in config order.
pub struct PluginSet {
    pub plugins: Vec<Arc<Plugin>>,
    /// Identifies the set of manifest rewriters (names, component digests, configs): a rewrite computed
    /// under one key is reused until the set changes.
    rewrite_key: Option<String>,
}

impl PluginSet {
    fn load(host: &Host, cfgs: &[PluginConfig]) -> Result<PluginSet, PluginError> {
        let mut plugins = Vec::new();
        let mut key = String::new();
        for c in cfgs {
            let loaded = host.load(c)?;
            let on = match &c.on {
                None => None,
                Some(ops) => Some(
                    ops.iter()
                        .map(|o| o.parse())
                        .collect::<Result<Vec<Operation>, String>>()
                        .map_err(|reason| PluginError::Init {
                            plugin: c.name.clone(),
                            reason: format!("on: {reason}"),
                        })?,
                ),
            };
            if loaded.capabilities().manifests {
                key.push_str(&format!("{}={}:{};", c.name, loaded.digest(), c.config));
            }
            plugins.push(Arc::new(Plugin {
                name: c.name.clone(),
                on,
                fail: c.fail,
                failures: AtomicU64::new(0),
                modified: modified(&c.path),
                path: c.path.clone(),
                loaded,
            }));
        }
        let rewrite_key = (!key.is_empty()).then(|| {
            let d = wharf_model::digest::Digest::sha256_of(key.as_bytes());
            d.hex()[..16].to_owned()
        });
        Ok(PluginSet {
            plugins,
            rewrite_key,
        })
    }

    async fn access(&self, ctx: &RequestCtx) -> Result<(), Denial> {
        for p in self.plugins.iter().filter(|p| p.sees(ctx.operation)) {
            if !p.loaded.capabilities().access {
                continue;
            }
            let policy = p.fail.unwrap_or(FailPolicy::Closed);
            match wharf_metrics::plugin_call(&p.name, PluginCall::Access, p.loaded.check(ctx)).await
            {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    wharf_metrics::plugin_denied(&p.name);
                    return Err(Denial {
                        plugin: p.name.clone(),
                        reason,
                    });
                }
                Err(e) => {
                    p.failed(&e, "access check", policy);
                    if policy == FailPolicy::Closed {
                        return Err(Denial {
                            plugin: p.name.clone(),
                            reason: format!(
                                "{e}; access is refused while it fails (fail = \"closed\")"
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    async fn platforms(&self, ctx: &RequestCtx, available: &[Platform]) -> Vec<Platform> {
        let mut kept = available.to_vec();
        for p in self.plugins.iter().filter(|p| p.sees(ctx.operation)) {
            if !p.loaded.capabilities().platforms {
                continue;
            }
            let policy = p.fail.unwrap_or(FailPolicy::Open);
            match wharf_metrics::plugin_call(
                &p.name,
                PluginCall::Platforms,
                p.loaded.select(ctx, available),
            )
            .await
            {
                Ok(chosen) => kept.retain(|k| chosen.contains(k)),
                Err(e) => {
                    p.failed(&e, "platform selection", policy);
                    if policy == FailPolicy::Closed {
                        return Vec::new();
                    }
                }
            }
        }
        kept
    }

    /// Each plugin's output passes `check` before the next plugin sees it: a failure is that
    /// plugin's (its output is dropped, fail open; or the chain refuses, fail closed).
    async fn rewrite<C: RewriteCheck>(
        &self,
        ctx: &RequestCtx,
        media_type: &str,
        manifest: &[u8],
        check: &C,
    ) -> Result<Rewritten, Denial> {
        let mut current: Option<Vec<u8>> = None;
        let mut failed = false;
        for p in self.plugins.iter().filter(|p| p.sees(ctx.operation)) {
            if !p.loaded.capabilities().manifests {
                continue;
            }
            let policy = p.fail.unwrap_or(FailPolicy::Open);
            let input = current.as_deref().unwrap_or(manifest);
            let out = match wharf_metrics::plugin_call(
                &p.name,
                PluginCall::Manifests,
                p.loaded.rewrite(ctx, media_type, input),
            )
            .await
            {
                Ok(None) => continue,
                Ok(Some(bytes)) if bytes.as_slice() == input => continue,
                Ok(Some(bytes)) => match check.check(&bytes).await {
                    Ok(()) => Ok(bytes),
                    Err(reason) => Err(PluginError::Unservable {
                        plugin: p.name.clone(),
                        reason,
                    }),
                },
                Err(e) => Err(e),
            };
            match out {
                Ok(bytes) => current = Some(bytes),
                Err(e) => {
                    p.failed(&e, "manifest rewrite", policy);
                    if policy == FailPolicy::Closed {
                        return Err(Denial {
                            plugin: p.name.clone(),
                            reason: e.to_string(),
                        });
                    }
                    failed = true;
                }
            }
        }
        Ok(Rewritten {
            bytes: current
                .filter(|c| c.as_slice() != manifest)
                .map(Bytes::from),
            failed,
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The plugin chain the request path calls; reloadable while wharf runs.
#[derive(Clone)]
pub struct Plugins {
    host: Option<Arc<Host>>,
    cfgs: Arc<Vec<PluginConfig>>,
    set: Arc<RwLock<Arc<PluginSet>>>,
}

impl Plugins {
    /// No plugins: every check allows, nothing is rewritten.
    pub fn none() -> Plugins {
        Plugins {
            host: None,
            cfgs: Arc::new(Vec::new()),
            set: Arc::new(RwLock::new(Arc::new(PluginSet {
                plugins: Vec::new(),
                rewrite_key: None,
            }))),
        }
    }

    /// Loads every configured plugin (compiling each component once; precompiled copies are kept in
    /// `cache_dir` by the digest of the component's bytes). `max_answer`: the most bytes a call may
    /// hand back (`registry.max_manifest_bytes`; see `Host::new`).
    pub fn load(
        cfgs: &[PluginConfig],
        cache_dir: &Path,
        max_answer: u64,
    ) -> Result<Plugins, PluginError> {
        if cfgs.is_empty() {
            return Ok(Plugins::none());
        }
        let host = Host::new(cache_dir, max_answer).map_err(|reason| PluginError::Load {
            plugin: "(host)".into(),
            path: cache_dir.to_owned(),
            reason,
        })?;
        let host = Arc::new(host);
        let set = PluginSet::load(&host, cfgs)?;
        for p in &set.plugins {
            tracing::info!(plugin = %p.name, path = %p.path.display(), capabilities = %p.loaded.capabilities(), pooled = p.loaded.pooled(), "plugin loaded");
        }
        Ok(Plugins {
            host: Some(host),
            cfgs: Arc::new(cfgs.to_vec()),
            set: Arc::new(RwLock::new(Arc::new(set))),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.current().plugins.is_empty()
    }

    fn current(&self) -> Arc<PluginSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the configured plugins again; on failure the running set stays and the error says why.
    pub async fn reload(&self) -> Result<(), PluginError> {
        let Some(host) = self.host.clone() else {
            return Ok(());
        };
        let cfgs = self.cfgs.clone();
        let set = tokio::task::spawn_blocking(move || PluginSet::load(&host, &cfgs))
            .await
            .map_err(|e| PluginError::Trap {
                plugin: "(reload)".into(),
                reason: e.to_string(),
            })??;
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Whether a plugin file changed (or appeared, or went) since it was loaded.
    pub fn changed_on_disk(&self) -> bool {
        self.current()
            .plugins
            .iter()
            .any(|p| modified(&p.path) != p.modified)
    }

    /// Reloads on `SIGHUP` and when a plugin file changes (checked every `every`). Runs until dropped.
    pub async fn watch(self, every: Duration) {
        if self.host.is_none() {
            return;
        }
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            let why = tokio::select! {
                _ = tick.tick() => {
                    if !self.changed_on_disk() { continue; }
                    "a plugin file changed"
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            };
            match self.reload().await {
                Ok(()) => tracing::info!(reason = why, "plugins reloaded"),
                Err(e) => {
                    tracing::error!(reason = why, error = %e, "plugins not reloaded; the previous set keeps running");
                    // Do not retry a broken file every tick: remember its new state.
                    self.accept_disk_state();
                }
            }
        }
    }

    /// Records the current modification times, so a file that failed to load is not retried until it
    /// changes again.
    fn accept_disk_state(&self) {
        let cur = self.current();
        let plugins = cur
            .plugins
            .iter()
            .map(|p| {
                Arc::new(Plugin {
                    name: p.name.clone(),
                    loaded: p.loaded.clone(),
                    on: p.on.clone(),
                    fail: p.fail,
                    failures: AtomicU64::new(p.failures()),
                    path: p.path.clone(),
                    modified: modified(&p.path),
                })
            })
            .collect();
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(PluginSet {
            plugins,
            rewrite_key: cur.rewrite_key.clone(),
        });
    }

    /// The access phase: `Err` with the first plugin's refusal (or a failing plugin's, where it fails
    /// closed).
    pub async fn access(&self, ctx: RequestCtx) -> Result<(), Denial> {
        let set = self.current();
        if set.plugins.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let r = set.access(&ctx).await;
        tracing::trace!(
            micros = started.elapsed().as_micros() as u64,
            "access chain"
        );
        r
    }

    /// The platforms to keep of `available` (all of them without platform plugins).
    pub async fn platforms(&self, ctx: RequestCtx, available: Vec<Platform>) -> Vec<Platform> {
        let set = self.current();
        if !set
            .plugins
            .iter()
            .any(|p| p.loaded.capabilities().platforms)
        {
            return available;
        }
        set.platforms(&ctx, &available).await
    }

    /// Whether a plugin chooses platforms (else `platforms` keeps everything, and the mirror need not ask).
    pub fn selects_platforms(&self) -> bool {
        self.current()
            .plugins
            .iter()
            .any(|p| p.loaded.capabilities().platforms)
    }

    /// The names of the plugins that choose platforms, for messages that say who left one out.
    pub fn platform_plugins(&self) -> Vec<String> {
        self.current()
            .plugins
            .iter()
            .filter(|p| p.loaded.capabilities().platforms)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Identifies the current set of manifest rewriters; `None` when no plugin rewrites manifests.
    pub fn rewrite_key(&self) -> Option<String> {
        self.current().rewrite_key.clone()
    }

    /// The manifest after every rewriting plugin, each plugin's output held to `check`; `Err` when
    /// a plugin that fails closed failed.
    pub async fn rewrite<C: RewriteCheck>(
        &self,
        ctx: RequestCtx,
        media_type: String,
        manifest: Bytes,
        check: &C,
    ) -> Result<Rewritten, Denial> {
        let set = self.current();
        if set.rewrite_key.is_none() {
            return Ok(Rewritten {
                bytes: None,
                failed: false,
            });
        }
        set.rewrite(&ctx, &media_type, &manifest, check).await
    }

    pub fn set(&self) -> Arc<PluginSet> {
        self.current()
    }
}
