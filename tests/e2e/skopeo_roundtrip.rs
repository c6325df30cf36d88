//! Test 1: a real client pushes a 3-platform image into wharf and pulls it back unchanged.

use crate::harness::{Wharf, WharfOptions};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{digests_on_disk, sha256_digest};
use crate::skopeo::Skopeo;

/// Proves: wharf accepts skopeo's push of an OCI index with all its platforms (blob uploads, manifests
/// by digest, index by tag), serves the index bytes unchanged (`inspect --raw` hashes to the pushed
/// digest) and gives back every blob byte-for-byte; and that it stores each digest exactly once.
#[test]
fn skopeo_push_and_pull_multi_platform_image() {
    let wharf = Wharf::start(WharfOptions::default());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 100));
    let skopeo = Skopeo::new();

    let remote = format!("docker://{}/test/multi:v1", wharf.host());
    skopeo.copy(&layout.skopeo_ref(), &remote);

    let raw = skopeo.inspect_raw(&remote);
    assert_eq!(
        sha256_digest(&raw),
        layout.index.digest,
        "inspect --raw must return the pushed index bytes"
    );

    let out = wharf.scratch("out");
    skopeo.copy(&remote, &format!("oci:{}:v1", out.display()));
    assert_same_image(&layout, &out, "v1");

    assert_eq!(
        digests_on_disk(&wharf.blobs_dir()),
        layout.all_digests(),
        "blobs/ must hold exactly the pushed digests, once each"
    );
}
