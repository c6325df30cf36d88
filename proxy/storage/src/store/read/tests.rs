use futures::TryStreamExt;

use super::*;
use crate::store::{FsStore, Ingester, Provider};
use wharf_model::digest::Digest;
use wharf_model::range::ByteRange;

async fn read(blob: Blob) -> Result<Vec<u8>, StoreError> {
    let parts: Vec<Bytes> = chunks(blob).try_collect().await?;
    assert!(parts.iter().all(|c| c.len() as u64 <= CHUNK));
    Ok(parts.concat())
}

#[tokio::test]
async fn a_file_reads_whole_or_by_range_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let bytes: Vec<u8> = (0..(2 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&bytes);
    store.put(&d, Bytes::from(bytes.clone())).await.unwrap();

    assert_eq!(
        read(store.open(&d, None).await.unwrap()).await.unwrap(),
        bytes
    );
    let r = ByteRange {
        start: CHUNK - 3,
        end: 2 * CHUNK + 5,
    };
    let part = read(store.open(&d, Some(r)).await.unwrap()).await.unwrap();
    assert_eq!(part, bytes[r.start as usize..=r.end as usize]);

    let empty = Digest::sha256_of(b"");
    store.put(&empty, Bytes::new()).await.unwrap();
    assert!(read(store.open(&empty, None).await.unwrap())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_file_shorter_than_its_blob_is_an_error_not_a_short_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"0123456789").unwrap();
    let blob = Blob {
        size: 20,
        range: ByteRange { start: 0, end: 19 },
        source: BlobSource::File(Arc::new(File::open(&path).unwrap())),
    };
    assert!(matches!(read(blob).await, Err(StoreError::Io(_))));
}

fn streamed(size: u64, parts: Vec<std::io::Result<Bytes>>) -> Blob {
    let (tx, rx) = tokio::sync::mpsc::channel(parts.len().max(1));
    for p in parts {
        tx.try_send(p).unwrap();
    }
    Blob {
        size,
        range: ByteRange {
            start: 0,
            end: size.saturating_sub(1),
        },
        source: BlobSource::Stream(rx),
    }
}

#[tokio::test]
async fn a_stream_passes_through_and_must_add_up() {
    let whole = streamed(
        7,
        vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
        ],
    );
    assert_eq!(read(whole).await.unwrap(), b"abcdefg");
    assert!(read(streamed(0, vec![])).await.unwrap().is_empty());

    // The feeder gave up without an error: not a 3-byte blob.
    let short = streamed(7, vec![Ok(Bytes::from_static(b"abc"))]);
    assert!(matches!(read(short).await, Err(StoreError::Io(_))));
    let failed = streamed(
        7,
        vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ],
    );
    assert!(matches!(read(failed).await, Err(StoreError::Io(_))));
    let long = streamed(2, vec![Ok(Bytes::from_static(b"abc"))]);
    assert!(matches!(read(long).await, Err(StoreError::Io(_))));
}
