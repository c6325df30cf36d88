//! What the mirror serves under an upstream's name: only what that upstream repository has. A blob
//! or manifest that is in wharf's store for another reason (pushed to a private local repository,
//! mirrored from another repository or upstream) is served under a mirrored name only after the
//! upstream confirms that repository has it (and, unless that upstream sent it before, sends it:
//! `liar.rs`), and a "no" records nothing. And a request that names
//! an upstream wharf has no `[[upstream]]` for is served locally, with a 404 that says so.

use std::fs;

use crate::fixtures::SmallImage;
use crate::harness::{log_tail, DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;

use super::relay::Relay;
use super::{push_noise_blob, upstream};

fn wharf_for(host: &str, via: std::net::SocketAddr) -> Wharf {
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(host, via, "up")],
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Proves: a blob and a manifest pushed to wharf's own `private/...` repositories are not served
/// through the mirror under any upstream repository name (GET and HEAD answer 404 after one upstream
/// `HEAD` for the blob, one `GET` for the manifest), and 200 such requests with fresh names leave the metadata file as it was; once the upstream
/// really has the same content, it is fetched once (the upstream has never sent it: its word alone
/// would let a lying upstream have private content, see `liar.rs`), and linked, so the next request
/// asks the upstream nothing.
#[test]
fn private_content_is_not_served_under_an_upstream_name() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = wharf_for(&registry.host(), relay.addr());
    let api = Api::new(wharf.base());

    let blob = push_noise_blob(&api, "private/app", 41, 64 << 10);
    let image = SmallImage::push(&api, "private/img", "v1", 42);

    api.get(&format!("/v2/up/team/app/blobs/{blob}"))
        .assert_error(404, "BLOB_UNKNOWN");
    api.head(&format!("/v2/up/team/app/blobs/{blob}"))
        .assert_status(404);
    let r = api.get_manifest("up/team/img", &image.manifest_digest);
    r.assert_error(404, "MANIFEST_UNKNOWN");
    assert!(
        relay.count("HEAD", &format!("/v2/team/app/blobs/{blob}")) >= 1,
        "wharf must ask the upstream before serving a stored blob under its name: {}",
        relay.describe()
    );
    assert_eq!(
        relay.count("GET", "/blobs/"),
        0,
        "a blob the upstream denies having is never fetched: {}",
        relay.describe()
    );

    // Nothing is recorded for names the upstream denies: the metadata file does not grow (on the
    // shared backends: the database's size).
    let size = || match wharf.shared() {
        Some(b) => b
            .postgres
            .psql(
                "SELECT sum((xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM ' || \
                 tablename, false, true, '')))[1]::text::bigint) FROM pg_tables \
                 WHERE schemaname = 'public'",
            )
            .parse::<u64>()
            .unwrap_or(0),
        None => fs::metadata(wharf.data_dir().join("meta.redb"))
            .unwrap()
            .len(),
    };
    let before = size();
    for i in 0..200 {
        let path = format!("/v2/up/probe{i}/x/blobs/{blob}");
        api.get(&path).assert_error(404, "BLOB_UNKNOWN");
    }
    let after = size();
    assert_eq!(
        before, after,
        "200 denied blob requests with fresh repository names grew the metadata from {before} to \
         {after} bytes"
    );

    // The upstream gets the same bytes: now they are served from the one stored copy.
    let upstream_api = Api::new(registry.base());
    assert_eq!(
        push_noise_blob(&upstream_api, "team/app", 41, 64 << 10),
        blob
    );
    let upstream_image = SmallImage::push(&upstream_api, "team/img", "v1", 42);
    assert_eq!(upstream_image.manifest_digest, image.manifest_digest);
    relay.clear_rules();
    let gets_before = relay.count("GET", "/v2/");
    api.assert_blob_intact("up/team/app", &blob, 64 << 10);
    let r = api.get_manifest("up/team/img", &image.manifest_digest);
    r.assert_status(200);
    assert!(r.body == image.manifest, "{}", r.describe());
    assert_eq!(
        relay.count("GET", "/v2/") - gets_before,
        2,
        "content stored here but never sent by the upstream is fetched from it once (the blob and \
         the manifest): {}",
        relay.describe()
    );
    let heads = relay.seen().len();
    api.assert_blob_intact("up/team/app", &blob, 64 << 10);
    api.get_manifest("up/team/img", &image.manifest_digest)
        .assert_status(200);
    assert_eq!(
        relay.seen().len(),
        heads,
        "once confirmed, the content is linked to the cache repository: {}",
        relay.describe()
    );
}

/// Proves: a blob mirrored for one upstream repository is not served under another repository of
/// the same upstream that does not have it (404 after one `HEAD`), while a repository that does have
/// it gets it from the stored copy.
#[test]
fn a_blob_mirrored_for_one_repository_is_not_served_under_another() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = wharf_for(&registry.host(), relay.addr());
    let upstream_api = Api::new(registry.base());
    let blob = push_noise_blob(&upstream_api, "team/public", 43, 32 << 10);
    let api = Api::new(wharf.base());
    api.assert_blob_intact("up/team/public", &blob, 32 << 10);

    api.get(&format!("/v2/up/team/secret/blobs/{blob}"))
        .assert_error(404, "BLOB_UNKNOWN");
    assert_eq!(relay.count("GET", "/blobs/"), 1, "{}", relay.describe());

    assert_eq!(
        push_noise_blob(&upstream_api, "team/other", 43, 32 << 10),
        blob
    );
    api.assert_blob_intact("up/team/other", &blob, 32 << 10);
    assert_eq!(
        relay.count("GET", "/blobs/"),
        1,
        "the stored copy serves the second repository: {}",
        relay.describe()
    );
}

/// Proves: a request that names a registry with no `[[upstream]]` (containerd's `ns=`, or a path
/// prefix that is a host) is still served from wharf's own repositories, its 404 names the host and
/// the config entry that would mirror it, and the host is logged once.
#[test]
fn a_request_naming_an_unconfigured_upstream_says_how_to_mirror_it() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let image = SmallImage::push(&api, "team/app", "v1", 44);

    let r = api.get("/v2/team/app/manifests/v1?ns=quay.io");
    r.assert_status(200);
    assert!(
        r.body == image.manifest,
        "local content is served with any ns="
    );

    for path in [
        "/v2/library/alpine/manifests/3?ns=quay.io",
        "/v2/library/alpine/manifests/3?ns=quay.io",
        "/v2/quay.io/library/alpine/manifests/3",
    ] {
        let r = api.get_manifest_path(path);
        r.assert_error(404, "MANIFEST_UNKNOWN");
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            text.contains("quay.io") && text.contains("[[upstream]]"),
            "the 404 should name quay.io and the [[upstream]] entry that would mirror it: {}",
            r.describe()
        );
    }
    let r = api.get("/v2/library/alpine/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000?ns=quay.io");
    r.assert_error(404, "BLOB_UNKNOWN");

    let wait = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let count = || {
        fs::read_to_string(wharf.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("not a configured upstream") && l.contains("quay.io"))
            .count()
    };
    while count() == 0 && std::time::Instant::now() < wait {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        count(),
        1,
        "the unconfigured host is logged exactly once:\n{}",
        log_tail(&wharf.log_path(), 30)
    );
}

/// Proves: with a default upstream configured (Docker's host-less form), a request that names another
/// registry wharf has no `[[upstream]]` for (`?ns=quay.io`, or a `quay.io/...` path prefix) is not
/// answered from the default upstream: that would hand out another registry's image under the name
/// the client asked for. It is a 404 naming the host, and the default upstream is never asked.
#[test]
fn an_unconfigured_registry_never_falls_back_to_the_default_upstream() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let upstream_api = Api::new(registry.base());
    SmallImage::push(&upstream_api, "library/alpine", "3", 45);
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            default_upstream: Some(registry.host()),
            upstreams: vec![upstream(&registry.host(), relay.addr(), "up")],
            ..Default::default()
        },
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    // The host-less form does go to the default upstream.
    api.get_manifest("library/alpine", "3").assert_status(200);
    let before = relay.seen().len();
    for path in [
        "/v2/library/alpine/manifests/3?ns=quay.io",
        "/v2/quay.io/library/alpine/manifests/3",
    ] {
        let r = api.get_manifest_path(path);
        r.assert_error(404, "MANIFEST_UNKNOWN");
        assert!(
            String::from_utf8_lossy(&r.body).contains("quay.io"),
            "{}",
            r.describe()
        );
    }
    assert_eq!(
        relay.seen().len(),
        before,
        "a request for quay.io reached the default upstream: {}",
        relay.describe()
    );
}
