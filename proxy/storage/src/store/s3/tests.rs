//! The S3 store against a real Garage (single node on loopback, made by its own CLI): what only an
//! object store can get wrong. The roles' common tests run on it too (`store::tests::s3::*`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::store::tests::{read_blob, s3_settings, Fixture, TEST_CACHE_BYTES};
use crate::store::ContentStore;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}

async fn commit(s: &dyn ContentStore, ingest: &str, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let mut w = s.writer(&IngestRef::new(ingest).unwrap()).await.unwrap();
    for c in bytes.chunks(300_000) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    w.commit(&d, Some(bytes.len() as u64)).await.unwrap();
    d
}

/// Keys in the bucket under the test prefix, by asking a store that has no cache.
async fn bucket_keys(f: &Fixture) -> Vec<String> {
    let g = f.garage.as_ref().unwrap();
    let s3 = build(&s3_settings(g, 0), Use::Small).unwrap();
    let mut keys: Vec<String> = s3
        .list(Some(&Key::from("wharf-test")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Another replica on the same bucket: its own empty local directory.
async fn replica(f: &Fixture, cache_max_bytes: u64) -> (tempfile::TempDir, S3Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = S3Store::open(
        s3_settings(f.garage.as_ref().unwrap(), cache_max_bytes),
        dir.path(),
    )
    .await
    .unwrap();
    (dir, s)
}

#[tokio::test]
async fn nothing_reaches_the_bucket_before_commit_nor_after_a_mismatch() {
    let f = Fixture::s3().await;
    let s = f.store.as_ref();
    let bytes = data(3_000_000, 1);
    let d = Digest::sha256_of(&bytes);
    let mut w = s.writer(&IngestRef::new("up").unwrap()).await.unwrap();
    w.write(Bytes::from(bytes.clone())).await.unwrap();
    w.flush().await.unwrap();
    assert!(
        bucket_keys(&f).await.is_empty(),
        "written but not committed"
    );
    let wrong = Digest::sha256_of(b"other bytes");
    let err = w.commit(&wrong, None).await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(
        bucket_keys(&f).await.is_empty(),
        "a mismatch uploaded something"
    );
    assert!(s.ingests().await.unwrap().is_empty());
    commit(s, "up2", &bytes).await;
    assert_eq!(
        bucket_keys(&f).await,
        vec![format!("wharf-test/blobs/sha256/{}", d.hex())]
    );
}

#[tokio::test]
async fn a_ranged_read_streams_from_the_bucket() {
    let f = Fixture::s3_with_cache(0).await;
    let s = f.store.as_ref();
    let bytes = data(1_000_000, 2);
    let d = commit(s, "r", &bytes).await;
    assert_eq!(
        std::fs::read_dir(f.root().join("blobs")).unwrap().count(),
        0,
        "no cache: nothing kept locally"
    );
    let b = s
        .open(
            &d,
            Some(ByteRange {
                start: 1000,
                end: 654_321,
            }),
        )
        .await
        .unwrap();
    assert!(matches!(b.source, BlobSource::Stream(_)));
    assert_eq!(
        (b.size, b.range.start, b.range.end),
        (1_000_000, 1000, 654_321)
    );
    assert_eq!(read_blob(b).await, &bytes[1000..=654_321]);
    let whole = s.open(&d, None).await.unwrap();
    assert_eq!(read_blob(whole).await, bytes);
    let missing = Digest::sha256_of(b"nope");
    assert!(matches!(
        s.open(&missing, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.stat(&missing).await.unwrap(), None);
}

/// A blob larger than one PUT goes up in parallel parts, and reads back whole; a replica that never
/// saw it reads it from the bucket, then from its own cache.
#[tokio::test]
async fn a_cold_read_comes_from_the_bucket_then_from_the_cache() {
    let f = Fixture::s3().await;
    let bytes = data(
        (upload::SINGLE_PUT_MAX + 3 * upload::PART_SIZE + 12345) as usize,
        3,
    );
    let d = commit(f.store.as_ref(), "big", &bytes).await;
    let (_dir, cold) = replica(&f, TEST_CACHE_BYTES).await;
    assert_eq!(cold.local().stat(&d).await.unwrap(), None);
    assert_eq!(cold.stat(&d).await.unwrap(), Some(bytes.len() as u64));
    let b = cold.open(&d, None).await.unwrap();
    assert!(
        matches!(b.source, BlobSource::Stream(_)),
        "cold: from the bucket"
    );
    assert!(read_blob(b).await == bytes);
    // The copy is verified and published in the background, once the stream ended.
    let until = Instant::now() + Duration::from_secs(10);
    while cold.local().stat(&d).await.unwrap().is_none() {
        assert!(
            Instant::now() < until,
            "the cold read did not warm the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cold.cached_bytes(), bytes.len() as u64);
    let b = cold.open(&d, None).await.unwrap();
    assert!(
        matches!(b.source, BlobSource::File(_)),
        "warm: from the local file"
    );
    assert!(read_blob(b).await == bytes);
    // A range of a cold blob is not cached (only whole reads are).
    let (_dir2, other) = replica(&f, TEST_CACHE_BYTES).await;
    let part = other
        .open(&d, Some(ByteRange { start: 5, end: 9 }))
        .await
        .unwrap();
    assert_eq!(read_blob(part).await, &bytes[5..=9]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(other.local().stat(&d).await.unwrap(), None);
}

#[tokio::test]
async fn the_local_cache_stays_within_its_bound() {
    const MIB: usize = 1024 * 1024;
    let f = Fixture::s3_with_cache(3 * MIB as u64 + 100).await;
    let s = f.store.as_ref();
    let mut ds = Vec::new();
    for i in 0..4u8 {
        ds.push(commit(s, &format!("c{i}"), &data(MIB, 10 + i)).await);
        // The first blob is used again before the third: it stays, the second goes.
        if i == 1 {
            read_blob(s.open(&ds[0], None).await.unwrap()).await;
        }
    }
    let local: Vec<(Digest, u64)> = FsStore::open(f.root()).unwrap().contents().await.unwrap();
    let total: u64 = local.iter().map(|(_, n)| n).sum();
    assert!(total <= 3 * MIB as u64 + 100, "{total} bytes cached");
    let held: Vec<&Digest> = local.iter().map(|(d, _)| d).collect();
    assert!(held.contains(&&ds[0]) && held.contains(&&ds[2]) && held.contains(&&ds[3]));
    assert!(!held.contains(&&ds[1]), "the least recently used stayed");
    // Evicted from the cache is not gone: it is read from the bucket.
    assert_eq!(
        read_blob(s.open(&ds[1], None).await.unwrap()).await,
        data(MIB, 11)
    );
    // A blob larger than the whole cache is stored, never cached.
    let big = commit(s, "big", &data(4 * MIB, 20)).await;
    assert_eq!(
        FsStore::open(f.root()).unwrap().stat(&big).await.unwrap(),
        None
    );
    assert_eq!(s.stat(&big).await.unwrap(), Some(4 * MIB as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_unavailable_and_a_retry_commits() {
    let mut f = Fixture::s3().await;
    let bytes = data(2_000_000, 4);
    let d = Digest::sha256_of(&bytes);
    let stored = commit(f.store.as_ref(), "before", &data(10_000, 5)).await;
    let (_dir, cold) = replica(&f, TEST_CACHE_BYTES).await;
    let ingest = IngestRef::new("session-1").unwrap();
    let mut w = f.store.writer(&ingest).await.unwrap();
    w.write(Bytes::from(bytes.clone())).await.unwrap();
    w.release().await.unwrap();
    let garage = f.garage.as_mut().unwrap();
    tokio::task::block_in_place(|| garage.stop());
    let started = Instant::now();
    let err = w.commit(&d, None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains(&garage.endpoint()), "{err}");
    // Reads of what is not cached fail the same way, quickly; what is cached is still served.
    let err = cold.open(&stored, None).await.map(|_| ()).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(f.store.open(&stored, None).await.is_ok());
    tokio::task::block_in_place(|| f.garage.as_mut().unwrap().start_again());
    assert_eq!(
        f.store.stat(&d).await.unwrap(),
        None,
        "nothing was published"
    );
    // The ingest was kept: the retried commit sends the bytes again, without the client.
    let w = f.store.writer(&ingest).await.unwrap();
    assert_eq!(w.offset(), bytes.len() as u64);
    w.commit(&d, None).await.unwrap();
    assert!(read_blob(cold.open(&d, None).await.unwrap()).await == bytes);
}

async fn refusal(settings: S3Settings) -> StoreError {
    let dir = tempfile::tempdir().unwrap();
    match S3Store::open(settings, dir.path()).await {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wrong_keys_a_missing_bucket_or_no_store_refuse_to_open() {
    let f = Fixture::s3().await;
    let g = f.garage.as_ref().unwrap();
    let mut wrong_secret = s3_settings(g, 0);
    wrong_secret.secret_access_key = "0".repeat(64);
    let err = refusal(wrong_secret).await;
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "the access key was refused: check storage.s3.access_key_id_env/_file and \
             secret_access_key_env/_file"
        ),
        "{err}"
    );
    let mut unknown_key = s3_settings(g, 0);
    unknown_key.access_key_id = "GK000000000000000000000000".into();
    let err = refusal(unknown_key).await;
    assert!(
        err.to_string().contains("the access key was refused"),
        "{err}"
    );
    let mut no_bucket = s3_settings(g, 0);
    no_bucket.bucket = "no-such-bucket".into();
    let err = refusal(no_bucket).await;
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "bucket no-such-bucket does not exist: create it (garage bucket create no-such-bucket) \
             or fix storage.s3.bucket"
        ),
        "{err}"
    );
    let mut nobody = s3_settings(g, 0);
    let port = wharf_test_servers::free_port();
    nobody.endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = refusal(nobody).await;
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // A bucket made since is accepted.
    g.create_bucket("made-later");
    let mut later = s3_settings(g, 0);
    later.bucket = "made-later".into();
    let dir = tempfile::tempdir().unwrap();
    S3Store::open(later, dir.path()).await.unwrap();
}

#[tokio::test]
async fn remove_many_deletes_in_bulk_and_forgets_local_copies() {
    let f = Fixture::s3().await;
    let s = f.store.as_ref();
    let mut ds = Vec::new();
    for i in 0..30u8 {
        ds.push(commit(s, &format!("m{i}"), &data(1000, i)).await);
    }
    s.remove_many(&ds[..25]).await.unwrap();
    assert_eq!(bucket_keys(&f).await.len(), 5);
    for d in &ds[..25] {
        assert_eq!(s.stat(d).await.unwrap(), None);
        assert!(matches!(
            s.open(d, None).await,
            Err(StoreError::NotFound(_))
        ));
    }
    let local = FsStore::open(f.root()).unwrap().contents().await.unwrap();
    assert_eq!(local.len(), 5, "local copies of removed blobs stayed");
}

#[tokio::test]
async fn the_scrub_rehashes_the_bucket_copy_and_quarantine_moves_it_aside() {
    let f = Fixture::s3().await;
    let s = f.store.as_ref();
    let bytes = data(100_000, 7);
    let d = commit(s, "q", &bytes).await;
    let found = s.rehash(&d, &Pace::unbounded()).await.unwrap().unwrap();
    assert_eq!((found.actual.clone(), found.size), (d.clone(), 100_000));
    assert_eq!(s.stored_copy(&d).await.unwrap(), Some(found.copy));
    let to = s.quarantine(&d, found.copy).await.unwrap().unwrap();
    assert_eq!(
        to.to_str().unwrap(),
        format!("s3://wharf/wharf-test/quarantine/sha256/{}", d.hex())
    );
    assert_eq!(
        bucket_keys(&f).await,
        vec![format!("wharf-test/quarantine/sha256/{}", d.hex())]
    );
    assert_eq!(s.stat(&d).await.unwrap(), None);
    assert!(
        s.contents().await.unwrap().is_empty(),
        "quarantined content is not listed"
    );
    assert!(s.rehash(&d, &Pace::unbounded()).await.unwrap().is_none());
}

/// A store that takes connections and never answers is `Unavailable` after the request time limit,
/// not a hang.
#[tokio::test]
async fn a_store_that_never_answers_is_unavailable_not_a_hang() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let settings = S3Settings {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "wharf".into(),
        region: "garage".into(),
        prefix: String::new(),
        access_key_id: "GK0123456789abcdef01234567".into(),
        secret_access_key: "0".repeat(64),
        cache_max_bytes: 0,
    };
    let started = Instant::now();
    let err = refusal(settings).await;
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
}

/// A store whose requests go through `relay` to the fixture's Garage, with upload limits a test
/// can wait out.
async fn through(
    f: &Fixture,
    relay: &wharf_test_servers::Relay,
    patience: upload::Patience,
) -> (tempfile::TempDir, S3Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = s3_settings(f.garage.as_ref().unwrap(), 0);
    settings.endpoint = relay.endpoint();
    let s = S3Store::open_with(settings, dir.path(), patience)
        .await
        .unwrap();
    (dir, s)
}

fn quick(retry_for: Duration) -> upload::Patience {
    upload::Patience {
        request_base: Duration::from_secs(2),
        min_rate: u64::MAX,
        retry_for,
    }
}

const MULTIPART: usize = 6 * upload::PART_SIZE as usize;

/// Commits `bytes` on `s` in a task, and once `mid` bytes of it went towards the store, calls
/// `fault`; answers the commit's outcome, or panics if it takes longer than `within`.
async fn commit_meeting(
    s: &S3Store,
    relay: &wharf_test_servers::Relay,
    bytes: Vec<u8>,
    fault: impl FnOnce(),
    within: Duration,
) -> Result<Digest, StoreError> {
    let d = Digest::sha256_of(&bytes);
    let before = relay.forwarded();
    let s2 = s.clone();
    let d2 = d.clone();
    let task = tokio::spawn(async move {
        let mut w = s2.writer(&IngestRef::new("big").unwrap()).await?;
        w.write(Bytes::from(bytes)).await?;
        w.commit(&d2, None).await
    });
    let mid = before + 2 * upload::PART_SIZE;
    let until = Instant::now() + Duration::from_secs(60);
    while relay.forwarded() < mid {
        assert!(Instant::now() < until, "the upload never got under way");
        assert!(!task.is_finished(), "the upload finished before the fault");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fault();
    let started = Instant::now();
    match tokio::time::timeout(within, task).await {
        Ok(r) => r.unwrap().map(|_| d),
        Err(_) => panic!(
            "the commit was still running {:?} after the fault",
            started.elapsed()
        ),
    }
}

/// A connection that hangs in the middle of a part (the object store neither answers nor closes)
/// costs that part a retry on a new connection, not the upload and not the 120 s backstop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_stalls_is_cut_and_sent_again() {
    let f = Fixture::s3().await;
    let relay = wharf_test_servers::Relay::start(f.garage.as_ref().unwrap().s3_port());
    let (_dir, s) = through(&f, &relay, quick(Duration::from_secs(30))).await;
    let bytes = data(MULTIPART, 21);
    let stalled = std::sync::atomic::AtomicUsize::new(0);
    let d = commit_meeting(
        &s,
        &relay,
        bytes.clone(),
        || {
            let n = relay.stall_open_connections();
            stalled.store(n, std::sync::atomic::Ordering::SeqCst);
        },
        Duration::from_secs(45),
    )
    .await
    .unwrap();
    assert!(stalled.into_inner() > 0, "no connection was stalled");
    let (_d2, direct) = replica(&f, 0).await;
    assert_eq!(direct.stat(&d).await.unwrap(), Some(bytes.len() as u64));
    assert!(read_blob(direct.open(&d, None).await.unwrap()).await == bytes);
}

/// The object store going away for a few seconds mid-upload (a restart) is waited out: the parts
/// it failed are sent again once it is back, and the object is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_restart_mid_upload_is_waited_out() {
    let f = Fixture::s3().await;
    let relay = Arc::new(wharf_test_servers::Relay::start(
        f.garage.as_ref().unwrap().s3_port(),
    ));
    let (_dir, s) = through(&f, &relay, quick(Duration::from_secs(30))).await;
    let bytes = data(MULTIPART, 22);
    let outage = Duration::from_secs(6);
    let r = relay.clone();
    let d = commit_meeting(
        &s,
        &relay,
        bytes.clone(),
        move || {
            r.down();
            std::thread::spawn(move || {
                std::thread::sleep(outage);
                r.up();
            });
        },
        Duration::from_secs(45),
    )
    .await
    .unwrap();
    let (_d2, direct) = replica(&f, 0).await;
    assert!(read_blob(direct.open(&d, None).await.unwrap()).await == bytes);
}

/// An outage longer than the upload's patience fails the commit as `Unavailable` (a 503 the client
/// retries), naming the store, and leaves nothing in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_outlasting_the_patience_is_unavailable_and_leaves_nothing() {
    let f = Fixture::s3().await;
    let relay = wharf_test_servers::Relay::start(f.garage.as_ref().unwrap().s3_port());
    let (_dir, s) = through(&f, &relay, quick(Duration::from_secs(3))).await;
    let err = commit_meeting(
        &s,
        &relay,
        data(MULTIPART, 23),
        || relay.down(),
        Duration::from_secs(30),
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains(&relay.endpoint()), "{err}");
    relay.up();
    assert!(
        bucket_keys(&f).await.is_empty(),
        "{:?}",
        bucket_keys(&f).await
    );
}
