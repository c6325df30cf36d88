//! Manifests: headers, exact bytes, content negotiation, the default size limit.

use crate::fixtures::{
    assert_manifest_too_large, empty_config, image_manifest, index_manifest, manifest_of_size,
    SmallImage,
};
use crate::harness::{Wharf, WharfOptions};
use crate::http::{raw, Api, Resp};
use crate::layout::Desc;
use crate::oci::{self, sha256_digest, Noise};

fn assert_manifest_headers(r: &Resp, media_type: &str, body: &[u8]) {
    r.assert_status(200);
    assert_eq!(
        r.header("Content-Type"),
        Some(media_type),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.header("Content-Length"),
        Some(body.len().to_string().as_str()),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256_digest(body).as_str()),
        "{}",
        r.describe()
    );
}

/// Proves: HEAD and GET by tag and by digest carry Content-Type (the type pushed), Content-Length and
/// Docker-Content-Digest, and GET returns the pushed bytes exactly, whitespace and key order included,
/// for OCI and Docker schema 2 manifests alike; unknown references are 404 MANIFEST_UNKNOWN.
#[test]
fn manifest_headers_and_exact_bytes() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/manifests";
    let img = SmallImage::push(&api, repo, "v1", 31);

    // Not canonical JSON on purpose: the registry must keep bytes, not re-serialise.
    let oci_bytes = format!(
        "{{\n   \"schemaVersion\" : 2,\n\t\"mediaType\": \"{}\",\n  \"layers\": [ {} ],\n  \"config\": {}\n}}\n",
        oci::OCI_MANIFEST,
        img.layer.to_json(),
        img.config.to_json()
    )
    .into_bytes();
    let docker_config = Desc {
        media_type: oci::DOCKER_CONFIG.into(),
        ..img.config.clone()
    };
    let docker_layer = Desc {
        media_type: oci::DOCKER_LAYER_GZIP.into(),
        ..img.layer.clone()
    };
    let docker_bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::DOCKER_MANIFEST,
        "config": docker_config.to_json(),
        "layers": [docker_layer.to_json()],
    }))
    .unwrap();

    for (tag, media_type, body) in [
        ("pretty", oci::OCI_MANIFEST, &oci_bytes),
        ("docker", oci::DOCKER_MANIFEST, &docker_bytes),
    ] {
        let digest = api.push_manifest(repo, tag, media_type, body);
        for reference in [tag, digest.as_str()] {
            let accept = [("Accept", media_type)];
            let path = format!("/v2/{repo}/manifests/{reference}");
            assert_manifest_headers(&api.request("HEAD", &path, &accept, None), media_type, body);
            let get = api.request("GET", &path, &accept, None);
            assert_manifest_headers(&get, media_type, body);
            assert!(
                get.body == *body,
                "GET {path} changed the bytes: {}",
                get.describe()
            );
        }
    }

    let unknown = sha256_digest(b"no such manifest");
    api.request("HEAD", &format!("/v2/{repo}/manifests/nope"), &[], None)
        .assert_status(404);
    api.get_manifest(repo, "nope")
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.get_manifest(repo, &unknown)
        .assert_error(404, "MANIFEST_UNKNOWN");
    img.assert_intact(&api);
}

/// Proves: an OCI index is not served to a client that accepts only Docker manifests (404
/// MANIFEST_UNKNOWN, as distribution does), and is served when its type is accepted, whether in one
/// Accept header or among several Accept lines (as podman and skopeo send them).
#[test]
fn accept_header_negotiation() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/accept";
    let img = SmallImage::push(&api, repo, "single", 32);
    let index = index_manifest(&[img.manifest_desc()]);
    api.push_manifest(repo, "multi", oci::OCI_INDEX, &index);
    let path = format!("/v2/{repo}/manifests/multi");

    api.request("GET", &path, &[("Accept", oci::DOCKER_MANIFEST)], None)
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.request("HEAD", &path, &[("Accept", oci::DOCKER_MANIFEST)], None)
        .assert_status(404);

    let both = format!("{}, {}", oci::DOCKER_MANIFEST, oci::OCI_INDEX);
    let r = api.request("GET", &path, &[("Accept", &both)], None);
    assert_manifest_headers(&r, oci::OCI_INDEX, &index);
    assert!(r.body == index);
    assert_manifest_headers(
        &api.request("HEAD", &path, &[("Accept", &both)], None),
        oci::OCI_INDEX,
        &index,
    );

    let lines = [
        ("Accept", oci::DOCKER_MANIFEST),
        ("Accept", oci::OCI_MANIFEST),
        ("Accept", oci::OCI_INDEX),
    ];
    let r = raw::send(wharf.addr(), "GET", &path, &lines, b"");
    assert_manifest_headers(&r, oci::OCI_INDEX, &index);
    assert!(
        r.body == index,
        "GET with several Accept lines changed the bytes"
    );
}

/// Proves: with no `max_manifest_bytes` in the config, the limit is 4 MiB exactly: a 4 MiB manifest
/// is stored (clients push manifests that large), one byte more is 413 (sent whole and with
/// `Expect: 100-continue`).
#[test]
fn default_manifest_limit_is_4_mib() {
    const LIMIT: usize = 4 * 1024 * 1024;
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/limit";
    let cfg_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config = Desc {
        media_type: oci::OCI_CONFIG.into(),
        digest: api.push_blob(repo, cfg_bytes),
        size: cfg_bytes.len() as u64,
    };
    let layer_bytes = Noise::bytes(33, 1000);
    let layer = Desc {
        media_type: oci::OCI_LAYER_TAR.into(),
        digest: api.push_blob(repo, &layer_bytes),
        size: 1000,
    };

    let at_limit = manifest_of_size(&config, &layer, LIMIT);
    let digest = api.push_manifest(repo, "big", oci::OCI_MANIFEST, &at_limit);
    let r = api.get_manifest(repo, &digest);
    r.assert_status(200);
    assert!(r.body == at_limit, "4 MiB manifest read back changed");

    let too_big = manifest_of_size(&config, &layer, LIMIT + 1);
    assert_manifest_too_large(&wharf, &api, repo, "too-big", &too_big, true);
    api.get_manifest(repo, "too-big")
        .assert_error(404, "MANIFEST_UNKNOWN");
    // A small manifest still works after the refused one (the connection state or limits did not stick).
    api.push_manifest(
        repo,
        "small",
        oci::OCI_MANIFEST,
        &image_manifest(&config, &[layer], None),
    );
}

/// Proves: a GET or HEAD of a manifest reference that is neither a valid tag nor a digest (the
/// conformance suite's `.INVALID_MANIFEST_NAME`) is 404 MANIFEST_UNKNOWN, the one failure the spec
/// lists for that endpoint, with a message saying the tag is invalid and why; in a repository that
/// exists and in one that does not. A PUT with such a tag stays a 400 MANIFEST_INVALID.
#[test]
fn invalid_reference_is_unknown_on_pull() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/badref";
    let img = SmallImage::push(&api, repo, "v1", 34);
    for repo in [repo, "proto/never-pushed"] {
        let path = format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME");
        let r = api.get_manifest(repo, ".INVALID_MANIFEST_NAME");
        r.assert_error(404, "MANIFEST_UNKNOWN");
        let message = r.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("tag \".INVALID_MANIFEST_NAME\" is invalid")
                && message.contains("not starting with '.'"),
            "GET {path}: the message should say the tag is invalid and why: {}",
            r.describe()
        );
        api.request("HEAD", &path, &[], None).assert_status(404);
        api.get_manifest(repo, "bad:tag")
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    let body = image_manifest(&img.config, std::slice::from_ref(&img.layer), None);
    api.put_manifest(repo, ".INVALID_MANIFEST_NAME", oci::OCI_MANIFEST, &body)
        .assert_error(400, "MANIFEST_INVALID");
    img.assert_intact(&api);
}

/// Proves: a manifest naming one missing blob twice (an artifact whose config and layer are both the
/// empty `{}` blob) is refused with MANIFEST_BLOB_UNKNOWN listing that digest once, and a message
/// that names it without "and 1 more".
#[test]
fn missing_blob_is_listed_once() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/missing-once";
    let (empty, _) = empty_config();
    let body = image_manifest(
        &empty,
        std::slice::from_ref(&empty),
        Some(serde_json::json!({ "artifactType": "application/vnd.example.thing.v1" })),
    );
    let r = api.put_manifest(repo, "art", oci::OCI_MANIFEST, &body);
    r.assert_error(404, "MANIFEST_BLOB_UNKNOWN");
    let e = &r.json()["errors"][0];
    assert_eq!(
        e["detail"]["missing"],
        serde_json::json!([empty.digest]),
        "{}",
        r.describe()
    );
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&empty.digest) && !message.contains("more"),
        "{}",
        r.describe()
    );
}
