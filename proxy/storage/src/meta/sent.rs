//! Which upstream has sent which content: what the mirror needs before it serves bytes stored here
//! for another reason (pushed to a private repository, sent by another upstream) under an upstream's
//! name. A `HEAD` answered 200 proves nothing (a broken or hostile registry can answer it for any
//! digest); a `GET` whose bytes verified against the digest does. Recorded in the transaction that
//! records what the `GET` brought (the blob link, the manifest record), forgotten with the digest.
//!
//! A data dir from before this table has no records: everything in it counts as not sent, so each
//! such blob or manifest is fetched once more before it is served under a new name, never trusted.

use std::collections::HashSet;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::db::{Meta, MetaError, BLOBS};
use wharf_model::digest::Digest;

/// (digest, upstream host) → (): that upstream sent bytes that verified against the digest. Keyed
/// digest first, so forgetting a digest is one range per digest.
pub(super) const UPSTREAM_SENT: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("upstream_sent");

/// Records, inside `tx`, that `upstream` sent `digest`.
pub(super) fn record(tx: &WriteTransaction, upstream: &str, digest: &str) -> Result<(), MetaError> {
    tx.open_table(UPSTREAM_SENT)?
        .insert((digest, upstream), ())?;
    Ok(())
}

/// Drops, inside `tx`, every record of the digests in `names`.
pub(super) fn forget(tx: &WriteTransaction, names: &HashSet<String>) -> Result<(), MetaError> {
    let mut t = tx.open_table(UPSTREAM_SENT)?;
    for d in names {
        let mut hosts = Vec::new();
        for item in t.range((d.as_str(), "")..)? {
            let (k, _) = item?;
            let (digest, host) = k.value();
            if digest != d {
                break;
            }
            hosts.push(host.to_owned());
        }
        for h in &hosts {
            t.remove((d.as_str(), h.as_str()))?;
        }
    }
    Ok(())
}

impl Meta {
    /// Links blob `digest` to the mirror's cache repository `repo` after a fill from `upstream`
    /// verified it, and records that `upstream` sent it, in one durable transaction.
    pub async fn link_sent_blob(
        &self,
        repo: &str,
        upstream: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let (r, u, d) = (repo.to_owned(), upstream.to_owned(), digest.clone());
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, cache| async move {
                    let stamp = cache.stamp();
                    pg.link_sent_blob(&r, &u, &d.to_string(), size).await?;
                    cache.exists_since(stamp, &r);
                    cache.put(&cache.blobs, stamp, (r, d), Some(size));
                    Ok(())
                })
                .await;
        }
        self.run_write(move |db, cache| {
            let name = d.to_string();
            let tx = db.begin_write()?;
            tx.open_table(BLOBS)?
                .insert((r.as_str(), name.as_str()), size)?;
            record(&tx, &u, &name)?;
            tx.commit()?;
            cache.exists(&r);
            cache.blobs.insert((r, d), Some(size));
            Ok(())
        })
        .await
    }

    /// Whether `upstream` has sent `digest` (through any of its repositories) in bytes that verified.
    pub async fn upstream_sent(&self, upstream: &str, digest: &Digest) -> Result<bool, MetaError> {
        let (u, d) = (upstream.to_owned(), digest.to_string());
        if let Some(pg) = self.pg() {
            return pg.upstream_sent(&u, &d).await;
        }
        self.run(move |db| {
            let t = db.begin_read()?.open_table(UPSTREAM_SENT)?;
            Ok(t.get((d.as_str(), u.as_str()))?.is_some())
        })
        .await
    }
}
