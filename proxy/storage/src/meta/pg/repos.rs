//! `repos.rs` on Postgres: blob links, manifests, tags, referrers, upload sessions, the mirror's
//! tag checks, referrers indexes and rewrites.

use std::collections::HashSet;

use tokio_postgres::types::Json;

use super::conn::{notify, Invalidate, Pg};
use crate::meta::db::{ManifestRecord, UploadRecord};
use crate::meta::error::MetaError;
use wharf_model::digest::Digest;
use wharf_model::manifest::Descriptor;

/// What `put_manifest` writes, borrowed from the public method's `ManifestPut`.
pub(in crate::meta) struct PutRows<'a> {
    pub repo: &'a str,
    pub digest: &'a str,
    pub record: &'a ManifestRecord,
    pub tag: Option<&'a str>,
    /// (subject digest, descriptor of this manifest) for the referrers API.
    pub referrer: Option<(String, &'a Descriptor)>,
    /// The upstream that sent the manifest's bytes (`sent.rs`).
    pub sent_by: Option<&'a str>,
}

impl Pg {
    pub(in crate::meta) async fn link_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO blobs (repo, digest, size) VALUES ($1, $2, $3)
             ON CONFLICT (repo, digest) DO UPDATE SET size = EXCLUDED.size",
            &[&repo, &digest, &(size as i64)],
        )
        .await
        .map_err(|e| self.error(e))?;
        notify(&tx, Invalidate::Blob, repo, digest)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<u64>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT size FROM blobs WHERE repo = $1 AND digest = $2",
                &[&repo, &digest],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    pub(in crate::meta) async fn unlink_blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<bool, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        let removed = tx
            .execute(
                "DELETE FROM blobs WHERE repo = $1 AND digest = $2",
                &[&repo, &digest],
            )
            .await
            .map_err(|e| self.error(e))?
            > 0;
        if removed {
            notify(&tx, Invalidate::Blob, repo, digest)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(removed)
    }

    /// Of `blobs` and `manifests`, those `repo` does not link, in the order given: one statement, so
    /// one snapshot of both tables.
    pub(in crate::meta) async fn missing(
        &self,
        repo: &str,
        blobs: Vec<Digest>,
        manifests: Vec<Digest>,
    ) -> Result<Vec<Digest>, MetaError> {
        let b: Vec<String> = blobs.iter().map(Digest::to_string).collect();
        let m: Vec<String> = manifests.iter().map(Digest::to_string).collect();
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT false, digest FROM blobs WHERE repo = $1 AND digest = ANY($2)
                 UNION ALL
                 SELECT true, digest FROM manifests WHERE repo = $1 AND digest = ANY($3)",
                &[&repo, &b, &m],
            )
            .await
            .map_err(|e| self.error(e))?;
        let mut present = (HashSet::new(), HashSet::new());
        for r in &rows {
            let set = if r.get::<_, bool>(0) {
                &mut present.1
            } else {
                &mut present.0
            };
            set.insert(r.get::<_, String>(1));
        }
        let absent = |set: &HashSet<String>, names: Vec<String>, ds: Vec<Digest>| {
            names
                .into_iter()
                .zip(ds)
                .filter(|(n, _)| !set.contains(n))
                .map(|(_, d)| d)
                .collect::<Vec<_>>()
        };
        let mut out = absent(&present.0, b, blobs);
        out.extend(absent(&present.1, m, manifests));
        Ok(out)
    }

    /// A manifest push (or a mirror fill): record, tag, the tag's push as its last use, referrers
    /// entry and the sender's proof, in one transaction.
    pub(in crate::meta) async fn put_manifest(&self, put: PutRows<'_>) -> Result<(), MetaError> {
        let (repo, d) = (put.repo, put.digest);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO manifests (repo, digest, record) VALUES ($1, $2, $3)
             ON CONFLICT (repo, digest) DO UPDATE SET record = EXCLUDED.record",
            &[&repo, &d, &Json(put.record)],
        )
        .await
        .map_err(|e| self.error(e))?;
        notify(&tx, Invalidate::Manifest, repo, d)
            .await
            .map_err(|e| self.error(e))?;
        if let Some(tag) = put.tag {
            set_tag(&tx, repo, tag, d)
                .await
                .map_err(|e| self.error(e))?;
            super::usage::pushed(&tx, repo, tag)
                .await
                .map_err(|e| self.error(e))?;
        }
        if let Some((subject, desc)) = &put.referrer {
            tx.execute(
                "INSERT INTO referrers (repo, subject, referrer, descriptor) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo, subject, referrer) DO UPDATE SET descriptor = EXCLUDED.descriptor",
                &[&repo, subject, &d, &Json(desc)],
            )
            .await
            .map_err(|e| self.error(e))?;
        }
        if let Some(upstream) = put.sent_by {
            super::sent::record(&tx, upstream, d)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn manifest(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT record FROM manifests WHERE repo = $1 AND digest = $2",
                &[&repo, &digest],
            )
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| json(&r, 0)).transpose()
    }

    pub(in crate::meta) async fn tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT digest FROM tags WHERE repo = $1 AND tag = $2",
                &[&repo, &tag],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.and_then(|r| r.get::<_, &str>(0).parse().ok()))
    }

    /// Removes a manifest with the tags naming it, their last uses and its referrers entry. `None`:
    /// it was not there (nothing changed); else the tags removed.
    pub(in crate::meta) async fn delete_manifest(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<Vec<String>>, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        let Some(old) = tx
            .query_opt(
                "DELETE FROM manifests WHERE repo = $1 AND digest = $2 RETURNING record",
                &[&repo, &digest],
            )
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(None);
        };
        let old: ManifestRecord = json(&old, 0)?;
        // Holding the manifest's row lock from here: a concurrent push or mirror fill that tags this
        // digest waits for this commit, so the tags read here are all there are.
        let doomed: Vec<String> = tx
            .query(
                "DELETE FROM tags WHERE repo = $1 AND digest = $2 RETURNING tag",
                &[&repo, &digest],
            )
            .await
            .map_err(|e| self.error(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "DELETE FROM last_use WHERE repo = $1 AND (reference = $2 OR reference = ANY($3))",
            &[&repo, &digest, &doomed],
        )
        .await
        .map_err(|e| self.error(e))?;
        if let Some(subject) = old.subject {
            tx.execute(
                "DELETE FROM referrers WHERE repo = $1 AND subject = $2 AND referrer = $3",
                &[&repo, &subject.to_string(), &digest],
            )
            .await
            .map_err(|e| self.error(e))?;
        }
        notify(&tx, Invalidate::Manifest, repo, digest)
            .await
            .map_err(|e| self.error(e))?;
        for t in &doomed {
            notify(&tx, Invalidate::Tag, repo, t)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(Some(doomed))
    }

    /// Removes a tag and its last use; whether it was there.
    pub(in crate::meta) async fn delete_tag(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<bool, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        let removed = tx
            .execute(
                "DELETE FROM tags WHERE repo = $1 AND tag = $2",
                &[&repo, &tag],
            )
            .await
            .map_err(|e| self.error(e))?
            > 0;
        tx.execute(
            "DELETE FROM last_use WHERE repo = $1 AND reference = $2",
            &[&repo, &tag],
        )
        .await
        .map_err(|e| self.error(e))?;
        if removed {
            notify(&tx, Invalidate::Tag, repo, tag)
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(removed)
    }

    /// Up to `n` tags of `repo` after `last` in byte order (redb's, which clients paginate by), and
    /// whether more follow.
    pub(in crate::meta) async fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool), MetaError> {
        // One more than asked: whether more follow.
        let limit = i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1);
        let c = self.client().await?;
        let rows = c
            .query(
                r#"SELECT tag FROM tags
                   WHERE repo = $1 AND ($2::text IS NULL OR tag COLLATE "C" > $2)
                   ORDER BY tag COLLATE "C" LIMIT $3"#,
                &[&repo, &last, &limit],
            )
            .await
            .map_err(|e| self.error(e))?;
        let mut out: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let more = out.len() > n;
        out.truncate(n);
        Ok((out, more))
    }

    /// Whether any tag, manifest or blob is recorded under `repo`.
    pub(in crate::meta) async fn repo_exists(&self, repo: &str) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tags WHERE repo = $1)
                     OR EXISTS (SELECT 1 FROM manifests WHERE repo = $1)
                     OR EXISTS (SELECT 1 FROM blobs WHERE repo = $1)",
                &[&repo],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.get(0))
    }

    /// The descriptors listed under `subject` in `repo`, in the order of their digests (redb's).
    pub(in crate::meta) async fn referrers(
        &self,
        repo: &str,
        subject: &str,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                r#"SELECT descriptor FROM referrers WHERE repo = $1 AND subject = $2
                   ORDER BY referrer COLLATE "C""#,
                &[&repo, &subject],
            )
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(|r| json(r, 0)).collect()
    }

    /// The mirror's record of `tag`: the manifest record if new, the tag, and when the upstream
    /// confirmed it, in one transaction.
    pub(in crate::meta) async fn mirror_tag(
        &self,
        repo: &str,
        tag: &str,
        digest: &str,
        record: Option<&ManifestRecord>,
        checked: u64,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        match record {
            Some(rec) => {
                tx.execute(
                    "INSERT INTO manifests (repo, digest, record) VALUES ($1, $2, $3)
                     ON CONFLICT (repo, digest) DO UPDATE SET record = EXCLUDED.record",
                    &[&repo, &digest, &Json(rec)],
                )
                .await
                .map_err(|e| self.error(e))?;
                notify(&tx, Invalidate::Manifest, repo, digest)
                    .await
                    .map_err(|e| self.error(e))?;
            }
            None => {
                // The record is there already: held until commit, so a concurrent delete_manifest
                // (which removes the tags naming it) waits and then sees this tag, rather than
                // leave it naming a removed manifest.
                tx.execute(
                    "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2 FOR SHARE",
                    &[&repo, &digest],
                )
                .await
                .map_err(|e| self.error(e))?;
            }
        }
        set_tag(&tx, repo, tag, digest)
            .await
            .map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO tag_checked (repo, tag, at) VALUES ($1, $2, $3)
             ON CONFLICT (repo, tag) DO UPDATE SET at = EXCLUDED.at",
            &[&repo, &tag, &(checked as i64)],
        )
        .await
        .map_err(|e| self.error(e))?;
        notify(&tx, Invalidate::Checked, repo, tag)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn tag_checked(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<u64>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT at FROM tag_checked WHERE repo = $1 AND tag = $2",
                &[&repo, &tag],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    pub(in crate::meta) async fn mirror_referrers(
        &self,
        repo: &str,
        subject: &str,
        index: &str,
        checked: u64,
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO mirror_referrers (repo, subject, index_digest, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, subject) DO UPDATE
             SET index_digest = EXCLUDED.index_digest, at = EXCLUDED.at",
            &[&repo, &subject, &index, &(checked as i64)],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn mirrored_referrers(
        &self,
        repo: &str,
        subject: &str,
    ) -> Result<Option<(Digest, u64)>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT index_digest, at FROM mirror_referrers WHERE repo = $1 AND subject = $2",
                &[&repo, &subject],
            )
            .await
            .map_err(|e| self.error(e))?;
        // A record this module wrote holds a valid digest; anything else reads as absent.
        Ok(row.and_then(|r| {
            let index = r.get::<_, &str>(0).parse().ok()?;
            Some((index, r.get::<_, i64>(1) as u64))
        }))
    }

    pub(in crate::meta) async fn rewrite_of(
        &self,
        original: &str,
        key: &str,
    ) -> Result<Option<Digest>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT rewritten FROM rewrites WHERE original = $1 AND plugins = $2",
                &[&original, &key],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.and_then(|r| r.get::<_, &str>(0).parse().ok()))
    }

    pub(in crate::meta) async fn record_rewrite(
        &self,
        original: &str,
        key: &str,
        rewritten: &str,
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO rewrites (original, plugins, rewritten) VALUES ($1, $2, $3)
             ON CONFLICT (original, plugins) DO UPDATE SET rewritten = EXCLUDED.rewritten",
            &[&original, &key, &rewritten],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn create_upload(
        &self,
        id: &str,
        rec: &UploadRecord,
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO uploads (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&id, &Json(rec)],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn upload(
        &self,
        id: &str,
    ) -> Result<Option<UploadRecord>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT record FROM uploads WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| json(&r, 0)).transpose()
    }

    pub(in crate::meta) async fn remove_upload(&self, id: &str) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute("DELETE FROM uploads WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Every upload session, in the order of their ids (redb's).
    pub(in crate::meta) async fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                r#"SELECT id, record FROM uploads ORDER BY id COLLATE "C""#,
                &[],
            )
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(|r| Ok((r.get(0), json(r, 1)?))).collect()
    }
}

/// Points `tag` of `repo` at `digest`, inside `tx`.
async fn set_tag(
    tx: &tokio_postgres::Transaction<'_>,
    repo: &str,
    tag: &str,
    digest: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO tags (repo, tag, digest) VALUES ($1, $2, $3)
         ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest",
        &[&repo, &tag, &digest],
    )
    .await?;
    notify(tx, Invalidate::Tag, repo, tag).await
}

/// A record stored as `jsonb` (column `i` of `row`): one that does not fit its type is corrupt, as
/// redb's would be.
pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    i: usize,
) -> Result<T, MetaError> {
    let v: serde_json::Value = row.try_get(i).map_err(MetaError::Pg)?;
    Ok(serde_json::from_value(v)?)
}
