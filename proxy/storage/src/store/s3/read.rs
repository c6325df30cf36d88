//! A ranged GET streamed to a reader through a small channel, never buffered whole; a cold read of
//! a whole blob also warms the local hot cache with the same bytes (verified before they are kept).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::store::{BlobWriter, StoreError};

/// How long the object store may pause mid-body before the read fails: its client has no timeout
/// for a whole GET (a large blob to a slow client takes as long as it takes), so this bounds a
/// stalled connection instead.
pub const IDLE: Duration = Duration::from_secs(30);

/// Chunks buffered between the GET and the reader.
pub const CHANNEL: usize = 8;

/// Keeps a copy of a whole blob as it streams by; `finish` verifies and publishes it.
#[async_trait::async_trait]
pub trait Warm: Send + 'static {
    fn writer(&mut self) -> &mut dyn BlobWriter;
    async fn finish(self: Box<Self>, ok: bool);
}

/// Sends `body` (which must yield exactly `len` bytes) to `tx`, and to `warm` if given. Stops when
/// the reader goes away, unless it is warming the cache (then the blob is read to its end: the
/// cache gets it anyway).
pub async fn feed(
    mut body: BoxStream<'static, object_store::Result<Bytes>>,
    len: u64,
    tx: mpsc::Sender<io::Result<Bytes>>,
    mut warm: Option<Box<dyn Warm>>,
    unavailable: impl Fn(String) -> StoreError + Send,
) {
    let mut got = 0u64;
    let mut reader = Some(tx);
    let outcome: Result<(), String> = loop {
        let next = match tokio::time::timeout(IDLE, body.next()).await {
            Err(_) => {
                break Err(format!(
                    "the object store paused for {IDLE:?} after {got} bytes"
                ))
            }
            Ok(next) => next,
        };
        let chunk = match next {
            None if got == len => break Ok(()),
            None => break Err(format!("the object ended after {got} of {len} bytes")),
            Some(Err(e)) => {
                break Err(format!(
                    "reading the object broke off after {got} bytes: {e}"
                ))
            }
            Some(Ok(c)) => c,
        };
        got += chunk.len() as u64;
        if got > len {
            break Err(format!(
                "the object is longer than the {len} bytes expected"
            ));
        }
        if let Some(w) = warm.as_mut() {
            if let Err(e) = w.writer().write(chunk.clone()).await {
                tracing::warn!(error = %e, "could not keep a blob in the local cache");
                warm.take().expect("just used").finish(false).await;
            }
        }
        if let Some(tx) = &reader {
            if tx.send(Ok(chunk)).await.is_err() {
                reader = None; // the client went away
            }
        }
        if reader.is_none() && warm.is_none() {
            return;
        }
    };
    if let Some(w) = warm {
        w.finish(outcome.is_ok()).await;
    }
    if let (Err(why), Some(tx)) = (outcome, reader) {
        let e = unavailable(why);
        let _ = tx.send(Err(io::Error::other(e))).await;
    }
}
