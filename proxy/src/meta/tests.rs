use super::*;

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn open() -> (tempfile::TempDir, Meta) {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    (dir, m)
}

fn rec(subject: Option<Digest>) -> ManifestRecord {
    ManifestRecord {
        media_type: crate::manifest::OCI_MANIFEST.into(),
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
        media_type: crate::manifest::OCI_MANIFEST.into(),
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
            },
        )
        .await
        .unwrap();
    }
    let m = Meta::open(&path).unwrap();
    assert_eq!(m.upload("u1").await.unwrap().unwrap().started, 7);
    m.remove_upload("u1").await.unwrap();
    assert!(m.uploads().await.unwrap().is_empty());
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

#[tokio::test]
async fn last_use_is_recorded_in_batches() {
    let (_dir, m) = open();
    assert_eq!(m.last_used(&d(1)).await.unwrap(), None);
    m.touch(vec![(d(1), 10), (d(2), 20)]).await.unwrap();
    m.touch(vec![(d(1), 30)]).await.unwrap();
    assert_eq!(m.last_used(&d(1)).await.unwrap(), Some(30));
    assert_eq!(m.last_used(&d(2)).await.unwrap(), Some(20));
    m.touch(Vec::new()).await.unwrap();
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
