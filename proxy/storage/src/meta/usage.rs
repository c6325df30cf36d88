//! The last use of a tag: one definition, read the same way by `wharf images`, `wharf status`, the
//! status page and the cache quota's eviction.
//!
//! **A tag's last use is the later of its last pull and its last push**, per (repository, tag):
//! - a pull is a manifest `GET` or `HEAD` that wharf answered, through that repository, by the tag or
//!   by the digest the tag names *now* (containerd resolves a tag with a `HEAD` and then fetches the
//!   manifest by digest; a deployment pinned to `repo@sha256:…` runs the image the tag names). Two
//!   tags of one repository that name the same image therefore share its pulls by digest; a
//!   repository, local or mirrored, never shares another's.
//! - a push is the manifest `PUT` that set the tag (for a routed push, when the local tag is
//!   recorded: at once for store-and-forward, after the upstream's answer for write-through).
//!
//! Pulls are noted in memory on the request path (no disk write per request) and written in one
//! transaction per batch (`flush_uses`: every minute, before a collection, at a stop, and when the
//! admin socket is asked for a view); readers merge what is not written yet, so every view in the
//! server sees a pull at once. A push is recorded in the transaction that sets the tag.
//!
//! This is not the collector's "recent use" (`lease.rs`): that protects any digest touched within the
//! grace window, whoever touched it, and is never shown.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::db::{Meta, MetaError, TAGS};
use super::pending::Pending;
use super::pg::conn::Pg;
use super::pg::recorded_uses;
use wharf_model::digest::Digest;

/// (repository, tag or digest) → unix seconds of its last use there. A tag never contains `:`, a
/// digest always does, so the two never collide.
pub(super) const LAST_USE: TableDefinition<(&str, &str), u64> = TableDefinition::new("last_use");

/// Before this table, wharf kept digest → unix seconds the mirror last served it (whatever repository
/// asked), which made a tag pushed here show when a mirrored tag of the same image was last pulled.
/// Read once at open into `LAST_USE`, then dropped.
const LEGACY_LAST_USED: TableDefinition<&str, u64> = TableDefinition::new("last_used");

pub(super) use wharf_model::clock::unix_now as now;

/// Last uses by repository and reference (tag or digest), as of one read.
#[derive(Debug, Default, Clone)]
pub struct LastUse(HashMap<String, HashMap<String, u64>>);

impl LastUse {
    pub(super) fn merge(&mut self, repo: &str, reference: &str, at: u64) {
        let t = self
            .0
            .entry(repo.to_owned())
            .or_default()
            .entry(reference.to_owned())
            .or_default();
        *t = (*t).max(at);
    }

    pub(super) fn get(&self, repo: &str, reference: &str) -> Option<u64> {
        self.0.get(repo)?.get(reference).copied()
    }

    /// The last use of `repo:tag`, which names `digest`: see the module's definition (with no tag, a
    /// dangling image's: its pulls by digest). `None`: neither pulled nor pushed since wharf started
    /// keeping it.
    pub fn of_tag(&self, repo: &str, tag: Option<&str>, digest: &Digest) -> Option<u64> {
        let by_tag = tag.and_then(|t| self.get(repo, t));
        let by_digest = self.get(repo, &digest.to_string());
        by_tag.max(by_digest)
    }

    /// The latest use of anything in `repo` (a repository with no tag left, pulled by digest).
    pub fn of_repository(&self, repo: &str) -> Option<u64> {
        self.0.get(repo)?.values().max().copied()
    }
}

/// Whether `repo` is one of the mirror's cache repositories, `<upstream host>/<name>` (a host by
/// Docker's rule).
fn mirrored(repo: &str) -> bool {
    wharf_model::reference::split_registry_host(repo).is_some()
}

/// At open: carries the old per-digest times over to the mirrored tags that name those digests (the
/// mirror was the only writer: a tag pushed here gets none, rather than another repository's), then
/// drops the old table. Eviction keeps its order across the upgrade.
pub(super) fn upgrade(tx: &WriteTransaction) -> Result<(), MetaError> {
    if !tx
        .list_tables()?
        .any(|t| t.name() == LEGACY_LAST_USED.name())
    {
        return Ok(());
    }
    {
        let old = tx.open_table(LEGACY_LAST_USED)?;
        let tags = tx.open_table(TAGS)?;
        let mut new = tx.open_table(LAST_USE)?;
        for item in tags.iter()? {
            let (k, v) = item?;
            let (repo, tag) = k.value();
            if !mirrored(repo) {
                continue;
            }
            let Some(at) = old.get(v.value())?.map(|a| a.value()) else {
                continue;
            };
            let kept = new.get((repo, tag))?.map_or(0, |a| a.value());
            new.insert((repo, tag), at.max(kept))?;
        }
    }
    tx.delete_table(LEGACY_LAST_USED)?;
    Ok(())
}

impl Meta {
    /// Notes a use of `reference` (a tag, or a digest as `sha256:…`) through `repo` at `at` (unix
    /// seconds), in memory: written by the next `flush_uses`.
    pub fn note_use(&self, repo: &str, reference: &str, at: u64) {
        self.uses.note(repo, reference, at);
    }

    /// Notes a pull of `reference` through `repo` now.
    pub fn pulled(&self, repo: &str, reference: &str) {
        self.note_use(repo, reference, now());
    }

    /// Writes the uses noted since the last flush, in one transaction (one fsync a batch: a
    /// non-durable commit would be lost at a stop unless a durable one followed).
    pub async fn flush_uses(&self) -> Result<(), MetaError> {
        let taken = self.uses.take();
        if taken.is_empty() {
            return Ok(());
        }
        if let Some(pg) = self.pg() {
            let pg = pg.clone();
            let uses = self.uses.clone();
            // Its own task, as the redb write's blocking one: a flush that started finishes, or
            // puts its batch back, even if the caller is dropped.
            return tokio::spawn(async move {
                let mut rows: Vec<(&str, &str, i64)> = taken
                    .iter()
                    .flat_map(|(repo, refs)| {
                        refs.iter()
                            .map(move |(r, at)| (repo.as_str(), r.as_str(), *at as i64))
                    })
                    .collect();
                rows.sort_unstable();
                let res = pg.flush_uses(&rows).await;
                if res.is_err() {
                    uses.put_back(taken);
                }
                res
            })
            .await?;
        }
        let uses = self.uses.clone();
        let (db, batch) = (self.redb(), taken);
        let res = tokio::task::spawn_blocking(move || {
            let write = || -> Result<(), MetaError> {
                let tx = db.begin_write()?;
                {
                    let mut t = tx.open_table(LAST_USE)?;
                    for (repo, refs) in &batch {
                        for (reference, at) in refs {
                            let key = (repo.as_str(), reference.as_str());
                            let kept = t.get(key)?.map_or(0, |a| a.value());
                            t.insert(key, (*at).max(kept))?;
                        }
                    }
                }
                tx.commit()?;
                Ok(())
            };
            match write() {
                Ok(()) => Ok(()),
                Err(e) => {
                    uses.put_back(batch);
                    Err(e)
                }
            }
        })
        .await?;
        res
    }
}

/// Reads every recorded use, with the uses not written yet merged in.
pub(super) fn read(
    t: &impl ReadableTable<(&'static str, &'static str), u64>,
    pending: &Pending,
) -> Result<LastUse, MetaError> {
    let mut out = LastUse::default();
    for item in t.iter()? {
        let (k, v) = item?;
        let (repo, reference) = k.value();
        out.merge(repo, reference, v.value());
    }
    merge_pending(&mut out, pending);
    Ok(out)
}

/// `read` on Postgres: every use recorded, read inside `tx` (the caller's snapshot), with the uses
/// not written yet merged in. Its caller in the server is `snapshot` (`collect.rs`), whose Postgres
/// side is written apart from this file.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) async fn read_pg(
    pg: &Pg,
    tx: &tokio_postgres::Transaction<'_>,
    pending: &Pending,
) -> Result<LastUse, MetaError> {
    let mut out = LastUse::default();
    for (repo, reference, at) in recorded_uses(tx).await.map_err(|e| pg.error(e))? {
        out.merge(&repo, &reference, at);
    }
    merge_pending(&mut out, pending);
    Ok(out)
}

fn merge_pending(out: &mut LastUse, pending: &Pending) {
    for e in pending.0.iter() {
        for (reference, at) in e.value() {
            out.merge(e.key(), reference, *at);
        }
    }
}

#[cfg(test)]
impl Meta {
    /// Every last use as `snapshot` reads it, on either backend.
    pub(super) async fn last_use(&self) -> Result<LastUse, MetaError> {
        let Some(pg) = self.pg() else {
            let pending = self.uses.clone();
            return self
                .run(move |db| {
                    use redb::ReadableDatabase;
                    read(&db.begin_read()?.open_table(LAST_USE)?, &pending)
                })
                .await;
        };
        let mut c = pg.client().await?;
        let tx = c.transaction().await.map_err(|e| pg.error(e))?;
        read_pg(pg, &tx, &self.uses).await
    }
}

/// Records a push of `repo:tag` now, in the transaction that sets the tag.
pub(super) fn pushed(tx: &WriteTransaction, repo: &str, tag: &str) -> Result<(), MetaError> {
    tx.open_table(LAST_USE)?.insert((repo, tag), now())?;
    Ok(())
}

#[cfg(test)]
pub(super) fn legacy_table() -> TableDefinition<'static, &'static str, u64> {
    LEGACY_LAST_USED
}
