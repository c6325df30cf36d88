//! `dump.rs` on Postgres: every table read in one snapshot, and written back in one transaction
//! with batched upserts (a statement per few thousand rows, not a round trip per row).

use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{IsolationLevel, Transaction};

use super::conn::{Pg, CHANNEL};
use crate::meta::db::MetaError;
use crate::meta::dump::{Dump, Imported};
use serde_json::Value;

/// Rows per statement: a few hundred KiB of parameters.
const CHUNK: usize = 2000;

/// One column of `rows`.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

fn big(v: u64) -> i64 {
    v as i64
}

/// How an upsert tells the other processes' read caches about the rows it changed: the kind letter
/// `notify` sends (see `super::notify`) and the column that is the key after `repo`.
#[derive(Clone, Copy)]
struct Notify {
    kind: char,
    key: &'static str,
}

impl Pg {
    pub(in crate::meta) async fn export(&self) -> Result<Dump, MetaError> {
        let mut c = self.client().await?;
        // One snapshot for every table, as redb's one read transaction gives.
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
        let s = |r: &tokio_postgres::Row, i: usize| r.get::<_, String>(i);
        let n = |r: &tokio_postgres::Row, i: usize| r.get::<_, i64>(i) as u64;
        let j = |r: &tokio_postgres::Row, i: usize| r.get::<_, Json<Value>>(i).0;
        // Keys in redb's order: bytewise.
        let mut d = Dump::default();
        for r in
            q(r#"SELECT repo, tag, digest FROM tags ORDER BY repo COLLATE "C", tag COLLATE "C""#)
                .await?
        {
            d.tags.push((s(&r, 0), s(&r, 1), s(&r, 2)));
        }
        for r in q(r#"SELECT repo, digest, record FROM manifests ORDER BY repo COLLATE "C", digest COLLATE "C""#).await? {
            d.manifests.push((s(&r, 0), s(&r, 1), j(&r, 2)));
        }
        for r in q(
            r#"SELECT repo, digest, size FROM blobs ORDER BY repo COLLATE "C", digest COLLATE "C""#,
        )
        .await?
        {
            d.blobs.push((s(&r, 0), s(&r, 1), n(&r, 2)));
        }
        for r in q(r#"SELECT repo, subject, referrer, descriptor FROM referrers
                      ORDER BY repo COLLATE "C", subject COLLATE "C", referrer COLLATE "C""#)
        .await?
        {
            d.referrers.push((s(&r, 0), s(&r, 1), s(&r, 2), j(&r, 3)));
        }
        for r in
            q(r#"SELECT repo, tag, at FROM tag_checked ORDER BY repo COLLATE "C", tag COLLATE "C""#)
                .await?
        {
            d.tag_checked.push((s(&r, 0), s(&r, 1), n(&r, 2)));
        }
        for r in q(
            r#"SELECT repo, subject, index_digest, at FROM mirror_referrers
                      ORDER BY repo COLLATE "C", subject COLLATE "C""#,
        )
        .await?
        {
            d.mirror_referrers
                .push((s(&r, 0), s(&r, 1), s(&r, 2), n(&r, 3)));
        }
        for r in q(r#"SELECT original, plugins, rewritten FROM rewrites ORDER BY original COLLATE "C", plugins COLLATE "C""#).await? {
            d.rewrites.push((s(&r, 0), s(&r, 1), s(&r, 2)));
        }
        for r in q(r#"SELECT repo, reference, at FROM last_use ORDER BY repo COLLATE "C", reference COLLATE "C""#).await? {
            d.last_use.push((s(&r, 0), s(&r, 1), n(&r, 2)));
        }
        for r in q(
            r#"SELECT repo, child, index_digest FROM platform_index_children
                      ORDER BY repo COLLATE "C", child COLLATE "C""#,
        )
        .await?
        {
            d.index_children.push((s(&r, 0), s(&r, 1), s(&r, 2)));
        }
        for r in q(r#"SELECT repo, blob, manifest FROM platform_kept_blobs ORDER BY repo COLLATE "C", blob COLLATE "C""#).await? {
            d.kept_blobs.push((s(&r, 0), s(&r, 1), s(&r, 2)));
        }
        for r in q(r#"SELECT id, record FROM leases ORDER BY id COLLATE "C""#).await? {
            d.leases.push((s(&r, 0), j(&r, 1)));
        }
        for r in q("SELECT id, record FROM push_journal ORDER BY id").await? {
            d.push_journal.push((n(&r, 0), j(&r, 1)));
        }
        for r in q(r#"SELECT endpoint, digest, repo FROM push_delivered_blobs
                      ORDER BY endpoint COLLATE "C", digest COLLATE "C""#)
        .await?
        {
            d.delivered_blobs.push((s(&r, 0), s(&r, 1), s(&r, 2)));
        }
        for r in q("SELECT at, since, hits, misses, bytes_from_cache, bytes_from_upstream FROM cache_samples ORDER BY at").await? {
            d.cache_samples.push((n(&r, 0), [n(&r, 1), n(&r, 2), n(&r, 3), n(&r, 4), n(&r, 5)]));
        }
        for r in q(r#"SELECT name, record FROM status_records ORDER BY name COLLATE "C""#).await? {
            d.status_records.push((s(&r, 0), j(&r, 1)));
        }
        for r in q(r#"SELECT digest, upstream FROM upstream_sent ORDER BY digest COLLATE "C", upstream COLLATE "C""#).await? {
            d.upstream_sent.push((s(&r, 0), s(&r, 1)));
        }
        let uploads = q("SELECT count(*) FROM uploads").await?;
        d.uploads_left_out = uploads.first().map_or(0, |r| n(r, 0));
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(d)
    }

    pub(in crate::meta) async fn import(&self, d: &Dump) -> Result<Imported, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        let mut out = Imported::default();
        macro_rules! table {
            ($name:literal, $rows:expr, $notify:expr, $sql:literal, |$x:ident| [$($col:expr),+ $(,)?]) => {{
                let mut changed = 0;
                for rows in $rows.chunks(CHUNK) {
                    changed += self
                        .upsert(&tx, $sql, $notify, &[$(&col(rows, |$x| $col)),+])
                        .await?;
                }
                out.count($name, $rows.len(), changed);
            }};
        }
        // The tables the read caches hold: each changed row is announced to the other processes.
        let cached = |kind, key| Some(Notify { kind, key });
        table!(
            "tags",
            d.tags,
            cached('t', "tag"),
            "INSERT INTO tags (repo, tag, digest)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest
             WHERE tags.digest IS DISTINCT FROM EXCLUDED.digest",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str()]
        );
        table!(
            "manifests",
            d.manifests,
            cached('m', "digest"),
            "INSERT INTO manifests (repo, digest, record)
             SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])
             ON CONFLICT (repo, digest) DO UPDATE SET record = EXCLUDED.record
             WHERE manifests.record IS DISTINCT FROM EXCLUDED.record",
            |x| [x.0.as_str(), x.1.as_str(), Json(&x.2)]
        );
        table!(
            "blobs",
            d.blobs,
            cached('b', "digest"),
            "INSERT INTO blobs (repo, digest, size)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (repo, digest) DO UPDATE SET size = EXCLUDED.size
             WHERE blobs.size IS DISTINCT FROM EXCLUDED.size",
            |x| [x.0.as_str(), x.1.as_str(), big(x.2)]
        );
        table!(
            "referrers",
            d.referrers,
            None,
            "INSERT INTO referrers (repo, subject, referrer, descriptor)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
             ON CONFLICT (repo, subject, referrer) DO UPDATE SET descriptor = EXCLUDED.descriptor
             WHERE referrers.descriptor IS DISTINCT FROM EXCLUDED.descriptor",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str(), Json(&x.3)]
        );
        table!(
            "tag_checked",
            d.tag_checked,
            cached('c', "tag"),
            "INSERT INTO tag_checked (repo, tag, at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (repo, tag) DO UPDATE SET at = EXCLUDED.at
             WHERE tag_checked.at IS DISTINCT FROM EXCLUDED.at",
            |x| [x.0.as_str(), x.1.as_str(), big(x.2)]
        );
        table!(
            "mirror_referrers",
            d.mirror_referrers,
            None,
            "INSERT INTO mirror_referrers (repo, subject, index_digest, at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (repo, subject) DO UPDATE
             SET index_digest = EXCLUDED.index_digest, at = EXCLUDED.at
             WHERE (mirror_referrers.index_digest, mirror_referrers.at)
                   IS DISTINCT FROM (EXCLUDED.index_digest, EXCLUDED.at)",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str(), big(x.3)]
        );
        table!(
            "rewrites",
            d.rewrites,
            None,
            "INSERT INTO rewrites (original, plugins, rewritten)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (original, plugins) DO UPDATE SET rewritten = EXCLUDED.rewritten
             WHERE rewrites.rewritten IS DISTINCT FROM EXCLUDED.rewritten",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str()]
        );
        table!(
            "last_use",
            d.last_use,
            None,
            "INSERT INTO last_use (repo, reference, at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (repo, reference) DO UPDATE SET at = EXCLUDED.at
             WHERE last_use.at IS DISTINCT FROM EXCLUDED.at",
            |x| [x.0.as_str(), x.1.as_str(), big(x.2)]
        );
        table!(
            "platform_index_children",
            d.index_children,
            None,
            "INSERT INTO platform_index_children (repo, child, index_digest)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (repo, child) DO UPDATE SET index_digest = EXCLUDED.index_digest
             WHERE platform_index_children.index_digest IS DISTINCT FROM EXCLUDED.index_digest",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str()]
        );
        table!(
            "platform_kept_blobs",
            d.kept_blobs,
            None,
            "INSERT INTO platform_kept_blobs (repo, blob, manifest)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (repo, blob) DO UPDATE SET manifest = EXCLUDED.manifest
             WHERE platform_kept_blobs.manifest IS DISTINCT FROM EXCLUDED.manifest",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str()]
        );
        table!(
            "leases",
            d.leases,
            None,
            "INSERT INTO leases (id, record)
             SELECT * FROM unnest($1::text[], $2::jsonb[])
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record
             WHERE leases.record IS DISTINCT FROM EXCLUDED.record",
            |x| [x.0.as_str(), Json(&x.1)]
        );
        table!(
            "push_journal",
            d.push_journal,
            None,
            "INSERT INTO push_journal (id, record)
             SELECT * FROM unnest($1::bigint[], $2::jsonb[])
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record
             WHERE push_journal.record IS DISTINCT FROM EXCLUDED.record",
            |x| [big(x.0), Json(&x.1)]
        );
        if let Some(last) = d
            .push_journal
            .iter()
            .map(|(id, _)| *id)
            .max()
            .filter(|id| *id >= 1)
        {
            // Ids were kept: the next delivery here must be numbered after them, never reuse one.
            tx.execute(
                "SELECT setval('push_journal_ids', GREATEST($1::bigint,
                     (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM push_journal_ids)))",
                &[&big(last)],
            )
            .await
            .map_err(|e| self.error(e))?;
        }
        table!(
            "push_delivered_blobs",
            d.delivered_blobs,
            None,
            "INSERT INTO push_delivered_blobs (endpoint, digest, repo)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (endpoint, digest) DO UPDATE SET repo = EXCLUDED.repo
             WHERE push_delivered_blobs.repo IS DISTINCT FROM EXCLUDED.repo",
            |x| [x.0.as_str(), x.1.as_str(), x.2.as_str()]
        );
        table!("cache_samples", d.cache_samples, None,
            "INSERT INTO cache_samples (at, since, hits, misses, bytes_from_cache, bytes_from_upstream)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                                  $5::bigint[], $6::bigint[])
             ON CONFLICT (at) DO UPDATE SET since = EXCLUDED.since, hits = EXCLUDED.hits,
                 misses = EXCLUDED.misses, bytes_from_cache = EXCLUDED.bytes_from_cache,
                 bytes_from_upstream = EXCLUDED.bytes_from_upstream
             WHERE (cache_samples.since, cache_samples.hits, cache_samples.misses,
                    cache_samples.bytes_from_cache, cache_samples.bytes_from_upstream)
                   IS DISTINCT FROM (EXCLUDED.since, EXCLUDED.hits, EXCLUDED.misses,
                                     EXCLUDED.bytes_from_cache, EXCLUDED.bytes_from_upstream)",
            |x| [big(x.0), big(x.1[0]), big(x.1[1]), big(x.1[2]), big(x.1[3]), big(x.1[4])]);
        table!(
            "status_records",
            d.status_records,
            None,
            "INSERT INTO status_records (name, record)
             SELECT * FROM unnest($1::text[], $2::jsonb[])
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record
             WHERE status_records.record IS DISTINCT FROM EXCLUDED.record",
            |x| [x.0.as_str(), Json(&x.1)]
        );
        table!(
            "upstream_sent",
            d.upstream_sent,
            None,
            "INSERT INTO upstream_sent (digest, upstream)
             SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (digest, upstream) DO NOTHING",
            |x| [x.0.as_str(), x.1.as_str()]
        );
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(out)
    }

    /// Runs `insert` (an `INSERT … ON CONFLICT DO UPDATE … WHERE <changed>`) and returns how many rows
    /// it inserted or changed, notifying each of them when the read caches hold that table.
    async fn upsert(
        &self,
        tx: &Transaction<'_>,
        insert: &str,
        notify: Option<Notify>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, MetaError> {
        let sql = match notify {
            None => format!("WITH changed AS ({insert} RETURNING 1) SELECT count(*) FROM changed"),
            Some(Notify { kind, key }) => format!(
                "WITH changed AS ({insert} RETURNING repo, {key} AS k)
                 SELECT count(*) FROM changed
                 CROSS JOIN LATERAL pg_notify('{CHANNEL}', '{kind}' || chr(9) || changed.repo || chr(9) || changed.k) AS n"
            ),
        };
        let row = tx
            .query_one(&sql, params)
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
