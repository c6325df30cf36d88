use super::*;
use crate::lease::Leases;
use crate::meta::tests::{open_on, Held};
use crate::meta::{ManifestPut, ManifestRecord};
use crate::store::{FsStore, Ingester, Provider};

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn graph(edges: &[(u8, u8)]) -> Graph {
    let mut g = Graph::default();
    for (a, b) in edges {
        g.edge(&d(*a), &d(*b));
    }
    g
}

#[test]
fn mark_reaches_what_the_roots_reach_and_nothing_else() {
    // 1 → 2 → 3, 2 → 4; 5 → 6; 7 ↔ 8 (a rewrite pair); 9 alone.
    let g = graph(&[(1, 2), (2, 3), (2, 4), (5, 6), (7, 8), (8, 7)]);
    let m = mark(&g, &[d(1), d(8)]);
    let want: HashSet<Digest> = [1, 2, 3, 4, 7, 8].iter().map(|n| d(*n)).collect();
    assert_eq!(m, want);
    assert!(mark(&g, &[]).is_empty());
    // A root with no edges is still reached; a cycle ends.
    assert_eq!(mark(&g, &[d(9)]).len(), 1);
    let cyc = graph(&[(1, 2), (2, 1)]);
    assert_eq!(mark(&cyc, &[d(2)]).len(), 2);
}

#[test]
fn eviction_drops_the_least_recently_used_mirrored_tags_until_the_rest_fits() {
    // Tag a (used at 100) reaches 10 (10 bytes) and 30 (shared, 5 bytes); tag b (used at 200) reaches
    // 20 (10 bytes) and 30; tag c (used at 50) reaches 40 (1 byte), which a pushed image also
    // reaches (pinned: evicting c frees nothing).
    let g = graph(&[(1, 10), (1, 30), (2, 20), (2, 30), (3, 40)]);
    let sizes: HashMap<Digest, u64> =
        [(1, 1), (2, 1), (3, 1), (10, 10), (20, 10), (30, 5), (40, 1)]
            .iter()
            .map(|(n, s)| (d(*n), *s))
            .collect();
    let tag = |name: &str, n: u8, used: u64| ("m/x".to_owned(), name.to_owned(), d(n), used);
    let mirrored = vec![tag("a", 1, 100), tag("b", 2, 200), tag("c", 3, 50)];
    let pinned: HashSet<Digest> = [d(40)].into_iter().collect();
    // Total only-mirrored: 1+1+1 + 10+10+5 = 28.
    assert_eq!(
        evictions(&g, &sizes, &mirrored, &pinned, 28),
        Vec::<usize>::new()
    );
    // c goes first (oldest) and frees its manifest's byte; a then frees 11; 27 - 11 = 16 fits 20.
    assert_eq!(evictions(&g, &sizes, &mirrored, &pinned, 20), vec![2, 0]);
    // Shared content is freed only when its last tag goes: down to 0 takes all three.
    assert_eq!(evictions(&g, &sizes, &mirrored, &pinned, 0), vec![2, 0, 1]);
}

/// A small registry: content in an `FsStore`, records in `Meta` on `backend` ("redb" or "postgres").
struct Fixture {
    _dir: tempfile::TempDir,
    _held: Held,
    meta: Meta,
    store: Arc<dyn ContentStore>,
    leases: Leases,
}

impl Fixture {
    async fn new(backend: &str, offline: bool) -> Fixture {
        Fixture::with_store(backend, offline, None).await
    }

    /// Over `store`, or an `FsStore` in the fixture's directory; metadata on `backend`.
    async fn with_store(
        backend: &str,
        offline: bool,
        store: Option<Arc<dyn ContentStore>>,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (held, meta) = open_on(backend).await;
        let store = store.unwrap_or_else(|| Arc::new(FsStore::open(dir.path()).unwrap()));
        let leases = if offline {
            Leases::load_offline(meta.clone()).await.unwrap()
        } else {
            Leases::load(meta.clone()).await.unwrap()
        };
        Fixture {
            _dir: dir,
            _held: held,
            meta,
            store,
            leases,
        }
    }

    fn collector(&self, grace_secs: u64) -> Collector {
        Collector::new(
            self.meta.clone(),
            self.store.clone(),
            self.leases.clone(),
            Settings {
                grace_secs,
                max_cache_bytes: 0,
                mirror_hosts: vec!["mirror.example".into()],
            },
        )
    }

    async fn blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        self.store
            .put(&d, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        self.meta
            .link_blob(repo, &d, bytes.len() as u64)
            .await
            .unwrap();
        d
    }

    /// An image manifest over `layers` (config = the first), tagged `tag` in `repo`.
    async fn image(&self, repo: &str, tag: Option<&str>, layers: &[&Digest]) -> Digest {
        let desc = |d: &Digest| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1});
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": wharf_model::manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layers[0].to_string(), "size": 1},
            "layers": layers[1..].iter().map(|d| desc(d)).collect::<Vec<_>>(),
        }))
        .unwrap();
        let digest = Digest::sha256_of(&body);
        let size = body.len() as u64;
        self.store.put(&digest, Bytes::from(body)).await.unwrap();
        self.meta
            .put_manifest(ManifestPut {
                repo,
                digest: &digest,
                record: ManifestRecord {
                    media_type: wharf_model::manifest::OCI_MANIFEST.into(),
                    size,
                    subject: None,
                },
                tag,
                referrer: None,
            })
            .await
            .unwrap();
        digest
    }

    async fn stored(&self, d: &Digest) -> bool {
        self.store.stat(d).await.unwrap().is_some()
    }
}

use bytes::Bytes;

/// Two images share a base layer; untagging one and collecting removes exactly its manifest, config
/// and own layer, and the records of them; the other image is whole. A dry run first says the same
/// and removes nothing.
async fn untagging_an_image_reclaims_exactly_its_unique_content(backend: &str) {
    let f = Fixture::new(backend, true).await;
    let base = f.blob("team/a", b"shared base layer").await;
    f.meta.link_blob("team/b", &base, 17).await.unwrap();
    let (ca, la) = (
        f.blob("team/a", b"config a").await,
        f.blob("team/a", b"layer a").await,
    );
    let (cb, lb) = (
        f.blob("team/b", b"config b").await,
        f.blob("team/b", b"layer b").await,
    );
    let ma = f.image("team/a", Some("v1"), &[&ca, &base, &la]).await;
    let mb = f.image("team/b", Some("v1"), &[&cb, &base, &lb]).await;
    let gc = f.collector(0);

    let r = gc.collect(false).await.unwrap();
    assert!(r.removed.is_empty(), "everything is tagged: {r:?}");
    assert_eq!(r.reachable, 7);

    assert!(f.meta.delete_tag("team/a", "v1").await.unwrap());
    let dry = gc.collect(true).await.unwrap();
    let mut want: Vec<Digest> = vec![ma.clone(), ca.clone(), la.clone()];
    want.sort_by_key(|d| d.to_string());
    let mut got: Vec<Digest> = dry.removed.iter().map(|r| r.digest.clone()).collect();
    got.sort_by_key(|d| d.to_string());
    assert_eq!(got, want);
    assert!(
        f.stored(&ma).await && f.stored(&la).await,
        "a dry run removes nothing"
    );

    let r = gc.collect(false).await.unwrap();
    let mut got: Vec<Digest> = r.removed.iter().map(|r| r.digest.clone()).collect();
    got.sort_by_key(|d| d.to_string());
    assert_eq!(got, want);
    assert_eq!(
        r.removed_bytes,
        r.removed.iter().map(|r| r.size).sum::<u64>()
    );
    for d in &want {
        assert!(!f.stored(d).await, "{d} should be gone");
    }
    for d in [&mb, &cb, &lb, &base] {
        assert!(f.stored(d).await, "{d} is still reachable and must stay");
    }
    assert_eq!(f.meta.blob("team/a", &la).await.unwrap(), None);
    assert_eq!(f.meta.manifest("team/a", &ma).await.unwrap(), None);
    assert_eq!(f.meta.blob("team/a", &base).await.unwrap(), Some(17));
    // Nothing left to do.
    assert!(gc.collect(false).await.unwrap().removed.is_empty());
}
crate::each_backend!(untagging_an_image_reclaims_exactly_its_unique_content);

/// Leased content and content touched within the grace window survive a collection; content touched
/// before it does not.
async fn leases_and_recent_touches_protect_unreferenced_content(backend: &str) {
    let f = Fixture::new(backend, true).await;
    let leased = f.blob("r", b"leased").await;
    let touched = f.blob("r", b"touched").await;
    let old = f.blob("r", b"old").await;
    let lease = f
        .leases
        .acquire("test", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    lease.protect(std::slice::from_ref(&leased)).await.unwrap();
    f.leases.touch(std::slice::from_ref(&touched)).await;

    let r = f.collector(3600).collect(false).await.unwrap();
    let removed: Vec<&Digest> = r.removed.iter().map(|r| &r.digest).collect();
    assert_eq!(removed, vec![&old]);
    assert_eq!(r.reachable, 2, "leased and touched content are roots");
    assert!(f.stored(&leased).await && f.stored(&touched).await);

    // Released, and with a grace window that the touch is older than: both go.
    lease.release().await.unwrap();
    let later = wharf_model::clock::unix_now() + 2;
    let r = f.collector(0).collect_as_of(false, later).await.unwrap();
    assert_eq!(r.removed.len(), 2, "{r:?}");
    assert!(f.leases.list().is_empty());
}
crate::each_backend!(leases_and_recent_touches_protect_unreferenced_content);

/// A server that just started protects everything for a grace window: touches of the previous process
/// are lost with it.
async fn nothing_is_collected_within_a_grace_window_of_a_start(backend: &str) {
    let f = Fixture::new(backend, false).await;
    let stray = f.blob("r", b"unreferenced").await;
    let r = f.collector(3600).collect(false).await.unwrap();
    assert!(r.removed.is_empty());
    assert!(
        r.note.as_deref().unwrap_or("").contains("grace_secs"),
        "{r:?}"
    );
    assert!(f.stored(&stray).await);
}
crate::each_backend!(nothing_is_collected_within_a_grace_window_of_a_start);

/// The race the leases module exists for, made deterministic: the sweeper has doomed a blob; a touch
/// of it (a `HEAD` before a manifest push) waits until it is gone, so the caller's next check sees it
/// missing instead of referring to content that disappears.
async fn a_touch_of_doomed_content_waits_until_it_is_gone(backend: &str) {
    let f = Fixture::new(backend, true).await;
    let b = f.blob("r", b"doomed").await;
    let since = wharf_model::clock::unix_now() + 1;
    assert!(f.leases.doom(&b, since));
    let leases = f.leases.clone();
    let b2 = b.clone();
    let toucher = tokio::spawn(async move {
        leases.touch(std::slice::from_ref(&b2)).await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!toucher.is_finished(), "the touch must wait for the sweep");
    f.store.remove(&b).await.unwrap();
    f.leases.buried(std::slice::from_ref(&b));
    toucher.await.unwrap();
    assert!(!f.stored(&b).await);
    // And the other way round: touched first, it cannot be doomed.
    let c = f.blob("r", b"touched first").await;
    f.leases.touch(std::slice::from_ref(&c)).await;
    assert!(!f.leases.doom(&c, wharf_model::clock::unix_now()));
}
crate::each_backend!(a_touch_of_doomed_content_waits_until_it_is_gone);

/// Content committed after the collector listed the store is never among what it removes: the commit
/// touched it (through `Touching`) before it existed.
async fn content_written_during_a_collection_is_kept(backend: &str) {
    let f = Fixture::new(backend, true).await;
    let touching = crate::lease::Touching::wrap(f.store.clone(), f.leases.clone());
    let gc = f.collector(3600);
    for i in 0..50u8 {
        let bytes = vec![i; 10];
        let d = Digest::sha256_of(&bytes);
        let (a, b) = tokio::join!(touching.put(&d, Bytes::from(bytes)), gc.collect(false));
        a.unwrap();
        b.unwrap();
        assert!(f.stored(&d).await, "round {i}: a fresh write was collected");
    }
}
crate::each_backend!(content_written_during_a_collection_is_kept);

/// `wharf images`: one row per tag (two tags, one image ID), the size counts each blob once, and an
/// untagged image is listed only as dangling.
async fn images_lists_tags_and_dangling_images(backend: &str) {
    let f = Fixture::new(backend, true).await;
    let base = f.blob("team/a", b"base").await;
    let config = br#"{"os":"linux","architecture":"arm64"}"#;
    let cfg = f.blob("team/a", config).await;
    let m = f.image("team/a", Some("v1"), &[&cfg, &base]).await;
    f.meta
        .put_manifest(ManifestPut {
            repo: "team/a",
            digest: &m,
            record: f.meta.manifest("team/a", &m).await.unwrap().unwrap(),
            tag: Some("latest"),
            referrer: None,
        })
        .await
        .unwrap();
    let lone = f.blob("team/b", b"lone").await;
    let other = f.image("team/b", None, &[&lone]).await;
    let gc = f.collector(0);

    let list = crate::images::list(&gc, false).await.unwrap();
    let tags: Vec<(&str, Option<&str>)> = list
        .iter()
        .map(|i| (i.repository.as_str(), i.tag.as_deref()))
        .collect();
    assert_eq!(
        tags,
        vec![("team/a", Some("latest")), ("team/a", Some("v1"))]
    );
    assert!(list.iter().all(|i| i.digest == m));
    let manifest_size = f.store.stat(&m).await.unwrap().unwrap();
    assert_eq!(list[0].size, manifest_size + 4 + config.len() as u64);
    assert_eq!(list[0].platforms, vec!["linux/arm64".to_owned()]);

    let dangling = crate::images::list(&gc, true).await.unwrap();
    assert_eq!(dangling.len(), 1, "{dangling:?}");
    assert_eq!(dangling[0].digest, other);
    assert_eq!(dangling[0].tag, None);
}
crate::each_backend!(images_lists_tags_and_dangling_images);

/// Proves (issue 26): on the S3 store, a collection removes the unreachable objects from the bucket
/// (one bulk delete, after the metadata transaction), their local cached copies too, and keeps the
/// rest.
#[tokio::test]
async fn a_collection_on_the_s3_store_deletes_the_objects() {
    let garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
        .await
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let s3 = crate::store::S3Store::open(
        crate::store::tests::s3_settings(&garage, 1 << 20),
        local.path(),
    )
    .await
    .unwrap();
    let f = Fixture::with_store("redb", true, Some(Arc::new(s3.clone()))).await;
    let base = f.blob("team/a", b"shared base layer").await;
    f.meta.link_blob("team/b", &base, 17).await.unwrap();
    let (ca, la) = (
        f.blob("team/a", b"config a").await,
        f.blob("team/a", b"layer a").await,
    );
    let cb = f.blob("team/b", b"config b").await;
    let ma = f.image("team/a", Some("v1"), &[&ca, &base, &la]).await;
    let mb = f.image("team/b", Some("v1"), &[&cb, &base]).await;
    assert!(f.meta.delete_tag("team/a", "v1").await.unwrap());
    let r = f.collector(0).collect(false).await.unwrap();
    let mut got: Vec<Digest> = r.removed.iter().map(|r| r.digest.clone()).collect();
    got.sort();
    let mut want = vec![ma, ca, la];
    want.sort();
    assert_eq!(got, want);
    let left = sorted_contents(&s3).await;
    let mut kept = vec![mb, cb, base];
    kept.sort();
    assert_eq!(left, kept, "the bucket holds exactly what is reachable");
    for d in &want {
        assert_eq!(
            s3.local().stat(d).await.unwrap(),
            None,
            "{d} is still cached"
        );
        assert!(!f.stored(d).await);
    }
}

/// Proves (issue 26): a crash between an object's upload and its record leaves an object nothing
/// names; the next collection past the grace window removes it from the bucket, on either
/// metadata backend, and keeps what is recorded.
async fn an_object_no_record_names_is_collected_from_the_bucket(backend: &str) {
    let garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
        .await
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let s3 =
        crate::store::S3Store::open(crate::store::tests::s3_settings(&garage, 0), local.path())
            .await
            .unwrap();
    let f = Fixture::with_store(backend, true, Some(Arc::new(s3.clone()))).await;
    let config = f.blob("team/a", b"config").await;
    let layer = f.blob("team/a", b"layer").await;
    let kept = f.image("team/a", Some("v1"), &[&config, &layer]).await;
    // What a process killed after its upload but before its metadata transaction leaves behind.
    let orphan = Digest::sha256_of(b"uploaded, never recorded");
    s3.put(&orphan, Bytes::from_static(b"uploaded, never recorded"))
        .await
        .unwrap();
    assert!(s3.stat(&orphan).await.unwrap().is_some());
    let r = f.collector(0).collect(false).await.unwrap();
    let removed: Vec<&Digest> = r.removed.iter().map(|r| &r.digest).collect();
    assert_eq!(removed, vec![&orphan]);
    let left = sorted_contents(&s3).await;
    let mut want = vec![config, layer, kept];
    want.sort();
    assert_eq!(
        left, want,
        "the orphan is gone from the bucket, the image is whole"
    );
}
crate::each_backend!(an_object_no_record_names_is_collected_from_the_bucket);

mod across_processes;

/// What the store holds, by digest, sorted.
async fn sorted_contents(s: &dyn ContentStore) -> Vec<Digest> {
    let mut v: Vec<Digest> = s
        .contents()
        .await
        .unwrap()
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    v.sort();
    v
}
