//! Test 2: content copied from a real distribution registry into several wharf repos is stored once.

use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{digests_on_disk, regular_files, sha256_digest, wharf_blob_path};
use crate::skopeo::Skopeo;

/// Proves: the same image under three repos and tags costs one file per distinct digest under
/// `blobs/` (index + manifests + configs + layers, the shared layer once), every file sits at its
/// contract path and hashes to its name, and each repo still serves the full image.
#[test]
fn copies_from_distribution_into_three_repos_are_deduplicated() {
    let wharf = Wharf::start(WharfOptions::default());
    let registry = DistRegistry::start();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 200));
    let skopeo = Skopeo::new();

    let upstream = format!("docker://{}/library/multi:v1", registry.host());
    skopeo.copy(&layout.skopeo_ref(), &upstream);

    let targets = [("a/one", "v1"), ("b/two", "v1"), ("c/three", "latest")];
    for (repo, tag) in targets {
        skopeo.copy(
            &upstream,
            &format!("docker://{}/{repo}:{tag}", wharf.host()),
        );
    }

    let want = layout.all_digests();
    let files = regular_files(&wharf.blobs_dir());
    assert_eq!(
        files.len(),
        want.len(),
        "regular files under blobs/ ({:?}) must equal the {} distinct digests",
        files,
        want.len()
    );
    assert_eq!(digests_on_disk(&wharf.blobs_dir()), want);
    for digest in &want {
        let path = wharf_blob_path(&wharf.blobs_dir(), digest);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            sha256_digest(&data),
            *digest,
            "{} does not hash to its name",
            path.display()
        );
    }

    for (repo, tag) in targets {
        let out = wharf.scratch(&format!("out-{}", repo.replace('/', "-")));
        skopeo.copy(
            &format!("docker://{}/{repo}:{tag}", wharf.host()),
            &format!("oci:{}:{tag}", out.display()),
        );
        assert_same_image(&layout, &out, tag);
    }
}
