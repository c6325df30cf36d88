//! The status history of one process: the sampler that records the cache counters every
//! `[metrics] sample_secs`, counting on from the last sample of the previous run (so the chart, the
//! hit ratio and the bytes saved carry over a restart), and the `History` the server builds and
//! `Admin` holds (the sampler's base once read, and the policy's denials, which the sampler writes
//! to the metadata when they changed). Not a static: the server and an offline command each have
//! their own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_model::clock::unix_now as now;
use wharf_policy::denials::Denials;
use wharf_storage::meta::{CacheTotals, Meta, MetaError, Retention, Sample};

/// How often the sampler records the cache counters unless `[metrics] sample_secs` says otherwise.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The status page's memory in one process: where the sampler's count began (once it has read
/// where the previous run left the totals) and the policy's recent denials.
#[derive(Debug, Default)]
pub struct History {
    sampling: Mutex<Option<Sampling>>,
    denials: Arc<Denials>,
}

#[derive(Debug, Clone, Copy)]
struct Sampling {
    /// The totals before this process counted anything.
    base: Sample,
    every: Duration,
}

/// A poisoned lock only means a panic elsewhere mid-push; the ring is still a ring.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cache counters of this process (the metrics module's, cumulative since start).
fn counters() -> CacheTotals {
    let s = wharf_metrics::cache_counts();
    CacheTotals {
        hits: s.blob_hits + s.manifest_hits,
        misses: s.blob_misses + s.manifest_misses,
        bytes_from_cache: s.bytes_from_cache,
        bytes_from_upstream: s.bytes_from_upstream,
    }
}

/// The totals `base` (the previous runs') and this process's `counters` make at `at`.
pub fn continued(base: Option<Sample>, counters: CacheTotals, at: u64) -> Sample {
    match base {
        Some(b) => Sample {
            at,
            since: b.since,
            totals: b.totals.plus(counters),
        },
        None => Sample {
            at,
            since: at,
            totals: counters,
        },
    }
}

impl History {
    /// A server's history: the denials are its policy's.
    pub fn new(denials: Arc<Denials>) -> History {
        History {
            sampling: Mutex::new(None),
            denials,
        }
    }

    pub fn denials(&self) -> &Denials {
        &self.denials
    }

    /// The cache totals now, counted across restarts (`None`: nothing counted yet, ever). In the
    /// server, its sampler's base; elsewhere (the CLI with no server) the last recorded sample, as
    /// this process counted nothing.
    pub async fn current(&self, meta: &Meta) -> Result<Option<Sample>, MetaError> {
        let sampling = *lock(&self.sampling);
        let base = match sampling {
            Some(s) => Some(s.base),
            None => meta.last_sample().await?,
        };
        let counters = counters();
        Ok((base.is_some() || counters != CacheTotals::default())
            .then(|| continued(base, counters, now())))
    }

    /// How often the sampler records (its setting once it runs).
    pub fn every(&self) -> Duration {
        lock(&self.sampling).map_or(SAMPLE_EVERY, |s| s.every)
    }
}

/// Writes samples of the cache totals to `meta`, counting on from the last one recorded. While the
/// totals stand still nothing is written (an idle wharf does not write every interval); the last
/// unchanged sample is written just before the next change, so the chart stays flat until then
/// instead of sloping across the idle time.
pub struct Sampler {
    meta: Meta,
    base: Sample,
    keep: Retention,
    thinned_to: u64,
    /// The totals of the last sample written by this process.
    written: Option<CacheTotals>,
    /// The newest sample not written because nothing had changed.
    held: Option<Sample>,
}

impl Sampler {
    /// Reads the base: the newest sample recorded (by a previous run); with none, the totals count
    /// from zero from `now` on.
    pub async fn start(meta: Meta, keep: Retention, now: u64) -> Result<Sampler, MetaError> {
        let base = meta.last_sample().await?.unwrap_or(Sample {
            at: now,
            since: now,
            totals: CacheTotals::default(),
        });
        Ok(Sampler {
            meta,
            base,
            keep,
            thinned_to: 0,
            written: None,
            held: None,
        })
    }

    /// Records the base plus `counters` at `at`, unless nothing changed since the last sample written
    /// (`None` then); `durable` writes it in any case, forced to disk (at a stop).
    pub async fn record(
        &mut self,
        counters: CacheTotals,
        at: u64,
        durable: bool,
    ) -> Result<Option<Sample>, MetaError> {
        let s = continued(Some(self.base), counters, at);
        if self.written == Some(s.totals) {
            if !durable {
                self.held = Some(s);
                return Ok(None);
            }
        } else if let Some(h) = self.held.take() {
            self.write(h, false).await?;
        }
        self.held = None;
        self.write(s, durable).await?;
        Ok(Some(s))
    }

    async fn write(&mut self, s: Sample, durable: bool) -> Result<(), MetaError> {
        self.thinned_to = self
            .meta
            .record_sample(s, self.keep, self.thinned_to, durable)
            .await?;
        self.written = Some(s.totals);
        Ok(())
    }
}

/// The server's sampler: every `every` (the first at once) and once more, durably, when a stop is
/// asked for (SIGTERM or SIGINT: the housekeeping tasks are aborted after the server drains, and the
/// counts since the last tick would be lost), until aborted. Off the request path: at most one small
/// write per interval (none while idle), on the blocking pool.
pub async fn sampler(meta: Meta, every: Duration, history: Arc<History>) {
    let every = every.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until the base is read, nothing is recorded: a sample from zero would lose the totals.
    let mut s = loop {
        tick.tick().await;
        match Sampler::start(meta.clone(), Retention::DEFAULT, now()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "status history: cannot read the last sample; trying again")
            }
        }
    };
    *lock(&history.sampling) = Some(Sampling {
        base: s.base,
        every,
    });
    let mut denials_saved = 0;
    let stop = stop_asked();
    tokio::pin!(stop);
    let mut durable = false;
    loop {
        if let Err(e) = s.record(counters(), now(), durable).await {
            tracing::warn!(error = %e, "status history: cannot record the cache counters");
        }
        history.denials.save(&meta, &mut denials_saved).await;
        if durable {
            return;
        }
        durable = tokio::select! {
            _ = tick.tick() => false,
            () = &mut stop => true,
        };
    }
}

/// Resolves when the process is asked to stop (never, if the signals cannot be watched: the server
/// says so itself).
async fn stop_asked() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
