//! An opened blob as a stream of chunks, whatever holds it: for code that moves content along
//! (`copy.rs`) rather than serving it (the registry sends files with `sendfile`, `wharf-protocol`'s
//! `body.rs`). One chunk is in memory at a time, never the blob.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc::Receiver;

use super::roles::{Blob, BlobSource, StoreError};

/// Bytes per chunk read from a file.
const CHUNK: u64 = 1 << 20;

/// The bytes of `blob`'s range, in order. A source that ends early is an error, never a short
/// stream.
pub fn chunks(blob: Blob) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    // An empty blob has no byte range (`Provider::open`): nothing to read.
    let len = if blob.size == 0 { 0 } else { blob.range.len() };
    match blob.source {
        BlobSource::File(file) => file_chunks(file, blob.range.start, len).left_stream(),
        BlobSource::Stream(rx) => received_chunks(rx, len).right_stream(),
    }
}

/// Reads `len` bytes of `file` from `start`, a chunk at a time on the blocking pool.
fn file_chunks(
    file: Arc<File>,
    start: u64,
    len: u64,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    futures::stream::try_unfold((file, start, len), |(file, pos, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let n = left.min(CHUNK);
        let f = file.clone();
        let chunk = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
            let mut buf = vec![0; n as usize];
            f.read_exact_at(&mut buf, pos)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))??;
        Ok(Some((chunk, (file, pos + n, left - n))))
    })
}

/// Passes on what arrives from elsewhere (an object store's ranged GET), checking it adds up to
/// `len`: a feeder that stopped early without saying why must not read as a shorter blob.
fn received_chunks(
    rx: Receiver<io::Result<Bytes>>,
    len: u64,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    futures::stream::try_unfold((rx, 0u64), move |(mut rx, got)| async move {
        match rx.recv().await {
            Some(chunk) => {
                let chunk = chunk?;
                let got = got + chunk.len() as u64;
                if got > len {
                    return Err(StoreError::Io(io::Error::other(format!(
                        "the stream sent more than the {len} bytes asked for"
                    ))));
                }
                Ok(Some((chunk, (rx, got))))
            }
            None if got == len => Ok(None),
            None => Err(StoreError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the stream ended after {got} of {len} bytes"),
            ))),
        }
    })
}

#[cfg(test)]
mod tests;
