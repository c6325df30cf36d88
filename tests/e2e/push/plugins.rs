//! Policy plugins on a routed push: a platform plugin chooses what is delivered (with the route's
//! own list, or alone), and a manifest plugin's rewrite is what goes upstream, mapped from the
//! digest the client pushed.

use serde_json::Value;

use crate::harness::WharfOptions;
use crate::layout::{write_layout, LayoutSpec};
use crate::oci::{self, sha256_digest};
use crate::plugins::{component, Entry, PluginFiles};

use super::{
    assert_blobs_upstream, assert_manifest_upstream, image_blobs, setup, wait_delivered, LOCAL,
    REMOTE,
};

const KEY: &str = "org.example.pushed-through";

/// Proves: with `platform-filter` keeping linux/arm64 and linux/arm/v7 and `annotate` adding an
/// annotation, skopeo's push of a 3-platform index through a route with no platform list of its own
/// delivers an index of exactly those two platforms, reduced (annotated with the original digest) and
/// then rewritten (the plugin's annotation), with both children and their blobs; nothing of
/// linux/amd64 reaches the upstream; `push status` maps the pushed digest to the delivered one.
#[test]
fn platform_and_manifest_plugins_decide_what_goes_upstream() {
    let files = PluginFiles::new();
    let filter = files.add("platform_filter.wasm", &component("platform_filter"));
    let annotate = files.add("annotate.wasm", &component("annotate"));
    let s = setup(
        &[],
        |_| {
            Entry::new(
                "arm-only",
                &filter,
                r#"{"platforms": ["linux/arm64", "linux/arm/v7"]}"#,
            )
            .toml()
                + &Entry::new(
                    "annotate",
                    &annotate,
                    &format!(r#"{{"annotations": {{"{KEY}": "wharf"}}}}"#),
                )
                .toml()
        },
        WharfOptions::default(),
    );
    let layout = write_layout(&s.wharf.scratch("src"), &LayoutSpec::small("v1", 1770));
    s.skopeo_push(&layout, &format!("{LOCAL}:v1"));

    let e = wait_delivered(&s.wharf, LOCAL, "v1");
    let up = s.upstream();
    let r = up.get_manifest(REMOTE, "v1");
    r.assert_status(200);
    let delivered = sha256_digest(&r.body);
    assert_eq!(e["digest"], layout.index.digest, "{e:#}");
    assert_eq!(e["upstream_digest"], delivered, "{e:#}");
    assert_ne!(delivered, layout.index.digest);
    assert_eq!(
        e["platforms"],
        serde_json::json!(["linux/arm/v7", "linux/arm64"]),
        "{e:#}"
    );
    let v: Value = r.json();
    assert_eq!(v["mediaType"], oci::OCI_INDEX, "{v:#}");
    assert_eq!(
        v["annotations"][KEY], "wharf",
        "the rewrite went upstream: {v:#}"
    );
    assert_eq!(
        v["annotations"]["dev.wharf.reduced-from"], layout.index.digest,
        "{v:#}"
    );
    let listed: Vec<&str> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = layout
        .images
        .iter()
        .filter(|i| i.platform.architecture != "amd64")
        .map(|i| i.manifest.digest.as_str())
        .collect();
    assert_eq!(listed, want, "{v:#}");
    for img in &layout.images {
        let bytes = std::fs::read(layout.blob_path(&img.manifest.digest)).unwrap();
        if img.platform.architecture == "amd64" {
            let head = up.request(
                "HEAD",
                &format!("/v2/{REMOTE}/manifests/{}", img.manifest.digest),
                &[("Accept", oci::OCI_MANIFEST)],
                None,
            );
            assert_eq!(head.status, 404, "linux/amd64 was delivered");
            for b in img.layers.iter().skip(1).chain([&img.config]) {
                let head = up.head(&format!("/v2/{REMOTE}/blobs/{}", b.digest));
                assert_eq!(head.status, 404, "a blob of linux/amd64 was delivered");
            }
        } else {
            assert_manifest_upstream(&up, REMOTE, &img.manifest.digest, &bytes);
            assert_blobs_upstream(&up, REMOTE, &image_blobs(img));
        }
    }
}
