//! Upstream answers that are not plain failures: a tag that names a digest the upstream then denies
//! having, a 429 with `Retry-After`, and tag lists while the upstream is down.

use serde_json::json;

use crate::fixtures::SmallImage;
use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::{Api, Resp};
use crate::skopeo::Skopeo;

use super::relay::{Fault, Relay};
use super::{assert_message_names, upstream};

fn wharf_for(host: &str, via: std::net::SocketAddr) -> Wharf {
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            // Every tag request revalidates upstream.
            tag_ttl_secs: Some(0),
            upstreams: vec![upstream(host, via, "up")],
            ..Default::default()
        },
        ..Default::default()
    })
}

fn assert_stale(r: &Resp, host: &str) {
    r.assert_status(200);
    let w = r.header("Warning").unwrap_or_default();
    assert!(
        w.starts_with("110 ") && w.contains(host),
        "an answer from the cache after an upstream failure needs `Warning: 110 ...` naming {host}: {}",
        r.describe()
    );
}

/// Proves: when the upstream's tag `HEAD` names a digest that its `GET` then answers 404 for, wharf
/// answers 424 UNAVAILABLE naming the inconsistency (not a 404 `MANIFEST_UNKNOWN` about a digest the client never
/// asked for); once the tag is cached, the same fault serves the cached copy with `Warning`.
#[test]
fn a_tag_naming_a_digest_the_upstream_cannot_serve_is_an_upstream_failure() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = wharf_for(&up, relay.addr());
    let upstream_api = Api::new(registry.base());
    let first = SmallImage::push(&upstream_api, "team/app", "v1", 51);
    let api = Api::new(wharf.base());

    relay.add_rule(Some("GET"), "/manifests/sha256:", Fault::Status(404));
    let r = api.get_manifest("up/team/app", "v1");
    r.assert_error(424, "UNAVAILABLE");
    assert_message_names(&r, &up);
    assert_message_names(&r, "inconsistent");
    assert_message_names(&r, &first.manifest_digest);

    relay.clear_rules();
    let r = api.get_manifest("up/team/app", "v1");
    r.assert_status(200);
    assert!(r.body == first.manifest);

    // The tag moves upstream, and the new digest cannot be fetched: the cached copy stands in.
    let second = SmallImage::push(&upstream_api, "team/app", "v1", 52);
    relay.add_rule(Some("GET"), "/manifests/sha256:", Fault::Status(404));
    let r = api.get_manifest("up/team/app", "v1");
    assert_stale(&r, &up);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(first.manifest_digest.as_str())
    );
    relay.clear_rules();
    let r = api.get_manifest("up/team/app", "v1");
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(second.manifest_digest.as_str()),
        "{}",
        r.describe()
    );
}

/// Proves: an upstream 429 reaches the client as 429 `TOOMANYREQUESTS` with the upstream's
/// `Retry-After`, for a tag, a manifest by digest, a blob (GET and HEAD) and a tag list.
#[test]
fn an_upstream_429_passes_on_its_retry_after() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = wharf_for(&up, relay.addr());
    let image = SmallImage::push(&Api::new(registry.base()), "team/app", "v1", 53);
    let api = Api::new(wharf.base());
    relay.add_rule(None, "/v2/", Fault::Status(429));

    let requests = [
        ("GET", "/v2/up/team/app/manifests/v1".to_owned()),
        (
            "GET",
            format!("/v2/up/team/app/manifests/{}", image.manifest_digest),
        ),
        (
            "GET",
            format!("/v2/up/team/app/blobs/{}", image.layer.digest),
        ),
        (
            "HEAD",
            format!("/v2/up/team/app/blobs/{}", image.layer.digest),
        ),
        ("GET", "/v2/up/team/app/tags/list".to_owned()),
    ];
    for (method, path) in requests {
        let r = api.request(
            method,
            &path,
            &[("Accept", &crate::http::all_manifest_types())],
            None,
        );
        r.assert_status(429);
        assert_eq!(
            r.header("Retry-After"),
            Some("1"),
            "the upstream's Retry-After must reach the client: {}",
            r.describe()
        );
        if method == "GET" {
            r.assert_error(429, "TOOMANYREQUESTS");
            assert_message_names(&r, &up);
        }
    }
}

/// Proves: with the upstream down, the tag list of a repository the cache holds is served from the
/// cache (with `Warning`, paginated), so `skopeo inspect` of a cached image works; a repository the
/// cache does not hold is a 424 UNAVAILABLE naming the upstream, the cause and what to check.
#[test]
fn tag_lists_of_cached_repositories_survive_an_upstream_outage() {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    let wharf = wharf_for(&up, registry.addr());
    let upstream_api = Api::new(registry.base());
    let v1 = SmallImage::push(&upstream_api, "team/app", "v1", 54);
    SmallImage::push(&upstream_api, "team/app", "v2", 55);
    let api = Api::new(wharf.base());
    for tag in ["v1", "v2"] {
        api.get_manifest("up/team/app", tag).assert_status(200);
    }
    api.assert_blob_intact("up/team/app", &v1.config.digest, v1.config.size);
    api.assert_blob_intact("up/team/app", &v1.layer.digest, v1.layer.size);

    registry.stop();
    let r = api.get("/v2/up/team/app/tags/list");
    assert_stale(&r, &up);
    assert_eq!(
        r.json(),
        json!({ "name": "up/team/app", "tags": ["v1", "v2"] })
    );
    let r = api.get("/v2/up/team/app/tags/list?n=1");
    assert_stale(&r, &up);
    assert_eq!(r.json()["tags"], json!(["v1"]));
    assert_eq!(
        r.header("Link"),
        Some("</v2/up/team/app/tags/list?n=1&last=v1>; rel=\"next\""),
        "{}",
        r.describe()
    );

    let inspected = Skopeo::new().inspect(&format!("docker://{}/up/team/app:v1", wharf.host()));
    assert_eq!(
        inspected["RepoTags"],
        json!(["v1", "v2"]),
        "skopeo inspect of a cached image while the upstream is down: {inspected}"
    );

    let r = api.get("/v2/up/team/never/tags/list");
    r.assert_error(424, "UNAVAILABLE");
    assert_message_names(&r, &up);
    // The cause, and what to check.
    assert_message_names(&r, "could not be reached");
    assert_message_names(&r, "[[upstream]]");
}
