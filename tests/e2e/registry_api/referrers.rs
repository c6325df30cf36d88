//! The referrers API: `subject`, `OCI-Subject`, listing and filtering.

use serde_json::{json, Value};

use crate::fixtures::{empty_config, image_manifest, SmallImage};
use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::Desc;
use crate::oci::{self, sha256_digest};

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIGNATURE: &str = "application/vnd.example.signature.v1";
const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

/// Pushes an artifact manifest (by digest, as ORAS and notation do) with `subject`; checks OCI-Subject.
fn push_artifact(
    api: &Api,
    repo: &str,
    subject: &Desc,
    config: &Desc,
    artifact_type: Option<&str>,
    payload: &[u8],
) -> (String, usize) {
    let layer = Desc {
        media_type: "application/octet-stream".into(),
        digest: api.push_blob(repo, payload),
        size: payload.len() as u64,
    };
    let mut extra = json!({ "subject": subject.to_json(), "annotations": { "org.example.payload": String::from_utf8_lossy(payload) } });
    if let Some(t) = artifact_type {
        extra["artifactType"] = json!(t);
    }
    let body = image_manifest(config, &[layer], Some(extra));
    let digest = sha256_digest(&body);
    let r = api.put_manifest(repo, &digest, oci::OCI_MANIFEST, &body);
    r.assert_status(201);
    assert_eq!(
        r.header("OCI-Subject"),
        Some(subject.digest.as_str()),
        "PUT of a manifest with subject: {}",
        r.describe()
    );
    (digest, body.len())
}

fn referrers(
    api: &Api,
    repo: &str,
    digest: &str,
    filter: Option<&str>,
) -> (Vec<Value>, Option<String>) {
    let mut path = format!("/v2/{repo}/referrers/{digest}");
    if let Some(t) = filter {
        path += &format!("?artifactType={t}");
    }
    let r = api.get(&path);
    r.assert_status(200);
    assert_eq!(
        r.header("Content-Type"),
        Some(oci::OCI_INDEX),
        "{}",
        r.describe()
    );
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2, "{}", r.describe());
    let list = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests array: {}", r.describe()))
        .clone();
    (list, r.header("OCI-Filters-Applied").map(str::to_owned))
}

/// Proves: a manifest with `subject` gets `OCI-Subject` on PUT; the referrers index lists each
/// referrer's descriptor (mediaType, digest, size, artifactType, annotations), taking artifactType from
/// the config media type when the manifest has none; `?artifactType=` filters and says so with
/// `OCI-Filters-Applied`; an unknown digest gives an empty index with 200, never 404.
#[test]
fn referrers_list_and_filter() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/referrers";
    let subject = SmallImage::push(&api, repo, "v1", 51).manifest_desc();
    let (empty, empty_bytes) = empty_config();
    api.push_blob(repo, empty_bytes);
    let custom = Desc {
        media_type: CUSTOM_CONFIG.into(),
        ..empty.clone()
    };

    let (sbom, sbom_len) = push_artifact(&api, repo, &subject, &empty, Some(SBOM), b"sbom");
    let (sig, sig_len) = push_artifact(&api, repo, &subject, &empty, Some(SIGNATURE), b"signature");
    let (cfg_typed, cfg_len) =
        push_artifact(&api, repo, &subject, &custom, None, b"typed by config");

    let (all, filtered) = referrers(&api, repo, &subject.digest, None);
    assert_eq!(filtered, None, "no filter was asked for");
    assert_eq!(all.len(), 3, "{all:?}");
    for (digest, len, artifact_type, payload) in [
        (&sbom, sbom_len, SBOM, "sbom"),
        (&sig, sig_len, SIGNATURE, "signature"),
        (&cfg_typed, cfg_len, CUSTOM_CONFIG, "typed by config"),
    ] {
        let d = all
            .iter()
            .find(|d| d["digest"] == **digest)
            .unwrap_or_else(|| panic!("{digest} missing from {all:?}"));
        assert_eq!(d["mediaType"], oci::OCI_MANIFEST, "{d}");
        assert_eq!(d["size"], len, "{d}");
        assert_eq!(d["artifactType"], artifact_type, "{d}");
        assert_eq!(d["annotations"]["org.example.payload"], payload, "{d}");
    }

    let (only_sbom, filtered) = referrers(&api, repo, &subject.digest, Some(SBOM));
    assert_eq!(filtered.as_deref(), Some("artifactType"));
    assert_eq!(only_sbom.len(), 1, "{only_sbom:?}");
    assert_eq!(only_sbom[0]["digest"], sbom);
    let (none, filtered) = referrers(
        &api,
        repo,
        &subject.digest,
        Some("application/vnd.example.none"),
    );
    assert_eq!(filtered.as_deref(), Some("artifactType"));
    assert!(none.is_empty(), "{none:?}");

    let (unknown, _) = referrers(&api, repo, &sha256_digest(b"nothing refers to this"), None);
    assert!(unknown.is_empty(), "{unknown:?}");
    // A referrer does not refer to itself or to siblings.
    assert!(referrers(&api, repo, &sbom, None).0.is_empty());
}
