//! Uploads a verified local file as one object: one PUT up to `SINGLE_PUT_MAX`, above that a
//! multipart upload whose parts go up `PARALLEL_PARTS` at a time.
//!
//! object_store sends a part from memory, so what an upload holds is bounded by the parts in flight:
//! `PARALLEL_PARTS × PART_SIZE` per upload, and `parts` (a store-wide semaphore) bounds it across
//! concurrent commits. Parts are read from the file on the blocking pool.
//!
//! Each request is sent again on its own when it fails in a way a retry can fix, or when it stalls
//! (`Patience`): a busy object store answering one part of fifty with a 503, or a connection that
//! hangs mid-part, costs that part a retry, not the whole upload. object_store's own retries are
//! kept to a few seconds (an unreachable store must become a 503 quickly for small requests), so
//! the longer patience an upload deserves lives here, where a part can be numbered and sent again.

use std::fs::File;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};
use tokio::sync::Semaphore;

use super::error::{Failure, Origin};
use crate::store::StoreError;

/// Up to this size an object goes up in one PUT (held in memory meanwhile).
pub const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;
/// Multipart part size: S3 requires at least 5 MiB for every part but the last.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
pub const PARALLEL_PARTS: usize = 4;

/// How long an upload's requests may take, and how long a failing one keeps being sent again.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// A request of `len` bytes with no answer after `request_base + len / min_rate` is cut and
    /// sent again: a stalled connection shows no error, only silence.
    pub request_base: Duration,
    /// Bytes per second the slowest link wharf should still upload over, per request in flight.
    pub min_rate: u64,
    /// A request keeps being retried (failures a retry can fix only) until this long after its
    /// first try: long enough for an object store to restart or shed a burst of load.
    pub retry_for: Duration,
}

impl Default for Patience {
    fn default() -> Patience {
        Patience {
            request_base: Duration::from_secs(15),
            // An 8 MiB part: 31 s; a 16 MiB single PUT: 47 s.
            min_rate: 512 * 1024,
            retry_for: Duration::from_secs(30),
        }
    }
}

impl Patience {
    fn limit(&self, len: u64) -> Duration {
        self.request_base + Duration::from_secs_f64(len as f64 / self.min_rate.max(1) as f64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading the local spool failed: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("{what} got no answer within {limit:?}, tried {tries} times over {spent:?}")]
    Stalled {
        what: String,
        limit: Duration,
        tries: u32,
        spent: Duration,
    },
}

impl UploadError {
    pub fn into_store_error(self, origin: &Origin, what: &str) -> StoreError {
        match self {
            UploadError::Read(e) => StoreError::Io(e),
            UploadError::Store(e) => origin.store_error(e, what),
            stalled @ UploadError::Stalled { .. } => {
                origin.unavailable(format!("{what}: {stalled}"))
            }
        }
    }
}

async fn read_at(file: &Arc<File>, pos: u64, len: u64) -> std::io::Result<Bytes> {
    let f = file.clone();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// What one upload needs besides the file.
pub struct Uploader<'a, S> {
    pub store: &'a S,
    pub origin: &'a Origin,
    /// Store-wide bound on requests' bodies held in memory.
    pub parts: &'a Semaphore,
    pub patience: Patience,
}

impl<S: ObjectStore + MultipartStore> Uploader<'_, S> {
    /// Uploads the first `len` bytes of `file` to `key`. Nothing is visible under `key` unless all
    /// of it went up: a failed multipart upload is aborted (S3 never shows an incomplete one).
    pub async fn upload(&self, key: &Key, file: Arc<File>, len: u64) -> Result<(), UploadError> {
        if len <= SINGLE_PUT_MAX {
            let _permit = self.parts.acquire().await.expect("never closed");
            let bytes = read_at(&file, 0, len).await?;
            // A PUT of content-addressed bytes is safe to repeat: it writes the same object.
            self.patiently(
                len,
                || format!("PUT {key}"),
                || self.store.put(key, PutPayload::from(bytes.clone())),
            )
            .await?;
            return Ok(());
        }
        let id = self
            .patiently(
                0,
                || format!("starting the multipart upload of {key}"),
                || self.store.create_multipart(key),
            )
            .await?;
        let sent = self.send_parts(key, &id, &file, len).await;
        let done = match sent {
            Ok(parts) => {
                let completed = self
                    .patiently(
                        0,
                        || format!("completing {key}"),
                        || self.store.complete_multipart(key, &id, parts.clone()),
                    )
                    .await;
                match completed {
                    Ok(_) => Ok(()),
                    // A completion whose answer was lost fails when sent again (the upload is
                    // gone): the object being there, whole, is what counts.
                    Err(e) => match self.store.head(key).await {
                        Ok(m) if m.size == len => Ok(()),
                        _ => Err(e),
                    },
                }
            }
            Err(e) => Err(e),
        };
        if done.is_err() {
            // Best effort: a multipart upload never completed is invisible anyway, and an
            // unreachable store will not take the abort either (its lifecycle rules clean up).
            let _ = self.store.abort_multipart(key, &id).await;
        }
        done
    }

    async fn send_parts(
        &self,
        key: &Key,
        id: &object_store::MultipartId,
        file: &Arc<File>,
        len: u64,
    ) -> Result<Vec<PartId>, UploadError> {
        let count = len.div_ceil(PART_SIZE) as usize;
        let mut done: Vec<Option<PartId>> = vec![None; count];
        let mut inflight = FuturesUnordered::new();
        for idx in 0..count {
            let pos = idx as u64 * PART_SIZE;
            let n = PART_SIZE.min(len - pos);
            let permit = self.parts.acquire().await.expect("never closed");
            let bytes = read_at(file, pos, n).await?;
            inflight.push(async move {
                let r = self
                    .patiently(
                        n,
                        || format!("part {} of {count} of {key}", idx + 1),
                        || {
                            self.store
                                .put_part(key, id, idx, PutPayload::from(bytes.clone()))
                        },
                    )
                    .await;
                drop(permit);
                r.map(|part| (idx, part))
            });
            if inflight.len() >= PARALLEL_PARTS {
                if let Some(r) = inflight.next().await {
                    let (i, part) = r?;
                    done[i] = Some(part);
                }
            }
        }
        while let Some(r) = inflight.next().await {
            let (i, part) = r?;
            done[i] = Some(part);
        }
        Ok(done
            .into_iter()
            .map(|p| p.expect("every part sent"))
            .collect())
    }

    /// Runs `send` until it succeeds, fails in a way a retry will not fix, or `patience.retry_for`
    /// has passed; each try is cut after the limit for `len` bytes.
    async fn patiently<T, F, Fut>(
        &self,
        len: u64,
        what: impl Fn() -> String,
        mut send: F,
    ) -> Result<T, UploadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let p = &self.patience;
        let limit = p.limit(len);
        let first = Instant::now();
        let mut backoff = Duration::from_millis(250);
        let mut tries = 0;
        loop {
            tries += 1;
            let failed = match tokio::time::timeout(limit, send()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    if !self.transient(&e) {
                        return Err(e.into());
                    }
                    UploadError::Store(e)
                }
                Err(_) => UploadError::Stalled {
                    what: what(),
                    limit,
                    tries,
                    spent: first.elapsed(),
                },
            };
            if first.elapsed() + backoff > p.retry_for {
                return Err(failed);
            }
            tracing::warn!(
                endpoint = %self.origin.endpoint,
                request = %what(),
                try_ = tries,
                error = %failed,
                "an upload request failed; sending it again"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    fn transient(&self, e: &object_store::Error) -> bool {
        matches!(
            self.origin.classify_ref(e),
            Failure::Store(StoreError::Unavailable { .. })
        )
    }
}
