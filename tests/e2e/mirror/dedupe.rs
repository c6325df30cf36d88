//! Two upstreams holding the same image: what comes through both is stored once.

use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{digests_on_disk, regular_files, sha256_digest};
use crate::skopeo::Skopeo;

use super::{push_to_upstream, upstream};

/// Proves: the same 3-platform image on two registries (under different names), pulled through wharf
/// from both (skopeo by path prefix from the first, skopeo and containerd-style `?ns=` from the
/// second), leaves one file per distinct digest under `blobs/`, the shared layer once, and each pull
/// gets the whole image.
#[test]
fn the_same_layers_from_two_upstreams_are_stored_once() {
    let (a, b) = (DistRegistry::start(), DistRegistry::start());
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![
                upstream(&a.host(), a.addr(), "a"),
                upstream(&b.host(), b.addr(), "b"),
            ],
            ..Default::default()
        },
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 800));
    push_to_upstream(&a, &layout, "team/multi");
    push_to_upstream(&b, &layout, "other/copy");
    let skopeo = Skopeo::new();

    for (name, out) in [("a/team/multi", "out-a"), ("b/other/copy", "out-b")] {
        let dir = wharf.scratch(out);
        skopeo.copy(
            &format!("docker://{}/{name}:v1", wharf.host()),
            &format!("oci:{}:v1", dir.display()),
        );
        assert_same_image(&layout, &dir, "v1");
    }
    // containerd's addressing for the second upstream: same content, nothing new stored.
    let api = Api::new(wharf.base());
    let ns = b.host().replace(':', "%3A");
    let r = api.request(
        "GET",
        &format!("/v2/other/copy/manifests/v1?ns={ns}"),
        &[("Accept", &crate::http::all_manifest_types())],
        None,
    );
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), layout.index.digest);
    let r = api.get(&format!(
        "/v2/other/copy/blobs/{}?ns={ns}",
        layout.shared_layer.digest
    ));
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), layout.shared_layer.digest);

    let want = layout.all_digests();
    let files = regular_files(&wharf.blobs_dir());
    assert_eq!(
        files.len(),
        want.len(),
        "one file per distinct digest under blobs/, whichever upstream it came from: {files:?}"
    );
    assert_eq!(digests_on_disk(&wharf.blobs_dir()), want);
}
