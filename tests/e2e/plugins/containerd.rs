//! containerd 1.6 (`ctr`) pulls and pushes through a wharf running the `allow-list` plugin: mirrored
//! pulls (`?ns=mirror.test`, as containerd sends them to a `hosts.toml` mirror), local pulls and pushes.
//!
//! containerd asks with `HEAD` first (resolve; and "does it exist" before a push), so a refusal reaches
//! it as a bare `403 Forbidden`: a `HEAD` answer has no body to carry the reason. The reason is in
//! wharf's log (checked here) and in the body of every `GET`, which the access tests check.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::harness::DistRegistry;
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::mirror::ctr::Containerd;
use crate::oci::sha256_digest;
use crate::skopeo::Skopeo;

use super::{component, start, wait_for_log, Entry, PluginFiles, MIRROR_HOST};

/// `DIR/mirror.test/hosts.toml`: pull and resolve through wharf; the fallback `server` is a closed
/// local port, so nothing containerd does can leave the machine or go around wharf.
fn hosts_dir(dir: &Path, wharf: &str) {
    let d = dir.join(MIRROR_HOST);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:9\"\n\n[host.\"http://{wharf}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

/// Runs `ctr ARGS` expecting a refusal: it fails, and says 403.
fn ctr_refused(ctrd: &Containerd, args: &[&str]) -> Output {
    let out = ctrd.output(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "ctr {} should have been refused, but succeeded:\n{text}",
        args.join(" ")
    );
    assert!(
        text.contains("403"),
        "ctr {} failed, but not with wharf's 403:\n{text}",
        args.join(" ")
    );
    out
}

/// Proves: with `allow-list` loaded, containerd pulls an allowed mirrored image through wharf
/// (`?ns=mirror.test`), unpacking it, and is refused (403) for a denied one, which never reaches the
/// upstream; it pushes that image into an allowed local repository (stored byte for byte: the index
/// digest is the upstream's) and pulls it back, and is refused (403) pushing to or pulling from a
/// denied local repository; wharf's log names the plugin and its reason for each refusal.
#[test]
fn containerd_pulls_and_pushes_through_allow_list() {
    let files = PluginFiles::new();
    let path = files.add("allow_list.wasm", &component("allow_list"));
    let entry = Entry::new(
        "allow-list",
        &path,
        r#"{"allow": ["team/**", "mirror.test/team/**"], "deny": ["team/secret*", "mirror.test/team/secret*"]}"#,
    );
    let registry = DistRegistry::start();
    let wharf = start(&[entry], Some(&registry));
    let w = wharf.host();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1500));
    let skopeo = Skopeo::new();
    let up = registry.host();
    skopeo.copy(&layout.skopeo_ref(), &format!("docker://{up}/team/app:v1"));
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{up}/team/secret:v1"),
    );
    let before = registry.access_log().len();

    let hosts = wharf.scratch("certs.d");
    hosts_dir(&hosts, &w);
    let ctrd = Containerd::start();
    let hosts_arg = hosts.to_str().unwrap();

    // Mirrored pull, allowed: every platform, unpacked (so every layer matched its diff_id).
    let allowed = format!("{MIRROR_HOST}/team/app:v1");
    ctrd.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--all-platforms",
        "--hosts-dir",
        hosts_arg,
        &allowed,
    ]);
    assert_eq!(ctrd.image_digest(&allowed), layout.index.digest);
    let amd64 = &layout.images[0];
    assert_eq!(
        sha256_digest(&ctrd.content(&amd64.config.digest)),
        amd64.config.digest
    );

    // Mirrored pull, denied.
    ctr_refused(
        &ctrd,
        &[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
            hosts_arg,
            &format!("{MIRROR_HOST}/team/secret:v1"),
        ],
    );
    wait_for_log(
        &wharf,
        &[
            "denied by plugin",
            "allow-list",
            "mirror.test/team/secret is denied by rule",
        ],
        std::time::Duration::from_secs(5),
    );
    let asked: Vec<String> = registry.access_log()[before..]
        .iter()
        .filter(|l| l.contains("/v2/team/secret/"))
        .cloned()
        .collect();
    assert!(
        asked.is_empty(),
        "wharf asked the upstream for a name its plugin refused:\n{}",
        asked.join("\n")
    );

    // Local push, allowed, and a pull of it back in a fresh containerd.
    let copy = format!("{w}/team/copy:v1");
    ctrd.ctr(&["images", "push", "--plain-http", &copy, &allowed]);
    let api = Api::new(wharf.base());
    let r = api.get_manifest("team/copy", "v1");
    r.assert_status(200);
    assert_eq!(
        sha256_digest(&r.body),
        layout.index.digest,
        "containerd's push through the plugin changed the index"
    );

    // Local push, denied.
    ctr_refused(
        &ctrd,
        &[
            "images",
            "push",
            "--plain-http",
            &format!("{w}/team/secret-push:v1"),
            &allowed,
        ],
    );
    wait_for_log(
        &wharf,
        &["denied by plugin", "team/secret-push is denied by rule"],
        std::time::Duration::from_secs(5),
    );
    api.get_manifest("team/secret-push", "v1")
        .assert_error(403, "DENIED");

    // Local pulls: allowed, and denied.
    let second = Containerd::start();
    second.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--plain-http",
        "--platform",
        "linux/amd64",
        &copy,
    ]);
    assert_eq!(second.image_digest(&copy), layout.index.digest);
    ctr_refused(
        &second,
        &[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--plain-http",
            &format!("{w}/team/secret-push:v1"),
        ],
    );
}

/// Proves: the Python and the JavaScript example policies decide containerd's mirrored pulls the
/// same way: an allowed image is pulled (resolved, fetched, unpacked) through wharf, a refused one
/// fails with 403, and wharf's log carries that plugin's reason.
#[test]
fn containerd_pulls_through_the_python_and_js_policies() {
    let registry = DistRegistry::start();
    let up = registry.host();
    let scratch = tempfile::tempdir().unwrap();
    let layout = write_layout(&scratch.path().join("src"), &LayoutSpec::small("v1", 1510));
    let skopeo = Skopeo::new();
    skopeo.copy(&layout.skopeo_ref(), &format!("docker://{up}/team/app:v1"));
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{up}/team/secret:v1"),
    );
    let files = PluginFiles::new();
    for lang in ["python", "js"] {
        let path = files.add(&format!("{lang}.wasm"), &super::example(lang));
        let entry = Entry::new(
            &format!("{lang}-policy"),
            &path,
            r#"{"deny": ["mirror.test/team/secret"]}"#,
        );
        let wharf = start(&[entry], Some(&registry));
        let hosts = wharf.scratch("certs.d");
        hosts_dir(&hosts, &wharf.host());
        let hosts_arg = hosts.to_str().unwrap();
        let ctrd = Containerd::start();
        let allowed = format!("{MIRROR_HOST}/team/app:v1");
        ctrd.pull(&hosts, &allowed, "linux/amd64");
        assert_eq!(ctrd.image_digest(&allowed), layout.index.digest, "{lang}");
        ctr_refused(
            &ctrd,
            &[
                "images",
                "pull",
                "--snapshotter",
                "native",
                "--hosts-dir",
                hosts_arg,
                &format!("{MIRROR_HOST}/team/secret:v1"),
            ],
        );
        wait_for_log(
            &wharf,
            &[
                "denied by plugin",
                &format!("{lang}-policy"),
                &format!(
                    "mirror.test/team/secret is denied by prefix \"mirror.test/team/secret\" ({lang} example plugin)"
                ),
            ],
            std::time::Duration::from_secs(5),
        );
    }
}
