//! The content store's roles (`Provider`, `Ingester`, `BlobWriter`, `Sweeper`, `Verifier`) and
//! the vocabulary they share: errors, ingest names, open blobs, stored copies.

use std::io;

use async_trait::async_trait;
use bytes::Bytes;

use super::pace::Pace;
use wharf_model::digest::Digest;
use wharf_model::range::ByteRange;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content {0} not found")]
    NotFound(Digest),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("content {digest} is {size} bytes, more than the {limit} allowed here")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),

    /// A shared backend (an object store) cannot be reached now, or failed transiently: worth a
    /// retry; nothing was published. The registry answers 503 with a `Retry-After`.
    #[error("the object store {endpoint} is unavailable: {detail}")]
    Unavailable { endpoint: String, detail: String },

    /// A shared backend refused us for a reason a retry will not fix (wrong credentials, no such
    /// bucket): `detail` says what to change.
    #[error("the object store {endpoint} refused: {detail}")]
    Refused { endpoint: String, detail: String },
}

impl StoreError {
    /// Worth a retry: the backend is out of reach for now.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Names an ingest (an in-progress write). Built by wharf, never from client input, from characters that
/// are safe in a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IngestRef(String);

impl IngestRef {
    pub fn new(s: impl Into<String>) -> Result<Self, StoreError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if ok {
            Ok(IngestRef(s))
        } else {
            Err(StoreError::InvalidArgument(format!(
                "ingest ref {s:?} must be 1-128 of [A-Za-z0-9_-]"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ingest as cleanup sees it.
#[derive(Debug, Clone)]
pub struct IngestInfo {
    pub ingest: IngestRef,
    pub size: u64,
    /// Unix seconds of the last write to it.
    pub modified: u64,
    /// A writer of this process has it open: a transfer is in progress (an upload request, a
    /// monolithic upload, a mirror fill, an upload session between its requests), whatever its age.
    pub held: bool,
}

/// Committed content opened for reading, possibly a range of it.
pub struct Blob {
    /// Size of the whole content.
    pub size: u64,
    /// The bytes this handle yields: the requested range, or all of it.
    pub range: ByteRange,
    pub source: BlobSource,
}

pub enum BlobSource {
    /// A local file: readers pull chunks from it off the runtime's threads.
    File(std::sync::Arc<std::fs::File>),
    /// Bytes arriving from elsewhere (an object store's ranged GET), exactly the blob's `range`, in
    /// order, fed by a task that stops when this is dropped. An error ends it: the reader must not
    /// take a short stream for the whole range.
    Stream(tokio::sync::mpsc::Receiver<io::Result<Bytes>>),
}

/// Reads committed content. Cheap to share; never sees partial writes.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The size of committed content, or `None` if it is not here.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Opens committed content; `range` must lie within it (callers resolve `Range` against `stat` first).
    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Blob, StoreError>;

    /// Reads small content (manifests) whole, refusing anything larger than `limit`.
    async fn read_all(&self, digest: &Digest, limit: u64) -> Result<Bytes, StoreError>;
}

/// Writes new content.
#[async_trait]
pub trait Ingester: Send + Sync + 'static {
    /// Opens the ingest named `ingest`, creating it or resuming what it already holds (after a restart the
    /// writer re-reads what was written to rebuild its running digest).
    async fn writer(&self, ingest: &IngestRef) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// Drops an ingest and what it holds, whoever holds it: for its owner. Dropping one that does not
    /// exist succeeds.
    async fn abort(&self, ingest: &IngestRef) -> Result<(), StoreError>;

    /// Drops an ingest unless a writer holds it (checked and removed at once, so a writer opening it
    /// meanwhile is never cut off): for cleanup, which owns nothing. Returns whether it was dropped.
    async fn abort_unheld(&self, ingest: &IngestRef) -> Result<bool, StoreError>;

    /// The ingests present (for cleanup).
    async fn ingests(&self) -> Result<Vec<IngestInfo>, StoreError>;

    /// Opens an ingest for reading while it is being written: only the single-flight fill uses this, to
    /// let late clients read what has arrived. It is never served as committed content.
    async fn open_ingest(&self, ingest: &IngestRef) -> Result<BlobSource, StoreError>;

    /// Stores small content already in memory (a manifest): verified against `digest`, atomic.
    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError>;
}

/// An in-progress write. Dropping it without `commit` leaves the ingest in place to be resumed or
/// aborted; nothing of it is visible to readers.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    /// Bytes accepted so far.
    fn offset(&self) -> u64;

    /// Bytes already handed to the backend (readable through `Ingester::open_ingest`), without
    /// waiting for writes in flight: lags `offset` by at most a buffer or two.
    fn written(&self) -> u64;

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Hands everything accepted so far to the backend, so it survives this process (not necessarily a
    /// power loss; `commit` makes content durable). Upload sessions flush after every request, so the
    /// `Range` they acknowledge is what a restarted wharf resumes from.
    async fn flush(&mut self) -> Result<(), StoreError>;

    /// Flushes, then lets go of the backend's resources (a file descriptor) until the next write: an
    /// upload session idle between its requests holds none. The writer stays usable as it was.
    async fn release(&mut self) -> Result<(), StoreError>;

    /// The sha256 digest of everything written so far (after flushing it). Lets a caller check content
    /// before paying for `commit`'s durability; `commit` verifies again, for free.
    async fn sha256(&mut self) -> Result<Digest, StoreError>;

    /// Verifies the content against `expected` (and `size`, if given), makes it durable and publishes it
    /// under its digest. On a mismatch the ingest is removed and nothing is published. Returns the size.
    async fn commit(
        self: Box<Self>,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, StoreError>;
}

/// Lists and removes committed content: for the collector only, which decides what is unreachable
/// (`gc.rs`) and removes the metadata first.
#[async_trait]
pub trait Sweeper: Send + Sync + 'static {
    /// Every committed digest, with its size.
    async fn contents(&self) -> Result<Vec<(Digest, u64)>, StoreError>;

    /// Removes committed content; removing content that is not there succeeds. Returns the bytes
    /// freed.
    async fn remove(&self, digest: &Digest) -> Result<u64, StoreError>;

    /// Removes a batch of committed content at once (an object store deletes up to 1000 objects
    /// per request); content that is not there is skipped. Returns nothing: a bulk delete does not
    /// say which objects it found, so the collector counts the sizes it listed.
    async fn remove_many(&self, digests: &[Digest]) -> Result<(), StoreError> {
        for d in digests {
            self.remove(d).await?;
        }
        Ok(())
    }
}

/// Which stored copy of some content was read (for files: device and inode). Content is never
/// rewritten in place, so a copy removed and published again is another copy: quarantine moves only
/// the copy found damaged, never one published since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCopy(pub u64, pub u64);

/// What re-reading committed content found.
#[derive(Debug, Clone)]
pub struct Rehashed {
    /// The digest its bytes have now: its own name, unless it rotted.
    pub actual: Digest,
    pub size: u64,
    pub copy: StoredCopy,
}

/// Re-reads committed content as stored and sets aside what no longer matches its name: for the
/// scrub only (`scrub.rs`), which decides and takes the locks. Reading bypasses every cache.
#[async_trait]
pub trait Verifier: Send + Sync + 'static {
    /// Hashes the stored bytes of `digest` with its algorithm, reading no faster than `pace`;
    /// `None` if it is not stored (removed since it was listed).
    async fn rehash(&self, digest: &Digest, pace: &Pace) -> Result<Option<Rehashed>, StoreError>;

    /// Which copy of `digest` is stored now, if any.
    async fn stored_copy(&self, digest: &Digest) -> Result<Option<StoredCopy>, StoreError>;

    /// Moves `copy` of `digest` out of the store (kept aside for an operator, never served, never
    /// listed, never counted as stored), so that it reads as absent: a mirror fetches it again, a
    /// push uploads it again. Returns where it went, or `None` if that copy is no longer there.
    async fn quarantine(
        &self,
        digest: &Digest,
        copy: StoredCopy,
    ) -> Result<Option<std::path::PathBuf>, StoreError>;
}

/// Every role, for code that needs to read and write (the registry), collect or scrub.
pub trait ContentStore: Provider + Ingester + Sweeper + Verifier {}
impl<T: Provider + Ingester + Sweeper + Verifier> ContentStore for T {}
