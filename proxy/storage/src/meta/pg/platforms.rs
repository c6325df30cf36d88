//! `platforms.rs` on Postgres: which index lists a child manifest, which blobs a kept manifest
//! references.

use super::conn::Pg;
use crate::meta::error::MetaError;

impl Pg {
    /// Records that `index` lists `children` in `repo`, in one statement. `children` sorted and
    /// without repeats: one statement may not update a row twice, and two processes writing
    /// overlapping sets lock rows in one order (no deadlock).
    pub(in crate::meta) async fn record_index_children(
        &self,
        repo: &str,
        index: &str,
        children: &[String],
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO platform_index_children (repo, child, index_digest)
             SELECT $1, child, $2 FROM unnest($3::text[]) AS child
             ON CONFLICT (repo, child) DO UPDATE SET index_digest = EXCLUDED.index_digest",
            &[&repo, &index, &children],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn index_listing(
        &self,
        repo: &str,
        child: &str,
    ) -> Result<Option<String>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT index_digest FROM platform_index_children WHERE repo = $1 AND child = $2",
                &[&repo, &child],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records that kept manifest `manifest` of `repo` references `blobs` (sorted, no repeats: see
    /// `record_index_children`).
    pub(in crate::meta) async fn allow_blobs(
        &self,
        repo: &str,
        manifest: &str,
        blobs: &[String],
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO platform_kept_blobs (repo, blob, manifest)
             SELECT $1, blob, $2 FROM unnest($3::text[]) AS blob
             ON CONFLICT (repo, blob) DO UPDATE SET manifest = EXCLUDED.manifest",
            &[&repo, &manifest, &blobs],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn blob_allowed(
        &self,
        repo: &str,
        blob: &str,
    ) -> Result<bool, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM platform_kept_blobs WHERE repo = $1 AND blob = $2)",
                &[&repo, &blob],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.get(0))
    }
}
