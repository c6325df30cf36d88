//! `scrub.rs` on Postgres: every record that names content, and dropping those of damaged content.

use std::collections::BTreeSet;

use tokio_postgres::types::Json;
use tokio_postgres::IsolationLevel;

use super::collect::{notify_removed, record};
use super::conn::{Invalidate, Pg};
use crate::meta::error::MetaError;
use crate::meta::scrub::Inventory;

impl Pg {
    /// Blob links, manifest records and tags as of one moment (a REPEATABLE READ transaction).
    pub(in crate::meta) async fn inventory(&self) -> Result<Inventory, MetaError> {
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
        let mut inv = Inventory::default();
        for r in
            q("SELECT repo, digest FROM blobs ORDER BY repo COLLATE \"C\", digest COLLATE \"C\"")
                .await?
        {
            if let Ok(d) = r.get::<_, &str>(1).parse() {
                inv.blob_links.push((r.get(0), d));
            }
        }
        for r in q("SELECT repo, digest, record FROM manifests
                    ORDER BY repo COLLATE \"C\", digest COLLATE \"C\"")
        .await?
        {
            if let Ok(d) = r.get::<_, &str>(1).parse() {
                inv.manifests.push((r.get(0), d, record(&r, 2)?));
            }
        }
        for r in
            q("SELECT repo, tag, digest FROM tags ORDER BY repo COLLATE \"C\", tag COLLATE \"C\"")
                .await?
        {
            if let Ok(d) = r.get::<_, &str>(2).parse() {
                inv.tags.push((r.get(0), r.get(1), d));
            }
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(inv)
    }

    pub(in crate::meta) async fn holders(
        &self,
        digest: &str,
    ) -> Result<BTreeSet<String>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT repo FROM blobs WHERE digest = $1
                 UNION SELECT repo FROM manifests WHERE digest = $1",
                &[&digest],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// `Meta::forget_damaged` in one transaction; returns the repositories whose blob link and
    /// whose manifest record of `digest` it removed.
    pub(in crate::meta) async fn forget_damaged(
        &self,
        digest: &str,
    ) -> Result<(Vec<String>, Vec<String>), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        let run = |sql: &'static str| {
            let tx = &tx;
            async move {
                let rows = tx.query(sql, &[&digest]).await.map_err(|e| self.error(e))?;
                Ok::<Vec<String>, MetaError>(rows.iter().map(|r| r.get(0)).collect())
            }
        };
        let blobs = run("DELETE FROM blobs WHERE digest = $1 RETURNING repo").await?;
        let manifests = run("DELETE FROM manifests WHERE digest = $1 RETURNING repo").await?;
        run("DELETE FROM referrers WHERE referrer = $1 RETURNING repo").await?;
        let keys = |repos: &[String]| -> Vec<(String, String)> {
            repos
                .iter()
                .map(|r| (r.clone(), digest.to_owned()))
                .collect()
        };
        notify_removed(self, &tx, Invalidate::Blob, &keys(&blobs)).await?;
        notify_removed(self, &tx, Invalidate::Manifest, &keys(&manifests)).await?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok((blobs, manifests))
    }

    /// Records the finished pass `last` and drops the progress record `progress`, in one
    /// transaction.
    pub(in crate::meta) async fn scrub_finished(
        &self,
        last_name: &str,
        last: &serde_json::Value,
        progress: &str,
    ) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO status_records (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
            &[&last_name, &Json(last)],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.execute("DELETE FROM status_records WHERE name = $1", &[&progress])
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }
}
