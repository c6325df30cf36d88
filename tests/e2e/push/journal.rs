//! The push journal (issue 16): store-and-forward deliveries are durable. They wait out an upstream
//! that is down, survive `kill -9`, go out in push order per tag, and a delivery resumed after a crash
//! does not send the upstream what it already has.
//!
//! The upstream is a real `docker-registry`, stopped and started again on the same port where a test
//! needs it down; where a test needs to see or hold requests, the fault relay sits in front of it.
//! Deliveries retry quickly here (`[delivery]` below), and every wait is a poll with a deadline.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::SmallImage;
use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, Layout, LayoutSpec};
use crate::mirror::relay::{Fault, Gate, Relay, Seen, When};
use crate::oci;
use crate::skopeo::Skopeo;

use super::{
    assert_image_upstream, assert_manifest_upstream, push_status, route_toml, LOCAL, REMOTE,
};

/// How long deliveries may take once the upstream is reachable again: retries back off to at most
/// `retry_max_secs` (2 s here), so this is many retries' worth; polled, so it costs nothing when fast.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// `[delivery]` for these tests: quick retries, capped at 2 s, and enough attempts that an upstream
/// down for the whole test never turns a delivery into "failed".
pub fn quick_delivery(max_attempts: u32) -> String {
    format!(
        "\n[delivery]\nretry_initial_ms = 200\nretry_max_secs = 2\nmax_attempts = {max_attempts}\n"
    )
}

/// A wharf routing `ci/app[/...]` to `team/app[/...]` at `upstream` (a registry or a relay,
/// `127.0.0.1:PORT`) in `mode`, with `delivery` as its `[delivery]` table and more route keys.
pub fn wharf_routing(upstream: &str, mode: &str, route_keys: &[&str], delivery: &str) -> Wharf {
    let mut keys = vec![format!("mode = \"{mode}\"")];
    keys.extend(route_keys.iter().map(|k| k.to_string()));
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    Wharf::start(WharfOptions {
        extra_toml: format!("{}\n{delivery}", route_toml(upstream, &keys)),
        ..Default::default()
    })
}

/// A 3-platform image (13 digests, 9 of them blobs) generated in the wharf's scratch dir.
pub fn image(wharf: &Wharf, tag: &str, seed: u64) -> Layout {
    write_layout(
        &wharf.scratch(&format!("layout-{seed}")),
        &LayoutSpec::small(tag, seed),
    )
}

/// Every blob (configs and layers) of `layout`, each once.
pub fn blob_digests(layout: &Layout) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for img in &layout.images {
        all.insert(img.config.digest.clone());
        all.extend(img.layers.iter().map(|l| l.digest.clone()));
    }
    all
}

/// `skopeo copy --all --preserve-digests` of `layout` to wharf as `repo:<its tag>`; skopeo failing
/// fails the test.
pub fn skopeo_push(wharf: &Wharf, layout: &Layout, repo: &str) {
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/{repo}:{}", wharf.host(), layout.tag),
    );
}

/// Runs `wharf <args>` against the running server (its admin socket) and fails with what it said
/// unless it succeeds; returns stdout.
pub fn wharf_ok(wharf: &Wharf, args: &[&str]) -> String {
    let out = crate::gc::cli(wharf, args);
    assert!(
        out.status.success(),
        "wharf {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `wharf leases --json`: the live leases of the running server.
pub fn leases(wharf: &Wharf) -> Vec<Value> {
    let out = wharf_ok(wharf, &["leases", "--json"]);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("wharf leases --json printed no JSON ({e}): {out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("wharf leases --json is not a list: {v}"))
        .clone()
}

/// The live lease a journal entry names (`lease`), as `wharf leases` lists it; its purpose says it
/// is the push of that `repository:reference`.
pub fn lease_of(wharf: &Wharf, entry: &Value) -> Option<Value> {
    if entry["lease"].is_null() {
        return None;
    }
    let lease = leases(wharf)
        .into_iter()
        .find(|l| l["id"] == entry["lease"])?;
    let purpose = lease["purpose"].as_str().unwrap_or_default();
    let what = format!(
        "{}:{}",
        entry["repository"].as_str().unwrap_or_default(),
        entry["reference"].as_str().unwrap_or_default()
    );
    assert!(
        purpose.starts_with("push ") && purpose.contains(&what),
        "the lease of a delivery should say it is the push of {what}: {lease:#}"
    );
    Some(lease)
}

/// Whether a lease with this id is live.
pub fn lease_live(wharf: &Wharf, id: &Value) -> bool {
    leases(wharf).iter().any(|l| l["id"] == *id)
}

/// The journal entry for `repository:reference` pushed with local digest `digest`.
pub fn entry(list: &[Value], repository: &str, reference: &str, digest: &str) -> Option<Value> {
    list.iter()
        .find(|e| {
            e["repository"] == repository && e["reference"] == reference && e["digest"] == digest
        })
        .cloned()
}

/// Polls `wharf push status --json` until `cond` holds of the list, and returns it.
pub fn wait_for_journal(wharf: &Wharf, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let end = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let list = push_status(wharf);
        if cond(&list) {
            return list;
        }
        assert!(
            Instant::now() < end,
            "not within {DELIVERY_DEADLINE:?}: {what}; the journal now: {list:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A journal entry that is neither delivered nor failed: waiting for its next try, or in one.
pub fn is_waiting(e: &Value) -> bool {
    matches!(e["state"].as_str(), Some("pending" | "delivering"))
}

/// The `Content-Type` a request declared.
fn kind(s: &Seen) -> &str {
    s.header_values("Content-Type")
        .first()
        .copied()
        .unwrap_or("")
}

/// Requests the relay saw, one per line, for failure messages.
fn describe(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Proves: with the upstream down, store-and-forward pushes succeed locally and wait in the journal
/// (pending, with the connection error, each holding its lease); the journal and the leases survive
/// `kill -9`; once the upstream is back on its port, every image arrives within a bound, identical
/// (tag, index, child manifests, every blob), and the leases are let go.
#[test]
fn store_and_forward_waits_out_a_down_upstream_and_a_kill_9() {
    let mut registry = DistRegistry::start();
    registry.stop();
    let mut wharf = wharf_routing(
        &registry.host(),
        "store-and-forward",
        &[],
        &quick_delivery(1000),
    );
    let pushes = [
        (LOCAL.to_owned(), image(&wharf, "one", 1601)),
        (LOCAL.to_owned(), image(&wharf, "two", 1602)),
        (format!("{LOCAL}/tools"), image(&wharf, "one", 1603)),
    ];
    for (repo, layout) in &pushes {
        skopeo_push(&wharf, layout, repo);
    }

    let list = wait_for_journal(
        &wharf,
        "3 deliveries waiting, each having tried the upstream and kept the error",
        |l| {
            pushes.iter().all(|(repo, layout)| {
                entry(l, repo, &layout.tag, &layout.index.digest).is_some_and(|e| {
                    is_waiting(&e) && e["last_error"].as_str().is_some_and(|m| !m.is_empty())
                })
            })
        },
    );
    assert_eq!(list.len(), 3, "one journal entry per push: {list:#?}");
    let mut ids = BTreeSet::new();
    let mut held = Vec::new();
    for (repo, layout) in &pushes {
        let e = entry(&list, repo, &layout.tag, &layout.index.digest).unwrap();
        let upstream_repo = repo.replacen(LOCAL, REMOTE, 1);
        assert_eq!(e["mode"], "store-and-forward", "{e:#}");
        assert_eq!(e["upstream_repository"], upstream_repo, "{e:#}");
        assert_eq!(e["target"], registry.base(), "{e:#}");
        assert!(e["attempts"].as_u64() >= Some(1), "{e:#}");
        assert!(
            e["upstream_digest"].is_null() && e["delivered_at"].is_null(),
            "nothing was delivered: {e:#}"
        );
        let lease = lease_of(&wharf, &e).unwrap_or_else(|| {
            panic!(
                "a pending delivery holds a lease: {e:#}\n{:#?}",
                leases(&wharf)
            )
        });
        assert_eq!(e["lease"], lease["id"], "the entry names its lease: {e:#}");
        ids.insert(e["id"].clone().to_string());
        held.push(lease["id"].clone());
    }
    assert_eq!(ids.len(), 3, "distinct ids: {list:#?}");

    wharf.kill9();
    wharf.start_again();
    let list = push_status(&wharf);
    for (repo, layout) in &pushes {
        let e = entry(&list, repo, &layout.tag, &layout.index.digest).unwrap_or_else(|| {
            panic!(
                "{repo}:{} is gone from the journal after kill -9: {list:#?}",
                layout.tag
            )
        });
        assert!(is_waiting(&e), "still to deliver after the restart: {e:#}");
        assert!(
            ids.contains(&e["id"].to_string()),
            "the same entry, not a new one: {e:#}"
        );
        assert!(
            lease_of(&wharf, &e).is_some(),
            "its lease survived kill -9: {e:#}\n{:#?}",
            leases(&wharf)
        );
    }

    registry.start_again();
    let started = Instant::now();
    let list = wait_for_journal(&wharf, "all 3 delivered", |l| {
        l.len() == 3 && l.iter().all(|e| e["state"] == "delivered")
    });
    eprintln!(
        "3 deliveries done {:?} after the upstream came back",
        started.elapsed()
    );
    let live = leases(&wharf);
    assert!(
        !live.iter().any(|l| held.contains(&l["id"])),
        "delivered pushes let go of their leases {held:?}: {live:#?}"
    );
    let upstream = Api::new(registry.base());
    for (repo, layout) in &pushes {
        let e = entry(&list, repo, &layout.tag, &layout.index.digest).unwrap();
        assert_eq!(e["upstream_digest"], layout.index.digest, "{e:#}");
        assert!(e["delivered_at"].as_u64().is_some(), "{e:#}");
        assert!(e["lease"].is_null(), "delivered, it names no lease: {e:#}");
        assert_image_upstream(
            &upstream,
            &repo.replacen(LOCAL, REMOTE, 1),
            &layout.tag,
            layout,
        );
    }
}

/// Proves: two store-and-forward pushes of one tag made while the upstream is down are delivered in
/// push order once it is back: the upstream's tag ends at the second push, and every tag `PUT` of the
/// first comes before the second's. The first is a 3-platform index with a 4 MiB layer and the
/// second a small single manifest, so a delivery that ran them side by side would finish the second
/// first and leave the tag at the first.
#[test]
fn store_and_forward_keeps_push_order_per_tag() {
    let mut registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    registry.stop();
    let wharf = wharf_routing(
        &relay.addr().to_string(),
        "store-and-forward",
        &[],
        &quick_delivery(1000),
    );
    let first = write_layout(
        &wharf.scratch("first"),
        &LayoutSpec::small("v1", 1611).with_large_layer(4 << 20),
    );
    skopeo_push(&wharf, &first, LOCAL);
    let second = SmallImage::push(&Api::new(wharf.base()), LOCAL, "v1", 1612);

    // One tag goes one push at a time: while the first keeps failing, the second is not even tried.
    let list = wait_for_journal(&wharf, "the first push tried twice", |l| {
        entry(l, LOCAL, "v1", &first.index.digest)
            .is_some_and(|e| is_waiting(&e) && e["attempts"].as_u64() >= Some(2))
    });
    let waiting =
        entry(&list, LOCAL, "v1", &second.manifest_digest).expect("the second push's entry");
    assert!(
        is_waiting(&waiting) && waiting["attempts"] == 0,
        "the second push of a tag waits for the first: {list:#?}"
    );
    registry.start_again();
    let list = wait_for_journal(&wharf, "both delivered", |l| {
        l.len() == 2 && l.iter().all(|e| e["state"] == "delivered")
    });
    let upstream = Api::new(registry.base());
    assert_manifest_upstream(&upstream, REMOTE, "v1", &second.manifest);
    let a = entry(&list, LOCAL, "v1", &first.index.digest).expect("the first push's entry");
    let b = entry(&list, LOCAL, "v1", &second.manifest_digest).expect("the second push's entry");
    assert!(
        a["id"].as_u64() < b["id"].as_u64(),
        "ids follow push order: {list:#?}"
    );

    // The relay saw every tag PUT: the index's (the first push) all before the manifest's (the
    // second), and the second's is the last.
    let seen = relay.seen();
    let tag_puts: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path() == format!("/v2/{REMOTE}/manifests/v1"))
        .collect();
    let last_first = tag_puts.iter().rposition(|s| kind(s) == oci::OCI_INDEX);
    let first_second = tag_puts.iter().position(|s| kind(s) == oci::OCI_MANIFEST);
    assert!(
        first_second.is_some() && last_first.is_none_or(|f| Some(f) < first_second),
        "the tag PUTs are out of push order:\n{}",
        tag_puts
            .iter()
            .map(|s| format!("PUT {} ({})", s.target, kind(s)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        tag_puts.last().map(|s| kind(s)),
        Some(oci::OCI_MANIFEST),
        "{}",
        describe(&seen)
    );
}

/// Proves: a delivery resumed after `kill -9` is idempotent. The relay holds the final manifest `PUT`
/// (the tag) of a store-and-forward delivery, so every blob and child manifest is upstream when wharf
/// dies; after the restart the delivery completes without uploading any blob again: the upstream is
/// asked (`HEAD`) about each blob instead.
#[test]
fn a_delivery_resumed_after_kill_9_does_not_upload_blobs_again() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let gate = Gate::new();
    // Only the first: the resumed delivery's own tag PUT goes through.
    relay.add_rule_when(
        Some("PUT"),
        &format!("/v2/{REMOTE}/manifests/v1"),
        When::nth(1),
        Fault::HoldRequest(gate.clone()),
    );
    let mut wharf = wharf_routing(
        &relay.addr().to_string(),
        "store-and-forward",
        &[],
        &quick_delivery(1000),
    );
    let layout = image(&wharf, "v1", 1621);
    let blobs = blob_digests(&layout);
    skopeo_push(&wharf, &layout, LOCAL);

    crate::mirror::wait_until(
        || format!("the tag PUT never reached the relay:\n{}", relay.describe()),
        || gate.waiting() == 1,
    );
    let before = relay.seen().len();
    let uploads_before = relay.count("POST", "/blobs/uploads/");
    assert_eq!(
        uploads_before,
        blobs.len(),
        "each blob uploaded once before the tag PUT:\n{}",
        relay.describe()
    );
    let e =
        entry(&push_status(&wharf), LOCAL, "v1", &layout.index.digest).expect("the journal entry");
    let id = e["id"].clone();
    // Asserted at the end, after what this test is about.
    let held_entry = e;

    wharf.kill9();
    wharf.start_again();
    let list = wait_for_journal(&wharf, "the resumed delivery done", |l| {
        entry(l, LOCAL, "v1", &layout.index.digest).is_some_and(|e| e["state"] == "delivered")
    });
    // The held request (whose client is gone) is let go only now: the resumed delivery did it all.
    // Wait for the upstream to have answered it, so it does not race the checks below.
    gate.open();
    let tag_put = format!("\"PUT /v2/{REMOTE}/manifests/v1 ");
    crate::mirror::wait_until(
        || "the upstream never logged the held tag PUT".into(),
        || {
            registry
                .access_log()
                .iter()
                .filter(|l| l.contains(&tag_put))
                .count()
                >= 2
        },
    );
    let after: Vec<Seen> = relay.seen().split_off(before);
    let uploads: Vec<&Seen> = after
        .iter()
        .filter(|s| s.path().contains("/blobs/uploads/"))
        .collect();
    assert!(
        uploads.is_empty(),
        "blobs the upstream already had were uploaded again after the restart:\n{}",
        describe(&after)
    );
    for digest in &blobs {
        assert!(
            after
                .iter()
                .any(|s| s.method == "HEAD" && s.path() == format!("/v2/{REMOTE}/blobs/{digest}")),
            "the resumed delivery never asked the upstream about blob {digest}:\n{}",
            describe(&after)
        );
    }
    let e = entry(&list, LOCAL, "v1", &layout.index.digest).unwrap();
    assert_eq!(e["id"], id, "the same journal entry, resumed: {e:#}");
    assert_eq!(e["upstream_digest"], layout.index.digest, "{e:#}");
    assert_image_upstream(&Api::new(registry.base()), REMOTE, "v1", &layout);
    assert_eq!(
        held_entry["state"], "delivering",
        "push status shows a delivery in flight as delivering: {held_entry:#}"
    );
}
