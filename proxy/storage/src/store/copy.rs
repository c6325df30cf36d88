//! Content from one store into another (`wharf storage copy`): streamed chunk by chunk, and
//! verified by the destination's commit like any upload, so damaged bytes are never published.

use futures::StreamExt;

use super::read::chunks;
use super::roles::{IngestRef, Ingester, Provider, StoreError};
use wharf_model::digest::Digest;

/// Copies `digest` (`size` bytes, as the source lists it) from `from` into `to` and returns its
/// size. Errors: `NotFound` if the source no longer holds it, `DigestMismatch` or `SizeMismatch` if
/// its bytes are not what its name says (nothing is published then).
pub async fn copy_blob<F, T>(
    from: &F,
    to: &T,
    digest: &Digest,
    size: u64,
) -> Result<u64, StoreError>
where
    F: Provider + ?Sized,
    T: Ingester + ?Sized,
{
    // One ingest per digest: a copy that was cut off leaves it behind, and the next one drops it
    // and starts the blob afresh. (Truncated: a sha512 name would be longer than an ingest's 128.)
    let hex = digest.hex();
    let ingest = IngestRef::new(format!("copy-{}", &hex[..hex.len().min(64)]))?;
    to.abort(&ingest).await?;
    let blob = from.open(digest, None).await?;
    let mut writer = to.writer(&ingest).await?;
    let written = async {
        let mut stream = std::pin::pin!(chunks(blob));
        while let Some(chunk) = stream.next().await {
            writer.write(chunk?).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    if let Err(e) = written {
        drop(writer);
        // Best effort: the destination's purge removes what is left of it anyway.
        let _ = to.abort(&ingest).await;
        return Err(e);
    }
    writer.commit(digest, Some(size)).await
}

#[cfg(test)]
mod tests;
