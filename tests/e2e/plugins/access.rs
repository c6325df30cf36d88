//! Access policies decide real pulls and pushes: skopeo through wharf with the Rust `allow-list`, the
//! Python example and the JavaScript example, for local repositories and for mirrored ones (path
//! prefix and `?ns=`). A refusal is `403 DENIED` with the plugin's reason, and the client shows it.

use std::path::Path;

use crate::fixtures::SmallImage;
use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::skopeo::Skopeo;

use super::{component, example, start, Entry, PluginFiles, MIRROR_HOST};

/// Two instances of one access policy: `readers` judges pulls and tag lists and refuses `team/secret`
/// (local) and `mirror.test/team/secret` (mirrored); `writers` judges pushes and deletes and refuses
/// `team/readonly`. Split by wharf's `on` key, so a push to `team/readonly` gets past the blob `HEAD`
/// skopeo sends first (a pull, which has no body to carry a reason) and is refused at the upload,
/// whose body the client prints.
fn readers_and_writers(path: &Path, readers: &str, writers: &str) -> Vec<Entry> {
    let mut r = Entry::new("readers", path, readers);
    r.on = Some(vec!["pull", "list"]);
    let mut w = Entry::new("writers", path, writers);
    w.on = Some(vec!["push", "delete"]);
    vec![r, w]
}

fn skopeo_fails(skopeo: &Skopeo, args: &[&str], needles: &[&str]) -> String {
    let out = skopeo.output(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "skopeo {} should have been refused, but succeeded:\n{stderr}",
        args.join(" ")
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "skopeo {} failed, but its message lacks {n:?} (the client must see the plugin's reason):\n{stderr}",
            args.join(" ")
        );
    }
    stderr
}

/// The story every access policy goes through. `seed` keeps the images of each language apart.
fn access_story(entries: Vec<Entry>, seed: u64) {
    let registry = DistRegistry::start();
    let wharf = start(&entries, Some(&registry));
    let w = wharf.host();
    let api = Api::new(wharf.base());
    let skopeo = Skopeo::new();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", seed));

    // Local: an allowed push and pull work, byte for byte.
    skopeo.copy(&layout.skopeo_ref(), &format!("docker://{w}/team/app:v1"));
    let out = wharf.scratch("out-local");
    skopeo.copy(
        &format!("docker://{w}/team/app:v1"),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    // Local push refused: 403 at the upload, with the reason.
    let stderr = skopeo_fails(
        &skopeo,
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--retry-times=0",
            &layout.skopeo_ref(),
            &format!("docker://{w}/team/readonly:v1"),
        ],
        &[
            "push of team/readonly denied by plugin writers",
            "team/readonly is denied by",
        ],
    );
    assert!(stderr.contains("denied"), "{stderr}");
    let r = api.request("POST", "/v2/team/readonly/blobs/uploads/", &[], None);
    r.assert_error(403, "DENIED");

    // Local pull refused, although the content is there (pushed by the raw API: pushes of team/secret
    // are allowed, only reads are not).
    let secret = SmallImage::push(&api, "team/secret", "v1", seed + 1);
    skopeo_fails(
        &skopeo,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--retry-times=0",
            &format!("docker://{w}/team/secret:v1"),
        ],
        &[
            "pull of team/secret denied by plugin readers",
            "team/secret is denied by",
        ],
    );
    api.get_manifest("team/secret", &secret.manifest_digest)
        .assert_error(403, "DENIED");
    api.get(&format!("/v2/team/secret/blobs/{}", secret.layer.digest))
        .assert_error(403, "DENIED");
    api.get("/v2/team/secret/tags/list")
        .assert_error(403, "DENIED");
    // A cross-repository mount reads its source: one the caller may not pull is not mounted, and
    // the push goes on as an ordinary upload (the spec's 202 for a mount that cannot be done).
    let r = api.request(
        "POST",
        &format!(
            "/v2/team/app/blobs/uploads/?mount={}&from=team/secret",
            secret.layer.digest
        ),
        &[],
        None,
    );
    r.assert_status(202);
    assert!(
        r.header("location")
            .is_some_and(|l| l.contains("/v2/team/app/blobs/uploads/")),
        "a refused mount answers with an upload session: {r:?}"
    );
    api.head(&format!("/v2/team/app/blobs/{}", secret.layer.digest))
        .assert_status(404);
    api.get("/v2/team/app/tags/list").assert_status(200);

    // Mirrored: the same names on the upstream, judged as `mirror.test/<repository>`.
    let up = registry.host();
    skopeo.copy(&layout.skopeo_ref(), &format!("docker://{up}/team/app:v1"));
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{up}/team/secret:v1"),
    );
    let before = registry.access_log().len();

    let out = wharf.scratch("out-mirror");
    skopeo.copy(
        &format!("docker://{w}/up/team/app:v1"),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");
    skopeo_fails(
        &skopeo,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--retry-times=0",
            &format!("docker://{w}/up/team/secret:v1"),
        ],
        &[
            &format!("pull of {MIRROR_HOST}/team/secret denied by plugin readers"),
            &format!("{MIRROR_HOST}/team/secret is denied by"),
        ],
    );
    // containerd's form of the same: `?ns=<registry>`.
    let ns = format!("?ns={MIRROR_HOST}");
    let r = api.get_manifest_path(&format!("/v2/team/secret/manifests/v1{ns}"));
    r.assert_error(403, "DENIED");
    super::assert_body_names(&r, &format!("{MIRROR_HOST}/team/secret"));
    api.get_manifest_path(&format!("/v2/team/app/manifests/v1{ns}"))
        .assert_status(200);
    // A refused name is never asked of the upstream.
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
}

/// Proves: with the Rust `allow-list` loaded (twice, split by `on`), skopeo pushes and pulls allowed
/// repositories through wharf (local, and mirrored by path prefix and `?ns=`), while a refused push,
/// a refused local pull and a refused mirrored pull fail with `403 DENIED` and the plugin's reason in
/// skopeo's error; a mount from a refused repository is not done (an upload session instead); a name
/// outside the allow list is refused as such; refused mirrored names never reach the upstream.
#[test]
fn allow_list_decides_skopeo_pulls_and_pushes() {
    let files = PluginFiles::new();
    let path = files.add("allow_list.wasm", &component("allow_list"));
    let entries = readers_and_writers(
        &path,
        r#"{"allow": ["team/**", "mirror.test/team/**"], "deny": ["team/secret*", "mirror.test/team/secret*"]}"#,
        r#"{"deny": ["team/readonly*"]}"#,
    );
    access_story(entries.clone(), 1400);

    // The allow side of the list: a name it does not match is refused, with that reason.
    let wharf = super::start(&entries, None);
    let r = Api::new(wharf.base()).get_manifest("other/app", "v1");
    r.assert_error(403, "DENIED");
    super::assert_body_names(&r, "other/app is not in the allow list (allow-list plugin)");
}

/// Proves: the same story with the Python example policy (componentize-py), so a component carrying a
/// Python interpreter decides real traffic, with its reasons reaching skopeo.
#[test]
fn python_policy_decides_skopeo_pulls_and_pushes() {
    let files = PluginFiles::new();
    let path = files.add("policy.wasm", &example("python"));
    access_story(
        readers_and_writers(
            &path,
            r#"{"deny": ["team/secret", "mirror.test/team/secret"]}"#,
            r#"{"deny": ["team/readonly"]}"#,
        ),
        1410,
    );
}

/// Proves: the same story with the JavaScript example policy (componentize-js).
#[test]
fn js_policy_decides_skopeo_pulls_and_pushes() {
    let files = PluginFiles::new();
    let path = files.add("policy.wasm", &example("js"));
    access_story(
        readers_and_writers(
            &path,
            r#"{"deny": ["team/secret", "mirror.test/team/secret"]}"#,
            r#"{"deny": ["team/readonly"]}"#,
        ),
        1420,
    );
}

/// Proves: `on` limits which operations a plugin sees. An allow-list that refuses everything, with
/// `on = ["delete"]`, leaves pushes and pulls alone and refuses the delete.
#[test]
fn on_limits_the_operations_a_plugin_judges() {
    let files = PluginFiles::new();
    let path = files.add("allow_list.wasm", &component("allow_list"));
    let mut e = Entry::new("no-deletes", &path, r#"{"deny": ["**"]}"#);
    e.on = Some(vec!["delete"]);
    let wharf = Wharf::start(WharfOptions {
        delete_enabled: Some(true),
        extra_toml: e.toml(),
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let image = SmallImage::push(&api, "team/app", "v1", 1430);
    image.assert_intact(&api);
    let r = api.delete(&format!("/v2/team/app/manifests/{}", image.manifest_digest));
    r.assert_error(403, "DENIED");
    super::assert_body_names(&r, "delete of team/app denied by plugin no-deletes");
    image.assert_intact(&api);
}
