//! Proves (issue 27): with several processes on one Postgres and one content store, a collector in
//! one process spares what another process touched or leased, a touch in one process waits for a
//! sweep in another, and only one process collects at a time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::gc::{Collector, Settings};
use crate::lease::Leases;
use crate::meta::Meta;
use crate::store::{ContentStore, FsStore};
use wharf_model::digest::Digest;

const GRACE: u64 = 60;

fn collector(meta: &Meta, store: &Arc<dyn ContentStore>, leases: &Leases) -> Collector {
    leases.set_grace(GRACE);
    Collector::new(
        meta.clone(),
        store.clone(),
        leases.clone(),
        Settings {
            grace_secs: GRACE,
            max_cache_bytes: 0,
            mirror_hosts: vec![],
        },
    )
}

async fn put(store: &Arc<dyn ContentStore>, bytes: &'static [u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    store.put(&d, Bytes::from_static(bytes)).await.unwrap();
    d
}

/// Two wharf processes on one database and one store. A is the collector; it loaded its leases
/// before B did anything (so only the shared metadata can tell it of B's work), and as if it had
/// been running long (so its own start protects nothing).
async fn two_processes() -> (
    wharf_test_servers::Postgres,
    tempfile::TempDir,
    Arc<dyn ContentStore>,
    (Meta, Leases),
    (Meta, Leases),
) {
    let (pg, a, b) = crate::meta::tests::two_on_one_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ContentStore> = Arc::new(FsStore::open(dir.path()).unwrap());
    let leases_a = Leases::load_offline(a.clone()).await.unwrap();
    let leases_b = Leases::load(b.clone()).await.unwrap();
    leases_b.set_grace(GRACE);
    (pg, dir, store, (a, leases_a), (b, leases_b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_s_touches_and_leases_protect_content_from_this_collector() {
    let (_pg, _dir, store, (a, leases_a), (_b, leases_b)) = two_processes().await;
    let touched = put(&store, b"headed through replica b").await;
    let leased = put(&store, b"leased by an upload on replica b").await;
    let released = put(&store, b"leased, then released by replica b").await;
    let loose = put(&store, b"nobody's").await;
    leases_b.touch(std::slice::from_ref(&touched)).await;
    let lease = leases_b
        .acquire("upload", Duration::from_secs(600))
        .await
        .unwrap();
    lease.protect(std::slice::from_ref(&leased)).await.unwrap();
    let short = leases_b
        .acquire("fill", Duration::from_secs(600))
        .await
        .unwrap();
    short
        .protect(std::slice::from_ref(&released))
        .await
        .unwrap();
    short.release().await.unwrap();

    let r = collector(&a, &store, &leases_a)
        .collect(false)
        .await
        .unwrap();
    let removed: Vec<&Digest> = r.removed.iter().map(|r| &r.digest).collect();
    assert_eq!(removed, vec![&loose], "{r:?}");
    for d in [&touched, &leased, &released] {
        assert!(store.stat(d).await.unwrap().is_some(), "{d} was collected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_in_one_process_waits_for_a_sweep_in_another() {
    let (_pg, _dir, store, (_a, leases_a), (b, leases_b)) = two_processes().await;
    let d = put(&store, b"about to be collected").await;
    let since = wharf_model::clock::unix_now() - GRACE;
    let doomed = leases_a
        .doom_all(std::slice::from_ref(&d), since)
        .await
        .unwrap();
    assert_eq!(doomed, vec![d.clone()]);
    let toucher = {
        let (leases_b, d) = (leases_b.clone(), d.clone());
        tokio::spawn(async move { leases_b.touch(&[d]).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !toucher.is_finished(),
        "a touch of content another process is removing went on"
    );
    store.remove_many(std::slice::from_ref(&d)).await.unwrap();
    leases_a.bury(std::slice::from_ref(&d)).await;
    tokio::time::timeout(Duration::from_secs(5), toucher)
        .await
        .expect("the touch still waits after the sweep")
        .unwrap();
    // It finds the content gone (the client uploads it again), and its touch stands for next time.
    assert!(store.stat(&d).await.unwrap().is_none());
    assert!(b.touched_since(since).await.unwrap().contains(&d));
    // A digest touched first cannot be doomed by the other process.
    let kept = put(&store, b"touched first").await;
    leases_b.touch(std::slice::from_ref(&kept)).await;
    let doomed = leases_a
        .doom_all(std::slice::from_ref(&kept), since)
        .await
        .unwrap();
    assert!(doomed.is_empty(), "{doomed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_at_a_time_across_processes() {
    let (_pg, _dir, store, (a, _leases_a), (b, leases_b)) = two_processes().await;
    let loose = put(&store, b"nobody's").await;
    let held = a.collector_lock().await.unwrap().expect("free at first");
    let leases_b_offline = Leases::load_offline(b.clone()).await.unwrap();
    drop(leases_b);
    let r = collector(&b, &store, &leases_b_offline)
        .collect(false)
        .await
        .unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    let note = r.note.unwrap_or_default();
    assert!(note.contains("another wharf"), "{note}");
    assert!(store.stat(&loose).await.unwrap().is_some());
    held.release().await;
    let r = collector(&b, &store, &leases_b_offline)
        .collect(false)
        .await
        .unwrap();
    assert_eq!(r.removed.len(), 1, "{r:?}");
    // A collector that dies (its connection closed, not unlocked) frees the lock as well.
    let held = b
        .collector_lock()
        .await
        .unwrap()
        .expect("free after a collection");
    drop(held);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while a.collector_lock().await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < until,
            "the lock outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
