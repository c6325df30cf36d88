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
        if self.pg().is_some() {
            let children = sorted_names(&children);
            return self
                .pg_write(
                    move |pg, _| async move { pg.record_index_children(&r, &i, &children).await },
                )
                .await;
        }
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
        if let Some(pg) = self.pg() {
            // A record this module wrote holds a valid digest; anything else reads as absent.
            return Ok(pg.index_listing(&r, &c).await?.and_then(|v| v.parse().ok()));
        }
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
        if self.pg().is_some() {
            let blobs = sorted_names(&blobs);
            return self
                .pg_write(move |pg, _| async move { pg.allow_blobs(&r, &m, &blobs).await })
                .await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.blob_allowed(&r, &b).await;
        }
        self.run(move |db| {
            let t = db.begin_read()?.open_table(KEPT_BLOBS)?;
            Ok(t.get((r.as_str(), b.as_str()))?.is_some())
        })
        .await
    }
}

/// Digests as the Postgres statements take them: sorted, each once (`pg/platforms.rs`).
fn sorted_names(ds: &[Digest]) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = ds.iter().map(Digest::to_string).collect();
    set.into_iter().collect()
}
