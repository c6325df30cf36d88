use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use wharf_model::digest::{Algorithm, Digest};

/// A store of either kind, with what its tests look at: its local directory (the filesystem
/// store's root; the S3 store's spool and cache) and, for S3, its Garage.
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub garage: Option<wharf_test_servers::Garage>,
    pub store: Arc<dyn ContentStore>,
    pub local: PathBuf,
}

/// How much the S3 store's tests let its hot cache hold.
pub(crate) const TEST_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Fixture {
    pub async fn fs() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().to_owned();
        Fixture {
            store: Arc::new(FsStore::open(&local).unwrap()),
            _dir: dir,
            garage: None,
            local,
        }
    }

    /// An S3 store on a fresh Garage, its local spool and cache in a temporary directory.
    pub async fn s3() -> Fixture {
        Fixture::s3_with_cache(TEST_CACHE_BYTES).await
    }

    pub async fn s3_with_cache(cache_max_bytes: u64) -> Fixture {
        let garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local");
        let store = S3Store::open(s3_settings(&garage, cache_max_bytes), &local)
            .await
            .unwrap();
        Fixture {
            store: Arc::new(store),
            _dir: dir,
            garage: Some(garage),
            local,
        }
    }

    /// Committed content, by listing the store (for S3: the bucket).
    pub async fn stored(&self) -> usize {
        self.store.contents().await.unwrap().len()
    }

    pub fn root(&self) -> &Path {
        &self.local
    }
}

pub(crate) fn s3_settings(g: &wharf_test_servers::Garage, cache_max_bytes: u64) -> S3Settings {
    S3Settings {
        endpoint: g.endpoint(),
        bucket: g.bucket().into(),
        region: g.region().into(),
        prefix: "wharf-test/".into(),
        access_key_id: g.access_key_id().into(),
        secret_access_key: g.secret_access_key().into(),
        cache_max_bytes,
    }
}

/// Each test below runs on the filesystem store (`fs::<name>`) and on the S3 store over a real
/// Garage (`s3::<name>`).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&super::Fixture::fs().await).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&super::Fixture::s3().await).await
            })*
        }
    };
}

on_both_stores!(
    commit_publishes_verified_content_once,
    wrong_digest_or_size_publishes_nothing,
    a_dropped_writer_resumes_with_its_digest,
    sha512_content_is_verified,
    put_verifies_and_is_idempotent,
    open_ranges_and_missing,
    a_released_writer_holds_no_descriptor_and_carries_on,
    cleanup_leaves_ingests_that_a_writer_holds,
    remove_many_removes_a_batch,
);

async fn write_all(s: &dyn ContentStore, r: &str, parts: &[&[u8]]) -> Box<dyn BlobWriter> {
    let mut w = s.writer(&IngestRef::new(r).unwrap()).await.unwrap();
    for p in parts {
        w.write(Bytes::copy_from_slice(p)).await.unwrap();
    }
    w
}

/// Reads an opened blob's bytes, from a file or a stream.
pub(crate) async fn read_blob(b: Blob) -> Vec<u8> {
    let len = if b.size == 0 { 0 } else { b.range.len() };
    match b.source {
        BlobSource::File(f) => {
            let start = b.range.start;
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, start).unwrap();
                buf
            })
            .await
            .unwrap()
        }
        BlobSource::Stream(mut rx) => {
            let mut out = Vec::new();
            while let Some(c) = rx.recv().await {
                out.extend_from_slice(&c.unwrap());
            }
            assert_eq!(out.len() as u64, len);
            out
        }
    }
}

async fn commit_publishes_verified_content_once(f: &Fixture) {
    let s = f.store.as_ref();
    let data = b"hello world".repeat(200_000);
    let d = Digest::sha256_of(&data);
    let w = write_all(s, "a", &[&data[..1000], &data[1000..]]).await;
    assert_eq!(w.offset(), data.len() as u64);
    assert_eq!(
        w.commit(&d, Some(data.len() as u64)).await.unwrap(),
        data.len() as u64
    );
    // The same bytes again, through another ingest: deduplicated.
    let w = write_all(s, "b", &[&data]).await;
    w.commit(&d, None).await.unwrap();
    assert_eq!(f.stored().await, 1);
    assert!(s.ingests().await.unwrap().is_empty());
    assert_eq!(s.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(&s.read_all(&d, u64::MAX).await.unwrap()[..], &data[..]);
}

async fn wrong_digest_or_size_publishes_nothing(f: &Fixture) {
    let s = f.store.as_ref();
    let wrong = Digest::sha256_of(b"something else");
    let w = write_all(s, "a", &[b"data"]).await;
    let err = w.commit(&wrong, None).await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let right = Digest::sha256_of(b"data");
    let w = write_all(s, "b", &[b"data"]).await;
    let err = w.commit(&right, Some(5)).await.unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert_eq!(f.stored().await, 0);
    assert!(
        s.ingests().await.unwrap().is_empty(),
        "failed ingests are dropped"
    );
    assert_eq!(s.stat(&wrong).await.unwrap(), None);
}

async fn a_dropped_writer_resumes_with_its_digest(f: &Fixture) {
    let s = f.store.as_ref();
    let mut w = write_all(s, "r", &[b"first half, "]).await;
    w.flush().await.unwrap();
    drop(w); // as after a restart: the running hash is gone, the bytes are not
    let mut w = s.writer(&IngestRef::new("r").unwrap()).await.unwrap();
    assert_eq!(w.offset(), 12);
    w.write(Bytes::from_static(b"second half")).await.unwrap();
    let d = Digest::sha256_of(b"first half, second half");
    w.commit(&d, None).await.unwrap();
    assert!(s.stat(&d).await.unwrap().is_some());
}

async fn sha512_content_is_verified(f: &Fixture) {
    let s = f.store.as_ref();
    let d = Digest::of(Algorithm::Sha512, b"x");
    let w = write_all(s, "a", &[b"x"]).await;
    w.commit(&d, None).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(1));
}

async fn put_verifies_and_is_idempotent(f: &Fixture) {
    let s = f.store.as_ref();
    let d = Digest::sha256_of(b"{}");
    s.put(&d, Bytes::from_static(b"{}")).await.unwrap();
    s.put(&d, Bytes::from_static(b"{}")).await.unwrap();
    assert!(s.put(&d, Bytes::from_static(b"[]")).await.is_err());
    assert_eq!(f.stored().await, 1);
    assert!(s.ingests().await.unwrap().is_empty());
    let err = s.read_all(&d, 1).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }));
}

async fn open_ranges_and_missing(f: &Fixture) {
    let s = f.store.as_ref();
    let d = Digest::sha256_of(b"0123456789");
    s.put(&d, Bytes::from_static(b"0123456789")).await.unwrap();
    let b = s
        .open(&d, Some(wharf_model::range::ByteRange { start: 2, end: 4 }))
        .await
        .unwrap();
    assert_eq!((b.size, b.range.start, b.range.end), (10, 2, 4));
    let missing = Digest::sha256_of(b"nope");
    assert!(matches!(
        s.open(&missing, None).await,
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn ingest_refs_cannot_name_paths() {
    for bad in ["", "../x", "a/b", ".", "a.b", &"x".repeat(129)] {
        assert!(IngestRef::new(bad).is_err(), "{bad:?}");
    }
    assert!(IngestRef::new("upload-3f2a_9").is_ok());
}

/// Descriptors of this process open on `path`.
fn fds_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

async fn a_released_writer_holds_no_descriptor_and_carries_on(f: &Fixture) {
    let s = f.store.as_ref();
    let path = f.root().join("ingest").join("idle");
    let mut w = write_all(s, "idle", &[b"first, "]).await;
    w.flush().await.unwrap();
    assert_eq!(fds_on(&path), 1);
    w.release().await.unwrap();
    assert_eq!(fds_on(&path), 0, "a released writer keeps its ingest open");
    assert_eq!(w.offset(), 7);
    w.write(Bytes::from_static(b"then more")).await.unwrap();
    w.release().await.unwrap();
    let d = Digest::sha256_of(b"first, then more");
    assert_eq!(w.commit(&d, Some(16)).await.unwrap(), 16);
    assert_eq!(&s.read_all(&d, 100).await.unwrap()[..], b"first, then more");
}

async fn cleanup_leaves_ingests_that_a_writer_holds(f: &Fixture) {
    let s = f.store.as_ref();
    let fill = IngestRef::new("fill-1").unwrap();
    let mut w = write_all(s, "fill-1", &[b"partial"]).await;
    w.release().await.unwrap(); // even with its file closed, it is this writer's
    std::fs::write(f.root().join("ingest/mono-orphan"), b"left by a crash").unwrap();
    let listed = s.ingests().await.unwrap();
    let held: Vec<_> = listed
        .iter()
        .map(|i| (i.ingest.as_str(), i.held, i.size))
        .collect();
    assert!(held.contains(&("fill-1", true, 7)), "{held:?}");
    assert!(held.contains(&("mono-orphan", false, 15)), "{held:?}");
    assert!(!s.abort_unheld(&fill).await.unwrap());
    assert!(s
        .abort_unheld(&IngestRef::new("mono-orphan").unwrap())
        .await
        .unwrap());
    w.write(Bytes::from_static(b" and the rest")).await.unwrap();
    let d = Digest::sha256_of(b"partial and the rest");
    w.commit(&d, None).await.unwrap();
    assert!(s.ingests().await.unwrap().is_empty());
    // Once the writer is gone, cleanup may take what it left.
    let w = write_all(s, "fill-2", &[b"abandoned"]).await;
    let r = IngestRef::new("fill-2").unwrap();
    assert!(!s.abort_unheld(&r).await.unwrap());
    drop(w);
    assert!(s.abort_unheld(&r).await.unwrap());
}

/// Proves (issue 24): what the store writes only its user can read: the store's directories are
/// 0700, an ingest, a committed blob (the ingest renamed) and a `put` blob 0600, whatever the umask
/// lets through.
#[tokio::test]
async fn directories_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("data");
    let s = FsStore::open(&root).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for d in ["", "blobs", "ingest"] {
        assert_eq!(mode(&root.join(d)), 0o700, "{d:?}");
    }
    let data = b"private layer".to_vec();
    let d = Digest::sha256_of(&data);
    let w = write_all(&s, "fill-1", &[&data]).await;
    assert_eq!(mode(&root.join("ingest/fill-1")), 0o600);
    w.commit(&d, None).await.unwrap();
    let put = Bytes::from_static(b"{\"a manifest\":1}");
    let pd = Digest::sha256_of(&put);
    s.put(&pd, put).await.unwrap();
    for digest in [&d, &pd] {
        let file = root
            .join("blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        let shard = file.parent().unwrap();
        assert_eq!(mode(shard), 0o700);
        assert_eq!(mode(shard.parent().unwrap()), 0o700);
    }
}

async fn remove_many_removes_a_batch(f: &Fixture) {
    let s = f.store.as_ref();
    let mut all = Vec::new();
    for i in 0..5u8 {
        let data = vec![i; 1000 + i as usize];
        let d = Digest::sha256_of(&data);
        let w = write_all(s, &format!("b{i}"), &[&data]).await;
        w.commit(&d, None).await.unwrap();
        all.push(d);
    }
    let never = Digest::sha256_of(b"never stored");
    s.remove_many(&[all[0].clone(), all[2].clone(), never, all[4].clone()])
        .await
        .unwrap();
    let mut left: Vec<Digest> = s
        .contents()
        .await
        .unwrap()
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    left.sort_by_key(|d| d.to_string());
    let mut want = vec![all[1].clone(), all[3].clone()];
    want.sort_by_key(|d| d.to_string());
    assert_eq!(left, want);
    for d in [&all[0], &all[2], &all[4]] {
        assert_eq!(s.stat(d).await.unwrap(), None, "{d}");
        assert!(matches!(
            s.open(d, None).await,
            Err(StoreError::NotFound(_))
        ));
    }
    assert_eq!(
        read_blob(s.open(&all[1], None).await.unwrap()).await,
        vec![1u8; 1001]
    );
}
