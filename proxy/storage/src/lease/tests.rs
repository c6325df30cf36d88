use std::collections::BTreeMap;

use super::*;
use crate::meta::tests::open_on;

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

/// A lease is data in the metadata store: a restarted server (a new `Leases` over the same store)
/// still honours a live one, and forgets an expired one.
async fn leases_outlive_the_process_until_they_expire(backend: &str) {
    let (_held, meta) = open_on(backend).await;
    let leases = Leases::new(meta.clone());
    let live = leases
        .acquire("push team/app", Duration::from_secs(600))
        .await
        .unwrap();
    live.protect(&[d(1), d(2)]).await.unwrap();
    live.protect(&[d(2)]).await.unwrap();
    // A lease of the earlier process that has expired by the time this one starts.
    let short_id = "expired-one".to_owned();
    let expired = LeaseRecord {
        purpose: "fill".into(),
        created: now() - 10,
        expires: now() - 1,
        labels: BTreeMap::new(),
        digests: vec![d(3)],
        ingests: Vec::new(),
    };
    meta.put_lease(&short_id, &expired).await.unwrap();
    let live_id = live.id().to_owned();
    drop(live);

    let again = Leases::load(meta.clone()).await.unwrap();
    let list = again.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].0, live_id);
    assert_eq!(list[0].1.purpose, "push team/app");
    assert_eq!(list[0].1.digests, vec![d(1), d(2)]);
    assert!(again.protected(&d(2), u64::MAX));
    assert!(meta
        .leases()
        .await
        .unwrap()
        .iter()
        .all(|(id, _)| *id != short_id));

    assert!(again.release(&live_id).await.unwrap());
    assert!(again.list().is_empty());
    assert!(meta.leases().await.unwrap().is_empty());
}
crate::each_backend!(leases_outlive_the_process_until_they_expire);

/// Expiry in a running process: `expire` drops what is past its time and unprotects its digests.
async fn expired_leases_stop_protecting(backend: &str) {
    let (_held, meta) = open_on(backend).await;
    let leases = Leases::load_offline(meta).await.unwrap();
    let l = leases.acquire("x", Duration::from_secs(1)).await.unwrap();
    l.protect(&[d(7)]).await.unwrap();
    assert!(leases.protected(&d(7), now() + 10));
    assert!(leases.expire().await.unwrap().is_empty(), "not yet");
    let gone = leases.expire_as_of(now() + 2).await.unwrap();
    assert_eq!(gone, vec![l.id().to_owned()]);
    assert!(!leases.protected(&d(7), now() + 10));
    assert!(leases.doom(&d(7), now() + 10));
}
crate::each_backend!(expired_leases_stop_protecting);

/// A released lease hands its content to the grace window in the same step: a sweep whose cutoff
/// is before the release (its snapshot predates the tag that now holds the content) cannot doom it.
/// A push delivery releases its lease right after recording the local tag.
async fn a_released_lease_leaves_its_content_touched(backend: &str) {
    let (_held, meta) = open_on(backend).await;
    let leases = Leases::load_offline(meta).await.unwrap();
    let l = leases
        .acquire("push", Duration::from_secs(600))
        .await
        .unwrap();
    l.protect(&[d(8)]).await.unwrap();
    let cutoff = now();
    l.release().await.unwrap();
    assert!(leases.protected(&d(8), cutoff), "touched at the release");
    assert!(!leases.doom(&d(8), cutoff));
    // Once the grace window has passed the release, it goes.
    assert!(leases.doom(&d(8), now() + 1));
}
crate::each_backend!(a_released_lease_leaves_its_content_touched);

/// Touches are forgotten once older than the grace window even when no collection runs: the map of
/// touches stays bounded by what was used within the window.
async fn old_touches_are_forgotten_without_a_collection(backend: &str) {
    let (_held, meta) = open_on(backend).await;
    let leases = Leases::load_offline(meta).await.unwrap();
    leases.set_grace(0);
    let many: Vec<Digest> = (0..=PRUNE_ABOVE as u32)
        .map(|i| Digest::sha256_of(&i.to_le_bytes()))
        .collect();
    // Touched long ago, as far as a grace window of 0 s is concerned.
    {
        let mut s = leases.lock();
        for m in &many {
            s.touched.insert(m.clone(), now() - 5);
        }
    }
    leases.touch(&[d(1)]).await;
    assert_eq!(leases.lock().touched.len(), 1, "older touches forgotten");
}
crate::each_backend!(old_touches_are_forgotten_without_a_collection);

/// A lease can carry labels and protect ingests (writes in progress) from the upload purge, and the
/// record says so after a restart.
async fn labels_and_ingests_are_part_of_the_record(backend: &str) {
    let (_held, meta) = open_on(backend).await;
    let leases = Leases::new(meta.clone());
    let l = leases
        .acquire_labelled(
            "upload team/app 1",
            &[("repository", "team/app")],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    l.protect_ingest(&IngestRef::new("abc").unwrap())
        .await
        .unwrap();
    assert!(leases.protects_ingest("abc"));
    assert!(!leases.protects_ingest("other"));
    let again = Leases::load(meta).await.unwrap();
    let (_, rec) = &again.list()[0];
    assert_eq!(
        rec.labels.get("repository").map(String::as_str),
        Some("team/app")
    );
    assert_eq!(rec.ingests, vec!["abc".to_owned()]);
    assert!(again.protects_ingest("abc"));
    l.release().await.unwrap();
    assert!(!leases.protects_ingest("abc"));
}
crate::each_backend!(labels_and_ingests_are_part_of_the_record);
