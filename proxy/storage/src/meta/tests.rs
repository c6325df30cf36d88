use super::db::TAGS;
use super::*;
use wharf_model::digest::Digest;
use wharf_model::manifest::Descriptor;

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn open() -> (tempfile::TempDir, Meta) {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    (dir, m)
}

/// What keeps a test's backend alive: its redb file, or its Postgres cluster.
#[allow(dead_code)]
pub(crate) enum Held {
    Redb(tempfile::TempDir),
    Pg(wharf_test_servers::Postgres),
}

/// A fresh metadata store on `backend` ("redb" or "postgres"), for tests that run on both.
pub(crate) async fn open_on(backend: &str) -> (Held, Meta) {
    match backend {
        "redb" => {
            let (dir, m) = open();
            (Held::Redb(dir), m)
        }
        "postgres" => {
            let pg = tokio::task::spawn_blocking(wharf_test_servers::Postgres::start)
                .await
                .unwrap();
            let m = Meta::open_postgres(&pg.url()).await.unwrap();
            m.wait_listening().await;
            (Held::Pg(pg), m)
        }
        other => panic!("no backend {other}"),
    }
}

/// Runs one test body on each metadata backend: `on_both!(name, |m| async move { ... })`.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                let (_held, m) = $crate::meta::tests::open_on("redb").await;
                ($body)(m).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (_held, m) = $crate::meta::tests::open_on("postgres").await;
                ($body)(m).await;
            }
        }
    };
}

on_both!(a_blob_link_and_a_tag_read_back, |m: Meta| async move {
    m.link_blob("a", &d(1), 5).await.unwrap();
    assert_eq!(m.blob("a", &d(1)).await.unwrap(), Some(5));
    assert_eq!(m.blob("b", &d(1)).await.unwrap(), None);
    assert_eq!(m.tag("a", "latest").await.unwrap(), None);
});

fn rec(subject: Option<Digest>) -> ManifestRecord {
    ManifestRecord {
        media_type: wharf_model::manifest::OCI_MANIFEST.into(),
        size: 10,
        subject,
    }
}

#[tokio::test]
async fn blob_links_are_per_repo() {
    let (_dir, m) = open();
    m.link_blob("a", &d(1), 5).await.unwrap();
    assert_eq!(m.blob("a", &d(1)).await.unwrap(), Some(5));
    assert_eq!(m.blob("b", &d(1)).await.unwrap(), None);
    assert_eq!(
        m.missing("a", vec![d(1), d(2)], vec![d(3)]).await.unwrap(),
        vec![d(2), d(3)]
    );
    assert!(m.unlink_blob("a", &d(1)).await.unwrap());
    assert!(!m.unlink_blob("a", &d(1)).await.unwrap());
}

#[tokio::test]
async fn tags_paginate_in_order_and_stay_in_their_repo() {
    let (_dir, m) = open();
    for (repo, tag) in [
        ("a", "v2"),
        ("a", "v1"),
        ("a", "v3"),
        ("ab", "x"),
        ("a/b", "y"),
    ] {
        m.put_manifest(ManifestPut {
            repo,
            digest: &d(1),
            record: rec(None),
            tag: Some(tag),
            referrer: None,
        })
        .await
        .unwrap();
    }
    assert_eq!(
        m.tags("a", None, 2).await.unwrap(),
        (vec!["v1".into(), "v2".into()], true)
    );
    assert_eq!(
        m.tags("a", Some("v2"), 2).await.unwrap(),
        (vec!["v3".into()], false)
    );
    assert_eq!(m.tags("a", None, usize::MAX).await.unwrap().0.len(), 3);
    assert!(m.repo_exists("a/b").await.unwrap());
    assert!(!m.repo_exists("a/c").await.unwrap());
    assert!(!m.repo_exists("").await.unwrap());
    assert_eq!(m.tag("a", "v1").await.unwrap(), Some(d(1)));
}

#[tokio::test]
async fn deleting_a_manifest_drops_its_tags_and_referrer_entry() {
    let (_dir, m) = open();
    let desc = Descriptor {
        media_type: wharf_model::manifest::OCI_MANIFEST.into(),
        digest: d(2),
        size: 10,
        artifact_type: Some("application/x.sig".into()),
        annotations: None,
    };
    m.put_manifest(ManifestPut {
        repo: "r",
        digest: &d(1),
        record: rec(None),
        tag: Some("t"),
        referrer: None,
    })
    .await
    .unwrap();
    m.put_manifest(ManifestPut {
        repo: "r",
        digest: &d(2),
        record: rec(Some(d(1))),
        tag: Some("sig"),
        referrer: Some(desc.clone()),
    })
    .await
    .unwrap();
    assert_eq!(m.referrers("r", &d(1)).await.unwrap(), vec![desc]);
    assert!(m.referrers("other", &d(1)).await.unwrap().is_empty());
    assert!(m.delete_manifest("r", &d(2)).await.unwrap());
    assert!(m.referrers("r", &d(1)).await.unwrap().is_empty());
    assert_eq!(m.tag("r", "sig").await.unwrap(), None);
    assert_eq!(m.tag("r", "t").await.unwrap(), Some(d(1)));
    assert!(!m.delete_manifest("r", &d(2)).await.unwrap());
}

#[tokio::test]
async fn uploads_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let m = Meta::open(&path).unwrap();
        m.create_upload(
            "u1",
            UploadRecord {
                repo: "r".into(),
                started: 7,
                client: Some("identity bob".into()),
            },
        )
        .await
        .unwrap();
    }
    let m = Meta::open(&path).unwrap();
    let rec = m.upload("u1").await.unwrap().unwrap();
    assert_eq!(rec.started, 7);
    assert_eq!(rec.client.as_deref(), Some("identity bob"));
    m.remove_upload("u1").await.unwrap();
    assert!(m.uploads().await.unwrap().is_empty());
}

/// Proves (issue 24): a new metadata file is 0600 from the start (it names every repository and
/// tag), and reopening it works as before.
#[tokio::test]
async fn a_new_metadata_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    Meta::open(&path).unwrap().tag("r", "t").await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(Meta::open(&path).is_ok());
}

#[tokio::test]
async fn cached_misses_and_hits_follow_every_write() {
    let (_dir, m) = open();
    // Cache a miss, then write: the write must replace the cached miss.
    assert_eq!(m.tag("r", "t").await.unwrap(), None);
    assert_eq!(m.manifest("r", &d(1)).await.unwrap(), None);
    assert_eq!(m.blob("r", &d(9)).await.unwrap(), None);
    m.put_manifest(ManifestPut {
        repo: "r",
        digest: &d(1),
        record: rec(None),
        tag: Some("t"),
        referrer: None,
    })
    .await
    .unwrap();
    m.link_blob("r", &d(9), 3).await.unwrap();
    assert_eq!(m.tag("r", "t").await.unwrap(), Some(d(1)));
    assert!(m.manifest("r", &d(1)).await.unwrap().is_some());
    assert_eq!(m.blob("r", &d(9)).await.unwrap(), Some(3));
    // And removals replace cached hits.
    assert!(m.delete_manifest("r", &d(1)).await.unwrap());
    m.unlink_blob("r", &d(9)).await.unwrap();
    assert_eq!(m.tag("r", "t").await.unwrap(), None);
    assert_eq!(m.manifest("r", &d(1)).await.unwrap(), None);
    assert_eq!(m.blob("r", &d(9)).await.unwrap(), None);
    m.mirror_tag("up/r", "t", &d(2), Some(rec(None)), 5)
        .await
        .unwrap();
    assert_eq!(m.tag_checked("up/r", "t").await.unwrap(), Some(5));
    m.mirror_tag("up/r", "t", &d(2), None, 6).await.unwrap();
    assert_eq!(m.tag_checked("up/r", "t").await.unwrap(), Some(6));
}

fn put<'a>(repo: &'a str, tag: Option<&'a str>, digest: &'a Digest) -> ManifestPut<'a> {
    ManifestPut {
        repo,
        digest,
        record: rec(None),
        tag,
        referrer: None,
    }
}

#[tokio::test]
async fn last_use_is_per_tag_batched_and_read_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let m = Meta::open(&path).unwrap();
    m.mirror_tag("up.io/a", "v1", &d(1), Some(rec(None)), 5)
        .await
        .unwrap();
    m.mirror_tag("up.io/a", "v2", &d(1), None, 5).await.unwrap();
    m.put_manifest(put("b", None, &d(1))).await.unwrap();
    m.note_use("up.io/a", "v1", 100);
    m.note_use("up.io/a", "v1", 90);
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(100));
    assert_eq!(used.of_tag("up.io/a", Some("v2"), &d(1)), None);
    // A pull by the digest a tag names, through its repository, is a pull of that tag; through
    // another repository it is not.
    m.note_use("up.io/a", &d(1).to_string(), 120);
    m.note_use("b", &d(1).to_string(), 500);
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(120));
    assert_eq!(used.of_tag("up.io/a", Some("v2"), &d(1)), Some(120));
    assert_eq!(used.of_repository("up.io/a"), Some(120));
    m.flush_uses().await.unwrap();
    m.flush_uses().await.unwrap();
    drop(m);
    let m = Meta::open(&path).unwrap();
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(120));
    assert_eq!(used.of_tag("b", None, &d(1)), Some(500));
    // A later flush never moves a use back.
    m.note_use("up.io/a", "v1", 50);
    m.flush_uses().await.unwrap();
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.get("up.io/a", "v1"), Some(100));
}

#[tokio::test]
async fn a_push_is_a_use_of_the_tag_it_sets_and_only_of_it() {
    let (_dir, m) = open();
    m.mirror_tag("up.io/a", "v1", &d(1), Some(rec(None)), 5)
        .await
        .unwrap();
    m.note_use("up.io/a", "v1", 1_000);
    let before = usage::now();
    m.put_manifest(put("ci/app", Some("v1"), &d(1)))
        .await
        .unwrap();
    m.put_manifest(put("ci/app", None, &d(2))).await.unwrap();
    let used = m.snapshot().await.unwrap().last_use;
    let pushed = used.of_tag("ci/app", Some("v1"), &d(1)).unwrap();
    assert!(pushed >= before, "{pushed} < {before}");
    assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(1_000));
    assert_eq!(used.of_tag("ci/app", None, &d(2)), None);
}

#[tokio::test]
async fn deleted_tags_and_collected_digests_lose_their_uses() {
    let (_dir, m) = open();
    for t in ["v1", "v2", "v3"] {
        m.put_manifest(put("r", Some(t), &d(1))).await.unwrap();
    }
    m.put_manifest(put("r", None, &d(2))).await.unwrap();
    m.note_use("r", &d(2).to_string(), 7);
    m.flush_uses().await.unwrap();
    assert!(m.delete_tag("r", "v1").await.unwrap());
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.get("r", "v1"), None);
    assert!(used.get("r", "v2").is_some());
    // Noted before the delete, written after: the next collection drops it.
    m.note_use("r", "v1", 8);
    m.flush_uses().await.unwrap();
    m.forget([d(2)].into_iter().collect()).await.unwrap();
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.get("r", "v1"), None);
    assert_eq!(used.get("r", &d(2).to_string()), None);
    assert!(used.get("r", "v2").is_some());
    assert!(m.delete_manifest("r", &d(1)).await.unwrap());
    let used = m.snapshot().await.unwrap().last_use;
    assert_eq!(used.of_repository("r"), None);
}

#[test]
fn an_old_data_dir_keeps_its_mirrored_tags_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    // As an earlier wharf left it: last use by digest, written by the mirror only.
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut tags = tx.open_table(TAGS).unwrap();
            tags.insert(("docker.io/library/alpine", "3"), d(1).to_string().as_str())
                .unwrap();
            tags.insert(("ci/alpine", "3"), d(1).to_string().as_str())
                .unwrap();
            tags.insert(
                ("docker.io/library/busybox", "1"),
                d(2).to_string().as_str(),
            )
            .unwrap();
            let mut old = tx.open_table(usage::legacy_table()).unwrap();
            old.insert(d(1).to_string().as_str(), 1_000).unwrap();
        }
        tx.commit().unwrap();
    }
    let m = Meta::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let used = rt.block_on(m.snapshot()).unwrap().last_use;
    assert_eq!(
        used.of_tag("docker.io/library/alpine", Some("3"), &d(1)),
        Some(1_000)
    );
    // The pushed tag that shares the digest is not given the mirror's use.
    assert_eq!(used.of_tag("ci/alpine", Some("3"), &d(1)), None);
    assert_eq!(
        used.of_tag("docker.io/library/busybox", Some("1"), &d(2)),
        None
    );
    {
        let tx = m.redb().begin_write().unwrap();
        assert!(
            !tx.list_tables()
                .unwrap()
                .any(|t| redb::TableHandle::name(&t) == "last_used"),
            "the old table is dropped"
        );
    }
    drop(m);
    // Opened again: nothing to carry over, nothing changes.
    let m = Meta::open(&path).unwrap();
    let used = rt.block_on(m.snapshot()).unwrap().last_use;
    assert_eq!(
        used.of_tag("docker.io/library/alpine", Some("3"), &d(1)),
        Some(1_000)
    );
}

/// The routing phase asks whether a repository exists on every host-less request: the answer is
/// cached, yet follows each write and removal (a removal is read from the database from then on).
#[tokio::test]
async fn repository_existence_follows_writes_and_removals() {
    let (_dir, m) = open();
    assert!(!m.repo_exists("team/app").await.unwrap());
    m.link_blob("team/app", &d(7), 3).await.unwrap();
    assert!(m.repo_exists("team/app").await.unwrap(), "a link is seen");
    assert!(m.unlink_blob("team/app", &d(7)).await.unwrap());
    assert!(
        !m.repo_exists("team/app").await.unwrap(),
        "so is its removal"
    );
    m.put_manifest(ManifestPut {
        repo: "team/app",
        digest: &d(1),
        record: rec(None),
        tag: Some("v1"),
        referrer: None,
    })
    .await
    .unwrap();
    assert!(m.repo_exists("team/app").await.unwrap());
    assert!(m.delete_manifest("team/app", &d(1)).await.unwrap());
    assert!(!m.repo_exists("team/app").await.unwrap());
    m.mirror_tag("up.test/good", "v1", &d(2), Some(rec(None)), 1)
        .await
        .unwrap();
    assert!(m.repo_exists("up.test/good").await.unwrap());
    assert!(m.delete_tag("up.test/good", "v1").await.unwrap());
    assert!(
        m.repo_exists("up.test/good").await.unwrap(),
        "its manifest record is still there"
    );
}

#[tokio::test]
async fn what_an_upstream_sent_is_recorded_per_upstream_and_forgotten_with_the_digest() {
    let (_dir, m) = open();
    m.link_sent_blob("up.io/a", "up.io", &d(1), 5)
        .await
        .unwrap();
    m.put_sent_manifest(put("up.io/a", None, &d(2)), "up.io")
        .await
        .unwrap();
    // Pushed here, or linked on an upstream's HEAD: nobody sent it.
    m.put_manifest(put("local", None, &d(3))).await.unwrap();
    m.link_blob("up.io/b", &d(4), 5).await.unwrap();
    assert_eq!(m.blob("up.io/a", &d(1)).await.unwrap(), Some(5));
    assert!(m.manifest("up.io/a", &d(2)).await.unwrap().is_some());
    for (host, digest, sent) in [
        ("up.io", d(1), true),
        ("up.io", d(2), true),
        ("liar.test", d(1), false),
        ("up.io", d(3), false),
        ("up.io", d(4), false),
    ] {
        assert_eq!(
            m.upstream_sent(host, &digest).await.unwrap(),
            sent,
            "{host} {digest}"
        );
    }
    m.link_sent_blob("up.io/a", "other.io", &d(1), 5)
        .await
        .unwrap();
    m.forget([d(1)].into_iter().collect()).await.unwrap();
    assert!(!m.upstream_sent("up.io", &d(1)).await.unwrap());
    assert!(!m.upstream_sent("other.io", &d(1)).await.unwrap());
    assert!(m.upstream_sent("up.io", &d(2)).await.unwrap());
}

/// Opens `path` as the server does: on the blocking pool, a panic of the open being a failure.
async fn open_as_the_server_does(path: &std::path::Path, checked: bool) -> Result<Meta, MetaError> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || {
        if checked {
            Meta::open_checked(&p)
        } else {
            Meta::open(&p)
        }
    })
    .await
    .map_err(MetaError::Task)?
}

/// Proves (issue 24, 11): a truncated metadata file reads as damaged, a file another process holds
/// as in use, and a file this user may not write as a permission problem: three causes, three
/// fixes, where one message ("is another wharf using this data directory?") stood for all.
#[tokio::test]
async fn open_failures_say_what_kind_they_are() {
    let (dir, m) = open();
    for n in 0..200u8 {
        m.link_blob(&format!("repo/{n}"), &d(n), 5).await.unwrap();
    }
    let path = dir.path().join("meta.redb");
    let held = open_as_the_server_does(&path, false).await.err().unwrap();
    assert_eq!(held.open_failure(), OpenFailure::InUse, "{held}");
    drop(m);

    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    for checked in [false, true] {
        let e = open_as_the_server_does(&path, checked).await.err().unwrap();
        assert_eq!(
            e.open_failure(),
            OpenFailure::Damaged,
            "checked {checked}: {e}"
        );
    }

    let denied = MetaError::Db(redb::Error::Io(std::io::Error::from(
        std::io::ErrorKind::PermissionDenied,
    )));
    assert_eq!(denied.open_failure(), OpenFailure::Denied);
}

// --- Postgres: repos, sent, platforms, usage ---

/// Proves (issue 26): a write's update of this process's read cache, after its commit, is dropped if a
/// notification was handled meanwhile. Another process may have committed over the write and its
/// notification already removed the entry: caching the older value then would serve it until some
/// later invalidation. Likewise while the listener is down, when nothing may be cached.
#[test]
fn a_write_overtaken_by_a_notification_is_not_cached() {
    use super::db::{Invalidate, Known, ReadCache};
    let cache = ReadCache::default();
    let key = ("r".to_owned(), "t".to_owned());
    let stamp = cache.stamp();
    cache.put(&cache.tags, stamp, key.clone(), Some(d(1)));
    cache.exists_since(stamp, "r");
    assert_eq!(cache.tags.get(&key).map(|v| v.clone()), Some(Some(d(1))));
    assert_eq!(cache.repos.get("r").map(|v| *v), Some(Known::Exists));

    // This process commits d(2); another commits d(3), and its notification is handled before this
    // writer reaches its cache.
    let stamp = cache.stamp();
    cache.invalidate(Invalidate::Tag, "r", "t");
    cache.put(&cache.tags, stamp, key.clone(), Some(d(2)));
    cache.exists_since(stamp, "r");
    assert!(cache.tags.get(&key).is_none(), "the older value was cached");
    assert!(cache.repos.get("r").is_none());

    cache.clear(false);
    cache.put(&cache.tags, cache.stamp(), key.clone(), Some(d(2)));
    assert!(cache.tags.get(&key).is_none(), "cached while not listening");
}

on_both!(
    platform_records_name_index_and_kept_manifest,
    |m: Meta| async move {
        assert_eq!(m.index_listing("up.io/a", &d(2)).await.unwrap(), None);
        // A repeated child (an index may list one manifest twice) is recorded once.
        m.record_index_children("up.io/a", &d(1), vec![d(3), d(2), d(3)])
            .await
            .unwrap();
        m.record_index_children("up.io/a", &d(9), vec![])
            .await
            .unwrap();
        assert_eq!(m.index_listing("up.io/a", &d(2)).await.unwrap(), Some(d(1)));
        assert_eq!(m.index_listing("up.io/a", &d(3)).await.unwrap(), Some(d(1)));
        assert_eq!(m.index_listing("up.io/b", &d(2)).await.unwrap(), None);
        m.record_index_children("up.io/a", &d(4), vec![d(2)])
            .await
            .unwrap();
        assert_eq!(m.index_listing("up.io/a", &d(2)).await.unwrap(), Some(d(4)));

        assert!(!m.blob_allowed("up.io/a", &d(7)).await.unwrap());
        m.allow_blobs("up.io/a", &d(2), vec![d(7), d(8), d(7)])
            .await
            .unwrap();
        assert!(m.blob_allowed("up.io/a", &d(7)).await.unwrap());
        assert!(m.blob_allowed("up.io/a", &d(8)).await.unwrap());
        assert!(!m.blob_allowed("up.io/b", &d(7)).await.unwrap());
    }
);
