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

/// Follows `Link: <…>; rel="next"` from the first referrers page to the last; returns each page's
/// digests, body size and `OCI-Filters-Applied`.
fn referrer_pages(api: &Api, first: &str) -> Vec<(Vec<String>, usize, Option<String>)> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        let r = api.get(&path);
        r.assert_status(200);
        assert_eq!(r.header("Content-Type"), Some(oci::OCI_INDEX), "{path}");
        let v = r.json();
        assert_eq!(v["schemaVersion"], 2, "{path}");
        let digests = v["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("no manifests array: {}", r.describe()))
            .iter()
            .map(|d| d["digest"].as_str().unwrap_or_default().to_owned())
            .collect();
        if let Some(link) = r.header("Link") {
            let target = link
                .strip_prefix('<')
                .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("Link is not `<url>; rel=\"next\"`: {link:?}"));
            next = Some(target.to_owned());
        }
        let filters = r.header("OCI-Filters-Applied").map(str::to_owned);
        pages.push((digests, r.body.len(), filters));
        assert!(pages.len() < 100, "the Link chain does not end");
    }
    pages
}

/// Proves: a referrers set too large for one response (~2.4 MB of descriptors: twelve artifacts
/// with 200 kB annotations) comes in pages linked by `Link: <url>; rel="next"`, each within the
/// 4 MiB clients read a referrers response with; the pages list every referrer exactly once. With
/// `?artifactType=` the filter holds on every page (each says `OCI-Filters-Applied`) and the Link
/// keeps it, so the pages list exactly the matching half.
#[test]
fn referrers_paginate_with_link() {
    const CLIENT_CAP: usize = 4 * 1024 * 1024;
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/many-referrers";
    let subject = SmallImage::push(&api, repo, "v1", 52).manifest_desc();
    let (empty, empty_bytes) = empty_config();
    api.push_blob(repo, empty_bytes);

    let mut sboms = Vec::new();
    let mut all = Vec::new();
    for i in 0..12 {
        let kind = if i % 2 == 0 { SBOM } else { SIGNATURE };
        let payload = format!("{i:03}-{}", "p".repeat(200_000));
        let (digest, _) =
            push_artifact(&api, repo, &subject, &empty, Some(kind), payload.as_bytes());
        if kind == SBOM {
            sboms.push(digest.clone());
        }
        all.push(digest);
    }
    all.sort();
    sboms.sort();

    let first = format!("/v2/{repo}/referrers/{}", subject.digest);
    let pages = referrer_pages(&api, &first);
    assert!(
        pages.len() >= 2,
        "2.4 MB of referrers came in one response: {} bytes",
        pages[0].1
    );
    for (digests, len, filters) in &pages {
        assert!(*len <= CLIENT_CAP, "a page of {len} bytes");
        assert!(!digests.is_empty(), "an empty page in the chain");
        assert_eq!(filters, &None);
    }
    let mut listed: Vec<String> = pages.into_iter().flat_map(|p| p.0).collect();
    listed.sort();
    assert_eq!(listed, all, "every referrer, each once");

    let pages = referrer_pages(&api, &format!("{first}?artifactType={SBOM}"));
    assert!(pages.len() >= 2, "1.2 MB of SBOM referrers in one page");
    for (_, _, filters) in &pages {
        assert_eq!(filters.as_deref(), Some("artifactType"));
    }
    let mut listed: Vec<String> = pages.into_iter().flat_map(|p| p.0).collect();
    listed.sort();
    assert_eq!(listed, sboms, "every SBOM, each once, nothing else");
}
