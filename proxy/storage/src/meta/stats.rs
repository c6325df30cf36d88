//! What the status view (`wharf status`, the `/ui` page) keeps across restarts: the history of the
//! cache counters and the outcome of the last garbage collection.
//!
//! The history is bounded by thinning, not by count: every sample of the last hour is kept (the chart
//! of the last minutes stays fine-grained), one sample per ten minutes before that, and nothing older
//! than a week. The counters are cumulative, so dropping a sample only merges two intervals into one:
//! the ratio and the bytes between any two kept samples stay exact. At the default sampling interval
//! (10 s) that is at most 360 + 1008 rows of 48 bytes, whatever the uptime, and a page view reads
//! them all at once; seven days at full resolution would be 60 480 rows, too many to draw.

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::db::{Meta, MetaError};

/// unix seconds → (counting since, hits, misses, bytes from cache, bytes from upstream)
pub(super) const CACHE_SAMPLES: TableDefinition<u64, (u64, u64, u64, u64, u64)> =
    TableDefinition::new("cache_samples");
/// name → record (JSON): `last_gc`, and the status page's recent denials.
pub(super) const STATUS_RECORDS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("status_records");

const LAST_GC: &str = "last_gc";

/// The cache counters at one moment, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheTotals {
    /// Mirror requests answered from what wharf holds.
    pub hits: u64,
    /// Mirror requests that went to an upstream.
    pub misses: u64,
    /// Bytes served from the cache: what the upstreams did not have to send again.
    pub bytes_from_cache: u64,
    /// Bytes fetched from upstreams.
    pub bytes_from_upstream: u64,
}

impl CacheTotals {
    /// Both added up (saturating: counters never wrap, a corrupt record must not panic).
    pub fn plus(self, o: CacheTotals) -> CacheTotals {
        CacheTotals {
            hits: self.hits.saturating_add(o.hits),
            misses: self.misses.saturating_add(o.misses),
            bytes_from_cache: self.bytes_from_cache.saturating_add(o.bytes_from_cache),
            bytes_from_upstream: self
                .bytes_from_upstream
                .saturating_add(o.bytes_from_upstream),
        }
    }

    /// hits / (hits + misses); `None` before any mirror request.
    pub fn hit_ratio(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n > 0).then(|| self.hits as f64 / n as f64)
    }
}

/// One point of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Unix seconds of the first sample these totals count from (the first start on this data dir).
    pub since: u64,
    pub totals: CacheTotals,
}

/// The last garbage collection that ran for real (a dry run changes nothing, so it is not recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGc {
    /// Unix seconds.
    pub started: u64,
    pub millis: u64,
    pub removed: usize,
    pub removed_bytes: u64,
    pub evicted: usize,
}

/// How the history is thinned (see the module's comment); a value so tests can use seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Every sample younger than this is kept.
    pub fine_secs: u64,
    /// Older ones: the first of each bucket of this many seconds.
    pub coarse_secs: u64,
    /// None older than this.
    pub keep_secs: u64,
}

impl Retention {
    pub const DEFAULT: Retention = Retention {
        fine_secs: 3600,
        coarse_secs: 600,
        keep_secs: 7 * 86_400,
    };
}

/// Of `keys` (ascending, all older than the fine window), those to drop: every one in the same
/// coarse bucket as the key kept before it (`prev`: the last key kept before `keys`).
pub fn thinned(keys: &[u64], prev: Option<u64>, coarse_secs: u64) -> Vec<u64> {
    let coarse = coarse_secs.max(1);
    let mut bucket = prev.map(|k| k / coarse);
    let mut out = Vec::new();
    for &k in keys {
        if bucket == Some(k / coarse) {
            out.push(k);
        } else {
            bucket = Some(k / coarse);
        }
    }
    out
}

impl Meta {
    /// Appends `s` to the history and thins it, in one transaction. `thinned_to` is what the caller's
    /// previous call returned (0 on its first: everything older than the fine window is looked at
    /// once, as a previous run may have stopped before thinning its last hour); the return value is
    /// the next call's, so each call looks only at the samples that left the fine window since.
    /// `durable`: forced to disk now (a stop); otherwise the next durable commit takes it along, and a
    /// crash loses at most the counts since then.
    pub async fn record_sample(
        &self,
        s: Sample,
        keep: Retention,
        thinned_to: u64,
        durable: bool,
    ) -> Result<u64, MetaError> {
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move {
                    pg.record_sample(s, keep, thinned_to, durable).await
                })
                .await;
        }
        self.run(move |db| {
            let mut tx = db.begin_write()?;
            if !durable {
                tx.set_durability(Durability::None)?;
            }
            let fine_from = s.at.saturating_sub(keep.fine_secs);
            let oldest = s.at.saturating_sub(keep.keep_secs);
            let thinned_to = thinned_to.max(oldest);
            {
                let mut t = tx.open_table(CACHE_SAMPLES)?;
                let c = s.totals;
                t.insert(
                    s.at,
                    (
                        s.since,
                        c.hits,
                        c.misses,
                        c.bytes_from_cache,
                        c.bytes_from_upstream,
                    ),
                )?;
                let mut doomed: Vec<u64> = Vec::new();
                for item in t.range(..oldest)? {
                    doomed.push(item?.0.value());
                }
                if fine_from > thinned_to {
                    let prev = match t.range(..thinned_to)?.next_back() {
                        Some(item) => Some(item?.0.value()),
                        None => None,
                    };
                    let mut keys = Vec::new();
                    for item in t.range(thinned_to..fine_from)? {
                        keys.push(item?.0.value());
                    }
                    doomed.extend(thinned(&keys, prev, keep.coarse_secs));
                }
                for k in doomed {
                    t.remove(k)?;
                }
            }
            tx.commit()?;
            Ok(fine_from.max(thinned_to))
        })
        .await
    }

    /// The history kept, oldest first.
    pub async fn samples(&self) -> Result<Vec<Sample>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.samples().await;
        }
        self.run(|db| {
            let t = db.begin_read()?.open_table(CACHE_SAMPLES)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push(sample(k.value(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    /// The newest sample: the totals the next run counts on from.
    pub async fn last_sample(&self) -> Result<Option<Sample>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.last_sample().await;
        }
        self.run(|db| {
            let t = db.begin_read()?.open_table(CACHE_SAMPLES)?;
            let last = t.last()?;
            Ok(last.map(|(k, v)| sample(k.value(), v.value())))
        })
        .await
    }

    /// Records the outcome of a collection, durably (a stop right after it must not lose it).
    pub async fn record_gc(&self, gc: &LastGc) -> Result<(), MetaError> {
        self.put_status_record(LAST_GC, gc).await
    }

    /// Records `value` (JSON) under `name` among the status records, durably.
    pub async fn put_status_record<T: Serialize>(
        &self,
        name: &'static str,
        value: &T,
    ) -> Result<(), MetaError> {
        if self.pg().is_some() {
            let v = serde_json::to_value(value)?;
            return self
                .pg_write(move |pg, _| async move { pg.put_status_record(name, &v).await })
                .await;
        }
        let v = serde_json::to_vec(value)?;
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(STATUS_RECORDS)?.insert(name, v.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The status record `name`, if one was recorded.
    pub async fn status_record<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.status_record(name).await;
        }
        self.run(move |db| {
            let t = db.begin_read()?.open_table(STATUS_RECORDS)?;
            let v = t.get(name)?;
            Ok(v.map(|v| serde_json::from_slice(v.value())).transpose()?)
        })
        .await
    }

    pub async fn last_gc(&self) -> Result<Option<LastGc>, MetaError> {
        self.status_record(LAST_GC).await
    }
}

fn sample(
    at: u64,
    (since, hits, misses, from_cache, from_upstream): (u64, u64, u64, u64, u64),
) -> Sample {
    Sample {
        at,
        since,
        totals: CacheTotals {
            hits,
            misses,
            bytes_from_cache: from_cache,
            bytes_from_upstream: from_upstream,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::tests::Again;
    use crate::{on_both, on_both_again};

    fn at(t: u64, hits: u64) -> Sample {
        Sample {
            at: t,
            since: 1,
            totals: CacheTotals {
                hits,
                misses: 1,
                bytes_from_cache: hits * 10,
                bytes_from_upstream: 5,
            },
        }
    }

    const SMALL: Retention = Retention {
        fine_secs: 60,
        coarse_secs: 20,
        keep_secs: 300,
    };

    #[test]
    fn thinning_keeps_the_first_of_each_bucket() {
        assert_eq!(thinned(&[0, 5, 19, 20, 39, 41], None, 20), vec![5, 19, 39]);
        // The bucket of the sample kept before counts.
        assert_eq!(thinned(&[12, 25], Some(3), 20), vec![12]);
        assert!(thinned(&[], Some(3), 20).is_empty());
    }

    // A sample a second for ten minutes: the last minute at full resolution, one per 20 s before,
    // nothing older than five minutes, and the counters of what is kept still read in order.
    on_both!(history_is_bounded_and_thinned, |meta: Meta| async move {
        let mut thinned_to = 0;
        for t in 1000..1600 {
            thinned_to = meta
                .record_sample(at(t, t), SMALL, thinned_to, false)
                .await
                .unwrap();
        }
        let kept = meta.samples().await.unwrap();
        let times: Vec<u64> = kept.iter().map(|s| s.at).collect();
        assert!(times.iter().all(|t| *t >= 1599 - 300), "{times:?}");
        let fine: Vec<u64> = times.iter().copied().filter(|t| *t >= 1599 - 60).collect();
        assert_eq!(fine, (1539..1600).collect::<Vec<_>>());
        let coarse: Vec<u64> = times.iter().copied().filter(|t| *t < 1539).collect();
        let buckets: Vec<u64> = coarse.iter().map(|t| t / 20).collect();
        let mut unique = buckets.clone();
        unique.dedup();
        assert_eq!(buckets, unique, "one per bucket: {coarse:?}");
        assert!(coarse.len() <= 300 / 20 + 1, "{coarse:?}");
        assert!(kept.windows(2).all(|w| w[0].totals.hits < w[1].totals.hits));
        assert_eq!(meta.last_sample().await.unwrap(), Some(at(1599, 1599)));
    });

    // A run that stopped with its last minute unthinned: the next run's first write thins it.
    on_both_again!(
        a_restart_thins_what_the_previous_run_left,
        |meta: Meta, again: Again| async move {
            let mut thinned_to = 0;
            for t in 1000..1060 {
                thinned_to = meta
                    .record_sample(at(t, t), SMALL, thinned_to, false)
                    .await
                    .unwrap();
            }
            meta.record_sample(at(1060, 1060), SMALL, thinned_to, true)
                .await
                .unwrap();
            drop(meta);
            let meta = again.open().await;
            assert_eq!(meta.last_sample().await.unwrap(), Some(at(1060, 1060)));
            meta.record_sample(at(1200, 1061), SMALL, 0, false)
                .await
                .unwrap();
            let times: Vec<u64> = meta.samples().await.unwrap().iter().map(|s| s.at).collect();
            assert_eq!(times, vec![1000, 1020, 1040, 1060, 1200]);
        }
    );

    on_both_again!(
        the_last_collection_survives_a_reopen,
        |meta: Meta, again: Again| async move {
            assert_eq!(meta.last_gc().await.unwrap(), None);
            let gc = LastGc {
                started: 42,
                millis: 7,
                removed: 3,
                removed_bytes: 1234,
                evicted: 1,
            };
            meta.record_gc(&gc).await.unwrap();
            drop(meta);
            let meta = again.open().await;
            assert_eq!(meta.last_gc().await.unwrap(), Some(gc));
        }
    );
}
