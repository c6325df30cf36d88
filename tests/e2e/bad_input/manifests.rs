//! Bad manifests: malformed, dangling references, over the size limit.

use serde_json::json;

use super::{assert_not_accepted, setup};
use crate::fixtures::{
    assert_manifest_too_large, image_manifest, index_manifest, manifest_of_size,
};
use crate::harness::WharfOptions;
use crate::http::raw;
use crate::layout::Desc;
use crate::oci::{self, sha256_digest};

/// Proves: bodies that are not manifests are 400 MANIFEST_INVALID, and create neither tag nor blob.
#[test]
fn malformed_manifests_are_rejected() {
    let (_wharf, api, guard) = setup(WharfOptions::default());
    let repo = "good/app";
    let cfg = &guard.image.config;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"this is not json".to_vec()),
        ("truncated JSON", br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"#.to_vec()),
        ("a JSON array", b"[]".to_vec()),
        (
            "no config",
            serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST, "layers": [] })).unwrap(),
        ),
        (
            "schemaVersion 3",
            serde_json::to_vec(&json!({
                "schemaVersion": 3, "mediaType": oci::OCI_MANIFEST, "config": cfg.to_json(), "layers": []
            }))
            .unwrap(),
        ),
    ];
    for (what, body) in cases {
        let tag = "broken";
        api.put_manifest(repo, tag, oci::OCI_MANIFEST, &body)
            .assert_error(400, "MANIFEST_INVALID");
        api.get_manifest(repo, tag)
            .assert_error(404, "MANIFEST_UNKNOWN");
        api.get_manifest(repo, &sha256_digest(&body))
            .assert_error(404, "MANIFEST_UNKNOWN");
        guard.check(&api, &format!("PUT of a malformed manifest ({what})"));
    }
}

/// Proves: a manifest is refused with 404 MANIFEST_BLOB_UNKNOWN when its config, a layer, or (for an
/// index) a child manifest is missing, including when that content exists but only in another repo.
#[test]
fn manifests_with_missing_references_are_rejected() {
    let (_wharf, api, mut guard) = setup(WharfOptions::default());
    let repo = "bad/refs";
    let present_cfg_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let present_cfg = Desc {
        media_type: oci::OCI_CONFIG.into(),
        digest: api.push_blob(repo, present_cfg_bytes),
        size: present_cfg_bytes.len() as u64,
    };
    let missing = Desc {
        media_type: oci::OCI_LAYER_TAR.into(),
        digest: sha256_digest(b"never pushed"),
        size: 12,
    };
    guard.rebase(); // the config above is a legitimate new blob

    let other = &guard.image; // lives in good/app only
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "missing config",
            oci::OCI_MANIFEST,
            image_manifest(
                &Desc {
                    media_type: oci::OCI_CONFIG.into(),
                    ..missing.clone()
                },
                &[],
                None,
            ),
        ),
        (
            "missing layer",
            oci::OCI_MANIFEST,
            image_manifest(&present_cfg, std::slice::from_ref(&missing), None),
        ),
        (
            "config and layer only in another repo",
            oci::OCI_MANIFEST,
            image_manifest(&other.config, std::slice::from_ref(&other.layer), None),
        ),
        (
            "index with a missing child",
            oci::OCI_INDEX,
            index_manifest(&[Desc {
                media_type: oci::OCI_MANIFEST.into(),
                ..missing.clone()
            }]),
        ),
        (
            "index whose child is only in another repo",
            oci::OCI_INDEX,
            index_manifest(&[other.manifest_desc()]),
        ),
    ];
    for (what, media_type, body) in cases {
        api.put_manifest(repo, "v1", media_type, &body)
            .assert_error(404, "MANIFEST_BLOB_UNKNOWN");
        api.get_manifest(repo, "v1")
            .assert_error(404, "MANIFEST_UNKNOWN");
        guard.check(&api, &format!("PUT of a manifest with a {what}"));
    }
}

/// Proves: `max_manifest_bytes` is a byte-exact limit: a manifest of exactly the limit is stored, one
/// byte more (sent whole, or announced with `Expect: 100-continue`) and a far larger one are 413 with
/// a spec error body, and store nothing.
#[test]
fn oversized_manifest_is_413() {
    const LIMIT: usize = 8192;
    let (wharf, api, mut guard) = setup(WharfOptions {
        max_manifest_bytes: Some(LIMIT as u64),
        ..Default::default()
    });
    let repo = "good/app";
    let (cfg, layer) = (guard.image.config.clone(), guard.image.layer.clone());

    let at_limit = manifest_of_size(&cfg, &layer, LIMIT);
    api.push_manifest(repo, "at-limit", oci::OCI_MANIFEST, &at_limit);
    guard.rebase();

    for size in [LIMIT + 1, 1 << 20] {
        let body = manifest_of_size(&cfg, &layer, size);
        assert_manifest_too_large(&wharf, &api, repo, "too-big", &body, size == LIMIT + 1);
        api.get_manifest(repo, "too-big")
            .assert_error(404, "MANIFEST_UNKNOWN");
        guard.check(&api, &format!("PUT of a {size}-byte manifest"));
    }
}

/// Proves: a manifest PUT whose body ends before its Content-Length stores neither the manifest nor
/// the tag, even though the part that arrived could parse as a prefix of a valid manifest.
#[test]
fn truncated_manifest_put_stores_nothing() {
    let (wharf, api, guard) = setup(WharfOptions::default());
    let repo = "good/app";
    // Not the guard's manifest: this one must be new to wharf.
    let body = image_manifest(
        &guard.image.config,
        std::slice::from_ref(&guard.image.layer),
        Some(json!({ "annotations": { "cut": "short" } })),
    );
    let resp = raw::send_truncated(
        wharf.addr(),
        "PUT",
        &format!("/v2/{repo}/manifests/cut"),
        &[("Content-Type", oci::OCI_MANIFEST)],
        body.len(),
        &body[..body.len() / 2],
    );
    assert_not_accepted(resp, "truncated manifest PUT");
    api.get_manifest(repo, "cut")
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.get_manifest(repo, &sha256_digest(&body))
        .assert_error(404, "MANIFEST_UNKNOWN");
    guard.check(&api, "truncated manifest PUT");
}
