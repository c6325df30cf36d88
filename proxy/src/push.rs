//! The push gateway: pushes to a routed repository are stored here as any push, then delivered to the
//! upstream repository the route names, through policy (access, platforms, rewrites).
//!
//! - `Routes`: `[[push]]` entries; a local name (`ci/app/x`) or a name the client gave for the
//!   upstream (`team/app/x` with `?ns=host`, or a path prefix) → the route and both names.
//! - `Push::pushed`: the manifest phase of a routed push. A journal entry (durable) and one lease
//!   over everything it will send come first; then write-through delivers before the client is
//!   answered, store-and-forward answers and leaves the delivery to the worker (`Push::run`).
//!   Write-through retries only while the upstream moves (`push/progress.rs`): after
//!   `write_through_timeout_secs` without progress the client is told the push failed, and the
//!   entry is failed, not left to the worker behind the client's back.
//! - `push/deliver.rs` sends; `push/journal.rs` holds the record and the scheduling decisions.
//!
//! The lease is the fix for nerdctl's "content digest not found": a reduced index, its children and
//! their blobs are protected from before the reduced index is built until the upstream has them all,
//! whatever the collector does meanwhile; nothing is ever deleted and made again on the way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use wharf_model::clock::unix_now;
use wharf_model::config::{Config, DeliveryConfig, PushMode};
use wharf_model::digest::Digest;
use wharf_model::manifest::Descriptor;
use wharf_model::manifest::{self, Kind};
use wharf_model::platform::Platform;
use wharf_model::request::{Operation, RequestCtx};
use wharf_policy::plugin::Rewritten;
use wharf_policy::policy::{Policy, Repo};
use wharf_protocol::error::{ErrorCode, RegistryError};
use wharf_storage::inflight::Flights;
use wharf_storage::lease::{Leases, Touching};
use wharf_storage::meta::push::Claim;
use wharf_storage::meta::{ManifestPut, ManifestRecord, Meta, MetaError};
use wharf_storage::store::ContentStore;

pub mod deliver;
mod error;
pub mod journal;
pub mod progress;
pub mod route;

use deliver::{DeliverError, Sender};
pub use error::PushError;
use journal::{Delivery, State};
use progress::Progress;
pub use route::PushRoute;
use route::{config_err, under};

/// A delivery's lease lasts this long between attempts (renewed at each); a failed one keeps it until
/// it is retried or dropped.
const PUSH_LEASE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Delivered entries the journal keeps listing (the newest).
const KEEP_DELIVERED: usize = 1000;
/// Blob uploads of one delivery in flight at once.
const BLOBS_AT_ONCE: usize = 4;
/// How soon the worker looks again at a due entry another deliverer holds (another wharf on the
/// shared database): should that one die, its claim dies with its connection, and the entry is taken
/// over within this.
const HELD_ELSEWHERE_RECHECK: Duration = Duration::from_secs(5);

/// A manifest a client pushed to a routed repository, checked and stored, not yet recorded.
pub struct Pushed {
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Digest,
    pub record: ManifestRecord,
    pub referrer: Option<Descriptor>,
    /// Everything the manifest reaches (children, their blobs): leased with it.
    pub reaches: Vec<Digest>,
}

/// One delivery as `wharf push status` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeliveryStatus {
    pub id: u64,
    pub state: State,
    pub mode: PushMode,
    pub repository: String,
    pub reference: String,
    pub digest: Digest,
    pub target: String,
    pub upstream_repository: String,
    pub upstream_digest: Option<Digest>,
    pub platforms: Option<Vec<String>>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix seconds.
    pub next_try: Option<u64>,
    pub created: u64,
    pub delivered_at: Option<u64>,
    pub lease: Option<String>,
}

impl DeliveryStatus {
    fn of(id: u64, d: Delivery) -> DeliveryStatus {
        DeliveryStatus {
            id,
            state: d.state,
            mode: d.mode,
            repository: d.repository,
            reference: d.reference,
            digest: d.digest,
            target: d.target,
            upstream_repository: d.upstream_repository,
            upstream_digest: d.upstream_digest,
            platforms: d.platforms,
            attempts: d.attempts,
            last_error: d.last_error,
            next_try: d.next_try_ms.map(|ms| ms.div_ceil(1000)),
            created: d.created,
            delivered_at: d.delivered_at,
            lease: d.lease,
        }
    }
}

/// Whose turn a due entry is, once the worker asked for its claim.
enum Turn {
    /// This worker's: claimed, and still due as the record reads now.
    Mine(Claim, Box<Delivery>),
    /// Another deliverer holds it.
    Elsewhere,
    /// Delivered, failed or put off since the journal was listed.
    Moved,
}

/// What one attempt delivered.
struct Sent {
    top: Digest,
    platforms: Option<Vec<String>>,
}

/// What goes upstream for one delivery, in order.
struct Plan {
    blobs: Vec<(Digest, u64)>,
    /// Child manifests: digest, media type, bytes.
    children: Vec<(Digest, String, Bytes)>,
    top: (Digest, String, Bytes),
    platforms: Option<Vec<String>>,
}

type BlobKey = (String, String, Digest);

/// A write-through delivery's watch on its upstream repository: it ends after `limit` in which
/// nothing moved.
struct Watch {
    progress: Arc<Progress>,
    since: Instant,
    limit: Duration,
}

impl Watch {
    /// Why the delivery ends: the limit, and the last failure if an attempt failed before.
    fn error(&self, rec: &Delivery) -> DeliverError {
        let host = rec
            .target
            .split_once("://")
            .map_or(rec.target.as_str(), |(_, h)| h);
        let cause = match &rec.last_error {
            Some(e) => format!("the last try failed: {e}"),
            None => "it answered none of the requests under way".to_owned(),
        };
        DeliverError::stalled(format!(
            "upstream {host} took nothing for {} s, the most a write-through push waits ([delivery] \
             write_through_timeout_secs); {cause}",
            self.limit.as_secs()
        ))
    }
}

/// The push phase and the delivery worker. Cheap to share (`Arc`).
pub struct Push {
    routes: Vec<PushRoute>,
    store: Arc<dyn ContentStore>,
    meta: Meta,
    leases: Leases,
    policy: Policy,
    cfg: DeliveryConfig,
    /// Wakes the worker: a new entry, a retry.
    wake: tokio::sync::Notify,
    /// Deliveries running now (the worker's and write-through's).
    running: Mutex<HashSet<u64>>,
    /// Due entries another deliverer held when last asked: each is logged once, not every round.
    held_elsewhere: Mutex<HashSet<u64>>,
    /// One upload per blob and upstream repository at once: the eager upload of a committed blob and
    /// the delivery that needs it share it.
    blobs: Flights<BlobKey, Result<(), DeliverError>>,
    /// How each upstream repository (endpoint, repository) is moving.
    progress: Mutex<HashMap<(String, String), Arc<Progress>>>,
}

/// The `[[push]]` routes of `cfg`, each checked alone and against the others (no two prefixes may
/// overlap). Pure: `wharf check-config` asks it without building anything.
pub fn routes(cfg: &Config) -> Result<Vec<PushRoute>, PushError> {
    let upstreams = cfg.effective_upstreams();
    let mut routes = Vec::new();
    for p in &cfg.pushes {
        let r = PushRoute::new(p, &upstreams)?;
        if let Some(other) = routes.iter().find(|o: &&PushRoute| {
            under(&r.prefix, &o.prefix).is_some() || under(&o.prefix, &r.prefix).is_some()
        }) {
            return Err(config_err(
                &r.prefix,
                format!(
                    "overlaps {}; give each route a prefix of its own",
                    other.describe()
                ),
            ));
        }
        routes.push(r);
    }
    Ok(routes)
}

impl Push {
    /// The routes of `cfg`, delivering from `store` under its leases; reduced indexes are stored
    /// through `policy`.
    pub fn new(
        cfg: &Config,
        store: Arc<Touching>,
        meta: Meta,
        policy: Policy,
    ) -> Result<Push, PushError> {
        let routes = routes(cfg)?;
        Ok(Push {
            routes,
            leases: store.leases().clone(),
            store,
            meta,
            policy,
            cfg: cfg.delivery.clone(),
            wake: tokio::sync::Notify::new(),
            running: Mutex::new(HashSet::new()),
            held_elsewhere: Mutex::new(HashSet::new()),
            blobs: Flights::default(),
            progress: Mutex::new(HashMap::new()),
        })
    }

    /// The progress record of upstream repository `repo` at `endpoint`.
    fn progress(&self, endpoint: &str, repo: &str) -> Arc<Progress> {
        self.progress
            .lock()
            .unwrap()
            .entry((endpoint.to_owned(), repo.to_owned()))
            .or_default()
            .clone()
    }

    fn sender(&self, route: &PushRoute, repo: String) -> Sender {
        Sender {
            progress: self.progress(&route.endpoint, &repo),
            upstream: route.upstream.clone(),
            repo,
            store: self.store.clone(),
            meta: self.meta.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn route(&self, prefix: &str) -> Option<&PushRoute> {
        self.routes.iter().find(|r| r.prefix == prefix)
    }

    /// The route of local repository `repo` and the upstream repository it is delivered to.
    pub fn route_of(&self, repo: &str) -> Option<(&PushRoute, String)> {
        self.routes
            .iter()
            .find_map(|r| r.remote_of(repo).map(|remote| (r, remote)))
    }

    /// For a request that names registry `host` and repository `remote` there: the local repository
    /// a route stores it under.
    pub fn local_name(&self, host: &str, remote: &str) -> Option<String> {
        self.routes.iter().find_map(|r| r.local_of(host, remote))
    }

    /// What clients call the registries the routes deliver to (`ns=` values, path prefixes).
    pub fn registry_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .flat_map(|r| r.names.iter().map(String::as_str))
    }

    /// Why a write naming `host` is refused: no route covers it.
    pub fn unrouted(&self, host: &str, remote: &str) -> RegistryError {
        let routes = if self.routes.is_empty() {
            "wharf has no push routes".to_owned()
        } else {
            format!(
                "the push routes are: {}",
                self.routes
                    .iter()
                    .map(PushRoute::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        RegistryError::new(
            ErrorCode::Denied,
            format!(
                "a push to {remote} on {host} through wharf needs a push route, and {routes}; add \
                 [[push]] prefix = \"<local name>\", target = \"https://{host}/{remote}\" to \
                 wharf's config (see examples/ci/), or push to a local repository name"
            ),
        )
    }

    /// Whether a manifest push to a routed repository is delivered on its own: by tag, or an index or
    /// a referrer by digest. An image manifest pushed by digest is an index's child, sent with it.
    pub fn delivers(tag: Option<&str>, m: &manifest::Manifest) -> bool {
        tag.is_some() || m.kind == Kind::Index || m.subject.is_some()
    }

    /// The manifest phase of a routed push: journal entry and lease, then the local record and (for
    /// write-through) the delivery, in the order that loses nothing whenever the process stops.
    pub async fn pushed(self: &Arc<Self>, p: Pushed) -> Result<(), RegistryError> {
        let Some((route, remote)) = self.route_of(&p.repo) else {
            return self
                .meta
                .put_manifest(ManifestPut {
                    repo: &p.repo,
                    digest: &p.digest,
                    record: p.record,
                    tag: p.tag.as_deref(),
                    referrer: p.referrer,
                })
                .await
                .map_err(Into::into);
        };
        // The manifest is recorded by digest at once (so it is served, and its links hold); the tag
        // follows the mode's rule.
        self.meta
            .put_manifest(ManifestPut {
                repo: &p.repo,
                digest: &p.digest,
                record: p.record.clone(),
                tag: None,
                referrer: p.referrer.clone(),
            })
            .await?;
        let reference = p.tag.clone().unwrap_or_else(|| p.digest.to_string());
        let lease = self
            .leases
            .acquire_labelled(
                &format!("push {}:{reference} to {}/{remote}", p.repo, route.endpoint),
                &[("repository", &p.repo), ("reference", &reference)],
                PUSH_LEASE,
            )
            .await?;
        let mut held = vec![p.digest.clone()];
        held.extend(p.reaches.iter().cloned());
        lease.protect(&held).await?;
        let lease_id = lease.id().to_owned();
        // The record owns the lease from here: released by id when delivered or dropped.
        drop(lease);
        let store_and_forward = route.mode == PushMode::StoreAndForward;
        let mut rec = Delivery {
            state: if store_and_forward {
                State::Pending
            } else {
                State::Delivering
            },
            mode: route.mode,
            route: route.prefix.clone(),
            repository: p.repo.clone(),
            reference: reference.clone(),
            tagged: p.tag.is_some(),
            digest: p.digest.clone(),
            target: route.endpoint.clone(),
            upstream_repository: remote,
            upstream_digest: None,
            platforms: None,
            attempts: 0,
            last_error: None,
            next_try_ms: None,
            created: unix_now(),
            delivered_at: None,
            lease: Some(lease_id),
            committed: !p.tagged_later(store_and_forward),
        };
        // Claimed from its creation: no deliverer (this wharf's worker, or another wharf's on the
        // shared database) takes the entry before it is set up, nor while write-through delivers it.
        let (id, claim) = self.meta.create_claimed_delivery(&rec).await?;
        self.drop_superseded(id, &rec).await;
        if store_and_forward {
            self.commit_local(&rec).await?;
            rec.committed = true;
            self.meta.put_delivery(id, &rec).await?;
            claim.release().await;
            tracing::info!(id, repo = %p.repo, reference, target = %route.endpoint, "push journaled for delivery");
            self.wake.notify_one();
            return Ok(());
        }
        // Its own task: a client that goes away does not cut the delivery (or the local tag) short.
        self.running.lock().unwrap().insert(id);
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut rec = rec;
            let outcome = this.write_through(id, &mut rec).await;
            claim.release().await;
            this.running.lock().unwrap().remove(&id);
            this.wake.notify_one();
            outcome.map_err(|e| (e, rec))
        });
        match task.await {
            Ok(outcome) => outcome.map_err(|(e, rec)| client_error(id, &rec, e)),
            Err(e) => Err(RegistryError::new(
                ErrorCode::Unknown,
                format!("delivery {id} stopped: {e}; `wharf push retry {id}` tries again"),
            )),
        }
    }

    /// Write-through: try now, retrying transient failures with the configured backoff while the
    /// upstream repository moves. Once `write_through_timeout_secs` pass without progress the entry
    /// is failed (kept with its lease, as a refusal is) and the client told: nothing goes on trying
    /// behind its back, and a push run again starts afresh.
    async fn write_through(&self, id: u64, rec: &mut Delivery) -> Result<(), DeliverError> {
        let watch = Watch {
            progress: self.progress(&rec.target, &rec.upstream_repository),
            since: Instant::now(),
            limit: Duration::from_secs(self.cfg.write_through_timeout_secs.max(1)),
        };
        loop {
            match self.attempt(id, rec, Some(&watch)).await {
                Ok(()) => return Ok(()),
                Err(e) if rec.state == State::Pending => {
                    let wait = journal::backoff(&self.cfg, rec.attempts, e.retry_after);
                    tracing::info!(id, error = %e, wait_ms = wait.as_millis() as u64, "write-through delivery failed; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = watch.progress.stalled(watch.since, watch.limit) => {
                            let e = watch.error(rec);
                            self.failed(id, rec, &e).await;
                            return Err(e);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records that delivery `id` gave up with `e` (failed, kept until retried or dropped).
    async fn failed(&self, id: u64, rec: &mut Delivery, e: &DeliverError) {
        rec.state = State::Failed;
        rec.last_error = Some(e.message.clone());
        rec.next_try_ms = None;
        tracing::warn!(id, error = %e, attempts = rec.attempts, "push delivery failed; `wharf push retry {id}` tries again");
        if let Err(e) = self.meta.put_delivery(id, rec).await {
            tracing::warn!(id, error = %e, "cannot record a delivery's outcome");
        }
    }

    /// One attempt at delivery `id`; the record is updated (and written) with the outcome. With a
    /// `watch` (write-through), an attempt in which the upstream stops moving ends there.
    async fn attempt(
        &self,
        id: u64,
        rec: &mut Delivery,
        watch: Option<&Watch>,
    ) -> Result<(), DeliverError> {
        rec.attempts += 1;
        let result = match watch {
            None => self.deliver(rec).await,
            Some(w) => tokio::select! {
                r = self.deliver(rec) => r,
                () = w.progress.stalled(w.since, w.limit) => Err(w.error(rec)),
            },
        };
        match &result {
            Ok(sent) => {
                rec.upstream_digest = Some(sent.top.clone());
                rec.platforms = sent.platforms.clone();
                if !rec.committed {
                    if let Err(e) = self.commit_local(rec).await {
                        tracing::warn!(id, error = %e.message, "delivered, but the local tag could not be recorded");
                    }
                    rec.committed = true;
                }
                rec.state = State::Delivered;
                rec.delivered_at = Some(unix_now());
                rec.last_error = None;
                rec.next_try_ms = None;
                if let Some(lease) = rec.lease.take() {
                    if let Err(e) = self.leases.release(&lease).await {
                        tracing::warn!(id, lease, error = %e, "cannot release a delivered push's lease; it expires on its own");
                    }
                }
                tracing::info!(id, repo = %rec.repository, reference = %rec.reference, target = %rec.target, upstream_repository = %rec.upstream_repository, upstream_digest = %sent.top, "push delivered");
            }
            Err(e) => {
                if e.permanent || rec.attempts >= self.cfg.max_attempts.max(1) {
                    self.failed(id, rec, e).await;
                    return result.map(|_| ());
                }
                rec.last_error = Some(e.message.clone());
                rec.state = State::Pending;
                let wait = journal::backoff(&self.cfg, rec.attempts, e.retry_after);
                rec.next_try_ms = Some(now_ms() + wait.as_millis() as u64);
            }
        }
        if let Err(e) = self.meta.put_delivery(id, rec).await {
            tracing::warn!(id, error = %e, "cannot record a delivery's outcome");
        }
        result.map(|_| ())
    }

    /// Drops the failed entries that delivery `id` supersedes (`journal::superseded`), with their
    /// leases: its own lease already holds what it sends.
    async fn drop_superseded(&self, id: u64, rec: &Delivery) {
        let entries = match self.meta.deliveries().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(id, error = %e, "cannot read the push journal to drop the failed pushes this one supersedes");
                return;
            }
        };
        for old in journal::superseded(&entries, id, rec) {
            match self.drop_delivery(old).await {
                Ok(_) => {
                    tracing::info!(id = old, by = id, repo = %rec.repository, reference = %rec.reference, "failed push superseded by a new push of the same tag; dropped")
                }
                Err(e) => {
                    tracing::warn!(id = old, by = id, error = %e.message, "cannot drop a failed push superseded by a new one")
                }
            }
        }
    }

    /// Records the local tag (or nothing more, for a push by digest).
    async fn commit_local(&self, rec: &Delivery) -> Result<(), RegistryError> {
        if !rec.tagged {
            return Ok(());
        }
        let record = self
            .meta
            .manifest(&rec.repository, &rec.digest)
            .await?
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::ManifestUnknown,
                    format!(
                        "manifest {} of {} is no longer recorded",
                        rec.digest, rec.repository
                    ),
                )
            })?;
        self.meta
            .put_manifest(ManifestPut {
                repo: &rec.repository,
                digest: &rec.digest,
                record,
                tag: Some(&rec.reference),
                referrer: None,
            })
            .await?;
        Ok(())
    }

    /// Sends delivery `rec`'s image: plan (reducing and rewriting as policy says), then blobs, child
    /// manifests and the top manifest.
    async fn deliver(&self, rec: &Delivery) -> Result<Sent, DeliverError> {
        let route = self.route(&rec.route).ok_or_else(|| {
            DeliverError::permanent(format!(
                "the config no longer has the [[push]] route with prefix = \"{}\"; add it back and \
                 `wharf push retry`, or `wharf push drop` this delivery",
                rec.route
            ))
        })?;
        if let Some(lease) = &rec.lease {
            self.leases.renew(lease, PUSH_LEASE).await.map_err(|e| {
                DeliverError::local(format!("cannot renew the delivery's lease: {e}"))
            })?;
        }
        let plan = self.plan(route, rec).await?;
        if let Some(lease) = &rec.lease {
            let mut held: Vec<Digest> = plan.blobs.iter().map(|(d, _)| d.clone()).collect();
            held.extend(plan.children.iter().map(|c| c.0.clone()));
            held.push(plan.top.0.clone());
            self.leases.protect(lease, &held).await.map_err(|e| {
                DeliverError::local(format!("cannot lease the delivery's content: {e}"))
            })?;
        }
        let sender = self.sender(route, rec.upstream_repository.clone());
        self.send_blobs(&sender, &plan.blobs).await?;
        for (d, media_type, bytes) in &plan.children {
            if !sender.has_manifest(d, media_type).await? {
                sender
                    .manifest(d, media_type, bytes, &d.to_string())
                    .await?;
            }
        }
        let (top, media_type, bytes) = &plan.top;
        let reference = if rec.tagged {
            rec.reference.clone()
        } else {
            top.to_string()
        };
        sender.manifest(top, media_type, bytes, &reference).await?;
        Ok(Sent {
            top: top.clone(),
            platforms: plan.platforms,
        })
    }

    async fn send_blobs(
        &self,
        sender: &Sender,
        blobs: &[(Digest, u64)],
    ) -> Result<(), DeliverError> {
        let limit = Arc::new(tokio::sync::Semaphore::new(BLOBS_AT_ONCE));
        let mut set = tokio::task::JoinSet::new();
        for (d, size) in blobs.iter().cloned() {
            let permit = limit.clone().acquire_owned().await;
            let work = self.blob_upload(sender.clone(), d, size);
            set.spawn(async move {
                let r = work.await;
                drop(permit);
                r
            });
            // Stop starting uploads after the first failure.
            if let Some(Ok(Err(e))) = set.try_join_next() {
                return Err(e);
            }
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(DeliverError::local(format!("a blob upload stopped: {e}"))),
            }
        }
        Ok(())
    }

    /// Uploads blob `d` unless an upload of it to the same repository is running (then its outcome).
    fn blob_upload(
        &self,
        sender: Sender,
        d: Digest,
        size: u64,
    ) -> impl std::future::Future<Output = Result<(), DeliverError>> + Send + 'static {
        let key = (
            sender.upstream.endpoint().to_owned(),
            sender.repo.clone(),
            d.clone(),
        );
        let flights = self.blobs.clone();
        async move {
            flights
                .run(key, move || async move { sender.blob(&d, size).await })
                .await
                .unwrap_or_else(|| Err(DeliverError::local("a blob upload stopped".into())))
        }
    }

    /// After a blob was committed to a routed repository: start uploading it now, so the delivery
    /// finds it upstream (or joins the upload) instead of starting it after the manifest. Only where
    /// every blob pushed is sent: not where platforms are chosen, which sends only the kept ones'.
    pub fn blob_committed(&self, repo: &str, d: &Digest, size: u64) {
        let Some((route, remote)) = self.route_of(repo) else {
            return;
        };
        if !route.platforms.is_empty() || self.policy.plugins().selects_platforms() {
            return;
        }
        let sender = self.sender(route, remote);
        let work = self.blob_upload(sender, d.clone(), size);
        let d = d.clone();
        tokio::spawn(async move {
            if let Err(e) = work.await {
                tracing::debug!(digest = %d, error = %e, "early upload of a pushed blob failed; the delivery tries again");
            }
        });
    }

    /// What goes upstream for `rec`: the top manifest (reduced to the chosen platforms, then as the
    /// rewriting plugins leave it), its children and all their blobs.
    async fn plan(&self, route: &PushRoute, rec: &Delivery) -> Result<Plan, DeliverError> {
        let store_err = |e: &dyn std::fmt::Display| {
            DeliverError::local(format!("cannot read what to deliver: {e}"))
        };
        let mut record = self
            .meta
            .manifest(&rec.repository, &rec.digest)
            .await
            .map_err(|e| store_err(&e))?
            .ok_or_else(|| {
                DeliverError::permanent(format!(
                    "manifest {} of {} is gone from wharf; push the image again",
                    rec.digest, rec.repository
                ))
            })?;
        let ctx = RequestCtx {
            operation: Operation::Push,
            registry: Some(route.upstream.host.clone()),
            repository: rec.upstream_repository.clone(),
            reference: Some(rec.reference.clone()),
            client_address: String::new(),
            identity: None,
            user_agent: None,
        };
        let mut top = rec.digest.clone();
        let mut platforms = None;
        if manifest::kind_of(&record.media_type) == Some(Kind::Index)
            && (!route.platforms.is_empty() || self.policy.plugins().selects_platforms())
        {
            if let Some((reduced, rrec, chosen)) =
                self.reduce(route, rec, &record, ctx.clone()).await?
            {
                top = reduced;
                record = rrec;
                platforms = Some(chosen);
            }
        }
        if self.policy.rewrites() && rec.tagged {
            let (d, r) = self
                .policy
                .tag_manifest(Repo::Local(&rec.repository), ctx, top, record)
                .await
                .map_err(|e| DeliverError::local(e.message))?;
            top = d;
            record = r;
        }
        let bytes = self
            .store
            .read_all(&top, record.size)
            .await
            .map_err(|e| store_err(&e))?;
        let mut plan = Plan {
            blobs: Vec::new(),
            children: Vec::new(),
            top: (top, record.media_type.clone(), bytes.clone()),
            platforms,
        };
        // Children before their parents, blobs once each, whatever the nesting.
        let mut seen = HashSet::new();
        let mut stack = vec![(bytes, record.media_type)];
        let mut children_rev = Vec::new();
        while let Some((bytes, media_type)) = stack.pop() {
            let m = manifest::parse(Some(&media_type), &bytes).map_err(|e| {
                DeliverError::local(format!("a manifest to deliver cannot be read: {e}"))
            })?;
            for (d, size) in m.blobs {
                if seen.insert(d.clone()) {
                    plan.blobs.push((d, size));
                }
            }
            for (d, size) in m.manifests {
                if !seen.insert(d.clone()) {
                    continue;
                }
                let child = self
                    .store
                    .read_all(&d, size)
                    .await
                    .map_err(|e| store_err(&e))?;
                let cm = manifest::parse(None, &child).map_err(|e| {
                    DeliverError::local(format!("child manifest {d} cannot be read: {e}"))
                })?;
                children_rev.push((d, cm.media_type.clone(), child.clone()));
                stack.push((child, cm.media_type));
            }
        }
        children_rev.reverse();
        plan.children = children_rev;
        Ok(plan)
    }

    /// The index of `rec` reduced to the platforms the route and the platform plugins keep, stored
    /// and mapped from the original (`Policy::derived`); `None` when every platform is kept.
    async fn reduce(
        &self,
        route: &PushRoute,
        rec: &Delivery,
        record: &ManifestRecord,
        ctx: RequestCtx,
    ) -> Result<Option<(Digest, ManifestRecord, Vec<String>)>, DeliverError> {
        let bytes = self
            .store
            .read_all(&rec.digest, record.size)
            .await
            .map_err(|e| DeliverError::local(format!("cannot read index {}: {e}", rec.digest)))?;
        let entries = wharf_model::platform::entries(&bytes).map_err(|e| {
            DeliverError::local(format!("index {} cannot be read: {e}", rec.digest))
        })?;
        let by_route = |p: &Platform| {
            route.platforms.is_empty() || route.platforms.iter().any(|s| s.matches(p))
        };
        let mut available: Vec<Platform> = Vec::new();
        for p in entries.iter().filter_map(|e| e.platform.as_ref()) {
            if by_route(p) && !available.contains(p) {
                available.push(p.clone());
            }
        }
        let chosen = if self.policy.plugins().selects_platforms() {
            self.policy.plugins().platforms(ctx, available).await
        } else {
            available
        };
        let kept = entries
            .iter()
            .filter(|e| e.platform.as_ref().is_some_and(|p| chosen.contains(p)))
            .count();
        if kept == entries.len() {
            return Ok(None);
        }
        if kept == 0 {
            let offered: Vec<String> = entries
                .iter()
                .filter_map(|e| e.platform.as_ref().map(ToString::to_string))
                .collect();
            return Err(DeliverError::permanent(format!(
                "index {} offers {}, none of which {} (platforms = [{}]) and the platform \
                     plugins keep; nothing would be delivered: add one of them to the route",
                rec.digest,
                offered.join(", "),
                route.describe(),
                route
                    .platforms
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let reduced = Bytes::from(
            wharf_model::platform::reduce(&rec.digest, &bytes, &chosen).map_err(|e| {
                DeliverError::local(format!("cannot reduce index {}: {e}", rec.digest))
            })?,
        );
        // Leased before its first byte is written: the delivery's lease holds it from here until the
        // upstream has it.
        if let Some(lease) = &rec.lease {
            self.leases
                .protect(lease, &[Digest::sha256_of(&reduced)])
                .await
                .map_err(|e| DeliverError::local(format!("cannot lease the reduced index: {e}")))?;
        }
        let (d, r) = self
            .policy
            .derived(
                Repo::Local(&rec.repository),
                rec.digest.clone(),
                record.clone(),
                wharf_model::platform::chosen_key(&chosen),
                "index reduced to the push route's platforms",
                move |_, _, _| async move { Ok(Rewritten::made(reduced)) },
            )
            .await
            .map_err(|e| DeliverError::local(RegistryError::from(e).message))?;
        if d == rec.digest {
            return Err(DeliverError::local(format!(
                "the reduced index of {} could not be stored",
                rec.digest
            )));
        }
        let mut names: Vec<String> = chosen.iter().map(ToString::to_string).collect();
        names.sort();
        names.dedup();
        Ok(Some((d, r, names)))
    }

    /// The delivery worker: runs pending deliveries as they fall due, one at a time per upstream tag,
    /// up to `[delivery] concurrency` at once. Deliveries a stop cut short resume.
    pub async fn run(self: Arc<Self>) {
        loop {
            let entries = match self.meta.deliveries().await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the push journal; trying again in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            for id in journal::surplus_delivered(&entries, KEEP_DELIVERED) {
                if let Err(e) = self.meta.delete_delivery(id).await {
                    tracing::debug!(id, error = %e, "cannot prune a delivered push from the journal");
                }
            }
            // Every due entry, not just as many as there are free slots: some may be held elsewhere.
            let (due, wake) = {
                let running = self.running.lock().unwrap();
                journal::due(&entries, &running, now_ms(), usize::MAX)
            };
            let mut elsewhere = HashSet::new();
            let mut moved = false;
            for id in due {
                if self.running.lock().unwrap().len() >= self.cfg.concurrency.max(1) {
                    break;
                }
                let (claim, rec) = match self.claim_due(id).await {
                    Ok(Turn::Mine(claim, rec)) => (claim, rec),
                    Ok(Turn::Elsewhere) => {
                        elsewhere.insert(id);
                        continue;
                    }
                    Ok(Turn::Moved) => {
                        moved = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(id, error = %e, "cannot claim a push delivery; trying again later");
                        continue;
                    }
                };
                self.running.lock().unwrap().insert(id);
                let this = self.clone();
                tokio::spawn(async move {
                    let mut rec = *rec;
                    rec.state = State::Delivering;
                    let _ = this.attempt(id, &mut rec, None).await;
                    claim.release().await;
                    this.running.lock().unwrap().remove(&id);
                    this.wake.notify_one();
                });
            }
            self.note_held_elsewhere(elsewhere);
            // Whatever moved under another deliverer may have let the next entry of its tag go.
            if moved {
                continue;
            }
            let mut sleep = wake.map_or(Duration::from_secs(60), |at| {
                Duration::from_millis(at.saturating_sub(now_ms()).max(1))
            });
            if !self.held_elsewhere.lock().unwrap().is_empty() {
                sleep = sleep.min(HELD_ELSEWHERE_RECHECK);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Claims due entry `id` for one attempt and reads it again under the claim: whoever held it
    /// before may have delivered it, or tried and put off its next try, since the journal was listed.
    async fn claim_due(&self, id: u64) -> Result<Turn, MetaError> {
        let Some(claim) = self.meta.claim_delivery(id).await? else {
            return Ok(Turn::Elsewhere);
        };
        match self.meta.delivery(id).await? {
            Some(rec) if journal::is_due(&rec, now_ms()) => Ok(Turn::Mine(claim, Box::new(rec))),
            _ => {
                claim.release().await;
                Ok(Turn::Moved)
            }
        }
    }

    /// Logs the due entries another deliverer holds now that it did not hold before: on a shared
    /// database, another wharf is sending them (or a push of this one is still being journaled).
    fn note_held_elsewhere(&self, now: HashSet<u64>) {
        let mut held = self.held_elsewhere.lock().unwrap();
        for id in now.difference(&held) {
            tracing::info!(id, "push delivery is held by another deliverer (another wharf on the shared database, or a push still being journaled); leaving it to that one");
        }
        *held = now;
    }

    /// Every delivery in the journal, in push order.
    pub async fn status(&self) -> Result<Vec<DeliveryStatus>, RegistryError> {
        let entries = self.meta.deliveries().await?;
        let running = self.running.lock().unwrap().clone();
        Ok(entries
            .into_iter()
            .map(|(id, mut d)| {
                // The record says how the last attempt ended; one under way is shown as such.
                if running.contains(&id) {
                    d.state = State::Delivering;
                }
                DeliveryStatus::of(id, d)
            })
            .collect())
    }

    /// `wharf push retry`: a failed or waiting delivery is tried now, with its attempts counted afresh.
    pub async fn retry(&self, id: u64) -> Result<Option<DeliveryStatus>, RegistryError> {
        let Some(mut rec) = self.meta.delivery(id).await? else {
            return Ok(None);
        };
        if matches!(rec.state, State::Failed | State::Pending) {
            if rec.lease.is_none() {
                let lease = self
                    .leases
                    .acquire_labelled(
                        &format!("push {}:{} retried", rec.repository, rec.reference),
                        &[
                            ("repository", &rec.repository),
                            ("reference", &rec.reference),
                        ],
                        PUSH_LEASE,
                    )
                    .await?;
                lease.protect(std::slice::from_ref(&rec.digest)).await?;
                rec.lease = Some(lease.id().to_owned());
            }
            rec.state = State::Pending;
            rec.attempts = 0;
            rec.next_try_ms = None;
            self.meta.put_delivery(id, &rec).await?;
            self.wake.notify_one();
        }
        Ok(Some(DeliveryStatus::of(id, rec)))
    }

    /// `wharf push drop`: forgets a delivery and releases its lease (a running one is refused).
    pub async fn drop_delivery(&self, id: u64) -> Result<Option<DeliveryStatus>, RegistryError> {
        if self.running.lock().unwrap().contains(&id) {
            return Err(RegistryError::new(
                ErrorCode::Denied,
                format!("delivery {id} is being sent right now; drop it once it has failed"),
            ));
        }
        let Some(claim) = self.meta.claim_delivery(id).await? else {
            return Err(RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "delivery {id} is being sent right now by another wharf on the shared \
                     database; drop it once it has failed"
                ),
            ));
        };
        let Some(rec) = self.meta.delivery(id).await? else {
            return Ok(None);
        };
        self.meta.delete_delivery(id).await?;
        claim.release().await;
        if let Some(lease) = &rec.lease {
            self.leases.release(lease).await?;
        }
        Ok(Some(DeliveryStatus::of(id, rec)))
    }
}

impl Pushed {
    /// Whether the local tag waits for the upstream (write-through) rather than being recorded now.
    fn tagged_later(&self, store_and_forward: bool) -> bool {
        self.tag.is_some() && !store_and_forward
    }
}

use wharf_model::clock::unix_now_ms as now_ms;

/// A write-through delivery's failure as the client's error. The upstream's refusal (a 4xx but 408
/// and 429) passes on with its status and code; an upstream that failed (unreachable, silent, 5xx,
/// 408, 429) is `UNAVAILABLE`, whose status makes docker and podman print the message (`error.rs`);
/// wharf's own failure is `UNKNOWN`.
fn client_error(id: u64, rec: &Delivery, e: DeliverError) -> RegistryError {
    let failed = format!(
        "wharf could not deliver {}:{} to {}/{}: {}",
        rec.repository, rec.reference, rec.target, rec.upstream_repository, e.message
    );
    let kept = format!(
        "wharf keeps the image as failed delivery {id} (`wharf push status`; `wharf push retry \
         {id}` sends it, `wharf push drop {id}` forgets it)"
    );
    let refused = e.status.filter(|s| {
        s.is_client_error()
            && *s != http::StatusCode::REQUEST_TIMEOUT
            && *s != http::StatusCode::TOO_MANY_REQUESTS
    });
    if let Some(status) = refused {
        let code = e
            .code
            .as_deref()
            .and_then(ErrorCode::parse)
            .unwrap_or(ErrorCode::Unknown);
        return RegistryError::new(code, format!("{failed}. {kept}")).with_status(status);
    }
    if !e.upstream {
        return RegistryError::new(ErrorCode::Unknown, format!("{failed}. {kept}"));
    }
    RegistryError::new(
        ErrorCode::Unavailable,
        format!(
            "{failed}. Push again once the upstream is back, or set mode = \"store-and-forward\" \
             on the [[push]] route \"{}\" to accept pushes while the upstream is down and deliver \
             them later. {kept}",
            rec.route
        ),
    )
}

#[cfg(test)]
mod tests;
