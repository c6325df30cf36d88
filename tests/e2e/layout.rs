//! Generates a multi-platform OCI image layout on disk, in Rust, so tests need no network and no
//! checked-in blobs.
//!
//! The image: an OCI index over linux/amd64, linux/arm64 and linux/arm/v7. Each platform has its own
//! config (valid OCI image config, rootfs.diff_ids filled in) and one or two layers of its own, on top of
//! one base layer shared by all three: the shared layer is what dedupe assertions count on. Layers are
//! real uncompressed tar archives holding a random file, so containerd can unpack them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::oci::{self, sha256_digest, Noise};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Desc {
    pub fn to_json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

#[derive(Clone, Debug)]
pub struct Platform {
    pub os: &'static str,
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
}

impl Platform {
    pub fn to_json(&self) -> Value {
        let mut p = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(v) = self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// One platform's image: manifest, config and layers (shared layer first).
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub platform: Platform,
    pub manifest: Desc,
    pub config: Desc,
    pub layers: Vec<Desc>,
}

/// What was written, for assertions.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    pub tag: String,
    pub index: Desc,
    pub images: Vec<PlatformImage>,
    pub shared_layer: Desc,
}

impl Layout {
    /// Every distinct digest: index, manifests, configs, layers (the shared layer once).
    pub fn all_digests(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::from([self.index.digest.clone()]);
        for img in &self.images {
            all.insert(img.manifest.digest.clone());
            all.insert(img.config.digest.clone());
            all.extend(img.layers.iter().map(|l| l.digest.clone()));
        }
        all
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        layout_blob_path(&self.dir, digest)
    }

    /// `oci:DIR:TAG`, for skopeo.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Makes `oci:DIR:TAG` name `architecture`'s image manifest instead of the index: a
    /// single-platform image (a plain manifest, no index), as most private registries hold. Returns
    /// that image; `index` and the other platforms' blobs stay on disk, named by nothing.
    pub fn retag_single(&self, architecture: &str) -> PlatformImage {
        let img = self
            .images
            .iter()
            .find(|i| i.platform.architecture == architecture)
            .unwrap_or_else(|| panic!("the layout has no {architecture} image"))
            .clone();
        let mut top = img.manifest.to_json();
        top["annotations"] = json!({ "org.opencontainers.image.ref.name": self.tag });
        let index_json =
            json!({ "schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [top] });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index_json).unwrap(),
        )
        .unwrap();
        img
    }
}

/// `<layout>/blobs/sha256/<64 hex>` (OCI image layouts are flat, unlike wharf's store).
pub fn layout_blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(oci::hex_part(digest))
}

/// Sizes and seed of a generated image. Different seeds give images with no blob in common.
#[derive(Clone, Debug)]
pub struct LayoutSpec {
    pub tag: String,
    pub seed: u64,
    /// Size of the random file in the layer every platform shares.
    pub shared_file_bytes: usize,
    /// Size of the random file in each platform's own layers.
    pub file_bytes: usize,
    /// If set, linux/amd64 gets one more layer with a file this large.
    pub large_file_bytes: Option<usize>,
}

impl LayoutSpec {
    /// A small image: a few hundred KiB in all, quick to push around.
    pub fn small(tag: &str, seed: u64) -> LayoutSpec {
        LayoutSpec {
            tag: tag.to_owned(),
            seed,
            shared_file_bytes: 96 * 1024,
            file_bytes: 24 * 1024,
            large_file_bytes: None,
        }
    }

    pub fn with_large_layer(mut self, bytes: usize) -> LayoutSpec {
        self.large_file_bytes = Some(bytes);
        self
    }
}

pub const PLATFORMS: [Platform; 3] = [
    Platform {
        os: "linux",
        architecture: "amd64",
        variant: None,
    },
    Platform {
        os: "linux",
        architecture: "arm64",
        variant: None,
    },
    Platform {
        os: "linux",
        architecture: "arm",
        variant: Some("v7"),
    },
];

/// Writes the layout into `dir` (created if needed) and returns its digests.
pub fn write_layout(dir: &Path, spec: &LayoutSpec) -> Layout {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout dirs");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

    let mut seeds = spec.seed.wrapping_mul(1_000_003);
    let mut next_seed = || {
        seeds += 1;
        seeds
    };

    let shared = tar_layer(
        "shared",
        "base.bin",
        &Noise::bytes(next_seed(), spec.shared_file_bytes),
    );
    let shared_layer = write_blob(dir, oci::OCI_LAYER_TAR, &shared);

    let mut images = Vec::new();
    for (i, platform) in PLATFORMS.iter().enumerate() {
        let tag = platform_tag(platform);
        // 1-2 own layers per platform (amd64 and arm/v7 get two), so manifests differ in shape too.
        let own = if i == 1 { 1 } else { 2 };
        let mut layers = vec![shared_layer.clone()];
        for n in 0..own {
            let data = tar_layer(
                &tag,
                &format!("layer{n}.bin"),
                &Noise::bytes(next_seed(), spec.file_bytes),
            );
            layers.push(write_blob(dir, oci::OCI_LAYER_TAR, &data));
        }
        if let (0, Some(large)) = (i, spec.large_file_bytes) {
            let data = tar_layer(&tag, "large.bin", &Noise::bytes(next_seed(), large));
            layers.push(write_blob(dir, oci::OCI_LAYER_TAR, &data));
        }
        let config = write_blob(
            dir,
            oci::OCI_CONFIG,
            &config_json(platform, &layers, spec.seed),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Desc::to_json).collect::<Vec<_>>(),
        });
        let manifest = write_blob(
            dir,
            oci::OCI_MANIFEST,
            &serde_json::to_vec_pretty(&manifest).unwrap(),
        );
        images.push(PlatformImage {
            platform: platform.clone(),
            manifest,
            config,
            layers,
        });
    }

    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": images.iter().map(|img| {
            let mut d = img.manifest.to_json();
            d["platform"] = img.platform.to_json();
            d
        }).collect::<Vec<_>>(),
    });
    let index = write_blob(
        dir,
        oci::OCI_INDEX,
        &serde_json::to_vec_pretty(&index).unwrap(),
    );

    // index.json names the index by tag, which is how `oci:DIR:TAG` finds it.
    let mut top = index.to_json();
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": spec.tag });
    let index_json = json!({ "schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [top] });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec_pretty(&index_json).unwrap(),
    )
    .unwrap();

    Layout {
        dir: dir.to_path_buf(),
        tag: spec.tag.clone(),
        index,
        images,
        shared_layer,
    }
}

fn platform_tag(p: &Platform) -> String {
    match p.variant {
        Some(v) => format!("{}-{}-{v}", p.os, p.architecture),
        None => format!("{}-{}", p.os, p.architecture),
    }
}

fn write_blob(dir: &Path, media_type: &str, data: &[u8]) -> Desc {
    let digest = sha256_digest(data);
    fs::write(layout_blob_path(dir, &digest), data).expect("write layout blob");
    Desc {
        media_type: media_type.to_owned(),
        digest,
        size: data.len() as u64,
    }
}

/// An OCI image config for `platform`. Layers are uncompressed, so each diff_id is the layer digest.
fn config_json(platform: &Platform, layers: &[Desc], seed: u64) -> Vec<u8> {
    let mut config = json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": { "org.example.wharf-e2e.seed": seed.to_string() },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().enumerate().map(|(i, _)| json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("wharf-e2e layer {i}"),
        })).collect::<Vec<_>>(),
    });
    if let Some(v) = platform.variant {
        config["variant"] = json!(v);
    }
    serde_json::to_vec_pretty(&config).unwrap()
}

/// A tar with `dir/` and `dir/file`, fixed owner and mtime so the same seed always gives the same digest.
fn tar_layer(dir: &str, file: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::with_capacity(content.len() + 4096));
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path(format!("{dir}/")).unwrap();
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_704_067_200);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();

    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(format!("{dir}/{file}")).unwrap();
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    h.set_mtime(1_704_067_200);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, content).unwrap();
    b.into_inner().unwrap()
}

/// Asserts that `out_dir` (an OCI layout written by a pull) holds exactly `src`: the same index digest
/// under the same tag, and every blob byte-for-byte, with nothing missing and nothing extra.
pub fn assert_same_image(src: &Layout, out_dir: &Path, tag: &str) {
    let index_json: Value = serde_json::from_slice(&fs::read(out_dir.join("index.json")).unwrap())
        .unwrap_or_else(|e| panic!("{}/index.json: {e}", out_dir.display()));
    let tagged: Vec<&Value> = index_json["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert_eq!(
        tagged.len(),
        1,
        "index.json of {} names tag {tag} once: {index_json}",
        out_dir.display()
    );
    assert_eq!(
        tagged[0]["digest"], src.index.digest,
        "index digest changed on the way: {index_json}"
    );

    let got: BTreeSet<String> = fs::read_dir(out_dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let want = src.all_digests();
    assert_eq!(
        got,
        want,
        "blobs in the pulled layout {} differ from the pushed image",
        out_dir.display()
    );
    for digest in &want {
        let pulled = fs::read(layout_blob_path(out_dir, digest)).unwrap();
        assert!(
            pulled == fs::read(src.blob_path(digest)).unwrap(),
            "blob {digest} bytes differ after the round trip"
        );
        assert_eq!(
            sha256_digest(&pulled),
            *digest,
            "pulled blob does not hash to its name"
        );
    }
}

/// The generator itself must produce what it claims: readable tars, diff_ids that match, a
/// shared layer. Checked without any registry, so a failure here is never blamed on wharf.
#[test]
fn generated_layout_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = write_layout(tmp.path(), &LayoutSpec::small("v1", 1));
    // 1 index + 3 manifests + 3 configs + 1 shared + 2 + 1 + 2 own layers.
    assert_eq!(layout.all_digests().len(), 13);
    for img in &layout.images {
        assert_eq!(img.layers[0], layout.shared_layer);
        let config: Value =
            serde_json::from_slice(&fs::read(layout.blob_path(&img.config.digest)).unwrap())
                .unwrap();
        assert_eq!(config["architecture"], img.platform.architecture);
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            diff_ids,
            img.layers
                .iter()
                .map(|l| l.digest.as_str())
                .collect::<Vec<_>>()
        );
        for layer in &img.layers {
            let data = fs::read(layout.blob_path(&layer.digest)).unwrap();
            assert_eq!(data.len() as u64, layer.size);
            let mut archive = tar::Archive::new(&data[..]);
            let kinds: Vec<(bool, u64)> = archive
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.header().entry_type().is_dir(), e.header().size().unwrap())
                })
                .collect();
            assert!(
                matches!(kinds[..], [(true, 0), (false, n)] if n > 0),
                "layer {} must hold a dir and a non-empty file: {kinds:?}",
                layer.digest
            );
        }
    }
    let again = write_layout(&tmp.path().join("again"), &LayoutSpec::small("v1", 1));
    assert_eq!(again.index, layout.index, "same seed, same image");
}
