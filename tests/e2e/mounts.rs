//! Cross-repository mounts whose source the caller may not read (issue 23, bug 4). The spec: a
//! mount that cannot be done answers `202` with an ordinary upload session. wharf does that when the
//! caller may not pull the source (an `[[auth.rule]]` or an access plugin says no) or the source lacks
//! the blob, and links nothing: the client uploads the blob, and the push goes on.
//!
//! containerd pushes an image with a mount from the repository it pulled it from, so a CI robot
//! pushing an image an admin pulled from a repository the robot may not read met a `403` there.

use crate::harness::{Wharf, WharfOptions};
use crate::http::{path_of, with_query, Api};
use crate::layout::{write_layout, LayoutSpec};
use crate::mirror::ctr::Containerd;
use crate::mirror::relay::Relay;
use crate::naming::{small_layer, toml_path, write_tokens, Caller};
use crate::oci::sha256_digest;
use crate::plugins::{component, log_count, wait_for_log, Entry, PluginFiles};
use crate::skopeo::Skopeo;

const ADMIN_TOKEN: &str = "admin-token-9e4a17";
const ROBOT_TOKEN: &str = "ci-robot-token-2c5f80";

/// A wharf where the admin pulls and pushes `private/`, the CI robot pushes `ci/` (both read it),
/// and an access plugin refuses every read of `secret/`; and what must outlive it.
fn start() -> (Wharf, tempfile::TempDir, PluginFiles) {
    let files = tempfile::tempdir().unwrap();
    let tokens = write_tokens(
        files.path(),
        &[(ADMIN_TOKEN, "admin"), (ROBOT_TOKEN, "ci-robot")],
    );
    let plugins = PluginFiles::new();
    let mut secret = Entry::new(
        "secret-reads",
        &plugins.add("allow_list.wasm", &component("allow_list")),
        r#"{"deny": ["secret/**"]}"#,
    );
    secret.on = Some(vec!["pull", "list"]);
    let wharf = Wharf::start(WharfOptions {
        extra_toml: format!(
            "\n[auth]\ntokens_file = {}\n\n\
             [[auth.rule]]\nprefix = \"private\"\npull = [\"admin\"]\npush = [\"admin\"]\n\n\
             [[auth.rule]]\nprefix = \"ci\"\npull = [\"ci-robot\", \"admin\"]\npush = [\"ci-robot\"]\n{}",
            toml_path(&tokens),
            secret.toml()
        ),
        ..Default::default()
    });
    (wharf, files, plugins)
}

/// Proves: containerd 1.6, pushing as the CI robot (`--user`) an image it pulled as the admin from
/// `private/pod` and re-tagged `ci/pod`, asks to mount every blob from `private/pod`
/// (`?mount=<digest>&from=private/pod`), which the robot may not read: wharf answers each with an
/// upload session, containerd uploads the blobs, and `ctr images push` succeeds; wharf then serves
/// `ci/pod:v1` as the index pushed, while the robot still may not read `private/pod`.
#[test]
fn ctr_pushes_as_a_robot_an_image_pulled_from_a_repository_it_may_not_read() {
    let (wharf, _files, _plugins) = start();
    // containerd pushes to (and pulls from) a relay in front of wharf, which records its requests.
    let front = Relay::start(wharf.addr());
    let f = front.addr().to_string();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 2370));
    Skopeo::new().copy_with(
        &["--dest-creds", &format!("admin:{ADMIN_TOKEN}")],
        &layout.skopeo_ref(),
        &format!("docker://{f}/private/pod:v1"),
    );
    let ctrd = Containerd::start();
    let pulled = format!("{f}/private/pod:v1");
    let admin = format!("admin:{ADMIN_TOKEN}");
    ctrd.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--all-platforms",
        "--plain-http",
        "--user",
        &admin,
        &pulled,
    ]);
    let pushed = format!("{f}/ci/pod:v1");
    ctrd.ctr(&["images", "tag", &pulled, &pushed]);
    let before = front.seen().len();
    let robot = format!("ci-robot:{ROBOT_TOKEN}");
    ctrd.ctr(&["images", "push", "--plain-http", "--user", &robot, &pushed]);

    let mounts: Vec<String> = front.seen()[before..]
        .iter()
        .filter(|s| s.method == "POST" && s.target.contains("mount="))
        .map(|s| s.target.clone())
        .collect();
    assert!(
        !mounts.is_empty()
            && mounts.iter().all(|t| {
                t.starts_with("/v2/ci/pod/blobs/uploads/")
                    && (t.contains("from=private%2Fpod") || t.contains("from=private/pod"))
            }),
        "containerd should ask to mount the blobs from private/pod, where it pulled them:\n{}",
        front.describe()
    );
    // Nothing was mounted: containerd uploaded every blob (configs and layers) itself.
    let blobs = layout.all_digests().len() - 1 - layout.images.len();
    assert_eq!(
        front.count("PUT", "/v2/ci/pod/blobs/uploads/"),
        blobs,
        "containerd should upload each of the {blobs} blobs once:\n{}",
        front.describe()
    );
    wait_for_log(
        &wharf,
        &["method=PUT path=/v2/ci/pod/manifests/v1", "status=201"],
        std::time::Duration::from_secs(10),
    );
    assert_eq!(
        log_count(
            &wharf,
            &["method=POST path=/v2/ci/pod/blobs/uploads/", "status=201"]
        ),
        0,
        "a mount from private/pod was done for the robot"
    );
    let api = Api::new(wharf.base());
    let admin = Caller::token("admin", ADMIN_TOKEN);
    let r = admin.read(&api, "GET", "/v2/ci/pod/manifests/v1");
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), layout.index.digest);
    for img in &layout.images {
        for b in std::iter::once(&img.config).chain(&img.layers) {
            let r = admin.read(&api, "GET", &format!("/v2/ci/pod/blobs/{}", b.digest));
            r.assert_status(200);
            assert_eq!(sha256_digest(&r.body), b.digest);
        }
    }
    Caller::token("ci-robot", ROBOT_TOKEN)
        .read(&api, "GET", "/v2/private/pod/manifests/v1")
        .assert_error(403, "DENIED");
}

/// Proves, over raw HTTP, what a mount (`POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<src>`)
/// answers the CI robot: from `private/pod`, which a rule keeps from it, `202` with an upload session
/// (`Location`, `Docker-Upload-UUID`) and nothing linked, a session that a `PUT ?digest=` completes;
/// from `secret/pod`, which an access plugin keeps from everyone, the same, completed by a `PATCH`
/// and a `PUT`; from `ci/base`, which it may read and which has the blob, `201` (mounted); from
/// `ci/base` for a blob it lacks, `202`.
#[test]
fn a_mount_from_a_source_the_caller_may_not_read_is_an_ordinary_upload() {
    let (wharf, _files, _plugins) = start();
    let api = Api::new(wharf.base());
    let admin = Caller::token("admin", ADMIN_TOKEN);
    let robot = Caller::token("ci-robot", ROBOT_TOKEN);
    let private = admin.push_image(&api, "private/pod", "v1", 2371);
    let secret = admin.push_image(&api, "secret/pod", "v1", 2372);
    let base = robot.push_image(&api, "ci/base", "v1", 2373);
    let mount = |repo: &str, digest: &str, from: &str| {
        robot.request(
            &api,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            &[],
            None,
        )
    };
    let head = |repo: &str, digest: &str| {
        robot
            .read(&api, "HEAD", &format!("/v2/{repo}/blobs/{digest}"))
            .status
    };
    let session = |r: &crate::http::Resp| {
        r.assert_status(202);
        assert!(
            r.header("Docker-Upload-UUID").is_some(),
            "an upload session has an id: {}",
            r.describe()
        );
        path_of(r.need_header("Location"))
    };

    // 1. A source the rules keep from the robot: an ordinary upload, completed by one PUT.
    let d = &private.layer.digest;
    let loc = session(&mount("ci/pod", d, "private/pod"));
    assert_eq!(head("ci/pod", d), 404, "a refused mount linked the blob");
    robot
        .request(
            &api,
            "PUT",
            &with_query(&loc, &format!("digest={d}")),
            &[("Content-Type", "application/octet-stream")],
            Some(&small_layer(2371)),
        )
        .assert_status(201);
    assert_eq!(head("ci/pod", d), 200);

    // 2. A source an access plugin keeps from everyone: the same, completed by PATCH then PUT.
    let d = &secret.layer.digest;
    let loc = session(&mount("ci/pod", d, "secret/pod"));
    assert_eq!(head("ci/pod", d), 404, "a refused mount linked the blob");
    let bytes = small_layer(2372);
    let range = format!("0-{}", bytes.len() - 1);
    let r = robot.request(
        &api,
        "PATCH",
        &loc,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        Some(&bytes),
    );
    r.assert_status(202);
    let loc = path_of(r.need_header("Location"));
    robot
        .request(
            &api,
            "PUT",
            &with_query(&loc, &format!("digest={d}")),
            &[],
            None,
        )
        .assert_status(201);
    assert_eq!(head("ci/pod", d), 200);

    // 3. A source the robot may read, with the blob: mounted.
    let d = &base.layer.digest;
    let r = mount("ci/other", d, "ci/base");
    r.assert_status(201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(head("ci/other", d), 200);

    // 4. A source the robot may read, without the blob: an ordinary upload.
    let d = &private.layer.digest;
    session(&mount("ci/other", d, "ci/base"));
    assert_eq!(head("ci/other", d), 404);

    // The robot still reads neither source, and the admin's image is intact.
    robot
        .read(&api, "GET", "/v2/private/pod/manifests/v1")
        .assert_error(403, "DENIED");
    robot
        .read(&api, "GET", "/v2/secret/pod/manifests/v1")
        .assert_error(403, "DENIED");
    let r = admin.read(&api, "GET", "/v2/private/pod/manifests/v1");
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), private.manifest_digest);
}
