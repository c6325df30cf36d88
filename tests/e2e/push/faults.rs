//! Upstream faults while a routed push is delivered (issue 16), made by the fault relay between wharf
//! and a real `docker-registry`: a 500 on a `PATCH`, a connection reset mid-upload, a bearer challenge
//! (a first token, then a refreshed one for a revoked token), a 429 with `Retry-After`: each is retried
//! and the push succeeds with the image whole upstream. A permanent 403 fails a store-and-forward
//! delivery with the upstream's reason, until `wharf push retry` (delivered) or `wharf push drop`
//! (gone, lease released). A write-through push to an upstream that is down (a closed port, or one that
//! never answers) fails within `write_through_timeout_secs` with the reason, and is not retried behind
//! the client's back.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::http::{Api, Resp};
use crate::layout::Layout;
use crate::mirror::pki::TestCa;
use crate::mirror::relay::{Fault, Gate, Relay, Seen, When};
use crate::mirror::token_server::{TokenServer, SERVICE};
use crate::oci;

use super::journal::{
    blob_digests, entry, image, lease_live, lease_of, leases, quick_delivery, skopeo_push,
    wait_for_journal, wharf_ok, wharf_routing,
};
use super::{
    assert_image_upstream, error_message, push_blobs_raw, push_layout_raw, push_status, route_toml,
    LOCAL, REMOTE,
};

/// A registry, the relay in front of it, and a wharf routing `ci/app` to the relay in `mode`.
struct Faulty {
    registry: DistRegistry,
    relay: Relay,
    wharf: Wharf,
}

fn faulty(mode: &str) -> Faulty {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = wharf_routing(&relay.addr().to_string(), mode, &[], &quick_delivery(8));
    Faulty {
        registry,
        relay,
        wharf,
    }
}

impl Faulty {
    /// Pushes a new 3-platform image as `ci/app:tag` with skopeo (which fails the test if the push
    /// fails) and checks that the upstream holds it whole as `team/app:tag`, and the journal says so.
    fn push_and_check(&self, tag: &str, seed: u64) -> Layout {
        let layout = image(&self.wharf, tag, seed);
        skopeo_push(&self.wharf, &layout, LOCAL);
        assert_image_upstream(&Api::new(self.registry.base()), REMOTE, tag, &layout);
        let e = entry(&push_status(&self.wharf), LOCAL, tag, &layout.index.digest)
            .unwrap_or_else(|| panic!("no journal entry for {LOCAL}:{tag}"));
        assert_eq!(e["state"], "delivered", "{e:#}");
        layout
    }

    fn patches(&self) -> Vec<Seen> {
        self.relay
            .seen()
            .into_iter()
            .filter(|s| s.method == "PATCH" && s.path().contains("/blobs/uploads/"))
            .collect()
    }
}

/// Proves: a 500 on the first blob `PATCH` of a write-through delivery is retried: the push succeeds,
/// the upstream holds the image whole, and the relay saw more `PATCH`es than there are blobs (the
/// refused one was sent again).
#[test]
fn write_through_retries_a_500_on_a_patch() {
    let f = faulty("write-through");
    f.relay.add_rule_when(
        Some("PATCH"),
        "/blobs/uploads/",
        When::nth(1),
        Fault::Status(500),
    );
    let layout = f.push_and_check("v1", 1701);
    let blobs = blob_digests(&layout).len();
    let patches = f.patches().len();
    assert!(
        patches > blobs,
        "{blobs} blobs, {patches} PATCHes: the refused PATCH was not sent again\n{}",
        f.relay.describe()
    );
    eprintln!("{blobs} blobs, {patches} PATCHes (one answered 500)");
}

/// Proves: a connection reset in the middle of a blob upload (the third `PATCH`: the relay reads its
/// head and resets) is retried like any connection error, and the push succeeds whole.
#[test]
fn write_through_retries_a_connection_reset_mid_upload() {
    let f = faulty("write-through");
    f.relay
        .add_rule_when(Some("PATCH"), "/blobs/uploads/", When::nth(3), Fault::Reset);
    let layout = f.push_and_check("v1", 1711);
    let blobs = blob_digests(&layout).len();
    let patches = f.patches().len();
    assert!(
        patches > blobs,
        "{blobs} blobs, {patches} PATCHes: the reset PATCH was not sent again\n{}",
        f.relay.describe()
    );
}

const USER: &str = "ci-pusher";
const PASSWORD: &str = "push-e2e-secret";
const PASSWORD_ENV: &str = "E2E_PUSH_PASSWORD";

/// The `Authorization` header of a request, if any.
fn authorization(s: &Seen) -> Option<String> {
    s.header_values("Authorization")
        .first()
        .map(|v| v.to_string())
}

/// Proves: the upstream's bearer challenge is answered during a push. (1) The first blob upload
/// `POST` is challenged: wharf gets a token from the realm with the route's credentials and sends the
/// `POST` again with it; a later `PATCH` is challenged too, token in hand: wharf gets a new one and
/// sends the `PATCH` again, body and all. (2) That token is then revoked (every request carrying it is
/// challenged): the next push gets a new token from the realm instead of presenting the revoked one
/// again, and succeeds. Both images arrive whole.
#[test]
fn write_through_answers_a_bearer_challenge_and_refreshes_a_revoked_token() {
    let pki = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(
        TestCa::new(pki.path(), "push-token").token_signer(),
        USER,
        PASSWORD,
    );
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let keys = [
        "mode = \"write-through\"".to_owned(),
        format!("username = \"{USER}\""),
        format!("password_env = \"{PASSWORD_ENV}\""),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: format!(
            "{}\n{}",
            route_toml(&relay.addr().to_string(), &keys),
            quick_delivery(8)
        ),
        env: vec![(PASSWORD_ENV.into(), PASSWORD.into())],
        ..Default::default()
    });
    let f = Faulty {
        registry,
        relay,
        wharf,
    };
    let challenge = Fault::bearer_challenge(&tokens.realm(), SERVICE);

    // (1) A challenge where there was none before.
    f.relay.add_rule_when(
        Some("POST"),
        "/blobs/uploads/",
        When::nth(1),
        challenge.clone(),
    );
    f.relay.add_rule_when(
        Some("PATCH"),
        "/blobs/uploads/",
        When::nth(2),
        challenge.clone(),
    );
    let layout = f.push_and_check("v1", 1721);
    let (blobs, patches) = (blob_digests(&layout).len(), f.patches().len());
    assert!(
        patches > blobs,
        "{blobs} blobs, {patches} PATCHes: the challenged PATCH was not sent again\n{}",
        f.relay.describe()
    );
    let asked = tokens.requests();
    assert!(
        asked.len() >= 2,
        "two challenges, two tokens: the token service saw {asked:?}"
    );
    for r in &asked {
        assert_eq!(
            r.basic.as_deref(),
            Some(format!("{USER}:{PASSWORD}").as_str()),
            "the token request carries the route's credentials: {r:?}"
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    let posts: Vec<Seen> = f
        .relay
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path().contains("/blobs/uploads/"))
        .collect();
    assert!(
        posts
            .get(1)
            .and_then(authorization)
            .is_some_and(|a| a.starts_with("Bearer ")),
        "the challenged POST was not sent again with a bearer token:\n{}",
        f.relay.describe()
    );

    // (2) The token wharf holds now (the last request's) is revoked: presenting it again is
    // challenged every time.
    let token = f
        .relay
        .seen()
        .last()
        .and_then(authorization)
        .filter(|a| a.starts_with("Bearer "))
        .unwrap_or_else(|| {
            panic!(
                "the push ended without a bearer token:\n{}",
                f.relay.describe()
            )
        });
    let before = f.relay.seen().len();
    let asked_before = tokens.requests().len();
    f.relay.clear_rules();
    f.relay.add_rule_when(
        None,
        "/v2/",
        When {
            authorization: Some(token.clone()),
            ..Default::default()
        },
        challenge,
    );
    f.push_and_check("v2", 1722);
    let after: Vec<Seen> = f.relay.seen().split_off(before);
    let revoked = after
        .iter()
        .filter(|s| authorization(s).as_deref() == Some(token.as_str()))
        .count();
    assert!(
        revoked >= 1,
        "the second push never presented the cached token, so this test proved nothing about \
         refreshing it:\n{}",
        after
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        tokens.requests().len() > asked_before,
        "challenged for a revoked token, wharf did not ask the token service for a new one \
         ({revoked} requests presented the revoked token)"
    );
}

/// Proves: a 429 with `Retry-After: 1` on a manifest `PUT` is retried after the second the upstream
/// asked for, not after the (200 ms) backoff: the same `PUT` comes again at least ~1 s later, and
/// the push succeeds whole.
#[test]
fn write_through_honours_retry_after_on_a_429() {
    let f = faulty("write-through");
    f.relay
        .add_rule_when(Some("PUT"), "/manifests/", When::nth(1), Fault::Status(429));
    f.push_and_check("v1", 1731);
    let puts: Vec<Seen> = f
        .relay
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && s.path().contains("/manifests/"))
        .collect();
    let refused = &puts[0];
    let again = puts[1..]
        .iter()
        .find(|s| s.target == refused.target)
        .unwrap_or_else(|| {
            panic!(
                "the PUT answered 429 was never sent again:\n{}",
                f.relay.describe()
            )
        });
    let gap = again.at.duration_since(refused.at);
    assert!(
        gap >= Duration::from_millis(900),
        "the retry came {gap:?} after a 429 with Retry-After: 1"
    );
}

/// What the relay answers for a refused write, and what the journal must show of it.
const WHY: &str = "team/app is frozen for the release (wharf-e2e)";

fn denied() -> Fault {
    Fault::Error {
        status: 403,
        code: "DENIED".into(),
        message: WHY.into(),
        headers: vec![],
    }
}

/// Waits for `layout`'s entry to fail and checks it carries the upstream's refusal and its lease.
fn wait_failed(wharf: &Wharf, layout: &Layout) -> Value {
    let list = wait_for_journal(wharf, "the refused delivery marked failed", |l| {
        entry(l, LOCAL, &layout.tag, &layout.index.digest).is_some_and(|e| e["state"] == "failed")
    });
    let e = entry(&list, LOCAL, &layout.tag, &layout.index.digest).unwrap();
    let error = e["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("403") && error.contains(WHY),
        "last_error should give the upstream's status and message: {e:#}"
    );
    assert_eq!(
        e["attempts"], 1,
        "a refusal fails at once, it is not retried: {e:#}"
    );
    let lease = lease_of(wharf, &e).unwrap_or_else(|| {
        panic!(
            "a failed delivery keeps its lease: {e:#}\n{:#?}",
            leases(wharf)
        )
    });
    assert_eq!(e["lease"], lease["id"], "{e:#}");
    e
}

/// Proves: a permanent 403 on a store-and-forward delivery (the relay refuses its manifest `PUT`s)
/// marks it failed at once, with the upstream's status and message and its lease kept; `wharf push
/// retry ID` once the refusal is lifted delivers it whole and lets the lease go. Another delivery
/// refused at its first blob upload is removed by `wharf push drop ID`, with its lease, while the
/// pushed tag stays served locally.
#[test]
fn a_permanent_403_fails_the_delivery_until_retried_or_dropped() {
    let f = faulty("store-and-forward");
    f.relay.add_rule(Some("PUT"), "/manifests/", denied());
    let v1 = image(&f.wharf, "v1", 1741);
    skopeo_push(&f.wharf, &v1, LOCAL);
    let failed = wait_failed(&f.wharf, &v1);

    f.relay.clear_rules();
    wharf_ok(&f.wharf, &["push", "retry", &failed["id"].to_string()]);
    let list = wait_for_journal(&f.wharf, "the retried delivery done", |l| {
        entry(l, LOCAL, "v1", &v1.index.digest).is_some_and(|e| e["state"] == "delivered")
    });
    let done = entry(&list, LOCAL, "v1", &v1.index.digest).unwrap();
    assert_eq!(
        done["id"], failed["id"],
        "retried, not pushed anew: {done:#}"
    );
    assert_eq!(done["upstream_digest"], v1.index.digest, "{done:#}");
    assert!(
        done["lease"].is_null() && !lease_live(&f.wharf, &failed["lease"]),
        "delivered: its lease is released: {done:#}\n{:#?}",
        leases(&f.wharf)
    );
    assert_image_upstream(&Api::new(f.registry.base()), REMOTE, "v1", &v1);

    f.relay.add_rule(Some("POST"), "/blobs/uploads/", denied());
    let v2 = image(&f.wharf, "v2", 1742);
    skopeo_push(&f.wharf, &v2, LOCAL);
    let failed = wait_failed(&f.wharf, &v2);
    let lease_id = failed["lease"].clone();
    wharf_ok(&f.wharf, &["push", "drop", &failed["id"].to_string()]);
    let list = push_status(&f.wharf);
    assert!(
        !list.iter().any(|e| e["id"] == failed["id"]),
        "the dropped entry is still listed: {list:#?}"
    );
    assert!(
        entry(&list, LOCAL, "v1", &v1.index.digest).is_some_and(|e| e["state"] == "delivered"),
        "dropping one entry leaves the others: {list:#?}"
    );
    assert!(
        !lease_live(&f.wharf, &lease_id),
        "the dropped delivery's lease {lease_id} is still live: {:#?}",
        leases(&f.wharf)
    );
    let r = Api::new(f.wharf.base()).get_manifest(LOCAL, "v2");
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(v2.index.digest.as_str()),
        "the dropped push is still served locally: {}",
        r.describe()
    );
}

/// Proves: transient failures are retried only `[delivery] max_attempts` times: an upstream that
/// answers every request 503 turns a store-and-forward delivery into `failed` after exactly 3
/// attempts (the configured limit), listed with the last error and its lease kept, and no further
/// request reaches the upstream; `wharf push retry` delivers it once the upstream recovers.
#[test]
fn store_and_forward_gives_up_after_max_attempts_of_transient_failures() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = wharf_routing(
        &relay.addr().to_string(),
        "store-and-forward",
        &[],
        &quick_delivery(3),
    );
    relay.add_rule(None, "/v2/", Fault::Status(503));
    let layout = image(&wharf, "v1", 1751);
    skopeo_push(&wharf, &layout, LOCAL);
    let list = wait_for_journal(&wharf, "the delivery failed after its attempts", |l| {
        entry(l, LOCAL, "v1", &layout.index.digest).is_some_and(|e| e["state"] == "failed")
    });
    let e = entry(&list, LOCAL, "v1", &layout.index.digest).unwrap();
    assert_eq!(e["attempts"], 3, "max_attempts = 3: {e:#}");
    assert!(
        e["last_error"].as_str().is_some_and(|m| m.contains("503")),
        "{e:#}"
    );
    assert!(
        lease_of(&wharf, &e).is_some(),
        "failed, it keeps its lease: {e:#}"
    );
    // Nothing more is scheduled: a failed entry has no next try, and the worker only starts pending
    // ones (unit test `push::journal::tests::one_tag_goes_in_push_order`), so no wait is needed to
    // see that it is left alone.
    assert!(
        e["next_try"].is_null(),
        "a failed delivery is not tried again on its own: {e:#}"
    );

    relay.clear_rules();
    wharf_ok(&wharf, &["push", "retry", &e["id"].to_string()]);
    wait_for_journal(&wharf, "the retried delivery done", |l| {
        entry(l, LOCAL, "v1", &layout.index.digest).is_some_and(|e| e["state"] == "delivered")
    });
    assert_image_upstream(&Api::new(registry.base()), REMOTE, "v1", &layout);
}

/// Proves: a write-through push the upstream refuses is not tagged locally, so only its delivery's
/// lease keeps its content: a collection past the grace window (which does remove an unreferenced
/// blob pushed beside it) removes none of it; `wharf push retry`, once the refusal is lifted, delivers
/// the image whole and records the local tag.
#[test]
fn a_refused_write_through_push_is_kept_by_its_lease_until_retried() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let delivery = format!(
        "{}\n[gc]\ngrace_secs = 1\ninterval_secs = 0\n",
        quick_delivery(8)
    );
    let wharf = wharf_routing(&relay.addr().to_string(), "write-through", &[], &delivery);
    relay.add_rule(Some("PUT"), "/manifests/", denied());
    let layout = image(&wharf, "v1", 1761);
    let out = crate::skopeo::Skopeo::new().output(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        &layout.skopeo_ref(),
        &format!("docker://{}/{LOCAL}:v1", wharf.host()),
    ]);
    // skopeo takes a DENIED answer to an index PUT for "this manifest type is rejected" and says
    // so, not wharf's message; the journal entry (below) carries the upstream's reason.
    assert!(
        !out.status.success(),
        "the refused push must fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = Api::new(wharf.base());
    api.get_manifest(LOCAL, "v1").assert_status(404);
    let e = wait_failed(&wharf, &layout);

    let decoy = api.push_blob("other/scratch", &crate::oci::Noise::bytes(1762, 4096));
    crate::gc::wait_until_collectable(&wharf, [&decoy]);
    let report = crate::gc::collect(&wharf, false);
    let removed = crate::gc::removed(&report);
    assert!(removed.contains(&decoy), "{report:#}");
    let all = layout.all_digests();
    let lost: Vec<&String> = all.iter().filter(|d| removed.contains(*d)).collect();
    assert!(
        lost.is_empty(),
        "the collection removed content of a failed delivery, which its lease should keep: \
         {lost:?}\n{report:#}"
    );
    for digest in &all {
        assert!(
            crate::gc::on_disk(&wharf, digest),
            "{digest} of the failed delivery is gone"
        );
    }

    relay.clear_rules();
    wharf_ok(&wharf, &["push", "retry", &e["id"].to_string()]);
    let list = wait_for_journal(&wharf, "the retried delivery done", |l| {
        entry(l, LOCAL, "v1", &layout.index.digest).is_some_and(|e| e["state"] == "delivered")
    });
    let done = entry(&list, LOCAL, "v1", &layout.index.digest).unwrap();
    assert!(
        done["lease"].is_null() && !lease_live(&wharf, &e["lease"]),
        "{done:#}"
    );
    assert_image_upstream(&Api::new(registry.base()), REMOTE, "v1", &layout);
    let r = api.get_manifest(LOCAL, "v1");
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(layout.index.digest.as_str()),
        "delivered, the local tag is recorded: {}",
        r.describe()
    );
}

/// `[delivery] write_through_timeout_secs` in the tests below.
const WRITE_THROUGH_SECS: u64 = 3;
/// How much later than that a client may get its answer: the try under way, a busy machine.
const SLACK: Duration = Duration::from_secs(20);

/// `[delivery]` with the write-through bound, and retries quick and many enough that only the bound
/// ends a delivery (30 tries at most 2 s apart would take about a minute).
fn bounded_delivery() -> String {
    format!(
        "{}write_through_timeout_secs = {WRITE_THROUGH_SECS}\n",
        quick_delivery(30)
    )
}

/// Uploads `layout`'s blobs and child manifests to `ci/app` as containerd does, then `PUT`s its index
/// by tag: the answer to that `PUT`, and how long it took.
fn put_index_timed(wharf: &Wharf, layout: &Layout) -> (Resp, Duration) {
    let api = Api::new(wharf.base());
    push_blobs_raw(&api, LOCAL, None, layout);
    for img in &layout.images {
        let body = std::fs::read(layout.blob_path(&img.manifest.digest)).unwrap();
        api.put_manifest(LOCAL, &img.manifest.digest, oci::OCI_MANIFEST, &body)
            .assert_status(201);
    }
    let body = std::fs::read(layout.blob_path(&layout.index.digest)).unwrap();
    let started = Instant::now();
    let r = api.put_manifest(LOCAL, &layout.tag, oci::OCI_INDEX, &body);
    (r, started.elapsed())
}

/// The write-through push's answer: within the bound (and not before it: write-through does retry),
/// `424 UNAVAILABLE` whose message names the upstream, `cause`, the bound and what to do, and none of
/// the mirror's words.
fn assert_unavailable_in_time(r: &Resp, took: Duration, upstream: &str, cause: &str) {
    let bound = Duration::from_secs(WRITE_THROUGH_SECS);
    assert!(
        took >= bound && took < bound + SLACK,
        "the manifest PUT was answered after {took:?}; write_through_timeout_secs = \
         {WRITE_THROUGH_SECS}: {}",
        r.describe()
    );
    r.assert_error(424, "UNAVAILABLE");
    let message = error_message(r);
    for needle in [
        upstream,
        cause,
        "write_through_timeout_secs",
        "store-and-forward",
        "wharf push retry",
    ] {
        assert!(
            message.contains(needle),
            "the message should say {needle:?}: {message}"
        );
    }
    assert!(
        !message.contains("cached"),
        "a push failure is not a mirror's (\"what is cached already is still served\"): {message}"
    );
}

/// The failed journal entry of `layout`, checked: failed with `cause`, no next try, its lease live.
fn failed_entry(wharf: &Wharf, layout: &Layout, cause: &str) -> Value {
    let list = push_status(wharf);
    let e = entry(&list, LOCAL, &layout.tag, &layout.index.digest)
        .unwrap_or_else(|| panic!("no journal entry for the failed push: {list:#?}"));
    assert_eq!(e["state"], "failed", "{e:#}");
    assert!(
        e["last_error"].as_str().is_some_and(|m| m.contains(cause)),
        "{e:#}"
    );
    assert!(e["next_try"].is_null(), "nothing is scheduled: {e:#}");
    assert!(
        lease_of(wharf, &e).is_some(),
        "failed, it keeps its lease until retried or dropped: {e:#}"
    );
    e
}

/// After a failed write-through push was pushed again and delivered: the failed entry it superseded
/// is gone with its lease, and the new one is delivered.
fn assert_superseded(wharf: &Wharf, layout: &Layout, failed: &Value) {
    let list = push_status(wharf);
    assert!(
        !list.iter().any(|e| e["id"] == failed["id"]),
        "the failed entry of a push that was pushed again and delivered is still listed: {list:#?}"
    );
    assert!(
        !lease_live(wharf, &failed["lease"]),
        "the superseded entry's lease is still live: {:#?}",
        leases(wharf)
    );
    let e = entry(&list, LOCAL, &layout.tag, &layout.index.digest).unwrap();
    assert_eq!(e["state"], "delivered", "{e:#}");
}

/// Proves: with a write-through route to an upstream that is down (its port closed), the client's
/// manifest `PUT` fails after `write_through_timeout_secs` (3 s, with 30 tries allowed: the bound
/// ends it, not the tries), with `424 UNAVAILABLE` naming the upstream, "could not be reached", the
/// bound and what to do; the local tag is not recorded; the journal entry is failed, keeps its lease
/// and is not tried again behind the client's back. With the upstream back, the same push again is
/// delivered whole, tagged locally, and the failed entry it supersedes is gone with its lease.
#[test]
fn a_write_through_push_to_a_closed_port_fails_in_time_and_pushing_again_works() {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    registry.stop();
    let wharf = wharf_routing(&up, "write-through", &[], &bounded_delivery());
    let layout = image(&wharf, "v1", 1771);

    let (r, took) = put_index_timed(&wharf, &layout);
    assert_unavailable_in_time(&r, took, &up, "could not be reached");
    eprintln!("answered after {took:?}: {}", error_message(&r));
    let api = Api::new(wharf.base());
    api.get_manifest(LOCAL, "v1").assert_status(404);
    let failed = failed_entry(&wharf, &layout, "could not be reached");
    // Well past the 2 s retry cap: still failed, no attempt since.
    std::thread::sleep(Duration::from_secs(4));
    let again = entry(&push_status(&wharf), LOCAL, "v1", &layout.index.digest).unwrap();
    assert_eq!(
        (&again["state"], &again["attempts"]),
        (&failed["state"], &failed["attempts"]),
        "a write-through push the client was told failed is not retried behind its back: {again:#}"
    );

    registry.start_again();
    push_layout_raw(&api, LOCAL, None, &layout, "v1");
    assert_image_upstream(&Api::new(registry.base()), REMOTE, "v1", &layout);
    let r = api.get_manifest(LOCAL, "v1");
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(layout.index.digest.as_str())
    );
    assert_superseded(&wharf, &layout, &failed);
}

/// Proves: with a write-through route to an upstream that accepts connections and never answers (the
/// relay holds every request; the route's `timeout_secs` is the default 60 s), the manifest `PUT`
/// still fails after `write_through_timeout_secs` (3 s) with `424 UNAVAILABLE` naming the upstream
/// and that it answered nothing; no manifest reached the upstream, the entry is failed, and once the
/// upstream answers the same push again is delivered.
#[test]
fn a_write_through_push_to_a_silent_upstream_fails_in_time() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = relay.addr().to_string();
    let wharf = wharf_routing(&up, "write-through", &[], &bounded_delivery());
    let gate = Gate::new();
    relay.add_rule(None, "/v2/", Fault::HoldRequest(gate.clone()));
    let layout = image(&wharf, "v1", 1781);

    let (r, took) = put_index_timed(&wharf, &layout);
    assert_unavailable_in_time(&r, took, &up, "answered none");
    eprintln!("answered after {took:?}: {}", error_message(&r));
    Api::new(wharf.base())
        .get_manifest(LOCAL, "v1")
        .assert_status(404);
    let failed = failed_entry(&wharf, &layout, "answered none");
    assert!(
        !relay
            .seen()
            .iter()
            .any(|s| s.method == "PUT" && s.path().contains("/manifests/")),
        "no manifest may reach the upstream of a failed push:\n{}",
        relay.describe()
    );

    relay.clear_rules();
    gate.open();
    push_layout_raw(&Api::new(wharf.base()), LOCAL, None, &layout, "v1");
    assert_image_upstream(&Api::new(registry.base()), REMOTE, "v1", &layout);
    assert_superseded(&wharf, &layout, &failed);
}
