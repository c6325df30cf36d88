//! Every record of the metadata, out of one backend and into another (`wharf storage copy`): a
//! `Dump` holds each table's rows as stored, read in one transaction; `import` upserts them all in
//! one transaction, so a copy that stopped halfway is run again and converges.
//!
//! Upload sessions are left out: each names a partial write in the source's local `ingest/`
//! directory, which is not copied; a client whose upload was cut starts it again.

use std::collections::BTreeSet;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::Serialize;
use serde_json::Value;

use super::collect::LEASES;
use super::db::{
    Meta, MetaError, BLOBS, MANIFESTS, MIRROR_REFERRERS, REFERRERS, REWRITES, TAGS, TAG_CHECKED,
    UPLOADS,
};
use super::platforms::{INDEX_CHILDREN, KEPT_BLOBS};
use super::push::{DELIVERED_BLOBS, JOURNAL};
use super::sent::UPSTREAM_SENT;
use super::stats::{CACHE_SAMPLES, STATUS_RECORDS};
use super::usage::LAST_USE;

/// The records of every table but the upload sessions, in each table's key order. Strings are kept
/// as stored (a digest is not parsed: a copy carries what it finds), JSON records as values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dump {
    /// (repository, tag, manifest digest)
    pub tags: Vec<(String, String, String)>,
    /// (repository, manifest digest, `ManifestRecord`)
    pub manifests: Vec<(String, String, Value)>,
    /// (repository, blob digest, size)
    pub blobs: Vec<(String, String, u64)>,
    /// (repository, subject digest, referrer digest, descriptor)
    pub referrers: Vec<(String, String, String, Value)>,
    /// (cache repository, tag, unix seconds the upstream last confirmed it)
    pub tag_checked: Vec<(String, String, u64)>,
    /// (cache repository, subject digest, referrers index digest, unix seconds confirmed)
    pub mirror_referrers: Vec<(String, String, String, u64)>,
    /// (original digest, plugin set or `platforms:…`, rewritten digest)
    pub rewrites: Vec<(String, String, String)>,
    /// (repository, tag or digest, unix seconds of its last use)
    pub last_use: Vec<(String, String, u64)>,
    /// (cache repository, child manifest digest, index digest)
    pub index_children: Vec<(String, String, String)>,
    /// (cache repository, blob digest, kept manifest digest)
    pub kept_blobs: Vec<(String, String, String)>,
    /// (lease id, `LeaseRecord`)
    pub leases: Vec<(String, Value)>,
    /// (delivery id, `Delivery`): ids are kept, so `wharf push retry <id>` still names the same one.
    pub push_journal: Vec<(u64, Value)>,
    /// (upstream endpoint, blob digest, upstream repository)
    pub delivered_blobs: Vec<(String, String, String)>,
    /// (unix seconds, [since, hits, misses, bytes from cache, bytes from upstream])
    pub cache_samples: Vec<(u64, [u64; 5])>,
    /// (name, record): the last gc, the scrub's position and last pass, recent denials.
    pub status_records: Vec<(String, Value)>,
    /// (digest, upstream host)
    pub upstream_sent: Vec<(String, String)>,
    /// Upload sessions in the source, not copied (see the module's comment).
    pub uploads_left_out: u64,
}

/// What an import wrote to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub table: &'static str,
    /// Rows in the dump, all written.
    pub rows: u64,
    /// Of those, rows that were not there or held something else: 0 when the same dump is imported
    /// again.
    pub changed: u64,
}

/// What an import wrote, table by table (in `Dump::TABLES` order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub tables: Vec<TableCount>,
}

impl Imported {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn changed(&self) -> u64 {
        self.tables.iter().map(|t| t.changed).sum()
    }

    pub(super) fn count(&mut self, table: &'static str, rows: usize, changed: u64) {
        self.tables.push(TableCount {
            table,
            rows: rows as u64,
            changed,
        });
    }
}

impl Dump {
    /// The tables a dump holds, by their Postgres names, in the order an import writes them.
    pub const TABLES: [&'static str; 16] = [
        "tags",
        "manifests",
        "blobs",
        "referrers",
        "tag_checked",
        "mirror_referrers",
        "rewrites",
        "last_use",
        "platform_index_children",
        "platform_kept_blobs",
        "leases",
        "push_journal",
        "push_delivered_blobs",
        "cache_samples",
        "status_records",
        "upstream_sent",
    ];

    /// Every content digest the records name as stored here (linked blobs, manifests, what tags
    /// point at, cached referrers indexes): what the destination must hold before they are imported.
    pub fn content(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        out.extend(self.blobs.iter().map(|(_, d, _)| d.as_str()));
        out.extend(self.manifests.iter().map(|(_, d, _)| d.as_str()));
        out.extend(self.tags.iter().map(|(_, _, d)| d.as_str()));
        out.extend(self.mirror_referrers.iter().map(|(_, _, i, _)| i.as_str()));
        out
    }

    /// The number of rows of every table, in `TABLES` order.
    pub fn rows(&self) -> [(&'static str, usize); 16] {
        let n = [
            self.tags.len(),
            self.manifests.len(),
            self.blobs.len(),
            self.referrers.len(),
            self.tag_checked.len(),
            self.mirror_referrers.len(),
            self.rewrites.len(),
            self.last_use.len(),
            self.index_children.len(),
            self.kept_blobs.len(),
            self.leases.len(),
            self.push_journal.len(),
            self.delivered_blobs.len(),
            self.cache_samples.len(),
            self.status_records.len(),
            self.upstream_sent.len(),
        ];
        std::array::from_fn(|i| (Dump::TABLES[i], n[i]))
    }
}

impl Meta {
    /// Every record but the upload sessions, as of one moment (one read transaction).
    pub async fn export(&self) -> Result<Dump, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.export().await;
        }
        self.run(|db| export_redb(&db.begin_read()?)).await
    }

    /// Writes every record of `dump` here, replacing what the same keys held, in one transaction:
    /// all of it is imported or none. Importing the same dump again changes nothing.
    pub async fn import(&self, dump: Dump) -> Result<Imported, MetaError> {
        if self.pg().is_some() {
            // Other processes' caches learn of the changed rows from the import's notifications.
            return self
                .pg_write(move |pg, _cache| async move { pg.import(&dump).await })
                .await;
        }
        self.run_write(move |db, cache| {
            let imported = import_redb(db, &dump)?;
            // Anything read before is stale now.
            cache.clear(true);
            Ok(imported)
        })
        .await
    }
}

fn json(bytes: &[u8]) -> Result<Value, MetaError> {
    Ok(serde_json::from_slice(bytes)?)
}

fn export_redb(tx: &ReadTransaction) -> Result<Dump, MetaError> {
    let mut d = Dump::default();
    for item in tx.open_table(TAGS)?.iter()? {
        let (k, v) = item?;
        let (r, t) = k.value();
        d.tags.push((r.into(), t.into(), v.value().into()));
    }
    for item in tx.open_table(MANIFESTS)?.iter()? {
        let (k, v) = item?;
        let (r, m) = k.value();
        d.manifests.push((r.into(), m.into(), json(v.value())?));
    }
    for item in tx.open_table(BLOBS)?.iter()? {
        let (k, v) = item?;
        let (r, b) = k.value();
        d.blobs.push((r.into(), b.into(), v.value()));
    }
    for item in tx.open_table(REFERRERS)?.iter()? {
        let (k, v) = item?;
        let (r, s, x) = k.value();
        d.referrers
            .push((r.into(), s.into(), x.into(), json(v.value())?));
    }
    for item in tx.open_table(TAG_CHECKED)?.iter()? {
        let (k, v) = item?;
        let (r, t) = k.value();
        d.tag_checked.push((r.into(), t.into(), v.value()));
    }
    for item in tx.open_table(MIRROR_REFERRERS)?.iter()? {
        let (k, v) = item?;
        let (r, s) = k.value();
        let (i, at) = v.value();
        d.mirror_referrers.push((r.into(), s.into(), i.into(), at));
    }
    for item in tx.open_table(REWRITES)?.iter()? {
        let (k, v) = item?;
        let (o, p) = k.value();
        d.rewrites.push((o.into(), p.into(), v.value().into()));
    }
    for item in tx.open_table(LAST_USE)?.iter()? {
        let (k, v) = item?;
        let (r, x) = k.value();
        d.last_use.push((r.into(), x.into(), v.value()));
    }
    for item in tx.open_table(INDEX_CHILDREN)?.iter()? {
        let (k, v) = item?;
        let (r, c) = k.value();
        d.index_children
            .push((r.into(), c.into(), v.value().into()));
    }
    for item in tx.open_table(KEPT_BLOBS)?.iter()? {
        let (k, v) = item?;
        let (r, b) = k.value();
        d.kept_blobs.push((r.into(), b.into(), v.value().into()));
    }
    for item in tx.open_table(LEASES)?.iter()? {
        let (k, v) = item?;
        d.leases.push((k.value().into(), json(v.value())?));
    }
    for item in tx.open_table(JOURNAL)?.iter()? {
        let (k, v) = item?;
        d.push_journal.push((k.value(), json(v.value())?));
    }
    for item in tx.open_table(DELIVERED_BLOBS)?.iter()? {
        let (k, v) = item?;
        let (e, b) = k.value();
        d.delivered_blobs
            .push((e.into(), b.into(), v.value().into()));
    }
    for item in tx.open_table(CACHE_SAMPLES)?.iter()? {
        let (k, v) = item?;
        let (since, hits, misses, from_cache, from_upstream) = v.value();
        d.cache_samples
            .push((k.value(), [since, hits, misses, from_cache, from_upstream]));
    }
    for item in tx.open_table(STATUS_RECORDS)?.iter()? {
        let (k, v) = item?;
        d.status_records.push((k.value().into(), json(v.value())?));
    }
    for item in tx.open_table(UPSTREAM_SENT)?.iter()? {
        let (k, _) = item?;
        let (dg, u) = k.value();
        d.upstream_sent.push((dg.into(), u.into()));
    }
    d.uploads_left_out = tx.open_table(UPLOADS)?.len()?;
    Ok(d)
}

/// Whether a JSON record stored as `old` holds something else than `new` (compared as values: a
/// record read back from Postgres has its keys in another order).
fn json_differs(old: Option<&[u8]>, new: &Value) -> bool {
    match old.map(serde_json::from_slice::<Value>) {
        Some(Ok(v)) => v != *new,
        _ => true,
    }
}

fn import_redb(db: &redb::Database, d: &Dump) -> Result<Imported, MetaError> {
    let tx = db.begin_write()?;
    let mut out = Imported::default();
    // Each block: insert every row, counting those whose old value was absent or different.
    macro_rules! upsert {
        ($name:expr, $table:expr, $rows:expr, |$row:pat_param| ($key:expr, $value:expr), |$old:ident, $new:ident| $differs:expr) => {{
            let mut t = tx.open_table($table)?;
            let mut changed = 0;
            for $row in $rows.iter() {
                let $new = $value;
                let old = t.insert($key, $new)?;
                let $old = old.as_ref().map(|v| v.value());
                if $differs {
                    changed += 1;
                }
            }
            out.count($name, $rows.len(), changed);
        }};
    }
    let differs = |o: Option<&str>, n: &str| o != Some(n);
    upsert!(
        "tags",
        TAGS,
        d.tags,
        |(r, t, m)| ((r.as_str(), t.as_str()), m.as_str()),
        |o, n| differs(o, n)
    );
    {
        let mut t = tx.open_table(MANIFESTS)?;
        let mut changed = 0;
        for (r, m, v) in &d.manifests {
            let bytes = serde_json::to_vec(v)?;
            let old = t.insert((r.as_str(), m.as_str()), bytes.as_slice())?;
            if json_differs(old.as_ref().map(|o| o.value()), v) {
                changed += 1;
            }
        }
        out.count("manifests", d.manifests.len(), changed);
    }
    upsert!(
        "blobs",
        BLOBS,
        d.blobs,
        |(r, b, s)| ((r.as_str(), b.as_str()), *s),
        |o, n| o != Some(n)
    );
    {
        let mut t = tx.open_table(REFERRERS)?;
        let mut changed = 0;
        for (r, s, x, v) in &d.referrers {
            let bytes = serde_json::to_vec(v)?;
            let old = t.insert((r.as_str(), s.as_str(), x.as_str()), bytes.as_slice())?;
            if json_differs(old.as_ref().map(|o| o.value()), v) {
                changed += 1;
            }
        }
        out.count("referrers", d.referrers.len(), changed);
    }
    upsert!(
        "tag_checked",
        TAG_CHECKED,
        d.tag_checked,
        |(r, t, at)| ((r.as_str(), t.as_str()), *at),
        |o, n| o != Some(n)
    );
    upsert!(
        "mirror_referrers",
        MIRROR_REFERRERS,
        d.mirror_referrers,
        |(r, s, i, at)| ((r.as_str(), s.as_str()), (i.as_str(), *at)),
        |o, n| o != Some(n)
    );
    upsert!(
        "rewrites",
        REWRITES,
        d.rewrites,
        |(o, p, r)| ((o.as_str(), p.as_str()), r.as_str()),
        |o, n| differs(o, n)
    );
    upsert!(
        "last_use",
        LAST_USE,
        d.last_use,
        |(r, x, at)| ((r.as_str(), x.as_str()), *at),
        |o, n| o != Some(n)
    );
    upsert!(
        "platform_index_children",
        INDEX_CHILDREN,
        d.index_children,
        |(r, c, i)| ((r.as_str(), c.as_str()), i.as_str()),
        |o, n| differs(o, n)
    );
    upsert!(
        "platform_kept_blobs",
        KEPT_BLOBS,
        d.kept_blobs,
        |(r, b, m)| ((r.as_str(), b.as_str()), m.as_str()),
        |o, n| differs(o, n)
    );
    {
        let mut t = tx.open_table(LEASES)?;
        let mut changed = 0;
        for (id, v) in &d.leases {
            let bytes = serde_json::to_vec(v)?;
            let old = t.insert(id.as_str(), bytes.as_slice())?;
            if json_differs(old.as_ref().map(|o| o.value()), v) {
                changed += 1;
            }
        }
        out.count("leases", d.leases.len(), changed);
    }
    {
        // Ids kept: the next delivery here is numbered after the last one (`create_delivery`).
        let mut t = tx.open_table(JOURNAL)?;
        let mut changed = 0;
        for (id, v) in &d.push_journal {
            let bytes = serde_json::to_vec(v)?;
            let old = t.insert(*id, bytes.as_slice())?;
            if json_differs(old.as_ref().map(|o| o.value()), v) {
                changed += 1;
            }
        }
        out.count("push_journal", d.push_journal.len(), changed);
    }
    upsert!(
        "push_delivered_blobs",
        DELIVERED_BLOBS,
        d.delivered_blobs,
        |(e, b, r)| ((e.as_str(), b.as_str()), r.as_str()),
        |o, n| differs(o, n)
    );
    upsert!(
        "cache_samples",
        CACHE_SAMPLES,
        d.cache_samples,
        |(at, [a, b, c, e, f])| (*at, (*a, *b, *c, *e, *f)),
        |o, n| o != Some(n)
    );
    {
        let mut t = tx.open_table(STATUS_RECORDS)?;
        let mut changed = 0;
        for (name, v) in &d.status_records {
            let bytes = serde_json::to_vec(v)?;
            let old = t.insert(name.as_str(), bytes.as_slice())?;
            if json_differs(old.as_ref().map(|o| o.value()), v) {
                changed += 1;
            }
        }
        out.count("status_records", d.status_records.len(), changed);
    }
    upsert!(
        "upstream_sent",
        UPSTREAM_SENT,
        d.upstream_sent,
        |(dg, u)| ((dg.as_str(), u.as_str()), ()),
        |o, _n| o.is_none()
    );
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests;
