//! The metadata the collector and the leases need: lease records, one consistent snapshot of the
//! reference graph's metadata edges, and removing every record of collected content.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::db::{
    Known, ManifestRecord, Meta, MetaError, ReadCache, BLOBS, MANIFESTS, MIRROR_REFERRERS,
    REFERRERS, REWRITES, TAGS,
};
use super::usage::{self, LastUse, LAST_USE};
use wharf_model::digest::Digest;

/// A lease as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// What took it (`upload team/app`, `fill docker.io/library/alpine`, …), for `wharf leases`.
    pub purpose: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; renewable.
    pub expires: u64,
    /// What the lease is about (`repository`, `upload`, `digest`, …), for listing and for tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub digests: Vec<Digest>,
    /// Ingests (writes in progress) it protects from the upload purge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingests: Vec<String>,
}

/// lease id → LeaseRecord (JSON)
pub(super) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// What the collector reads in one transaction.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (repository, tag, manifest digest)
    pub tags: Vec<(String, String, Digest)>,
    /// Every manifest digest any repository records, with its record.
    pub manifests: HashMap<Digest, ManifestRecord>,
    /// (subject, referrer): a reachable subject keeps its referrers.
    pub referrers: Vec<(Digest, Digest)>,
    /// (original, what made the new one: `platforms:…` or a plugin set's key, rewritten or reduced):
    /// each end keeps the other.
    pub rewrites: Vec<(Digest, String, Digest)>,
    /// (subject, cached referrers index) of the mirror.
    pub mirror_referrers: Vec<(Digest, Digest)>,
    /// When each tag was last pulled or pushed (`LastUse::of_tag`), uses not written yet included.
    pub last_use: LastUse,
}

/// What `forget` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub blob_links: usize,
    pub manifest_records: usize,
}

impl Meta {
    /// Writes a lease. Not forced to disk: a lease outlives a crash only as far as the next durable
    /// commit (an upload, a tag), and what a dead process leased is protected by the restart's grace
    /// window anyway; a lease costs no fsync.
    pub async fn put_lease(&self, id: &str, rec: &LeaseRecord) -> Result<(), MetaError> {
        if self.pg().is_some() {
            let (id, rec) = (id.to_owned(), rec.clone());
            return self
                .pg_write(move |pg, _| async move { pg.put_lease(&id, &rec).await })
                .await;
        }
        let (id, v) = (id.to_owned(), serde_json::to_vec(rec)?);
        self.run(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::None)?;
            tx.open_table(LEASES)?.insert(id.as_str(), v.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn delete_lease(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move { pg.delete_lease(&id).await })
                .await;
        }
        self.run(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::None)?;
            tx.open_table(LEASES)?.remove(id.as_str())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn leases(&self) -> Result<Vec<(String, LeaseRecord)>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.leases().await;
        }
        self.run(|db| {
            let t = db.begin_read()?.open_table(LEASES)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_owned(), serde_json::from_slice(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    /// Tags, manifest records, referrer, rewrite and mirror-referrer edges, and last-use times, as of
    /// one moment (with the uses noted since the last flush).
    pub async fn snapshot(&self) -> Result<Snapshot, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.snapshot(&self.uses).await;
        }
        let pending = self.uses.clone();
        self.run(move |db| {
            let tx = db.begin_read()?;
            let mut s = Snapshot::default();
            for item in tx.open_table(TAGS)?.iter()? {
                let (k, v) = item?;
                let (repo, tag) = k.value();
                if let Ok(d) = v.value().parse() {
                    s.tags.push((repo.to_owned(), tag.to_owned(), d));
                }
            }
            for item in tx.open_table(MANIFESTS)?.iter()? {
                let (k, v) = item?;
                if let Ok(d) = k.value().1.parse::<Digest>() {
                    if let std::collections::hash_map::Entry::Vacant(e) = s.manifests.entry(d) {
                        e.insert(serde_json::from_slice(v.value())?);
                    }
                }
            }
            for item in tx.open_table(REFERRERS)?.iter()? {
                let (k, _) = item?;
                let (_, subject, referrer) = k.value();
                if let (Ok(a), Ok(b)) = (subject.parse(), referrer.parse()) {
                    s.referrers.push((a, b));
                }
            }
            for item in tx.open_table(REWRITES)?.iter()? {
                let (k, v) = item?;
                let (original, key) = k.value();
                if let (Ok(a), Ok(b)) = (original.parse(), v.value().parse()) {
                    s.rewrites.push((a, key.to_owned(), b));
                }
            }
            for item in tx.open_table(MIRROR_REFERRERS)?.iter()? {
                let (k, v) = item?;
                if let (Ok(a), Ok(b)) = (k.value().1.parse(), v.value().0.parse()) {
                    s.mirror_referrers.push((a, b));
                }
            }
            s.last_use = usage::read(&tx.open_table(LAST_USE)?, &pending)?;
            Ok(s)
        })
        .await
    }

    /// Every (repository, manifest digest) recorded.
    pub async fn manifest_repos(&self) -> Result<Vec<(String, Digest)>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.manifest_repos().await;
        }
        self.run(|db| {
            let t = db.begin_read()?.open_table(MANIFESTS)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, _) = item?;
                let (r, d) = k.value();
                if let Ok(d) = d.parse() {
                    out.push((r.to_owned(), d));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes every record of `gone` (blob links, manifest records, referrer entries, last-use times,
    /// rewrite mappings, which upstreams sent it), and the last-use times of tags that are gone, in
    /// one durable transaction: called before the content itself is removed, so a crash in between
    /// leaves content no record names (collected next time), never a record of missing content.
    pub async fn forget(&self, gone: HashSet<Digest>) -> Result<Forgotten, MetaError> {
        if gone.is_empty() {
            return Ok(Forgotten::default());
        }
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    let names: Vec<String> = gone.iter().map(|d| d.to_string()).collect();
                    let removed = pg.forget(&names).await?;
                    let out = Forgotten {
                        blob_links: removed.blobs.len(),
                        manifest_records: removed.manifests.len(),
                    };
                    forgotten(&cache, stamp, removed.blobs, removed.manifests);
                    Ok(out)
                })
                .await;
        }
        self.run_write(move |db, cache| {
            let names: HashSet<String> = gone.iter().map(|d| d.to_string()).collect();
            let tx = db.begin_write()?;
            let mut out = Forgotten::default();
            let mut blob_keys = Vec::new();
            let mut manifest_keys = Vec::new();
            {
                let mut t = tx.open_table(BLOBS)?;
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, d) = k.value();
                    if names.contains(d) {
                        blob_keys.push((r.to_owned(), d.to_owned()));
                    }
                }
                for (r, d) in &blob_keys {
                    t.remove((r.as_str(), d.as_str()))?;
                }
            }
            {
                let mut t = tx.open_table(MANIFESTS)?;
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, d) = k.value();
                    if names.contains(d) {
                        manifest_keys.push((r.to_owned(), d.to_owned()));
                    }
                }
                for (r, d) in &manifest_keys {
                    t.remove((r.as_str(), d.as_str()))?;
                }
            }
            {
                let mut t = tx.open_table(REFERRERS)?;
                let mut keys = Vec::new();
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, s, d) = k.value();
                    if names.contains(d) || names.contains(s) {
                        keys.push((r.to_owned(), s.to_owned(), d.to_owned()));
                    }
                }
                for (r, s, d) in &keys {
                    t.remove((r.as_str(), s.as_str(), d.as_str()))?;
                }
            }
            {
                let mut t = tx.open_table(REWRITES)?;
                let mut keys = Vec::new();
                for item in t.iter()? {
                    let (k, v) = item?;
                    let (o, key) = k.value();
                    if names.contains(o) || names.contains(v.value()) {
                        keys.push((o.to_owned(), key.to_owned()));
                    }
                }
                for (o, key) in &keys {
                    t.remove((o.as_str(), key.as_str()))?;
                }
            }
            {
                let mut t = tx.open_table(MIRROR_REFERRERS)?;
                let mut keys = Vec::new();
                for item in t.iter()? {
                    let (k, v) = item?;
                    let (r, s) = k.value();
                    if names.contains(s) || names.contains(v.value().0) {
                        keys.push((r.to_owned(), s.to_owned()));
                    }
                }
                for (r, s) in &keys {
                    t.remove((r.as_str(), s.as_str()))?;
                }
            }
            super::sent::forget(&tx, &names)?;
            {
                // A use noted just before its tag was deleted (or evicted) is written after: dropped
                // here, with the uses of collected digests.
                let tags = tx.open_table(TAGS)?;
                let mut t = tx.open_table(LAST_USE)?;
                let mut keys = Vec::new();
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, reference) = k.value();
                    let gone = if reference.contains(':') {
                        names.contains(reference)
                    } else {
                        tags.get((r, reference))?.is_none()
                    };
                    if gone {
                        keys.push((r.to_owned(), reference.to_owned()));
                    }
                }
                for (r, reference) in &keys {
                    t.remove((r.as_str(), reference.as_str()))?;
                }
            }
            tx.commit()?;
            out.blob_links = blob_keys.len();
            out.manifest_records = manifest_keys.len();
            forgotten(cache, cache.stamp(), blob_keys, manifest_keys);
            Ok(out)
        })
        .await
    }
}

/// After `forget` committed (`stamp` taken before it began): what the read cache holds of the removed
/// links and records goes.
pub(super) fn forgotten(
    cache: &ReadCache,
    stamp: Option<u64>,
    blobs: Vec<(String, String)>,
    manifests: Vec<(String, String)>,
) {
    for (r, _) in blobs.iter().chain(&manifests) {
        cache.repos.insert(r.clone(), Known::Unsure);
    }
    for (r, d) in blobs {
        if let Ok(d) = d.parse() {
            cache.put(&cache.blobs, stamp, (r, d), None);
        }
    }
    for (r, d) in manifests {
        if let Ok(d) = d.parse() {
            cache.put(&cache.manifests, stamp, (r, d), None);
        }
    }
}
