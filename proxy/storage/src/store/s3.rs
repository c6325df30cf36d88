//! The content store on an S3-compatible object store (Garage, MinIO, AWS S3), shared by every
//! replica: `{prefix}blobs/<alg>/<hex>` holds committed content, `{prefix}quarantine/<alg>/<hex>`
//! what the scrub set aside. Nothing mutable lives there: an object is only ever written under its
//! own digest, after its bytes verified, so two writers of one digest write the same bytes to the
//! same key and both are harmless (no `If-None-Match: *` needed, which Garage ignores anyway).
//!
//! A local [`FsStore`] under `local_dir` serves as
//! - the spool: uploads and fills are written to its ingests as today (hashed as they arrive,
//!   readable by a fill's followers while written), and `commit` uploads the verified file;
//! - the hot cache: its committed blobs, bounded by `cache_max_bytes`, least recently used out
//!   first (`cache.rs`), so a warm GET still leaves by `sendfile`. A blob is only ever there once
//!   it is in the object store.
//!
//! `commit` (and `put`) return once the object is in the object store: callers record metadata
//! after they return, so a crash leaves at worst an object nothing names (the collector removes
//! it), never a record without its bytes. An unreachable store is `Unavailable` (503, Retry-After),
//! with nothing published.

mod cache;
mod error;
mod read;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::{DashMap, DashSet};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, RetryConfig,
};
use tokio::sync::{mpsc, Semaphore};

use super::fs::{hash_file, FsStore};
use super::pace::Pace;
use super::roles::{
    Blob, BlobSource, BlobWriter, IngestInfo, IngestRef, Ingester, Provider, Rehashed, StoreError,
    StoredCopy, Sweeper, Verifier,
};
use cache::HotCache;
use error::{Failure, Origin};
use wharf_model::digest::{Algorithm, Digest};
use wharf_model::range::ByteRange;

/// Where the object store is and how to sign for it; `cache_max_bytes` bounds the local hot cache
/// (0: none, every read goes to the object store).
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http(s)://host:port`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Prepended to every key (a `/` is added if missing), so several deployments can share a
    /// bucket; empty for none.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub cache_max_bytes: u64,
}

/// Retries kept short (a few seconds in all): an unreachable store becomes a 503 quickly, not a
/// hang, and the client retries.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(4),
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole small request (HEAD, list page, bulk delete, copy, a manifest's PUT): a store that
/// accepts connections but does not answer is a 503 after this, not a hang.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A whole upload request (up to `upload::SINGLE_PUT_MAX`, or a part): a backstop only, as
/// `upload::Patience` cuts a stalled request sooner, sized by its length.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// What a client is for; each has its own time limit.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    Small,
    Upload,
    /// Streamed GETs: no limit on the whole request (a large blob to a slow client); a stalled
    /// body is cut by `read::IDLE` instead.
    Streaming,
}
/// Parts in flight across every upload of this store (8 MiB each, held in memory while sent).
const PARTS_IN_FLIGHT: usize = 16;
/// Sizes remembered for `stat` before the memory starts over (content is immutable: a size once
/// seen stays true until `remove`).
const SIZES_MAX: usize = 1 << 20;

#[derive(Clone)]
pub struct S3Store(Arc<Inner>);

struct Inner {
    /// HEAD, lists, deletes, copies, manifests.
    s3: AmazonS3,
    /// Blob uploads.
    uploads: AmazonS3,
    /// GETs.
    streaming: AmazonS3,
    origin: Origin,
    /// `endpoint (bucket b)`, for messages and `wharf status`.
    shown: String,
    /// Normalised: empty, or ending in `/`.
    prefix: String,
    local: FsStore,
    hot: HotCache,
    sizes: DashMap<Digest, u64>,
    /// Cold reads copying a blob into the hot cache now (one per digest).
    warming: DashSet<Digest>,
    parts: Semaphore,
    patience: upload::Patience,
}

fn invalid(what: &str) -> StoreError {
    StoreError::InvalidArgument(what.to_owned())
}

fn build(s: &S3Settings, purpose: Use) -> Result<AmazonS3, StoreError> {
    let client = ClientOptions::new()
        .with_allow_http(s.endpoint.starts_with("http://"))
        .with_connect_timeout(CONNECT_TIMEOUT);
    let client = match purpose {
        Use::Small => client.with_timeout(SMALL_REQUEST_TIMEOUT),
        Use::Upload => client.with_timeout(UPLOAD_TIMEOUT),
        Use::Streaming => client.with_timeout_disabled(),
    };
    AmazonS3Builder::new()
        .with_endpoint(&s.endpoint)
        .with_region(&s.region)
        .with_bucket_name(&s.bucket)
        .with_access_key_id(&s.access_key_id)
        .with_secret_access_key(&s.secret_access_key)
        .with_allow_http(s.endpoint.starts_with("http://"))
        // Path-style (`endpoint/bucket/key`): what Garage and MinIO answer without DNS set up.
        .with_virtual_hosted_style_request(false)
        .with_retry(retry())
        .with_client_options(client)
        .build()
        .map_err(|e| invalid(&format!("storage.s3: {e}")))
}

/// The clients of a configuration whose bucket answered.
struct Checked {
    s3: AmazonS3,
    uploads: AmazonS3,
    streaming: AmazonS3,
    origin: Origin,
    shown: String,
    prefix: String,
}

impl Checked {
    async fn new(settings: &S3Settings) -> Result<Checked, StoreError> {
        let s = &settings;
        if !(s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://")) {
            return Err(invalid(&format!(
                "storage.s3.endpoint {:?} must be an http:// or https:// URL",
                s.endpoint
            )));
        }
        if s.bucket.is_empty() {
            return Err(invalid(
                "storage.s3.bucket is empty: name the bucket to use",
            ));
        }
        let shown = format!("{} (bucket {})", s.endpoint.trim_end_matches('/'), s.bucket);
        let origin = Origin {
            endpoint: shown.clone(),
            bucket: s.bucket.clone(),
        };
        if s.access_key_id.is_empty() || s.secret_access_key.is_empty() {
            return Err(StoreError::Refused {
                endpoint: shown,
                detail: "no access key given: set storage.s3.access_key_id_env/_file and \
                         secret_access_key_env/_file"
                    .into(),
            });
        }
        let prefix = s.prefix.trim_matches('/');
        if !prefix.is_empty() {
            Key::parse(prefix).map_err(|e| {
                invalid(&format!(
                    "storage.s3.prefix {:?} is not a key prefix: {e}",
                    s.prefix
                ))
            })?;
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let s3 = build(s, Use::Small)?;
        let uploads = build(s, Use::Upload)?;
        let streaming = build(s, Use::Streaming)?;
        // One request: listing keys under a prefix that matches nothing answers an empty page if
        // the bucket exists and the key may read it, and otherwise says which of the two is wrong
        // (a HEAD would not: it has no body, so a missing bucket reads as a missing key).
        let mut none = s3.list(Some(&Key::from(format!("{prefix}wharf-probe-"))));
        if let Some(Err(e)) = none.next().await {
            return Err(origin.store_error(e, "list the bucket"));
        }
        drop(none);
        Ok(Checked {
            s3,
            uploads,
            streaming,
            origin,
            shown,
            prefix,
        })
    }
}

impl S3Store {
    /// Checks that the bucket is reachable with these keys, changing nothing anywhere: for `wharf
    /// check-config`.
    pub async fn probe(settings: &S3Settings) -> Result<(), StoreError> {
        Checked::new(settings).await.map(|_| ())
    }

    /// Checks the bucket is reachable with these keys (one request), then opens the local spool
    /// and hot cache under `local_dir` (an FsStore there).
    pub async fn open(settings: S3Settings, local_dir: &Path) -> Result<S3Store, StoreError> {
        S3Store::open_with(settings, local_dir, upload::Patience::default()).await
    }

    /// `open`, with uploads' time limits chosen (tests make a stall show in seconds).
    pub(crate) async fn open_with(
        settings: S3Settings,
        local_dir: &Path,
        patience: upload::Patience,
    ) -> Result<S3Store, StoreError> {
        let Checked {
            s3,
            uploads,
            streaming,
            origin,
            shown,
            prefix,
        } = Checked::new(&settings).await?;
        let s = &settings;
        let local = FsStore::open(local_dir)?;
        let store = S3Store(Arc::new(Inner {
            s3,
            uploads,
            streaming,
            origin,
            shown,
            prefix,
            local,
            hot: HotCache::new(s.cache_max_bytes),
            sizes: DashMap::new(),
            warming: DashSet::new(),
            parts: Semaphore::new(PARTS_IN_FLIGHT),
            patience,
        }));
        store.load_cache().await?;
        Ok(store)
    }

    /// `endpoint (bucket b)`: for `wharf status` and messages.
    pub fn endpoint(&self) -> &str {
        &self.0.shown
    }

    /// The local spool and hot cache.
    pub fn local(&self) -> &FsStore {
        &self.0.local
    }

    /// Bytes the hot cache holds now.
    pub fn cached_bytes(&self) -> u64 {
        self.0.hot.bytes()
    }

    /// The object key of committed content.
    pub fn blob_key(&self, d: &Digest) -> String {
        // Safe: a digest is an algorithm name and fixed-length lowercase hex.
        format!(
            "{}blobs/{}/{}",
            self.0.prefix,
            d.algorithm().as_str(),
            d.hex()
        )
    }

    /// Where the scrub moves damaged content.
    pub fn quarantine_key(&self, d: &Digest) -> String {
        format!(
            "{}quarantine/{}/{}",
            self.0.prefix,
            d.algorithm().as_str(),
            d.hex()
        )
    }

    fn key(&self, d: &Digest) -> Key {
        Key::from(self.blob_key(d))
    }

    /// What the local directory held from before: cached copies (put in line in no particular
    /// order), trimmed to the bound if it shrank.
    async fn load_cache(&self) -> Result<(), StoreError> {
        for (d, size) in self.0.local.contents().await? {
            let out = self.0.hot.admit(&d, size);
            self.drop_local(out).await;
        }
        Ok(())
    }

    /// Removes local copies the cache let go of. A file another reader has open stays readable
    /// to it (Unix), and a read that finds it gone goes to the object store.
    async fn drop_local(&self, victims: Vec<Digest>) {
        for d in victims {
            self.0.hot.forget(&d);
            if let Err(e) = self.0.local.remove(&d).await {
                tracing::warn!(digest = %d, error = %e, "could not drop a blob from the local cache");
            }
        }
    }

    /// `d` was published locally (`size` bytes): accounted, and room made.
    async fn cached(&self, d: &Digest, size: u64) {
        let out = self.0.hot.admit(d, size);
        self.drop_local(out).await;
    }

    fn remember(&self, d: &Digest, size: u64) {
        if self.0.sizes.len() >= SIZES_MAX {
            self.0.sizes.clear();
        }
        self.0.sizes.insert(d.clone(), size);
    }

    /// The object's size, asking the object store (HEAD).
    async fn head(&self, d: &Digest) -> Result<Option<ObjectMeta>, StoreError> {
        match self.0.s3.head(&self.key(d)).await {
            Ok(m) => Ok(Some(m)),
            Err(e) => match self.0.origin.classify(e) {
                Failure::NotFound => Ok(None),
                Failure::BadRange => Ok(None),
                Failure::Store(e) => Err(e),
            },
        }
    }

    /// Uploads a verified spool file as `d`, unless the object store has it already.
    async fn upload(&self, d: &Digest, path: &Path, len: u64) -> Result<(), StoreError> {
        if self.stat(d).await? == Some(len) {
            return Ok(()); // deduplicated: these very bytes are there
        }
        let p = path.to_owned();
        let file = tokio::task::spawn_blocking(move || std::fs::File::open(p))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        let up = upload::Uploader {
            store: &self.0.uploads,
            origin: &self.0.origin,
            parts: &self.0.parts,
            patience: self.0.patience,
        };
        up.upload(&self.key(d), Arc::new(file), len)
            .await
            .map_err(|e| e.into_store_error(&self.0.origin, &format!("upload {d}")))?;
        self.remember(d, len);
        Ok(())
    }

    /// A ranged GET of `d`, streamed.
    async fn get(
        &self,
        d: &Digest,
        range: Option<ByteRange>,
    ) -> Result<object_store::GetResult, StoreError> {
        let opts = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)),
            ..GetOptions::default()
        };
        match self.0.streaming.get_opts(&self.key(d), opts).await {
            Ok(g) => Ok(g),
            Err(e) => Err(match self.0.origin.classify(e) {
                Failure::NotFound => StoreError::NotFound(d.clone()),
                Failure::BadRange => invalid(&format!("the range asked of {d} lies outside it")),
                Failure::Store(e) => e,
            }),
        }
    }

    fn copy_of(m: &ObjectMeta) -> StoredCopy {
        use std::hash::{Hash, Hasher};
        // Content is never rewritten in place: a copy uploaded again has another modification
        // time (and, for a multipart upload, another ETag).
        let mut h = std::hash::DefaultHasher::new();
        m.e_tag.hash(&mut h);
        StoredCopy(m.last_modified.timestamp_micros() as u64, h.finish())
    }
}

/// Warms the hot cache with a cold read's bytes.
struct Warming {
    store: S3Store,
    digest: Digest,
    size: u64,
    ingest: IngestRef,
    writer: Box<dyn BlobWriter>,
}

#[async_trait]
impl read::Warm for Warming {
    fn writer(&mut self) -> &mut dyn BlobWriter {
        self.writer.as_mut()
    }

    async fn finish(self: Box<Self>, ok: bool) {
        let Warming {
            store,
            digest,
            size,
            ingest,
            writer,
        } = *self;
        if ok {
            // The local commit verifies the digest: bytes that do not match are never cached.
            match writer.commit(&digest, Some(size)).await {
                Ok(_) => store.cached(&digest, size).await,
                Err(e) => {
                    tracing::error!(%digest, error = %e, "the object store's copy does not verify; not cached (the scrub reports it)")
                }
            }
        } else {
            drop(writer);
            if let Err(e) = store.0.local.abort(&ingest).await {
                tracing::warn!(%digest, error = %e, "could not drop a partial cache copy");
            }
        }
        store.0.warming.remove(&digest);
    }
}

#[async_trait]
impl Provider for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if let Some(n) = self.0.sizes.get(digest) {
            return Ok(Some(*n));
        }
        if let Some(n) = self.0.local.stat(digest).await? {
            return Ok(Some(n));
        }
        let size = self.head(digest).await?.map(|m| m.size);
        if let Some(n) = size {
            self.remember(digest, n);
        }
        Ok(size)
    }

    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Blob, StoreError> {
        match self.0.local.open(digest, range).await {
            Ok(b) => {
                self.0.hot.touch(digest);
                return Ok(b);
            }
            Err(StoreError::NotFound(_)) => self.0.hot.forget(digest),
            Err(e) => return Err(e),
        }
        let got = self.get(digest, range).await?;
        let size = got.meta.size;
        self.remember(digest, size);
        let range = match range {
            Some(r) if r.end < size => r,
            Some(r) => {
                return Err(invalid(&format!(
                    "range {}-{} outside content of {size} bytes",
                    r.start, r.end
                )))
            }
            None => ByteRange {
                start: 0,
                end: size.saturating_sub(1),
            },
        };
        let len = if size == 0 { 0 } else { range.len() };
        let whole = len == size;
        let warm: Option<Box<dyn read::Warm>> = if whole
            && self.0.hot.fits(size)
            && self.0.warming.insert(digest.clone())
        {
            let ingest = IngestRef::new(format!("warm-{}", uuid::Uuid::new_v4().simple()))
                .expect("a valid ref");
            match self.0.local.writer(&ingest).await {
                Ok(writer) => Some(Box::new(Warming {
                    store: self.clone(),
                    digest: digest.clone(),
                    size,
                    ingest,
                    writer,
                })),
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cannot copy a blob into the local cache");
                    self.0.warming.remove(digest);
                    None
                }
            }
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(read::CHANNEL);
        let origin = self.0.origin.clone();
        tokio::spawn(read::feed(got.into_stream(), len, tx, warm, move |why| {
            origin.unavailable(why)
        }));
        Ok(Blob {
            size,
            range,
            source: BlobSource::Stream(rx),
        })
    }

    async fn read_all(&self, digest: &Digest, limit: u64) -> Result<Bytes, StoreError> {
        match self.0.local.read_all(digest, limit).await {
            Ok(b) => {
                self.0.hot.touch(digest);
                return Ok(b);
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let got = self.get(digest, None).await?;
        let size = got.meta.size;
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.0.origin.store_error(e, &format!("read {digest}")))?;
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.remember(digest, size);
        if self.0.hot.fits(size) {
            match self.0.local.put(digest, bytes.clone()).await {
                Ok(()) => self.cached(digest, size).await,
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "could not keep content in the local cache")
                }
            }
        }
        Ok(bytes)
    }
}

#[async_trait]
impl Ingester for S3Store {
    async fn writer(&self, ingest: &IngestRef) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(S3Writer {
            inner: self.0.local.writer(ingest).await?,
            store: self.clone(),
            ingest: ingest.clone(),
        }))
    }

    async fn abort(&self, ingest: &IngestRef) -> Result<(), StoreError> {
        self.0.local.abort(ingest).await
    }

    async fn abort_unheld(&self, ingest: &IngestRef) -> Result<bool, StoreError> {
        self.0.local.abort_unheld(ingest).await
    }

    async fn ingests(&self) -> Result<Vec<IngestInfo>, StoreError> {
        self.0.local.ingests().await
    }

    async fn open_ingest(&self, ingest: &IngestRef) -> Result<BlobSource, StoreError> {
        self.0.local.open_ingest(ingest).await
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let size = bytes.len() as u64;
        // Known to be there (remembered, or cached locally, which only ever follows the upload):
        // nothing to send. Otherwise one PUT, without asking first: same key, same bytes.
        let known = self.0.sizes.contains_key(digest) || self.0.local.stat(digest).await?.is_some();
        if !known {
            self.0
                .s3
                .put(&self.key(digest), bytes.clone().into())
                .await
                .map_err(|e| self.0.origin.store_error(e, &format!("upload {digest}")))?;
            self.remember(digest, size);
        }
        if self.0.hot.fits(size) {
            match self.0.local.put(digest, bytes).await {
                Ok(()) => self.cached(digest, size).await,
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "could not keep content in the local cache")
                }
            }
        }
        Ok(())
    }
}

/// Writes to the local spool; `commit` verifies, uploads, then publishes into the hot cache.
pub struct S3Writer {
    inner: Box<dyn BlobWriter>,
    store: S3Store,
    ingest: IngestRef,
}

#[async_trait]
impl BlobWriter for S3Writer {
    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.inner.write(chunk).await
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        self.inner.release().await
    }

    async fn sha256(&mut self) -> Result<Digest, StoreError> {
        self.inner.sha256().await
    }

    /// Verified first (the spool hashed the bytes as they came), then uploaded, and only then
    /// published into the local cache and returned: the caller records metadata after this, so
    /// nothing names a blob before its object exists.
    ///
    /// If the upload fails (`Unavailable`), nothing is published and the ingest is kept, as a
    /// dropped writer keeps it: a client retrying the upload session's PUT can still commit it
    /// without sending the bytes again, and an abandoned one is purged like any stale ingest.
    async fn commit(
        mut self: Box<Self>,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.inner.flush().await?;
        let len = self.inner.offset();
        let path = self.store.0.local.ingest_path(&self.ingest);
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => self.inner.sha256().await?,
            // Only sha256 is hashed as bytes arrive; the rare other one is read again.
            other => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || hash_file(&p, other))
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e)))??
                    .0
                    .finish()
            }
        };
        if &actual != expected || size.is_some_and(|s| s != len) {
            // The local commit says which and drops the ingest, as it would for the filesystem.
            return self.inner.commit(expected, size).await;
        }
        self.store.upload(expected, &path, len).await?;
        if self.store.0.hot.fits(len) {
            let n = self.inner.commit(expected, size).await?;
            self.store.cached(expected, n).await;
        } else {
            drop(self.inner);
            self.store.0.local.abort(&self.ingest).await?;
        }
        Ok(len)
    }
}

/// Parses `{prefix}blobs/<alg>/<hex>` back into a digest.
fn digest_of(key: &str, blobs: &str) -> Option<Digest> {
    let rest = key.strip_prefix(blobs)?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

#[async_trait]
impl Sweeper for S3Store {
    async fn contents(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let blobs = format!("{}blobs/", self.0.prefix);
        let listed: Vec<ObjectMeta> = self
            .0
            .s3
            .list(Some(&Key::from(blobs.as_str())))
            .try_collect()
            .await
            .map_err(|e| self.0.origin.store_error(e, "list the bucket"))?;
        // Only keys that are digests: anything else under the prefix is not content.
        Ok(listed
            .into_iter()
            .filter_map(|m| Some((digest_of(m.location.as_ref(), &blobs)?, m.size)))
            .collect())
    }

    async fn remove(&self, digest: &Digest) -> Result<u64, StoreError> {
        let size = self.head(digest).await?.map_or(0, |m| m.size);
        self.remove_many(std::slice::from_ref(digest)).await?;
        Ok(size)
    }

    async fn remove_many(&self, digests: &[Digest]) -> Result<(), StoreError> {
        // Forgotten before and after: a `stat` racing the delete must not keep the old answer.
        for d in digests {
            self.0.sizes.remove(d);
        }
        let keys: Vec<object_store::Result<Key>> =
            digests.iter().map(|d| Ok(self.key(d))).collect();
        // DeleteObjects, up to 1000 keys a request; a key that is not there is not an error.
        let mut deleted = self.0.s3.delete_stream(futures::stream::iter(keys).boxed());
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) => {}
                Err(e) => match self.0.origin.classify(e) {
                    Failure::NotFound | Failure::BadRange => {}
                    Failure::Store(e) => return Err(e),
                },
            }
        }
        drop(deleted);
        for d in digests {
            self.0.sizes.remove(d);
        }
        self.drop_local(digests.to_vec()).await;
        Ok(())
    }
}

/// The scrub reads the object store's copy, never the local cache: that copy is the content.
#[async_trait]
impl Verifier for S3Store {
    async fn rehash(&self, digest: &Digest, pace: &Pace) -> Result<Option<Rehashed>, StoreError> {
        let got = match self.get(digest, None).await {
            Ok(g) => g,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let copy = Self::copy_of(&got.meta);
        let mut body = got.into_stream();
        let mut hasher = digest.algorithm().hasher();
        let mut size = 0u64;
        while let Some(chunk) = tokio::time::timeout(read::IDLE, body.next())
            .await
            .map_err(|_| {
                self.0
                    .origin
                    .unavailable(format!("reading {digest} stalled"))
            })?
        {
            let chunk =
                chunk.map_err(|e| self.0.origin.store_error(e, &format!("read {digest}")))?;
            // Hashing a chunk (at most what the socket read) is short enough for the runtime.
            hasher.update(&chunk);
            size += chunk.len() as u64;
            pace.took(chunk.len() as u64).await;
        }
        Ok(Some(Rehashed {
            actual: hasher.finish(),
            size,
            copy,
        }))
    }

    async fn stored_copy(&self, digest: &Digest) -> Result<Option<StoredCopy>, StoreError> {
        Ok(self.head(digest).await?.as_ref().map(Self::copy_of))
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        copy: StoredCopy,
    ) -> Result<Option<PathBuf>, StoreError> {
        match self.head(digest).await? {
            Some(m) if Self::copy_of(&m) == copy => {}
            // Removed, or uploaded again since (a good copy): not ours to move.
            _ => return Ok(None),
        }
        // No rename in S3: a copy, then the delete. A crash between the two leaves the damaged
        // object in place, and the next scrub finds it again.
        let to = Key::from(self.quarantine_key(digest));
        self.0.s3.copy(&self.key(digest), &to).await.map_err(|e| {
            self.0
                .origin
                .store_error(e, &format!("quarantine {digest}"))
        })?;
        self.remove_many(std::slice::from_ref(digest)).await?;
        Ok(Some(PathBuf::from(format!(
            "s3://{}/{}",
            self.0.origin.bucket,
            self.quarantine_key(digest)
        ))))
    }
}

#[cfg(test)]
mod tests;
