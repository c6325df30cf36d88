//! DELETE of manifests, tags and blobs, enabled and disabled.

use crate::fixtures::SmallImage;
use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;
use crate::oci::{self, sha256_digest};

/// Proves, with `delete_enabled = true`: deleting a tag (202) removes only that tag; deleting a
/// manifest by digest (202) makes it 404 by digest and by every tag that pointed to it (a tag must
/// never resolve to a digest that then 404s); deleting a blob (202) makes it 404; unknown digests 404.
#[test]
fn delete_when_enabled() {
    let wharf = Wharf::start(WharfOptions::with_delete());
    let api = Api::new(wharf.base());
    let repo = "proto/delete";
    let img = SmallImage::push(&api, repo, "v1", 41);
    api.push_manifest(repo, "v2", oci::OCI_MANIFEST, &img.manifest);
    let digest = &img.manifest_digest;

    api.delete(&format!("/v2/{repo}/manifests/v2"))
        .assert_status(202);
    api.get_manifest(repo, "v2")
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.get_manifest(repo, "v1").assert_status(200);
    api.get_manifest(repo, digest).assert_status(200);

    api.delete(&format!("/v2/{repo}/manifests/{digest}"))
        .assert_status(202);
    api.get_manifest(repo, digest)
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.request("HEAD", &format!("/v2/{repo}/manifests/{digest}"), &[], None)
        .assert_status(404);
    api.get_manifest(repo, "v1")
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.delete(&format!("/v2/{repo}/manifests/{digest}"))
        .assert_error(404, "MANIFEST_UNKNOWN");

    api.delete(&format!("/v2/{repo}/blobs/{}", img.layer.digest))
        .assert_status(202);
    api.head(&format!("/v2/{repo}/blobs/{}", img.layer.digest))
        .assert_status(404);
    api.delete(&format!("/v2/{repo}/blobs/{}", sha256_digest(b"never")))
        .assert_error(404, "BLOB_UNKNOWN");
}

/// Proves, with the default config: every DELETE is 405 UNSUPPORTED and removes nothing.
#[test]
fn delete_when_disabled_is_405() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/nodelete";
    let img = SmallImage::push(&api, repo, "v1", 42);
    for path in [
        format!("/v2/{repo}/manifests/{}", img.manifest_digest),
        format!("/v2/{repo}/manifests/v1"),
        format!("/v2/{repo}/blobs/{}", img.layer.digest),
    ] {
        api.delete(&path).assert_error(405, "UNSUPPORTED");
    }
    img.assert_intact(&api);
}
