//! What the scrub (`scrub.rs`) reads and writes here: every record that names content, dropping the
//! records of content found damaged, and its own progress and last result.

use std::collections::BTreeSet;

use redb::{ReadableDatabase, ReadableTable};
use serde::{de::DeserializeOwned, Serialize};

use super::db::{
    Known, ManifestRecord, Meta, MetaError, ReadCache, BLOBS, MANIFESTS, REFERRERS, TAGS,
};
use super::stats::STATUS_RECORDS;
use wharf_model::digest::Digest;

/// Where an interrupted pass stopped (the last digest verified), so the next one goes on from there.
const PROGRESS: &str = "scrub_progress";
/// The last pass that went through to the end.
const LAST: &str = "last_scrub";

/// Every record that names content, as of one moment.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    /// (repository, blob digest)
    pub blob_links: Vec<(String, Digest)>,
    /// (repository, manifest digest, record)
    pub manifests: Vec<(String, Digest, ManifestRecord)>,
    /// (repository, tag, manifest digest)
    pub tags: Vec<(String, String, Digest)>,
}

impl Meta {
    /// Blob links, manifest records and tags, in one read transaction.
    pub async fn inventory(&self) -> Result<Inventory, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.inventory().await;
        }
        self.run(|db| {
            let tx = db.begin_read()?;
            let mut inv = Inventory::default();
            for item in tx.open_table(BLOBS)?.iter()? {
                let (k, _) = item?;
                let (r, d) = k.value();
                if let Ok(d) = d.parse() {
                    inv.blob_links.push((r.to_owned(), d));
                }
            }
            for item in tx.open_table(MANIFESTS)?.iter()? {
                let (k, v) = item?;
                let (r, d) = k.value();
                if let Ok(d) = d.parse() {
                    inv.manifests
                        .push((r.to_owned(), d, serde_json::from_slice(v.value())?));
                }
            }
            for item in tx.open_table(TAGS)?.iter()? {
                let (k, v) = item?;
                let (r, t) = k.value();
                if let Ok(d) = v.value().parse() {
                    inv.tags.push((r.to_owned(), t.to_owned(), d));
                }
            }
            Ok(inv)
        })
        .await
    }

    /// The repositories that link `d` as a blob or record it as a manifest.
    pub async fn holders(&self, d: &Digest) -> Result<BTreeSet<String>, MetaError> {
        let d = d.to_string();
        if let Some(pg) = self.pg() {
            return pg.holders(&d).await;
        }
        self.run(move |db| {
            let tx = db.begin_read()?;
            let mut out = BTreeSet::new();
            for item in tx.open_table(BLOBS)?.iter()? {
                let (k, _) = item?;
                let (r, x) = k.value();
                if x == d {
                    out.insert(r.to_owned());
                }
            }
            for item in tx.open_table(MANIFESTS)?.iter()? {
                let (k, _) = item?;
                let (r, x) = k.value();
                if x == d {
                    out.insert(r.to_owned());
                }
            }
            Ok(out)
        })
        .await
    }

    /// Drops, in one durable transaction, every blob link and manifest record of damaged content
    /// `d` (and its entries as a referrer), before its file is moved away: then no record names
    /// missing content, a `HEAD` says it is not there (a client uploads it again), and the mirror
    /// fetches it again. Tags stay: a tag of a pushed image names what was pushed, and the scrub
    /// reports it until the image is pushed again.
    pub async fn forget_damaged(&self, d: &Digest) -> Result<BTreeSet<String>, MetaError> {
        let digest = d.clone();
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    let (blob_repos, manifest_repos) =
                        pg.forget_damaged(&digest.to_string()).await?;
                    Ok(damaged_forgotten(
                        &cache,
                        stamp,
                        &digest,
                        blob_repos,
                        manifest_repos,
                    ))
                })
                .await;
        }
        self.run_write(move |db, cache| {
            let d = digest.to_string();
            let tx = db.begin_write()?;
            let mut blob_repos = Vec::new();
            let mut manifest_repos = Vec::new();
            {
                let mut t = tx.open_table(BLOBS)?;
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, x) = k.value();
                    if x == d {
                        blob_repos.push(r.to_owned());
                    }
                }
                for r in &blob_repos {
                    t.remove((r.as_str(), d.as_str()))?;
                }
            }
            {
                let mut t = tx.open_table(MANIFESTS)?;
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, x) = k.value();
                    if x == d {
                        manifest_repos.push(r.to_owned());
                    }
                }
                for r in &manifest_repos {
                    t.remove((r.as_str(), d.as_str()))?;
                }
            }
            {
                let mut t = tx.open_table(REFERRERS)?;
                let mut keys = Vec::new();
                for item in t.iter()? {
                    let (k, _) = item?;
                    let (r, s, x) = k.value();
                    if x == d {
                        keys.push((r.to_owned(), s.to_owned()));
                    }
                }
                for (r, s) in &keys {
                    t.remove((r.as_str(), s.as_str(), d.as_str()))?;
                }
            }
            tx.commit()?;
            Ok(damaged_forgotten(
                cache,
                cache.stamp(),
                &digest,
                blob_repos,
                manifest_repos,
            ))
        })
        .await
    }

    /// Where an interrupted scrub pass stopped, if one did.
    pub async fn scrub_progress<T: DeserializeOwned + Send + 'static>(
        &self,
    ) -> Result<Option<T>, MetaError> {
        self.status_record(PROGRESS).await
    }

    /// Records how far the running pass got, durably: a crash or a stop loses at most what was
    /// verified since.
    pub async fn save_scrub_progress<T: Serialize>(&self, p: &T) -> Result<(), MetaError> {
        self.put_status_record(PROGRESS, p).await
    }

    /// Records a finished pass and forgets its progress, in one transaction.
    pub async fn scrub_finished<T: Serialize>(&self, last: &T) -> Result<(), MetaError> {
        if self.pg().is_some() {
            let v = serde_json::to_value(last)?;
            return self
                .pg_write(move |pg, _| async move { pg.scrub_finished(LAST, &v, PROGRESS).await })
                .await;
        }
        let v = serde_json::to_vec(last)?;
        self.run(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(STATUS_RECORDS)?;
                t.insert(LAST, v.as_slice())?;
                t.remove(PROGRESS)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The last finished scrub pass, if one was recorded.
    pub async fn last_scrub<T: DeserializeOwned + Send + 'static>(
        &self,
    ) -> Result<Option<T>, MetaError> {
        self.status_record(LAST).await
    }
}

/// After `forget_damaged` committed: what the read cache holds of the removed links and records
/// goes. Returns the repositories that held `d`.
pub(super) fn damaged_forgotten(
    cache: &ReadCache,
    stamp: Option<u64>,
    d: &Digest,
    blob_repos: Vec<String>,
    manifest_repos: Vec<String>,
) -> BTreeSet<String> {
    for r in blob_repos.iter().chain(&manifest_repos) {
        cache.repos.insert(r.clone(), Known::Unsure);
    }
    for r in &blob_repos {
        cache.put(&cache.blobs, stamp, (r.clone(), d.clone()), None);
    }
    for r in &manifest_repos {
        cache.put(&cache.manifests, stamp, (r.clone(), d.clone()), None);
    }
    blob_repos.into_iter().chain(manifest_repos).collect()
}
