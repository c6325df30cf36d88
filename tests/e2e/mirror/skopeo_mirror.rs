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

/// Proves: with the upstream stopped, a pull of an image wharf has not cached through the
/// `registries.conf` mirror fails, and podman and skopeo (containers/image) show wharf's reason among
/// the mirror's errors: `unavailable: upstream ... could not be reached ...` naming the upstream and
/// the `[[upstream]]` entry to check. containers/image reads an error body only for a 4xx: for wharf's
/// former `502` both printed nothing but "received unexpected HTTP status: 502 Bad Gateway".
#[test]
fn podman_and_skopeo_show_why_the_mirror_failed_with_the_upstream_down() {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&up, registry.addr(), "upstream-a")],
            ..Default::default()
        },
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 510));
    push_to_upstream(&registry, &layout, "team/app");
    registry.stop();

    let conf = format!(
        "[[registry]]\nprefix = \"{up}/team\"\nlocation = \"{up}/team\"\ninsecure = true\n\n\
         [[registry.mirror]]\nlocation = \"{}/upstream-a/team\"\ninsecure = true\n",
        wharf.host()
    );
    let source = format!("{up}/team/app:v1");
    let says_why = |client: &str, printed: &str| {
        for needle in [
            "unavailable: upstream",
            &format!("{up} (http://{up}/v2/team/app/manifests/v1) could not be reached"),
            "[[upstream]]",
        ] {
            assert!(
                printed.contains(needle),
                "{client} should show why wharf's mirror failed ({needle:?}):\n{printed}"
            );
        }
    };

    let home = wharf.scratch("podman");
    let podman_conf = home.join("mirror-registries.conf");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(&podman_conf, &conf).unwrap();
    let out = crate::tls_listener::podman(&home)
        .env("CONTAINERS_REGISTRIES_CONF", &podman_conf)
        .args(["pull", &source])
        .output()
        .expect("run podman");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("podman pull printed:\n{printed}");
    assert!(!out.status.success(), "the pull worked:\n{printed}");
    says_why("podman", &printed);

    let out =
        Skopeo::with_registries_conf(&conf).output(&["inspect", &format!("docker://{source}")]);
    let printed = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("skopeo inspect printed:\n{printed}");
    assert!(!out.status.success(), "the inspect worked:\n{printed}");
    says_why("skopeo", &printed);
}
