//! Manifest rewrites with the `annotate` plugin: what a tag serves is the rewritten manifest, content
//! of its own whose digest verifies; the original stays served by its digest; a push stores both and
//! the mapping between them, which outlives a restart.

use std::fs;

use serde_json::Value;

use crate::harness::DistRegistry;
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::oci::{sha256_digest, OCI_INDEX};
use crate::skopeo::Skopeo;

use super::{component, log_count, start, wait_for_log, Entry, PluginFiles};

const KEY: &str = "org.example.mirrored-by";

fn annotated(original: &[u8], rewritten: &[u8]) {
    let mut want: Value = serde_json::from_slice(original).unwrap();
    want["annotations"][KEY] = Value::String("wharf".into());
    let got: Value = serde_json::from_slice(rewritten).expect("the rewritten manifest is JSON");
    assert_eq!(
        got, want,
        "the tag must serve the original manifest with the plugin's annotation added, nothing else"
    );
}

/// Proves: a skopeo push through wharf with `annotate` loaded stores the pushed index and the
/// rewritten one (both served by digest at once, before any pull) and the mapping; skopeo then sees the
/// rewritten index for the tag (`HEAD` answers its digest, skopeo fetches it by that digest, which
/// verifies it), copies the image through it, and still gets the original by its own digest; after a
/// restart the tag serves the same rewrite without running the plugin again. Mirrored tags
/// (`/v2/up/...`) are rewritten the same way.
#[test]
fn annotate_rewrites_what_a_tag_serves() {
    let files = PluginFiles::new();
    let path = files.add("annotate.wasm", &component("annotate"));
    let entry = Entry::new(
        "annotate",
        &path,
        &format!(r#"{{"annotations": {{"{KEY}": "wharf"}}}}"#),
    );
    let registry = DistRegistry::start();
    let mut wharf = start(&[entry], Some(&registry));
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1600));
    let original = fs::read(layout.blob_path(&layout.index.digest)).unwrap();
    let skopeo = Skopeo::new();
    let w = wharf.host();

    // The push stores both, and the mapping, right away.
    skopeo.copy(&layout.skopeo_ref(), &format!("docker://{w}/team/app:v1"));
    wait_for_log(
        &wharf,
        &["manifest rewritten by plugins", &layout.index.digest],
        std::time::Duration::from_secs(5),
    );
    let api = Api::new(wharf.base());
    let head = api.request(
        "HEAD",
        "/v2/team/app/manifests/v1",
        &[("Accept", OCI_INDEX)],
        None,
    );
    head.assert_status(200);
    let rewritten_digest = head.need_header("Docker-Content-Digest").to_owned();
    assert_ne!(
        rewritten_digest, layout.index.digest,
        "the tag still serves the pushed index"
    );
    let by_digest = api.get_manifest("team/app", &rewritten_digest);
    by_digest.assert_status(200);
    assert_eq!(sha256_digest(&by_digest.body), rewritten_digest);
    annotated(&original, &by_digest.body);
    let orig = api.get_manifest("team/app", &layout.index.digest);
    orig.assert_status(200);
    assert!(
        orig.body == original,
        "the original is not served by its digest"
    );

    // skopeo: the tag is the rewritten index; by digest (which skopeo verifies) both are there.
    let raw = skopeo.inspect_raw(&format!("docker://{w}/team/app:v1"));
    assert_eq!(sha256_digest(&raw), rewritten_digest);
    annotated(&original, &raw);
    let raw = skopeo.inspect_raw(&format!("docker://{w}/team/app@{rewritten_digest}"));
    assert_eq!(sha256_digest(&raw), rewritten_digest);
    let raw = skopeo.inspect_raw(&format!("docker://{w}/team/app@{}", layout.index.digest));
    assert!(
        raw == original,
        "skopeo got other bytes for the original digest"
    );

    // A copy of the tag gets the rewritten index and every platform's content, unchanged.
    let out = wharf.scratch("out");
    skopeo.copy(
        &format!("docker://{w}/team/app:v1"),
        &format!("oci:{}:v1", out.display()),
    );
    let copied = fs::read(crate::layout::layout_blob_path(&out, &rewritten_digest))
        .expect("the copy holds the rewritten index under its digest");
    annotated(&original, &copied);
    for img in &layout.images {
        for d in [&img.manifest.digest, &img.config.digest] {
            let bytes = fs::read(crate::layout::layout_blob_path(&out, d))
                .unwrap_or_else(|e| panic!("the copy lacks {d}: {e}"));
            assert_eq!(sha256_digest(&bytes), *d);
        }
    }

    // The mapping is stored: after a restart the tag serves the same rewrite, not computed again.
    let rewrites = log_count(&wharf, &["manifest rewritten by plugins"]);
    // An idle keep-alive connection held open holds wharf's graceful stop for its whole grace period.
    drop(api);
    wharf.stop();
    wharf.start_again();
    let api = Api::new(wharf.base());
    let again = api.get_manifest("team/app", "v1");
    again.assert_status(200);
    assert_eq!(sha256_digest(&again.body), rewritten_digest);
    assert_eq!(
        log_count(&wharf, &["manifest rewritten by plugins"]),
        rewrites,
        "the rewrite was computed again after a restart: the mapping was not kept"
    );

    // Mirrored tags go through the same plugins.
    let up = registry.host();
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{up}/team/mirrored:v1"),
    );
    let w = wharf.host();
    let raw = skopeo.inspect_raw(&format!("docker://{w}/up/team/mirrored:v1"));
    annotated(&original, &raw);
    let d = sha256_digest(&raw);
    let raw = skopeo.inspect_raw(&format!("docker://{w}/up/team/mirrored@{d}"));
    assert_eq!(sha256_digest(&raw), d);
}
