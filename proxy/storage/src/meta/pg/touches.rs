//! `touches.rs` on Postgres: one row per digest (`migrations/0002_touches.sql`), upserted by touches
//! and dooms alike, so the two serialise on the row; and the collector's advisory lock.

use super::conn::Pg;
use crate::meta::error::MetaError;
use crate::meta::touches::DOOM_MAX_SECS;
use wharf_model::digest::Digest;

/// Any fixed number: the advisory lock one collector at a time holds.
const COLLECTOR_LOCK: i64 = 0x7768_6172_665f_6763; // "wharf_gc"

fn digests(rows: Vec<tokio_postgres::Row>) -> Vec<Digest> {
    rows.iter()
        .filter_map(|r| r.get::<_, &str>(0).parse().ok())
        .collect()
}

impl Pg {
    pub(in crate::meta) async fn touch(
        &self,
        digests: &[String],
        at: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "INSERT INTO touches (digest, at) SELECT d, $2 FROM unnest($1::text[]) AS d
                 ON CONFLICT (digest) DO UPDATE SET at = GREATEST(touches.at, EXCLUDED.at)
                 RETURNING digest, doomed_at",
                &[&digests, &(at as i64)],
            )
            .await
            .map_err(|e| self.error(e))?;
        let fresh = (at.saturating_sub(DOOM_MAX_SECS)) as i64;
        Ok(digests_doomed(rows, fresh))
    }

    pub(in crate::meta) async fn doomed(
        &self,
        digests: &[String],
        now: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT digest, doomed_at FROM touches WHERE digest = ANY($1)",
                &[&digests],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(digests_doomed(
            rows,
            (now.saturating_sub(DOOM_MAX_SECS)) as i64,
        ))
    }

    pub(in crate::meta) async fn doom(
        &self,
        digests: &[String],
        since: u64,
        now: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "INSERT INTO touches (digest, at, doomed_at) SELECT d, 0, $3 FROM unnest($1::text[]) AS d
                 ON CONFLICT (digest) DO UPDATE SET doomed_at = EXCLUDED.doomed_at
                     WHERE touches.at < $2
                 RETURNING digest",
                &[&digests, &(since as i64), &(now as i64)],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(self::digests(rows))
    }

    pub(in crate::meta) async fn bury(&self, digests: &[String]) -> Result<(), MetaError> {
        let c = self.client().await?;
        // The row goes with its doom: the content is gone (or the sweep failed, and the next
        // collection decides again), and a later touch starts a new row.
        c.execute(
            "DELETE FROM touches WHERE digest = ANY($1) AND doomed_at IS NOT NULL",
            &[&digests],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub(in crate::meta) async fn touched_since(
        &self,
        since: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM touches WHERE at < $1 AND doomed_at IS NULL",
            &[&(since as i64)],
        )
        .await
        .map_err(|e| self.error(e))?;
        let rows = c
            .query(
                "SELECT digest FROM touches WHERE at >= $1",
                &[&(since as i64)],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(digests(rows))
    }

    pub(in crate::meta) async fn collector_lock(
        &self,
    ) -> Result<Option<deadpool_postgres::Object>, MetaError> {
        let c = self.client().await?;
        let got: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&COLLECTOR_LOCK])
            .await
            .map_err(|e| self.error(e))?
            .get(0);
        Ok(got.then_some(c))
    }
}

/// Rows `(digest, doomed_at)` whose doom is newer than `fresh`.
fn digests_doomed(rows: Vec<tokio_postgres::Row>, fresh: i64) -> Vec<Digest> {
    rows.iter()
        .filter(|r| r.get::<_, Option<i64>>(1).is_some_and(|at| at >= fresh))
        .filter_map(|r| r.get::<_, &str>(0).parse().ok())
        .collect()
}
