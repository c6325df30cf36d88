//! Client authentication (`[auth]`, issue 17) with the clients people really log in with: dockerd
//! 20.10 (`docker login`, then `docker push` / `docker pull`), podman (`podman login`) and containerd
//! 1.6 (`ctr --user`, which asks wharf's token endpoint with an OAuth2 password grant), each against a
//! wharf with an htpasswd file (bcrypt) and a `docker-registry` upstream (podman and ctr also over
//! wharf's TLS listener, trusting the test CA); and the identity wharf proves reaching an access
//! plugin (the `allow-list`'s `identities` / `except_identities`), seen by skopeo.
//! Every test then reads wharf's whole log for the passwords and tokens that went by: none may be there.

use std::fs;
use std::path::Path;

use base64::Engine as _;
use tempfile::TempDir;

use crate::harness::{output_text, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::layout::{write_layout, Layout, LayoutSpec};
use crate::mirror::ctr::Containerd;
use crate::mirror::docker_daemon::{
    in_private_network, native_image, pushed_digest, DockerTools, Dockerd,
};
use crate::mirror::push_to_upstream;
use crate::plugins::{component, Entry, PluginFiles};
use crate::skopeo::Skopeo;

const ALICE_PASSWORD: &str = "alice-pw-8c1f0e";
const BOB_PASSWORD: &str = "bob-pw-2d7a93";
const WRONG_PASSWORD: &str = "not-alices-pw-6b4e";
/// What wharf answers a wrong password on its token endpoint and on a `Basic` request (auth.rs).
const WRONG_PASSWORD_MESSAGE: &str = "wrong username or password";

/// Writes an htpasswd file with alice and bob (bcrypt, as `htpasswd -B` makes them).
fn write_htpasswd(path: &Path) {
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    fs::write(
        path,
        format!(
            "alice:{}\nbob:{}\n",
            hash(ALICE_PASSWORD),
            hash(BOB_PASSWORD)
        ),
    )
    .unwrap();
}

/// A wharf with alice and bob in its htpasswd file, `[auth]` keys `auth_keys`, `extra` TOML after
/// them, and `upstream` as the mirrored registry under path prefix `up`; and the directory of the
/// htpasswd file, to keep while wharf runs.
/// A wharf on TLS (the test CA's certificate) with the htpasswd file and `auth_keys` in `[auth]`;
/// keep the directory for as long as wharf runs.
fn start_tls(auth_keys: &str) -> (crate::tls_listener::TlsWharf, TempDir) {
    let files = tempfile::tempdir().unwrap();
    let htpasswd = files.path().join("htpasswd");
    write_htpasswd(&htpasswd);
    let wharf = crate::tls_listener::TlsWharf::start_with_config(
        &[],
        &format!(
            "\n[auth]\nhtpasswd_file = {}\n{auth_keys}",
            serde_json::to_string(&htpasswd.display().to_string()).unwrap()
        ),
    );
    (wharf, files)
}

fn start(upstream: &DistRegistry, auth_keys: &str, extra: &str) -> (Wharf, TempDir) {
    let files = tempfile::tempdir().unwrap();
    let htpasswd = files.path().join("htpasswd");
    write_htpasswd(&htpasswd);
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![UpstreamSpec::http(upstream.host(), upstream.addr()).with_prefix("up")],
            ..Default::default()
        },
        extra_toml: format!(
            "\n[auth]\nhtpasswd_file = {}\n{auth_keys}\n{extra}",
            serde_json::to_string(&htpasswd.display().to_string()).unwrap()
        ),
        ..Default::default()
    });
    (wharf, files)
}

/// Stops wharf (so its batched log is complete) and fails if any secret is in its log.
fn assert_no_secret_logged(wharf: &mut Wharf) {
    wharf.stop();
    assert_no_secret_in(&wharf.log_path());
}

/// Fails if any secret is in the log at `path`: the passwords, the `Basic` credentials they make,
/// and any token wharf signed (every one starts with the base64 of its version tag `w1|`:
/// proxy/policy/src/auth/token.rs).
fn assert_no_secret_in(path: &Path) {
    let log = fs::read_to_string(path).unwrap();
    assert!(
        log.contains("status=40"),
        "the log should show the refusals these tests provoke (is this the right log?)"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secrets = [
        ALICE_PASSWORD.to_owned(),
        BOB_PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        b64(&format!("alice:{ALICE_PASSWORD}")),
        b64(&format!("bob:{BOB_PASSWORD}")),
        b64(&format!("alice:{WRONG_PASSWORD}")),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("w1|"),
    ];
    for secret in &secrets {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            lines.is_empty(),
            "wharf's log shows a credential ({secret:?}):\n{}",
            lines.join("\n")
        );
    }
}

/// Proves: against a wharf with an htpasswd file, dockerd refuses a `docker push` before any login
/// (wharf's 401 reaches the client as an authentication error); `docker login` with a wrong password
/// fails and shows wharf's message; with the right one it succeeds, `docker push` stores the image in
/// wharf (digest as docker reported it), and after `docker rmi`, `docker pull` brings the same image
/// back from wharf, as does a pull of a mirrored image (the upstream under prefix `up`). No password or
/// token is in wharf's log.
#[test]
fn docker_logs_in_then_pushes_and_pulls() {
    in_private_network("docker-auth-netns", docker_login_push_pull);
}

fn docker_login_push_pull() {
    let tools = DockerTools::find();
    let upstream = DistRegistry::start();
    let (mut wharf, _files) = start(&upstream, "", "");
    let w = wharf.host();
    let reference = format!("{w}/team/app:v1");
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1730));
    let base = write_layout(&wharf.scratch("base"), &LayoutSpec::small("v1", 1731));
    push_to_upstream(&upstream, &base, "team/base");
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    let docker = Dockerd::start(tools, wharf.addr());
    docker.docker(&["load", "-i", archive.to_str().unwrap()]);

    // 1. No login: the push is refused as unauthenticated.
    let r = docker.try_docker(&["push", &reference]);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        !r.status.success(),
        "docker push without login succeeded:\n{all}"
    );
    assert!(
        all.contains("unauthorized: authentication required: pushes and deletes need a credential"),
        "docker should report wharf's authentication error for a push without login:\n{all}"
    );

    // 2. A wrong password: login fails, with wharf's message.
    let r = docker.try_docker(&["login", "-u", "alice", "-p", WRONG_PASSWORD, &w]);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        !r.status.success(),
        "docker login with a wrong password succeeded:\n{all}"
    );
    assert!(
        all.contains(WRONG_PASSWORD_MESSAGE),
        "docker login should show wharf's message ({WRONG_PASSWORD_MESSAGE:?}):\n{all}"
    );

    // 3. The right password: login, push, and pull back.
    let r = docker.try_docker(&["login", "-u", "alice", "-p", ALICE_PASSWORD, &w]);
    assert!(
        r.status.success(),
        "docker login failed:\n{}{}",
        r.stdout,
        r.stderr
    );
    let printed = docker.docker(&["push", &reference]);
    let digest = pushed_digest(&printed, "v1");
    let api = crate::http::Api::new(wharf.base());
    let r = api.request(
        "HEAD",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    );
    r.assert_status(200);
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.as_str()));
    let native = native_image(&layout.images);
    docker.rmi(&reference);
    assert_eq!(docker.image_id(&reference), None);
    docker.docker(&["pull", &reference]);
    assert_eq!(
        docker.image_id(&reference).as_deref(),
        Some(native.config.digest.as_str()),
        "the image docker pulled back is not the one it pushed"
    );
    // A mirrored image, through the same login.
    let mirrored = format!("{w}/up/team/base:v1");
    docker.docker(&["pull", &mirrored]);
    assert_eq!(
        docker.image_id(&mirrored).as_deref(),
        Some(native_image(&base.images).config.digest.as_str())
    );

    drop(docker);
    assert_no_secret_logged(&mut wharf);
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Runs podman with `args`; returns its output whatever the exit status.
fn podman(home: &Path, args: &[&str]) -> std::process::Output {
    crate::tls_listener::podman(home)
        .args(args)
        .output()
        .expect("run podman")
}

fn podman_ok(home: &Path, args: &[&str]) -> String {
    let out = podman(home, args);
    assert!(
        out.status.success(),
        "podman {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Proves: against a wharf with an htpasswd file (plain http, `--tls-verify=false`), a `podman push`
/// before login is refused with wharf's "authentication required"; `podman login` with a wrong
/// password fails (podman prints its own words for that), and a push with those credentials shows
/// wharf's message; after a login with the right password `podman push` and (after `podman rmi`)
/// `podman pull` of the same image work, as does a pull of a mirrored image. No password or token is
/// in wharf's log.
#[test]
fn podman_logs_in_then_pushes_and_pulls() {
    let upstream = DistRegistry::start();
    let (mut wharf, _files) = start(&upstream, "", "");
    let w = wharf.host();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1740));
    let base = write_layout(&wharf.scratch("base"), &LayoutSpec::small("v1", 1741));
    push_to_upstream(&upstream, &base, "team/base");
    let home = wharf.scratch("podman");
    let reference = format!("{w}/team/app:v1");
    // podman gets the image (this machine's platform) from an archive, as docker does.
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    podman_ok(&home, &["load", "-i", archive.to_str().unwrap()]);
    let image_id = |r: &str| {
        podman_ok(&home, &["image", "inspect", "--format", "{{.Id}}", r])
            .trim()
            .to_owned()
    };
    let pushed_id = image_id(&reference);

    let out = podman(&home, &["push", "--tls-verify=false", &reference]);
    assert!(
        !out.status.success(),
        "podman push without login succeeded:\n{}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("authentication required"),
        "podman should report wharf's authentication error:\n{}",
        output_text(&out)
    );

    let out = podman(
        &home,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            WRONG_PASSWORD,
            &w,
        ],
    );
    assert!(
        !out.status.success(),
        "podman login with a wrong password succeeded"
    );
    // podman 4.3's login replaces the registry's answer to a wrong password with its own words
    // (containers/common pkg/auth: "logging into ...: invalid username/password")...
    assert!(
        output_text(&out).contains("invalid username/password"),
        "podman login should say the password is wrong:\n{}",
        output_text(&out)
    );
    // ... while a push with the same credentials shows wharf's message.
    let out = podman(
        &home,
        &[
            "push",
            "--tls-verify=false",
            "--creds",
            &format!("alice:{WRONG_PASSWORD}"),
            &reference,
        ],
    );
    assert!(!out.status.success(), "a push with a wrong password worked");
    assert!(
        output_text(&out).contains(WRONG_PASSWORD_MESSAGE),
        "podman push --creds should show wharf's message ({WRONG_PASSWORD_MESSAGE:?}):\n{}",
        output_text(&out)
    );

    podman_ok(
        &home,
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "-p",
            ALICE_PASSWORD,
            &w,
        ],
    );
    podman_ok(&home, &["push", "--tls-verify=false", &reference]);
    podman_ok(&home, &["rmi", "--force", &pushed_id]);
    podman_ok(&home, &["pull", "--tls-verify=false", &reference]);
    assert_eq!(
        image_id(&reference),
        pushed_id,
        "podman pulled back another image"
    );
    let mirrored = format!("{w}/up/team/base:v1");
    podman_ok(&home, &["pull", "--tls-verify=false", &mirrored]);
    assert_eq!(
        image_id(&mirrored),
        crate::oci::hex_part(&native_image(&base.images).config.digest),
        "podman pulled another image than the upstream's"
    );

    assert_no_secret_logged(&mut wharf);
}

/// Proves: over wharf's TLS listener, trusted through the test CA (`--cert-dir`, verification on),
/// `podman login` with a wrong password fails and with the right one succeeds, and `podman push` and
/// (after `podman rmi`) `podman pull` work: podman follows the `https://` realm wharf names behind
/// TLS (an `http://` one would reach the TLS port in plain HTTP and fail). No secret is logged.
#[test]
fn podman_logs_in_over_tls_with_the_test_ca() {
    let (mut wharf, _files) = start_tls("");
    let w = wharf.host();
    let certs = wharf.cert_dir();
    let certs = certs.to_str().unwrap();
    let home = wharf.scratch("podman");
    let reference = format!("{w}/team/app:v1");
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1745));
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    podman_ok(&home, &["load", "-i", archive.to_str().unwrap()]);
    let image_id = |r: &str| {
        podman_ok(&home, &["image", "inspect", "--format", "{{.Id}}", r])
            .trim()
            .to_owned()
    };
    let pushed_id = image_id(&reference);
    let login = |password: &str| {
        podman(
            &home,
            &[
                "login",
                "--cert-dir",
                certs,
                "-u",
                "alice",
                "-p",
                password,
                &w,
            ],
        )
    };
    let out = login(WRONG_PASSWORD);
    assert!(
        !out.status.success() && output_text(&out).contains("invalid username/password"),
        "podman login with a wrong password should fail:\n{}",
        output_text(&out)
    );
    let out = login(ALICE_PASSWORD);
    assert!(
        out.status.success(),
        "podman login failed:\n{}",
        output_text(&out)
    );
    podman_ok(&home, &["push", "--cert-dir", certs, &reference]);
    podman_ok(&home, &["rmi", "--force", &pushed_id]);
    podman_ok(&home, &["pull", "--cert-dir", certs, &reference]);
    assert_eq!(
        image_id(&reference),
        pushed_id,
        "podman pulled back another image"
    );

    wharf.stop();
    assert_no_secret_in(&wharf.log_path());
}

/// `DIR/<wharf>/hosts.toml`: wharf is the registry itself, for pulls, resolves and pushes.
fn write_wharf_hosts(dir: &Path, wharf: &str) {
    let d = dir.join(wharf);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{wharf}\"\n\n[host.\"http://{wharf}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
        ),
    )
    .unwrap();
}

/// An image in a containerd of its own: pulled (all platforms) from a plain registry, so that `ctr
/// images push` has every blob.
fn containerd_with(layout: &Layout, source: &DistRegistry) -> (Containerd, String) {
    let src_ref = format!("{}/team/app:v1", source.host());
    Skopeo::new().copy(&layout.skopeo_ref(), &format!("docker://{src_ref}"));
    let ctrd = Containerd::start();
    ctrd.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--all-platforms",
        "--plain-http",
        &src_ref,
    ]);
    (ctrd, src_ref)
}

/// Proves: with `anonymous_pull = false`, containerd (`ctr`, `hosts.toml`) pushes to wharf with
/// `--user alice:…` (its token request is an OAuth2 password grant `POST /token`), and a fresh
/// containerd pulls the image back with `--user bob:…` (digest and unpacked layers check), while a
/// pull without `--user` is refused with 401. No password or token is in wharf's log.
#[test]
fn ctr_pushes_and_pulls_with_credentials() {
    let upstream = DistRegistry::start();
    let source = DistRegistry::start();
    let (mut wharf, _files) = start(&upstream, "anonymous_pull = false", "");
    let w = wharf.host();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1750));
    let hosts = wharf.scratch("certs.d");
    write_wharf_hosts(&hosts, &w);
    let hosts_arg = hosts.to_str().unwrap();
    let reference = format!("{w}/team/app:v1");
    let alice = format!("alice:{ALICE_PASSWORD}");
    let bob = format!("bob:{BOB_PASSWORD}");

    let (pusher, src_ref) = containerd_with(&layout, &source);
    let refused = pusher.output(&[
        "images",
        "push",
        "--hosts-dir",
        hosts_arg,
        &reference,
        &src_ref,
    ]);
    // ctr prints the status, not the body.
    assert!(
        !refused.status.success() && output_text(&refused).contains("401 Unauthorized"),
        "ctr should be refused a push without credentials:\n{}",
        output_text(&refused)
    );
    pusher.ctr(&[
        "images",
        "push",
        "--hosts-dir",
        hosts_arg,
        "--user",
        &alice,
        &reference,
        &src_ref,
    ]);
    let api = crate::http::Api::new(wharf.base());
    let r = api.request(
        "GET",
        "/v2/team/app/manifests/v1",
        &[
            ("Authorization", &basic("bob", BOB_PASSWORD)),
            ("Accept", &crate::http::all_manifest_types()),
        ],
        None,
    );
    r.assert_status(200);
    assert_eq!(crate::oci::sha256_digest(&r.body), layout.index.digest);

    let puller = Containerd::start();
    let pull = |user: Option<&str>| ctr_pull(&puller, hosts_arg, &reference, user);
    let out = pull(None);
    assert!(
        !out.status.success(),
        "ctr pulled without credentials although anonymous_pull = false:\n{}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("401")
            || output_text(&out).to_lowercase().contains("unauthorized"),
        "ctr should report wharf's 401:\n{}",
        output_text(&out)
    );
    let out = pull(Some(&bob));
    assert!(
        out.status.success(),
        "ctr pull --user bob failed:\n{}",
        output_text(&out)
    );
    assert_eq!(puller.image_digest(&reference), layout.index.digest);
    let amd64 = layout
        .images
        .iter()
        .find(|i| i.platform.architecture == "amd64")
        .unwrap();
    for l in &amd64.layers {
        assert_eq!(
            crate::oci::sha256_digest(&puller.content(&l.digest)),
            l.digest
        );
    }

    // containerd asked for its tokens with the OAuth2 password grant.
    crate::plugins::wait_for_log(
        &wharf,
        &["method=POST path=/token", "status=200"],
        std::time::Duration::from_secs(10),
    );
    drop((pusher, puller));
    assert_no_secret_logged(&mut wharf);
}

/// Proves: over wharf's TLS listener (the test CA as `ca` in `hosts.toml`), with `anonymous_pull =
/// false`, containerd pulls with `--user` (its OAuth2 `POST` goes to the `https://` realm wharf names)
/// what skopeo pushed with `--dest-creds`, and is refused without `--user`. No secret is logged.
#[test]
fn ctr_pulls_with_credentials_over_tls() {
    let (mut wharf, _files) = start_tls("anonymous_pull = false\n");
    let w = wharf.host();
    let certs = wharf.cert_dir();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1755));
    let reference = format!("{w}/team/app:v1");
    Skopeo::new().copy_with(
        &[
            "--dest-cert-dir",
            certs.to_str().unwrap(),
            "--dest-creds",
            &format!("alice:{ALICE_PASSWORD}"),
        ],
        &layout.skopeo_ref(),
        &format!("docker://{reference}"),
    );
    let hosts = wharf.scratch("hosts");
    let dir = hosts.join(&w);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{w}\"\n\n[host.\"https://{w}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {}\n",
            serde_json::to_string(&certs.join("ca.crt").display().to_string()).unwrap()
        ),
    )
    .unwrap();
    let ctrd = Containerd::start();
    let hosts_arg = hosts.to_str().unwrap();
    let bob = format!("bob:{BOB_PASSWORD}");
    let pull = |user: Option<&str>| ctr_pull(&ctrd, hosts_arg, &reference, user);
    let out = pull(None);
    assert!(
        !out.status.success() && output_text(&out).contains("401 Unauthorized"),
        "ctr should be refused a pull without credentials:\n{}",
        output_text(&out)
    );
    let out = pull(Some(&bob));
    assert!(
        out.status.success(),
        "ctr pull --user bob over TLS failed:\n{}",
        output_text(&out)
    );
    assert_eq!(ctrd.image_digest(&reference), layout.index.digest);

    drop(ctrd);
    wharf.stop();
    let log = fs::read_to_string(wharf.log_path()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("method=POST path=/token") && l.contains("status=200")),
        "containerd should have asked for its token with a POST (OAuth2 password grant)"
    );
    assert_no_secret_in(&wharf.log_path());
}

/// Proves: the identity wharf's `[auth]` proves reaches an access plugin. Two `allow-list` entries: one
/// refuses pushes to `release/**` to everyone but alice (`except_identities`), the other refuses pulls
/// of `release/**` to anonymous callers (`identities = ["anonymous"]`). alice pushes
/// `release/app` with skopeo; bob (a valid user, whom wharf's own rules let push anywhere) is refused,
/// and skopeo shows the plugin's reason naming bob; an anonymous pull is refused by the other entry
/// (so wharf passed no identity), as is a request with an anonymous token from wharf's `/token`,
/// while bob's pull of the same image works. No `[[auth.rule]]` is
/// configured: every refusal here is the plugin's.
#[test]
fn an_access_plugin_judges_the_authenticated_identity() {
    let upstream = DistRegistry::start();
    let files = PluginFiles::new();
    let path = files.add("allow_list.wasm", &component("allow_list"));
    let pushers = Entry::new(
        "release-pushers",
        &path,
        r#"{"deny": ["release/**"], "ops": ["push", "delete"], "except_identities": ["alice"]}"#,
    );
    let readers = Entry::new(
        "no-anonymous-release",
        &path,
        r#"{"deny": ["release/**"], "ops": ["pull", "list"], "identities": ["anonymous"]}"#,
    );
    let (mut wharf, _files) = start(&upstream, "", &(pushers.toml() + &readers.toml()));
    let w = wharf.host();
    let skopeo = Skopeo::new();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1760));

    skopeo.copy_with(
        &["--dest-creds", &format!("alice:{ALICE_PASSWORD}")],
        &layout.skopeo_ref(),
        &format!("docker://{w}/release/app:v1"),
    );

    let out = skopeo.output(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--retry-times=0",
        "--dest-creds",
        &format!("bob:{BOB_PASSWORD}"),
        &layout.skopeo_ref(),
        &format!("docker://{w}/release/app:v2"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "bob pushed to release/app:\n{stderr}"
    );
    for needle in [
        "push of release/app denied by plugin release-pushers",
        // (skopeo quotes the message: the rule's quotes arrive escaped)
        "release/app is denied by rule",
        "for bob (allow-list plugin)",
    ] {
        assert!(
            stderr.contains(needle),
            "skopeo should show the plugin's reason ({needle:?}):\n{stderr}"
        );
    }

    let inspect = |creds: Option<&str>| {
        let image = format!("docker://{w}/release/app:v1");
        let mut args = vec!["inspect", "--raw", "--tls-verify=false", "--retry-times=0"];
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        args.push(&image);
        skopeo.output(&args)
    };
    let out = inspect(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an anonymous pull of release/app worked:\n{stderr}"
    );
    for needle in [
        "pull of release/app denied by plugin no-anonymous-release",
        "for anonymous callers (allow-list plugin)",
    ] {
        assert!(
            stderr.contains(needle),
            "skopeo should show the plugin's reason ({needle:?}):\n{stderr}"
        );
    }
    // A token from wharf's endpoint without credentials is anonymous too.
    let api = crate::http::Api::new(wharf.base());
    let r = api.get("/token?service=wharf&scope=repository:release/app:pull");
    r.assert_status(200);
    let bearer = format!("Bearer {}", r.json()["token"].as_str().expect("a token"));
    let r = api.request(
        "GET",
        "/v2/release/app/tags/list",
        &[("Authorization", &bearer)],
        None,
    );
    r.assert_error(403, "DENIED");
    crate::plugins::assert_body_names(&r, "denied by plugin no-anonymous-release");
    crate::plugins::assert_body_names(&r, "for anonymous callers");
    let out = inspect(Some(&format!("bob:{BOB_PASSWORD}")));
    assert!(
        out.status.success(),
        "bob's pull of release/app failed:\n{}",
        output_text(&out)
    );
    assert_eq!(crate::oci::sha256_digest(&out.stdout), layout.index.digest);

    assert_no_secret_logged(&mut wharf);
}

/// `ctr images pull` of `reference` for linux/amd64 through the hosts dir, as `user` (`name:password`)
/// or anonymously; the output whatever the exit status.
fn ctr_pull(
    ctrd: &Containerd,
    hosts_dir: &str,
    reference: &str,
    user: Option<&str>,
) -> std::process::Output {
    let mut args = vec![
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--hosts-dir",
        hosts_dir,
        "--platform",
        "linux/amd64",
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.push(reference);
    ctrd.output(&args)
}
