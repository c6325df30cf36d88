//! `collect.rs` on Postgres: leases, the collector's snapshot, and forgetting collected content.
//! Also the small helpers the other files of this part share (jsonb records, lazy commits).

use serde::de::DeserializeOwned;
use tokio_postgres::types::Json;
use tokio_postgres::{IsolationLevel, Row, Transaction};

use super::conn::{notify, Invalidate, Pg};
use crate::meta::collect::{LeaseRecord, Snapshot};
use crate::meta::error::MetaError;
use crate::meta::pending::Pending;
use wharf_model::digest::Digest;

/// Column `i` of `row`, a jsonb record, as `T`. A record that does not read as one is `Corrupt`, as
/// in redb (not a connection failure, which is what the driver's conversion error would classify as).
pub(super) fn record<T: DeserializeOwned>(row: &Row, i: usize) -> Result<T, MetaError> {
    let Json(v) = row
        .try_get::<_, Json<serde_json::Value>>(i)
        .map_err(MetaError::Pg)?;
    Ok(serde_json::from_value(v)?)
}

/// Makes `tx` commit without waiting for its WAL to reach the disk: redb's `Durability::None`, for
/// records whose loss in a crash costs little (a lease, a sample, a delivered-blob hint). What it
/// wrote becomes durable with the next flush of the WAL, as in redb with the next durable commit.
pub(super) async fn lazily(pg: &Pg, tx: &Transaction<'_>) -> Result<(), MetaError> {
    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
        .await
        .map_err(|e| pg.error(e))
}

/// Sends the invalidations of the (repo, digest) rows `tx` removed from the table of `kind`, all at
/// once (the driver pipelines them: a collection may forget thousands).
pub(super) async fn notify_removed(
    pg: &Pg,
    tx: &Transaction<'_>,
    kind: Invalidate,
    rows: &[(String, String)],
) -> Result<(), MetaError> {
    futures::future::try_join_all(rows.iter().map(|(r, d)| notify(tx, kind, r, d)))
        .await
        .map_err(|e| pg.error(e))?;
    Ok(())
}

/// What `forget` removed: the (repo, digest) keys of blob links and of manifest records.
pub(in crate::meta) struct Removed {
    pub(in crate::meta) blobs: Vec<(String, String)>,
    pub(in crate::meta) manifests: Vec<(String, String)>,
}

fn pairs(rows: Vec<Row>) -> Vec<(String, String)> {
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

impl Pg {
    pub(in crate::meta) async fn put_lease(
        &self,
        id: &str,
        rec: &LeaseRecord,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        lazily(self, &tx).await?;
        tx.execute(
            "INSERT INTO leases (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&id, &Json(rec)],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn delete_lease(&self, id: &str) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        lazily(self, &tx).await?;
        tx.execute("DELETE FROM leases WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn leases(&self) -> Result<Vec<(String, LeaseRecord)>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, record FROM leases ORDER BY id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(|r| Ok((r.get(0), record(r, 1)?))).collect()
    }

    /// The collector's snapshot, read in one REPEATABLE READ transaction: every table as of one
    /// moment, as redb's read transaction sees it, whatever other processes commit meanwhile.
    pub(in crate::meta) async fn snapshot(&self, pending: &Pending) -> Result<Snapshot, MetaError> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.error(e))?;
        let q = |sql: &'static str| {
            let tx = &tx;
            async move { tx.query(sql, &[]).await.map_err(|e| self.error(e)) }
        };
        let mut s = Snapshot::default();
        for r in
            q("SELECT repo, tag, digest FROM tags ORDER BY repo COLLATE \"C\", tag COLLATE \"C\"")
                .await?
        {
            if let Ok(d) = r.get::<_, &str>(2).parse() {
                s.tags.push((r.get(0), r.get(1), d));
            }
        }
        // One record per digest: the first repository's in key order, as redb keeps.
        for r in q("SELECT DISTINCT ON (digest) digest, record FROM manifests
                    ORDER BY digest, repo COLLATE \"C\"")
        .await?
        {
            if let Ok(d) = r.get::<_, &str>(0).parse::<Digest>() {
                s.manifests.insert(d, record(&r, 1)?);
            }
        }
        for r in q("SELECT subject, referrer FROM referrers
                    ORDER BY repo COLLATE \"C\", subject COLLATE \"C\", referrer COLLATE \"C\"")
        .await?
        {
            if let (Ok(a), Ok(b)) = (r.get::<_, &str>(0).parse(), r.get::<_, &str>(1).parse()) {
                s.referrers.push((a, b));
            }
        }
        for r in q("SELECT original, plugins, rewritten FROM rewrites
                    ORDER BY original COLLATE \"C\", plugins COLLATE \"C\"")
        .await?
        {
            if let (Ok(a), Ok(b)) = (r.get::<_, &str>(0).parse(), r.get::<_, &str>(2).parse()) {
                s.rewrites.push((a, r.get(1), b));
            }
        }
        for r in q("SELECT subject, index_digest FROM mirror_referrers
                    ORDER BY repo COLLATE \"C\", subject COLLATE \"C\"")
        .await?
        {
            if let (Ok(a), Ok(b)) = (r.get::<_, &str>(0).parse(), r.get::<_, &str>(1).parse()) {
                s.mirror_referrers.push((a, b));
            }
        }
        for r in q("SELECT repo, reference, at FROM last_use").await? {
            s.last_use
                .merge(r.get(0), r.get(1), r.get::<_, i64>(2) as u64);
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        for e in pending.0.iter() {
            for (reference, at) in e.value() {
                s.last_use.merge(e.key(), reference, *at);
            }
        }
        Ok(s)
    }

    pub(in crate::meta) async fn manifest_repos(&self) -> Result<Vec<(String, Digest)>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT repo, digest FROM manifests ORDER BY repo COLLATE \"C\", digest COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get(0), r.get::<_, &str>(1).parse().ok()?)))
            .collect())
    }

    /// `Meta::forget` in one transaction: every table redb's removes from, each row of the cached
    /// tables announced to the other processes.
    pub(in crate::meta) async fn forget(&self, names: &[String]) -> Result<Removed, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        let run = |sql: &'static str| {
            let tx = &tx;
            async move { tx.query(sql, &[&names]).await.map_err(|e| self.error(e)) }
        };
        let blobs =
            pairs(run("DELETE FROM blobs WHERE digest = ANY($1) RETURNING repo, digest").await?);
        let manifests = pairs(
            run("DELETE FROM manifests WHERE digest = ANY($1) RETURNING repo, digest").await?,
        );
        run("DELETE FROM referrers WHERE referrer = ANY($1) OR subject = ANY($1)").await?;
        run("DELETE FROM rewrites WHERE original = ANY($1) OR rewritten = ANY($1)").await?;
        run("DELETE FROM mirror_referrers WHERE subject = ANY($1) OR index_digest = ANY($1)")
            .await?;
        run("DELETE FROM upstream_sent WHERE digest = ANY($1)").await?;
        // A use noted just before its tag was deleted (or evicted) is written after: dropped here,
        // with the uses of collected digests. A digest always has a ':', a tag never.
        run("DELETE FROM last_use u WHERE CASE WHEN strpos(u.reference, ':') > 0
                 THEN u.reference = ANY($1)
                 ELSE NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = u.repo AND t.tag = u.reference)
             END")
        .await?;
        notify_removed(self, &tx, Invalidate::Blob, &blobs).await?;
        notify_removed(self, &tx, Invalidate::Manifest, &manifests).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(Removed { blobs, manifests })
    }
}
