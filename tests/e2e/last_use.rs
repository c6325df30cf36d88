//! One "last use" (issue 23): a tag's last pull or push, per repository and tag, read the same way by
//! `wharf images`, `wharf status` and the status page, through the running server and from the files.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::gc::cli;
use crate::harness::{Wharf, WharfOptions};
use crate::layout::{write_layout, LayoutSpec};
use crate::skopeo::Skopeo;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `wharf <args> --json`, parsed.
fn json(wharf: &Wharf, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cli(wharf, &args);
    assert!(
        out.status.success(),
        "wharf {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wharf {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The last use of `repo:tag` as `wharf images` gives it, and of `repo` as `wharf status` does.
fn last_uses(wharf: &Wharf, repo: &str, tag: &str) -> (Value, Value) {
    let images = json(wharf, &["images"]);
    let row = images
        .as_array()
        .expect("a list of images")
        .iter()
        .find(|i| i["repository"] == repo && i["tag"] == tag)
        .unwrap_or_else(|| panic!("no {repo}:{tag} in `wharf images`: {images:#}"))
        .clone();
    let status = json(wharf, &["status"]);
    let repository = status["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .find(|r| r["repository"] == repo)
        .unwrap_or_else(|| panic!("no {repo} in `wharf status`: {status:#}"))
        .clone();
    (row["last_used"].clone(), repository["last_used"].clone())
}

/// Proves: an image pushed here with skopeo and pulled back with skopeo has a last use in `wharf
/// images` (it was `-`: only the mirror's pulls were counted, by digest); `wharf status` gives its
/// repository the very same time (it read its own, differently); and after a stop both read the
/// same from the files. `wharf images` prints it as `… s ago`, as `wharf status` does.
#[test]
fn a_pushed_and_pulled_image_has_one_last_use_in_images_and_status() {
    let mut wharf = Wharf::start(WharfOptions::default());
    let skopeo = Skopeo::new();
    let image = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 2301));
    let before = unix_now();
    skopeo.copy(
        &image.skopeo_ref(),
        &format!("docker://{}/ci/app:v1", wharf.host()),
    );
    let pulled = wharf.scratch("pulled");
    skopeo.copy(
        &format!("docker://{}/ci/app:v1", wharf.host()),
        &format!("oci:{}:v1", pulled.display()),
    );
    let after = unix_now();

    let (images, status) = last_uses(&wharf, "ci/app", "v1");
    let at = images.as_u64().unwrap_or_else(|| {
        panic!("`wharf images` shows no last use for ci/app:v1, pushed and pulled: {images}")
    });
    assert!(
        (before..=after).contains(&at),
        "last use {at} is not between the push ({before}) and the pull ({after})"
    );
    assert_eq!(
        status, images,
        "`wharf status` and `wharf images` disagree on ci/app:v1"
    );
    let text = cli(&wharf, &["images"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("ci/app "))
        .unwrap_or_else(|| panic!("no ci/app row:\n{text}"));
    assert!(row.contains(" s ago"), "`wharf images` row: {row}");

    wharf.stop();
    assert_eq!(
        last_uses(&wharf, "ci/app", "v1"),
        (images.clone(), images),
        "read from the files, with no server, the last use is the one the server showed"
    );
}
