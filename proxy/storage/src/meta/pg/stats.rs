//! `stats.rs` on Postgres: the history of the cache counters, thinned as it grows, and the status
//! records (the last collection, the last scrub, recent denials).

use tokio_postgres::types::Json;
use tokio_postgres::Row;

use super::collect::{lazily, record};
use super::conn::Pg;
use crate::meta::error::MetaError;
use crate::meta::stats::{thinned, CacheTotals, Retention, Sample};

fn sample(r: &Row) -> Sample {
    let n = |i: usize| r.get::<_, i64>(i) as u64;
    Sample {
        at: n(0),
        since: n(1),
        totals: CacheTotals {
            hits: n(2),
            misses: n(3),
            bytes_from_cache: n(4),
            bytes_from_upstream: n(5),
        },
    }
}

const COLUMNS: &str = "at, since, hits, misses, bytes_from_cache, bytes_from_upstream";

impl Pg {
    /// `Meta::record_sample` in one transaction, thinning as redb does.
    pub(in crate::meta) async fn record_sample(
        &self,
        s: Sample,
        keep: Retention,
        thinned_to: u64,
        durable: bool,
    ) -> Result<u64, MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        if !durable {
            lazily(self, &tx).await?;
        }
        let fine_from = s.at.saturating_sub(keep.fine_secs);
        let oldest = s.at.saturating_sub(keep.keep_secs);
        let thinned_to = thinned_to.max(oldest);
        let t = s.totals;
        let v = |x: u64| x as i64;
        tx.execute(
            &format!(
                "INSERT INTO cache_samples ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (at) DO UPDATE SET since = EXCLUDED.since, hits = EXCLUDED.hits,
                     misses = EXCLUDED.misses, bytes_from_cache = EXCLUDED.bytes_from_cache,
                     bytes_from_upstream = EXCLUDED.bytes_from_upstream"
            ),
            &[
                &v(s.at),
                &v(s.since),
                &v(t.hits),
                &v(t.misses),
                &v(t.bytes_from_cache),
                &v(t.bytes_from_upstream),
            ],
        )
        .await
        .map_err(|e| self.error(e))?;
        // What leaves the fine window is thinned against the sample kept before it, read before
        // anything is removed (as redb reads it in its transaction).
        let mut doomed: Vec<i64> = Vec::new();
        if fine_from > thinned_to {
            let prev = tx
                .query_one(
                    "SELECT max(at) FROM cache_samples WHERE at < $1",
                    &[&v(thinned_to)],
                )
                .await
                .map_err(|e| self.error(e))?
                .get::<_, Option<i64>>(0)
                .map(|k| k as u64);
            let keys: Vec<u64> = tx
                .query(
                    "SELECT at FROM cache_samples WHERE at >= $1 AND at < $2 ORDER BY at",
                    &[&v(thinned_to), &v(fine_from)],
                )
                .await
                .map_err(|e| self.error(e))?
                .iter()
                .map(|r| r.get::<_, i64>(0) as u64)
                .collect();
            doomed = thinned(&keys, prev, keep.coarse_secs)
                .into_iter()
                .map(v)
                .collect();
        }
        tx.execute(
            "DELETE FROM cache_samples WHERE at < $1 OR at = ANY($2)",
            &[&v(oldest), &doomed],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(fine_from.max(thinned_to))
    }

    pub(in crate::meta) async fn samples(&self) -> Result<Vec<Sample>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {COLUMNS} FROM cache_samples ORDER BY at"),
                &[],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows.iter().map(sample).collect())
    }

    pub(in crate::meta) async fn last_sample(&self) -> Result<Option<Sample>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM cache_samples ORDER BY at DESC LIMIT 1"),
                &[],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.as_ref().map(sample))
    }

    /// Writes status record `name`, durably.
    pub(in crate::meta) async fn put_status_record(
        &self,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), MetaError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO status_records (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
            &[&name, &Json(value)],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn status_record<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, MetaError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT record FROM status_records WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| record(&r, 0)).transpose()
    }
}
