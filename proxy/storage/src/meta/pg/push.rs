//! `push.rs` on Postgres: the journal of deliveries and the blobs delivered to each upstream.

use deadpool_postgres::Object;
use tokio_postgres::types::Json;

use super::claim::{claim_key, DELIVERY_CLAIM};
use super::collect::{lazily, record};
use super::conn::Pg;
use crate::meta::error::MetaError;
use crate::meta::push::Delivery;

/// Held while a delivery is added: see `create_delivery`.
const JOURNAL_LOCK: i64 = 0x7768_6172_665f_706a; // "wharf_pj"
impl Pg {
    /// Ids come from a sequence (redb takes the journal's last id plus one, being its only writer),
    /// taken under a lock held until the commit: two processes adding deliveries at once get
    /// increasing ids in the order they asked, and no reader ever sees a delivery before an earlier
    /// one is committed (the deliveries of one upstream tag go in push order).
    pub(in crate::meta) async fn create_delivery(&self, rec: &Delivery) -> Result<u64, MetaError> {
        let mut c = self.client().await?;
        self.insert_delivery(&mut c, rec, false).await
    }

    /// `create_delivery`, with the new entry claimed on the connection returned (`Claim`). The lock is
    /// taken before the insert commits: no other process can see the entry unclaimed.
    pub(in crate::meta) async fn create_claimed_delivery(
        &self,
        rec: &Delivery,
    ) -> Result<(u64, Object), MetaError> {
        let mut c = self.client().await?;
        match self.insert_delivery(&mut c, rec, true).await {
            Ok(id) => Ok((id, c)),
            Err(e) => {
                // It may hold the lock (a session lock outlives a rolled back transaction): closed,
                // never pooled.
                drop(Object::take(c));
                Err(e)
            }
        }
    }

    /// Claims delivery `id` on a connection of its own, unless another holds it: the connection
    /// holding the lock, or `None`.
    pub(in crate::meta) async fn claim_delivery(
        &self,
        id: u64,
    ) -> Result<Option<Object>, MetaError> {
        let c = self.client().await?;
        let got = c
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&DELIVERY_CLAIM, &claim_key(id)],
            )
            .await;
        match got {
            Ok(row) if row.get::<_, bool>(0) => Ok(Some(c)),
            Ok(_) => Ok(None),
            Err(e) => {
                // Whether the lock was taken before the error is unknown: closed, never pooled.
                drop(Object::take(c));
                Err(self.error(e))
            }
        }
    }

    async fn insert_delivery(
        &self,
        c: &mut Object,
        rec: &Delivery,
        claim: bool,
    ) -> Result<u64, MetaError> {
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&JOURNAL_LOCK])
            .await
            .map_err(|e| self.error(e))?;
        let row = tx
            .query_one(
                "INSERT INTO push_journal (id, record) VALUES (nextval('push_journal_ids'), $1)
                 RETURNING id",
                &[&Json(rec)],
            )
            .await
            .map_err(|e| self.error(e))?;
        let id = row.get::<_, i64>(0) as u64;
        if claim {
            // Session-level, taken inside the transaction: it outlives the commit.
            tx.execute(
                "SELECT pg_advisory_lock($1, $2)",
                &[&DELIVERY_CLAIM, &claim_key(id)],
            )
            .await
            .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(id)
    }

    pub(in crate::meta) async fn put_delivery(
        &self,
        id: u64,
        rec: &Delivery,
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO push_journal (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&(id as i64), &Json(rec)],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn delete_delivery(&self, id: u64) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM push_journal WHERE id = $1", &[&(id as i64)])
            .await
            .map_err(|e| self.error(e))?;
        Ok(n > 0)
    }

    pub(in crate::meta) async fn deliveries(&self) -> Result<Vec<(u64, Delivery)>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT id, record FROM push_journal ORDER BY id", &[])
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| Ok((r.get::<_, i64>(0) as u64, record(r, 1)?)))
            .collect()
    }

    pub(in crate::meta) async fn delivery(&self, id: u64) -> Result<Option<Delivery>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT record FROM push_journal WHERE id = $1",
                &[&(id as i64)],
            )
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| record(&r, 0)).transpose()
    }

    pub(in crate::meta) async fn record_delivered_blob(
        &self,
        endpoint: &str,
        digest: &str,
        repo: &str,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        lazily(self, &tx).await?;
        tx.execute(
            "INSERT INTO push_delivered_blobs (endpoint, digest, repo) VALUES ($1, $2, $3)
             ON CONFLICT (endpoint, digest) DO UPDATE SET repo = EXCLUDED.repo",
            &[&endpoint, &digest, &repo],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn delivered_blob(
        &self,
        endpoint: &str,
        digest: &str,
    ) -> Result<Option<String>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT repo FROM push_delivered_blobs WHERE endpoint = $1 AND digest = $2",
                &[&endpoint, &digest],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.map(|r| r.get(0)))
    }
}
