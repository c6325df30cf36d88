//! Uploads a verified local file as one object: one PUT up to `SINGLE_PUT_MAX`, above that a
//! multipart upload whose parts go up `PARALLEL_PARTS` at a time.
//!
//! object_store sends a part from memory, so what an upload holds is bounded by the parts in flight:
//! `PARALLEL_PARTS × PART_SIZE` per upload, and `parts` (a store-wide semaphore) bounds it across
//! concurrent commits. Parts are read from the file on the blocking pool.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};
use tokio::sync::Semaphore;

/// Up to this size an object goes up in one PUT (held in memory meanwhile).
pub const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;
/// Multipart part size: S3 requires at least 5 MiB for every part but the last.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
pub const PARALLEL_PARTS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading the local spool failed: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] object_store::Error),
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

/// Uploads the first `len` bytes of `file` to `key`. Nothing is visible under `key` unless all of
/// it went up: a failed multipart upload is aborted (S3 never shows an incomplete one).
pub async fn upload(
    store: &dyn ObjectStore,
    key: &Key,
    file: Arc<File>,
    len: u64,
    parts: &Semaphore,
) -> Result<(), UploadError> {
    if len <= SINGLE_PUT_MAX {
        let _permit = parts.acquire().await.expect("never closed");
        let bytes = read_at(&file, 0, len).await?;
        store.put(key, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let mut up = store.put_multipart(key).await?;
    let sent = async {
        let mut inflight = FuturesUnordered::new();
        let mut pos = 0;
        while pos < len {
            let n = PART_SIZE.min(len - pos);
            let permit = parts.acquire().await.expect("never closed");
            let bytes = read_at(&file, pos, n).await?;
            // Parts are numbered in the order put_part is called, whatever order they finish in.
            let part = up.put_part(PutPayload::from(bytes));
            inflight.push(async move {
                let r = part.await;
                drop(permit);
                r
            });
            pos += n;
            if inflight.len() >= PARALLEL_PARTS {
                if let Some(r) = inflight.next().await {
                    r?;
                }
            }
        }
        while let Some(r) = inflight.next().await {
            r?;
        }
        Ok::<_, UploadError>(())
    }
    .await;
    match sent {
        Ok(()) => match up.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = up.abort().await;
                Err(e.into())
            }
        },
        Err(e) => {
            // Best effort: a multipart upload never completed is invisible anyway, and an
            // unreachable store will not take the abort either (its lifecycle rules clean up).
            let _ = up.abort().await;
            Err(e)
        }
    }
}
