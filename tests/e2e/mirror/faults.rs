//! Upstream faults: wrong bytes, a connection cut mid-body, 500 and 429 answers, an upstream that is
//! down. Each time: nothing bad is cached (no file for the digest under `blobs/`), the client gets a
//! clear error (or the stale copy of a cached tag, with a `Warning`), and a retry after the fault
//! heals succeeds.

use std::fs;

use crate::fixtures::SmallImage;
use crate::harness::{log_tail, DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::{Api, Resp};
use crate::oci::sha256_digest;

use super::relay::{Fault, Relay};
use super::{
    assert_cached_intact, assert_message_names, assert_not_accepted, cached, fetch,
    push_noise_blob, upstream, wait_until,
};

fn wharf_for(host: &str, via: std::net::SocketAddr, tag_ttl_secs: Option<u64>) -> Wharf {
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            tag_ttl_secs,
            upstreams: vec![upstream(host, via, "up")],
            ..Default::default()
        },
        ..Default::default()
    })
}

/// wharf logs the failure with the upstream's name and the digest.
fn assert_logged(wharf: &Wharf, needles: &[&str]) {
    wait_until(
        || {
            format!(
                "no log line names all of {needles:?}\n--- wharf log ---\n{}",
                log_tail(&wharf.log_path(), 30)
            )
        },
        || {
            fs::read_to_string(wharf.log_path())
                .unwrap_or_default()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        },
    );
}

fn assert_not_cached(wharf: &Wharf, digests: &[&str], after: &str) {
    for d in digests {
        assert!(
            !cached(wharf, d),
            "after {after}: {d} is in wharf's store although the upstream never delivered it intact"
        );
    }
}

fn assert_fresh(r: &Resp, digest: &str) {
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.header("Warning"),
        None,
        "a fresh answer has no Warning: {}",
        r.describe()
    );
}

fn assert_stale(r: &Resp, digest: &str, host: &str) {
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest),
        "{}",
        r.describe()
    );
    let w = r.header("Warning").unwrap_or_default();
    assert!(
        w.starts_with("110 "),
        "a tag served stale after an upstream failure needs `Warning: 110 ...`: {}",
        r.describe()
    );
    assert!(
        w.contains(host),
        "the Warning should name the upstream {host}: {w}"
    );
}

fn head_tag(api: &Api, repo: &str, tag: &str) -> Resp {
    api.request(
        "HEAD",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", &crate::http::all_manifest_types())],
        None,
    )
}

/// Proves: a blob whose bytes on the upstream are wrong (distribution's `data` file corrupted, same
/// length) is never given to a client as a complete body, is not cached (not on a retry either, while
/// the fault lasts), the failure is logged with the upstream and digest; once the file is repaired a
/// retry gets the blob and caches it.
#[test]
fn wrong_bytes_from_upstream_are_not_cached_and_a_retry_heals() {
    const SIZE: u64 = 3 << 20;
    let registry = DistRegistry::start();
    let up = registry.host();
    let wharf = wharf_for(&up, registry.addr(), None);
    let upstream_api = Api::new(registry.base());
    let digest = push_noise_blob(&upstream_api, "team/app", 31, SIZE);

    let data = registry.blob_data_path(&digest);
    let good = fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let mut bad = good.clone();
    bad[(SIZE / 2) as usize] ^= 0xff;
    fs::write(&data, &bad).unwrap();
    // The tooling is right: the upstream now serves bytes that do not match the digest.
    let direct = fetch(
        &format!("{}/v2/team/app/blobs/{digest}", registry.base()),
        &[],
    );
    assert!(
        direct.status == 200 && direct.len == SIZE && direct.digest != digest,
        "{}",
        direct.describe()
    );

    let url = format!("{}/v2/up/team/app/blobs/{digest}", wharf.base());
    for attempt in ["first GET", "retry while the upstream is still wrong"] {
        let f = fetch(&url, &[]);
        eprintln!("wrong bytes, {attempt}: {}", f.describe());
        assert_not_accepted(&f, &digest, SIZE);
        assert_not_cached(&wharf, &[&digest], attempt);
    }
    assert_logged(&wharf, &[&digest, &up]);

    fs::write(&data, &good).unwrap();
    let f = fetch(&url, &[]);
    assert!(
        f.is_complete(&digest, SIZE),
        "after repair: {}",
        f.describe()
    );
    assert_cached_intact(&wharf, &digest);
}

/// Proves: an upstream connection cut mid-body (a relay hangs up after 1 MiB of a 4 MiB blob, or 40
/// bytes into a manifest) gives the client a cut-short blob body / a 424 UNAVAILABLE naming the
/// upstream for the manifest, caches nothing, and a retry after the fault heals succeeds.
#[test]
fn upstream_closing_mid_body_caches_nothing_and_a_retry_heals() {
    const SIZE: u64 = 4 << 20;
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = wharf_for(&up, relay.addr(), None);
    let upstream_api = Api::new(registry.base());
    let digest = push_noise_blob(&upstream_api, "team/app", 32, SIZE);
    let image = SmallImage::push(&upstream_api, "team/img", "v1", 33);
    let api = Api::new(wharf.base());

    relay.add_rule(Some("GET"), "/blobs/", Fault::CutBody(1 << 20));
    relay.add_rule(Some("GET"), "/manifests/", Fault::CutBody(40));
    let url = format!("{}/v2/up/team/app/blobs/{digest}", wharf.base());
    let f = fetch(&url, &[]);
    eprintln!("cut blob body: {}", f.describe());
    assert_not_accepted(&f, &digest, SIZE);
    assert_not_cached(&wharf, &[&digest], "a cut blob body");
    assert_logged(&wharf, &[&digest, &up]);

    for reference in [image.manifest_digest.as_str(), "v1"] {
        let r = api.get_manifest("up/team/img", reference);
        r.assert_error(424, "UNAVAILABLE");
        assert_message_names(&r, &up);
    }
    assert_not_cached(&wharf, &[&image.manifest_digest], "a cut manifest body");

    relay.clear_rules();
    let f = fetch(&url, &[]);
    assert!(
        f.is_complete(&digest, SIZE),
        "after healing: {}",
        f.describe()
    );
    assert_cached_intact(&wharf, &digest);
    let r = api.get_manifest("up/team/img", "v1");
    assert_fresh(&r, &image.manifest_digest);
    assert!(r.body == image.manifest);
    assert_cached_intact(&wharf, &image.manifest_digest);
}

/// Proves, with `tag_ttl_secs = 0` (every tag request revalidates): while the upstream answers 500,
/// an uncached tag, manifest or blob is a 424 UNAVAILABLE naming the upstream; while it answers 429, a
/// 429 TOOMANYREQUESTS; nothing is cached either way. After it heals the pull works; once cached, a 500 or
/// 429 on revalidation serves the tag stale (GET and HEAD) with `Warning: 110`, and cached blobs and
/// manifests by digest are served without the upstream; after healing the tag is fresh again.
#[test]
fn upstream_500_and_429_give_clear_errors_or_stale_tags_and_heal() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = wharf_for(&up, relay.addr(), Some(0));
    let image = SmallImage::push(&Api::new(registry.base()), "team/app", "v1", 34);
    let api = Api::new(wharf.base());
    let repo = "up/team/app";
    let all = [
        image.manifest_digest.as_str(),
        image.config.digest.as_str(),
        image.layer.digest.as_str(),
    ];

    for (status, code, want) in [(500, "UNAVAILABLE", 424), (429, "TOOMANYREQUESTS", 429)] {
        relay.clear_rules();
        relay.add_rule(None, "/v2/", Fault::Status(status));
        let what = format!("upstream answering {status}");
        let r = api.get_manifest(repo, "v1");
        r.assert_error(want, code);
        assert_message_names(&r, &up);
        let r = api.get_manifest(repo, &image.manifest_digest);
        r.assert_error(want, code);
        let r = api.get(&format!("/v2/{repo}/blobs/{}", image.layer.digest));
        r.assert_error(want, code);
        assert_message_names(&r, &up);
        assert_not_cached(&wharf, &all, &what);
    }

    relay.clear_rules();
    let r = api.get_manifest(repo, "v1");
    assert_fresh(&r, &image.manifest_digest);
    api.assert_blob_intact(repo, &image.config.digest, image.config.size);
    api.assert_blob_intact(repo, &image.layer.digest, image.layer.size);
    let r = api.get_manifest(repo, &image.manifest_digest);
    r.assert_status(200);
    assert!(r.body == image.manifest, "{}", r.describe());
    for d in all {
        assert_cached_intact(&wharf, d);
    }

    for status in [500, 429] {
        relay.clear_rules();
        relay.add_rule(None, "/v2/", Fault::Status(status));
        let before = relay.seen().len();
        assert_stale(&api.get_manifest(repo, "v1"), &image.manifest_digest, &up);
        assert_stale(&head_tag(&api, repo, "v1"), &image.manifest_digest, &up);
        assert!(
            relay.seen().len() > before,
            "with tag_ttl_secs = 0 the tag must be revalidated upstream"
        );
        let r = api.get_manifest(repo, &image.manifest_digest);
        r.assert_status(200);
        assert!(r.body == image.manifest);
        api.assert_blob_intact(repo, &image.layer.digest, image.layer.size);
    }

    relay.clear_rules();
    assert_fresh(&api.get_manifest(repo, "v1"), &image.manifest_digest);
    assert_eq!(sha256_digest(&image.manifest), image.manifest_digest);
}

/// Proves, with `tag_ttl_secs = 0`: with the upstream stopped, a cached tag is served stale with
/// `Warning: 110` (GET and HEAD) and its cached blobs still serve, while an uncached tag, manifest or
/// blob is a 424 UNAVAILABLE naming the upstream and nothing of it is cached; once the upstream is
/// back, the uncached image pulls and the cached tag is fresh again.
#[test]
fn upstream_down_gives_unavailable_or_stale_tags_and_heals() {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    let wharf = wharf_for(&up, registry.addr(), Some(0));
    let upstream_api = Api::new(registry.base());
    let seen = SmallImage::push(&upstream_api, "team/seen", "v1", 35);
    let unseen = SmallImage::push(&upstream_api, "team/unseen", "v1", 36);
    let api = Api::new(wharf.base());

    assert_fresh(
        &api.get_manifest("up/team/seen", "v1"),
        &seen.manifest_digest,
    );
    api.assert_blob_intact("up/team/seen", &seen.layer.digest, seen.layer.size);
    api.assert_blob_intact("up/team/seen", &seen.config.digest, seen.config.size);

    registry.stop();
    assert_stale(
        &api.get_manifest("up/team/seen", "v1"),
        &seen.manifest_digest,
        &up,
    );
    assert_stale(
        &head_tag(&api, "up/team/seen", "v1"),
        &seen.manifest_digest,
        &up,
    );
    api.assert_blob_intact("up/team/seen", &seen.layer.digest, seen.layer.size);

    let repo = "up/team/unseen";
    let r = api.get_manifest(repo, "v1");
    r.assert_error(424, "UNAVAILABLE");
    assert_message_names(&r, &up);
    api.get_manifest(repo, &unseen.manifest_digest)
        .assert_error(424, "UNAVAILABLE");
    let r = api.get(&format!("/v2/{repo}/blobs/{}", unseen.layer.digest));
    r.assert_error(424, "UNAVAILABLE");
    assert_message_names(&r, &up);
    assert_not_cached(
        &wharf,
        &[
            &unseen.manifest_digest,
            &unseen.config.digest,
            &unseen.layer.digest,
        ],
        "an upstream that is down",
    );

    registry.start_again();
    let r = api.get_manifest(repo, "v1");
    assert_fresh(&r, &unseen.manifest_digest);
    api.assert_blob_intact(repo, &unseen.layer.digest, unseen.layer.size);
    api.assert_blob_intact(repo, &unseen.config.digest, unseen.config.size);
    assert_fresh(
        &api.get_manifest("up/team/seen", "v1"),
        &seen.manifest_digest,
    );
}
