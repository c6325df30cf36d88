//! Single-platform images (a plain manifest, no index) under a platform policy (issue 23): most
//! images in private registries are. One of a kept platform (its config's `os`/`architecture`)
//! pulls through wharf with skopeo, containerd and dockerd; one of another platform is refused at
//! the manifest, by tag and by digest, with the message an unchosen index child gets, and none of
//! its layers is ever requested upstream (the upstream's access log is the witness). Its config,
//! which says its platform, is the one blob wharf fetches of it.

use crate::harness::{DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::http::{Api, Resp};
use crate::layout::{write_layout, LayoutSpec, PlatformImage};
use crate::oci::sha256_digest;
use crate::plugins::{component, Entry, PluginFiles};
use crate::skopeo::Skopeo;

use super::ctr::{write_hosts_dir, Containerd};
use super::docker_daemon::{in_private_network, native_image, DockerTools, Dockerd};
use super::{assert_cached_intact, push_to_upstream, upstream};

const REPO: &str = "team/single";

/// An upstream holding two single-platform images in `team/single`: linux/amd64 as `v1`, linux/arm64
/// as `arm` (different seeds: no blob in common), and a wharf mirroring it under path prefix `up`.
struct Setup {
    registry: DistRegistry,
    wharf: Wharf,
    amd64: PlatformImage,
    arm64: PlatformImage,
    /// Access log lines of the upstream before wharf asked anything (the seeding pushes).
    seeded: usize,
}

fn setup(seed: u64, mirror_keys: &[&str], extra_toml: &str) -> Setup {
    let registry = DistRegistry::start();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            keys: mirror_keys.iter().map(|k| (*k).to_owned()).collect(),
            upstreams: vec![upstream(&registry.host(), registry.addr(), "up")],
            ..Default::default()
        },
        extra_toml: extra_toml.to_owned(),
        ..Default::default()
    });
    let single = |tag: &str, seed: u64, arch: &str| {
        let layout = write_layout(
            &wharf.scratch(&format!("src-{tag}")),
            &LayoutSpec::small(tag, seed),
        );
        let img = layout.retag_single(arch);
        push_to_upstream(&registry, &layout, REPO);
        img
    };
    let amd64 = single("v1", seed, "amd64");
    let arm64 = single("arm", seed + 1, "arm64");
    let seeded = registry.access_log().len();
    Setup {
        registry,
        wharf,
        amd64,
        arm64,
        seeded,
    }
}

impl Setup {
    fn api(&self) -> Api {
        Api::new(self.wharf.base())
    }

    fn manifest(&self, method: &str, reference: &str) -> Resp {
        self.api().request(
            method,
            &format!("/v2/up/{REPO}/manifests/{reference}"),
            &[("Accept", &crate::http::all_manifest_types())],
            None,
        )
    }

    fn requests(&self) -> Vec<String> {
        self.registry.access_log()[self.seeded..].to_vec()
    }

    /// The left-out image is refused at the manifest (tag `HEAD` and `GET`, `GET` by digest) with a
    /// message naming its platform, what left it out (`by`) and `fix`; its layers are refused too,
    /// and no upstream request ever named one of them.
    fn assert_refused(&self, by: &str, fix: &str) {
        let img = &self.arm64;
        self.manifest("HEAD", "arm").assert_status(404);
        for reference in ["arm", img.manifest.digest.as_str()] {
            let r = self.manifest("GET", reference);
            r.assert_error(404, "MANIFEST_UNKNOWN");
            for needle in ["single-platform image for linux/arm64", by, fix] {
                assert_says(&r, needle);
            }
        }
        self.manifest("HEAD", &img.manifest.digest)
            .assert_status(404);
        for l in &img.layers {
            let r = self.api().get(&format!("/v2/up/{REPO}/blobs/{}", l.digest));
            r.assert_error(404, "BLOB_UNKNOWN");
        }
        let asked: Vec<String> = self
            .requests()
            .into_iter()
            .filter(|l| img.layers.iter().any(|d| l.contains(&d.digest)))
            .collect();
        assert!(
            asked.is_empty(),
            "the upstream was asked for layers of the left-out linux/arm64 image:\n{}",
            asked.join("\n")
        );
    }
}

/// The error's message (decoded from the spec's JSON body) says `needle`.
fn assert_says(r: &Resp, needle: &str) {
    let text = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains(needle),
        "{}: the answer should say {needle:?}: {}",
        r.request,
        r.describe()
    );
}

/// Every blob of `img` and its manifest are in wharf's store, whole.
fn assert_all_cached(wharf: &Wharf, img: &PlatformImage) {
    for d in std::iter::once(&img.manifest.digest)
        .chain([&img.config.digest])
        .chain(img.layers.iter().map(|l| &l.digest))
    {
        assert_cached_intact(wharf, d);
    }
}

/// Proves: with `[mirror] platforms = ["linux/amd64"]`, skopeo copies a single-platform linux/amd64
/// image through wharf (before, its first layer answered 404: a tag naming a plain manifest never
/// made its blobs fetchable); a single-platform linux/arm64 image is refused at the manifest by tag
/// (`HEAD`, `GET`) and by digest with the platform, the setting and the fix, skopeo says so, and none
/// of its layers is requested upstream, only its config (which says its platform).
#[test]
fn skopeo_pulls_a_kept_single_platform_image_and_a_left_out_one_is_refused() {
    let s = setup(2310, &["platforms = [\"linux/amd64\"]"], "");
    let out = s.wharf.scratch("copy");
    Skopeo::new().copy_with(
        &[],
        &format!("docker://{}/up/{REPO}:v1", s.wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_all_cached(&s.wharf, &s.amd64);
    let head = s.manifest("HEAD", "v1");
    head.assert_status(200);
    assert_eq!(
        head.need_header("Docker-Content-Digest"),
        s.amd64.manifest.digest
    );

    let skopeo = Skopeo::new().output(&[
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        &format!("docker://{}/up/{REPO}:arm", s.wharf.host()),
        &format!("oci:{}:arm", s.wharf.scratch("refused").display()),
    ]);
    let stderr = String::from_utf8_lossy(&skopeo.stderr);
    assert!(
        !skopeo.status.success()
            && stderr.contains("linux/arm64")
            && stderr.contains("mirror.platforms"),
        "skopeo should fail naming the platform and the setting ({}): {stderr}",
        skopeo.status
    );
    s.assert_refused(
        "mirror.platforms = [\"linux/amd64\"]",
        "add \"linux/arm64\" to mirror.platforms",
    );
    // Its config is what told wharf its platform: fetched, and nothing else of it but its manifest.
    assert!(
        s.requests()
            .iter()
            .any(|l| l.contains(&s.arm64.config.digest)),
        "wharf judged the arm64 image without its config: {:#?}",
        s.requests()
    );
}

/// Proves: the `platform-filter` plugin (keeping linux/amd64, no `platforms` setting) judges a
/// single-platform image as it would an index child, given that one platform as `available`: the
/// linux/amd64 image is served whole, the linux/arm64 one refused naming the plugin, none of its
/// layers requested upstream.
#[test]
fn the_platform_filter_plugin_judges_single_platform_images() {
    let files = PluginFiles::new();
    let wasm = files.add("platform_filter.wasm", &component("platform_filter"));
    let plugin = Entry::new("amd64-only", &wasm, r#"{"platforms": ["linux/amd64"]}"#).toml();
    let s = setup(2320, &[], &plugin);

    let r = s.manifest("GET", "v1");
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), s.amd64.manifest.digest);
    for d in std::iter::once(&s.amd64.config).chain(&s.amd64.layers) {
        let b = s.api().get(&format!("/v2/up/{REPO}/blobs/{}", d.digest));
        b.assert_status(200);
        assert_eq!(sha256_digest(&b.body), d.digest);
    }
    s.assert_refused(
        "platform plugin amd64-only",
        "change that plugin's config to keep it",
    );
}

/// Proves: containerd (`ctr images pull` with `hosts.toml`, so every request carries `?ns=`) pulls
/// a single-platform linux/amd64 image through wharf under `platforms = ["linux/amd64"]`: its image
/// is the manifest's digest, every layer unpacked, and all of it is in wharf's store (before, wharf
/// answered 404 for the layers and containerd fell back to the upstream behind wharf's back).
#[test]
fn ctr_pulls_a_single_platform_image_under_a_platform_policy() {
    let s = setup(2330, &["platforms = [\"linux/amd64\"]"], "");
    let up = s.registry.host();
    let hosts = s.wharf.scratch("certs.d");
    write_hosts_dir(&hosts, &up, &s.wharf.host());
    let reference = format!("{up}/{REPO}:v1");
    let mut ctrd = Containerd::start();
    ctrd.pull(&hosts, &reference, "linux/amd64");
    assert_eq!(ctrd.image_digest(&reference), s.amd64.manifest.digest);
    for d in std::iter::once(&s.amd64.config).chain(&s.amd64.layers) {
        assert_eq!(sha256_digest(&ctrd.content(&d.digest)), d.digest);
    }
    ctrd.stop();
    assert_all_cached(&s.wharf, &s.amd64);
}

/// Proves: dockerd with wharf as its `registry-mirrors` mirror (the upstream for docker.io a local
/// registry, in a private network namespace) pulls `single:1`, a single-platform image of this
/// machine's platform, under `platforms` naming that platform: dockerd's image is that config, and
/// everything it needed is in wharf's store (before, dockerd failed: wharf's 404 for a layer made it
/// fall back to Docker Hub, which the namespace cannot reach).
#[test]
fn docker_daemon_pulls_a_single_platform_image_under_a_platform_policy() {
    in_private_network("docker-single", || {
        let tools = DockerTools::find();
        let registry = DistRegistry::start();
        let probe = tempfile::tempdir().unwrap();
        let layout = write_layout(probe.path(), &LayoutSpec::small("1", 2340));
        let native = native_image(&layout.images).platform.clone();
        let platform = format!("linux/{}", native.architecture);
        let wharf = Wharf::start(WharfOptions {
            mirror: MirrorOptions {
                default_upstream: Some("docker.io".into()),
                upstreams: vec![UpstreamSpec::http("docker.io", registry.addr())],
                keys: vec![format!("platforms = [\"{platform}\"]")],
                ..Default::default()
            },
            ..Default::default()
        });
        let img = layout.retag_single(native.architecture);
        push_to_upstream(&registry, &layout, "library/single");
        let docker = Dockerd::start(tools, wharf.addr());
        docker.docker(&["pull", "single:1"]);
        assert_eq!(
            docker.image_id("single:1").as_deref(),
            Some(img.config.digest.as_str()),
            "dockerd's image ID must be the {platform} image's config digest"
        );
        assert_all_cached(&wharf, &img);
    });
}
