//! Referrers through the mirror: signatures, SBOMs and attestations of a mirrored image are listed
//! from the upstream (its referrers API, or the spec's `sha256-<hex>` tag schema when it has none),
//! cached like tags, served stale when the upstream fails, and the referrer manifests and blobs pull
//! by digest through the same store.

use serde_json::{json, Value};

use crate::fixtures::{empty_config, image_manifest, SmallImage};
use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::Desc;
use crate::oci::{self, sha256_digest};

use super::upstream;

const SBOM: &str = "application/vnd.example.sbom.v1";

/// Pushes an SBOM artifact for `subject` into `repo` of `api` (by digest, as ORAS does); returns its
/// descriptor as a referrers list shows it, and its payload blob.
fn push_sbom(api: &Api, repo: &str, subject: &Desc, payload: &[u8]) -> (Value, Desc) {
    let (config, config_bytes) = empty_config();
    api.push_blob(repo, config_bytes);
    let layer = Desc {
        media_type: "application/spdx+json".into(),
        digest: api.push_blob(repo, payload),
        size: payload.len() as u64,
    };
    let body = image_manifest(
        &config,
        std::slice::from_ref(&layer),
        Some(json!({ "subject": subject.to_json(), "artifactType": SBOM })),
    );
    let digest = sha256_digest(&body);
    api.put_manifest(repo, &digest, oci::OCI_MANIFEST, &body)
        .assert_status(201);
    let desc = json!({
        "mediaType": oci::OCI_MANIFEST,
        "digest": digest,
        "size": body.len(),
        "artifactType": SBOM,
    });
    (desc, layer)
}

fn wharf_for(host: &str, addr: std::net::SocketAddr) -> Wharf {
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            tag_ttl_secs: Some(0),
            upstreams: vec![upstream(host, addr, "up")],
            ..Default::default()
        },
        ..Default::default()
    })
}

fn listed(api: &Api, path: &str) -> (Vec<Value>, crate::http::Resp) {
    let r = api.get(path);
    r.assert_status(200);
    assert_eq!(
        r.header("Content-Type"),
        Some(oci::OCI_INDEX),
        "{}",
        r.describe()
    );
    let list = r.json()["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (list, r)
}

/// Proves, with a real distribution 2.8 upstream (no referrers API): the referrers of a mirrored image
/// come from the upstream's `sha256-<hex>` tag index, filter by `artifactType`, and the referrer
/// manifest and its blob pull through wharf with their exact bytes; with the upstream stopped the
/// cached list is served with `Warning`; a subject nothing refers to lists nothing.
#[test]
fn referrers_come_from_the_upstream_tag_schema_and_survive_an_outage() {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    let upstream_api = Api::new(registry.base());
    let image = SmallImage::push(&upstream_api, "team/app", "v1", 61);
    let (sbom, payload) = push_sbom(
        &upstream_api,
        "team/app",
        &image.manifest_desc(),
        b"{\"spdx\":1}",
    );
    // What oras and cosign maintain on a registry without the referrers API.
    let mut tagged = sbom.clone();
    tagged["annotations"] = json!({ "org.example": "kept" });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [tagged],
    }))
    .unwrap();
    let fallback_tag = format!("sha256-{}", oci::hex_part(&image.manifest_digest));
    upstream_api.push_manifest("team/app", &fallback_tag, oci::OCI_INDEX, &index);

    let wharf = wharf_for(&up, registry.addr());
    let api = Api::new(wharf.base());
    let path = format!("/v2/up/team/app/referrers/{}", image.manifest_digest);
    let (list, _) = listed(&api, &path);
    assert_eq!(
        list,
        vec![tagged.clone()],
        "the upstream's referrers, as listed there"
    );

    let (filtered, r) = listed(&api, &format!("{path}?artifactType={SBOM}"));
    assert_eq!(filtered, vec![tagged.clone()]);
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    let (none, _) = listed(&api, &format!("{path}?artifactType=application/other"));
    assert!(none.is_empty());

    let sbom_digest = sbom["digest"].as_str().unwrap();
    let r = api.get_manifest("up/team/app", sbom_digest);
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), sbom_digest);
    api.assert_blob_intact("up/team/app", &payload.digest, payload.size);

    let (nothing, _) = listed(
        &api,
        &format!("/v2/up/team/app/referrers/{}", image.layer.digest),
    );
    assert!(nothing.is_empty(), "no tag index means no referrers");

    registry.stop();
    let (list, r) = listed(&api, &path);
    assert_eq!(list, vec![tagged]);
    let w = r.header("Warning").unwrap_or_default();
    assert!(
        w.starts_with("110 ") && w.contains(&up),
        "cached referrers served during an outage carry a Warning naming {up}: {}",
        r.describe()
    );
    let r = api.get(&format!(
        "/v2/up/team/app/referrers/{}",
        image.config.digest
    ));
    r.assert_error(424, "UNAVAILABLE");
}

/// Proves, with another wharf as the upstream (it has the referrers API): the mirror lists the
/// upstream's referrers through that API, and a newly pushed referrer shows after revalidation.
#[test]
fn referrers_come_from_an_upstream_referrers_api() {
    let origin = Wharf::start(WharfOptions::default());
    let origin_api = Api::new(origin.base());
    let image = SmallImage::push(&origin_api, "team/app", "v1", 62);
    let (first, _) = push_sbom(
        &origin_api,
        "team/app",
        &image.manifest_desc(),
        b"{\"n\":1}",
    );

    let wharf = wharf_for(&origin.host(), origin.addr());
    let api = Api::new(wharf.base());
    let path = format!("/v2/up/team/app/referrers/{}", image.manifest_digest);
    let (list, _) = listed(&api, &path);
    assert_eq!(list, vec![first.clone()]);

    let (second, _) = push_sbom(
        &origin_api,
        "team/app",
        &image.manifest_desc(),
        b"{\"n\":2}",
    );
    let (list, _) = listed(&api, &path);
    let mut want = vec![first, second];
    want.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    assert_eq!(list, want, "revalidated after tag_ttl_secs (0 here)");
}
