//! The fill against a small in-process HTTP server that can misbehave on purpose. (End-to-end tests
//! use the real distribution registry; here we need bytes it would never send.)

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;
use wharf_model::config::UpstreamConfig;
use wharf_storage::store::{FsStore, Ingester, Provider};

#[derive(Clone, Copy)]
enum Behaviour {
    Good,
    WrongBytes,
    CutOff,
    /// Sends a little, then pauses for a few seconds before the rest.
    Pause,
}

async fn serve(data: Arc<Vec<u8>>, how: Behaviour, gets: Arc<AtomicUsize>) -> String {
    serve_framed(data, how, false, gets).await
}

/// `chunked`: answer with `Transfer-Encoding: chunked` and no `Content-Length`, as some registries
/// and CDNs do.
async fn serve_framed(
    data: Arc<Vec<u8>>,
    how: Behaviour,
    chunked: bool,
    gets: Arc<AtomicUsize>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let (data, gets) = (data.clone(), gets.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let (data, gets) = (data.clone(), gets.clone());
                    async move {
                        gets.fetch_add(1, Ordering::SeqCst);
                        let (tx, rx) = tokio::sync::mpsc::channel(1);
                        let len = data.len();
                        tokio::spawn(async move {
                            let mut body = (*data).clone();
                            if matches!(how, Behaviour::WrongBytes) {
                                body[len / 2] ^= 0xff;
                            }
                            let cut = if matches!(how, Behaviour::CutOff) {
                                len / 2
                            } else {
                                len
                            };
                            for (i, c) in body[..cut].chunks(64 * 1024).enumerate() {
                                let pause = matches!(how, Behaviour::Pause) && i == 2;
                                let ms = if pause { 3000 } else { 2 };
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                if tx.send(Ok(Bytes::copy_from_slice(c))).await.is_err() {
                                    return;
                                }
                            }
                            if cut < len {
                                let _ = tx.send(Err(std::io::Error::other("cut off"))).await;
                            }
                        });
                        let resp = if chunked {
                            Response::new(Body::channel(rx, None))
                        } else {
                            Response::builder()
                                .header("content-length", len)
                                .body(Body::channel(rx, Some(len as u64)))
                                .unwrap()
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn ContentStore>,
    fills: Fills,
    meta: Meta,
    source: Arc<Upstream>,
}

async fn setup(endpoint: String) -> Setup {
    setup_on(endpoint, None).await
}

/// Fills into `store`, or an `FsStore` in the setup's directory.
async fn setup_on(endpoint: String, store: Option<Arc<dyn ContentStore>>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::open(&dir.path().join("meta.redb")).unwrap();
    let store = store.unwrap_or_else(|| Arc::new(FsStore::open(dir.path()).unwrap()));
    let store = Touching::wrap(store, Leases::new(meta.clone()));
    let mut cfg = UpstreamConfig::docker_hub();
    cfg.host = "test-upstream".into();
    cfg.endpoint = endpoint;
    cfg.insecure = true;
    Setup {
        fills: Fills::new(store.clone(), meta.clone()),
        store,
        meta,
        source: Arc::new(Upstream::new(&cfg).unwrap()),
        _dir: dir,
    }
}

impl Setup {
    fn fill(&self, d: &Digest) -> Arc<Fill> {
        self.fills.get(
            d,
            Source {
                upstream: self.source.clone(),
                remote: "r".into(),
                cache_repo: "test-upstream/r".into(),
                size: None,
            },
        )
    }
}

async fn read(fill: Arc<Fill>, store: Arc<dyn ContentStore>) -> Result<Vec<u8>, String> {
    let p = fill.ready().await;
    let body = fill.body(store, 0, p.size);
    body.collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

fn data() -> Arc<Vec<u8>> {
    Arc::new((0..3_000_000u32).map(|i| (i * 7 + i / 5) as u8).collect())
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let (data, gets) = (data(), Arc::new(AtomicUsize::new(0)));
    let d = Digest::sha256_of(&data);
    let s = setup(serve(data.clone(), Behaviour::Good, gets.clone()).await).await;
    let mut readers = Vec::new();
    for i in 0..8 {
        let (f, store) = (s.fill(&d), s.store.clone());
        readers.push(tokio::spawn(async move {
            // Late arrivals join a fill that is already streaming.
            tokio::time::sleep(Duration::from_millis(i * 5)).await;
            read(f, store).await
        }));
    }
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap(), *data);
    }
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    // Readers may finish once the bytes verify, before the commit; then the fill is forgotten and the
    // store serves the blob.
    while !s.fills.is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(s.store.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(
        s.meta.blob("test-upstream/r", &d).await.unwrap(),
        Some(data.len() as u64)
    );
}

/// An upstream that answers chunked, without a length: every reader, whether it joined while the
/// bytes streamed or after they verified, gets the whole blob and a clean end of its body (which,
/// without a length, is what tells a client it has everything); the blob is cached.
#[tokio::test]
async fn a_chunked_upstream_reaches_every_reader_whole() {
    for size in [1_000_000usize, 3_000_000] {
        let data = Arc::new(data()[..size].to_vec());
        let gets = Arc::new(AtomicUsize::new(0));
        let d = Digest::sha256_of(&data);
        let s = setup(serve_framed(data.clone(), Behaviour::Good, true, gets.clone()).await).await;
        let first = s.fill(&d);
        assert_eq!(
            first.ready().await.size,
            None,
            "the upstream gave no length"
        );
        let mut readers = Vec::new();
        for i in 0..6 {
            let (f, store) = (s.fill(&d), s.store.clone());
            readers.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 7)).await;
                read(f, store).await
            }));
        }
        for r in readers {
            let got = r
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{size} bytes: {e}"));
            assert!(
                got == *data,
                "{size} bytes: a reader got {} bytes",
                got.len()
            );
        }
        // The length is known once the bytes verified.
        let p = first.ready().await;
        assert!(matches!(p.phase, Phase::Verified | Phase::Done), "{p:?}");
        assert_eq!(p.size, Some(size as u64));
        assert_eq!(gets.load(Ordering::SeqCst), 1);
        while !s.fills.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(s.store.stat(&d).await.unwrap(), Some(size as u64));
    }
}

#[tokio::test]
async fn bad_bytes_are_never_committed_and_readers_see_an_error() {
    for (how, chunked) in [
        (Behaviour::WrongBytes, false),
        (Behaviour::CutOff, false),
        (Behaviour::WrongBytes, true),
        (Behaviour::CutOff, true),
    ] {
        let (data, gets) = (data(), Arc::new(AtomicUsize::new(0)));
        let d = Digest::sha256_of(&data);
        let s = setup(serve_framed(data.clone(), how, chunked, gets.clone()).await).await;
        let (a, b) = (s.fill(&d), s.fill(&d));
        let (ra, rb) = tokio::join!(read(a, s.store.clone()), read(b, s.store.clone()));
        assert!(
            ra.is_err() && rb.is_err(),
            "a client must not get a complete body"
        );
        assert_eq!(s.store.stat(&d).await.unwrap(), None, "nothing committed");
        while !s.fills.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(
            s.store.ingests().await.unwrap().is_empty(),
            "no partial left"
        );
    }
}

#[tokio::test]
async fn ranges_are_served_from_a_fill_in_flight() {
    let (data, gets) = (data(), Arc::new(AtomicUsize::new(0)));
    let d = Digest::sha256_of(&data);
    let s = setup(serve(data.clone(), Behaviour::Good, gets.clone()).await).await;
    let fill = s.fill(&d);
    assert_eq!(fill.ready().await.phase, Phase::Streaming, "still arriving");
    // A range in the middle, and one ending at the last byte (which waits for verification).
    let mid = fill.body(s.store.clone(), 1_000_000, Some(5000));
    let tail = fill.body(s.store.clone(), data.len() as u64 - 10, Some(10));
    let mid = mid.collect().await.unwrap().to_bytes();
    let tail = tail.collect().await.unwrap().to_bytes();
    assert_eq!(&mid[..], &data[1_000_000..1_005_000]);
    assert_eq!(&tail[..], &data[data.len() - 10..]);
    assert_eq!(gets.load(Ordering::SeqCst), 1);
}

/// A slow upstream's bytes reach readers while it pauses, not only once a whole write batch is in.
#[tokio::test]
async fn readers_get_what_arrived_while_the_upstream_pauses() {
    let data = data();
    let d = Digest::sha256_of(&data);
    let s = setup(serve(data.clone(), Behaviour::Pause, Default::default()).await).await;
    let fill = s.fill(&d);
    let p = fill.ready().await;
    let mut body = fill.body(s.store.clone(), 0, p.size);
    let mut got = Vec::new();
    let waited = tokio::time::timeout(Duration::from_millis(1500), async {
        while got.len() < 2 * 64 * 1024 {
            let f = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(&f.into_data().unwrap());
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "only {} of the 128 KiB sent before the pause reached the reader",
        got.len()
    );
    assert_eq!(got[..], data[..got.len()]);
    while let Some(f) = body.frame().await {
        got.extend_from_slice(&f.unwrap().into_data().unwrap());
    }
    assert!(got == *data, "the whole blob after the pause");
}

/// Proves: a fill told the size a manifest gives its blob (the config the platform policy reads)
/// fails as soon as the upstream announces another length, or, without one, sends more than that;
/// it commits nothing, and `finished` reports the failure.
#[tokio::test]
async fn a_fill_of_known_size_stops_at_more() {
    for chunked in [false, true] {
        let data = data();
        let d = Digest::sha256_of(&data);
        let s =
            setup(serve_framed(data.clone(), Behaviour::Good, chunked, Default::default()).await)
                .await;
        let fill = s.fills.get(
            &d,
            Source {
                upstream: s.source.clone(),
                remote: "r".into(),
                cache_repo: "test-upstream/r".into(),
                size: Some(1000),
            },
        );
        let p = fill.finished().await;
        match &p.phase {
            Phase::Failed(why) => assert!(why.contains("says 1000 bytes"), "{why}"),
            other => panic!("chunked {chunked}: {other:?}"),
        }
        assert_eq!(
            p.written, 0,
            "chunked {chunked}: nothing past the size written"
        );
        assert_eq!(s.store.stat(&d).await.unwrap(), None, "nothing committed");
        while !s.fills.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(
            s.store.ingests().await.unwrap().is_empty(),
            "no partial left"
        );
    }
}

/// An S3 store with no local cache, on a fresh Garage.
async fn s3_store() -> (
    wharf_test_servers::Garage,
    tempfile::TempDir,
    wharf_storage::store::S3Store,
) {
    let garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
        .await
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let s3 = wharf_storage::store::S3Store::open(
        wharf_storage::store::S3Settings {
            endpoint: garage.endpoint(),
            bucket: garage.bucket().into(),
            region: garage.region().into(),
            prefix: String::new(),
            access_key_id: garage.access_key_id().into(),
            secret_access_key: garage.secret_access_key().into(),
            cache_max_bytes: 0,
        },
        local.path(),
    )
    .await
    .unwrap();
    (garage, local, s3)
}

/// Proves (issue 26): on the S3 store with no local cache, a fill streams to its readers from the
/// local spool as before and then goes to the bucket; a reader of the same fill that starts after
/// the spool is gone reads the blob as it streams from the bucket.
#[tokio::test]
async fn on_s3_a_reader_after_the_fill_reads_from_the_bucket() {
    let (_garage, _local, s3) = s3_store().await;
    let (data, gets) = (data(), Arc::new(AtomicUsize::new(0)));
    let d = Digest::sha256_of(&data);
    let s = setup_on(
        serve(data.clone(), Behaviour::Good, gets.clone()).await,
        Some(Arc::new(s3.clone())),
    )
    .await;
    let fill = s.fill(&d);
    assert_eq!(read(fill.clone(), s.store.clone()).await.unwrap(), *data);
    while !s.fills.is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(s.store.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(
        s3.local().stat(&d).await.unwrap(),
        None,
        "no cache: not kept"
    );
    assert!(s3.ingests().await.unwrap().is_empty(), "the spool is gone");
    assert_eq!(read(fill, s.store.clone()).await.unwrap(), *data);
    assert_eq!(gets.load(Ordering::SeqCst), 1);
}

/// Proves (issue 26): a fill whose bytes verified but whose object store is out of reach fails as
/// "cannot cache", not as bad bytes from the upstream, and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_an_unreachable_bucket_fails_a_fill_as_not_cached_not_as_bad_bytes() {
    let (mut garage, _local, s3) = s3_store().await;
    tokio::task::block_in_place(|| garage.stop());
    let data = data();
    let d = Digest::sha256_of(&data);
    let s = setup_on(
        serve(data.clone(), Behaviour::Good, Arc::new(AtomicUsize::new(0))).await,
        Some(Arc::new(s3)),
    )
    .await;
    let p = s.fill(&d).finished().await;
    match p.phase {
        Phase::Failed(why) => {
            assert!(why.contains(&format!("cannot cache {d}")), "{why}");
            assert!(why.contains("unavailable"), "{why}");
            assert!(!why.contains("bad content"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.meta.blob("test-upstream/r", &d).await.unwrap(), None);
}
