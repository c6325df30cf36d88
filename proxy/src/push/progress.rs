//! Whether deliveries to one upstream repository are getting anywhere: the last time one of its
//! requests was answered as hoped (2xx, or the 404 of a `HEAD` that finds nothing) or the upstream
//! took bytes of a body. Write-through gives up on an upstream that has not moved for
//! `[delivery] write_through_timeout_secs`, whether it is unreachable, silent, or failing every
//! request, while an upload that keeps sending is never cut off, however large.
//!
//! One record per upstream repository, shared by the deliveries and the early blob uploads to it: a
//! delivery waiting on an upload another one started sees that upload move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::upstream::ClientBody;

pub struct Progress {
    origin: Instant,
    /// Milliseconds after `origin` of the last progress (0: none yet).
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Something moved now.
    pub fn moved(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Returns once nothing has moved for `limit`, counting from `since` at the earliest.
    pub async fn stalled(&self, since: Instant, limit: Duration) {
        loop {
            let due = since.max(self.last()) + limit;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }

    /// `body`, marking progress as the connection takes each of its chunks: hyper asks for the next
    /// one only when it can write it, so an upstream that stops reading stops the marks.
    pub fn watch(self: &Arc<Self>, body: ClientBody) -> ClientBody {
        let this = self.clone();
        body.map_frame(move |f| {
            this.moved();
            f
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn stalls_only_after_the_limit_without_progress() {
        let p = Arc::new(Progress::default());
        let start = Instant::now();
        let limit = 300 * MS;
        let watcher = {
            let p = p.clone();
            tokio::spawn(async move {
                p.stalled(start, limit).await;
                start.elapsed()
            })
        };
        // Progress at 200 ms and at 400 ms moves the end to 700 ms.
        tokio::time::sleep(200 * MS).await;
        p.moved();
        tokio::time::sleep(200 * MS).await;
        p.moved();
        let after = watcher.await.unwrap();
        assert!(after >= 690 * MS && after < 2000 * MS, "{after:?}");
    }

    #[tokio::test]
    async fn progress_before_the_start_does_not_count() {
        let p = Progress::default();
        p.moved();
        tokio::time::sleep(50 * MS).await;
        let start = Instant::now();
        p.stalled(start, 200 * MS).await;
        let after = start.elapsed();
        assert!(after >= 200 * MS && after < 1500 * MS, "{after:?}");
    }
}
