//! What the mirror's platform policy records (`mirror/platforms.rs`): which index of a cache repository
//! lists a child manifest, and which blobs a kept manifest references (the only blobs it may fetch).
//! Written only while a platform policy is active; facts about content, not decisions, so a changed
//! policy judges them afresh.

use redb::{ReadableDatabase, TableDefinition};

use super::db::{Meta, MetaError};
use wharf_model::digest::Digest;

/// (cache repo, child manifest digest) → digest of an index of that repository listing it
pub(super) const INDEX_CHILDREN: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("platform_index_children");
/// (cache repo, blob digest) → digest of a kept manifest of that repository referencing it
pub(super) const KEPT_BLOBS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("platform_kept_blobs");

impl Meta {
    /// Records that `index`, cached for `repo`, lists `children`.
    pub async fn record_index_children(
        &self,
        repo: &str,
        index: &Digest,
        children: Vec<Digest>,
    ) -> Result<(), MetaError> {
        let (r, i) = (repo.to_owned(), index.to_string());
        self.run(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(INDEX_CHILDREN)?;
                for c in &children {
                    t.insert((r.as_str(), c.to_string().as_str()), i.as_str())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// An index cached for `repo` that lists manifest `child`, if any.
    pub async fn index_listing(
        &self,
        repo: &str,
        child: &Digest,
    ) -> Result<Option<Digest>, MetaError> {
        let (r, c) = (repo.to_owned(), child.to_string());
        self.run(move |db| {
            let t = db.begin_read()?.open_table(INDEX_CHILDREN)?;
            let v = t.get((r.as_str(), c.as_str()))?;
            // A record this module wrote holds a valid digest; anything else reads as absent.
            Ok(v.and_then(|v| v.value().parse().ok()))
        })
        .await
    }

    /// Records that manifest `manifest`, kept by the platform policy for `repo`, references `blobs`.
    pub async fn allow_blobs(
        &self,
        repo: &str,
        manifest: &Digest,
        blobs: Vec<Digest>,
    ) -> Result<(), MetaError> {
        let (r, m) = (repo.to_owned(), manifest.to_string());
        self.run(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(KEPT_BLOBS)?;
                for b in &blobs {
                    t.insert((r.as_str(), b.to_string().as_str()), m.as_str())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Whether a kept manifest of `repo` references `blob`.
    pub async fn blob_allowed(&self, repo: &str, blob: &Digest) -> Result<bool, MetaError> {
        let (r, b) = (repo.to_owned(), blob.to_string());
        self.run(move |db| {
            let t = db.begin_read()?.open_table(KEPT_BLOBS)?;
            Ok(t.get((r.as_str(), b.as_str()))?.is_some())
        })
        .await
    }
}
