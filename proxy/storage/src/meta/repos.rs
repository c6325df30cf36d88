//! What the registry keeps per repository: blob links, manifests and their tags, referrers, upload
//! sessions, and the mirror's tag checks, referrers indexes and manifest rewrites.

use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable};

use super::db::{
    Known, ManifestRecord, Meta, MetaError, UploadRecord, BLOBS, MANIFESTS, MIRROR_REFERRERS,
    REFERRERS, REWRITES, TAGS, TAG_CHECKED, UPLOADS,
};
use super::pg::PutRows;
use super::{sent, usage};
use wharf_model::digest::Digest;
use wharf_model::manifest::Descriptor;

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

impl Meta {
    pub async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), MetaError> {
        let (r, d) = (repo.to_owned(), digest.clone());
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    pg.link_blob(&r, &d.to_string(), size).await?;
                    cache.exists_since(stamp, &r);
                    cache.put(&cache.blobs, stamp, (r, d), Some(size));
                    Ok(())
                })
                .await;
        }
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
        let stamp = self.cache.stamp();
        let (r, d) = (repo.to_owned(), digest.to_string());
        let v = match self.pg() {
            Some(pg) => pg.blob(&r, &d).await?,
            None => {
                self.run(move |db| {
                    let t = db.begin_read()?.open_table(BLOBS)?;
                    Ok(t.get((r.as_str(), d.as_str()))?.map(|v| v.value()))
                })
                .await?
            }
        };
        Ok(self.cache.fill(&self.cache.blobs, stamp, key, v))
    }

    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let (r, d) = (repo.to_owned(), digest.clone());
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    let removed = pg.unlink_blob(&r, &d.to_string()).await?;
                    cache.repos.insert(r.clone(), Known::Unsure);
                    cache.put(&cache.blobs, stamp, (r, d), None);
                    Ok(removed)
                })
                .await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.missing(repo, blobs, manifests).await;
        }
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
        if self.pg().is_some() {
            let record = put.record;
            let referrer = match (&record.subject, put.referrer) {
                (Some(s), Some(r)) => Some((s.to_string(), r)),
                _ => None,
            };
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    pg.put_manifest(PutRows {
                        repo: &repo,
                        digest: &digest.to_string(),
                        record: &record,
                        tag: tag.as_deref(),
                        referrer: referrer.as_ref().map(|(s, r)| (s.clone(), r)),
                        sent_by: sent_by.as_deref(),
                    })
                    .await?;
                    cache.exists_since(stamp, &repo);
                    if let Some(tag) = tag {
                        let key = (repo.clone(), tag);
                        cache.put(&cache.tags, stamp, key, Some(digest.clone()));
                    }
                    cache.put(&cache.manifests, stamp, (repo, digest), Some(record));
                    Ok(())
                })
                .await;
        }
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
        let stamp = self.cache.stamp();
        let (r, d) = (repo.to_owned(), digest.to_string());
        let v = match self.pg() {
            Some(pg) => pg.manifest(&r, &d).await?,
            None => {
                self.run(move |db| {
                    let t = db.begin_read()?.open_table(MANIFESTS)?;
                    let v = t.get((r.as_str(), d.as_str()))?;
                    Ok(v.map(|v| serde_json::from_slice(v.value())).transpose()?)
                })
                .await?
            }
        };
        Ok(self.cache.fill(&self.cache.manifests, stamp, key, v))
    }

    pub async fn tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>, MetaError> {
        let key = (repo.to_owned(), tag.to_owned());
        if let Some(v) = self.cache.tags.get(&key) {
            return Ok(v.clone());
        }
        let stamp = self.cache.stamp();
        let (r, t) = key.clone();
        let v = match self.pg() {
            Some(pg) => pg.tag(&r, &t).await?,
            None => {
                self.run(move |db| {
                    let table = db.begin_read()?.open_table(TAGS)?;
                    let v = table.get((r.as_str(), t.as_str()))?;
                    Ok(v.and_then(|v| v.value().parse().ok()))
                })
                .await?
            }
        };
        Ok(self.cache.fill(&self.cache.tags, stamp, key, v))
    }

    /// Removes a manifest from `repo`, with the tags that point at it and its referrers entry. Returns
    /// whether it was there. The bytes stay in the content store for the collector.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_owned(), digest.clone());
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    let Some(doomed) = pg.delete_manifest(&repo, &digest.to_string()).await? else {
                        return Ok(false);
                    };
                    cache.repos.insert(repo.clone(), Known::Unsure);
                    for t in doomed {
                        cache.put(&cache.tags, stamp, (repo.clone(), t), None);
                    }
                    cache.put(&cache.manifests, stamp, (repo, digest), None);
                    Ok(true)
                })
                .await;
        }
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
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    let removed = pg.delete_tag(&r, &t).await?;
                    cache.repos.insert(r.clone(), Known::Unsure);
                    cache.put(&cache.tags, stamp, (r, t), None);
                    Ok(removed)
                })
                .await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.tags(repo, last, n).await;
        }
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
        let stamp = self.cache.stamp();
        let repo = repo.to_owned();
        let key = repo.clone();
        let exists = match self.pg() {
            Some(pg) => pg.repo_exists(&repo).await?,
            None => self.repo_exists_redb(repo).await?,
        };
        if known.is_none() {
            let seen = if exists { Known::Exists } else { Known::Absent };
            self.cache.fill(&self.cache.repos, stamp, key, seen);
        }
        Ok(exists)
    }

    async fn repo_exists_redb(&self, repo: String) -> Result<bool, MetaError> {
        self.run(move |db| {
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
        .await
    }

    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let (repo, s) = (repo.to_owned(), subject.to_string());
        if let Some(pg) = self.pg() {
            return pg.referrers(&repo, &s).await;
        }
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
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    let d = digest.to_string();
                    pg.mirror_tag(&repo, &tag, &d, record.as_ref(), checked)
                        .await?;
                    cache.exists_since(stamp, &repo);
                    if let Some(rec) = record {
                        let key = (repo.clone(), digest.clone());
                        cache.put(&cache.manifests, stamp, key, Some(rec));
                    }
                    let key = (repo.clone(), tag.clone());
                    cache.put(&cache.tags, stamp, key, Some(digest));
                    cache.put(&cache.checked, stamp, (repo, tag), Some(checked));
                    Ok(())
                })
                .await;
        }
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
        let stamp = self.cache.stamp();
        let (r, t) = key.clone();
        let v = match self.pg() {
            Some(pg) => pg.tag_checked(&r, &t).await?,
            None => {
                self.run(move |db| {
                    let table = db.begin_read()?.open_table(TAG_CHECKED)?;
                    Ok(table.get((r.as_str(), t.as_str()))?.map(|v| v.value()))
                })
                .await?
            }
        };
        Ok(self.cache.fill(&self.cache.checked, stamp, key, v))
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
        if self.pg().is_some() {
            return self
                .pg_write(
                    move |pg, _| async move { pg.mirror_referrers(&r, &s, &i, checked).await },
                )
                .await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.mirrored_referrers(&r, &s).await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.rewrite_of(&o, &k).await;
        }
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
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move { pg.record_rewrite(&o, &k, &r).await })
                .await;
        }
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
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move { pg.create_upload(&id, &rec).await })
                .await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.upload(id).await;
        }
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
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move { pg.remove_upload(&id).await })
                .await;
        }
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(UPLOADS)?.remove(id.as_str())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.uploads().await;
        }
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
