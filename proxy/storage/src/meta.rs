//! Registry metadata: which repository links which blob and manifest, tags, referrers, upload sessions.
//!
//! Bytes live in the content store; this module only holds names and edges. It is the one place that
//! knows how metadata is stored (redb, an embedded transactional B-tree), so a shared backend (Postgres,
//! for several replicas) replaces this file's internals, not its callers.
//!
//! Crash consistency with the content store comes from ordering: content is published (fsynced, renamed)
//! before any transaction here refers to it, and redb commits are durable when they return. A crash can
//! leave content that nothing refers to (for the collector), never a reference to missing content.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use dashmap::DashMap;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use wharf_model::digest::Digest;
use wharf_model::manifest::Descriptor;

/// (repo, tag) → manifest digest
const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// (repo, manifest digest) → ManifestRecord (JSON)
const MANIFESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("manifests");
/// (repo, blob digest) → size
const BLOBS: TableDefinition<(&str, &str), u64> = TableDefinition::new("blobs");
/// (repo, subject digest, referrer digest) → Descriptor (JSON)
const REFERRERS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("referrers");
/// upload id → UploadRecord (JSON)
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// (cache repo, tag) → unix seconds the mirror last confirmed the tag with its upstream
const TAG_CHECKED: TableDefinition<(&str, &str), u64> = TableDefinition::new("tag_checked");
/// (cache repo, subject digest) → (digest of the referrers index the mirror cached, unix seconds the
/// upstream last confirmed it)
const MIRROR_REFERRERS: TableDefinition<(&str, &str), (&str, u64)> =
    TableDefinition::new("mirror_referrers");
/// (original manifest digest, rewriting plugin set) → digest of the rewritten manifest (the original's
/// own digest when the plugins left it as it was). The provenance of every rewrite; the collector keeps
/// both ends of a mapping together.
const REWRITES: TableDefinition<(&str, &str), &str> = TableDefinition::new("rewrites");

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store failed: {0}")]
    Db(#[from] redb::Error),
    #[error("metadata record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("metadata task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why the metadata store would not open, as an operator acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Another process holds it: a wharf serving this data directory.
    InUse,
    /// This user may not read or write it.
    Denied,
    /// It is not a sound database (truncated, overwritten, corrupted).
    Damaged,
    Other,
}

impl MetaError {
    /// What kind of failure opening the store met (redb's error kinds, and its panics on files it
    /// cannot make sense of).
    pub fn open_failure(&self) -> OpenFailure {
        use std::io::ErrorKind;
        match self {
            MetaError::Db(redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch) => {
                OpenFailure::InUse
            }
            MetaError::Db(redb::Error::Corrupted(_)) | MetaError::Corrupt(_) => {
                OpenFailure::Damaged
            }
            MetaError::Db(redb::Error::Io(e)) => match e.kind() {
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => OpenFailure::Denied,
                // redb's "not a database", and a file shorter than its own header says.
                ErrorKind::InvalidData | ErrorKind::UnexpectedEof => OpenFailure::Damaged,
                _ => OpenFailure::Other,
            },
            MetaError::Task(e) if e.is_panic() => OpenFailure::Damaged,
            _ => OpenFailure::Other,
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Db(e.into())
            }
        }
    )*};
}
db_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

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
}

/// What a manifest push records, in one transaction.
pub struct ManifestPut<'a> {
    pub repo: &'a str,
    pub digest: &'a Digest,
    pub record: ManifestRecord,
    /// The tag the push sets; the push is recorded as the tag's last use (`usage.rs`).
    pub tag: Option<&'a str>,
    /// The descriptor to list under `record.subject` in the referrers API.
    pub referrer: Option<Descriptor>,
}

/// Read-through cache of the lookups on the pull path (tag → digest, manifest records, blob links,
/// tag check times), so a warm pull touches no disk and no blocking thread.
///
/// Kept correct under concurrency by one rule: writers always overwrite an entry after their commit
/// (with `None` for what they removed), readers only fill an entry that is absent. A reader that read
/// the old value before a commit can therefore never replace the writer's newer one.
/// (With several replicas on a shared database this cache needs invalidation; that backend brings it.)
#[derive(Default)]
struct ReadCache {
    tags: DashMap<(String, String), Option<Digest>>,
    manifests: DashMap<(String, Digest), Option<ManifestRecord>>,
    blobs: DashMap<(String, Digest), Option<u64>>,
    checked: DashMap<(String, String), Option<u64>>,
    /// Whether a repository has any tag, manifest or blob: the routing phase asks it of every
    /// host-less name (is it ours, or the default upstream's?), so it must cost no blocking thread.
    repos: DashMap<String, Known>,
}

/// What the read cache knows of a repository's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Exists,
    Absent,
    /// Something was removed from it: whether anything is left is read from the database each time
    /// (removals are rare; a reader's older answer must never be filled in over a removal).
    Unsure,
}

impl ReadCache {
    /// After a commit that added to `repo`. An `Unsure` stays so: this write and a concurrent removal
    /// may reach the cache in either order.
    fn exists(&self, repo: &str) {
        let mut k = self.repos.entry(repo.to_owned()).or_insert(Known::Exists);
        if *k == Known::Absent {
            *k = Known::Exists;
        }
    }
}

fn fill<K: Eq + std::hash::Hash, V: Clone>(m: &DashMap<K, V>, k: K, v: V) -> V {
    m.entry(k).or_insert(v).clone()
}

#[derive(Clone)]
pub struct Meta {
    db: Arc<Database>,
    cache: Arc<ReadCache>,
    /// Tag and digest uses noted on the request path, not written yet (`usage.rs`).
    uses: Arc<usage::Pending>,
}

impl Meta {
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Meta::open_with(path, false)
    }

    /// As `open`, verifying the checksum of every page first (`wharf fsck`): reads the whole file,
    /// and refuses a damaged one rather than trusting it (a plain open may panic on one).
    pub fn open_checked(path: &Path) -> Result<Self, MetaError> {
        Meta::open_with(path, true)
    }

    fn open_with(path: &Path, check: bool) -> Result<Self, MetaError> {
        // Made 0600 before redb initialises it (redb creates a missing file with the umask's mode,
        // and takes an empty one as new): it names every repository, tag and push.
        crate::data_dir::file_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| MetaError::Db(e.into()))?;
        let db = redb::Builder::new()
            .set_check_integrity_on_open(check)
            .create(path)?;
        // Create every table up front so read transactions never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(TAGS)?;
        tx.open_table(MANIFESTS)?;
        tx.open_table(BLOBS)?;
        tx.open_table(REFERRERS)?;
        tx.open_table(UPLOADS)?;
        tx.open_table(TAG_CHECKED)?;
        tx.open_table(usage::LAST_USE)?;
        usage::upgrade(&tx)?;
        tx.open_table(MIRROR_REFERRERS)?;
        tx.open_table(REWRITES)?;
        tx.open_table(platforms::INDEX_CHILDREN)?;
        tx.open_table(platforms::KEPT_BLOBS)?;
        tx.open_table(collect::LEASES)?;
        tx.open_table(push::JOURNAL)?;
        tx.open_table(push::DELIVERED_BLOBS)?;
        tx.open_table(stats::CACHE_SAMPLES)?;
        tx.open_table(stats::STATUS_RECORDS)?;
        tx.open_table(sent::UPSTREAM_SENT)?;
        tx.commit()?;
        Ok(Meta {
            db: Arc::new(db),
            cache: Arc::default(),
            uses: Arc::default(),
        })
    }

    /// Runs a write on the blocking pool, handing it the read cache to update after its commit: once
    /// started it finishes, cache included, even if the request that asked for it is dropped.
    async fn run_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &ReadCache) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let (db, cache) = (self.db.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || f(&db, &cache)).await?
    }

    /// Runs `f` on the blocking pool: redb reads may touch the disk and commits fsync.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    pub async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), MetaError> {
        let (r, d) = (repo.to_owned(), digest.clone());
        self.run_write(move |db, cache| {
            let tx = db.begin_write()?;
            tx.open_table(BLOBS)?
                .insert((r.as_str(), d.to_string().as_str()), size)?;
            tx.commit()?;
            cache.exists(&r);
            cache.blobs.insert((r, d), Some(size));
            Ok(())
        })
        .await
    }

    /// The size of a blob if `repo` links it.
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let key = (repo.to_owned(), digest.clone());
        if let Some(v) = self.cache.blobs.get(&key) {
            return Ok(*v);
        }
        let (r, d) = (repo.to_owned(), digest.to_string());
        let v = self
            .run(move |db| {
                let t = db.begin_read()?.open_table(BLOBS)?;
                Ok(t.get((r.as_str(), d.as_str()))?.map(|v| v.value()))
            })
            .await?;
        Ok(fill(&self.cache.blobs, key, v))
    }

    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let (r, d) = (repo.to_owned(), digest.clone());
        self.run_write(move |db, cache| {
            let tx = db.begin_write()?;
            let removed = tx
                .open_table(BLOBS)?
                .remove((r.as_str(), d.to_string().as_str()))?
                .is_some();
            tx.commit()?;
            cache.repos.insert(r.clone(), Known::Unsure);
            cache.blobs.insert((r, d), None);
            Ok(removed)
        })
        .await
    }

    /// Of `blobs` and `manifests`, those `repo` does not link (what a manifest push would dangle on).
    pub async fn missing(
        &self,
        repo: &str,
        blobs: Vec<Digest>,
        manifests: Vec<Digest>,
    ) -> Result<Vec<Digest>, MetaError> {
        let repo = repo.to_owned();
        self.run(move |db| {
            let tx = db.begin_read()?;
            let (bt, mt) = (tx.open_table(BLOBS)?, tx.open_table(MANIFESTS)?);
            let mut out = Vec::new();
            for d in blobs {
                if bt.get((repo.as_str(), d.to_string().as_str()))?.is_none() {
                    out.push(d);
                }
            }
            for d in manifests {
                if mt.get((repo.as_str(), d.to_string().as_str()))?.is_none() {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn put_manifest(&self, put: ManifestPut<'_>) -> Result<(), MetaError> {
        self.put_manifest_sent_by(put, None).await
    }

    /// `put_manifest` for a manifest the mirror fetched from `upstream`, whose bytes verified: the
    /// record and the proof that `upstream` sent it (`sent.rs`) in one transaction.
    pub async fn put_sent_manifest(
        &self,
        put: ManifestPut<'_>,
        upstream: &str,
    ) -> Result<(), MetaError> {
        self.put_manifest_sent_by(put, Some(upstream.to_owned()))
            .await
    }

    async fn put_manifest_sent_by(
        &self,
        put: ManifestPut<'_>,
        sent_by: Option<String>,
    ) -> Result<(), MetaError> {
        let repo = put.repo.to_owned();
        let digest = put.digest.clone();
        let tag = put.tag.map(str::to_owned);
        let encoded = serde_json::to_vec(&put.record)?;
        let record = put.record;
        let referrer = match (&record.subject, &put.referrer) {
            (Some(s), Some(r)) => Some((s.to_string(), serde_json::to_vec(r)?)),
            _ => None,
        };
        self.run_write(move |db, cache| {
            let d = digest.to_string();
            let tx = db.begin_write()?;
            tx.open_table(MANIFESTS)?
                .insert((repo.as_str(), d.as_str()), encoded.as_slice())?;
            if let Some(tag) = &tag {
                tx.open_table(TAGS)?
                    .insert((repo.as_str(), tag.as_str()), d.as_str())?;
                usage::pushed(&tx, &repo, tag)?;
            }
            if let Some((subject, desc)) = &referrer {
                tx.open_table(REFERRERS)?.insert(
                    (repo.as_str(), subject.as_str(), d.as_str()),
                    desc.as_slice(),
                )?;
            }
            if let Some(upstream) = &sent_by {
                sent::record(&tx, upstream, &d)?;
            }
            tx.commit()?;
            cache.exists(&repo);
            if let Some(tag) = tag {
                cache.tags.insert((repo.clone(), tag), Some(digest.clone()));
            }
            cache.manifests.insert((repo, digest), Some(record));
            Ok(())
        })
        .await
    }

    pub async fn manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let key = (repo.to_owned(), digest.clone());
        if let Some(v) = self.cache.manifests.get(&key) {
            return Ok(v.clone());
        }
        let (r, d) = (repo.to_owned(), digest.to_string());
        let v = self
            .run(move |db| {
                let t = db.begin_read()?.open_table(MANIFESTS)?;
                let v = t.get((r.as_str(), d.as_str()))?;
                Ok(v.map(|v| serde_json::from_slice(v.value())).transpose()?)
            })
            .await?;
        Ok(fill(&self.cache.manifests, key, v))
    }

    pub async fn tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>, MetaError> {
        let key = (repo.to_owned(), tag.to_owned());
        if let Some(v) = self.cache.tags.get(&key) {
            return Ok(v.clone());
        }
        let (r, t) = key.clone();
        let v = self
            .run(move |db| {
                let table = db.begin_read()?.open_table(TAGS)?;
                let v = table.get((r.as_str(), t.as_str()))?;
                Ok(v.and_then(|v| v.value().parse().ok()))
            })
            .await?;
        Ok(fill(&self.cache.tags, key, v))
    }

    /// Removes a manifest from `repo`, with the tags that point at it and its referrers entry. Returns
    /// whether it was there. The bytes stay in the content store for the collector.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_owned(), digest.clone());
        self.run_write(move |db, cache| {
            let d = digest.to_string();
            let tx = db.begin_write()?;
            let old = tx
                .open_table(MANIFESTS)?
                .remove((repo.as_str(), d.as_str()))?
                .map(|v| serde_json::from_slice::<ManifestRecord>(v.value()))
                .transpose()?;
            let Some(old) = old else {
                return Ok(false);
            };
            let doomed: Vec<String> = {
                let mut tags = tx.open_table(TAGS)?;
                let doomed: Vec<String> = prefix_range(&tags, &repo)?
                    .into_iter()
                    .filter(|(_, v)| *v == d)
                    .map(|(k, _)| k)
                    .collect();
                for t in &doomed {
                    tags.remove((repo.as_str(), t.as_str()))?;
                }
                doomed
            };
            {
                let mut used = tx.open_table(usage::LAST_USE)?;
                used.remove((repo.as_str(), d.as_str()))?;
                for t in &doomed {
                    used.remove((repo.as_str(), t.as_str()))?;
                }
            }
            if let Some(subject) = old.subject {
                tx.open_table(REFERRERS)?.remove((
                    repo.as_str(),
                    subject.to_string().as_str(),
                    d.as_str(),
                ))?;
            }
            tx.commit()?;
            cache.repos.insert(repo.clone(), Known::Unsure);
            for t in doomed {
                cache.tags.insert((repo.clone(), t), None);
            }
            cache.manifests.insert((repo, digest), None);
            Ok(true)
        })
        .await
    }

    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, MetaError> {
        let (r, t) = (repo.to_owned(), tag.to_owned());
        self.run_write(move |db, cache| {
            let tx = db.begin_write()?;
            let removed = tx
                .open_table(TAGS)?
                .remove((r.as_str(), t.as_str()))?
                .is_some();
            tx.open_table(usage::LAST_USE)?
                .remove((r.as_str(), t.as_str()))?;
            tx.commit()?;
            cache.repos.insert(r.clone(), Known::Unsure);
            cache.tags.insert((r, t), None);
            Ok(removed)
        })
        .await
    }

    /// Up to `n` tags of `repo` after `last`, in lexical order, and whether more follow.
    pub async fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool), MetaError> {
        let (repo, last) = (repo.to_owned(), last.map(str::to_owned));
        self.run(move |db| {
            let t = db.begin_read()?.open_table(TAGS)?;
            let start = match &last {
                Some(l) => Bound::Excluded((repo.as_str(), l.as_str())),
                None => Bound::Included((repo.as_str(), "")),
            };
            let mut out = Vec::new();
            for item in t.range::<(&str, &str)>((start, Bound::Unbounded))? {
                let (k, _) = item?;
                let (r, tag) = k.value();
                if r != repo {
                    break;
                }
                if out.len() == n {
                    return Ok((out, true));
                }
                out.push(tag.to_owned());
            }
            Ok((out, false))
        })
        .await
    }

    /// Whether anything (a tag, manifest or blob) is known under `repo`.
    pub async fn repo_exists(&self, repo: &str) -> Result<bool, MetaError> {
        let known = self.cache.repos.get(repo).map(|k| *k);
        match known {
            Some(Known::Exists) => return Ok(true),
            Some(Known::Absent) => return Ok(false),
            Some(Known::Unsure) | None => {}
        }
        let repo = repo.to_owned();
        let key = repo.clone();
        let exists = self
            .run(move |db| {
                let tx = db.begin_read()?;
                let first = |r: Option<(String, String)>| r.is_some_and(|(k, _)| k == repo);
                let tags = tx.open_table(TAGS)?;
                let manifests = tx.open_table(MANIFESTS)?;
                let blobs = tx.open_table(BLOBS)?;
                let probe = |k: (&str, &str)| (k.0.to_owned(), k.1.to_owned());
                let from = (repo.as_str(), "");
                Ok(first(next_key(&tags, from, probe)?)
                    || first(next_key(&manifests, from, probe)?)
                    || first(next_key(&blobs, from, probe)?))
            })
            .await?;
        if known.is_none() {
            let seen = if exists { Known::Exists } else { Known::Absent };
            fill(&self.cache.repos, key, seen);
        }
        Ok(exists)
    }

    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let (repo, s) = (repo.to_owned(), subject.to_string());
        self.run(move |db| {
            let t = db.begin_read()?.open_table(REFERRERS)?;
            let mut out = Vec::new();
            for item in t.range((repo.as_str(), s.as_str(), "")..)? {
                let (k, v) = item?;
                let (r, subj, _) = k.value();
                if r != repo || subj != s {
                    break;
                }
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Records a manifest fetched by the mirror for `tag` and when the upstream confirmed it.
    pub async fn mirror_tag(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
        record: Option<ManifestRecord>,
        checked: u64,
    ) -> Result<(), MetaError> {
        let (repo, tag, digest) = (repo.to_owned(), tag.to_owned(), digest.clone());
        let encoded = record.as_ref().map(serde_json::to_vec).transpose()?;
        self.run_write(move |db, cache| {
            let d = digest.to_string();
            let tx = db.begin_write()?;
            if let Some(rec) = &encoded {
                tx.open_table(MANIFESTS)?
                    .insert((repo.as_str(), d.as_str()), rec.as_slice())?;
            }
            tx.open_table(TAGS)?
                .insert((repo.as_str(), tag.as_str()), d.as_str())?;
            tx.open_table(TAG_CHECKED)?
                .insert((repo.as_str(), tag.as_str()), checked)?;
            tx.commit()?;
            cache.exists(&repo);
            if let Some(rec) = record {
                cache
                    .manifests
                    .insert((repo.clone(), digest.clone()), Some(rec));
            }
            cache.tags.insert((repo.clone(), tag.clone()), Some(digest));
            cache.checked.insert((repo, tag), Some(checked));
            Ok(())
        })
        .await
    }

    /// When the mirror last confirmed `tag` of `repo` upstream.
    pub async fn tag_checked(&self, repo: &str, tag: &str) -> Result<Option<u64>, MetaError> {
        let key = (repo.to_owned(), tag.to_owned());
        if let Some(v) = self.cache.checked.get(&key) {
            return Ok(*v);
        }
        let (r, t) = key.clone();
        let v = self
            .run(move |db| {
                let table = db.begin_read()?.open_table(TAG_CHECKED)?;
                Ok(table.get((r.as_str(), t.as_str()))?.map(|v| v.value()))
            })
            .await?;
        Ok(fill(&self.cache.checked, key, v))
    }

    /// Records the referrers index the mirror fetched for `subject` in cache repository `repo` (its
    /// bytes already in the content store) and when the upstream answered it.
    pub async fn mirror_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        index: &Digest,
        checked: u64,
    ) -> Result<(), MetaError> {
        let (r, s, i) = (repo.to_owned(), subject.to_string(), index.to_string());
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(MIRROR_REFERRERS)?
                .insert((r.as_str(), s.as_str()), (i.as_str(), checked))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The referrers index cached for `subject` in `repo`, and when the upstream last confirmed it.
    pub async fn mirrored_referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Option<(Digest, u64)>, MetaError> {
        let (r, s) = (repo.to_owned(), subject.to_string());
        self.run(move |db| {
            let t = db.begin_read()?.open_table(MIRROR_REFERRERS)?;
            let Some(v) = t.get((r.as_str(), s.as_str()))? else {
                return Ok(None);
            };
            let (index, checked) = v.value();
            // A record this module wrote holds a valid digest; anything else reads as absent.
            Ok(index.parse().ok().map(|d| (d, checked)))
        })
        .await
    }

    /// What the plugin set `key` made of manifest `original` (itself when it left it unchanged).
    pub async fn rewrite_of(
        &self,
        original: &Digest,
        key: &str,
    ) -> Result<Option<Digest>, MetaError> {
        let (o, k) = (original.to_string(), key.to_owned());
        self.run(move |db| {
            let t = db.begin_read()?.open_table(REWRITES)?;
            let v = t.get((o.as_str(), k.as_str()))?;
            // A record this module wrote holds a valid digest; anything else reads as absent.
            Ok(v.and_then(|v| v.value().parse().ok()))
        })
        .await
    }

    /// Records that plugin set `key` rewrote `original` into `rewritten` (whose bytes are already in
    /// the content store and recorded for the repository).
    pub async fn record_rewrite(
        &self,
        original: &Digest,
        key: &str,
        rewritten: &Digest,
    ) -> Result<(), MetaError> {
        let (o, k, r) = (original.to_string(), key.to_owned(), rewritten.to_string());
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(REWRITES)?
                .insert((o.as_str(), k.as_str()), r.as_str())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn create_upload(&self, id: &str, rec: UploadRecord) -> Result<(), MetaError> {
        let id = id.to_owned();
        let rec = serde_json::to_vec(&rec)?;
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(UPLOADS)?
                .insert(id.as_str(), rec.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
        let id = id.to_owned();
        self.run(move |db| {
            let t = db.begin_read()?.open_table(UPLOADS)?;
            let v = t.get(id.as_str())?;
            Ok(v.map(|v| serde_json::from_slice(v.value())).transpose()?)
        })
        .await
    }

    pub async fn remove_upload(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(UPLOADS)?.remove(id.as_str())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, MetaError> {
        self.run(move |db| {
            let t = db.begin_read()?.open_table(UPLOADS)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_owned(), serde_json::from_slice(v.value())?));
            }
            Ok(out)
        })
        .await
    }
}

/// The (second key, value) pairs under `repo` in a (repo, x) → &str table.
fn prefix_range(
    t: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    repo: &str,
) -> Result<Vec<(String, String)>, MetaError> {
    let mut out = Vec::new();
    for item in t.range((repo, "")..)? {
        let (k, v) = item?;
        let (r, x) = k.value();
        if r != repo {
            break;
        }
        out.push((x.to_owned(), v.value().to_owned()));
    }
    Ok(out)
}

/// The first key at or after `from`, converted by `f`.
fn next_key<V: redb::Value + 'static>(
    t: &impl ReadableTable<(&'static str, &'static str), V>,
    from: (&str, &str),
    f: impl Fn((&str, &str)) -> (String, String),
) -> Result<Option<(String, String)>, MetaError> {
    match t.range(from..)?.next() {
        Some(item) => Ok(Some(f(item?.0.value()))),
        None => Ok(None),
    }
}

mod collect;
pub use collect::{Forgotten, LeaseRecord, Snapshot};

mod platforms;
pub mod push;
mod scrub;
pub use scrub::Inventory;
mod sent;
mod stats;
pub use stats::{CacheTotals, LastGc, Retention, Sample};
mod usage;
pub use usage::LastUse;

#[cfg(test)]
mod tests;
