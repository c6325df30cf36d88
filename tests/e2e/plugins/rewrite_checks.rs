//! Rewrites that cannot break an image (issue 24, bugs 1 and 2): a rewrite that names content the
//! repository cannot serve (a child that is nowhere, another repository's private image or blob), or
//! that is larger than a manifest may be, is its plugin's failure. Failing open, the tag serves the
//! original and the log names the plugin and why; failing closed, the tag is refused with a message
//! that does. All with `test_rewrite` (`plugins/testing/rewrite`), whose config says what to do.

use std::fs;
use std::path::Path;

use serde_json::json;

use crate::harness::{output_text, DistRegistry, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, Layout, LayoutSpec};
use crate::oci::{sha256_digest, OCI_LAYER_TAR, OCI_MANIFEST};
use crate::skopeo::Skopeo;

use super::{assert_body_names, component, log_count, start, wait_for_log, Entry, PluginFiles};

/// A digest no one has.
const GHOST: &str = "sha256:00000000000000000000000000000000000000000000000000000000deadbeef";

/// `test_rewrite` adding `child` to an index, `layer` to an image manifest.
fn adds(child: serde_json::Value, layer: serde_json::Value) -> String {
    json!({ "child": child, "layer": layer }).to_string()
}

/// Adds content that is nowhere.
fn ghost() -> String {
    adds(
        json!({ "mediaType": OCI_MANIFEST, "digest": GHOST, "size": 527 }),
        json!({ "mediaType": OCI_LAYER_TAR, "digest": GHOST, "size": 1024 }),
    )
}

/// Adds `secret`'s amd64 image to an index, and that image's own layer to an image manifest: content
/// wharf stores, but for another repository.
fn peeker(secret: &Layout) -> String {
    let img = &secret.images[0];
    let own = img.layers.last().expect("a layer of its own");
    adds(img.manifest.to_json(), own.to_json())
}

/// The images a test rewrites: a multi-platform index, and a single-platform image.
struct Images {
    index: Layout,
    single: Layout,
    /// The single image's manifest digest (what its tag names).
    single_digest: String,
}

fn images(dir: &Path, seed: u64) -> Images {
    let index = write_layout(&dir.join("index"), &LayoutSpec::small("idx", seed));
    let single = write_layout(&dir.join("single"), &LayoutSpec::small("img", seed + 1));
    let single_digest = single.retag_single("amd64").manifest.digest;
    Images {
        index,
        single,
        single_digest,
    }
}

impl Images {
    /// Pushes both to `registry_host` under `repo` (`repo:idx`, `repo:img`).
    fn push(&self, skopeo: &Skopeo, registry_host: &str, repo: &str) {
        skopeo.copy(
            &self.index.skopeo_ref(),
            &format!("docker://{registry_host}/{repo}:idx"),
        );
        skopeo.copy(
            &self.single.skopeo_ref(),
            &format!("docker://{registry_host}/{repo}:img"),
        );
    }
}

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("wharf-e2e-{name}-"))
        .tempdir()
        .expect("tempdir")
}

/// `skopeo copy --all` of `name:tag` from wharf into a fresh layout; that layout's directory.
fn copy_out(skopeo: &Skopeo, wharf: &Wharf, name: &str, tag: &str) -> std::path::PathBuf {
    let out = wharf.scratch(&format!("out-{}-{tag}", name.replace('/', "-")));
    skopeo.copy(
        &format!("docker://{}/{name}:{tag}", wharf.host()),
        &format!("oci:{}:{tag}", out.display()),
    );
    out
}

/// Proves (bug 1, fail open): with two hostile rewrites loaded — one naming content that is nowhere
/// (`sha256:0000…deadbeef`), one naming another repository's private image (in an index) and private
/// blob (in an image manifest) — skopeo copies a local index, a local single image, a mirrored index
/// and a mirrored single image whole, each tag serving its original (same digest, same bytes); and
/// wharf's log names each plugin with the first digest it named that the repository does not have.
/// Before the fix the tags served the rewrites, whose children answer 404, and nothing was logged.
#[test]
fn a_rewrite_naming_what_the_repository_cannot_serve_serves_the_original() {
    let src = scratch("rewrite-checks");
    let secret = write_layout(&src.path().join("secret"), &LayoutSpec::small("v1", 2401));
    let local = images(&src.path().join("local"), 2402);
    let mirrored = images(&src.path().join("mirrored"), 2404);

    let files = PluginFiles::new();
    let path = files.add("test_rewrite.wasm", &component("test_rewrite"));
    let registry = DistRegistry::start();
    let wharf = start(
        &[
            Entry::new("ghost", &path, &ghost()),
            Entry::new("peeker", &path, &peeker(&secret)),
        ],
        Some(&registry),
    );
    let skopeo = Skopeo::new();
    let w = wharf.host();
    skopeo.copy(
        &secret.skopeo_ref(),
        &format!("docker://{w}/team/secret:v1"),
    );
    local.push(&skopeo, &w, "team/app");
    mirrored.push(&skopeo, &registry.host(), "team/mirrored");

    let api = Api::new(wharf.base());
    for (name, imgs) in [("team/app", &local), ("up/team/mirrored", &mirrored)] {
        let out = copy_out(&skopeo, &wharf, name, "idx");
        assert_same_image(&imgs.index, &out, "idx");
        let raw = skopeo.inspect_raw(&format!("docker://{w}/{name}:idx"));
        assert!(
            raw == fs::read(imgs.index.blob_path(&imgs.index.index.digest)).unwrap(),
            "{name}:idx serves other bytes than the pushed index"
        );

        copy_out(&skopeo, &wharf, name, "img");
        let head = api.request(
            "HEAD",
            &format!("/v2/{name}/manifests/img"),
            &[("Accept", OCI_MANIFEST)],
            None,
        );
        head.assert_status(200);
        assert_eq!(
            head.need_header("Docker-Content-Digest"),
            imgs.single_digest,
            "{name}:img serves another manifest than the pushed one"
        );
        let raw = skopeo.inspect_raw(&format!("docker://{w}/{name}:img"));
        assert_eq!(sha256_digest(&raw), imgs.single_digest);
    }

    let within = std::time::Duration::from_secs(5);
    let img = &secret.images[0];
    let secret_layer = &img.layers.last().unwrap().digest;
    for repo in ["team/app", "mirror.test/team/mirrored"] {
        let lacks = format!("which repository {repo} does not have");
        for (plugin, first) in [
            ("ghost", GHOST),
            ("peeker", img.manifest.digest.as_str()),
            ("peeker", secret_layer.as_str()),
        ] {
            wait_for_log(
                &wharf,
                &[
                    &format!("plugin={plugin}"),
                    "manifest rewrite failed",
                    &format!("it names {first}"),
                    &lacks,
                ],
                within,
            );
        }
    }
}

/// Proves (bug 1, fail closed): a rewrite naming content that is nowhere, from a plugin whose entry
/// says `fail = "closed"`, refuses the tag of a local and of a mirrored index: skopeo fails and
/// prints wharf's message, which names the plugin, the missing digest and the fail policy (403
/// DENIED); the original stays served by its digest, and the push itself was taken. Before the fix
/// the tag served the rewrite and skopeo failed on its child's 404, with no word of the plugin.
#[test]
fn a_rewrite_that_fails_closed_refuses_the_tag_and_says_why() {
    let src = scratch("rewrite-closed");
    let local = images(&src.path().join("local"), 2406);
    let mirrored = images(&src.path().join("mirrored"), 2408);

    let files = PluginFiles::new();
    let path = files.add("test_rewrite.wasm", &component("test_rewrite"));
    let mut entry = Entry::new("ghost", &path, &ghost());
    entry.fail = Some("closed");
    let registry = DistRegistry::start();
    let wharf = start(&[entry], Some(&registry));
    let skopeo = Skopeo::new();
    let w = wharf.host();
    local.push(&skopeo, &w, "team/app");
    mirrored.push(&skopeo, &registry.host(), "team/mirrored");

    let api = Api::new(wharf.base());
    for (name, imgs) in [("team/app", &local), ("up/team/mirrored", &mirrored)] {
        let out = wharf.scratch(&format!("refused-{}", name.replace('/', "-")));
        let printed = skopeo.output(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--retry-times=0",
            &format!("docker://{w}/{name}:idx"),
            &format!("oci:{}:idx", out.display()),
        ]);
        let text = output_text(&printed);
        assert!(
            !printed.status.success(),
            "skopeo copied {name}:idx: {text}"
        );
        // skopeo prints the message as a quoted string: its quotes come escaped.
        for needle in ["plugin ghost", GHOST, r#"fail = \"closed\""#] {
            assert!(
                text.contains(needle),
                "skopeo's error for {name}:idx should say {needle:?}:\n{text}"
            );
        }

        let r = api.get_manifest(name, "idx");
        r.assert_error(403, "DENIED");
        assert_body_names(&r, "plugin ghost");
        assert_body_names(&r, GHOST);
        let original = api.get_manifest(name, &imgs.index.index.digest);
        original.assert_status(200);
        assert_eq!(sha256_digest(&original.body), imgs.index.index.digest);
    }
}

/// `VmHWM` of process `pid` (its peak resident memory), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kb * 1024
}

/// Proves (bug 2): a plugin that answers a 41,943,464-byte rewrite (wharf's default
/// `registry.max_manifest_bytes` is 4 MiB) for a local and a mirrored index is refused before wharf
/// copies the answer: skopeo copies both images whole, each tag serving its original; the log names
/// the plugin and the limit; and wharf's peak resident memory grows by less than 30 MB over the
/// pushes, the rewrites and the copies (a buffer check, not a benchmark). Before the fix the rewrite
/// was stored and served (skopeo: "exceeded maximum allowed size of 4194304 bytes") and the server's
/// RSS rose by over 100 MB, for good.
#[test]
fn a_rewrite_larger_than_a_manifest_may_be_is_refused_before_it_is_copied() {
    let src = scratch("rewrite-size");
    let local = write_layout(&src.path().join("local"), &LayoutSpec::small("idx", 2410));
    let mirrored = write_layout(
        &src.path().join("mirrored"),
        &LayoutSpec::small("idx", 2411),
    );

    let files = PluginFiles::new();
    let path = files.add("test_rewrite.wasm", &component("test_rewrite"));
    let registry = DistRegistry::start();
    let wharf = start(
        &[Entry::new("hoarder", &path, r#"{"bytes": 41943464}"#)],
        Some(&registry),
    );
    let skopeo = Skopeo::new();
    let w = wharf.host();
    skopeo.copy(
        &mirrored.skopeo_ref(),
        &format!("docker://{}/team/mirrored:idx", registry.host()),
    );

    let before = peak_rss(wharf.pid());
    skopeo.copy(&local.skopeo_ref(), &format!("docker://{w}/team/app:idx"));
    for (name, layout) in [("team/app", &local), ("up/team/mirrored", &mirrored)] {
        let out = copy_out(&skopeo, &wharf, name, "idx");
        assert_same_image(layout, &out, "idx");
    }
    let grown = peak_rss(wharf.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {} KB", grown >> 10);
    assert!(
        grown < 30 << 20,
        "wharf's peak resident memory grew by {} MB around a refused 41 MB rewrite: it was copied \
         (or kept) rather than refused in the instance",
        grown >> 20
    );

    let said = [
        "plugin=hoarder",
        "manifest rewrite failed",
        "handed wharf more than 4194304 bytes",
    ];
    let event = wait_for_log(&wharf, &said, std::time::Duration::from_secs(5));
    assert!(
        !event.contains("wasm backtrace"),
        "the failure should say what happened, not dump a backtrace: {event}"
    );
    // Once for the local index (at its push), once for the mirrored one.
    assert_eq!(log_count(&wharf, &said), 2, "{event}");
}

/// Proves (bug 2, the limit itself): with `registry.max_manifest_bytes = 8192`, a valid rewrite of
/// about 11 KB (`annotate` adding a 10,000-character annotation) is refused like a push of that size:
/// skopeo copies the image whole and the tag serves the original, and the log names the plugin, the
/// size and the setting. Before the fix the larger rewrite was stored and served for the tag.
#[test]
fn a_rewrite_over_max_manifest_bytes_is_not_served() {
    let src = scratch("rewrite-limit");
    let local = write_layout(&src.path().join("local"), &LayoutSpec::small("idx", 2412));
    let files = PluginFiles::new();
    let path = files.add("annotate.wasm", &component("annotate"));
    let padding = "x".repeat(10_000);
    let config = json!({ "annotations": { "org.example.padding": padding } }).to_string();
    let wharf = Wharf::start(WharfOptions {
        max_manifest_bytes: Some(8192),
        extra_toml: Entry::new("padder", &path, &config).toml(),
        ..Default::default()
    });
    let skopeo = Skopeo::new();
    skopeo.copy(
        &local.skopeo_ref(),
        &format!("docker://{}/team/app:idx", wharf.host()),
    );
    let out = copy_out(&skopeo, &wharf, "team/app", "idx");
    assert_same_image(&local, &out, "idx");
    wait_for_log(
        &wharf,
        &[
            "plugin=padder",
            "manifest rewrite failed",
            "more than a manifest may be (registry.max_manifest_bytes = 8192",
        ],
        std::time::Duration::from_secs(5),
    );
}
