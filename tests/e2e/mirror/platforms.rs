//! Platform selection in the mirror (issue 15): a 3-platform image (linux/amd64, linux/arm64,
//! linux/arm/v7) on a real `docker-registry` upstream, pulled through wharf by containerd and skopeo
//! with only some platforms chosen (`[mirror] platforms`, `[[upstream]] platforms`, the
//! `platform-filter` plugin). The upstream's access log is the witness: a platform the policy leaves
//! out is never requested, whatever the client asks.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::{Api, Resp};
use crate::layout::{write_layout, Layout, LayoutSpec, PlatformImage};
use crate::oci::{self, sha256_digest};
use crate::plugins::{component, Entry, PluginFiles};
use crate::skopeo::Skopeo;

use super::ctr::{write_hosts_dir, Containerd};
use super::{assert_cached_intact, push_to_upstream, upstream};

const REPO: &str = "team/multi";

/// Also the fixture of `archive.rs` (export and import of the same image).
pub(crate) struct Setup {
    pub(crate) registry: DistRegistry,
    pub(crate) wharf: Wharf,
    pub(crate) layout: Layout,
    /// Access log lines of the upstream before wharf asked anything (the seeding push).
    pub(crate) seeded: usize,
}

/// An upstream holding the 3-platform image as `team/multi:v1`, and a wharf mirroring it under path
/// prefix `up` with `mirror_keys` in `[mirror]` and `extra_toml` (plugins, more upstreams) appended.
pub(crate) fn setup(
    seed: u64,
    mirror_keys: &[&str],
    extra_toml: impl FnOnce(&DistRegistry) -> String,
) -> Setup {
    let registry = DistRegistry::start();
    let extra = extra_toml(&registry);
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            keys: mirror_keys.iter().map(|k| (*k).to_owned()).collect(),
            upstreams: vec![upstream(&registry.host(), registry.addr(), "up")],
            ..Default::default()
        },
        extra_toml: extra,
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", seed));
    push_to_upstream(&registry, &layout, REPO);
    let seeded = registry.access_log().len();
    Setup {
        registry,
        wharf,
        layout,
        seeded,
    }
}

impl Setup {
    pub(crate) fn image(&self, arch: &str) -> &PlatformImage {
        self.layout
            .images
            .iter()
            .find(|i| i.platform.architecture == arch)
            .unwrap_or_else(|| panic!("no {arch} image"))
    }

    /// Digests only `arch`'s image has (its manifest, config and own layers; not the shared layer).
    pub(crate) fn own_digests(&self, arch: &str) -> BTreeSet<String> {
        let img = self.image(arch);
        let mut own = BTreeSet::from([img.manifest.digest.clone(), img.config.digest.clone()]);
        own.extend(
            img.layers
                .iter()
                .filter(|l| **l != self.layout.shared_layer)
                .map(|l| l.digest.clone()),
        );
        own
    }

    /// Upstream requests made since the seeding push.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.registry.access_log()[self.seeded..].to_vec()
    }

    /// No upstream request since the seeding push names any digest only `arch` has.
    pub(crate) fn assert_never_requested(&self, arch: &str) {
        let own = self.own_digests(arch);
        let bad: Vec<String> = self
            .requests()
            .into_iter()
            .filter(|l| own.iter().any(|d| l.contains(d.as_str())))
            .collect();
        assert!(
            bad.is_empty(),
            "the upstream was asked for {arch} content, which the policy leaves out:\n{}\n--- wharf log ---\n{}",
            bad.join("\n"),
            crate::harness::log_tail(&self.wharf.log_path(), 40)
        );
    }

    /// Some upstream request since the seeding push names `digest` (the test really pulled through).
    pub(crate) fn assert_requested(&self, digest: &str) {
        assert!(
            self.requests().iter().any(|l| l.contains(digest)),
            "wharf never asked the upstream for {digest}: {:#?}",
            self.requests()
        );
    }

    pub(crate) fn api(&self) -> Api {
        Api::new(self.wharf.base())
    }

    /// `GET /v2/up/team/multi/manifests/<reference>` through wharf.
    pub(crate) fn manifest(&self, reference: &str) -> Resp {
        self.api().request(
            "GET",
            &format!("/v2/up/{REPO}/manifests/{reference}"),
            &[("Accept", &crate::http::all_manifest_types())],
            None,
        )
    }

    pub(crate) fn blob(&self, digest: &str) -> Resp {
        self.api().get(&format!("/v2/up/{REPO}/blobs/{digest}"))
    }

    /// `skopeo inspect --raw` of the tag through wharf, with the digest wharf names for it.
    pub(crate) fn inspect_tag(&self) -> (Vec<u8>, String) {
        let raw =
            Skopeo::new().inspect_raw(&format!("docker://{}/up/{REPO}:v1", self.wharf.host()));
        let head = self.api().request(
            "HEAD",
            &format!("/v2/up/{REPO}/manifests/v1"),
            &[("Accept", oci::OCI_INDEX)],
            None,
        );
        head.assert_status(200);
        (raw, head.need_header("Docker-Content-Digest").to_owned())
    }

    /// The image as a client names it: the upstream's host, which wharf gets as `?ns=`.
    pub(crate) fn reference(&self) -> String {
        format!("{}/{REPO}:v1", self.registry.host())
    }

    /// The index and everything of `arch`'s image.
    pub(crate) fn closure(&self, arch: &str) -> BTreeSet<String> {
        let img = self.image(arch);
        let mut all = BTreeSet::from([
            self.layout.index.digest.clone(),
            img.manifest.digest.clone(),
            img.config.digest.clone(),
        ]);
        all.extend(img.layers.iter().map(|l| l.digest.clone()));
        all
    }

    /// The cache really was cold: wharf fetched each of `arch`'s own blobs and its manifest upstream.
    pub(crate) fn assert_fetched(&self, arch: &str) {
        // distribution writes a request's access line once its handler returns, which can be just
        // after the client has the last byte: give the lines a moment to land.
        let own = self.own_digests(arch);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut requests = self.requests();
        while std::time::Instant::now() < until
            && !own
                .iter()
                .all(|d| requests.iter().any(|l| l.contains(d.as_str())))
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
            requests = self.requests();
        }
        for d in own {
            assert!(
                requests.iter().any(|l| l.contains(d.as_str())),
                "wharf never asked the upstream for {d} of {arch}: {requests:#?}"
            );
        }
    }

    pub(crate) fn index_bytes(&self) -> Vec<u8> {
        std::fs::read(self.layout.blob_path(&self.layout.index.digest)).unwrap()
    }
}

/// The error's message (decoded from the spec's JSON body) says each of `needles`.
fn assert_says(r: &Resp, needles: &[&str]) {
    let text = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for n in needles {
        assert!(
            text.contains(n),
            "{}: the answer should say {n:?}: {}",
            r.request,
            r.describe()
        );
    }
}

/// The platforms an index lists, as `os/arch[/variant]`, in order.
fn listed_platforms(index: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(index).expect("an index");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|e| {
            let p = &e["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s += &format!("/{v}");
            }
            s
        })
        .collect()
}

/// Proves: with `[mirror] platforms = ["linux/amd64"]` (sparse mode), containerd pulls linux/amd64
/// through wharf (the original index digest, every layer unpacked against its diff_id); the upstream's
/// access log shows no request for any arm64 or arm/v7 manifest or blob, even after a client asks
/// wharf for them; those requests answer 404 naming `mirror.platforms` and the fix.
#[test]
fn only_the_chosen_platform_is_fetched_upstream() {
    let s = setup(1510, &["platforms = [\"linux/amd64\"]"], |_| String::new());
    let up = s.registry.host();
    let hosts = s.wharf.scratch("certs.d");
    write_hosts_dir(&hosts, &up, &s.wharf.host());
    let reference = format!("{up}/{REPO}:v1");

    let mut ctrd = Containerd::start();
    ctrd.pull(&hosts, &reference, "linux/amd64");
    assert_eq!(
        ctrd.image_digest(&reference),
        s.layout.index.digest,
        "sparse mode serves the original index"
    );
    let amd64 = s.image("amd64").clone();
    for d in std::iter::once(&amd64.manifest.digest)
        .chain([&amd64.config.digest])
        .chain(amd64.layers.iter().map(|l| &l.digest))
    {
        assert_eq!(sha256_digest(&ctrd.content(d)), *d);
        assert_cached_intact(&s.wharf, d);
        s.assert_requested(d);
    }
    ctrd.stop();

    // A client asking for the left-out platforms by digest gets a clear 404, and wharf asks no one.
    for (arch, name) in [("arm64", "linux/arm64"), ("arm", "linux/arm/v7")] {
        let img = s.image(arch).clone();
        let r = s.manifest(&img.manifest.digest);
        r.assert_error(404, "MANIFEST_UNKNOWN");
        assert_says(
            &r,
            &[
                name,
                "mirror.platforms = [\"linux/amd64\"]",
                &format!("add \"{name}\" to mirror.platforms"),
            ],
        );
        for d in [&img.config.digest, &img.layers.last().unwrap().digest] {
            let r = s.blob(d);
            r.assert_error(404, "BLOB_UNKNOWN");
            assert_says(&r, &["no platform", "mirror.platforms"]);
            let head = s.api().head(&format!("/v2/up/{REPO}/blobs/{d}"));
            head.assert_status(404);
        }
    }
    // The shared layer belongs to amd64 too: it stays available.
    s.blob(&s.layout.shared_layer.digest).assert_status(200);
    s.assert_never_requested("arm64");
    s.assert_never_requested("arm");
}

/// Proves: `platform_mode = "rewritten"` serves, for the tag, an index of the chosen platforms only
/// (linux/amd64 and linux/arm/v7, in the original order), whose bytes hash to the digest wharf names
/// for the tag, annotated with the original's digest; the reduced index is served by its digest, the
/// original too; skopeo copies the whole reduced image, and the upstream never sees arm64 requests.
#[test]
fn rewritten_mode_serves_a_reduced_index() {
    let s = setup(
        1520,
        &[
            "platforms = [\"linux/amd64\", \"linux/arm/v7\"]",
            "platform_mode = \"rewritten\"",
        ],
        |_| String::new(),
    );
    let (raw, digest) = s.inspect_tag();
    assert_eq!(sha256_digest(&raw), digest, "the reduced index verifies");
    assert_ne!(digest, s.layout.index.digest, "a new digest");
    assert_eq!(listed_platforms(&raw), ["linux/amd64", "linux/arm/v7"]);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        v["annotations"]["dev.wharf.reduced-from"], s.layout.index.digest,
        "the annotation names the original"
    );
    // Every other field as it was.
    let original: Value =
        serde_json::from_slice(&std::fs::read(s.layout.blob_path(&s.layout.index.digest)).unwrap())
            .unwrap();
    assert_eq!(v["mediaType"], original["mediaType"]);
    assert_eq!(v["manifests"][0], original["manifests"][0]);
    assert_eq!(v["manifests"][1], original["manifests"][2]);

    let by_digest = s.manifest(&digest);
    by_digest.assert_status(200);
    assert_eq!(
        by_digest.body, raw,
        "GET by the reduced digest serves those bytes"
    );
    let orig = s.manifest(&s.layout.index.digest);
    orig.assert_status(200);
    assert_eq!(
        sha256_digest(&orig.body),
        s.layout.index.digest,
        "the original stays retrievable by its digest"
    );
    // HEAD of the tag again (from cache now): the same reduced digest, computed once.
    assert_eq!(s.inspect_tag().1, digest);

    // The reduced image is whole: skopeo copies every platform it lists.
    let out = s.wharf.scratch("copy");
    Skopeo::new().copy_with(
        &[],
        &format!("docker://{}/up/{REPO}:v1", s.wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    for arch in ["amd64", "arm"] {
        let img = s.image(arch).clone();
        for d in std::iter::once(&img.manifest.digest).chain(img.layers.iter().map(|l| &l.digest)) {
            assert_cached_intact(&s.wharf, d);
        }
    }
    s.assert_never_requested("arm64");

    // `wharf images` (through the running server) shows the tag, the platforms here and the mapping.
    let out = crate::gc::cli(&s.wharf, &["images", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == "v1" && r["repository"].as_str().unwrap().ends_with(REPO))
        .unwrap_or_else(|| panic!("no row for the tag: {list}"));
    assert_eq!(row["digest"], s.layout.index.digest, "{row}");
    assert_eq!(
        row["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm/v7"])
    );
    assert_eq!(row["platforms_absent"], 1, "{row}");
    assert_eq!(
        row["provenance"],
        serde_json::json!([format!("reduced to {digest}")]),
        "{row}"
    );
}

/// Proves: a platform plugin (`platform-filter` keeping linux/arm64 and linux/arm/v7) combined with
/// `[mirror] platforms = ["linux/amd64", "linux/arm64"]` keeps their intersection, linux/arm64 only;
/// a platform the config leaves out is blamed on the config key, one the plugin leaves out on the
/// plugin by name; neither is requested upstream.
#[test]
fn plugin_and_config_keep_their_intersection() {
    let files = PluginFiles::new();
    let wasm = files.add("platform_filter.wasm", &component("platform_filter"));
    let s = setup(
        1530,
        &[
            "platforms = [\"linux/amd64\", \"linux/arm64\"]",
            "platform_mode = \"rewritten\"",
        ],
        |_| {
            Entry::new(
                "arm-only",
                &wasm,
                r#"{"platforms": ["linux/arm64", "linux/arm/v7"]}"#,
            )
            .toml()
        },
    );
    let (raw, digest) = s.inspect_tag();
    assert_eq!(sha256_digest(&raw), digest);
    assert_eq!(listed_platforms(&raw), ["linux/arm64"]);

    let arm64 = s.image("arm64").clone();
    s.manifest(&arm64.manifest.digest).assert_status(200);
    s.blob(&arm64.config.digest).assert_status(200);

    let amd64 = s.image("amd64").clone();
    let r = s.manifest(&amd64.manifest.digest);
    r.assert_error(404, "MANIFEST_UNKNOWN");
    assert_says(&r, &["linux/amd64", "platform plugin arm-only"]);
    let armv7 = s.image("arm").clone();
    let r = s.manifest(&armv7.manifest.digest);
    r.assert_error(404, "MANIFEST_UNKNOWN");
    assert_says(&r, &["linux/arm/v7", "mirror.platforms"]);
    s.assert_never_requested("amd64");
    s.assert_never_requested("arm");
}

/// Proves: `platforms` on an `[[upstream]]` overrides `[mirror] platforms` for that upstream only: the
/// same registry mirrored under two hosts, one with `platforms = ["linux/arm64"]` of its own, one
/// with the mirror's default (linux/amd64).
#[test]
fn upstream_platforms_override_the_mirror_default() {
    let s = setup(1540, &["platforms = [\"linux/amd64\"]"], |r| {
        format!(
            "\n[[upstream]]\nhost = \"arm.test\"\nendpoint = \"http://{}\"\ninsecure = true\n\
             prefix = \"arm\"\nplatforms = [\"linux/arm64\"]\n",
            r.addr()
        )
    });
    let api = s.api();
    let get = |prefix: &str, reference: &str| {
        api.request(
            "GET",
            &format!("/v2/{prefix}/{REPO}/manifests/{reference}"),
            &[("Accept", &crate::http::all_manifest_types())],
            None,
        )
    };
    let (amd64, arm64) = (s.image("amd64").clone(), s.image("arm64").clone());

    // The overriding upstream: arm64 kept, amd64 left out by its own setting.
    get("arm", "v1").assert_status(200);
    get("arm", &arm64.manifest.digest).assert_status(200);
    let r = get("arm", &amd64.manifest.digest);
    r.assert_error(404, "MANIFEST_UNKNOWN");
    assert_says(
        &r,
        &[
            "platforms of the [[upstream]] with host = \"arm.test\"",
            "linux/amd64",
        ],
    );
    s.assert_never_requested("amd64");

    // The default applies to the other upstream.
    get("up", "v1").assert_status(200);
    get("up", &amd64.manifest.digest).assert_status(200);
    let r = get("up", &arm64.manifest.digest);
    r.assert_error(404, "MANIFEST_UNKNOWN");
    assert_says(&r, &["mirror.platforms"]);
}
