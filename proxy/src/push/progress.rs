//! Whether deliveries to one upstream repository are getting anywhere: the last time one of its
//! requests was answered as hoped (2xx, or the 404 of a `HEAD` that finds nothing) or the upstream
//! took bytes of a body. Write-through gives up on an upstream that has not moved for
//! `[delivery] write_through_timeout_secs`, whether it is unreachable, silent, or failing every
//! request, while an upload that keeps sending is never cut off, however large.
//!
//! One record per upstream repository, shared by the deliveries and the early blob uploads to it: a
//! delivery waiting on an upload another one started sees that upload move.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use wharf_protocol::upstream::{BoxError, ClientBody};

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

    /// `body`, marking progress as the connection takes it: hyper asks for the next chunk only when
    /// it can write it, so an upstream that stops reading stops the marks. Chunks are handed out at
    /// most `WATCH_CHUNK` at a time (a stored blob's come in 8 MiB mappings, which a slow link would
    /// take longer than the limit to drain).
    pub fn watch(self: &Arc<Self>, body: ClientBody) -> ClientBody {
        Watched {
            inner: body,
            pending: Bytes::new(),
            progress: self.clone(),
        }
        .boxed()
    }
}

/// Largest piece of a watched body handed to the connection at once: a mark at least this often.
const WATCH_CHUNK: usize = 256 * 1024;

struct Watched {
    inner: ClientBody,
    /// What is left of the inner body's last chunk.
    pending: Bytes,
    progress: Arc<Progress>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                end => return Poll::Ready(end),
            }
        }
        let piece = this.pending.split_to(this.pending.len().min(WATCH_CHUNK));
        this.progress.moved();
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + pending);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + pending);
        }
        hint
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
    async fn a_watched_body_is_the_same_bytes_in_pieces_each_marked() {
        let p = Arc::new(Progress::default());
        let data = Bytes::from(
            (0..(WATCH_CHUNK * 2 + 10))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let inner = http_body_util::Full::new(data.clone())
            .map_err(|e| match e {})
            .boxed();
        let mut body = p.watch(inner);
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let start = Instant::now();
        tokio::time::sleep(20 * MS).await;
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            pieces.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(
            pieces.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![WATCH_CHUNK, WATCH_CHUNK, 10]
        );
        assert_eq!(pieces.concat(), data);
        assert!(p.last() > start, "taking the body is progress");
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
