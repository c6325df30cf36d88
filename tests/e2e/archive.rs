//! `wharf export`, `wharf import` and `wharf images pull` (issue 15) against real peers: a
//! 3-platform image (linux/amd64, linux/arm64, linux/arm/v7) on a real `docker-registry` upstream,
//! the archives read back by skopeo (`oci-archive:`), containerd (`ctr images import`) and a fresh
//! wharf. The upstream's access log is the witness that a platform not chosen is never fetched (the
//! `nerdctl save` bug fetched every platform to save one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::harness::{log_tail, Wharf, WharfOptions};
use crate::http::Api;
use crate::mirror::ctr::Containerd;
use crate::mirror::platforms::setup;
use crate::oci::sha256_digest;
use crate::skopeo::Skopeo;

const REPO: &str = "team/multi";
const REDUCED_FROM: &str = "dev.wharf.reduced-from";

/// Runs `wharf ARGS --config <wharf's config>`, with no WHARF_* from the caller's shell.
fn wharf_cli(wharf: &Wharf, args: &[&str]) -> Output {
    crate::gc::cli_command(wharf, args)
        .stdin(Stdio::null())
        .output()
        .expect("run wharf")
}

/// `wharf_cli` that must succeed; returns stdout.
fn wharf_ok(wharf: &Wharf, args: &[&str]) -> String {
    let out = wharf_cli(wharf, args);
    assert!(
        out.status.success(),
        "wharf {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server log ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log_tail(&wharf.log_path(), 30)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The regular files of a (small) tar, by name.
struct Archive {
    files: BTreeMap<String, Vec<u8>>,
}

fn read_archive(path: &Path) -> Archive {
    let mut files = BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
    for entry in tar.entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.insert(name.trim_start_matches("./").to_owned(), bytes);
    }
    Archive { files }
}

impl Archive {
    fn index_json(&self) -> Value {
        serde_json::from_slice(self.files.get("index.json").expect("index.json")).unwrap()
    }

    /// The digest index.json points at.
    fn top(&self) -> String {
        self.index_json()["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn blob(&self, digest: &str) -> &[u8] {
        let name = format!("blobs/sha256/{}", crate::oci::hex_part(digest));
        self.files
            .get(&name)
            .unwrap_or_else(|| panic!("the archive has no {name}"))
    }

    /// Every blob's name, checked against its bytes' digest.
    fn verified_blobs(&self) -> BTreeSet<String> {
        assert_eq!(
            self.files
                .get("oci-layout")
                .map(|b| serde_json::from_slice::<Value>(b).unwrap()),
            Some(serde_json::json!({"imageLayoutVersion": "1.0.0"})),
            "oci-layout"
        );
        self.files
            .iter()
            .filter_map(|(name, bytes)| {
                let hex = name.strip_prefix("blobs/sha256/")?;
                let d = format!("sha256:{hex}");
                assert_eq!(sha256_digest(bytes), d, "{name} does not hash to its name");
                Some(d)
            })
            .collect()
    }
}

/// `wharf export` of linux/amd64 from a cold cache: the upstream is asked for amd64 content only;
/// the archive holds the original index (same bytes and digest) and the amd64 image, nothing else;
/// skopeo and containerd accept it; a fresh wharf imports it with every digest kept.
#[test]
fn export_of_one_platform_fetches_only_it_and_peers_accept_the_archive() {
    let s = setup(1501, &[], |_| String::new());
    let file = s.wharf.scratch("export").join("multi.tar");
    let printed = wharf_ok(
        &s.wharf,
        &[
            "export",
            &s.reference(),
            "-o",
            file.to_str().unwrap(),
            "--platform",
            "linux/amd64",
        ],
    );
    assert!(printed.contains("linux/amd64"), "report: {printed}");
    s.assert_fetched("amd64");
    s.assert_never_requested("arm64");
    s.assert_never_requested("arm");

    let a = read_archive(&file);
    assert_eq!(
        a.verified_blobs(),
        s.closure("amd64"),
        "what the archive holds"
    );
    assert_eq!(
        a.top(),
        s.layout.index.digest,
        "index.json names the original index"
    );
    assert_eq!(a.blob(&s.layout.index.digest), s.index_bytes().as_slice());
    let notes = &a.index_json()["manifests"][0]["annotations"];
    assert_eq!(notes["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(notes["io.containerd.image.name"], s.reference());
    assert!(!file.with_extension("tar.partial").exists());

    // skopeo: the archive's index as is, and the amd64 image copied out of it.
    let skopeo = Skopeo::new();
    let archive_ref = format!("oci-archive:{}", file.display());
    let raw = skopeo.output(&["inspect", "--raw", &archive_ref]);
    assert!(
        raw.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        raw.stdout,
        s.index_bytes(),
        "skopeo reads the original index"
    );
    let dir = s.wharf.scratch("skopeo-dir");
    let copy = skopeo.output(&[
        "copy",
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        &archive_ref,
        &format!("dir:{}", dir.display()),
    ]);
    assert!(
        copy.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let amd = s.image("amd64");
    assert_eq!(
        sha256_digest(&std::fs::read(dir.join("manifest.json")).unwrap()),
        amd.manifest.digest
    );

    // containerd: imports and unpacks it (unpacking checks every layer against the config).
    let ctr = Containerd::start();
    ctr.ctr(&[
        "images",
        "import",
        "--platform",
        "linux/amd64",
        "--snapshotter",
        "native",
        file.to_str().unwrap(),
    ]);
    assert_eq!(ctr.image_digest(&s.reference()), s.layout.index.digest);
    assert_eq!(
        sha256_digest(&ctr.content(&amd.manifest.digest)),
        amd.manifest.digest
    );

    // A fresh wharf: the index is sparse, so it is stored reduced to the image present; the image
    // and its blobs keep the upstream's digests.
    let fresh = Wharf::start(WharfOptions::default());
    let printed = wharf_ok(
        &fresh,
        &["import", file.to_str().unwrap(), "--tag", "team/copy:v1"],
    );
    assert!(
        printed.contains("sparse"),
        "the import says the index was sparse: {printed}"
    );
    let api = Api::new(fresh.base());
    let m = api.get_manifest("team/copy", &amd.manifest.digest);
    m.assert_status(200);
    assert_eq!(sha256_digest(&m.body), amd.manifest.digest);
    api.assert_blob_intact("team/copy", &amd.config.digest, amd.config.size);
    for l in &amd.layers {
        api.assert_blob_intact("team/copy", &l.digest, l.size);
    }
    let tag = api.get_manifest("team/copy", "v1");
    tag.assert_status(200);
    let index = tag.json();
    assert_eq!(index["annotations"][REDUCED_FROM], s.layout.index.digest);
    let children: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(children, [amd.manifest.digest.as_str()]);
}

/// `--reduced`: index.json names an index listing only the chosen platform, annotated with the
/// original's digest; its digest verifies, and a fresh wharf imports it under that same digest.
#[test]
fn export_reduced_names_an_index_of_the_chosen_platform_only() {
    let s = setup(1502, &[], |_| String::new());
    let file = s.wharf.scratch("export").join("arm64.tar");
    wharf_ok(
        &s.wharf,
        &[
            "export",
            &format!("up/{REPO}:v1"),
            "-o",
            file.to_str().unwrap(),
            "--platform",
            "linux/arm64",
            "--reduced",
        ],
    );
    s.assert_never_requested("amd64");
    s.assert_never_requested("arm");

    let a = read_archive(&file);
    let blobs = a.verified_blobs();
    let top = a.top();
    assert_ne!(
        top, s.layout.index.digest,
        "a reduced index has a digest of its own"
    );
    let reduced: Value = serde_json::from_slice(a.blob(&top)).unwrap();
    assert_eq!(reduced["annotations"][REDUCED_FROM], s.layout.index.digest);
    let arm = s.image("arm64");
    let listed: Vec<(String, String)> = reduced["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["digest"].as_str().unwrap().to_owned(),
                e["platform"]["architecture"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, [(arm.manifest.digest.clone(), "arm64".to_owned())]);
    let mut expected = s.closure("arm64");
    expected.remove(&s.layout.index.digest);
    expected.insert(top.clone());
    assert_eq!(
        blobs, expected,
        "the reduced archive holds the reduced index, not the original"
    );
    assert_eq!(
        a.index_json()["manifests"][0]["annotations"][REDUCED_FROM],
        s.layout.index.digest
    );

    let skopeo = Skopeo::new();
    let raw = skopeo.output(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", file.display()),
    ]);
    assert!(
        raw.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(sha256_digest(&raw.stdout), top);

    let fresh = Wharf::start(WharfOptions::default());
    wharf_ok(
        &fresh,
        &["import", file.to_str().unwrap(), "--tag", "team/arm:v1"],
    );
    let api = Api::new(fresh.base());
    let tag = api.get_manifest("team/arm", "v1");
    tag.assert_status(200);
    assert_eq!(
        sha256_digest(&tag.body),
        top,
        "the import keeps the reduced index's digest"
    );
    for d in &expected {
        if *d == top || *d == arm.manifest.digest {
            continue;
        }
        let size = a.blob(d).len() as u64;
        api.assert_blob_intact("team/arm", d, size);
    }
}

/// Without `--platform` the mirror's policy decides (here `[mirror] platforms = ["linux/arm/v7"]`),
/// and with no wharf serving the configured address, export starts one in-process on the same data
/// dir; a full export of a complete image then imports with every digest the upstream has,
/// the index's included.
#[test]
fn export_follows_the_mirror_policy_without_a_server_and_a_full_archive_round_trips() {
    let mut s = setup(1503, &[r#"platforms = ["linux/arm/v7"]"#], |_| {
        String::new()
    });
    s.wharf.stop();
    let file = s.wharf.scratch("export").join("armv7.tar");
    let printed = wharf_ok(
        &s.wharf,
        &["export", &s.reference(), "-o", file.to_str().unwrap()],
    );
    assert!(printed.contains("linux/arm/v7"), "report: {printed}");
    s.assert_fetched("arm");
    s.assert_never_requested("amd64");
    s.assert_never_requested("arm64");
    let a = read_archive(&file);
    assert_eq!(a.verified_blobs(), s.closure("arm"));
    assert_eq!(a.top(), s.layout.index.digest);

    // Every platform, from a wharf with no platform policy: the whole image, index digest and all.
    let full = setup(1504, &[], |_| String::new());
    let file = full.wharf.scratch("export").join("all.tar");
    wharf_ok(
        &full.wharf,
        &["export", &full.reference(), "-o", file.to_str().unwrap()],
    );
    let a = read_archive(&file);
    assert_eq!(a.verified_blobs(), full.layout.all_digests());
    let fresh = Wharf::start(WharfOptions::default());
    // The archive's own name (the upstream host dropped: the copy is wharf's own repository).
    wharf_ok(&fresh, &["import", file.to_str().unwrap()]);
    let api = Api::new(fresh.base());
    let tag = api.get_manifest(REPO, "v1");
    tag.assert_status(200);
    assert_eq!(sha256_digest(&tag.body), full.layout.index.digest);
    for img in &full.layout.images {
        let m = api.get_manifest(REPO, &img.manifest.digest);
        m.assert_status(200);
        assert_eq!(sha256_digest(&m.body), img.manifest.digest);
        api.assert_blob_intact(REPO, &img.config.digest, img.config.size);
        for l in &img.layers {
            api.assert_blob_intact(REPO, &l.digest, l.size);
        }
    }
}

/// `wharf images pull` fills the cache with the chosen platform only; then, with the upstream
/// stopped, a client pulls that platform from wharf.
#[test]
fn images_pull_warms_the_cache_for_a_pull_without_the_upstream() {
    let mut s = setup(1505, &[], |_| String::new());
    let printed = wharf_ok(
        &s.wharf,
        &[
            "images",
            "pull",
            &s.reference(),
            "--platform",
            "linux/amd64",
        ],
    );
    let amd = s.image("amd64").clone();
    let bytes: u64 = amd.config.size + amd.layers.iter().map(|l| l.size).sum::<u64>();
    assert!(
        printed.contains("linux/amd64")
            && printed.contains(&format!("{} blobs", amd.layers.len() + 1)),
        "the report names the platform and the blobs: {printed}"
    );
    assert!(bytes > 0);
    s.assert_fetched("amd64");
    s.assert_never_requested("arm64");
    s.assert_never_requested("arm");

    s.registry.stop();
    let dir = s.wharf.scratch("pulled");
    let copy = Skopeo::new().output(&[
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        &format!("docker://{}/up/{REPO}:v1", s.wharf.host()),
        &format!("dir:{}", dir.display()),
    ]);
    assert!(
        copy.status.success(),
        "skopeo copy through wharf with the upstream stopped: {}\n--- wharf log ---\n{}",
        String::from_utf8_lossy(&copy.stderr),
        log_tail(&s.wharf.log_path(), 30)
    );
    assert_eq!(
        sha256_digest(&std::fs::read(dir.join("manifest.json")).unwrap()),
        amd.manifest.digest
    );
    for l in &amd.layers {
        let got = std::fs::read(dir.join(crate::oci::hex_part(&l.digest))).unwrap();
        assert_eq!(sha256_digest(&got), l.digest);
    }
}

/// `wharf import` takes the OCI archives other tools write: skopeo's `oci-archive` (which names the
/// image by tag only, so `--tag` gives the repository) and `ctr images export` (which names it in
/// full); every digest is kept, the index's included.
#[test]
fn import_accepts_skopeo_and_ctr_archives_with_every_digest() {
    let s = setup(1506, &[], |_| String::new());
    let fresh = Wharf::start(WharfOptions::default());
    let api = Api::new(fresh.base());
    let assert_whole_image = |repo: &str| {
        let tag = api.get_manifest(repo, "v1");
        tag.assert_status(200);
        assert_eq!(sha256_digest(&tag.body), s.layout.index.digest, "{repo}:v1");
        for img in &s.layout.images {
            let m = api.get_manifest(repo, &img.manifest.digest);
            m.assert_status(200);
            assert_eq!(sha256_digest(&m.body), img.manifest.digest);
            api.assert_blob_intact(repo, &img.config.digest, img.config.size);
            for l in &img.layers {
                api.assert_blob_intact(repo, &l.digest, l.size);
            }
        }
    };

    let skopeo_tar = s.wharf.scratch("skopeo").join("multi.tar");
    Skopeo::new().copy(
        &s.layout.skopeo_ref(),
        &format!("oci-archive:{}:v1", skopeo_tar.display()),
    );
    let refused = wharf_cli(&fresh, &["import", skopeo_tar.to_str().unwrap()]);
    assert!(!refused.status.success(), "a tag-only name needs --tag");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--tag"), "the refusal names the fix: {said}");
    wharf_ok(
        &fresh,
        &[
            "import",
            skopeo_tar.to_str().unwrap(),
            "--tag",
            "team/from-skopeo",
        ],
    );
    assert_whole_image("team/from-skopeo");

    // ctr: the image loaded from a full wharf export, exported again by containerd.
    let full = s.wharf.scratch("export").join("all.tar");
    wharf_ok(
        &s.wharf,
        &["export", &s.reference(), "-o", full.to_str().unwrap()],
    );
    let ctr = Containerd::start();
    ctr.ctr(&[
        "images",
        "import",
        "--all-platforms",
        "--no-unpack",
        full.to_str().unwrap(),
    ]);
    let ctr_tar = s.wharf.scratch("ctr").join("multi.tar");
    ctr.ctr(&[
        "images",
        "export",
        "--all-platforms",
        ctr_tar.to_str().unwrap(),
        &s.reference(),
    ]);
    // Named in full by containerd; the upstream host is dropped, the copy is wharf's own.
    wharf_ok(&fresh, &["import", ctr_tar.to_str().unwrap()]);
    assert_whole_image(REPO);
}

/// With `platform_mode = "rewritten"` the tag serves wharf's reduced index; an export still starts
/// from the original (retrievable by its digest), and `--reduced` of the same choice is byte for
/// byte the index wharf serves: one reduction, whoever makes it.
#[test]
fn export_from_a_rewritten_mirror_keeps_the_original_and_reduces_as_wharf_does() {
    let s = setup(
        1507,
        &[
            r#"platforms = ["linux/amd64"]"#,
            r#"platform_mode = "rewritten""#,
        ],
        |_| String::new(),
    );
    let api = Api::new(s.wharf.base());
    let served = api.request(
        "GET",
        &format!("/v2/up/{REPO}/manifests/v1"),
        &[("Accept", &crate::http::all_manifest_types())],
        None,
    );
    served.assert_status(200);
    let served_digest = sha256_digest(&served.body);
    assert_ne!(
        served_digest, s.layout.index.digest,
        "the tag serves a reduced index"
    );

    let dir = s.wharf.scratch("export");
    let sparse = dir.join("sparse.tar");
    wharf_ok(
        &s.wharf,
        &["export", &s.reference(), "-o", sparse.to_str().unwrap()],
    );
    let a = read_archive(&sparse);
    assert_eq!(
        a.top(),
        s.layout.index.digest,
        "the original index, not the served one"
    );
    assert_eq!(a.verified_blobs(), s.closure("amd64"));

    let reduced = dir.join("reduced.tar");
    wharf_ok(
        &s.wharf,
        &[
            "export",
            &s.reference(),
            "-o",
            reduced.to_str().unwrap(),
            "--reduced",
        ],
    );
    let a = read_archive(&reduced);
    a.verified_blobs();
    assert_eq!(
        a.top(),
        served_digest,
        "--reduced is the index wharf serves"
    );
    assert_eq!(a.blob(&served_digest), served.body.as_slice());
    s.assert_never_requested("arm64");
    s.assert_never_requested("arm");
}

/// The archive commands reach a running wharf through its admin socket, not its network listener:
/// with the listener on TLS and `anonymous_pull = false` (no credential given to the commands),
/// `images pull`, `export` and `import` still work, as the operator who owns the data directory.
/// (A wharf started by the command instead would fail: the running server holds the metadata lock.)
#[test]
fn archive_commands_work_with_a_tls_listener_that_wants_credentials() {
    let mut s = setup(1530, &[], |_| {
        let dir = tempfile::tempdir().unwrap().keep();
        let ca = crate::mirror::pki::TestCa::new(&dir.join("ca"), "archive-tls");
        let (cert, key) = ca.server_cert(&dir.join("issued"));
        let htpasswd = dir.join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("alice:{}\n", bcrypt::hash("alice-pw-archive", 4).unwrap()),
        )
        .unwrap();
        format!(
            "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[auth]\nhtpasswd_file = \"{}\"\nanonymous_pull = false\n",
            cert.display(),
            key.display(),
            htpasswd.display()
        )
    });
    // The network listener refuses an anonymous pull (and speaks TLS only).
    let denied = Skopeo::new().output(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--retry-times=0",
        &format!("docker://{}/up/{REPO}:v1", s.wharf.host()),
    ]);
    assert!(!denied.status.success(), "an anonymous pull is refused");

    let printed = wharf_ok(
        &s.wharf,
        &[
            "images",
            "pull",
            &s.reference(),
            "--platform",
            "linux/amd64",
        ],
    );
    assert!(printed.contains("linux/amd64"), "report: {printed}");
    s.assert_fetched("amd64");

    let file = s.wharf.scratch("export").join("amd64.tar");
    wharf_ok(
        &s.wharf,
        &[
            "export",
            &s.reference(),
            "-o",
            file.to_str().unwrap(),
            "--platform",
            "linux/amd64",
        ],
    );
    assert_eq!(read_archive(&file).top(), s.layout.index.digest);

    wharf_ok(
        &s.wharf,
        &[
            "import",
            file.to_str().unwrap(),
            "--tag",
            "team/imported:v1",
        ],
    );
    let listed = wharf_ok(&s.wharf, &["images", "--json"]);
    assert!(
        listed.contains("team/imported"),
        "the import is in the running wharf's store: {listed}"
    );
    // The requests through the socket are in the running wharf's log, as the listener's are (the
    // log is written in batches: wait for it).
    crate::plugins::wait_for_log(
        &s.wharf,
        &[
            "admin.sock",
            "method=PUT",
            "/v2/team/imported/manifests/v1",
            "status=201",
        ],
        std::time::Duration::from_secs(10),
    );
    s.registry.stop();
}

/// The upstream copy of the test image with gzip layers (as images on registries have them): skopeo
/// compresses the layout's plain tar layers when it copies them to another OCI layout (a push would
/// mount the plain ones the upstream already has), so the configs, and their `rootfs.diff_ids` (the
/// plain tars' digests), stay the layout's.
fn push_gzip_copy(s: &crate::mirror::platforms::Setup, repo: &str) {
    let gz = s.wharf.scratch("gzip-layout");
    let skopeo = Skopeo::new();
    let out = skopeo.output(&[
        "copy",
        "--all",
        &s.layout.skopeo_ref(),
        &format!("oci:{}:v1", gz.display()),
    ]);
    assert!(
        out.status.success(),
        "skopeo copy to a compressed layout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    skopeo.copy(
        &format!("oci:{}:v1", gz.display()),
        &format!("docker://{}/{repo}:v1", s.registry.host()),
    );
}

/// The upstream's `arch` manifest of `repo:v1`, as JSON.
fn upstream_manifest(s: &crate::mirror::platforms::Setup, repo: &str, arch: &str) -> Value {
    let skopeo = Skopeo::new();
    let at = |r: &str| {
        let raw = skopeo.inspect_raw(&format!("docker://{}/{repo}{r}", s.registry.host()));
        serde_json::from_slice::<Value>(&raw).unwrap()
    };
    let index = at(":v1");
    let child = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} in {index}"));
    at(&format!("@{}", child["digest"].as_str().unwrap()))
}

/// Proves: `wharf export --format docker` writes what `docker load` reads (issue 23, bug 8): a
/// multi-platform image with gzip layers needs `--platform` (refused before any blob is fetched,
/// no file left), then one platform is written as `manifest.json` + `repositories` + its config and
/// compressed layers under their digests; dockerd 20.10 (Debian's) loads it with the config digest as
/// image ID, the tag as RepoTags and the config's diff IDs as its layers, and so do podman, skopeo
/// (`docker-archive:`) and `ctr images import`; podman loads the OCI export as well, and `wharf
/// import` refuses the docker one saying how to convert it.
#[test]
fn export_docker_format_loads_in_dockerd_and_podman() {
    crate::mirror::docker_daemon::in_private_network("export-docker", export_docker_format);
}

fn export_docker_format() {
    let tools = crate::mirror::docker_daemon::DockerTools::find();
    let s = setup(1508, &[], |_| String::new());
    push_gzip_copy(&s, "team/gz");
    let pushed = s.registry.access_log().len();
    let manifest = upstream_manifest(&s, "team/gz", "amd64");
    let amd = s.image("amd64").clone();
    assert_eq!(
        manifest["config"]["digest"], amd.config.digest,
        "skopeo kept the config"
    );
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(
                l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
                "skopeo compressed the layers: {manifest}"
            );
            l["digest"].as_str().unwrap().to_owned()
        })
        .collect();
    let diff_ids: Vec<&str> = amd.layers.iter().map(|l| l.digest.as_str()).collect();
    let reference = format!("{}/team/gz:v1", s.registry.host());
    let file = s.wharf.scratch("export").join("gz-docker.tar");
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export",
            reference.as_str(),
            "-o",
            file.to_str().unwrap(),
            "--format",
            "docker",
        ];
        args.extend_from_slice(extra);
        wharf_cli(&s.wharf, &args)
    };

    // Three platforms and no platform policy: which one?
    let refused = export(&[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("a docker archive holds one image"),
        "{said}"
    );
    assert!(
        said.contains("linux/amd64") && said.contains("--platform"),
        "the refusal names the platforms and the fix: {said}"
    );
    assert!(!file.exists() && !file.with_extension("tar.partial").exists());
    let blob_gets: Vec<String> = s.registry.access_log()[pushed..]
        .iter()
        .filter(|l| l.contains("/blobs/"))
        .cloned()
        .collect();
    assert!(
        blob_gets.is_empty(),
        "no blob is fetched for a refused export: {blob_gets:#?}"
    );

    let printed = export(&["--platform", "linux/amd64"]);
    assert!(
        printed.status.success(),
        "wharf export --format docker failed: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let report = String::from_utf8_lossy(&printed.stdout);
    assert!(
        report.contains(&format!(
            "docker image {}, tagged {reference}",
            amd.config.digest
        )),
        "report: {report}"
    );
    let a = read_archive(&file);
    let blob = |d: &str| format!("blobs/sha256/{}", crate::oci::hex_part(d));
    let mut names: BTreeSet<String> = layers.iter().map(|l| blob(l)).collect();
    names.insert(blob(&amd.config.digest));
    names.insert("manifest.json".into());
    names.insert("repositories".into());
    assert_eq!(
        a.files.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "a docker archive holds its config and layers, no manifest, no OCI layout"
    );
    for (name, bytes) in &a.files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"), "{name}");
        }
    }
    let listed: Value = serde_json::from_slice(&a.files["manifest.json"]).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{
            "Config": blob(&amd.config.digest),
            "RepoTags": [reference],
            "Layers": layers.iter().map(|l| blob(l)).collect::<Vec<_>>(),
        }])
    );

    // dockerd 20.10: `docker load` needs no registry.
    let docker = crate::mirror::docker_daemon::Dockerd::start(tools, s.wharf.addr());
    let loaded = docker.docker(&["load", "-i", file.to_str().unwrap()]);
    assert!(
        loaded.contains(&format!("Loaded image: {reference}")),
        "{loaded}"
    );
    let inspect = |format: &str| {
        docker
            .docker(&["image", "inspect", "--format", format, &reference])
            .trim()
            .to_owned()
    };
    assert_eq!(inspect("{{.Id}}"), amd.config.digest, "the image ID");
    assert_eq!(
        serde_json::from_str::<Value>(&inspect("{{json .RepoTags}}")).unwrap(),
        serde_json::json!([reference])
    );
    assert_eq!(
        serde_json::from_str::<Value>(&inspect("{{json .RootFS.Layers}}")).unwrap(),
        serde_json::json!(diff_ids),
        "dockerd's layers are the config's diff IDs (the gzip layers, decompressed)"
    );
    drop(docker);

    // podman (containers/image's docker-archive reader).
    let home = s.wharf.scratch("podman");
    let podman = |args: &[&str]| {
        let out = crate::tls_listener::podman(&home)
            .args(args)
            .output()
            .expect("run podman");
        assert!(
            out.status.success(),
            "podman {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    podman(&["load", "-i", file.to_str().unwrap()]);
    assert_eq!(
        podman(&["image", "inspect", "--format", "{{.Id}}", &reference]),
        crate::oci::hex_part(&amd.config.digest)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&podman(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            &reference
        ]))
        .unwrap(),
        serde_json::json!(diff_ids)
    );

    // podman loads the OCI layout of the same platform too (docker 20.10 cannot, hence the format).
    let oci = s.wharf.scratch("export").join("gz-oci.tar");
    wharf_ok(
        &s.wharf,
        &[
            "export",
            &reference,
            "-o",
            oci.to_str().unwrap(),
            "--platform",
            "linux/amd64",
        ],
    );
    podman(&["rmi", &reference]);
    podman(&["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(
        podman(&["image", "inspect", "--format", "{{.Id}}", &reference]),
        crate::oci::hex_part(&amd.config.digest)
    );

    // skopeo's `docker-archive:` (the same reader) sees the config's diff IDs as the layers.
    let seen = Skopeo::new().output(&["inspect", &format!("docker-archive:{}", file.display())]);
    assert!(
        seen.status.success(),
        "skopeo inspect docker-archive: {}",
        String::from_utf8_lossy(&seen.stderr)
    );
    let seen: Value = serde_json::from_slice(&seen.stdout).unwrap();
    assert_eq!(seen["Layers"], serde_json::json!(diff_ids), "{seen}");

    // containerd imports docker's layout too, and unpacks it (each layer checked against its diff ID).
    let ctr = Containerd::start();
    ctr.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        sha256_digest(&ctr.content(&amd.config.digest)),
        amd.config.digest
    );

    // `wharf import` takes OCI layouts only, and says how to convert this one.
    let refused = wharf_cli(&s.wharf, &["import", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("skopeo copy docker-archive:"),
        "{said}"
    );
}
