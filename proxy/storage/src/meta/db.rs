//! The metadata database as every part of `meta` shares it: the handle (`Meta`) and how work runs on
//! it, its errors, the registry's tables and records, and the read cache on the pull path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};

pub use super::error::{MetaError, OpenFailure};
use super::pending::Pending;
use super::pg::conn::{Invalidate, Pg};
use wharf_model::digest::Digest;

/// (repo, tag) → manifest digest
pub(super) const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// (repo, manifest digest) → ManifestRecord (JSON)
pub(super) const MANIFESTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("manifests");
/// (repo, blob digest) → size
pub(super) const BLOBS: TableDefinition<(&str, &str), u64> = TableDefinition::new("blobs");
/// (repo, subject digest, referrer digest) → Descriptor (JSON)
pub(super) const REFERRERS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("referrers");
/// upload id → UploadRecord (JSON)
pub(super) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// (cache repo, tag) → unix seconds the mirror last confirmed the tag with its upstream
pub(super) const TAG_CHECKED: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("tag_checked");
/// (cache repo, subject digest) → (digest of the referrers index the mirror cached, unix seconds the
/// upstream last confirmed it)
pub(super) const MIRROR_REFERRERS: TableDefinition<(&str, &str), (&str, u64)> =
    TableDefinition::new("mirror_referrers");
/// (original manifest digest, rewriting plugin set) → digest of the rewritten manifest (the original's
/// own digest when the plugins left it as it was). The provenance of every rewrite; the collector keeps
/// both ends of a mapping together.
pub(super) const REWRITES: TableDefinition<(&str, &str), &str> = TableDefinition::new("rewrites");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    /// The manifest's `subject`, so deleting it can drop its referrers entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repo: String,
    /// Unix seconds; sessions older than the configured TTL are purged.
    pub started: u64,
    /// Whose session it is (`identity <name>` or `address <ip>`), so that
    /// `max_upload_sessions_per_client` counts it after a restart too. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The replica holding the session's bytes (its `cluster.advertise`); absent outside a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Read-through cache of the lookups on the pull path (tag → digest, manifest records, blob links,
/// tag check times), so a warm pull touches no disk and no blocking thread.
///
/// Kept correct under concurrency by one rule: writers always overwrite an entry after their commit
/// (with `None` for what they removed), readers only fill an entry that is absent. A reader that read
/// the old value before a commit can therefore never replace the writer's newer one.
/// On a shared database (Postgres) other processes write too: their commits arrive as notifications
/// that remove what they touched (`invalidate`), and a read that one overtook is not cached (`stamp`).
pub(super) struct ReadCache {
    /// Bumped by every invalidation.
    pub(super) epoch: AtomicU64,
    /// Whether invalidations are being received (always, for a database only this process opens).
    pub(super) live: AtomicBool,
    pub(super) tags: DashMap<(String, String), Option<Digest>>,
    pub(super) manifests: DashMap<(String, Digest), Option<ManifestRecord>>,
    pub(super) blobs: DashMap<(String, Digest), Option<u64>>,
    pub(super) checked: DashMap<(String, String), Option<u64>>,
    /// Whether a repository has any tag, manifest or blob: the routing phase asks it of every
    /// host-less name (is it ours, or the default upstream's?), so it must cost no blocking thread.
    pub(super) repos: DashMap<String, Known>,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(true),
            tags: DashMap::new(),
            manifests: DashMap::new(),
            blobs: DashMap::new(),
            checked: DashMap::new(),
            repos: DashMap::new(),
        }
    }
}

/// What the read cache knows of a repository's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    Exists,
    Absent,
    /// Something was removed from it: whether anything is left is read from the database each time
    /// (removals are rare; a reader's older answer must never be filled in over a removal).
    Unsure,
}

impl ReadCache {
    /// After a commit that added to `repo`. An `Unsure` stays so: this write and a concurrent removal
    /// may reach the cache in either order.
    pub(super) fn exists(&self, repo: &str) {
        let mut k = self.repos.entry(repo.to_owned()).or_insert(Known::Exists);
        if *k == Known::Absent {
            *k = Known::Exists;
        }
    }
}

impl ReadCache {
    /// Taken before a read from the database, handed to `fill` after it: a read that another
    /// process's write overtook meanwhile (`pg.rs` invalidates on its notification) is not cached.
    /// `None` while the invalidations cannot be trusted (the listener is reconnecting): nothing is
    /// cached then.
    pub(super) fn stamp(&self) -> Option<u64> {
        self.live
            .load(Ordering::Acquire)
            .then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Caches `v`, read from the database since `stamp`, unless an entry is there already (a writer's,
    /// newer) or an invalidation came in since. Returns what the caller should answer: `v`, or the
    /// newer entry.
    pub(super) fn fill<K: Eq + std::hash::Hash, V: Clone>(
        &self,
        m: &DashMap<K, V>,
        stamp: Option<u64>,
        k: K,
        v: V,
    ) -> V {
        if stamp.is_none() || stamp != self.stamp() {
            return v;
        }
        m.entry(k).or_insert(v).clone()
    }

    /// After a commit on a shared database, with `stamp` taken before its transaction: sets `k` to what
    /// the writer wrote. Unless a notification came in since (or the listener is down): then another
    /// process may have committed over it after this write, and its notification may already be
    /// handled, so which value is newer is unknown here. The entry is dropped instead; the next read
    /// fetches it. Checked again after the insert, for a notification handled in between.
    pub(super) fn put<K: Eq + std::hash::Hash + Clone, V>(
        &self,
        m: &DashMap<K, V>,
        stamp: Option<u64>,
        k: K,
        v: V,
    ) {
        if stamp.is_some() && stamp == self.stamp() {
            m.insert(k.clone(), v);
            if stamp == self.stamp() {
                return;
            }
        }
        m.remove(&k);
    }

    /// `exists` after a commit on a shared database, as `put` guards its entries: another process may
    /// have removed what this write added.
    pub(super) fn exists_since(&self, stamp: Option<u64>, repo: &str) {
        if stamp.is_some() && stamp == self.stamp() {
            self.exists(repo);
            if stamp == self.stamp() {
                return;
            }
        }
        self.repos.remove(repo);
    }

    /// Another process changed `repo` (a notification from the shared database): what is cached of
    /// it may be stale. Forgotten, and readers in flight are told not to cache what they read.
    pub(super) fn invalidate(&self, kind: Invalidate, repo: &str, key: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match kind {
            Invalidate::Tag => {
                self.tags.remove(&(repo.to_owned(), key.to_owned()));
            }
            Invalidate::Checked => {
                self.checked.remove(&(repo.to_owned(), key.to_owned()));
            }
            Invalidate::Manifest => {
                if let Ok(d) = key.parse() {
                    self.manifests.remove(&(repo.to_owned(), d));
                }
            }
            Invalidate::Blob => {
                if let Ok(d) = key.parse() {
                    self.blobs.remove(&(repo.to_owned(), d));
                }
            }
        }
        self.repos.remove(repo);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Everything may be stale (the listener lost its connection): forget it all, and cache nothing
    /// until `live` is set again.
    pub(super) fn clear(&self, live: bool) {
        self.live.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.tags.clear();
        self.manifests.clear();
        self.blobs.clear();
        self.checked.clear();
        self.repos.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.live.store(live, Ordering::Release);
    }
}

/// Where the records live.
#[derive(Clone)]
pub(super) enum Backend {
    /// An embedded file only this process opens (the default).
    Redb(Arc<Database>),
    /// A Postgres database several wharf processes may share (`pg.rs`).
    Pg(Arc<Pg>),
}

#[derive(Clone)]
pub struct Meta {
    pub(super) backend: Backend,
    pub(super) cache: Arc<ReadCache>,
    /// Tag and digest uses noted on the request path, not written yet (`usage.rs`).
    pub(super) uses: Arc<Pending>,
    /// Push journal entries claimed by this process, on redb (`push::Claim`).
    pub(super) claimed: super::push::claim::Claimed,
}

impl Meta {
    /// Runs a write on the blocking pool, handing it the read cache to update after its commit: once
    /// started it finishes, cache included, even if the request that asked for it is dropped.
    pub(super) async fn run_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &ReadCache) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let (db, cache) = (self.redb(), self.cache.clone());
        tokio::task::spawn_blocking(move || f(&db, &cache)).await?
    }

    /// Runs `f` on the blocking pool: redb reads may touch the disk and commits fsync.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let db = self.redb();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    /// The redb database, for the code paths written against it. Every public method answers the
    /// Postgres backend before it reaches one (the metadata tests run on both).
    pub(super) fn redb(&self) -> Arc<Database> {
        match &self.backend {
            Backend::Redb(db) => db.clone(),
            Backend::Pg(_) => unreachable!("a redb code path was reached on the postgres backend"),
        }
    }

    /// The Postgres backend, if that is where the records live.
    pub(super) fn pg(&self) -> Option<&Arc<Pg>> {
        match &self.backend {
            Backend::Pg(pg) => Some(pg),
            Backend::Redb(_) => None,
        }
    }

    /// Where a shared backend is (`user@host:port/db`), for messages and `wharf status`.
    pub fn backend_endpoint(&self) -> Option<String> {
        self.pg().map(|pg| pg.endpoint().to_owned())
    }

    /// Which backend holds the records, as `wharf status` names it.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Redb(_) => "redb",
            Backend::Pg(_) => "postgres",
        }
    }
}
