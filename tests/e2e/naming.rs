//! One name per request (issue 23, bug 2). Every policy (`[[auth.rule]]`s, access plugins, the denial
//! log) judges the repository where wharf keeps the content: `<upstream host>/<repository>` for
//! anything the mirror serves, the local name for wharf's own repositories, however the client spelled
//! it: a path prefix (the upstream's host, or its `prefix`: podman and skopeo with a registries.conf
//! mirror), containerd's `?ns=<host>`, or Docker's host-less form (dockerd's `registry-mirrors`, a
//! registries.conf mirror without a prefix), which names the default upstream's repository while wharf
//! has none of its own by that name.
//!
//! Raw HTTP walks every spelling through each decision; then dockerd, podman and containerd pull
//! through the README's own allow-list.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fixtures::{image_manifest, SmallImage};
use crate::harness::{
    free_port, output_text, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions,
};
use crate::http::{all_manifest_types, with_query, Api, Resp};
use crate::layout::{write_layout, Desc, Layout, LayoutSpec};
use crate::mirror::ctr::{write_hosts_dir, Containerd};
use crate::mirror::docker_daemon::{in_private_network, native_image, DockerTools, Dockerd};
use crate::mirror::push_to_upstream;
use crate::oci::{self, sha256_digest, Noise};
use crate::plugins::{component, log_events, wait_for_log, Entry, PluginFiles};

/// The upstream's host, as clients name it.
const UP: &str = "up.test";
/// What every policy must judge for repository `good` of `up.test`.
const CANONICAL: &str = "up.test/good";

/// The spellings of repository `good` of upstream `up.test`: (what, name, query).
const FORMS: [(&str, &str, &str); 4] = [
    ("path prefix (the upstream's host)", "up.test/good", ""),
    ("path prefix (the upstream's `prefix`)", "up/good", ""),
    ("containerd's ?ns=", "good", "?ns=up.test"),
    ("Docker's host-less form", "good", ""),
];
/// The host-less form's index in `FORMS`: a blob there that the caller may not read is wharf's own
/// "not here", so that a push probing for it uploads it.
const HOST_LESS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Manifest,
    Blob,
    Tags,
}

const ENDPOINTS: [Endpoint; 3] = [Endpoint::Manifest, Endpoint::Blob, Endpoint::Tags];

/// Requests as one caller: a static token of wharf's tokens file, or none.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) name: &'static str,
    authorization: Option<String>,
}

impl Caller {
    pub(crate) fn anonymous() -> Caller {
        Caller {
            name: "anonymous",
            authorization: None,
        }
    }

    /// `name`, proven by its static token.
    pub(crate) fn token(name: &'static str, token: &str) -> Caller {
        Caller {
            name,
            authorization: Some(format!("Bearer {token}")),
        }
    }

    pub(crate) fn request(
        &self,
        api: &Api,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut all = headers.to_vec();
        if let Some(a) = &self.authorization {
            all.push(("Authorization", a));
        }
        api.request(method, path, &all, body)
    }

    /// GET (or HEAD) accepting every manifest type.
    pub(crate) fn read(&self, api: &Api, method: &str, path: &str) -> Resp {
        self.request(
            api,
            method,
            path,
            &[("Accept", &all_manifest_types())],
            None,
        )
    }

    /// Pushes a blob (POST, then PUT ?digest= with the bytes); returns its digest.
    pub(crate) fn push_blob(&self, api: &Api, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let r = self.request(
            api,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            None,
        );
        r.assert_status(202);
        let put = with_query(r.need_header("Location"), &format!("digest={digest}"));
        self.request(
            api,
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Some(data),
        )
        .assert_status(201);
        digest
    }

    /// `SmallImage::push` as this caller: a config and one layer (`small_layer(seed)`), tagged.
    pub(crate) fn push_image(&self, api: &Api, repo: &str, tag: &str, seed: u64) -> SmallImage {
        let config_bytes = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Labels": { "seed": seed.to_string() } },
        }))
        .unwrap();
        let layer_bytes = small_layer(seed);
        let config = Desc {
            media_type: oci::OCI_CONFIG.into(),
            digest: self.push_blob(api, repo, &config_bytes),
            size: config_bytes.len() as u64,
        };
        let layer = Desc {
            media_type: oci::OCI_LAYER_TAR.into(),
            digest: self.push_blob(api, repo, &layer_bytes),
            size: layer_bytes.len() as u64,
        };
        let manifest = image_manifest(&config, std::slice::from_ref(&layer), None);
        self.request(
            api,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", oci::OCI_MANIFEST)],
            Some(&manifest),
        )
        .assert_status(201);
        SmallImage {
            repo: repo.into(),
            tag: tag.into(),
            config,
            layer,
            manifest_digest: sha256_digest(&manifest),
            manifest,
        }
    }
}

/// The layer bytes of `Caller::push_image(.., seed)`.
pub(crate) fn small_layer(seed: u64) -> Vec<u8> {
    Noise::bytes(seed, 4096 + seed as usize % 1000)
}

/// Writes wharf's tokens file (`<token> <identity>` per line) into `dir`.
pub(crate) fn write_tokens(dir: &Path, tokens: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("tokens");
    let lines: String = tokens.iter().map(|(t, id)| format!("{t} {id}\n")).collect();
    fs::write(&path, lines).unwrap();
    path
}

/// A TOML string.
pub(crate) fn toml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

const ALICE_TOKEN: &str = "alice-token-4b1e9f";
const BOB_TOKEN: &str = "bob-token-73c0d2";

/// `registry` as upstream `up.test` (path prefix `up`), the default upstream for host-less names.
fn up_test(registry: &DistRegistry) -> MirrorOptions {
    MirrorOptions {
        default_upstream: Some(UP.into()),
        upstreams: vec![UpstreamSpec::http(UP, registry.addr()).with_prefix("up")],
        ..Default::default()
    }
}

/// An upstream holding `good:v1`.
fn upstream_with_good() -> (DistRegistry, SmallImage) {
    let registry = DistRegistry::start();
    let image = SmallImage::push(&Api::new(registry.base()), "good", "v1", 2301);
    (registry, image)
}

fn endpoint_path(name: &str, query: &str, e: Endpoint, image: &SmallImage) -> String {
    match e {
        Endpoint::Manifest => format!("/v2/{name}/manifests/v1{query}"),
        Endpoint::Blob => format!("/v2/{name}/blobs/{}{query}", image.layer.digest),
        Endpoint::Tags => format!("/v2/{name}/tags/list{query}"),
    }
}

/// Every endpoint through every spelling: (form, endpoint, what, path).
fn matrix(image: &SmallImage) -> Vec<(usize, Endpoint, String, String)> {
    let mut all = Vec::new();
    for (i, (what, name, query)) in FORMS.iter().enumerate() {
        for e in ENDPOINTS {
            all.push((
                i,
                e,
                format!("{e:?} through {what}"),
                endpoint_path(name, query, e, image),
            ));
        }
    }
    all
}

/// A 200 with the upstream's bytes.
fn assert_served(r: &Resp, e: Endpoint, image: &SmallImage, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    match e {
        Endpoint::Manifest => assert_eq!(sha256_digest(&r.body), image.manifest_digest, "{what}"),
        Endpoint::Blob => assert_eq!(sha256_digest(&r.body), image.layer.digest, "{what}"),
        Endpoint::Tags => assert_eq!(r.json()["tags"], json!(["v1"]), "{what}"),
    }
}

fn assert_names(r: &Resp, needle: &str, what: &str) {
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains(needle),
        "{what}: the refusal should name {needle:?}: {}",
        r.describe()
    );
}

/// A wharf mirroring `registry` as `up.test` with `[auth]` (alice and bob by static tokens) and one
/// rule: only alice pulls (and pushes) under `rule_prefix`. Keep the directory while wharf runs.
fn start_with_rule(registry: &DistRegistry, rule_prefix: &str) -> (Wharf, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let tokens = write_tokens(files.path(), &[(ALICE_TOKEN, "alice"), (BOB_TOKEN, "bob")]);
    let wharf = Wharf::start(WharfOptions {
        mirror: up_test(registry),
        extra_toml: format!(
            "\n[auth]\ntokens_file = {}\n\n[[auth.rule]]\nprefix = \"{rule_prefix}\"\n\
             pull = [\"alice\"]\npush = [\"alice\"]\n",
            toml_path(&tokens)
        ),
        ..Default::default()
    });
    (wharf, files)
}

/// Proves: with `[[auth.rule]] prefix = "up.test", pull = ["alice"]`, repository `good` of upstream
/// `up.test` is protected however a request spells it (path prefix by host or by `prefix`,
/// `?ns=up.test`, or the host-less Docker form with `default_upstream = "up.test"`), for its manifest
/// by tag, a blob and its tag list: alice gets the upstream's bytes (200); an anonymous caller gets
/// 401; bob gets 403 naming `up.test/good`, except a host-less blob, which is 404 (not this registry's,
/// so a pushing client uploads it) and never the bytes.
#[test]
fn an_auth_rule_on_an_upstream_covers_every_spelling_of_its_repositories() {
    let (registry, image) = upstream_with_good();
    let (wharf, _files) = start_with_rule(&registry, UP);
    let api = Api::new(wharf.base());
    let alice = Caller::token("alice", ALICE_TOKEN);
    let bob = Caller::token("bob", BOB_TOKEN);

    // alice first: the host-less form serves a blob only once the mirror holds something of the
    // repository (clients fetch the manifest first).
    for (_, e, what, path) in matrix(&image) {
        let r = alice.read(&api, "GET", &path);
        assert_served(
            &r,
            e,
            &image,
            &format!("{}: {what}: GET {path}", alice.name),
        );
    }
    for (_, _, what, path) in matrix(&image) {
        let r = Caller::anonymous().read(&api, "GET", &path);
        r.assert_error(401, "UNAUTHORIZED");
        assert!(
            r.header("WWW-Authenticate").is_some(),
            "anonymous: {what}: a 401 carries a challenge: {}",
            r.describe()
        );
    }
    for (form, e, what, path) in matrix(&image) {
        let what = format!("{}: {what}: GET {path}", bob.name);
        let r = bob.read(&api, "GET", &path);
        if form == HOST_LESS && e == Endpoint::Blob {
            r.assert_error(404, "BLOB_UNKNOWN");
        } else {
            r.assert_error(403, "DENIED");
            assert_names(&r, &format!("bob may not {} {CANONICAL}", op(e)), &what);
        }
    }
}

fn op(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Tags => "list",
        _ => "pull",
    }
}

/// Proves: a rule on `good` names wharf's own repository `good`, not the upstream's: while wharf has
/// none, every spelling of `up.test`'s `good` (judged as `up.test/good`, which no rule covers) is open
/// to anonymous pulls; once alice pushes a local `good`, the host-less form names that one, and
/// anonymous pulls of it are refused with 401, while the path-prefix and `?ns=` forms still serve
/// the upstream's.
#[test]
fn an_auth_rule_on_a_local_name_leaves_the_upstreams_repository_of_that_name_alone() {
    let (registry, image) = upstream_with_good();
    let (wharf, _files) = start_with_rule(&registry, "good");
    let api = Api::new(wharf.base());
    let anonymous = Caller::anonymous();
    for (_, e, what, path) in matrix(&image) {
        let r = anonymous.read(&api, "GET", &path);
        assert_served(&r, e, &image, &format!("anonymous: {what}: GET {path}"));
    }

    let alice = Caller::token("alice", ALICE_TOKEN);
    let local = alice.push_image(&api, "good", "local", 2302);
    for reference in ["local", "v1"] {
        let path = format!("/v2/good/manifests/{reference}");
        anonymous
            .read(&api, "GET", &path)
            .assert_error(401, "UNAUTHORIZED");
    }
    let r = alice.read(&api, "GET", "/v2/good/manifests/local");
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), local.manifest_digest);
    for (i, e, what, path) in matrix(&image) {
        if i != HOST_LESS {
            let r = anonymous.read(&api, "GET", &path);
            assert_served(&r, e, &image, &format!("anonymous: {what}: GET {path}"));
        }
    }
}

/// A wharf mirroring `registry` as `up.test`, whose status page listens on `metrics`, with the
/// allow-list as plugin `gate` configured with `config`.
fn plugin_options(
    registry: &DistRegistry,
    metrics: &str,
    plugin: &Path,
    config: &str,
) -> WharfOptions {
    WharfOptions {
        mirror: up_test(registry),
        extra_toml: format!(
            "\n[metrics]\nlisten = \"{metrics}\"\nsample_secs = 3600\n{}",
            Entry::new("gate", plugin, config).toml()
        ),
        ..Default::default()
    }
}

/// Proves: an access plugin sees repository `good` of `up.test` as registry `up.test`, repository
/// `good`, through every spelling (path prefix by host or by `prefix`, `?ns=`, the host-less Docker
/// form) for its manifest, a blob and its tag list: the allow-list with `{"allow": ["up.test/*"]}`
/// lets all of them through (while refusing a local name it does not list), and, restarted with
/// `{"deny": ["up.test/good"]}`, refuses all of them with 403 saying `pull of up.test/good` (`list
/// of` for tags), except a host-less blob, which is 404 and never the bytes; wharf's log and the
/// status page's recent denials name `up.test/good` every time, never `good` alone.
#[test]
fn access_plugins_and_the_denial_log_see_one_name_through_every_spelling() {
    let (registry, image) = upstream_with_good();
    let files = PluginFiles::new();
    let plugin = files.add("allow_list.wasm", &component("allow_list"));
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut wharf = Wharf::start(plugin_options(
        &registry,
        &metrics,
        &plugin,
        r#"{"allow": ["up.test/*"]}"#,
    ));
    let api = Api::new(wharf.base());
    let anonymous = Caller::anonymous();
    for (_, e, what, path) in matrix(&image) {
        let r = anonymous.read(&api, "GET", &path);
        assert_served(&r, e, &image, &format!("allowed: {what}: GET {path}"));
    }
    // The allow side is in force: a name it does not list is refused.
    let r = api.get_manifest("other/app", "v1");
    r.assert_error(403, "DENIED");
    assert_names(&r, "other/app is not in the allow list", "a local name");

    wharf.stop();
    *wharf.options_mut() = plugin_options(
        &registry,
        &metrics,
        &plugin,
        r#"{"deny": ["up.test/good"]}"#,
    );
    wharf.start_again();
    let api = Api::new(wharf.base());
    for (form, e, what, path) in matrix(&image) {
        let what = format!("denied: {what}: GET {path}");
        let r = anonymous.read(&api, "GET", &path);
        if form == HOST_LESS && e == Endpoint::Blob {
            r.assert_error(404, "BLOB_UNKNOWN");
        } else {
            r.assert_error(403, "DENIED");
            assert_names(
                &r,
                &format!("{} of {CANONICAL} denied by plugin gate", op(e)),
                &what,
            );
            assert_names(&r, &format!("{CANONICAL} is denied by rule"), &what);
        }
    }

    wait_for_log(
        &wharf,
        &["denied by plugin", &format!("list of {CANONICAL}")],
        std::time::Duration::from_secs(10),
    );
    let denials: Vec<String> = log_events(&wharf)
        .into_iter()
        .filter(|e| e.contains("denied by plugin") && e.contains("good"))
        .collect();
    assert!(
        !denials.is_empty()
            && denials
                .iter()
                .all(|e| e.contains(&format!("of {CANONICAL}"))),
        "every denial of `good` in wharf's log should name {CANONICAL}:\n{}",
        denials.join("\n")
    );
    let (_, _, html) = crate::status_page::get_page(&format!("http://{metrics}/ui"));
    let listed = crate::status_page::section(&html, "denials");
    for needle in [
        format!("pull of {CANONICAL}"),
        format!("list of {CANONICAL}"),
    ] {
        assert!(
            listed.contains(&needle),
            "the status page's recent denials should list {needle:?}:\n{listed}"
        );
    }
    assert!(
        !listed.contains("of good"),
        "a denial on the status page names `good` without its registry:\n{listed}"
    );
}

// ---- Real clients through the README's allow-list ----

/// The README's example access policy.
const README_ALLOW: &str = r#"{"allow": ["docker.io/library/*", "team/**"]}"#;

/// `registry` as docker.io (the stand-in for Docker Hub), the default upstream.
pub(crate) fn docker_hub(registry: &DistRegistry) -> MirrorOptions {
    MirrorOptions {
        default_upstream: Some("docker.io".into()),
        upstreams: vec![UpstreamSpec::http("docker.io", registry.addr())],
        ..Default::default()
    }
}

/// The README's setup: the allow-list as plugin `allow-list` in front of a docker.io stand-in that
/// holds the generated image as `library/single:v1` (allowed) and `someorg/app:v1` (not in the list).
struct ReadmeSetup {
    _registry: DistRegistry,
    layout: Layout,
    _files: PluginFiles,
    wharf: Wharf,
}

fn readme_setup(seed: u64) -> ReadmeSetup {
    let registry = DistRegistry::start();
    let files = PluginFiles::new();
    let entry = Entry::new(
        "allow-list",
        &files.add("allow_list.wasm", &component("allow_list")),
        README_ALLOW,
    );
    let wharf = Wharf::start(WharfOptions {
        mirror: docker_hub(&registry),
        extra_toml: entry.toml(),
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", seed));
    push_to_upstream(&registry, &layout, "library/single");
    push_to_upstream(&registry, &layout, "someorg/app");
    ReadmeSetup {
        _registry: registry,
        layout,
        _files: files,
        wharf,
    }
}

/// wharf's log shows the allow-list refusing `docker.io/someorg/app`.
fn assert_refusal_logged(wharf: &Wharf) {
    wait_for_log(
        wharf,
        &[
            "denied by plugin",
            "pull of docker.io/someorg/app",
            "docker.io/someorg/app is not in the allow list",
        ],
        std::time::Duration::from_secs(10),
    );
}

/// Proves: with the README's allow-list (`docker.io/library/*`), dockerd pulls `single:v1` through
/// wharf as its `registry-mirrors` mirror (it asks for `/v2/library/single/...`, which the allow-list
/// sees as `docker.io/library/single`) and gets the image of this machine's platform; `docker pull
/// someorg/app:v1`, outside the list, fails (dockerd shows only its fallback to Docker Hub, which
/// this network namespace cannot reach) and wharf's log says why: `docker.io/someorg/app is not in the
/// allow list`.
#[test]
fn docker_pulls_through_the_readme_allow_list_as_its_registry_mirror() {
    in_private_network("naming-docker-netns", || {
        let tools = DockerTools::find();
        let s = readme_setup(2310);
        let docker = Dockerd::start(tools, s.wharf.addr());
        docker.docker(&["pull", "single:v1"]);
        assert_eq!(
            docker.image_id("single:v1").as_deref(),
            Some(native_image(&s.layout.images).config.digest.as_str()),
            "dockerd pulled another image than the upstream's library/single:v1"
        );

        let r = docker.try_docker(&["pull", "someorg/app:v1"]);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(
            !r.status.success(),
            "docker pulled someorg/app, outside the allow list:\n{all}"
        );
        // dockerd falls back to Docker Hub when its mirror refuses, and reports only that.
        assert!(
            all.contains("registry-1.docker.io"),
            "docker reports its fallback to Docker Hub:\n{all}"
        );
        assert_refusal_logged(&s.wharf);
    });
}

/// A `registries.conf` that sends docker.io pulls to the mirror at `location`.
fn docker_io_mirror(location: &str) -> String {
    format!(
        "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n\
         [[registry.mirror]]\nlocation = \"{location}\"\ninsecure = true\n"
    )
}

/// Proves: with the README's allow-list, podman pulls `docker.io/library/single:v1` through a
/// registries.conf mirror with wharf's path prefix (`<wharf>/docker.io`) and through one without a
/// prefix (`<wharf>`: podman then sends the host-less name `library/single`, as dockerd does): both
/// are `docker.io/library/single` to the allow-list, and both give the upstream's image; a pull of
/// `docker.io/someorg/app:v1` is refused through either mirror, and podman shows wharf's reason.
#[test]
fn podman_pulls_through_the_readme_allow_list_with_registries_conf_mirrors() {
    in_private_network("naming-podman-netns", || {
        let s = readme_setup(2320);
        let w = s.wharf.host();
        let home = s.wharf.scratch("podman");
        let expected = oci::hex_part(&native_image(&s.layout.images).config.digest).to_owned();
        for (i, (how, location)) in [
            ("with the path prefix", format!("{w}/docker.io")),
            ("without a prefix", w.clone()),
        ]
        .into_iter()
        .enumerate()
        {
            let conf = home.join(format!("registries-{i}.conf"));
            fs::write(&conf, docker_io_mirror(&location)).unwrap();
            let podman = |args: &[&str]| {
                crate::tls_listener::podman(&home)
                    .env("CONTAINERS_REGISTRIES_CONF", &conf)
                    .args(args)
                    .output()
                    .expect("run podman")
            };
            let out = podman(&["pull", "docker.io/library/single:v1"]);
            assert!(
                out.status.success(),
                "podman pull through the mirror {how} ({location}) failed:\n{}",
                output_text(&out)
            );
            let out = podman(&[
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "docker.io/library/single:v1",
            ]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                expected,
                "podman pulled another image through the mirror {how}"
            );
            let out = podman(&["rmi", "--force", "docker.io/library/single:v1"]);
            assert!(out.status.success(), "podman rmi: {}", output_text(&out));

            let out = podman(&["pull", "docker.io/someorg/app:v1"]);
            assert!(
                !out.status.success(),
                "podman pulled someorg/app, outside the allow list, through the mirror {how}:\n{}",
                output_text(&out)
            );
            assert!(
                output_text(&out).contains("docker.io/someorg/app is not in the allow list"),
                "podman should show wharf's reason (through the mirror {how}):\n{}",
                output_text(&out)
            );
        }
        assert_refusal_logged(&s.wharf);
    });
}

/// Proves: with the README's allow-list, containerd pulls `docker.io/library/single:v1` through wharf
/// in each spelling: as a `hosts.toml` mirror (`?ns=docker.io`), by wharf's path prefix
/// (`<wharf>/docker.io/library/single:v1`) and host-less (`<wharf>/library/single:v1`), with the
/// upstream's index digest each time; `someorg/app:v1` is refused in each (ctr shows `403 Forbidden`).
#[test]
fn ctr_pulls_through_the_readme_allow_list_in_every_spelling() {
    in_private_network("naming-ctr-netns", || {
        let s = readme_setup(2330);
        let w = s.wharf.host();
        let hosts = s.wharf.scratch("certs.d");
        write_hosts_dir(&hosts, "docker.io", &w);
        let hosts_arg = hosts.to_str().unwrap().to_owned();
        let ctrd = Containerd::start();
        let pull = |reference: &str| {
            let mut args = vec![
                "images",
                "pull",
                "--snapshotter",
                "native",
                "--platform",
                "linux/amd64",
            ];
            if reference.starts_with("docker.io/") {
                args.extend(["--hosts-dir", &hosts_arg]);
            } else {
                args.push("--plain-http");
            }
            args.push(reference);
            ctrd.output(&args)
        };
        for (how, image, refused) in [
            (
                "hosts.toml (?ns=docker.io)",
                "docker.io/library/single:v1".to_owned(),
                "docker.io/someorg/app:v1".to_owned(),
            ),
            (
                "wharf's path prefix",
                format!("{w}/docker.io/library/single:v1"),
                format!("{w}/docker.io/someorg/app:v1"),
            ),
            (
                "the host-less name",
                format!("{w}/library/single:v1"),
                format!("{w}/someorg/app:v1"),
            ),
        ] {
            let out = pull(&image);
            assert!(
                out.status.success(),
                "ctr pull through {how} failed:\n{}",
                output_text(&out)
            );
            assert_eq!(ctrd.image_digest(&image), s.layout.index.digest, "{how}");
            let out = pull(&refused);
            assert!(
                !out.status.success(),
                "ctr pulled someorg/app, outside the allow list, through {how}:\n{}",
                output_text(&out)
            );
            assert!(
                output_text(&out).contains("403 Forbidden"),
                "ctr should report wharf's 403 through {how}:\n{}",
                output_text(&out)
            );
        }
        assert_refusal_logged(&s.wharf);
    });
}
