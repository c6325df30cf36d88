//! The policy phases of a request, between routing and serving: the access check (plugins' `access`;
//! client authentication rules join it later) and the manifest rewrite of what a tag serves. Local
//! repositories and the mirror both call here, with the request as plugins see it (`RequestCtx`).
//!
//! A rewritten manifest is content of its own: its bytes are stored by their digest, recorded for the
//! repository (so a `GET` by that digest serves them) and mapped from the original in the metadata.
//! Rewrites are computed once per original digest and plugin set, not per request; the original stays
//! retrievable by its digest.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::USER_AGENT;
use http::Request;

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::inflight::Flights;
use crate::manifest;
use crate::meta::{ManifestPut, ManifestRecord, Meta};
use crate::plugin::{Operation, Plugins, RequestCtx};
use crate::store::ContentStore;

/// The client's address, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

type Served = (Digest, ManifestRecord);

#[derive(Clone)]
pub struct Policy {
    plugins: Plugins,
    store: Arc<dyn ContentStore>,
    meta: Meta,
    /// (original, plugin set) → what a tag serves, once known: warm pulls ask no one.
    rewrites: Arc<DashMap<(Digest, String), Digest>>,
    flights: Arc<Flights<(Digest, String), Option<Digest>>>,
}

impl Policy {
    pub fn new(plugins: Plugins, store: Arc<dyn ContentStore>, meta: Meta) -> Policy {
        Policy {
            plugins,
            store,
            meta,
            rewrites: Arc::new(DashMap::new()),
            flights: Arc::new(Flights::default()),
        }
    }

    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// Whether any plugin rewrites manifests (else what a tag serves is what it names).
    pub fn rewrites(&self) -> bool {
        self.plugins.rewrite_key().is_some()
    }

    /// The request as plugins see it. `registry` is the upstream host for mirrored content.
    pub fn context<B>(
        operation: Operation,
        registry: Option<&str>,
        repository: &str,
        reference: Option<String>,
        req: &Request<B>,
    ) -> RequestCtx {
        RequestCtx {
            operation,
            registry: registry.map(str::to_owned),
            repository: repository.to_owned(),
            reference,
            client_address: req
                .extensions()
                .get::<ClientAddr>()
                .map_or_else(String::new, |c| c.0.to_string()),
            identity: req
                .extensions()
                .get::<crate::auth::Caller>()
                .and_then(|c| c.identity.clone()),
            user_agent: req
                .headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// The access phase: `403 DENIED` with the plugin's reason, or go on.
    pub async fn allow(&self, ctx: RequestCtx) -> Result<()> {
        if self.plugins.is_empty() {
            return Ok(());
        }
        let name = match &ctx.registry {
            Some(r) => format!("{r}/{}", ctx.repository),
            None => ctx.repository.clone(),
        };
        let what = format!("{} of {name}", ctx.operation.as_str());
        self.plugins.access(ctx).await.map_err(|d| {
            tracing::info!(plugin = %d.plugin, reason = %d.reason, request = %what, "denied by plugin");
            crate::ui::denied(&d.plugin, &name, &what, &d.reason);
            RegistryError::new(
                ErrorCode::Denied,
                format!("{what} denied by plugin {}: {}", d.plugin, d.reason),
            )
        })
    }

    /// What a tag of `repo` (a local repository, or the mirror's cache repository) serves: the
    /// manifest `d` as the rewriting plugins leave it. Computed once per original digest and plugin
    /// set; a plugin that fails, or bytes that are not a manifest, serve the original (fail open).
    pub async fn tag_manifest(
        &self,
        repo: &str,
        ctx: RequestCtx,
        d: Digest,
        rec: ManifestRecord,
    ) -> Result<Served> {
        let Some(key) = self.plugins.rewrite_key() else {
            return Ok((d, rec));
        };
        let plugins = self.plugins.clone();
        let by = "manifest rewritten by plugins";
        self.derived(repo, d, rec, key, by, move |rec, bytes| async move {
            plugins.rewrite(ctx, rec.media_type, bytes).await
        })
        .await
    }

    /// What `repo` serves for manifest `d` once `derive` has made something of it (`None`: `d` as it
    /// is). A derived manifest is content of its own: stored by its digest, recorded for `repo`, and
    /// mapped from `d` under `key` in the metadata (the provenance the collector keeps together).
    /// Computed once per original digest and key, not per request: the plugins' rewrites, and the
    /// mirror's platform-reduced indexes (`platforms:` keys). `logged` is the log line of a new one.
    pub async fn derived<F, Fut>(
        &self,
        repo: &str,
        d: Digest,
        rec: ManifestRecord,
        key: String,
        logged: &'static str,
        derive: F,
    ) -> Result<Served>
    where
        F: FnOnce(ManifestRecord, Bytes) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<Bytes>> + Send + 'static,
    {
        let cache_key = (d.clone(), key.clone());
        let mut derive = Some(derive);
        let known = match self.rewrites.get(&cache_key).map(|v| v.clone()) {
            Some(n) => Some(n),
            None => self.meta.rewrite_of(&d, &key).await?,
        };
        // Known from before, but collected since (its original lost every tag, then came back):
        // derived again, once.
        for fresh in [known.is_none(), true] {
            let new = match (&known, fresh) {
                (Some(n), false) => n.clone(),
                _ => {
                    let Some(derive) = derive.take() else {
                        break;
                    };
                    let this = self.clone();
                    let (d2, rec2, key2, repo2) =
                        (d.clone(), rec.clone(), key.clone(), repo.to_owned());
                    self.flights
                        .run(cache_key.clone(), move || async move {
                            this.compute(&repo2, &d2, &rec2, &key2, logged, derive)
                                .await
                        })
                        .await
                        .flatten()
                        .unwrap_or_else(|| d.clone())
                }
            };
            self.rewrites.insert(cache_key.clone(), new.clone());
            if new == d {
                return Ok((d, rec));
            }
            if let Some(r) = self.meta.manifest(repo, &new).await? {
                return Ok((new, r));
            }
            // Derived for another repository: record the same content for this one too.
            if let Some(r) = adopt_manifest(&*self.store, &self.meta, repo, &new, 16 << 20).await {
                return Ok((new, r));
            }
            self.rewrites.remove(&cache_key);
        }
        Ok((d, rec))
    }

    /// Runs `derive` on `d` and keeps the result; `None` when it could not be kept.
    async fn compute<F, Fut>(
        &self,
        repo: &str,
        d: &Digest,
        rec: &ManifestRecord,
        key: &str,
        logged: &str,
        derive: F,
    ) -> Option<Digest>
    where
        F: FnOnce(ManifestRecord, Bytes) -> Fut,
        Fut: std::future::Future<Output = Option<Bytes>>,
    {
        let bytes = self.store.read_all(d, rec.size).await.ok()?;
        let new = match derive(rec.clone(), bytes).await {
            None => d.clone(),
            Some(out) => match self.store_rewrite(repo, rec, out).await {
                Ok(n) => n,
                Err(why) => {
                    tracing::warn!(repo, original = %d, key, error = %why, "manifest rewrite not used; serving the original");
                    return None;
                }
            },
        };
        if let Err(e) = self.meta.record_rewrite(d, key, &new).await {
            tracing::warn!(original = %d, error = %e, "cannot record the manifest rewrite");
        }
        if new != *d {
            tracing::info!(repo, original = %d, rewritten = %new, key, "{logged}");
        }
        Some(new)
    }

    async fn store_rewrite(
        &self,
        repo: &str,
        rec: &ManifestRecord,
        out: Bytes,
    ) -> std::result::Result<Digest, String> {
        let m = manifest::parse(Some(&rec.media_type), &out)
            .map_err(|e| format!("the rewrite is not a valid manifest: {e}"))?;
        if m.media_type != rec.media_type {
            return Err(format!(
                "the rewrite changed the media type from {} to {}",
                rec.media_type, m.media_type
            ));
        }
        let new = Digest::sha256_of(&out);
        let record = ManifestRecord {
            media_type: m.media_type,
            size: out.len() as u64,
            subject: m.subject,
        };
        self.store.put(&new, out).await.map_err(|e| e.to_string())?;
        self.meta
            .put_manifest(ManifestPut {
                repo,
                digest: &new,
                record,
                tag: None,
                referrer: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(new)
    }
}

/// Records manifest `d`, already in the content store, for `repo` (content that came in under another
/// name); `None` when it is not there or not a manifest.
pub(crate) async fn adopt_manifest(
    store: &dyn ContentStore,
    meta: &Meta,
    repo: &str,
    d: &Digest,
    limit: u64,
) -> Option<ManifestRecord> {
    // `stat` through the request path's store touches `d` (waiting out a sweep that is removing it)
    // before a record of it is made: reading alone is no use, and a collection running now could
    // otherwise remove what this is about to record (and a tag then points at).
    store.stat(d).await.ok()??;
    let bytes = store.read_all(d, limit).await.ok()?;
    let m = manifest::parse(None, &bytes).ok()?;
    let record = ManifestRecord {
        media_type: m.media_type,
        size: bytes.len() as u64,
        subject: m.subject,
    };
    meta.put_manifest(ManifestPut {
        repo,
        digest: d,
        record: record.clone(),
        tag: None,
        referrer: None,
    })
    .await
    .ok()?;
    Some(record)
}
