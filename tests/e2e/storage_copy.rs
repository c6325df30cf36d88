//! `wharf storage copy` (issue 26): a cache moved from files + redb to the shared backends and back,
//! with skopeo pulling every image out of each copy (it verifies every digest), run twice to show a
//! second run has nothing left to do, and refusals that name their cause.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::Value;

use crate::fsck::flip_64_bytes;
use crate::gc::cli;
use crate::harness::{output_text, wharf_bin, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, layout_blob_path, write_layout, Layout, LayoutSpec};
use crate::oci::{digests_on_disk, sha256_digest, wharf_blob_path};
use crate::skopeo::Skopeo;

/// `wharf storage copy --from A --to B [args]`, with both sides' secrets.
fn storage_copy(from: &Wharf, to: &Wharf, args: &[&str]) -> Output {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["storage", "copy", "--from"])
        .arg(from.config_path())
        .arg("--to")
        .arg(to.config_path())
        .args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") && key != "WHARF_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(from.backend_env()).envs(to.backend_env());
    cmd.output().expect("run wharf storage copy")
}

/// A copy that must succeed: its report.
fn copied(from: &Wharf, to: &Wharf) -> Value {
    let out = storage_copy(from, to, &["--json"]);
    assert!(
        out.status.success(),
        "wharf storage copy failed:\n{}",
        output_text(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", output_text(&out)))
}

/// Rows written per table, and how many of them were new or changed.
fn table(report: &Value, name: &str) -> (u64, u64) {
    let t = report["metadata"]["tables"]
        .as_array()
        .expect("metadata tables")
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"));
    (t["rows"].as_u64().unwrap(), t["changed"].as_u64().unwrap())
}

fn changed_rows(report: &Value) -> u64 {
    report["metadata"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["changed"].as_u64().unwrap())
        .sum()
}

/// The two images the tests push: a three-platform index and a single-platform image.
struct Images {
    multi: Layout,
    single: Layout,
    /// The single image's digests: manifest, config, layers.
    single_digests: BTreeSet<String>,
}

impl Images {
    fn push(wharf: &Wharf, skopeo: &Skopeo) -> Images {
        let multi = write_layout(&wharf.scratch("multi"), &LayoutSpec::small("v1", 261));
        let single = write_layout(&wharf.scratch("single"), &LayoutSpec::small("v2", 262));
        let img = single.retag_single("amd64");
        let mut single_digests = BTreeSet::from([img.manifest.digest, img.config.digest]);
        single_digests.extend(img.layers.into_iter().map(|l| l.digest));
        skopeo.copy(
            &multi.skopeo_ref(),
            &format!("docker://{}/team/multi:v1", wharf.host()),
        );
        skopeo.copy(
            &single.skopeo_ref(),
            &format!("docker://{}/team/single:v2", wharf.host()),
        );
        Images {
            multi,
            single,
            single_digests,
        }
    }

    fn all(&self) -> BTreeSet<String> {
        let mut all = self.multi.all_digests();
        all.extend(self.single_digests.iter().cloned());
        all
    }

    /// Pulls both images out of `wharf` with skopeo, which verifies every digest, and compares them
    /// with what was pushed.
    fn assert_served_by(&self, wharf: &Wharf, skopeo: &Skopeo, name: &str) {
        let out = wharf.scratch(&format!("{name}-multi"));
        skopeo.copy(
            &format!("docker://{}/team/multi:v1", wharf.host()),
            &format!("oci:{}:v1", out.display()),
        );
        assert_same_image(&self.multi, &out, "v1");

        let out = wharf.scratch(&format!("{name}-single"));
        skopeo.copy(
            &format!("docker://{}/team/single:v2", wharf.host()),
            &format!("oci:{}:v2", out.display()),
        );
        let pulled: BTreeSet<String> = std::fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        assert_eq!(pulled, self.single_digests, "{name}: team/single:v2");
        for d in &pulled {
            let bytes = std::fs::read(layout_blob_path(&out, d)).unwrap();
            assert_eq!(sha256_digest(&bytes), *d);
            assert_eq!(bytes, std::fs::read(self.single.blob_path(d)).unwrap());
        }
    }
}

/// Proves: `wharf storage copy` moves a files + redb cache (an index of three platforms, a
/// single-platform image, an upload left unfinished) to the shared backends (Garage, Postgres), and back into a
/// fresh files + redb wharf: after each copy, a wharf started on the destination serves both images
/// (skopeo pulls every manifest and blob and checks each digest), with every digest copied exactly
/// once; a second run copies nothing and changes no record (resumable); the unfinished upload is
/// left out and said so; and a copy from a data directory a running wharf serves is refused, naming
/// it.
#[test]
fn storage_copy_moves_a_cache_to_the_shared_backends_and_back() {
    let skopeo = Skopeo::new();
    let mut source = Wharf::start_files(WharfOptions::default());
    let images = Images::push(&source, &skopeo);
    // An upload a client started and never finished: its bytes would be in this data dir only.
    Api::new(source.base()).start_upload("team/unfinished");
    let want = images.all();
    assert_eq!(digests_on_disk(&source.blobs_dir()), want);

    // Content on its own Garage, records in its own Postgres.
    let mut middle = Wharf::start_shared(WharfOptions::default());
    middle.stop();

    let refused = storage_copy(&source, &middle, &[]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("another wharf is using this data directory"),
        "a copy from a served data directory must say why it cannot: {}",
        output_text(&refused)
    );
    source.stop();

    let first = copied(&source, &middle);
    assert_eq!(first["content"]["copied"], want.len() as u64, "{first}");
    assert_eq!(first["content"]["already_there"], 0, "{first}");
    assert_eq!(table(&first, "tags"), (2, 2), "{first}");
    assert_eq!(first["metadata"]["upload_sessions_left_out"], 1, "{first}");
    let again = copied(&source, &middle);
    assert_eq!(again["content"]["copied"], 0, "{again}");
    assert_eq!(
        again["content"]["already_there"],
        want.len() as u64,
        "{again}"
    );
    assert_eq!(
        changed_rows(&again),
        0,
        "a second run changes no record: {again}"
    );

    middle.start_again();
    images.assert_served_by(&middle, &skopeo, "shared");
    middle.stop();

    let mut back = Wharf::start_files(WharfOptions::default());
    back.stop();
    let returned = copied(&middle, &back);
    assert_eq!(
        returned["content"]["copied"],
        want.len() as u64,
        "{returned}"
    );
    assert_eq!(table(&returned, "tags"), (2, 2), "{returned}");
    assert_eq!(digests_on_disk(&back.blobs_dir()), want);
    back.start_again();
    images.assert_served_by(&back, &skopeo, "back");

    // The text a person reads names what was left out.
    back.stop();
    let out = storage_copy(&source, &back, &[]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 upload session in progress"), "{text}");
    assert!(
        text.contains(&format!("{} already there", want.len())),
        "{text}"
    );
}

/// Proves: a blob whose bytes rotted in the source is not copied and fails the copy naming its
/// digest and `wharf fsck`, while every other blob arrives and no record is written (none may name
/// content the destination lacks); after `wharf fsck` quarantines it, the copy goes through and the
/// intact image is served from the destination.
#[test]
fn storage_copy_refuses_a_damaged_blob_and_names_it() {
    let skopeo = Skopeo::new();
    let mut source = Wharf::start_files(WharfOptions::default());
    let images = Images::push(&source, &skopeo);
    source.stop();
    let rotten = images
        .single_digests
        .iter()
        .map(|d| {
            (
                d,
                std::fs::metadata(wharf_blob_path(&source.blobs_dir(), d))
                    .unwrap()
                    .len(),
            )
        })
        .max_by_key(|(_, len)| *len)
        .map(|(d, _)| d.clone())
        .unwrap();
    flip_64_bytes(&wharf_blob_path(&source.blobs_dir(), &rotten));

    let mut dest = Wharf::start_files(WharfOptions::default());
    dest.stop();
    let out = storage_copy(&source, &dest, &["--json"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&rotten),
        "the copy must name the damaged blob: {text}"
    );
    assert!(text.contains("wharf fsck --config"), "{text}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["content"]["damaged"][0]["digest"], rotten.as_str());
    assert!(report["metadata"]["skipped"].is_string(), "{report}");
    let mut arrived = images.all();
    arrived.remove(&rotten);
    assert_eq!(digests_on_disk(&dest.blobs_dir()), arrived);

    let fsck = cli(&source, &["fsck"]);
    assert!(
        !fsck.status.success(),
        "fsck finds the damage: {}",
        output_text(&fsck)
    );
    let after = copied(&source, &dest);
    assert_eq!(after["content"]["copied"], 0, "{after}");
    dest.start_again();
    let out = dest.scratch("multi");
    skopeo.copy(
        &format!("docker://{}/team/multi:v1", dest.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&images.multi, &out, "v1");
}
