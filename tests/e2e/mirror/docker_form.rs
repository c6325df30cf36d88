//! Docker's `registry-mirrors` form: names without a registry host go to `mirror.default_upstream`;
//! for docker.io, official images are asked for without `library/`. Here "docker.io" is a local
//! registry (behind a counting relay), so the mapping applies and nothing leaves the machine.

use crate::fixtures::SmallImage;
use crate::harness::{DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{self, sha256_digest};
use crate::skopeo::Skopeo;

use super::push_to_upstream;
use super::relay::Relay;

fn docker_hub_standin(relay: &Relay) -> WharfOptions {
    WharfOptions {
        mirror: MirrorOptions {
            default_upstream: Some("docker.io".into()),
            upstreams: vec![UpstreamSpec::http("docker.io", relay.addr())],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Header values split at commas, trimmed: the same list whether sent as one line or several.
fn values(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|l| l.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Proves: with `default_upstream` = an upstream whose host is docker.io, `GET`/`HEAD
/// /v2/alpine/manifests/3` and `/v2/library/alpine/manifests/3` both serve `library/alpine:3` from
/// the upstream (HEAD with Docker-Content-Digest and Content-Length), the upstream is only ever asked
/// for `library/alpine`, every `Accept` value the client sent reaches the upstream unchanged, and
/// skopeo pulls the whole 3-platform image from `docker://<wharf>/alpine:3`.
#[test]
fn names_without_a_host_go_to_the_default_upstream_with_library_mapping() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = Wharf::start(docker_hub_standin(&relay));
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("3", 600));
    push_to_upstream(&registry, &layout, "library/alpine");
    let api = Api::new(wharf.base());

    // The first request (cold) carries two Accept lines; both must reach the upstream as they were.
    let accept = [
        ("Accept", oci::OCI_INDEX),
        (
            "Accept",
            "application/vnd.docker.distribution.manifest.list.v2+json;q=0.9",
        ),
    ];
    let g = api.request("GET", "/v2/library/alpine/manifests/3", &accept, None);
    g.assert_status(200);
    assert_eq!(
        sha256_digest(&g.body),
        layout.index.digest,
        "{}",
        g.describe()
    );
    let sent = values(&accept.iter().map(|(_, v)| *v).collect::<Vec<_>>());
    let manifest_requests: Vec<_> = relay
        .seen()
        .into_iter()
        .filter(|s| s.path().contains("/manifests/"))
        .collect();
    assert!(
        !manifest_requests.is_empty(),
        "the upstream was never asked"
    );
    for s in &manifest_requests {
        assert_eq!(
            values(&s.header_values("Accept")),
            sent,
            "{} {} reached the upstream with other Accept values than the client sent",
            s.method,
            s.target
        );
    }

    for name in ["alpine", "library/alpine"] {
        super::assert_manifest_head(
            &api,
            &format!("/v2/{name}/manifests/3"),
            &layout.index.digest,
            layout.index.size,
        );
        let g = api.get_manifest(name, "3");
        g.assert_status(200);
        assert_eq!(
            sha256_digest(&g.body),
            layout.index.digest,
            "GET /v2/{name}/manifests/3: {}",
            g.describe()
        );
        assert_eq!(g.header("Content-Type"), Some(oci::OCI_INDEX));
    }

    let out = wharf.scratch("out");
    Skopeo::new().copy(
        &format!("docker://{}/alpine:3", wharf.host()),
        &format!("oci:{}:3", out.display()),
    );
    assert_same_image(&layout, &out, "3");

    let elsewhere: Vec<String> = relay
        .seen()
        .iter()
        .filter(|s| !s.path().starts_with("/v2/library/alpine/"))
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the upstream must only be asked for library/alpine: {elsewhere:?}"
    );
}

/// Proves: a name pushed to wharf is wharf's own even when the default upstream has the same name:
/// `busybox:1` is the local image, `busybox:2` (only upstream) is 404 MANIFEST_UNKNOWN, an upstream
/// blob under that name is 404 BLOB_UNKNOWN, and the upstream is never asked about busybox.
#[test]
fn a_repository_pushed_to_wharf_stays_local() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = Wharf::start(docker_hub_standin(&relay));
    let upstream_api = Api::new(registry.base());
    let remote1 = SmallImage::push(&upstream_api, "library/busybox", "1", 701);
    let _remote2 = SmallImage::push(&upstream_api, "library/busybox", "2", 702);
    let api = Api::new(wharf.base());
    let local = SmallImage::push(&api, "busybox", "1", 703);

    let g = api.get_manifest("busybox", "1");
    g.assert_status(200);
    assert_eq!(
        sha256_digest(&g.body),
        local.manifest_digest,
        "busybox:1 must be the image pushed to wharf, not the upstream's"
    );
    local.assert_intact(&api);
    api.get_manifest("busybox", "2")
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.get(&format!("/v2/busybox/blobs/{}", remote1.layer.digest))
        .assert_error(404, "BLOB_UNKNOWN");
    assert_eq!(
        relay.count("GET", "busybox") + relay.count("HEAD", "busybox"),
        0,
        "the upstream was asked about a local repository:\n{}",
        relay.describe()
    );

    // The default upstream still serves names that are not local.
    let other = SmallImage::push(&upstream_api, "library/hello", "latest", 704);
    let g = api.get_manifest("hello", "latest");
    g.assert_status(200);
    assert_eq!(sha256_digest(&g.body), other.manifest_digest);
}
