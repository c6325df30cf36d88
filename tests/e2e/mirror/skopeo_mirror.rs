//! skopeo (the same containers/image code as podman) through a `registries.conf` mirror that selects
//! the upstream by a path prefix on wharf.

use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::digests_on_disk;
use crate::skopeo::Skopeo;

use super::{push_to_upstream, upstream};

/// Proves: with `[[registry]] prefix = "<upstream>/team"` and a `[[registry.mirror]]` at
/// `<wharf>/upstream-a/team`, `skopeo copy --all docker://<upstream>/team/multi:v1` gets every
/// platform byte-for-byte through wharf (probe `GET /v2/`, several `Accept` values, path prefix):
/// wharf's store ends up holding every digest of the image, skopeo itself never asks the upstream,
/// and a second copy with the upstream stopped still works, from wharf alone.
#[test]
fn skopeo_pulls_through_a_registries_conf_mirror_with_a_path_prefix() {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&up, registry.addr(), "upstream-a")],
            ..Default::default()
        },
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 500));
    push_to_upstream(&registry, &layout, "team/multi");
    let pushed_lines = registry.access_log().len();

    // containers-registries.conf(5): the mirror is tried first; on failure skopeo silently falls back
    // to the registry itself, so the test checks where the bytes came from.
    let conf = format!(
        "[[registry]]\nprefix = \"{up}/team\"\nlocation = \"{up}/team\"\ninsecure = true\n\n\
         [[registry.mirror]]\nlocation = \"{}/upstream-a/team\"\ninsecure = true\n",
        wharf.host()
    );
    let skopeo = Skopeo::with_registries_conf(&conf);
    let source = format!("docker://{up}/team/multi:v1");

    let out = wharf.scratch("out-1");
    skopeo.copy(&source, &format!("oci:{}:v1", out.display()));
    assert_same_image(&layout, &out, "v1");
    assert_eq!(
        digests_on_disk(&wharf.blobs_dir()),
        layout.all_digests(),
        "every digest of the image must have come through wharf into its store"
    );
    let direct: Vec<String> = registry.access_log()[pushed_lines..]
        .iter()
        .filter(|l| l.contains("skopeo/"))
        .cloned()
        .collect();
    assert!(
        direct.is_empty(),
        "skopeo fell back to the upstream itself, so the mirror failed it:\n{}",
        direct.join("\n")
    );

    registry.stop();
    let again = wharf.scratch("out-2");
    skopeo.copy(&source, &format!("oci:{}:v1", again.display()));
    assert_same_image(&layout, &again, "v1");
}
