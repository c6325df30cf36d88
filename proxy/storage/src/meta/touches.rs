//! Recent use and removals as every process sharing the metadata sees them: the cross-process half
//! of `lease.rs`. With redb one process owns the store and its memory is the whole truth, so these
//! are no-ops there; on Postgres they are the `touches` table and an advisory lock.

use super::db::Meta;
use super::error::MetaError;
use wharf_model::digest::Digest;

/// A doom older than this is a collector that died mid-sweep: a toucher stops waiting for it.
pub const DOOM_MAX_SECS: u64 = 120;

/// Held while this process collects; another process's collector finds it taken.
pub struct CollectorLock {
    /// The connection holding the advisory lock (Postgres); closing it releases the lock.
    pub(super) _held: Option<deadpool_postgres::Object>,
}

impl CollectorLock {
    /// Unlocks now (the next collector, here or elsewhere, may start at once) and gives the
    /// connection back to the pool.
    pub async fn release(mut self) {
        if let Some(held) = self._held.take() {
            if held
                .execute("SELECT pg_advisory_unlock_all()", &[])
                .await
                .is_err()
            {
                // Closing it releases the lock too, once Postgres notices.
                drop(deadpool_postgres::Object::take(held));
            }
        }
    }
}

impl Drop for CollectorLock {
    /// Not released (a panic, a cancelled collection): the connection is closed instead, which ends
    /// the lock as soon as Postgres notices.
    fn drop(&mut self) {
        // Detached from the pool and closed: the session, and with it the lock, ends now.
        if let Some(held) = self._held.take() {
            drop(deadpool_postgres::Object::take(held));
        }
    }
}

impl Meta {
    /// Whether other processes may share this metadata (and so must see touches and dooms).
    pub fn shared(&self) -> bool {
        self.pg().is_some()
    }

    /// Records that `digests` were used at `at` (unix seconds); answers those a collector (this
    /// process's or another's) is removing now, which the caller must wait for.
    pub async fn touch_shared(
        &self,
        digests: &[Digest],
        at: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        match self.pg() {
            Some(pg) if !digests.is_empty() => pg.touch(&sorted(digests), at).await,
            _ => Ok(Vec::new()),
        }
    }

    /// Of `digests`, those still being removed at `now`.
    pub async fn doomed_shared(
        &self,
        digests: &[Digest],
        now: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        match self.pg() {
            Some(pg) if !digests.is_empty() => pg.doomed(&sorted(digests), now).await,
            _ => Ok(Vec::new()),
        }
    }

    /// Marks as being removed those of `digests` no process touched at or after `since`; answers
    /// them. Then `bury_shared` must follow.
    pub async fn doom_shared(
        &self,
        digests: &[Digest],
        since: u64,
        now: u64,
    ) -> Result<Vec<Digest>, MetaError> {
        match self.pg() {
            Some(pg) if !digests.is_empty() => pg.doom(&sorted(digests), since, now).await,
            _ => Ok(digests.to_vec()),
        }
    }

    /// The sweep of `digests` is over (removed, or failed to be): touchers go on.
    pub async fn bury_shared(&self, digests: &[Digest]) -> Result<(), MetaError> {
        match self.pg() {
            Some(pg) if !digests.is_empty() => pg.bury(&sorted(digests)).await,
            _ => Ok(()),
        }
    }

    /// What any process touched at or after `since`; older touches are forgotten.
    pub async fn touched_since(&self, since: u64) -> Result<Vec<Digest>, MetaError> {
        match self.pg() {
            Some(pg) => pg.touched_since(since).await,
            None => Ok(Vec::new()),
        }
    }

    /// `Some` while no other process collects (always, on redb: its lock file already keeps other
    /// processes out); `None` if another holds it.
    pub async fn collector_lock(&self) -> Result<Option<CollectorLock>, MetaError> {
        match self.pg() {
            Some(pg) => Ok(pg
                .collector_lock()
                .await?
                .map(|held| CollectorLock { _held: Some(held) })),
            None => Ok(Some(CollectorLock { _held: None })),
        }
    }
}

/// Rows are locked in digest order by every statement here: two batches never wait on each other in
/// a circle.
fn sorted(digests: &[Digest]) -> Vec<String> {
    let mut v: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
    v.sort();
    v.dedup();
    v
}
