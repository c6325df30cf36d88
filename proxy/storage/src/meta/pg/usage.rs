//! `usage.rs` on Postgres: the last use of tags and digests.

use super::conn::Pg;
use crate::meta::error::MetaError;

impl Pg {
    /// Writes a batch of uses, each kept only if later than the one recorded: in SQL (`GREATEST`),
    /// so two processes flushing the same tag never move it back. One statement, rows in key order
    /// (`uses` sorted, no repeats), so concurrent flushes lock rows in one order (no deadlock).
    pub(in crate::meta) async fn flush_uses(
        &self,
        uses: &[(&str, &str, i64)],
    ) -> Result<(), MetaError> {
        let repos: Vec<&str> = uses.iter().map(|u| u.0).collect();
        let refs: Vec<&str> = uses.iter().map(|u| u.1).collect();
        let ats: Vec<i64> = uses.iter().map(|u| u.2).collect();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO last_use (repo, reference, at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (repo, reference) DO UPDATE SET at = GREATEST(last_use.at, EXCLUDED.at)",
            &[&repos, &refs, &ats],
        )
        .await
        .map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// Every recorded use as (repository, reference, unix seconds), read inside `tx` (the snapshot's
/// transaction, so they are as of the same moment as the rest).
pub(in crate::meta) async fn recorded(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Vec<(String, String, u64)>, tokio_postgres::Error> {
    let rows = tx
        .query("SELECT repo, reference, at FROM last_use", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
        .collect())
}

/// Records, inside `tx`, a push of `repo:tag` now (in the transaction that sets the tag).
pub(super) async fn pushed(
    tx: &tokio_postgres::Transaction<'_>,
    repo: &str,
    tag: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO last_use (repo, reference, at) VALUES ($1, $2, $3)
         ON CONFLICT (repo, reference) DO UPDATE SET at = EXCLUDED.at",
        &[&repo, &tag, &(crate::meta::usage::now() as i64)],
    )
    .await?;
    Ok(())
}
