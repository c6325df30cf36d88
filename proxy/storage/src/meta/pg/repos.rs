//! `repos.rs` on Postgres: blob links, manifests, tags, referrers, upload sessions, the mirror's
//! tag checks, referrers indexes and rewrites.

use super::{notify, Pg};
use crate::meta::db::{Invalidate, MetaError};
use wharf_model::digest::Digest;

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
}
