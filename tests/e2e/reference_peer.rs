//! The generated image and skopeo against the reference registry (CNCF distribution), without wharf.
//! If this fails, the test tooling is broken, not wharf; if it passes and a wharf test with the same
//! steps fails, the difference is wharf.

use crate::harness::DistRegistry;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::skopeo::Skopeo;

#[test]
fn layout_roundtrips_through_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = write_layout(&tmp.path().join("src"), &LayoutSpec::small("v1", 10));
    let registry = DistRegistry::start();
    let skopeo = Skopeo::new();

    let remote = format!("docker://{}/peer/multi:v1", registry.host());
    skopeo.copy(&layout.skopeo_ref(), &remote);
    let raw = skopeo.inspect_raw(&remote);
    assert_eq!(
        crate::oci::sha256_digest(&raw),
        layout.index.digest,
        "distribution serves the index bytes unchanged"
    );

    let out = tmp.path().join("out");
    skopeo.copy(&remote, &format!("oci:{}:v1", out.display()));
    assert_same_image(&layout, &out, "v1");
}
