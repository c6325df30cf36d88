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
