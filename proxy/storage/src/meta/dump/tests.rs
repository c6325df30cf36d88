use std::time::Duration;

use serde_json::json;

use super::*;
use crate::meta::tests::{open_on, Held};
use crate::meta::{LeaseRecord, ManifestRecord, UploadRecord};
use wharf_model::digest::Digest;

fn d(n: u8) -> String {
    Digest::sha256_of(&[n]).to_string()
}

fn s(x: &str) -> String {
    x.to_owned()
}

/// A row or two in every table, with names whose order differs between bytewise and a
/// locale's collation (`B` < `a`, `a-b` < `a/b` < `ab`): redb and Postgres must agree on it.
fn every_table() -> Dump {
    let record = |subject: Option<u8>| {
        serde_json::to_value(ManifestRecord {
            media_type: wharf_model::manifest::OCI_MANIFEST.into(),
            size: 321,
            subject: subject.map(|n| Digest::sha256_of(&[n])),
        })
        .unwrap()
    };
    let lease = serde_json::to_value(LeaseRecord {
        purpose: "upload team/app".into(),
        created: 1_700_000_000,
        expires: 1_700_000_600,
        labels: [(s("repository"), s("team/app"))].into(),
        digests: vec![Digest::sha256_of(&[1])],
        ingests: vec![s("up-1")],
    })
    .unwrap();
    Dump {
        tags: vec![
            (s("a/b"), s("v1"), d(1)),
            (s("B"), s("latest"), d(2)),
            (s("a-b"), s("v1"), d(1)),
            (s("ab"), s("Z"), d(1)),
        ],
        manifests: vec![
            (s("a/b"), d(1), record(None)),
            (s("B"), d(2), record(None)),
            (s("a/b"), d(9), record(Some(1))),
        ],
        blobs: vec![
            (s("a/b"), d(3), 10),
            (s("B"), d(3), 10),
            (s("a/b"), d(4), u32::MAX as u64 + 7),
        ],
        referrers: vec![(
            s("a/b"),
            d(1),
            d(9),
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(9), "size": 321}),
        )],
        tag_checked: vec![(s("docker.io/library/alpine"), s("3"), 1_700_000_100)],
        mirror_referrers: vec![(s("docker.io/library/alpine"), d(1), d(5), 1_700_000_200)],
        rewrites: vec![
            (d(2), s("platforms:linux/amd64"), d(6)),
            (d(1), s("k"), d(1)),
        ],
        last_use: vec![
            (s("a/b"), s("v1"), 1_700_000_300),
            (s("a/b"), d(1), 1_700_000_301),
        ],
        index_children: vec![(s("docker.io/library/alpine"), d(7), d(5))],
        kept_blobs: vec![(s("docker.io/library/alpine"), d(3), d(7))],
        leases: vec![(s("lease-1"), lease)],
        push_journal: vec![
            (
                3,
                json!({"state": "pending", "repository": "ci/app", "reference": "v1"}),
            ),
            (12, json!({"state": "delivered", "attempts": 1})),
        ],
        delivered_blobs: vec![(s("https://registry.example"), d(3), s("team/app"))],
        cache_samples: vec![(1_700_000_000, [1_600_000_000, 5, 2, 1 << 40, 77])],
        status_records: vec![
            (
                s("last_gc"),
                json!({"started": 1, "millis": 2, "removed": 3, "removed_bytes": 4, "evicted": 0}),
            ),
            (s("scrub_progress"), json!(d(3))),
        ],
        upstream_sent: vec![(d(3), s("docker.io")), (d(3), s("ghcr.io"))],
        uploads_left_out: 0,
    }
}

/// The same records, whatever each backend counts of upload sessions.
fn records(mut d: Dump) -> Dump {
    d.uploads_left_out = 0;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_goes_from_redb_to_postgres_and_back_unchanged() {
    let (_a, redb) = open_on("redb").await;
    // An upload session names a partial file in this data directory: never carried.
    redb.create_upload(
        "up-1",
        UploadRecord {
            repo: s("team/app"),
            started: 1,
            client: None,
            owner: None,
        },
    )
    .await
    .unwrap();
    let first = redb.import(every_table()).await.unwrap();
    assert!(
        first
            .tables
            .iter()
            .all(|t| t.rows > 0 && t.changed == t.rows),
        "{first:?}"
    );
    assert_eq!(
        first.tables.iter().map(|t| t.table).collect::<Vec<_>>(),
        Dump::TABLES
    );
    let from_redb = redb.export().await.unwrap();
    assert_eq!(from_redb.uploads_left_out, 1);
    for (table, rows) in from_redb.rows() {
        assert!(rows > 0, "{table} must be exported");
    }
    assert_eq!(
        from_redb.tags[0].0, "B",
        "bytewise order: {:?}",
        from_redb.tags
    );

    let (_p, pg) = open_on("postgres").await;
    let into_pg = pg.import(from_redb.clone()).await.unwrap();
    assert_eq!(into_pg.rows(), into_pg.changed());
    let from_pg = pg.export().await.unwrap();
    assert_eq!(from_pg.uploads_left_out, 0);
    assert_eq!(from_pg, records(from_redb.clone()));

    let (_b, back) = open_on("redb").await;
    back.import(from_pg.clone()).await.unwrap();
    assert_eq!(back.export().await.unwrap(), records(from_redb.clone()));

    // Run again (a copy that stopped, started over): nothing changes.
    let again = pg.import(from_redb.clone()).await.unwrap();
    assert_eq!(
        (again.rows(), again.changed()),
        (into_pg.rows(), 0),
        "{again:?}"
    );
    let again = back.import(from_pg).await.unwrap();
    assert_eq!(again.changed(), 0, "{again:?}");
    assert_eq!(pg.export().await.unwrap(), records(from_redb));
}

crate::on_both!(
    imported_records_read_back_through_the_usual_methods,
    |m: Meta| async move {
        m.import(every_table()).await.unwrap();
        let dg = |n: u8| Digest::sha256_of(&[n]);
        assert_eq!(m.tag("a/b", "v1").await.unwrap(), Some(dg(1)));
        assert_eq!(
            m.blob("a/b", &dg(4)).await.unwrap(),
            Some(u32::MAX as u64 + 7)
        );
        assert_eq!(m.blob("a/b", &dg(5)).await.unwrap(), None);
    }
);

crate::on_both!(
    a_changed_row_is_counted_and_replaced,
    |m: Meta| async move {
        m.import(every_table()).await.unwrap();
        let mut d = every_table();
        d.tags[0].2 = self::d(2);
        d.push_journal[1].1 = json!({"state": "failed"});
        let imported = m.import(d).await.unwrap();
        let changed: Vec<_> = imported
            .tables
            .iter()
            .filter(|t| t.changed > 0)
            .map(|t| (t.table, t.changed))
            .collect();
        assert_eq!(changed, vec![("tags", 1), ("push_journal", 1)]);
        let out = m.export().await.unwrap();
        assert!(out.tags.contains(&(s("a/b"), s("v1"), self::d(2))));
        assert!(out.push_journal.contains(&(12, json!({"state": "failed"}))));
    }
);

async fn next_journal_id(pg: &crate::meta::Pg) -> i64 {
    let c = pg.client().await.unwrap();
    c.query_one("SELECT nextval('push_journal_ids')", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_numbers_the_next_delivery_after_the_imported_ones() {
    let (_p, m) = open_on("postgres").await;
    m.import(every_table()).await.unwrap();
    let pg = m.pg().unwrap().clone();
    assert_eq!(next_journal_id(&pg).await, 13);
    // An import with lower ids never moves the sequence back.
    let older = Dump {
        push_journal: vec![(1, json!({}))],
        ..Dump::default()
    };
    m.import(older).await.unwrap();
    assert_eq!(next_journal_id(&pg).await, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_an_imported_tag_at_once() {
    let (held, m) = open_on("postgres").await;
    let Held::Pg(server) = &held else {
        unreachable!()
    };
    let other = Meta::open_postgres(&server.url()).await.unwrap();
    other.wait_listening().await;
    // Cached as absent in the other process.
    assert_eq!(other.tag("a/b", "v1").await.unwrap(), None);
    assert_eq!(
        other.blob("B", &Digest::sha256_of(&[3])).await.unwrap(),
        None
    );
    m.import(every_table()).await.unwrap();
    for _ in 0..200 {
        if other.tag("a/b", "v1").await.unwrap().is_some()
            && other.blob("B", &Digest::sha256_of(&[3])).await.unwrap() == Some(10)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the other process still serves what it cached before the import");
}
