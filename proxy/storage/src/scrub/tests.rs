use super::*;
use crate::meta::tests::{open_on, Held};
use crate::meta::{ManifestPut, ManifestRecord};
use crate::store::FsStore;

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn rec() -> ManifestRecord {
    ManifestRecord {
        media_type: wharf_model::manifest::OCI_INDEX.into(),
        size: 1,
        subject: None,
    }
}

fn local(repo: &str) -> bool {
    !repo.starts_with("mirror.io/")
}

#[test]
fn records_without_content_are_found() {
    let inv = Inventory {
        blob_links: vec![("team/app".into(), d(1)), ("team/app".into(), d(2))],
        manifests: vec![
            ("team/app".into(), d(10), rec()),
            ("team/app".into(), d(11), rec()),
        ],
        tags: vec![
            ("team/app".into(), "v1".into(), d(10)),
            ("team/app".into(), "v2".into(), d(12)),
            // Recorded, but in another repository.
            ("other/app".into(), "v1".into(), d(10)),
        ],
    };
    let stored: HashSet<Digest> = [d(1), d(10)].into_iter().collect();
    let got = problems(&inv, &stored, &Children::new(), local);
    assert_eq!(
        got,
        vec![
            Problem::BlobMissing {
                repository: "team/app".into(),
                digest: d(2)
            },
            Problem::ManifestMissing {
                repository: "team/app".into(),
                digest: d(11)
            },
            Problem::TagDangling {
                repository: "other/app".into(),
                tag: "v1".into(),
                digest: d(10)
            },
            Problem::TagDangling {
                repository: "team/app".into(),
                tag: "v2".into(),
                digest: d(12)
            },
        ]
    );
    assert!(problems(&inv, &stored, &Children::new(), local)
        .iter()
        .all(|p| !p.to_string().is_empty()));
}

/// An index pushed here must have its children; a mirror's cache fetches them when asked, and a
/// platform policy leaves some out for good.
#[test]
fn missing_children_count_for_pushed_manifests_only() {
    let inv = Inventory {
        manifests: vec![
            ("team/app".into(), d(10), rec()),
            ("mirror.io/lib/app".into(), d(10), rec()),
        ],
        ..Inventory::default()
    };
    let stored: HashSet<Digest> = [d(10), d(20)].into_iter().collect();
    let children: Children = [(d(10), vec![d(20), d(21)])].into_iter().collect();
    assert_eq!(
        problems(&inv, &stored, &children, local),
        vec![Problem::ChildMissing {
            repository: "team/app".into(),
            manifest: d(10),
            child: d(21)
        }]
    );
    assert_eq!(
        referring(&inv, &children, &d(21)),
        ["mirror.io/lib/app".to_owned(), "team/app".to_owned()]
            .into_iter()
            .collect()
    );
    assert!(referring(&inv, &children, &d(99)).is_empty());
}

/// A small registry: content in an `FsStore` (in `dir`), records in `Meta` on `backend`.
struct Fixture {
    dir: tempfile::TempDir,
    _held: Held,
    meta: Meta,
    store: Arc<dyn ContentStore>,
    leases: Leases,
}

impl Fixture {
    async fn new(backend: &str) -> Fixture {
        Fixture::with_store(backend, None).await
    }

    /// Over `store`, or an `FsStore` in the fixture's directory; metadata on `backend`.
    async fn with_store(backend: &str, store: Option<Arc<dyn ContentStore>>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (held, meta) = open_on(backend).await;
        let store = store.unwrap_or_else(|| Arc::new(FsStore::open(dir.path()).unwrap()));
        let leases = Leases::load_offline(meta.clone()).await.unwrap();
        Fixture {
            dir,
            _held: held,
            meta,
            store,
            leases,
        }
    }

    fn scrubber(&self) -> Scrubber {
        Scrubber::new(
            self.meta.clone(),
            self.store.clone(),
            self.leases.clone(),
            Settings {
                max_bytes_per_sec: 0,
                mirror_hosts: vec!["mirror.io".into()],
            },
        )
    }

    /// Stores `bytes` and links them in `repo`.
    async fn blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        self.store
            .put(&digest, bytes::Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        self.meta
            .link_blob(repo, &digest, bytes.len() as u64)
            .await
            .unwrap();
        digest
    }

    fn path(&self, digest: &Digest) -> std::path::PathBuf {
        self.dir
            .path()
            .join("blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
    }

    /// Overwrites 64 bytes in the middle of `digest`'s file, in place (the same inode).
    fn flip(&self, digest: &Digest) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(digest))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(&[0x5a; 64], len / 2 - 32).unwrap();
    }
}

/// Proves: content whose bytes were changed in place is found, named with the repositories that
/// hold it, moved to quarantine/ and out of the store (no cache serves it: not even the small
/// content cache that had read it before), and its records are dropped, so it reads as absent;
/// content next to it is untouched.
async fn rotten_content_is_quarantined_and_reads_as_absent(backend: &str) {
    let f = Fixture::new(backend).await;
    let good = f.blob("team/app", &[7u8; 4096]).await;
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let rotten = f.blob("team/app", &bytes).await;
    f.meta.link_blob("other/app", &rotten, 4096).await.unwrap();
    // Read once while sound: the small content cache now holds it.
    f.store.read_all(&rotten, 1 << 20).await.unwrap();
    f.flip(&rotten);

    let report = f.scrubber().run(None).await.unwrap();
    assert_eq!(report.verified, 2, "{report:?}");
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let damaged = &report.damaged[0];
    assert_eq!(damaged.digest, rotten);
    assert_ne!(damaged.actual, rotten);
    assert_eq!(damaged.repositories, vec!["other/app", "team/app"]);
    let to = std::path::PathBuf::from(damaged.quarantined.as_deref().unwrap());
    assert!(to.starts_with(f.dir.path().join("quarantine")), "{to:?}");
    assert_eq!(
        Digest::sha256_of(&std::fs::read(&to).unwrap()),
        damaged.actual
    );
    assert!(!f.path(&rotten).exists());

    assert_eq!(f.store.stat(&rotten).await.unwrap(), None);
    assert!(matches!(
        f.store.read_all(&rotten, 1 << 20).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(f.meta.blob("team/app", &rotten).await.unwrap(), None);
    assert_eq!(f.meta.blob("other/app", &rotten).await.unwrap(), None);
    assert_eq!(f.meta.blob("team/app", &good).await.unwrap(), Some(4096));
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(!report.clean());

    // Pushed again, the same digest is stored and verifies; nothing is left to find.
    f.blob("team/app", &bytes).await;
    let again = f.scrubber().run(None).await.unwrap();
    assert!(again.clean(), "{again:?}");
    let last: LastScrub = f.meta.last_scrub().await.unwrap().unwrap();
    assert_eq!(last.verified, 2);
    assert_eq!(last.damaged, 0);
}
crate::each_backend!(rotten_content_is_quarantined_and_reads_as_absent);

/// Proves: a pass that stopped goes on after the last digest it recorded, verifying only the rest,
/// and its report counts the whole pass, what the stopped part found included.
async fn a_stopped_pass_goes_on_from_its_recorded_progress(backend: &str) {
    let f = Fixture::new(backend).await;
    let mut all = Vec::new();
    for n in 0..6u8 {
        all.push(f.blob("team/app", &[n; 1000]).await);
    }
    all.sort();
    let earlier = Damaged {
        digest: d(200),
        size: 5,
        actual: d(201),
        repositories: vec!["team/app".into()],
        quarantined: Some("q".into()),
    };
    // As a pass that stopped after the second digest recorded it.
    f.meta
        .save_scrub_progress(&Progress {
            started: 42,
            after: all[1].clone(),
            verified: 2,
            verified_bytes: 2000,
            damaged: vec![earlier.clone()],
            at: 43,
        })
        .await
        .unwrap();
    // The first two are rotten now; a pass from the start would find them.
    f.flip(&all[0]);
    f.flip(&all[1]);

    let report = f.scrubber().run(None).await.unwrap();
    assert_eq!(report.resumed_after.as_ref(), Some(&all[1]));
    assert_eq!(report.started, 42);
    assert_eq!(report.verified, 6);
    assert_eq!(report.verified_bytes, 6000);
    assert_eq!(report.damaged, vec![earlier]);
    assert!(f.meta.scrub_progress::<Progress>().await.unwrap().is_none());

    // The next pass starts over, and finds them.
    let next = f.scrubber().run(None).await.unwrap();
    assert_eq!(next.resumed_after, None);
    let found: Vec<&Digest> = next.damaged.iter().map(|x| &x.digest).collect();
    assert_eq!(found, vec![&all[0], &all[1]]);
}
crate::each_backend!(a_stopped_pass_goes_on_from_its_recorded_progress);

/// Proves: a manifest pushed here whose child is gone, and a link whose file is gone, are reported;
/// the same manifest in a mirror's cache repository is not missing anything.
async fn missing_files_are_reported_against_their_records(backend: &str) {
    let f = Fixture::new(backend).await;
    let layer = f.blob("team/app", b"layer").await;
    let config = f.blob("team/app", b"{}").await;
    let desc = |dg: &Digest, n: usize| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg.to_string(), "size": n});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": wharf_model::manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [desc(&layer, 5)],
    }))
    .unwrap();
    let m = Digest::sha256_of(&manifest);
    f.store
        .put(&m, bytes::Bytes::from(manifest.clone()))
        .await
        .unwrap();
    for repo in ["team/app", "mirror.io/lib/app"] {
        f.meta
            .put_manifest(ManifestPut {
                repo,
                digest: &m,
                record: ManifestRecord {
                    media_type: wharf_model::manifest::OCI_MANIFEST.into(),
                    size: manifest.len() as u64,
                    subject: None,
                },
                tag: Some("v1"),
                referrer: None,
            })
            .await
            .unwrap();
    }
    std::fs::remove_file(f.path(&layer)).unwrap();

    let report = f.scrubber().run(None).await.unwrap();
    assert_eq!(
        report.problems,
        vec![
            Problem::BlobMissing {
                repository: "team/app".into(),
                digest: layer.clone()
            },
            Problem::ChildMissing {
                repository: "team/app".into(),
                manifest: m.clone(),
                child: layer.clone()
            },
        ]
    );
    let last: LastScrub = f.meta.last_scrub().await.unwrap().unwrap();
    assert_eq!((last.missing_content, last.missing_children), (1, 1));
}
crate::each_backend!(missing_files_are_reported_against_their_records);

/// Proves (issue 26): on the S3 store the scrub re-reads the bucket's copy (not the local cache),
/// finds an object whose bytes changed, moves it to `quarantine/` in the bucket and drops the
/// local copy, so it reads as absent.
#[tokio::test]
async fn rotten_objects_in_the_bucket_are_quarantined() {
    use crate::store::Provider;
    use object_store::ObjectStore;
    let garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
        .await
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let settings = crate::store::tests::s3_settings(&garage, 1 << 20);
    let s3 = crate::store::S3Store::open(settings.clone(), local.path())
        .await
        .unwrap();
    let f = Fixture::with_store("redb", Some(Arc::new(s3.clone()))).await;
    let good = f.blob("team/app", &[7u8; 4096]).await;
    let rotten = f.blob("team/app", &[8u8; 4096]).await;
    // Changed behind wharf's back, in the bucket only: the local cache still has the good copy.
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&settings.endpoint)
        .with_region(&settings.region)
        .with_bucket_name(&settings.bucket)
        .with_access_key_id(&settings.access_key_id)
        .with_secret_access_key(&settings.secret_access_key)
        .with_allow_http(true)
        .build()
        .unwrap();
    let key = object_store::path::Path::from(s3.blob_key(&rotten));
    raw.put(&key, vec![9u8; 4096].into()).await.unwrap();

    let report = f.scrubber().run(None).await.unwrap();
    assert_eq!(report.verified, 2, "{report:?}");
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].digest, rotten);
    assert_eq!(
        report.damaged[0].quarantined.as_deref(),
        Some(format!("s3://wharf/{}", s3.quarantine_key(&rotten)).as_str())
    );
    assert_eq!(f.store.stat(&rotten).await.unwrap(), None);
    assert_eq!(s3.local().stat(&rotten).await.unwrap(), None);
    assert_eq!(f.meta.blob("team/app", &rotten).await.unwrap(), None);
    assert_eq!(f.store.stat(&good).await.unwrap(), Some(4096));
    let moved = raw
        .get(&object_store::path::Path::from(s3.quarantine_key(&rotten)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&moved[..], &[9u8; 4096][..]);
}
