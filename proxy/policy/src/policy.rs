//! The policy phases of a request, between routing and serving: the access check (plugins' `access`;
//! client authentication rules join it later) and the manifest rewrite of what a tag serves. Local
//! repositories and the mirror both call here, with the request as plugins see it (`RequestCtx`).
//!
//! A rewritten manifest is content of its own: its bytes are stored by their digest, recorded for the
//! repository (so a `GET` by that digest serves them) and mapped from the original in the metadata.
//! Rewrites are computed once per original digest and plugin set, not per request; the original stays
//! retrievable by its digest. Nothing derived is served that the repository could not serve whole
//! (`servable.rs`: its size, its media type, every digest it names).

mod servable;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::USER_AGENT;
use http::Request;

use crate::denials::Denials;
use crate::plugin::{Denial, Plugins, Rewritten};
use wharf_model::digest::Digest;
use wharf_model::manifest;
use wharf_model::request::{Operation, RequestCtx};
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_storage::inflight::Flights;
use wharf_storage::lease::Touching;
use wharf_storage::meta::{ManifestPut, ManifestRecord, Meta};
use wharf_storage::store::ContentStore;

pub use servable::{Repo, Servable, Unservable};
use wharf_model::request::{ClientAddr, Sender};

type Served = (Digest, ManifestRecord);

/// (repository, original, key): derivations are remembered per repository, as what one repository
/// may serve another may not.
type DerivedKey = (String, Digest, String);

#[derive(Clone)]
pub struct Policy {
    plugins: Plugins,
    store: Arc<dyn ContentStore>,
    meta: Meta,
    /// `registry.max_manifest_bytes`: a derived manifest is held to it as a pushed one is.
    max_manifest: u64,
    /// What a tag serves, once known: warm pulls ask no one.
    rewrites: Arc<DashMap<DerivedKey, Digest>>,
    /// `Err`: a plugin that fails closed failed; the tag is refused.
    flights: Arc<Flights<DerivedKey, std::result::Result<Option<Digest>, Denial>>>,
    /// What plugins denied lately, for the status page to read.
    denials: Arc<Denials>,
}

impl Policy {
    pub fn new(plugins: Plugins, store: Arc<Touching>, meta: Meta, max_manifest: u64) -> Policy {
        Policy {
            plugins,
            store,
            meta,
            max_manifest,
            rewrites: Arc::new(DashMap::new()),
            flights: Arc::new(Flights::default()),
            denials: Arc::new(Denials::default()),
        }
    }

    /// The requests plugins denied lately (the status page shows them).
    pub fn denials(&self) -> &Arc<Denials> {
        &self.denials
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
        let sender = match req.extensions().get::<Sender>() {
            Some(s) => s.clone(),
            None => Policy::sender(req),
        };
        RequestCtx {
            operation,
            registry: registry.map(str::to_owned),
            repository: repository.to_owned(),
            reference,
            client_address: sender.client_address,
            identity: sender.identity,
            user_agent: sender.user_agent,
        }
    }

    /// Who sent `req`, read from it: its address, the identified caller, its user agent. The
    /// registry reads it once per request and puts it on the request (`Sender`).
    pub fn sender<B>(req: &Request<B>) -> Sender {
        Sender {
            client_address: req
                .extensions()
                .get::<ClientAddr>()
                .map_or_else(String::new, |c| c.0.to_string()),
            identity: req
                .extensions()
                .get::<wharf_model::request::Caller>()
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
            self.denials.record(&d.plugin, &name, &what, &d.reason);
            RegistryError::new(
                ErrorCode::Denied,
                format!("{what} denied by plugin {}: {}", d.plugin, d.reason),
            )
        })
    }

    /// What a tag of `repo` serves: the manifest `d` as the rewriting plugins leave it. Computed
    /// once per original digest and plugin set. A plugin that fails, or whose output the repository
    /// could not serve (`Servable`), is skipped (fail open: the original is served) or refuses the
    /// tag (`fail = "closed"`: 403 DENIED naming the plugin).
    pub async fn tag_manifest(
        &self,
        repo: Repo<'_>,
        ctx: RequestCtx,
        d: Digest,
        rec: ManifestRecord,
    ) -> Result<Served> {
        let Some(key) = self.plugins.rewrite_key() else {
            return Ok((d, rec));
        };
        let plugins = self.plugins.clone();
        let by = "manifest rewritten by plugins";
        let what = format!(
            "tag {} of {}",
            ctx.reference.as_deref().unwrap_or("?"),
            repo.name()
        );
        self.derived(repo, d, rec, key, by, move |rec, bytes, check| async move {
            plugins.rewrite(ctx, rec.media_type, bytes, &*check).await
        })
        .await
        .map_err(|e| match e {
            Refusal::Registry(e) => e,
            Refusal::Closed(d) => RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "{what} is refused: {}; plugin {}'s [[plugin]] entry says fail = \"closed\" \
                     (with fail = \"open\", the tag serves the original manifest while the \
                     rewrite fails)",
                    d.reason, d.plugin
                ),
            ),
        })
    }

    /// What `repo` serves for manifest `d` once `derive` has made something of it (`None`: `d` as it
    /// is). A derived manifest is content of its own: checked (`Servable`: `derive` gets the check
    /// for its own steps), stored by its digest, recorded for `repo`, and mapped from `d` under `key`
    /// in the metadata (the provenance the collector keeps together). Computed once per repository,
    /// original digest and key, not per request: the plugins' rewrites, and the reduced indexes of
    /// the mirror and of push routes (`platforms:` keys). `logged` is the log line of a new one.
    pub async fn derived<F, Fut>(
        &self,
        repo: Repo<'_>,
        d: Digest,
        rec: ManifestRecord,
        key: String,
        logged: &'static str,
        derive: F,
    ) -> std::result::Result<Served, Refusal>
    where
        F: FnOnce(ManifestRecord, Bytes, Arc<Servable>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<Rewritten, Denial>> + Send + 'static,
    {
        let name = repo.name();
        let cache_key = (name.to_owned(), d.clone(), key.clone());
        if let Some(n) = self.rewrites.get(&cache_key).map(|v| v.clone()) {
            if n == d {
                return Ok((d, rec));
            }
            if let Some(r) = self.meta.manifest(name, &n).await? {
                return Ok((n, r));
            }
            // Collected since (its original lost every tag, then came back): derived again.
            self.rewrites.remove(&cache_key);
        }
        if let Some(n) = self.meta.rewrite_of(&d, &key).await? {
            if n == d {
                self.rewrites.insert(cache_key, n);
                return Ok((d, rec));
            }
            if let Some(r) = self.meta.manifest(name, &n).await? {
                self.rewrites.insert(cache_key, n.clone());
                return Ok((n, r));
            }
            // Derived for another repository (or its record here collected): the same content, if
            // this repository can serve it too; else derived again, for this one.
            if let Some(r) = self.adopt(repo, &d, &rec, &n).await {
                self.rewrites.insert(cache_key, n.clone());
                return Ok((n, r));
            }
        }
        let this = self.clone();
        let (d2, rec2, key2, name2) = (d.clone(), rec.clone(), key.clone(), name.to_owned());
        // The flight outlives this call's borrows: it takes the kind, and its own copy of the name.
        let kind = repo.like("");
        let new = self
            .flights
            .run(cache_key.clone(), move || async move {
                let repo = kind.like(&name2);
                this.compute(repo, &d2, &rec2, &key2, logged, derive).await
            })
            .await
            .unwrap_or(Ok(None))
            .map_err(Refusal::Closed)?
            .unwrap_or_else(|| d.clone());
        self.rewrites.insert(cache_key.clone(), new.clone());
        if new == d {
            return Ok((d, rec));
        }
        if let Some(r) = self.meta.manifest(name, &new).await? {
            return Ok((new, r));
        }
        self.rewrites.remove(&cache_key);
        Ok((d, rec))
    }

    /// Runs `derive` on `d` and keeps the result: `Ok(None)` when it could not be kept (the original
    /// is served), `Err` when a plugin that fails closed failed.
    async fn compute<F, Fut>(
        &self,
        repo: Repo<'_>,
        d: &Digest,
        rec: &ManifestRecord,
        key: &str,
        logged: &str,
        derive: F,
    ) -> std::result::Result<Option<Digest>, Denial>
    where
        F: FnOnce(ManifestRecord, Bytes, Arc<Servable>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Rewritten, Denial>>,
    {
        let name = repo.name();
        let Ok(bytes) = self.store.read_all(d, rec.size).await else {
            return Ok(None);
        };
        let check = Arc::new(Servable::new(
            self.meta.clone(),
            repo,
            &rec.media_type,
            &bytes,
            self.max_manifest,
        ));
        let out = derive(rec.clone(), bytes, check.clone()).await?;
        let new = match out.bytes {
            None => d.clone(),
            Some(bytes) => match self.store_derived(name, &check, bytes).await {
                Ok(n) => n,
                Err(why) => {
                    tracing::warn!(repo = name, original = %d, key, error = %why, "manifest rewrite not used; serving the original");
                    return Ok(None);
                }
            },
        };
        if new != *d {
            tracing::info!(repo = name, original = %d, rewritten = %new, key, "{logged}");
        }
        // What a plugin that failed open left is served for now, but not recorded: after a restart
        // or a reload the chain runs again (the plugin may be fixed, a missing child pushed).
        if !out.failed {
            if let Err(e) = self.meta.record_rewrite(d, key, &new).await {
                tracing::warn!(original = %d, error = %e, "cannot record the manifest rewrite");
            }
        }
        Ok(Some(new))
    }

    /// Stores `out` for `repo` once `check` says the repository can serve it; its digest.
    async fn store_derived(
        &self,
        repo: &str,
        check: &Servable,
        out: Bytes,
    ) -> std::result::Result<Digest, String> {
        // Each plugin's output was checked in the chain already; checked here again for what no
        // plugin made (reduced indexes), and as the last word before a record.
        let m = check.servable(&out).await.map_err(|e| e.to_string())?;
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

    /// Records `new`, derived from `d` (for another repository), for `repo` too, if `repo` can serve
    /// it; `None` when it cannot, or `new` is gone.
    async fn adopt(
        &self,
        repo: Repo<'_>,
        d: &Digest,
        rec: &ManifestRecord,
        new: &Digest,
    ) -> Option<ManifestRecord> {
        let original = self.store.read_all(d, rec.size).await.ok()?;
        let bytes = self.store.read_all(new, self.max_manifest).await.ok()?;
        let check = Servable::new(
            self.meta.clone(),
            repo,
            &rec.media_type,
            &original,
            self.max_manifest,
        );
        if let Err(e) = check.servable(&bytes).await {
            tracing::info!(repo = repo.name(), original = %d, rewritten = %new, error = %e, "a rewrite made for another repository is not served here; deriving it again for this one");
            return None;
        }
        adopt_manifest(
            &*self.store,
            &self.meta,
            repo.name(),
            new,
            self.max_manifest,
        )
        .await
    }
}

/// Why `Policy::derived` has nothing to serve.
#[derive(Debug)]
pub enum Refusal {
    /// A plugin that fails closed failed.
    Closed(Denial),
    Registry(RegistryError),
}

impl From<wharf_storage::meta::MetaError> for Refusal {
    fn from(e: wharf_storage::meta::MetaError) -> Self {
        Refusal::Registry(e.into())
    }
}

impl From<Refusal> for RegistryError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Registry(e) => e,
            Refusal::Closed(d) => RegistryError::new(
                ErrorCode::Denied,
                format!("refused by plugin {}: {}", d.plugin, d.reason),
            ),
        }
    }
}

/// Records manifest `d`, already in the content store, for `repo` (content that came in under another
/// name); `None` when it is not there or not a manifest.
pub async fn adopt_manifest(
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
