//! Pull from Docker Hub, re-tag, push to wharf (issue 23, bug 3): the everyday flow, with the image
//! pulled through wharf's mirror and pushed back to wharf under a host-less name, the one the mirror
//! serves Docker Hub's repository by. The client's blob `HEAD`s there answer for what the mirror
//! holds of that repository, and the manifest push links it, so the client uploads nothing it pulled;
//! for docker, podman, skopeo and containerd. A caller who may not pull the mirrored repository gets
//! no such answer, and must upload what it pushes.
//!
//! "docker.io" is a local `docker-registry` here; the docker and containerd tests, whose clients fall
//! back to Docker Hub when the mirror fails, run in a network namespace with only loopback.

use std::fs;

use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, Layout, LayoutSpec};
use crate::mirror::assert_cached_intact;
use crate::mirror::ctr::{write_hosts_dir, Containerd};
use crate::mirror::docker_daemon::{
    in_private_network, native_image, pushed_digest, DockerTools, Dockerd,
};
use crate::mirror::push_to_upstream;
use crate::naming::{docker_hub, toml_path, write_tokens, Caller};
use crate::oci::{self, sha256_digest};
use crate::skopeo::Skopeo;

const ALICE_TOKEN: &str = "alice-token-61d0a9b8";
const BOB_TOKEN: &str = "bob-token-0a7e44c1d";

/// A docker.io stand-in holding the generated image as `repo:v1`, and a wharf mirroring it as the
/// default upstream (no `[auth]`, no plugins).
fn hub_with(repo: &str, seed: u64) -> (DistRegistry, Wharf, Layout) {
    let registry = DistRegistry::start();
    let wharf = Wharf::start(WharfOptions {
        mirror: docker_hub(&registry),
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", seed));
    push_to_upstream(&registry, &layout, repo);
    (registry, wharf, layout)
}

/// wharf serves `repo:tag` as the whole generated index: its digest, every child manifest and every
/// blob, byte for byte.
fn assert_holds_index(api: &Api, repo: &str, tag: &str, layout: &Layout) {
    let r = api.get_manifest(repo, tag);
    r.assert_status(200);
    assert_eq!(
        sha256_digest(&r.body),
        layout.index.digest,
        "wharf's {repo}:{tag} is not the index that was pushed"
    );
    for img in &layout.images {
        let m = api.get_manifest(repo, &img.manifest.digest);
        m.assert_status(200);
        assert_eq!(sha256_digest(&m.body), img.manifest.digest);
        for b in std::iter::once(&img.config).chain(&img.layers) {
            api.assert_blob_intact(repo, &b.digest, b.size);
        }
    }
}

/// A single-platform manifest as `dir:` holds it (skopeo), checked against what the client pushed:
/// the manifest's digest, the config of this machine's platform, and every blob's bytes.
fn assert_pulled_back(dir: &std::path::Path, digest: &str, layout: &Layout) {
    let manifest = fs::read(dir.join("manifest.json")).expect("manifest.json in the dir: layout");
    assert_eq!(
        sha256_digest(&manifest),
        digest,
        "the manifest pulled back is not the one pushed"
    );
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        m["config"]["digest"],
        native_image(&layout.images).config.digest,
        "the image pulled back has another config: {m}"
    );
    let mut blobs = vec![m["config"].clone()];
    blobs.extend(m["layers"].as_array().cloned().unwrap_or_default());
    for b in &blobs {
        let d = b["digest"].as_str().expect("a descriptor digest");
        let bytes = fs::read(dir.join(oci::hex_part(d)))
            .unwrap_or_else(|e| panic!("{d} was not pulled back: {e}"));
        assert_eq!(sha256_digest(&bytes), d, "{d} pulled back with other bytes");
    }
}

/// skopeo copies `image` (a wharf reference) into a `dir:` layout, as pulled.
fn pull_into_dir(image: &str, dir: &std::path::Path) {
    let out = Skopeo::new().output(&[
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        &format!("docker://{image}"),
        &format!("dir:{}", dir.display()),
    ]);
    assert!(
        out.status.success(),
        "skopeo could not pull {image} back from wharf:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Proves: dockerd pulls `multi3:v1` through wharf as its registry mirror, re-tags it
/// `<wharf>/multi3:mine` and pushes it: every blob `HEAD` under the new name answers from what the
/// mirror holds ("Layer already exists"), the manifest push links those blobs, and `docker push`
/// succeeds; skopeo then pulls `<wharf>/multi3:mine` back with the digest docker printed, the
/// upstream image's config and every blob intact.
#[test]
fn docker_pulls_retags_and_pushes_to_wharf() {
    in_private_network("retag-docker-netns", || {
        let tools = DockerTools::find();
        let (_registry, wharf, layout) = hub_with("library/multi3", 2340);
        let docker = Dockerd::start(tools, wharf.addr());
        docker.docker(&["pull", "multi3:v1"]);
        let mine = format!("{}/multi3:mine", wharf.host());
        docker.docker(&["tag", "multi3:v1", &mine]);
        let printed = docker.docker(&["push", &mine]);
        let digest = pushed_digest(&printed, "mine");
        assert!(
            printed.contains("Layer already exists"),
            "docker should find the layers it pulled through the mirror under the new name:\n{printed}"
        );
        let out = wharf.scratch("pulled");
        pull_into_dir(&mine, &out);
        assert_pulled_back(&out, &digest, &layout);
    });
}

/// Proves: podman pulls `<wharf>/docker.io/library/multi:v1` (the mirror by path prefix), re-tags it
/// `<wharf>/library/multi:mine` and pushes it, and skopeo pulls that back with the digest podman
/// wrote, the upstream image's config and every blob intact.
#[test]
fn podman_pulls_retags_and_pushes_to_wharf() {
    let (_registry, wharf, layout) = hub_with("library/multi", 2350);
    let w = wharf.host();
    let home = wharf.scratch("podman");
    let podman = |args: &[&str]| {
        let out = crate::tls_listener::podman(&home)
            .args(args)
            .output()
            .expect("run podman");
        assert!(
            out.status.success(),
            "podman {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pulled = format!("{w}/docker.io/library/multi:v1");
    let mine = format!("{w}/library/multi:mine");
    podman(&["pull", "--tls-verify=false", &pulled]);
    podman(&["tag", &pulled, &mine]);
    let digest_file = wharf.scratch("digest").join("mine");
    podman(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        digest_file.to_str().unwrap(),
        &mine,
    ]);
    let digest = fs::read_to_string(&digest_file).unwrap().trim().to_owned();
    let out = wharf.scratch("pulled");
    pull_into_dir(&mine, &out);
    assert_pulled_back(&out, &digest, &layout);
}

/// Proves: skopeo pulls `<wharf>/docker.io/library/multi:v1` (all platforms), then copies it from
/// there to `<wharf>/library/multi:mine`; wharf then serves `library/multi:mine` as the upstream's
/// index, with every child manifest and blob.
#[test]
fn skopeo_copies_a_mirrored_image_to_a_local_name() {
    let (_registry, wharf, layout) = hub_with("library/multi", 2355);
    let w = wharf.host();
    let skopeo = Skopeo::new();
    let pulled = wharf.scratch("pulled");
    skopeo.copy(
        &format!("docker://{w}/docker.io/library/multi:v1"),
        &format!("oci:{}:v1", pulled.display()),
    );
    skopeo.copy(
        &format!("docker://{w}/docker.io/library/multi:v1"),
        &format!("docker://{w}/library/multi:mine"),
    );
    assert_holds_index(&Api::new(wharf.base()), "library/multi", "mine", &layout);
}

/// Proves: containerd pulls `docker.io/library/multi:v1` (all platforms) through wharf as its
/// `hosts.toml` mirror, re-tags it `<wharf>/library/multi:mine` and pushes it (`--plain-http`):
/// its blob and child-manifest `HEAD`s under the new name answer from the mirror, the index push links
/// them, and wharf then serves `library/multi:mine` as the upstream's index, every child and blob.
#[test]
fn ctr_pulls_retags_and_pushes_to_wharf() {
    in_private_network("retag-ctr-netns", || {
        let (_registry, wharf, layout) = hub_with("library/multi", 2358);
        let w = wharf.host();
        let hosts = wharf.scratch("certs.d");
        write_hosts_dir(&hosts, "docker.io", &w);
        let ctrd = Containerd::start();
        ctrd.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--all-platforms",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            "docker.io/library/multi:v1",
        ]);
        let mine = format!("{w}/library/multi:mine");
        ctrd.ctr(&["images", "tag", "docker.io/library/multi:v1", &mine]);
        ctrd.ctr(&["images", "push", "--plain-http", &mine]);
        // A containerd with an empty content store pulls it back from wharf.
        let puller = Containerd::start();
        let out = puller.output(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--plain-http",
            "--platform",
            "linux/amd64",
            &mine,
        ]);
        assert!(
            out.status.success(),
            "a fresh containerd could not pull {mine} back from wharf:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(puller.image_digest(&mine), layout.index.digest);
        assert_holds_index(&Api::new(wharf.base()), "library/multi", "mine", &layout);
    });
}

/// Proves: a caller who may push `library/...` but may not pull `docker.io/...` (bob) learns nothing
/// of what the mirror holds for `docker.io/library/multi`: under the host-less name `library/multi`
/// a blob the mirror holds is `404` to him (to alice, who may pull there, it is 200) and the
/// manifest is 403 naming `docker.io/library/multi`; his push of a manifest naming those blobs,
/// without uploading them, is refused with `MANIFEST_BLOB_UNKNOWN`; once he uploads them it is stored.
#[test]
fn a_caller_who_may_not_pull_the_mirrored_repository_uploads_what_it_pushes() {
    let registry = DistRegistry::start();
    let files = tempfile::tempdir().unwrap();
    let tokens = write_tokens(files.path(), &[(ALICE_TOKEN, "alice"), (BOB_TOKEN, "bob")]);
    let wharf = Wharf::start(WharfOptions {
        mirror: docker_hub(&registry),
        extra_toml: format!(
            "\n[auth]\ntokens_file = {}\n\n\
             [[auth.rule]]\nprefix = \"docker.io\"\npull = [\"alice\"]\npush = []\n\n\
             [[auth.rule]]\nprefix = \"library\"\npull = [\"bob\"]\npush = [\"bob\"]\n",
            toml_path(&tokens)
        ),
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 2365));
    push_to_upstream(&registry, &layout, "library/multi");
    let api = Api::new(wharf.base());
    let alice = Caller::token("alice", ALICE_TOKEN);
    let bob = Caller::token("bob", BOB_TOKEN);
    let image = native_image(&layout.images);
    let blobs: Vec<_> = std::iter::once(&image.config)
        .chain(&image.layers)
        .collect();

    // alice pulls one platform through the mirror: now it holds those blobs.
    let mirrored = "/v2/docker.io/library/multi";
    alice
        .read(&api, "GET", &format!("{mirrored}/manifests/v1"))
        .assert_status(200);
    alice
        .read(
            &api,
            "GET",
            &format!("{mirrored}/manifests/{}", image.manifest.digest),
        )
        .assert_status(200);
    for b in &blobs {
        alice
            .read(&api, "GET", &format!("{mirrored}/blobs/{}", b.digest))
            .assert_status(200);
        assert_cached_intact(&wharf, &b.digest);
    }
    let layer = format!("/v2/library/multi/blobs/{}", image.layers[0].digest);
    alice.read(&api, "HEAD", &layer).assert_status(200);

    bob.read(&api, "HEAD", &layer).assert_status(404);
    bob.read(&api, "GET", &layer)
        .assert_error(404, "BLOB_UNKNOWN");
    let r = bob.read(&api, "GET", "/v2/library/multi/manifests/v1");
    r.assert_error(403, "DENIED");
    assert!(
        String::from_utf8_lossy(&r.body).contains("bob may not pull docker.io/library/multi"),
        "{}",
        r.describe()
    );

    let manifest = fs::read(layout.blob_path(&image.manifest.digest)).unwrap();
    let put = |who: &Caller| {
        who.request(
            &api,
            "PUT",
            "/v2/library/multi/manifests/bobs",
            &[("Content-Type", oci::OCI_MANIFEST)],
            Some(&manifest),
        )
    };
    put(&bob).assert_error(404, "MANIFEST_BLOB_UNKNOWN");
    for b in &blobs {
        let bytes = fs::read(layout.blob_path(&b.digest)).unwrap();
        assert_eq!(bob.push_blob(&api, "library/multi", &bytes), b.digest);
    }
    let r = put(&bob);
    r.assert_status(201);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(image.manifest.digest.as_str())
    );
    let r = bob.read(&api, "GET", "/v2/library/multi/manifests/bobs");
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), image.manifest.digest);
}

/// Proves: `wharf export` of `docker.io/library/multi:v1` (all platforms, through the mirror), then
/// `wharf import` of that archive without `--tag`, stores it as wharf's own `library/multi:v1` (the
/// name the archive gives it, without the registry host): the import's blob `HEAD`s under that name
/// answer from the mirror, and its manifest pushes link those blobs; wharf then serves the whole
/// index there.
#[test]
fn import_without_a_tag_of_an_archive_exported_from_the_mirror() {
    let (_registry, wharf, layout) = hub_with("library/multi", 2380);
    let file = wharf.scratch("export").join("multi.tar");
    let file = file.to_str().unwrap();
    let wharf_cli = |args: &[&str]| {
        let out = crate::gc::cli_command(&wharf, args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run wharf");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "wharf {} failed ({}):\n{printed}",
            args.join(" "),
            out.status
        );
        printed
    };
    wharf_cli(&["export", "docker.io/library/multi:v1", "-o", file]);
    let printed = wharf_cli(&["import", file]);
    assert!(
        printed.contains(&format!(
            "imported library/multi:v1 ({})",
            layout.index.digest
        )),
        "the import names what it stored: {printed}"
    );
    assert_holds_index(&Api::new(wharf.base()), "library/multi", "v1", &layout);
}
