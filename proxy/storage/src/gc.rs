//! The online garbage collector: mark what the roots reach, sweep the rest, while pushes and pulls go
//! on.
//!
//! Roots: tags, live leases, and content touched within the grace window (`lease.rs`). Edges: an index
//! → its child manifests; a manifest → its config, layers and `subject`; a reachable subject → its
//! referrers; an original ↔ its rewritten or reduced manifest; a subject → the mirror's cached
//! referrers index. The mark is a pure function over that graph (`mark`); building the graph reads
//! each manifest once per process (content is immutable, so its edges are kept).
//!
//! The sweep removes, per batch, first every metadata record of the unreachable content (one durable
//! transaction), then the files: a crash in between leaves files no record names, which the next
//! collection removes, never a record of a missing file. Each digest is *doomed* before it is removed
//! and only if it is not leased or touched since the cutoff, atomically with touches: whatever is
//! committed, referenced or leased while a collection runs is never removed (`lease.rs` says how).
//!
//! The cache quota (`[cache] max_bytes`) is applied before the mark: when the content only mirrored
//! tags reach exceeds it, the least recently used mirrored tags are dropped (they are a cache: the
//! upstream still has them) until it fits. Pushed content is never evicted. "Used" is the tag's last
//! use as `wharf images` shows it (`meta::LastUse`): the order operators see is the order evicted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::lease::{LeaseError, Leases};
use crate::meta::{LastGc, Meta, MetaError, Snapshot};
use crate::store::{ContentStore, StoreError};
use wharf_model::digest::Digest;
use wharf_model::manifest::children_of;

/// Unreachable content is doomed and removed this many digests at a time (one metadata transaction
/// per batch).
const BATCH: usize = 512;
/// Manifests larger than this are not read for edges (the registry refuses to store larger ones).
const MAX_MANIFEST: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("content store: {0}")]
    Store(#[from] StoreError),
}

/// The reference graph: each node's outgoing edges. Nodes with no entry have none.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    pub edges: HashMap<Digest, Vec<Digest>>,
}

impl Graph {
    pub fn edge(&mut self, from: &Digest, to: &Digest) {
        self.edges.entry(from.clone()).or_default().push(to.clone());
    }
}

/// Everything `roots` reach in `graph`, roots included.
pub fn mark<'a>(graph: &Graph, roots: impl IntoIterator<Item = &'a Digest>) -> HashSet<Digest> {
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut todo: Vec<&Digest> = Vec::new();
    for r in roots {
        if seen.insert(r.clone()) {
            todo.push(r);
        }
    }
    while let Some(d) = todo.pop() {
        for c in graph.edges.get(d).into_iter().flatten() {
            if seen.insert(c.clone()) {
                todo.push(c);
            }
        }
    }
    seen
}

/// Of the mirrored tags (`(repo, tag, digest, last use)`), the least recently used to drop so that the
/// content only they reach fits in `max_bytes`. `pinned` is what other roots reach (never counted:
/// dropping a mirrored tag frees none of it). Pure, for tests.
pub fn evictions(
    graph: &Graph,
    sizes: &HashMap<Digest, u64>,
    mirrored: &[(String, String, Digest, u64)],
    pinned: &HashSet<Digest>,
    max_bytes: u64,
) -> Vec<usize> {
    let closures: Vec<HashSet<Digest>> = mirrored
        .iter()
        .map(|(_, _, d, _)| {
            let mut c = mark(graph, [d]);
            c.retain(|x| !pinned.contains(x) && sizes.contains_key(x));
            c
        })
        .collect();
    let mut count: HashMap<&Digest, usize> = HashMap::new();
    for c in &closures {
        for d in c {
            *count.entry(d).or_default() += 1;
        }
    }
    let mut total: u64 = count.keys().map(|d| sizes[*d]).sum();
    let mut order: Vec<usize> = (0..mirrored.len()).collect();
    order.sort_by_key(|i| {
        (
            mirrored[*i].3,
            mirrored[*i].0.clone(),
            mirrored[*i].1.clone(),
        )
    });
    let mut out = Vec::new();
    for i in order {
        if total <= max_bytes {
            break;
        }
        out.push(i);
        for d in &closures[i] {
            let n = count.get_mut(d).expect("counted");
            *n -= 1;
            if *n == 0 {
                total -= sizes[d];
            }
        }
    }
    out
}

/// One piece of removed (or, in a dry run, removable) content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub digest: Digest,
    pub size: u64,
}

/// A mirrored tag the quota dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evicted {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
}

/// What a collection did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub dry_run: bool,
    /// Unix seconds.
    pub started: u64,
    pub millis: u64,
    /// Content in the store when it started.
    pub contents: usize,
    /// Content the roots (tags, live leases, content used within the grace window) reach.
    pub reachable: usize,
    /// Content that was unreachable when marked but leased or used while the collection ran (or,
    /// within a grace window of a start, everything unreachable).
    pub protected: usize,
    pub removed: Vec<Removed>,
    pub removed_bytes: u64,
    pub evicted: Vec<Evicted>,
    pub expired_leases: Vec<String>,
    /// Set when nothing could be collected, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Settings the collector runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub grace_secs: u64,
    /// 0: no quota.
    pub max_cache_bytes: u64,
    /// Upstream hosts: a repository `<host>/…` is a mirror cache.
    pub mirror_hosts: Vec<String>,
}

impl Settings {
    fn is_mirrored(&self, repo: &str) -> bool {
        mirrored(&self.mirror_hosts, repo)
    }
}

/// Whether `repo` is a mirror's cache repository (`<host>/…` for one of the upstream `hosts`).
pub fn mirrored(hosts: &[String], repo: &str) -> bool {
    hosts.iter().any(|h| {
        repo.strip_prefix(h.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Runs collections, one at a time.
pub struct Collector {
    pub meta: Meta,
    pub store: Arc<dyn ContentStore>,
    leases: Leases,
    settings: Settings,
    running: tokio::sync::Mutex<Option<Report>>,
    /// Runs before each collection: the server writes the mirror's last-use times (batched in
    /// memory) so the quota sees the latest uses.
    before: Option<BeforeHook>,
}

/// A task run before each collection.
pub type BeforeHook =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

impl Collector {
    pub fn new(
        meta: Meta,
        store: Arc<dyn ContentStore>,
        leases: Leases,
        settings: Settings,
    ) -> Collector {
        Collector {
            meta,
            store,
            leases,
            settings,
            running: tokio::sync::Mutex::new(None),
            before: None,
        }
    }

    /// Runs `hook` before each collection.
    pub fn with_before(mut self, hook: BeforeHook) -> Collector {
        self.before = Some(hook);
        self
    }

    /// The last collection's report, if one ran.
    pub async fn last(&self) -> Option<Report> {
        self.running.lock().await.clone()
    }

    /// The reference graph of the snapshot's manifests (read from the store once per process).
    pub async fn graph(&self, snap: &Snapshot) -> Result<Graph, GcError> {
        let mut g = Graph::default();
        for (d, rec) in &snap.manifests {
            let children = match self.leases.edges(d) {
                Some(c) => c.to_vec(),
                None => {
                    let bytes = match self.store.read_all(d, MAX_MANIFEST).await {
                        Ok(b) => b,
                        // Recorded but not stored (a crash between the two), or too large to be
                        // one: no edges, so nothing is kept for it.
                        Err(StoreError::NotFound(_)) | Err(StoreError::TooLarge { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let children = match wharf_model::manifest::parse(Some(&rec.media_type), &bytes)
                    {
                        Ok(m) => children_of(&m),
                        Err(e) => {
                            tracing::warn!(digest = %d, error = %e, "a stored manifest does not parse; its references are not followed");
                            Vec::new()
                        }
                    };
                    self.leases.record_edges(d, children.clone());
                    children
                }
            };
            g.edges.entry(d.clone()).or_default().extend(children);
        }
        for (subject, referrer) in &snap.referrers {
            g.edge(subject, referrer);
        }
        for (a, _, b) in &snap.rewrites {
            g.edge(a, b);
            g.edge(b, a);
        }
        for (subject, index) in &snap.mirror_referrers {
            g.edge(subject, index);
        }
        Ok(g)
    }

    /// One collection: expire leases, apply the quota, mark, sweep (or, with `dry_run`, say what a
    /// sweep would remove).
    pub async fn collect(&self, dry_run: bool) -> Result<Report, GcError> {
        self.collect_as_of(dry_run, wharf_model::clock::unix_now())
            .await
    }

    /// As `collect`, with `now` (unix seconds) as the time the grace window counts back from.
    async fn collect_as_of(&self, dry_run: bool, now: u64) -> Result<Report, GcError> {
        let mut last = self.running.lock().await;
        let started = Instant::now();
        if let Some(hook) = &self.before {
            hook().await;
        }
        let since = now.saturating_sub(self.settings.grace_secs);
        let mut report = Report {
            dry_run,
            started: now,
            ..Report::default()
        };
        // One collector at a time across the processes sharing the metadata: two would each doom
        // what the other's snapshot has not yet seen referenced. A dry run dooms nothing.
        let only = if dry_run {
            None
        } else {
            match self.meta.collector_lock().await? {
                Some(held) => Some(held),
                None => {
                    report.note = Some(
                        "another wharf sharing this metadata is collecting now; this collection \
                         was skipped (the next interval tries again)"
                            .into(),
                    );
                    report.millis = started.elapsed().as_millis() as u64;
                    return Ok(report);
                }
            }
        };
        if !dry_run {
            report.expired_leases = self.leases.expire().await?;
        }
        let snap = self.meta.snapshot().await?;
        let contents = self.store.contents().await?;
        report.contents = contents.len();
        let sizes: HashMap<Digest, u64> = contents.iter().cloned().collect();
        let graph = self.graph(&snap).await?;
        let protection = self.leases.roots_across(since).await?;

        let mut tags = snap.tags.clone();
        if self.settings.max_cache_bytes > 0 {
            let (mirrored, local): (Vec<_>, Vec<_>) = tags
                .iter()
                .cloned()
                .partition(|(repo, _, _)| self.settings.is_mirrored(repo));
            let pinned = mark(
                &graph,
                local
                    .iter()
                    .map(|(_, _, d)| d)
                    .chain(protection.digests.iter()),
            );
            let mirrored: Vec<(String, String, Digest, u64)> = mirrored
                .into_iter()
                .map(|(r, t, d)| {
                    let used = snap.last_use.of_tag(&r, Some(&t), &d).unwrap_or(0);
                    (r, t, d, used)
                })
                .collect();
            let evict = evictions(
                &graph,
                &sizes,
                &mirrored,
                &pinned,
                self.settings.max_cache_bytes,
            );
            for i in evict {
                let (repo, tag, digest, _) = &mirrored[i];
                if !dry_run {
                    self.meta.delete_tag(repo, tag).await?;
                    tracing::info!(repository = %repo, tag = %tag, %digest, "cache quota: mirrored tag evicted");
                }
                tags.retain(|(r, t, _)| !(r == repo && t == tag));
                report.evicted.push(Evicted {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    digest: digest.clone(),
                });
            }
        }

        let reachable = mark(
            &graph,
            tags.iter()
                .map(|(_, _, d)| d)
                .chain(protection.digests.iter()),
        );
        report.reachable = contents
            .iter()
            .filter(|(d, _)| reachable.contains(d))
            .count();
        let candidates: Vec<(Digest, u64)> = contents
            .into_iter()
            .filter(|(d, _)| !reachable.contains(d))
            .collect();
        if protection.everything {
            report.protected = candidates.len();
            report.note = Some(format!(
                "this server started less than grace_secs ({} s) ago: content it may have been using \
                 before is protected until then, so nothing was collected",
                self.settings.grace_secs
            ));
        } else if dry_run {
            for (d, size) in candidates {
                if self.leases.protected(&d, since) {
                    report.protected += 1;
                } else {
                    report.removed_bytes += size;
                    report.removed.push(Removed { digest: d, size });
                }
            }
        } else {
            for chunk in candidates.chunks(BATCH) {
                let names: Vec<Digest> = chunk.iter().map(|(d, _)| d.clone()).collect();
                let digests = self.leases.doom_all(&names, since).await?;
                let doomed: Vec<(Digest, u64)> = chunk
                    .iter()
                    .filter(|(d, _)| digests.contains(d))
                    .cloned()
                    .collect();
                report.protected += chunk.len() - doomed.len();
                let swept = self.sweep(&digests).await;
                self.leases.bury(&digests).await;
                swept?;
                for (digest, size) in doomed {
                    report.removed_bytes += size;
                    report.removed.push(Removed { digest, size });
                }
            }
        }
        report.millis = started.elapsed().as_millis() as u64;
        if !dry_run {
            wharf_metrics::gc_done(report.removed.len(), report.removed_bytes, report.started);
            // For `wharf status` (it outlives this process); the collection itself went through.
            if let Err(e) = self.meta.record_gc(&LastGc::from(&report)).await {
                tracing::warn!(error = %e, "could not record the collection for `wharf status`");
            }
            tracing::info!(
                removed = report.removed.len(),
                bytes = report.removed_bytes,
                reachable = report.reachable,
                protected = report.protected,
                evicted = report.evicted.len(),
                millis = report.millis,
                "garbage collection done"
            );
        }
        if let Some(held) = only {
            held.release().await;
        }
        *last = Some(report.clone());
        Ok(report)
    }

    /// Removes doomed content: its records first (one durable transaction), then its bytes in one
    /// batch (one bulk delete on an object store). A crash between the two leaves bytes nothing
    /// names, which the next collection removes; never a record without its bytes.
    async fn sweep(&self, doomed: &[Digest]) -> Result<(), GcError> {
        if doomed.is_empty() {
            return Ok(());
        }
        self.meta.forget(doomed.iter().cloned().collect()).await?;
        self.store.remove_many(doomed).await?;
        Ok(())
    }

    /// Collects every `every`, until dropped.
    pub async fn run_every(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.collect(false).await {
                tracing::error!(error = %e, "garbage collection failed; it runs again next interval");
            }
        }
    }
}

#[cfg(test)]
mod tests;

impl From<&Report> for LastGc {
    fn from(r: &Report) -> LastGc {
        LastGc {
            started: r.started,
            millis: r.millis,
            removed: r.removed.len(),
            removed_bytes: r.removed_bytes,
            evicted: r.evicted.len(),
        }
    }
}
