//! `sent.rs` on Postgres: which upstream sent which content.

use super::conn::{notify, Invalidate, Pg};
use crate::meta::error::MetaError;

/// Records, inside `tx`, that `upstream` sent `digest`.
pub(super) async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    upstream: &str,
    digest: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO upstream_sent (digest, upstream) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&digest, &upstream],
    )
    .await?;
    Ok(())
}

impl Pg {
    /// The blob link and the proof that `upstream` sent it, in one transaction.
    pub(in crate::meta) async fn link_sent_blob(
        &self,
        repo: &str,
        upstream: &str,
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
        record(&tx, upstream, digest)
            .await
            .map_err(|e| self.error(e))?;
        notify(&tx, Invalidate::Blob, repo, digest)
            .await
            .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    pub(in crate::meta) async fn upstream_sent(
        &self,
        upstream: &str,
        digest: &str,
    ) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM upstream_sent WHERE digest = $1 AND upstream = $2)",
                &[&digest, &upstream],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.get(0))
    }
}
