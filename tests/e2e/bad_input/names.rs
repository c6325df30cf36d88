//! Repository names outside the spec grammar.

use super::setup;
use crate::harness::WharfOptions;
use crate::http::raw;
use crate::oci::regular_files;

/// Proves: repository names outside the spec grammar are 400 NAME_INVALID on every route, sent raw so
/// that no client library normalises `..` or `//` away; a 255-character name is still valid.
#[test]
fn invalid_names_are_rejected() {
    let (wharf, api, guard) = setup(WharfOptions::default());
    let digest = &guard.image.layer.digest;
    let long = "a".repeat(256);
    let cases: Vec<(&str, String)> = vec![
        ("GET", "/v2/good/../app/tags/list".into()),
        ("GET", "/v2/../good/app/manifests/keep".into()),
        ("GET", "/v2/good/./app/tags/list".into()),
        ("GET", "/v2/Good/App/tags/list".into()),
        ("POST", "/v2/Upper/blobs/uploads/".into()),
        ("HEAD", format!("/v2/good//app/blobs/{digest}")),
        ("GET", "/v2/good//app/manifests/keep".into()),
        ("GET", "/v2//good/app/tags/list".into()),
        ("GET", format!("/v2/{long}/tags/list")),
        ("POST", format!("/v2/{long}/blobs/uploads/")),
        ("GET", "/v2/good/app-/tags/list".into()),
    ];
    let ingest_before = regular_files(&wharf.ingest_dir());
    for (method, target) in &cases {
        let r = raw::send(wharf.addr(), method, target, &[], b"");
        if *method == "HEAD" {
            r.assert_status(400);
        } else {
            r.assert_error(400, "NAME_INVALID");
        }
        guard.check(&api, &format!("{method} {target}"));
    }
    assert_eq!(
        regular_files(&wharf.ingest_dir()),
        ingest_before,
        "a rejected name must not open an upload session"
    );

    // 255 characters is the limit, not over it: an unknown but valid repository.
    let ok = "a".repeat(255);
    raw::send(
        wharf.addr(),
        "GET",
        &format!("/v2/{ok}/tags/list"),
        &[],
        b"",
    )
    .assert_error(404, "NAME_UNKNOWN");
}
