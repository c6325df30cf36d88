use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use wharf_model::config::Config;
use wharf_model::platform::chosen_key;
use wharf_model::platform::entries;
use wharf_model::platform::reduce;
use wharf_model::platform::PlatformMode;
use wharf_model::platform::PlatformSpec;
use wharf_model::platform::REDUCED_FROM;
use wharf_model::request::{Operation, RequestCtx};
use wharf_policy::plugin::Plugins;
use wharf_protocol::upstream::Upstream;
use wharf_storage::lease::{Leases, Touching};
use wharf_storage::meta::{ManifestPut, ManifestRecord, Meta};
use wharf_storage::store::{FsStore, Ingester, Provider, Sweeper};

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
    Platform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(Into::into),
        os_version: None,
        os_features: Vec::new(),
    }
}

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

/// An index over linux/amd64, linux/arm64, linux/arm/v7 and one entry without a platform, with fields
/// the reduction must keep (annotations, artifactType, entry annotations).
fn index() -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "artifactType": "application/x-test",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(1).to_string(),
             "size": 10, "platform": {"os": "linux", "architecture": "amd64"},
             "annotations": {"x": "1"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(2).to_string(),
             "size": 20, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(3).to_string(),
             "size": 30, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(4).to_string(),
             "size": 40},
        ],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }))
    .unwrap()
}

/// Proves: platform strings parse as os/architecture[/variant], and anything else is refused with the
/// form to write.
#[test]
fn platform_strings() {
    let p: PlatformSpec = "linux/arm/v7".parse().unwrap();
    assert_eq!(
        (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
        ("linux", "arm", Some("v7"))
    );
    assert_eq!(p.to_string(), "linux/arm/v7");
    assert_eq!(
        "linux/amd64".parse::<PlatformSpec>().unwrap().to_string(),
        "linux/amd64"
    );
    for bad in [
        "",
        "linux",
        "linux/",
        "/amd64",
        "linux//v7",
        "linux/arm/v7/x",
        "linux/amd 64",
    ] {
        let e = bad.parse::<PlatformSpec>().unwrap_err();
        assert!(e.contains("os/architecture[/variant]"), "{bad:?}: {e}");
    }
}

/// Proves: a spec without a variant matches every variant; one with a variant only that variant.
#[test]
fn matching() {
    let arm64: PlatformSpec = "linux/arm64".parse().unwrap();
    assert!(arm64.matches(&platform("linux", "arm64", None)));
    assert!(arm64.matches(&platform("linux", "arm64", Some("v8"))));
    assert!(!arm64.matches(&platform("linux", "amd64", None)));
    let v7: PlatformSpec = "linux/arm/v7".parse().unwrap();
    assert!(v7.matches(&platform("linux", "arm", Some("v7"))));
    assert!(!v7.matches(&platform("linux", "arm", Some("v6"))));
    assert!(!v7.matches(&platform("linux", "arm", None)));
    assert!(!v7.matches(&platform("windows", "arm", Some("v7"))));
}

/// Proves: the config keys parse at load, and a bad value fails naming the key; printed back, the
/// configuration reads the same.
#[test]
fn config_keys() {
    let cfg: Config = toml::from_str(
        r#"
[mirror]
platforms = ["linux/amd64", "linux/arm/v7"]
platform_mode = "rewritten"
[[upstream]]
host = "ghcr.io"
endpoint = "https://ghcr.io"
platforms = ["linux/arm64"]
[[upstream]]
host = "quay.io"
endpoint = "https://quay.io"
platforms = []
"#,
    )
    .unwrap();
    assert_eq!(cfg.mirror.platform_mode, PlatformMode::Rewritten);
    assert_eq!(cfg.mirror.platforms.len(), 2);
    assert_eq!(cfg.upstreams[0].platforms.as_ref().unwrap().len(), 1);
    assert_eq!(cfg.upstreams[1].platforms, Some(Vec::new()));
    let back: Config = toml::from_str(&cfg.to_toml().unwrap()).unwrap();
    assert_eq!(back, cfg.effective());

    let defaults = Config::default();
    assert_eq!(defaults.mirror.platform_mode, PlatformMode::Sparse);
    assert!(defaults.mirror.platforms.is_empty());

    for (text, key) in [
        ("[mirror]\nplatforms = [\"linux\"]\n", "mirror.platforms"),
        (
            "[[upstream]]\nhost = \"a\"\nendpoint = \"https://a\"\nplatforms = [\"linux/arm/v7/x\"]\n",
            "upstream.platforms",
        ),
    ] {
        let e = toml::from_str::<Config>(text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("is not a platform"), "{e}");
    }
    let e = toml::from_str::<Config>("[mirror]\nplatform_mode = \"thin\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sparse") && e.contains("rewritten"), "{e}");
}

/// Proves: the reduction keeps the chosen entries in their order, every other field as it was, and
/// names the original; it is a pure function (same inputs, same bytes).
#[test]
fn reduce_keeps_chosen_entries_and_the_rest() {
    let original = Digest::sha256_of(&index());
    let chosen = [
        platform("linux", "arm", Some("v7")),
        platform("linux", "amd64", None),
    ];
    let out = reduce(&original, &index(), &chosen).unwrap();
    assert_eq!(out, reduce(&original, &index(), &chosen).unwrap());
    let v: Value = serde_json::from_slice(&out).unwrap();
    let src: Value = serde_json::from_slice(&index()).unwrap();
    let kept: Vec<&Value> = v["manifests"].as_array().unwrap().iter().collect();
    assert_eq!(
        kept,
        vec![&src["manifests"][0], &src["manifests"][2]],
        "entries kept whole, in index order"
    );
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], src["mediaType"]);
    assert_eq!(v["artifactType"], "application/x-test");
    assert_eq!(
        v["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
    assert_eq!(v["annotations"][REDUCED_FROM], original.to_string());
    // What wharf stores must be a valid index.
    let m = wharf_model::manifest::parse(None, &out).unwrap();
    assert_eq!(m.manifests.len(), 2);

    // An index without annotations gets them.
    let bare = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(1).to_string(),
         "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}]}))
    .unwrap();
    let v: Value = serde_json::from_slice(&reduce(&original, &bare, &chosen).unwrap()).unwrap();
    assert_eq!(v["annotations"][REDUCED_FROM], original.to_string());
    assert!(reduce(&original, b"[]", &chosen).is_err());
}

#[test]
fn entries_and_keys() {
    let e = entries(&index()).unwrap();
    assert_eq!(e.len(), 4);
    assert_eq!(e[1].digest, d(2));
    assert_eq!(e[1].platform, Some(platform("linux", "arm64", Some("v8"))));
    assert_eq!(e[3].platform, None);
    assert_eq!(
        chosen_key(&[
            platform("linux", "arm64", None),
            platform("linux", "amd64", None)
        ]),
        "platforms:linux/amd64,linux/arm64"
    );
}

/// A cache with the index and its amd64 child, and a policy over it.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Touching>,
    meta: Meta,
    target: Target,
    index: (Digest, ManifestRecord),
    /// (manifest digest, config digest, layer digest) per platform, in index order.
    images: Vec<(Digest, Digest, Digest)>,
}

const REPO: &str = "up.test/team/app";

async fn put(store: &Touching, meta: &Meta, bytes: Vec<u8>) -> (Digest, ManifestRecord) {
    let digest = Digest::sha256_of(&bytes);
    let m = wharf_model::manifest::parse(None, &bytes).unwrap();
    let record = ManifestRecord {
        media_type: m.media_type,
        size: bytes.len() as u64,
        subject: None,
    };
    store.put(&digest, Bytes::from(bytes)).await.unwrap();
    meta.put_manifest(ManifestPut {
        repo: REPO,
        digest: &digest,
        record: record.clone(),
        tag: None,
        referrer: None,
    })
    .await
    .unwrap();
    (digest, record)
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("m.redb")).unwrap();
        let store = Touching::wrap(
            Arc::new(FsStore::open(dir.path().join("s")).unwrap()),
            Leases::new(meta.clone()),
        );
        let mut images = Vec::new();
        let mut listed = Vec::new();
        for (n, p) in [
            platform("linux", "amd64", None),
            platform("linux", "arm64", None),
            platform("linux", "arm", Some("v7")),
        ]
        .into_iter()
        .enumerate()
        {
            let (config, layer) = (d(10 + n as u8), d(20 + n as u8));
            let image = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config.to_string(), "size": 1},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer.to_string(), "size": 1}],
            }))
            .unwrap();
            let digest = Digest::sha256_of(&image);
            if n == 0 {
                // Only amd64's manifest is cached: the others were never fetched.
                put(&store, &meta, image.clone()).await;
            }
            let mut entry = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest.to_string(), "size": image.len()});
            entry["platform"] = json!({"os": p.os, "architecture": p.architecture});
            if let Some(v) = &p.variant {
                entry["platform"]["variant"] = json!(v);
            }
            listed.push(entry);
            images.push((digest, config, layer));
        }
        let index = put(
            &store,
            &meta,
            serde_json::to_vec(&json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": listed}))
            .unwrap(),
        )
        .await;
        let mut up = wharf_model::config::UpstreamConfig::docker_hub();
        up.host = "up.test".into();
        up.endpoint = "http://127.0.0.1:9".into();
        up.insecure = true;
        let target = Target {
            upstream: Arc::new(Upstream::new(&up).unwrap()),
            remote: "team/app".into(),
            cache: REPO.into(),
        };
        Fixture {
            _dir: dir,
            store,
            meta,
            target,
            index,
            images,
        }
    }

    fn policy(&self, toml_text: &str) -> (PlatformPolicy, Policy) {
        let cfg: Config = toml::from_str(toml_text).unwrap();
        let pp = PlatformPolicy::new(
            &cfg.mirror,
            &cfg.upstreams,
            self.store.clone(),
            self.meta.clone(),
            crate::fill::Fills::new(self.store.clone(), self.meta.clone()),
            1 << 20,
        );
        let policy = Policy::new(
            Plugins::none(),
            self.store.clone(),
            self.meta.clone(),
            4 << 20,
        );
        (pp, policy)
    }
}

fn ctx() -> RequestCtx {
    RequestCtx {
        operation: Operation::Pull,
        registry: Some("up.test".into()),
        repository: "team/app".into(),
        reference: Some("v1".into()),
        client_address: String::new(),
        identity: None,
        user_agent: None,
    }
}

/// Proves: in sparse mode the tag serves the original index; the left-out children and blobs are
/// refused (naming the setting and the fix) before any upstream request; the kept child's blobs, and
/// a child no index lists, pass.
#[tokio::test]
async fn sparse_judges_children_and_blobs() {
    let f = Fixture::new().await;
    let (pp, policy) = f.policy("[mirror]\nplatforms = [\"linux/amd64\"]\n");
    let t = &f.target;
    assert!(pp.active(t, &policy));
    let (served, _) = pp
        .tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap();
    assert_eq!(served, f.index.0, "sparse serves the original");

    let (amd64, arm64, armv7) = (&f.images[0], &f.images[1], &f.images[2]);
    pp.check_child(t, ctx(), &policy, &amd64.0).await.unwrap();
    for (img, name) in [(arm64, "linux/arm64"), (armv7, "linux/arm/v7")] {
        let e = pp.check_child(t, ctx(), &policy, &img.0).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestUnknown);
        for needle in [name, "mirror.platforms = [\"linux/amd64\"]", "add \""] {
            assert!(
                e.message.contains(needle),
                "{needle:?} not in {}",
                e.message
            );
        }
        let e = pp.check_blob(t, &policy, &img.2).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BlobUnknown);
        assert!(e.message.contains("no platform"), "{}", e.message);
    }
    // amd64's manifest was cached when the index was judged: its blobs may be fetched.
    pp.check_blob(t, &policy, &amd64.1).await.unwrap();
    pp.check_blob(t, &policy, &amd64.2).await.unwrap();
    pp.check_child(t, ctx(), &policy, &d(99)).await.unwrap();

    // Per-upstream setting overrides the mirror default; an empty list keeps everything.
    let (pp, policy) = f.policy(
        "[mirror]\nplatforms = [\"linux/amd64\"]\n[[upstream]]\nhost = \"up.test\"\n\
         endpoint = \"http://127.0.0.1:9\"\nplatforms = [\"linux/arm64\"]\n",
    );
    pp.check_child(t, ctx(), &policy, &arm64.0).await.unwrap();
    let e = pp
        .check_child(t, ctx(), &policy, &amd64.0)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("[[upstream]] with host = \"up.test\""),
        "{}",
        e.message
    );
    let (pp, policy) = f.policy(
        "[mirror]\nplatforms = [\"linux/amd64\"]\n[[upstream]]\nhost = \"up.test\"\n\
         endpoint = \"http://127.0.0.1:9\"\nplatforms = []\n",
    );
    assert!(!pp.active(t, &policy));
    let (pp, policy) = f.policy("");
    assert!(!pp.active(t, &policy), "no setting, no plugin: inactive");
}

/// Proves: in rewritten mode the tag serves a reduced index, stored, recorded for the repository and
/// mapped from the original under a `platforms:` key; computed once.
#[tokio::test]
async fn rewritten_serves_a_reduced_index() {
    let f = Fixture::new().await;
    let (pp, policy) = f.policy(
        "[mirror]\nplatforms = [\"linux/amd64\", \"linux/arm/v7\"]\nplatform_mode = \"rewritten\"\n",
    );
    let t = &f.target;
    let (reduced, rec) = pp
        .tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap();
    assert_ne!(reduced, f.index.0);
    let bytes = f.store.read_all(&reduced, rec.size).await.unwrap();
    assert_eq!(Digest::sha256_of(&bytes), reduced);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let listed: Vec<&str> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [f.images[0].0.to_string(), f.images[2].0.to_string()]
    );
    assert_eq!(v["annotations"][REDUCED_FROM], f.index.0.to_string());
    assert_eq!(f.meta.manifest(REPO, &reduced).await.unwrap(), Some(rec));
    assert_eq!(
        f.meta
            .rewrite_of(&f.index.0, "platforms:linux/amd64,linux/arm/v7")
            .await
            .unwrap(),
        Some(reduced.clone())
    );
    let (again, _) = pp
        .tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap();
    assert_eq!(again, reduced);

    // Nothing kept: a clear 404 instead of an empty index.
    let (pp, policy) =
        f.policy("[mirror]\nplatforms = [\"windows/amd64\"]\nplatform_mode = \"rewritten\"\n");
    let e = pp
        .tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ManifestUnknown);
    assert!(e.message.contains("linux/arm64"), "{}", e.message);
}

/// Proves: a reduced index is built under a lease, and the lease is released once the mapping is
/// recorded, not left to expire.
#[tokio::test]
async fn the_reduced_index_lease_is_released() {
    let f = Fixture::new().await;
    let (pp, policy) =
        f.policy("[mirror]\nplatforms = [\"linux/amd64\"]\nplatform_mode = \"rewritten\"\n");
    let leases = f.store.leases();
    let (reduced, _) = pp
        .tag_manifest(
            &f.target,
            ctx(),
            &policy,
            f.index.0.clone(),
            f.index.1.clone(),
        )
        .await
        .unwrap();
    assert_ne!(reduced, f.index.0);
    assert!(
        leases.list().is_empty(),
        "lease left behind: {:?}",
        leases.list()
    );
    assert!(f.meta.leases().await.unwrap().is_empty());
}

/// Proves: a reduced index that was collected (its original lost every tag, and the collector took
/// both) is built again when the original is served once more, instead of the original being served
/// in its place because the process still remembered the old mapping.
#[tokio::test]
async fn a_collected_reduced_index_is_built_again() {
    let f = Fixture::new().await;
    let (pp, policy) =
        f.policy("[mirror]\nplatforms = [\"linux/amd64\"]\nplatform_mode = \"rewritten\"\n");
    let t = &f.target;
    let (reduced, _) = pp
        .tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap();
    assert_ne!(reduced, f.index.0);
    // What the collector does to it: every record, then the bytes.
    f.meta
        .forget([reduced.clone()].into_iter().collect())
        .await
        .unwrap();
    f.store.remove(&reduced).await.unwrap();
    assert_eq!(f.store.stat(&reduced).await.unwrap(), None);

    let (again, rec) = pp
        .tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap();
    assert_eq!(
        again, reduced,
        "the same reduction, built again, not the original"
    );
    let bytes = f.store.read_all(&again, rec.size).await.unwrap();
    assert_eq!(Digest::sha256_of(&bytes), reduced);
    assert_eq!(f.meta.manifest(REPO, &again).await.unwrap(), Some(rec));
}

/// Proves: an image config's platform is its os, architecture and variant; a config that is not
/// JSON, or lacks os or architecture, names none.
#[test]
fn config_platforms() {
    let p = image::config_platform(
        br#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{"type":"layers"}}"#,
    );
    assert_eq!(p, Some(platform("linux", "arm", Some("v7"))));
    assert_eq!(
        image::config_platform(br#"{"architecture":"amd64","os":"linux"}"#),
        Some(platform("linux", "amd64", None))
    );
    for none in [
        &b"not json"[..],
        br#"{"architecture":"amd64"}"#,
        br#"{"os":"linux"}"#,
        br#"{"os":"linux","architecture":7}"#,
        b"[]",
        b"",
    ] {
        assert_eq!(
            image::config_platform(none),
            None,
            "{}",
            String::from_utf8_lossy(none)
        );
    }
}

/// A single-platform image (no index lists it) cached for `REPO`: its manifest and its config,
/// stored, and the layer digest it names (not stored).
async fn single(
    f: &Fixture,
    config: &[u8],
    config_type: &str,
) -> (Digest, ManifestRecord, Digest, Digest) {
    let config_digest = Digest::sha256_of(config);
    f.store
        .put(&config_digest, Bytes::copy_from_slice(config))
        .await
        .unwrap();
    let layer = Digest::sha256_of(&[config, b"layer"].concat());
    let (d, rec) = put(
        &f.store,
        &f.meta,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": config_digest.to_string(),
                       "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer.to_string(), "size": 1}],
        }))
        .unwrap(),
    )
    .await;
    (d, rec, config_digest, layer)
}

const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Proves: under `platforms = ["linux/amd64"]`, a single-platform image is judged by its config,
/// by tag and by digest alike: linux/amd64 is served and its config and layers may be fetched;
/// linux/arm64 is refused naming the platform, the setting and the fix, and its layers may not be
/// fetched; a config that names no platform is refused with that reason; an artifact (a config that
/// is not an image config) is for no platform and kept. The decision is remembered: judged again, it
/// reads neither the manifest nor the config.
#[tokio::test]
async fn single_platform_images_are_judged_by_their_config() {
    let f = Fixture::new().await;
    let (pp, policy) = f.policy("[mirror]\nplatforms = [\"linux/amd64\"]\n");
    let t = &f.target;
    let amd64 = single(
        &f,
        br#"{"architecture":"amd64","os":"linux"}"#,
        IMAGE_CONFIG,
    )
    .await;
    let arm64 = single(
        &f,
        br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#,
        IMAGE_CONFIG,
    )
    .await;
    let broken = single(&f, b"not json", IMAGE_CONFIG).await;
    let artifact = single(&f, b"{}", "application/vnd.example.sbom.v1+json").await;

    let (served, _) = pp
        .tag_manifest(t, ctx(), &policy, amd64.0.clone(), amd64.1.clone())
        .await
        .unwrap();
    assert_eq!(
        served, amd64.0,
        "a single-platform image is served as it is"
    );
    pp.check_blob(t, &policy, &amd64.2).await.unwrap();
    pp.check_blob(t, &policy, &amd64.3).await.unwrap();
    pp.check_manifest(t, ctx(), &policy, &amd64.0, &amd64.1)
        .await
        .unwrap();

    for e in [
        pp.tag_manifest(t, ctx(), &policy, arm64.0.clone(), arm64.1.clone())
            .await
            .unwrap_err(),
        pp.check_manifest(t, ctx(), &policy, &arm64.0, &arm64.1)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code, ErrorCode::ManifestUnknown);
        for needle in [
            "single-platform image for linux/arm64/v8",
            &arm64.2.to_string(),
            "mirror.platforms = [\"linux/amd64\"]",
            "add \"linux/arm64/v8\" to mirror.platforms",
            "does not fetch its layers",
        ] {
            assert!(
                e.message.contains(needle),
                "{needle:?} not in {}",
                e.message
            );
        }
    }
    let e = pp.check_blob(t, &policy, &arm64.3).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::BlobUnknown);

    let e = pp
        .tag_manifest(t, ctx(), &policy, broken.0.clone(), broken.1.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ManifestUnknown);
    assert!(e.message.contains("names no platform"), "{}", e.message);
    pp.check_blob(t, &policy, &broken.3).await.unwrap_err();

    pp.tag_manifest(t, ctx(), &policy, artifact.0.clone(), artifact.1.clone())
        .await
        .unwrap();
    pp.check_blob(t, &policy, &artifact.3).await.unwrap();

    // Remembered: with the manifests and configs gone from the store, the answers stand.
    for (d, _, config, _) in [&amd64, &arm64] {
        f.store.remove(d).await.unwrap();
        f.store.remove(config).await.unwrap();
    }
    pp.tag_manifest(t, ctx(), &policy, amd64.0.clone(), amd64.1.clone())
        .await
        .unwrap();
    let e = pp
        .tag_manifest(t, ctx(), &policy, arm64.0.clone(), arm64.1.clone())
        .await
        .unwrap_err();
    assert!(e.message.contains("linux/arm64"), "{}", e.message);
}

/// Proves: an image manifest an index of the repository lists is judged by that index, also when it
/// is reached by a tag of its own; judged by its config before the index was known, it is judged
/// by the index from then on.
#[tokio::test]
async fn a_listed_image_is_judged_by_its_index() {
    let f = Fixture::new().await;
    let (pp, policy) = f.policy("[mirror]\nplatforms = [\"linux/amd64\"]\n");
    let t = &f.target;
    let amd64 = &f.images[0];
    let rec = f.meta.manifest(REPO, &amd64.0).await.unwrap().unwrap();
    // The fixture's config is the one byte 10: no JSON, so by its config the image has no platform.
    f.store
        .put(&amd64.1, Bytes::from_static(&[10]))
        .await
        .unwrap();
    let e = pp
        .tag_manifest(t, ctx(), &policy, amd64.0.clone(), rec.clone())
        .await
        .unwrap_err();
    assert!(e.message.contains("names no platform"), "{}", e.message);

    // The index lists it for linux/amd64: kept from now on, its blobs fetchable.
    pp.tag_manifest(t, ctx(), &policy, f.index.0.clone(), f.index.1.clone())
        .await
        .unwrap();
    pp.tag_manifest(t, ctx(), &policy, amd64.0.clone(), rec.clone())
        .await
        .unwrap();
    pp.check_manifest(t, ctx(), &policy, &amd64.0, &rec)
        .await
        .unwrap();
    pp.check_blob(t, &policy, &amd64.2).await.unwrap();

    // Under another policy the index leaves it out, and says so as for any unchosen child.
    let (pp, policy) = f.policy("[mirror]\nplatforms = [\"linux/arm64\"]\n");
    let e = pp
        .tag_manifest(t, ctx(), &policy, amd64.0.clone(), rec.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ManifestUnknown);
    assert!(
        e.message
            .contains(&format!("the linux/amd64 manifest of index {}", f.index.0)),
        "{}",
        e.message
    );
}
