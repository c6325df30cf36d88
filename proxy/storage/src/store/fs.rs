//! The local filesystem backend: `blobs/<alg>/<2 hex>/<hex>` for committed content, `ingest/<ref>` for
//! writes in progress.
//!
//! Publishing is write → fsync → rename → fsync(dir): after a crash a file under `blobs/` is either absent
//! or complete and verified. All file I/O runs on tokio's blocking pool, never on the runtime's workers.
//! Directories are created 0700 and ingests 0600 (`data_dir.rs`); a rename keeps the mode, so blobs
//! are 0600 too.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::hashing::HashQueue;
use super::pace::Pace;
use super::roles::{
    Blob, BlobSource, BlobWriter, IngestInfo, IngestRef, Ingester, Provider, Rehashed, StoreError,
    StoredCopy, Sweeper, Verifier,
};
use crate::data_dir;
use wharf_model::digest::{Algorithm, Digest, Hasher};
use wharf_model::range::ByteRange;

/// Writes reach the disk in pieces of this size: large enough that a write syscall and a hash call are
/// cheap per byte, small enough to bound memory per upload.
const WRITE_BUF: usize = 1 << 20;

/// Small content (manifests) up to this size is kept in memory once read: it is immutable, so the
/// copy can never be stale, and warm manifest pulls then read no file at all.
const SMALL_MAX: u64 = 256 * 1024;
/// Memory bound for that cache; when full it starts over (cheap, and hot manifests return at once).
const SMALL_CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct SmallCache {
    entries: dashmap::DashMap<Digest, Bytes>,
    bytes: std::sync::atomic::AtomicUsize,
    /// Counts quarantines: a read that overlapped one does not keep what it read, which may be the
    /// damaged copy that was just moved away.
    quarantines: std::sync::atomic::AtomicU64,
}

impl SmallCache {
    fn get(&self, d: &Digest) -> Option<Bytes> {
        self.entries.get(d).map(|b| b.clone())
    }

    /// The quarantine count, read before a read whose bytes `put` may keep.
    fn epoch(&self) -> u64 {
        self.quarantines.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps `b`, read since `epoch`, unless a quarantine happened meanwhile. Checked again after the
    /// insert: a quarantine that forgot `d` between the check and the insert is seen then.
    fn put(&self, d: &Digest, b: &Bytes, epoch: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if b.len() as u64 > SMALL_MAX || self.epoch() != epoch {
            return;
        }
        if self.bytes.fetch_add(b.len(), Relaxed) + b.len() > SMALL_CACHE_BYTES {
            self.entries.clear();
            self.bytes.store(b.len(), Relaxed);
        }
        self.entries.insert(d.clone(), b.clone());
        if self.epoch() != epoch {
            self.entries.remove(d);
        }
    }

    /// After `d` was moved away: no read in flight keeps it, and what was kept is forgotten.
    fn quarantined(&self, d: &Digest) {
        self.quarantines
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entries.remove(d);
    }
}

/// Ingests that a writer of this store has open, with how many: cleanup must leave them alone
/// whatever their age (an upload that takes an hour, a fill from a slow upstream).
#[derive(Default)]
struct Holds(std::sync::Mutex<HashMap<String, usize>>);

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(self: &Arc<Self>, name: &str) -> Hold {
        *self.lock().entry(name.to_owned()).or_default() += 1;
        Hold {
            holds: self.clone(),
            name: name.to_owned(),
        }
    }
}

/// One writer's claim on an ingest, released when the writer goes.
struct Hold {
    holds: Arc<Holds>,
    name: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut m = self.holds.lock();
        if let Some(n) = m.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.name);
            }
        }
    }
}

#[derive(Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
    small: Arc<SmallCache>,
    holds: Arc<Holds>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))?
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        data_dir::create(&root)?;
        data_dir::create_dir_all(&root.join("blobs"))?;
        data_dir::create_dir_all(&root.join("ingest"))?;
        Ok(FsStore {
            root: Arc::new(root),
            small: Arc::default(),
            holds: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        // Safe: a Digest's parts are validated to an algorithm name and fixed-length lowercase hex.
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    /// Where an ingest's bytes are (an object store uploads a verified ingest from here).
    pub(super) fn ingest_path(&self, r: &IngestRef) -> PathBuf {
        self.root.join("ingest").join(r.as_str())
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves a complete, verified, fsynced ingest file to its content address.
fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    let dir = dest.parent().expect("blob paths have a parent");
    if !dir.exists() {
        data_dir::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    if dest.exists() {
        // Content-addressed: what is there already is these very bytes.
        fs::remove_file(tmp)?;
        return Ok(());
    }
    fs::rename(tmp, dest)?;
    sync_dir(dir)
}

/// Reopens an ingest a released writer had open. Never creates it: an ingest that vanished meanwhile
/// must fail the write, not restart silently from nothing.
fn reopen(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<(Hasher, u64)> {
    let mut f = File::open(path)?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; WRITE_BUF];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok((h, n));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

#[async_trait]
impl Provider for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        blocking(move || Ok(not_found_as_none(fs::metadata(path))?.map(|m| m.len()))).await
    }

    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Blob, StoreError> {
        let path = self.blob_path(digest);
        let d = digest.clone();
        let (file, size) = blocking(move || {
            let f = not_found_as_none(File::open(path))?.ok_or(StoreError::NotFound(d))?;
            let size = f.metadata()?.len();
            Ok((f, size))
        })
        .await?;
        let range = match range {
            Some(r) if r.end < size => r,
            Some(r) => {
                return Err(StoreError::InvalidArgument(format!(
                    "range {}-{} outside content of {size} bytes",
                    r.start, r.end
                )))
            }
            // An empty blob has no byte range; readers see `len() == 0` via `size`.
            None => ByteRange {
                start: 0,
                end: size.saturating_sub(1),
            },
        };
        Ok(Blob {
            size,
            range,
            source: BlobSource::File(Arc::new(file)),
        })
    }

    async fn read_all(&self, digest: &Digest, limit: u64) -> Result<Bytes, StoreError> {
        if let Some(b) = self.small.get(digest).filter(|b| b.len() as u64 <= limit) {
            return Ok(b);
        }
        let epoch = self.small.epoch();
        let path = self.blob_path(digest);
        let d = digest.clone();
        let bytes = blocking(move || {
            let mut f =
                not_found_as_none(File::open(path))?.ok_or(StoreError::NotFound(d.clone()))?;
            let size = f.metadata()?.len();
            if size > limit {
                return Err(StoreError::TooLarge {
                    digest: d,
                    size,
                    limit,
                });
            }
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await?;
        self.small.put(digest, &bytes, epoch);
        Ok(bytes)
    }
}

#[async_trait]
impl Ingester for FsStore {
    async fn writer(&self, ingest: &IngestRef) -> Result<Box<dyn BlobWriter>, StoreError> {
        let path = self.ingest_path(ingest);
        let store = self.clone();
        // Held before the file is opened: cleanup never removes an ingest between the two.
        let hold = self.holds.hold(ingest.as_str());
        let w = blocking(move || {
            let file = data_dir::file_options()
                .create(true)
                .append(true)
                .open(&path)?;
            // Resuming: rebuild the running digest from what is already there. The common case (a fresh
            // ingest) reads nothing.
            let (hasher, offset) = if file.metadata()?.len() > 0 {
                hash_file(&path, Algorithm::Sha256)?
            } else {
                (Algorithm::Sha256.hasher(), 0)
            };
            Ok(FsWriter {
                store,
                path,
                _hold: hold,
                file: Some(file),
                released: false,
                hash: HashQueue::new(hasher),
                inflight: None,
                pending: Vec::new(),
                pending_len: 0,
                offset,
                inflight_end: offset,
                settled: offset,
            })
        })
        .await?;
        Ok(Box::new(w))
    }

    async fn abort(&self, ingest: &IngestRef) -> Result<(), StoreError> {
        let path = self.ingest_path(ingest);
        blocking(move || {
            not_found_as_none(fs::remove_file(path))?;
            Ok(())
        })
        .await
    }

    async fn abort_unheld(&self, ingest: &IngestRef) -> Result<bool, StoreError> {
        let path = self.ingest_path(ingest);
        let holds = self.holds.clone();
        let name = ingest.as_str().to_owned();
        blocking(move || {
            // Checked and removed under the lock that `writer` takes to hold an ingest.
            let held = holds.lock();
            if held.contains_key(&name) {
                return Ok(false);
            }
            let removed = not_found_as_none(fs::remove_file(path))?.is_some();
            drop(held);
            Ok(removed)
        })
        .await
    }

    async fn ingests(&self) -> Result<Vec<IngestInfo>, StoreError> {
        let dir = self.root.join("ingest");
        let holds = self.holds.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                // Anything that is not a valid ref was not written by us; leave it for an operator.
                let Ok(ingest) = IngestRef::new(name) else {
                    continue;
                };
                // Gone since the listing (committed, aborted): nothing to report.
                let Some(m) = not_found_as_none(entry.metadata())? else {
                    continue;
                };
                out.push(IngestInfo {
                    ingest,
                    size: m.len(),
                    modified: m.modified().map_or(0, unix_secs),
                    held: false,
                });
            }
            let held = holds.lock();
            for i in &mut out {
                i.held = held.contains_key(i.ingest.as_str());
            }
            Ok(out)
        })
        .await
    }

    async fn open_ingest(&self, ingest: &IngestRef) -> Result<BlobSource, StoreError> {
        let path = self.ingest_path(ingest);
        blocking(move || Ok(BlobSource::File(Arc::new(File::open(path)?)))).await
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let dest = self.blob_path(digest);
        let name = format!("put-{}", uuid::Uuid::new_v4().simple());
        let tmp = self.root.join("ingest").join(&name);
        let hold = self.holds.hold(&name);
        blocking(move || {
            let _hold = hold;
            if dest.exists() {
                return Ok(());
            }
            let res = (|| {
                let mut f = data_dir::file_options()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                publish(&tmp, &dest)
            })();
            if res.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            Ok(res?)
        })
        .await
    }
}

#[async_trait]
impl Sweeper for FsStore {
    async fn contents(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in not_found_as_none(fs::read_dir(&root))?
                .into_iter()
                .flatten()
            {
                let alg = alg?;
                let Some(alg_name) = alg.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                for shard in fs::read_dir(alg.path())? {
                    for f in fs::read_dir(shard?.path())? {
                        let f = f?;
                        let name = f.file_name();
                        // Only names that are digests: a stray file is not content.
                        let Some(d) = name
                            .to_str()
                            .and_then(|h| format!("{alg_name}:{h}").parse::<Digest>().ok())
                        else {
                            continue;
                        };
                        out.push((d, f.metadata()?.len()));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn remove(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(digest);
        // Forgotten first, so a read after this returns cannot answer from memory.
        self.small.entries.remove(digest);
        blocking(move || {
            let size = match not_found_as_none(fs::metadata(&path))? {
                Some(m) => m.len(),
                None => return Ok(0),
            };
            not_found_as_none(fs::remove_file(&path))?;
            Ok(size)
        })
        .await
    }
}

/// The copy an open file is.
fn copy_of(m: &fs::Metadata) -> StoredCopy {
    use std::os::unix::fs::MetadataExt;
    StoredCopy(m.dev(), m.ino())
}

#[async_trait]
impl Verifier for FsStore {
    async fn rehash(&self, digest: &Digest, pace: &Pace) -> Result<Option<Rehashed>, StoreError> {
        let path = self.blob_path(digest);
        let opened = blocking(move || {
            let Some(f) = not_found_as_none(File::open(path))? else {
                return Ok(None);
            };
            let m = f.metadata()?;
            Ok(Some((f, copy_of(&m))))
        })
        .await?;
        let Some((file, copy)) = opened else {
            return Ok(None);
        };
        // One chunk per blocking job, the pace's sleeps between them on the runtime: a stop never
        // waits for a whole large blob read at a slow pace.
        let file = Arc::new(file);
        let mut state = (digest.algorithm().hasher(), vec![0u8; pace.chunk()]);
        let mut offset = 0u64;
        loop {
            let f = file.clone();
            let (hasher, buf) = state;
            let (hasher, buf, n) = blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut hasher = hasher;
                let mut buf = buf;
                let n = loop {
                    match f.read_at(&mut buf, offset) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                };
                hasher.update(&buf[..n]);
                Ok((hasher, buf, n))
            })
            .await?;
            state = (hasher, buf);
            if n == 0 {
                break;
            }
            offset += n as u64;
            pace.took(n as u64).await;
        }
        Ok(Some(Rehashed {
            actual: state.0.finish(),
            size: offset,
            copy,
        }))
    }

    async fn stored_copy(&self, digest: &Digest) -> Result<Option<StoredCopy>, StoreError> {
        let path = self.blob_path(digest);
        blocking(move || Ok(not_found_as_none(fs::metadata(path))?.map(|m| copy_of(&m)))).await
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        copy: StoredCopy,
    ) -> Result<Option<PathBuf>, StoreError> {
        let path = self.blob_path(digest);
        let dir = self.root.join("quarantine");
        let root = self.root.clone();
        let name = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
        let moved = blocking(move || {
            match not_found_as_none(fs::metadata(&path))? {
                Some(m) if copy_of(&m) == copy => {}
                // Removed, or removed and published again (a good copy): not ours to move.
                _ => return Ok(None),
            }
            if !dir.exists() {
                fs::create_dir_all(&dir)?;
                sync_dir(&root)?;
            }
            let mut dest = dir.join(&name);
            let mut n = 1;
            while dest.exists() {
                dest = dir.join(format!("{name}.{n}"));
                n += 1;
            }
            // A rename, never a rewrite or a truncation: a download that has the file open (or
            // mapped, `body.rs`) keeps reading the same inode, and nothing is ever half-moved.
            fs::rename(&path, &dest)?;
            sync_dir(&dir)?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            Ok(Some(dest))
        })
        .await?;
        if moved.is_some() {
            self.small.quarantined(digest);
        }
        Ok(moved)
    }
}

pub struct FsWriter {
    store: FsStore,
    path: PathBuf,
    _hold: Hold,
    /// The file; taken by the write job while a flush runs, and closed while released.
    file: Option<File>,
    /// `release` closed the file; the next write or commit reopens it.
    released: bool,
    /// The running digest, fed each batch as its write starts.
    hash: Arc<HashQueue>,
    /// At most one write in flight on the blocking pool; bytes keep arriving meanwhile, so receiving
    /// never waits on the disk.
    inflight: Option<JoinHandle<io::Result<File>>>,
    /// Received chunks not yet handed to a flush, kept as they came: no copy into a larger buffer.
    pending: Vec<Bytes>,
    pending_len: usize,
    offset: u64,
    /// What the file holds once the flush in flight is done, and what it holds for sure.
    inflight_end: u64,
    settled: u64,
}

/// Bytes the running hash may lag behind the writes.
const HASH_BACKLOG: usize = 4 * WRITE_BUF;

/// Chunks per flush at most: one `writev` takes up to IOV_MAX (1024) slices.
const MAX_CHUNKS: usize = 1024;

fn lost() -> StoreError {
    StoreError::Io(io::Error::other("writer lost after a failed write"))
}

fn write_all_vectored(f: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(io::Error::other(e))
}

impl FsWriter {
    /// The open file, or `None` if `release` closed it (the blocking job reopens it).
    fn take_file(&mut self) -> Result<Option<File>, StoreError> {
        match self.file.take() {
            Some(f) => Ok(Some(f)),
            None if self.released => {
                self.released = false;
                Ok(None)
            }
            None => Err(lost()),
        }
    }

    /// Waits for the write in flight, if any.
    async fn settle(&mut self) -> Result<(), StoreError> {
        if let Some(write) = self.inflight.take() {
            let file = write.await.map_err(join_err)??;
            self.file = Some(file);
            self.settled = self.inflight_end;
        }
        Ok(())
    }

    /// Starts writing and hashing what is pending, after the previous flush finished.
    async fn start_flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let chunks: Arc<Vec<Bytes>> = Arc::new(std::mem::take(&mut self.pending));
        self.pending_len = 0;
        let file = self.take_file()?;
        let path = self.path.clone();
        self.inflight_end = self.offset;
        self.hash.push(chunks.clone());
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => reopen(&path)?,
            };
            write_all_vectored(&mut file, &chunks)?;
            Ok(file)
        }));
        // Bound how far the hash may fall behind, and the memory its queue holds.
        self.hash.wait_below(HASH_BACKLOG).await;
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for FsWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    fn written(&self) -> u64 {
        self.settled
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        self.start_flush().await?;
        self.settle().await
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        self.flush().await?;
        if let Some(f) = self.file.take() {
            self.released = true;
            // close(2) on a local file does not wait for the disk; it is not worth a blocking job.
            drop(f);
        }
        Ok(())
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.offset += chunk.len() as u64;
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= WRITE_BUF || self.pending.len() >= MAX_CHUNKS {
            self.start_flush().await?;
        }
        Ok(())
    }

    async fn sha256(&mut self) -> Result<Digest, StoreError> {
        self.flush().await?;
        Ok(self.hash.current().await.finish())
    }

    async fn commit(
        mut self: Box<Self>,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.flush().await?;
        let file = self.take_file()?;
        let hasher = self.hash.current().await;
        let path = self.path.clone();
        let dest = self.store.blob_path(expected);
        let expected = expected.clone();
        let offset = self.offset;
        blocking(move || {
            let file = match file {
                Some(f) => f,
                None => reopen(&path)?,
            };
            file.sync_all()?;
            drop(file);
            let actual = match expected.algorithm() {
                Algorithm::Sha256 => hasher.finish(),
                // Uploads hash sha256 as bytes arrive (the digest is only named at the end); the rare
                // sha512 upload is hashed again here.
                other => hash_file(&path, other)?.0.finish(),
            };
            let verdict = if actual != expected {
                Err(StoreError::DigestMismatch { expected, actual })
            } else if let Some(size) = size.filter(|s| *s != offset) {
                Err(StoreError::SizeMismatch {
                    expected: size,
                    actual: offset,
                })
            } else {
                Ok(())
            };
            if let Err(e) = verdict {
                // Wrong content is dropped whole: a retry starts from nothing, and nothing is published.
                not_found_as_none(fs::remove_file(&path))?;
                return Err(e);
            }
            publish(&path, &dest)?;
            Ok(offset)
        })
        .await
    }
}
