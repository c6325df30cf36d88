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

on_both!(blob_links_are_per_repo, |m: Meta| async move {
    m.link_blob("a", &d(1), 5).await.unwrap();
    assert_eq!(m.blob("a", &d(1)).await.unwrap(), Some(5));
    assert_eq!(m.blob("b", &d(1)).await.unwrap(), None);
    assert_eq!(
        m.missing("a", vec![d(1), d(2)], vec![d(3)]).await.unwrap(),
        vec![d(2), d(3)]
    );
    assert!(m.unlink_blob("a", &d(1)).await.unwrap());
    assert!(!m.unlink_blob("a", &d(1)).await.unwrap());
});

on_both!(
    tags_paginate_in_order_and_stay_in_their_repo,
    |m: Meta| async move {
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
);

on_both!(
    deleting_a_manifest_drops_its_tags_and_referrer_entry,
    |m: Meta| async move {
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
);

/// As `on_both!`, for a body that opens its store itself (`open_on(backend)`), to open it again later
/// (`reopen`): `on_both_reopened!(name, |backend| async move { ... })`.
macro_rules! on_both_reopened {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                ($body)("redb").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)("postgres").await;
            }
        }
    };
}

/// Closes `m` and opens its store again, as a restarted wharf would.
async fn reopen(held: &Held, m: Meta) -> Meta {
    drop(m);
    match held {
        Held::Redb(dir) => Meta::open(&dir.path().join("meta.redb")).unwrap(),
        Held::Pg(pg) => {
            let m = Meta::open_postgres(&pg.url()).await.unwrap();
            m.wait_listening().await;
            m
        }
    }
}

on_both_reopened!(uploads_survive_reopen, |backend| async move {
    let (held, m) = open_on(backend).await;
    {
        m.create_upload(
            "u1",
            UploadRecord {
                repo: "r".into(),
                started: 7,
                client: Some("identity bob".into()),
                owner: None,
            },
        )
        .await
        .unwrap();
    }
    let m = reopen(&held, m).await;
    let rec = m.upload("u1").await.unwrap().unwrap();
    assert_eq!(rec.started, 7);
    assert_eq!(rec.client.as_deref(), Some("identity bob"));
    m.remove_upload("u1").await.unwrap();
    assert!(m.uploads().await.unwrap().is_empty());
});

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

on_both!(
    cached_misses_and_hits_follow_every_write,
    |m: Meta| async move {
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
);

fn put<'a>(repo: &'a str, tag: Option<&'a str>, digest: &'a Digest) -> ManifestPut<'a> {
    ManifestPut {
        repo,
        digest,
        record: rec(None),
        tag,
        referrer: None,
    }
}

on_both_reopened!(
    last_use_is_per_tag_batched_and_read_before_it_is_written,
    |backend| async move {
        let (held, m) = open_on(backend).await;
        m.mirror_tag("up.io/a", "v1", &d(1), Some(rec(None)), 5)
            .await
            .unwrap();
        m.mirror_tag("up.io/a", "v2", &d(1), None, 5).await.unwrap();
        m.put_manifest(put("b", None, &d(1))).await.unwrap();
        m.note_use("up.io/a", "v1", 100);
        m.note_use("up.io/a", "v1", 90);
        let used = m.last_use().await.unwrap();
        assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(100));
        assert_eq!(used.of_tag("up.io/a", Some("v2"), &d(1)), None);
        // A pull by the digest a tag names, through its repository, is a pull of that tag; through
        // another repository it is not.
        m.note_use("up.io/a", &d(1).to_string(), 120);
        m.note_use("b", &d(1).to_string(), 500);
        let used = m.last_use().await.unwrap();
        assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(120));
        assert_eq!(used.of_tag("up.io/a", Some("v2"), &d(1)), Some(120));
        assert_eq!(used.of_repository("up.io/a"), Some(120));
        m.flush_uses().await.unwrap();
        m.flush_uses().await.unwrap();
        let m = reopen(&held, m).await;
        let used = m.last_use().await.unwrap();
        assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(120));
        assert_eq!(used.of_tag("b", None, &d(1)), Some(500));
        // A later flush never moves a use back.
        m.note_use("up.io/a", "v1", 50);
        m.flush_uses().await.unwrap();
        let used = m.last_use().await.unwrap();
        assert_eq!(used.get("up.io/a", "v1"), Some(100));
    }
);

on_both!(
    a_push_is_a_use_of_the_tag_it_sets_and_only_of_it,
    |m: Meta| async move {
        m.mirror_tag("up.io/a", "v1", &d(1), Some(rec(None)), 5)
            .await
            .unwrap();
        m.note_use("up.io/a", "v1", 1_000);
        let before = usage::now();
        m.put_manifest(put("ci/app", Some("v1"), &d(1)))
            .await
            .unwrap();
        m.put_manifest(put("ci/app", None, &d(2))).await.unwrap();
        let used = m.last_use().await.unwrap();
        let pushed = used.of_tag("ci/app", Some("v1"), &d(1)).unwrap();
        assert!(pushed >= before, "{pushed} < {before}");
        assert_eq!(used.of_tag("up.io/a", Some("v1"), &d(1)), Some(1_000));
        assert_eq!(used.of_tag("ci/app", None, &d(2)), None);
    }
);

on_both!(
    deleted_tags_and_collected_digests_lose_their_uses,
    |m: Meta| async move {
        for t in ["v1", "v2", "v3"] {
            m.put_manifest(put("r", Some(t), &d(1))).await.unwrap();
        }
        m.put_manifest(put("r", None, &d(2))).await.unwrap();
        m.note_use("r", &d(2).to_string(), 7);
        m.flush_uses().await.unwrap();
        assert!(m.delete_tag("r", "v1").await.unwrap());
        let used = m.last_use().await.unwrap();
        assert_eq!(used.get("r", "v1"), None);
        assert!(used.get("r", "v2").is_some());
        {
            // Noted before the delete, written after: the next collection drops it.
            m.note_use("r", "v1", 8);
            m.flush_uses().await.unwrap();
            m.forget([d(2)].into_iter().collect()).await.unwrap();
            let used = m.last_use().await.unwrap();
            assert_eq!(used.get("r", "v1"), None);
            assert_eq!(used.get("r", &d(2).to_string()), None);
            assert!(used.get("r", "v2").is_some());
        }
        assert!(m.delete_manifest("r", &d(1)).await.unwrap());
        let used = m.last_use().await.unwrap();
        assert_eq!((used.get("r", "v2"), used.get("r", "v3")), (None, None));
        {
            assert_eq!(used.of_repository("r"), None);
        }
    }
);

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

// The routing phase asks whether a repository exists on every host-less request: the answer is
// cached, yet follows each write and removal (a removal is read from the database from then on).
on_both!(
    repository_existence_follows_writes_and_removals,
    |m: Meta| async move {
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
);

on_both!(
    what_an_upstream_sent_is_recorded_per_upstream_and_forgotten_with_the_digest,
    |m: Meta| async move {
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
        assert!(m.upstream_sent("other.io", &d(1)).await.unwrap());
        {
            m.forget([d(1)].into_iter().collect()).await.unwrap();
            assert!(!m.upstream_sent("up.io", &d(1)).await.unwrap());
            assert!(!m.upstream_sent("other.io", &d(1)).await.unwrap());
            assert!(m.upstream_sent("up.io", &d(2)).await.unwrap());
        }
    }
);

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

on_both!(
    tags_come_in_byte_order_and_a_zero_page_says_more_follow,
    |m: Meta| async move {
        for tag in ["b", "a", "B", "a-1", "a.1", "a_1", "\u{e9}t\u{e9}", "Z"] {
            m.put_manifest(put("r", Some(tag), &d(1))).await.unwrap();
        }
        let all = m.tags("r", None, usize::MAX).await.unwrap();
        let want = ["B", "Z", "a", "a-1", "a.1", "a_1", "b", "\u{e9}t\u{e9}"];
        assert_eq!(all, (want.map(String::from).to_vec(), false));
        assert_eq!(m.tags("r", None, 0).await.unwrap(), (vec![], true));
        assert_eq!(
            m.tags("r", Some("a.1"), 2).await.unwrap(),
            (vec!["a_1".into(), "b".into()], true)
        );
        assert_eq!(
            m.tags("r", Some("\u{e9}t\u{e9}"), 5).await.unwrap(),
            (vec![], false)
        );
        assert_eq!(m.tags("none", None, 5).await.unwrap(), (vec![], false));
    }
);

on_both!(missing_keeps_the_order_asked_in, |m: Meta| async move {
    m.link_blob("r", &d(2), 1).await.unwrap();
    m.put_manifest(put("r", None, &d(5))).await.unwrap();
    m.put_manifest(put("other", None, &d(6))).await.unwrap();
    assert_eq!(
        m.missing("r", vec![d(3), d(2), d(1), d(3)], vec![d(6), d(5), d(4)])
            .await
            .unwrap(),
        vec![d(3), d(1), d(3), d(6), d(4)]
    );
    assert!(m.missing("r", vec![], vec![]).await.unwrap().is_empty());
});

on_both!(
    referrers_of_a_subject_list_every_referrer_in_digest_order,
    |m: Meta| async move {
        let desc = |n: u8| Descriptor {
            media_type: wharf_model::manifest::OCI_MANIFEST.into(),
            digest: d(n),
            size: 10,
            artifact_type: Some("application/x.sig".into()),
            annotations: Some(
                [("org.example.n".to_owned(), serde_json::json!(n))]
                    .into_iter()
                    .collect(),
            ),
        };
        let mut want = Vec::new();
        for n in [4, 2, 3] {
            m.put_manifest(ManifestPut {
                repo: "r",
                digest: &d(n),
                record: rec(Some(d(1))),
                tag: None,
                referrer: Some(desc(n)),
            })
            .await
            .unwrap();
            want.push(desc(n));
        }
        want.sort_by_key(|x| x.digest.to_string());
        assert_eq!(m.referrers("r", &d(1)).await.unwrap(), want);
        assert!(m.referrers("r", &d(2)).await.unwrap().is_empty());
    }
);

on_both!(
    the_mirror_keeps_its_referrers_indexes_and_rewrites,
    |m: Meta| async move {
        assert_eq!(m.mirrored_referrers("up.io/a", &d(1)).await.unwrap(), None);
        m.mirror_referrers("up.io/a", &d(1), &d(2), 10)
            .await
            .unwrap();
        m.mirror_referrers("up.io/a", &d(1), &d(3), 20)
            .await
            .unwrap();
        assert_eq!(
            m.mirrored_referrers("up.io/a", &d(1)).await.unwrap(),
            Some((d(3), 20))
        );
        assert_eq!(m.mirrored_referrers("up.io/b", &d(1)).await.unwrap(), None);

        assert_eq!(m.rewrite_of(&d(1), "k").await.unwrap(), None);
        m.record_rewrite(&d(1), "k", &d(2)).await.unwrap();
        m.record_rewrite(&d(1), "k2", &d(1)).await.unwrap();
        assert_eq!(m.rewrite_of(&d(1), "k").await.unwrap(), Some(d(2)));
        assert_eq!(m.rewrite_of(&d(1), "k2").await.unwrap(), Some(d(1)));
        m.record_rewrite(&d(1), "k", &d(3)).await.unwrap();
        assert_eq!(m.rewrite_of(&d(1), "k").await.unwrap(), Some(d(3)));
    }
);

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

on_both!(upload_sessions_list_in_id_order, |m: Meta| async move {
    for (id, started) in [("u2", 2), ("u1", 1), ("u3", 3)] {
        let rec = UploadRecord {
            repo: "r".into(),
            started,
            client: None,
            owner: None,
        };
        m.create_upload(id, rec).await.unwrap();
    }
    let ids: Vec<String> = m
        .uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.0)
        .collect();
    assert_eq!(ids, ["u1", "u2", "u3"]);
    assert_eq!(m.upload("nope").await.unwrap(), None);
    m.remove_upload("nope").await.unwrap();
});

/// Two wharf processes on one Postgres database (`open_postgres` twice).
pub(crate) async fn two_on_one_database() -> (wharf_test_servers::Postgres, Meta, Meta) {
    let pg = tokio::task::spawn_blocking(wharf_test_servers::Postgres::start)
        .await
        .unwrap();
    let a = Meta::open_postgres(&pg.url()).await.unwrap();
    let b = Meta::open_postgres(&pg.url()).await.unwrap();
    a.wait_listening().await;
    b.wait_listening().await;
    assert!(
        a.cache.stamp().is_some() && b.cache.stamp().is_some(),
        "listening"
    );
    (pg, a, b)
}

/// Reads `read` until it answers `want` and the answer is cached (`cached`), for at most 2 s: another
/// process's write reaches this one's cache through its notification, asynchronously.
async fn settles<T, F, Fut>(what: &str, want: T, read: F, cached: impl Fn() -> Option<T>)
where
    T: PartialEq + std::fmt::Debug + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let got = read().await;
        if got == want && cached() == Some(want.clone()) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "{what}: still {got:?} (cached {:?}) 2 s after the other process's write, want {want:?}",
            cached()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Proves (issue 26): a second wharf on the same database never leaves the first serving a stale tag,
/// manifest record, blob link or tag check from its read cache: each write notifies, and the first
/// drops what it had cached. Without the notifications the first process would answer from its
/// cache forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_wharf_on_the_database_invalidates_what_the_first_cached() {
    let (_pg, a, b) = two_on_one_database().await;
    let tag = |repo: &'static str, t: &'static str| {
        let a = a.clone();
        move || {
            let a = a.clone();
            async move { a.tag(repo, t).await.unwrap() }
        }
    };
    let tag_cached = |repo: &str, t: &str| {
        let key = (repo.to_owned(), t.to_owned());
        let a = a.clone();
        move || a.cache.tags.get(&key).map(|v| v.clone())
    };

    // A tag A has cached as absent, set by B.
    settles("tag r:t", None, tag("r", "t"), tag_cached("r", "t")).await;
    b.put_manifest(put("r", Some("t"), &d(1))).await.unwrap();
    settles("tag r:t", Some(d(1)), tag("r", "t"), tag_cached("r", "t")).await;
    // Moved by B.
    b.put_manifest(put("r", Some("t"), &d(2))).await.unwrap();
    settles("tag r:t", Some(d(2)), tag("r", "t"), tag_cached("r", "t")).await;
    // Deleted by B.
    assert!(b.delete_tag("r", "t").await.unwrap());
    settles("tag r:t", None, tag("r", "t"), tag_cached("r", "t")).await;

    // A manifest record and the tags naming it, removed by B.
    b.put_manifest(put("r", Some("u"), &d(3))).await.unwrap();
    settles("tag r:u", Some(d(3)), tag("r", "u"), tag_cached("r", "u")).await;
    let manifest = || {
        let a = a.clone();
        async move { a.manifest("r", &d(3)).await.unwrap().is_some() }
    };
    let manifest_cached = || {
        a.cache
            .manifests
            .get(&("r".into(), d(3)))
            .map(|v| v.is_some())
    };
    settles("manifest r@3", true, manifest, manifest_cached).await;
    assert!(b.delete_manifest("r", &d(3)).await.unwrap());
    settles("manifest r@3", false, manifest, manifest_cached).await;
    settles("tag r:u", None, tag("r", "u"), tag_cached("r", "u")).await;

    // A blob link: added by B where A cached a miss, then removed by B.
    let blob = || {
        let a = a.clone();
        async move { a.blob("r", &d(5)).await.unwrap() }
    };
    let blob_cached = || a.cache.blobs.get(&("r".into(), d(5))).map(|v| *v);
    settles("blob r@5", None, blob, blob_cached).await;
    b.link_sent_blob("r", "up.io", &d(5), 7).await.unwrap();
    settles("blob r@5", Some(7), blob, blob_cached).await;
    assert!(b.unlink_blob("r", &d(5)).await.unwrap());
    settles("blob r@5", None, blob, blob_cached).await;

    // The mirror's tag check, confirmed again by B.
    b.mirror_tag("up.io/r", "t", &d(6), Some(rec(None)), 5)
        .await
        .unwrap();
    let checked = || {
        let a = a.clone();
        async move { a.tag_checked("up.io/r", "t").await.unwrap() }
    };
    let checked_cached = || {
        a.cache
            .checked
            .get(&("up.io/r".into(), "t".into()))
            .map(|v| *v)
    };
    settles("checked up.io/r:t", Some(5), checked, checked_cached).await;
    b.mirror_tag("up.io/r", "t", &d(6), None, 9).await.unwrap();
    settles("checked up.io/r:t", Some(9), checked, checked_cached).await;

    // Whether the repository exists (the routing phase's question), after B removed its last link.
    assert!(a.repo_exists("up.io/r").await.unwrap());
    b.link_blob("gone", &d(8), 1).await.unwrap();
    assert!(a.repo_exists("gone").await.unwrap());
    assert!(b.unlink_blob("gone", &d(8)).await.unwrap());
    let exists = || {
        let a = a.clone();
        async move { a.repo_exists("gone").await.unwrap() }
    };
    settles("repo gone", false, exists, || Some(false)).await;
}

/// Two processes flushing uses of the same tag keep the later, whichever commits last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wharfs_flushing_one_tag_keep_its_latest_use() {
    let (_pg, a, b) = two_on_one_database().await;
    a.note_use("r", "t", 200);
    b.note_use("r", "t", 100);
    b.note_use("r", "u", 300);
    a.flush_uses().await.unwrap();
    b.flush_uses().await.unwrap();
    let used = a.last_use().await.unwrap();
    assert_eq!(
        (used.get("r", "t"), used.get("r", "u")),
        (Some(200), Some(300))
    );
    // Many at once, in both orders: no deadlock, nothing lost.
    for n in 0..50u64 {
        a.note_use("r", &format!("t{n}"), 1_000 + n);
        b.note_use("r", &format!("t{}", 49 - n), 2_000 + n);
    }
    let (x, y) = tokio::join!(a.flush_uses(), b.flush_uses());
    x.unwrap();
    y.unwrap();
    let used = b.last_use().await.unwrap();
    for n in 0..50u64 {
        assert_eq!(used.get("r", &format!("t{n}")), Some(2_049 - n));
    }
}

/// Proves (issue 26): with the database down, reads and writes fail soon as unavailable (the
/// registry's 503 with Retry-After), never hang; a failed flush keeps its uses; once the database is
/// back the pool reconnects and the invalidation listener listens again, with nothing half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_is_unavailable_until_it_is_back() {
    let (mut pg, m) = match open_on("postgres").await {
        (Held::Pg(pg), m) => (pg, m),
        _ => unreachable!(),
    };
    m.put_manifest(put("r", Some("t"), &d(1))).await.unwrap();
    assert_eq!(m.tag("r", "t").await.unwrap(), Some(d(1)));
    tokio::task::block_in_place(|| pg.stop());

    let soon = std::time::Duration::from_secs(15);
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(soon, m.tag("r", "other"))
        .await
        .expect("a read with the database down hangs");
    let e = read.expect_err("a read with the database down");
    assert!(e.is_unavailable(), "{e}");
    let write = tokio::time::timeout(soon, m.put_manifest(put("r", Some("u"), &d(2))))
        .await
        .expect("a write with the database down hangs");
    let e = write.expect_err("a write with the database down");
    assert!(e.is_unavailable(), "{e}");
    m.note_use("r", "t", 77);
    let e = tokio::time::timeout(soon, m.flush_uses())
        .await
        .expect("a flush with the database down hangs")
        .expect_err("a flush with the database down");
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < soon, "{:?}", started.elapsed());

    tokio::task::block_in_place(|| pg.start_again());
    m.wait_listening().await;
    assert!(m.cache.stamp().is_some(), "the listener is back");
    assert_eq!(m.tag("r", "other").await.unwrap(), None);
    assert_eq!(
        m.manifest("r", &d(2)).await.unwrap(),
        None,
        "nothing half-written"
    );
    assert_eq!(m.tag("r", "t").await.unwrap(), Some(d(1)));
    m.put_manifest(put("r", Some("u"), &d(2))).await.unwrap();
    assert_eq!(m.tag("r", "u").await.unwrap(), Some(d(2)));
    m.flush_uses().await.unwrap();
    let used = m.last_use().await.unwrap();
    assert_eq!(used.get("r", "t").map(|t| t >= 77), Some(true));
    assert!(m.uses.0.is_empty(), "the failed flush's uses were written");
}

/// Proves (issue 26): a write's update of this process's read cache, after its commit, is dropped if a
/// notification was handled meanwhile. Another process may have committed over the write and its
/// notification already removed the entry: caching the older value then would serve it until some
/// later invalidation. Likewise while the listener is down, when nothing may be cached.
#[test]
fn a_write_overtaken_by_a_notification_is_not_cached() {
    use super::db::{Known, ReadCache};
    use super::pg::conn::Invalidate;
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
// --- Postgres: collect, push, stats, scrub ---

/// How a test opens its store once more: the same redb file as a restarted process would (the test
/// drops its handle first), or the same Postgres database as a second process beside the first.
#[derive(Clone)]
pub(crate) enum Again {
    Redb(std::path::PathBuf),
    Pg(String),
}

impl Held {
    pub(crate) fn again(&self) -> Again {
        match self {
            Held::Redb(dir) => Again::Redb(dir.path().join("meta.redb")),
            Held::Pg(pg) => Again::Pg(pg.url()),
        }
    }
}

impl Again {
    pub(crate) async fn open(&self) -> Meta {
        match self {
            Again::Redb(path) => Meta::open(path).unwrap(),
            Again::Pg(url) => {
                let m = Meta::open_postgres(url).await.unwrap();
                m.wait_listening().await;
                m
            }
        }
    }
}

/// `on_both!` for a test that opens its store again: `|m: Meta, again: Again| async move { ... }`.
#[macro_export]
macro_rules! on_both_again {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                let (held, m) = $crate::meta::tests::open_on("redb").await;
                ($body)(m, held.again()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (held, m) = $crate::meta::tests::open_on("postgres").await;
                ($body)(m, held.again()).await;
            }
        }
    };
}

/// Runs `async fn name(backend: &str)` once per metadata backend, as `name::redb` and
/// `name::postgres` (for fixtures that build more than a `Meta`: the collector's, the scrub's). An
/// attribute after the name goes on the Postgres run.
#[macro_export]
macro_rules! each_backend {
    ($name:ident $(, $pg:meta)?) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                super::$name("redb").await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$pg])?
            async fn postgres() {
                super::$name("postgres").await
            }
        }
    };
}

fn lease(purpose: &str, digests: &[Digest]) -> LeaseRecord {
    LeaseRecord {
        purpose: purpose.into(),
        created: 10,
        expires: 20,
        labels: [("repository".to_owned(), "team/app".to_owned())].into(),
        digests: digests.to_vec(),
        ingests: vec!["abc".into()],
    }
}

on_both!(leases_are_put_listed_and_deleted, |m: Meta| async move {
    assert!(m.leases().await.unwrap().is_empty());
    m.put_lease("b", &lease("two", &[d(2)])).await.unwrap();
    m.put_lease("a", &lease("one", &[d(1)])).await.unwrap();
    m.put_lease("b", &lease("two again", &[d(2), d(3)]))
        .await
        .unwrap();
    assert_eq!(
        m.leases().await.unwrap(),
        vec![
            ("a".to_owned(), lease("one", &[d(1)])),
            ("b".to_owned(), lease("two again", &[d(2), d(3)])),
        ]
    );
    m.delete_lease("a").await.unwrap();
    m.delete_lease("a").await.unwrap();
    let ids: Vec<String> = m.leases().await.unwrap().into_iter().map(|l| l.0).collect();
    assert_eq!(ids, ["b"]);
});

fn delivery(reference: &str) -> push::Delivery {
    push::Delivery {
        state: push::State::Pending,
        mode: wharf_model::config::PushMode::StoreAndForward,
        route: "ci".into(),
        repository: "ci/app".into(),
        reference: reference.into(),
        tagged: true,
        digest: d(1),
        target: "up.io".into(),
        upstream_repository: "team/app".into(),
        upstream_digest: None,
        platforms: None,
        attempts: 0,
        last_error: None,
        next_try_ms: None,
        created: 5,
        delivered_at: None,
        lease: Some("l".into()),
        committed: false,
    }
}

on_both!(the_push_journal_keeps_push_order, |m: Meta| async move {
    assert!(m.deliveries().await.unwrap().is_empty());
    let mut ids = Vec::new();
    for r in ["v1", "v2", "v3"] {
        ids.push(m.create_delivery(&delivery(r)).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut done = delivery("v2");
    done.state = push::State::Delivered;
    done.attempts = 2;
    done.upstream_digest = Some(d(9));
    done.platforms = Some(vec!["linux/amd64".into()]);
    done.delivered_at = Some(8);
    m.put_delivery(ids[1], &done).await.unwrap();
    assert_eq!(m.delivery(ids[1]).await.unwrap(), Some(done.clone()));
    assert!(m.delete_delivery(ids[0]).await.unwrap());
    assert!(!m.delete_delivery(ids[0]).await.unwrap());
    assert_eq!(m.delivery(ids[0]).await.unwrap(), None);
    let next = m.create_delivery(&delivery("v4")).await.unwrap();
    assert!(next > ids[2]);
    let list = m.deliveries().await.unwrap();
    let order: Vec<(u64, &str)> = list
        .iter()
        .map(|(id, r)| (*id, r.reference.as_str()))
        .collect();
    assert_eq!(order, vec![(ids[1], "v2"), (ids[2], "v3"), (next, "v4")]);
    assert_eq!(list[0].1, done);
});

/// Claims `id` on `m`, retrying for at most 5 s: a claim let go of by dropping it, or by losing its
/// connection, is released asynchronously.
async fn claim_within(m: &Meta, id: u64, what: &str) -> push::Claim {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(c) = m.claim_delivery(id).await.unwrap() {
            return c;
        }
        assert!(
            std::time::Instant::now() < until,
            "delivery {id} still claimed 5 s after {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// Proves (issue 27): one delivery is claimed by one holder at a time, from its creation when the
// creator asks, and is free again once released or dropped.
on_both!(
    a_claimed_delivery_is_refused_until_released,
    |m: Meta| async move {
        let one = m.create_delivery(&delivery("v1")).await.unwrap();
        let two = m.create_delivery(&delivery("v2")).await.unwrap();
        let claim = m
            .claim_delivery(one)
            .await
            .unwrap()
            .expect("a free entry is granted");
        assert_eq!(claim.id(), one);
        assert!(
            m.claim_delivery(one).await.unwrap().is_none(),
            "a claimed entry is refused to a second claim"
        );
        let other = m.claim_delivery(two).await.unwrap();
        assert!(other.is_some(), "another entry is claimed on its own");
        claim.release().await;
        let again = m
            .claim_delivery(one)
            .await
            .unwrap()
            .expect("released, it is granted again");
        drop(again);
        drop(claim_within(&m, one, "its claim was dropped").await);

        let (three, created) = m.create_claimed_delivery(&delivery("v3")).await.unwrap();
        assert_eq!(created.id(), three);
        assert!(three > two);
        assert!(
            m.claim_delivery(three).await.unwrap().is_none(),
            "an entry created claimed is held by its creator"
        );
        assert_eq!(m.delivery(three).await.unwrap(), Some(delivery("v3")));
        created.release().await;
        assert!(m.claim_delivery(three).await.unwrap().is_some());
    }
);

/// Proves (issue 27): two wharfs on one database never hold one delivery at once. A claim held by one
/// is refused to the other, until the holder releases it, or its connection is gone without
/// unlocking (a replica killed mid-delivery): then the other takes the entry over, with no
/// heartbeat and no timeout to wait out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claim_holds_across_wharfs_until_released_or_its_holder_is_gone() {
    let (_pg, a, b) = two_on_one_database().await;
    let id = a.create_delivery(&delivery("v1")).await.unwrap();
    let held = a.claim_delivery(id).await.unwrap().expect("granted to a");
    assert!(
        b.claim_delivery(id).await.unwrap().is_none(),
        "b claimed a delivery a holds"
    );
    held.release().await;
    let held = b
        .claim_delivery(id)
        .await
        .unwrap()
        .expect("released by a, granted to b");
    assert!(a.claim_delivery(id).await.unwrap().is_none());
    held.release().await;

    let held = a.claim_delivery(id).await.unwrap().unwrap();
    held.lose_connection();
    claim_within(&b, id, "its holder's connection closed")
        .await
        .release()
        .await;

    // A holder gone with its whole handle (the process, as far as the database can tell).
    let (created, held) = a.create_claimed_delivery(&delivery("v2")).await.unwrap();
    assert!(
        b.claim_delivery(created).await.unwrap().is_none(),
        "b claimed a delivery a is creating"
    );
    drop(a);
    held.lose_connection();
    assert!(claim_within(&b, created, "a was dropped").await.id() == created);
}

on_both!(
    delivered_blobs_are_remembered_per_endpoint,
    |m: Meta| async move {
        assert_eq!(m.delivered_blob("up.io", &d(1)).await.unwrap(), None);
        m.record_delivered_blob("up.io", &d(1), "team/a")
            .await
            .unwrap();
        m.record_delivered_blob("other.io", &d(1), "x/y")
            .await
            .unwrap();
        m.record_delivered_blob("up.io", &d(1), "team/b")
            .await
            .unwrap();
        assert_eq!(
            m.delivered_blob("up.io", &d(1)).await.unwrap().as_deref(),
            Some("team/b")
        );
        assert_eq!(
            m.delivered_blob("other.io", &d(1))
                .await
                .unwrap()
                .as_deref(),
            Some("x/y")
        );
        assert_eq!(m.delivered_blob("up.io", &d(2)).await.unwrap(), None);
    }
);

/// Two wharf processes on one database add deliveries: each id is greater than every id given
/// before it, whichever process asked, and both list the same journal in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_add_deliveries_in_push_order() {
    let (held, a) = open_on("postgres").await;
    let b = held.again().open().await;
    let mut last = 0;
    for i in 0..6 {
        let m = if i % 2 == 0 { &a } else { &b };
        let id = m
            .create_delivery(&delivery(&format!("v{i}")))
            .await
            .unwrap();
        assert!(id > last, "{id} after {last}");
        last = id;
    }
    let many = |m: Meta, p: &'static str| async move {
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                m.create_delivery(&delivery(&format!("{p}{i}")))
                    .await
                    .unwrap(),
            );
        }
        ids
    };
    let (x, y) = tokio::join!(
        tokio::spawn(many(a.clone(), "a")),
        tokio::spawn(many(b.clone(), "b"))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x.windows(2).all(|w| w[0] < w[1]), "{x:?}");
    assert!(y.windows(2).all(|w| w[0] < w[1]), "{y:?}");
    let listed: Vec<u64> = a.deliveries().await.unwrap().iter().map(|e| e.0).collect();
    assert_eq!(listed.len(), 46);
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
    let seen: Vec<u64> = b.deliveries().await.unwrap().iter().map(|e| e.0).collect();
    assert_eq!(listed, seen);
}

on_both_again!(
    status_records_are_kept_by_name,
    |m: Meta, again: Again| async move {
        assert_eq!(
            m.status_record::<Vec<String>>("denials").await.unwrap(),
            None
        );
        m.put_status_record("denials", &vec!["a".to_owned()])
            .await
            .unwrap();
        m.put_status_record("denials", &vec!["a".to_owned(), "b".to_owned()])
            .await
            .unwrap();
        let gc = LastGc {
            started: 42,
            millis: 7,
            removed: 3,
            removed_bytes: 1234,
            evicted: 1,
        };
        m.record_gc(&gc).await.unwrap();
        drop(m);
        let m = again.open().await;
        assert_eq!(
            m.status_record::<Vec<String>>("denials").await.unwrap(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(m.last_gc().await.unwrap(), Some(gc));
        // A record that no longer reads as the type asked for is an error, not a panic.
        assert!(matches!(
            m.status_record::<u64>("denials").await,
            Err(MetaError::Corrupt(_))
        ));
    }
);

on_both!(
    a_scrub_pass_keeps_its_progress_until_it_finishes,
    |m: Meta| async move {
        assert_eq!(m.scrub_progress::<u64>().await.unwrap(), None);
        m.save_scrub_progress(&3u64).await.unwrap();
        m.save_scrub_progress(&5u64).await.unwrap();
        assert_eq!(m.scrub_progress::<u64>().await.unwrap(), Some(5));
        assert_eq!(m.last_scrub::<String>().await.unwrap(), None);
        m.scrub_finished(&"all sound".to_owned()).await.unwrap();
        assert_eq!(m.scrub_progress::<u64>().await.unwrap(), None);
        assert_eq!(
            m.last_scrub::<String>().await.unwrap().as_deref(),
            Some("all sound")
        );
    }
);

on_both!(
    damaged_content_loses_its_links_everywhere,
    |m: Meta| async move {
        m.link_blob("b", &d(1), 5).await.unwrap();
        m.link_blob("a", &d(1), 5).await.unwrap();
        m.link_blob("a", &d(2), 6).await.unwrap();
        assert_eq!(
            m.holders(&d(1)).await.unwrap(),
            ["a".to_owned(), "b".to_owned()].into()
        );
        // Cached now: the forgetting must replace it.
        assert_eq!(m.blob("a", &d(1)).await.unwrap(), Some(5));
        assert_eq!(
            m.forget_damaged(&d(1)).await.unwrap(),
            ["a".to_owned(), "b".to_owned()].into()
        );
        assert_eq!(m.blob("a", &d(1)).await.unwrap(), None);
        assert_eq!(m.blob("b", &d(1)).await.unwrap(), None);
        assert_eq!(m.blob("a", &d(2)).await.unwrap(), Some(6));
        assert!(m.holders(&d(1)).await.unwrap().is_empty());
        assert!(m.forget_damaged(&d(1)).await.unwrap().is_empty());
        assert_eq!(
            m.inventory().await.unwrap().blob_links,
            vec![("a".into(), d(2))]
        );
        // Forgotten with the digest by the collector too.
        m.link_blob("c", &d(3), 1).await.unwrap();
        assert_eq!(m.blob("c", &d(3)).await.unwrap(), Some(1));
        let gone = m.forget([d(2), d(3)].into_iter().collect()).await.unwrap();
        assert_eq!(
            gone,
            Forgotten {
                blob_links: 2,
                manifest_records: 0
            }
        );
        assert_eq!(m.blob("c", &d(3)).await.unwrap(), None);
        assert!(m.inventory().await.unwrap().blob_links.is_empty());
    }
);

/// Whatever one process forgets (a collection, a scrub), another stops serving from its cache as
/// soon as the notification arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_stops_serving_forgotten_links() {
    let (held, a) = open_on("postgres").await;
    let b = held.again().open().await;
    a.link_blob("r", &d(1), 5).await.unwrap();
    a.link_blob("r", &d(2), 6).await.unwrap();
    // Read until cached (a read that the notifications of these links overtake is not).
    for n in [1, 2] {
        let key = ("r".to_owned(), d(n));
        for _ in 0..200 {
            assert!(b.blob("r", &d(n)).await.unwrap().is_some());
            if b.cache.blobs.contains_key(&key) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(b.cache.blobs.contains_key(&key), "link {n} is cached");
    }
    a.forget([d(1)].into_iter().collect()).await.unwrap();
    a.forget_damaged(&d(2)).await.unwrap();
    for n in [1, 2] {
        let mut waited = 0;
        while b.blob("r", &d(n)).await.unwrap().is_some() {
            assert!(waited < 200, "the other process still serves link {n}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            waited += 1;
        }
    }
}

fn referrer_of(n: u8) -> Descriptor {
    Descriptor {
        media_type: wharf_model::manifest::OCI_MANIFEST.into(),
        digest: d(n),
        size: 10,
        artifact_type: Some("application/x.sig".into()),
        annotations: None,
    }
}

on_both!(
    the_snapshot_holds_every_edge_and_forget_drops_them,
    |m: Meta| async move {
        m.link_sent_blob("up.io/a", "up.io", &d(1), 5)
            .await
            .unwrap();
        m.link_blob("b", &d(1), 5).await.unwrap();
        m.put_manifest(put("b", Some("v1"), &d(2))).await.unwrap();
        m.put_manifest(ManifestPut {
            repo: "b",
            digest: &d(3),
            record: rec(Some(d(2))),
            tag: None,
            referrer: Some(referrer_of(3)),
        })
        .await
        .unwrap();
        m.put_manifest(put("a", None, &d(2))).await.unwrap();
        m.record_rewrite(&d(2), "plugins:x", &d(4)).await.unwrap();
        m.mirror_referrers("up.io/a", &d(2), &d(5), 9)
            .await
            .unwrap();
        m.note_use("b", &d(3).to_string(), 7);
        m.flush_uses().await.unwrap();
        m.note_use("b", "v1", u64::MAX / 2);

        let s = m.snapshot().await.unwrap();
        assert_eq!(s.tags, vec![("b".into(), "v1".into(), d(2))]);
        let mut manifests: Vec<&Digest> = s.manifests.keys().collect();
        manifests.sort();
        let mut want = [d(2), d(3)];
        want.sort();
        assert_eq!(manifests, want.iter().collect::<Vec<_>>());
        assert_eq!(s.referrers, vec![(d(2), d(3))]);
        assert_eq!(s.rewrites, vec![(d(2), "plugins:x".into(), d(4))]);
        assert_eq!(s.mirror_referrers, vec![(d(2), d(5))]);
        assert_eq!(s.last_use.get("b", &d(3).to_string()), Some(7));
        assert_eq!(
            s.last_use.get("b", "v1"),
            Some(u64::MAX / 2),
            "not written yet"
        );
        assert_eq!(m.manifest_repos().await.unwrap(), {
            let mut v = vec![
                ("a".to_owned(), d(2)),
                ("b".into(), d(2)),
                ("b".into(), d(3)),
            ];
            v.sort_by(|x, y| (&x.0, x.1.to_string()).cmp(&(&y.0, y.1.to_string())));
            v
        });

        assert_eq!(m.manifest("b", &d(3)).await.unwrap(), Some(rec(Some(d(2)))));
        let gone = m
            .forget([d(1), d(3), d(4), d(5)].into_iter().collect())
            .await
            .unwrap();
        assert_eq!(
            gone,
            Forgotten {
                blob_links: 2,
                manifest_records: 1
            }
        );
        assert_eq!(m.blob("up.io/a", &d(1)).await.unwrap(), None);
        assert_eq!(m.blob("b", &d(1)).await.unwrap(), None);
        assert_eq!(m.manifest("b", &d(3)).await.unwrap(), None);
        assert!(!m.upstream_sent("up.io", &d(1)).await.unwrap());
        assert!(m.referrers("b", &d(2)).await.unwrap().is_empty());
        assert_eq!(m.rewrite_of(&d(2), "plugins:x").await.unwrap(), None);
        assert_eq!(m.mirrored_referrers("up.io/a", &d(2)).await.unwrap(), None);
        let s = m.snapshot().await.unwrap();
        assert_eq!(s.tags, vec![("b".into(), "v1".into(), d(2))]);
        assert!(s.referrers.is_empty() && s.rewrites.is_empty() && s.mirror_referrers.is_empty());
        assert_eq!(s.last_use.get("b", &d(3).to_string()), None);
        assert_eq!(m.manifest_repos().await.unwrap().len(), 2);
    }
);

on_both!(
    damaged_manifests_lose_their_records_and_keep_their_tags,
    |m: Meta| async move {
        m.put_manifest(put("b", Some("v1"), &d(2))).await.unwrap();
        m.put_manifest(put("a", Some("v1"), &d(2))).await.unwrap();
        m.put_manifest(ManifestPut {
            repo: "b",
            digest: &d(3),
            record: rec(Some(d(1))),
            tag: None,
            referrer: Some(referrer_of(3)),
        })
        .await
        .unwrap();
        m.link_blob("b", &d(4), 1).await.unwrap();
        let inv = m.inventory().await.unwrap();
        assert_eq!(inv.blob_links, vec![("b".into(), d(4))]);
        let mut want = vec![
            ("a".to_owned(), d(2), rec(None)),
            ("b".into(), d(2), rec(None)),
            ("b".into(), d(3), rec(Some(d(1)))),
        ];
        want.sort_by(|x, y| (&x.0, x.1.to_string()).cmp(&(&y.0, y.1.to_string())));
        assert_eq!(inv.manifests, want);
        assert_eq!(
            inv.tags,
            vec![
                ("a".into(), "v1".into(), d(2)),
                ("b".into(), "v1".into(), d(2))
            ]
        );
        assert_eq!(
            m.holders(&d(2)).await.unwrap(),
            ["a".to_owned(), "b".to_owned()].into()
        );
        assert!(m.manifest("a", &d(2)).await.unwrap().is_some());
        assert_eq!(
            m.forget_damaged(&d(2)).await.unwrap(),
            ["a".to_owned(), "b".to_owned()].into()
        );
        assert_eq!(m.manifest("a", &d(2)).await.unwrap(), None);
        assert_eq!(m.tag("a", "v1").await.unwrap(), Some(d(2)), "tags stay");
        m.forget_damaged(&d(3)).await.unwrap();
        assert!(m.referrers("b", &d(1)).await.unwrap().is_empty());
        let inv = m.inventory().await.unwrap();
        assert!(inv.manifests.is_empty());
        assert_eq!(inv.tags.len(), 2);
    }
);

/// Proves (issue 26): forgetting collected or damaged content records it as absent in this process's
/// cache only if no notification came in since its transaction began: another process may have
/// linked the digest again meanwhile, and caching the absence over that would hide the new link
/// until some later invalidation.
#[test]
fn a_forget_overtaken_by_a_notification_caches_no_absence() {
    use super::db::ReadCache;
    use super::pg::conn::Invalidate;
    let cache = ReadCache::default();
    let key = ("r".to_owned(), d(1));
    let stamp = cache.stamp();
    collect::forgotten(&cache, stamp, vec![("r".into(), d(1).to_string())], vec![]);
    assert_eq!(cache.blobs.get(&key).map(|v| *v), Some(None));

    let stamp = cache.stamp();
    cache.invalidate(Invalidate::Blob, "r", &d(1).to_string());
    collect::forgotten(&cache, stamp, vec![("r".into(), d(1).to_string())], vec![]);
    assert!(cache.blobs.get(&key).is_none(), "forget cached an absence");
    let stamp = cache.stamp();
    cache.invalidate(Invalidate::Manifest, "r", &d(1).to_string());
    scrub::damaged_forgotten(&cache, stamp, &d(1), vec!["r".into()], vec!["r".into()]);
    assert!(
        cache.blobs.get(&key).is_none(),
        "forget_damaged cached an absence"
    );
    assert!(cache.manifests.get(&key).is_none());
}
