use bytes::Bytes;

use super::*;
use crate::store::{BlobWriter, FsStore, Sweeper};

fn stores() -> (tempfile::TempDir, FsStore, FsStore) {
    let dir = tempfile::tempdir().unwrap();
    let a = FsStore::open(dir.path().join("a")).unwrap();
    let b = FsStore::open(dir.path().join("b")).unwrap();
    (dir, a, b)
}

fn content(n: usize) -> (Digest, Vec<u8>) {
    let bytes: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
    (Digest::sha256_of(&bytes), bytes)
}

#[tokio::test]
async fn a_blob_arrives_whole_and_verified_over_what_a_cut_copy_left() {
    let (_dir, a, b) = stores();
    let (d, bytes) = content(3 << 20);
    a.put(&d, Bytes::from(bytes.clone())).await.unwrap();
    // An earlier copy that stopped halfway left its ingest behind, holding other bytes.
    let ingest = IngestRef::new(format!("copy-{}", d.hex())).unwrap();
    let mut w: Box<dyn BlobWriter> = b.writer(&ingest).await.unwrap();
    w.write(Bytes::from_static(b"stale")).await.unwrap();
    w.flush().await.unwrap();
    drop(w);

    assert_eq!(
        copy_blob(&a, &b, &d, bytes.len() as u64).await.unwrap(),
        bytes.len() as u64
    );
    assert_eq!(b.read_all(&d, u64::MAX).await.unwrap(), bytes);
    assert!(b.ingests().await.unwrap().is_empty());
}

#[tokio::test]
async fn damaged_bytes_are_refused_and_nothing_is_published() {
    let (dir, a, b) = stores();
    let (d, bytes) = content(100_000);
    a.put(&d, Bytes::from(bytes.clone())).await.unwrap();
    // Rot at rest: same size, other bytes.
    let path = dir
        .path()
        .join("a/blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex());
    let mut rotten = bytes.clone();
    rotten[500] ^= 0xff;
    std::fs::write(&path, &rotten).unwrap();

    let e = copy_blob(&a, &b, &d, bytes.len() as u64).await.unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e:?}");
    assert_eq!(b.stat(&d).await.unwrap(), None);
    assert!(b.contents().await.unwrap().is_empty());
    assert!(b.ingests().await.unwrap().is_empty());

    let gone = Digest::sha256_of(b"never stored");
    let e = copy_blob(&a, &b, &gone, 12).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
}

/// Through an object store and out again: in as a spooled, verified upload, out as a ranged GET
/// streamed (no local cache, so nothing is read from a file).
#[tokio::test]
async fn a_blob_goes_through_an_object_store_and_back() {
    use crate::store::tests::s3_settings;
    use crate::store::{BlobSource, S3Store};
    let garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
        .await
        .unwrap();
    let (dir, a, b) = stores();
    let s3 = S3Store::open(s3_settings(&garage, 0), &dir.path().join("s3"))
        .await
        .unwrap();
    let (d, bytes) = content((5 << 20) + 17);
    let size = bytes.len() as u64;
    a.put(&d, Bytes::from(bytes.clone())).await.unwrap();

    assert_eq!(copy_blob(&a, &s3, &d, size).await.unwrap(), size);
    assert_eq!(s3.stat(&d).await.unwrap(), Some(size));
    let opened = s3.open(&d, None).await.unwrap();
    assert!(matches!(opened.source, BlobSource::Stream(_)));
    drop(opened);
    assert_eq!(copy_blob(&s3, &b, &d, size).await.unwrap(), size);
    assert_eq!(b.read_all(&d, u64::MAX).await.unwrap(), bytes);
}
