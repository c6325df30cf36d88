//! `wharf export --format docker`: the layout `docker save` writes and `docker load` reads, which
//! docker before 25 needs (it cannot load an OCI image layout: it takes a tar without `manifest.json`
//! for the pre-1.10 format and fails on `blobs/json`).
//!
//! ```text
//! manifest.json   [{"Config": "blobs/sha256/<config>", "RepoTags": ["name:tag"],
//!                   "Layers": ["blobs/sha256/<layer>", …]}]
//! repositories    {"name": {"tag": "<top layer>"}}
//! blobs/sha256/…  the config and the layers, bytes as the registry holds them
//! ```
//!
//! Blobs keep their content-addressed names (`blobs/sha256/<hex>`, as docker 25 writes them) rather
//! than docker 1.10's `<hex>.json` and `<v1 id>/layer.tar`: every loader reads the paths
//! `manifest.json` gives (docker 20.10's `docker load`, podman's and skopeo's `docker-archive:`),
//! and layers stay as the registry holds them, compressed, hashed as written and named by that
//! hash. docker and containers/image decompress a gzip layer on load and check it against the
//! config's `rootfs.diff_ids`, so the image ID is the config's digest, as after a pull.
//!
//! One image per archive: `manifest.json` can list several, but each is one config, so an index is
//! reduced to the one platform chosen, and several are refused.

use serde_json::json;

use super::error::ArchiveError;
use super::image_ref::ImageRef;
use super::plan::Plan;
use wharf_model::digest::Digest;
use wharf_model::manifest::{self, Kind};
use wharf_model::reference::Reference;

/// Config media types of container images (a Helm chart or another artifact has one of its own).
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The one image a docker archive of a plan holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image manifest it comes from.
    pub manifest: Digest,
    pub config: (Digest, u64),
    /// In the manifest's order, repeats kept: `Layers[i]` goes with `rootfs.diff_ids[i]`.
    pub layers: Vec<(Digest, u64)>,
    /// `name:tag` as `docker load` names the image; none for a digest reference (it loads untagged).
    pub repo_tag: Option<String>,
}

impl Image {
    /// The image ID docker gives it: the digest of its config.
    pub fn id(&self) -> &Digest {
        &self.config.0
    }

    /// The blobs to write: the config, then each layer once.
    pub fn blobs(&self) -> Vec<(Digest, u64)> {
        let mut out = vec![self.config.clone()];
        for l in &self.layers {
            if !out.contains(l) {
                out.push(l.clone());
            }
        }
        out
    }
}

/// The image of `plan` a docker archive holds: the plan's only image manifest (a platform chosen
/// from an index), its config and layers.
pub fn image_of(plan: &Plan, r: &ImageRef) -> Result<Image, ArchiveError> {
    let images: Vec<_> = plan
        .manifests
        .iter()
        .filter(|m| manifest::kind_of(&m.media_type) == Some(Kind::Image))
        .collect();
    let m = match images[..] {
        [one] => one,
        [] => {
            return Err(ArchiveError::Invalid(format!(
                "{r} holds no image manifest to export"
            )))
        }
        _ => {
            let names: Vec<String> = plan.platforms.iter().map(ToString::to_string).collect();
            return Err(ArchiveError::Platforms(format!(
                "{r} is an index of {} platforms here ({}); a docker archive holds one image: \
                 choose one with --platform, or export the OCI format (--format oci) for all",
                images.len(),
                names.join(", ")
            )));
        }
    };
    let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&m.bytes)
        .map_err(|e| ArchiveError::Invalid(format!("manifest {} cannot be read: {e}", m.digest)))?;
    let descriptor = |d: &oci_spec::image::Descriptor| -> Result<(Digest, u64), ArchiveError> {
        let s = d.digest().to_string();
        let digest = s.parse().map_err(|_| {
            ArchiveError::Invalid(format!(
                "manifest {} names {s:?}, which is not a digest",
                m.digest
            ))
        })?;
        Ok((digest, d.size()))
    };
    let config_type = parsed.config().media_type().to_string();
    if !IMAGE_CONFIGS.contains(&config_type.as_str()) {
        return Err(ArchiveError::Invalid(format!(
            "{r} is not a container image (its config is {config_type}); a docker archive holds \
             container images only: export it in the OCI format (--format oci)"
        )));
    }
    let mut layers = Vec::new();
    for l in parsed.layers() {
        if l.urls().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(ArchiveError::Invalid(format!(
                "{r} has a foreign layer {} (its bytes are at {}, not in registries); a docker \
                 archive cannot hold it: export the OCI format (--format oci)",
                l.digest(),
                l.urls().as_ref().map(|u| u.join(", ")).unwrap_or_default()
            )));
        }
        layers.push(descriptor(l)?);
    }
    Ok(Image {
        manifest: m.digest.clone(),
        config: descriptor(parsed.config())?,
        layers,
        repo_tag: match &r.reference {
            Reference::Tag(_) => Some(r.to_string()),
            Reference::Digest(_) => None,
        },
    })
}

/// `manifest.json`.
pub fn manifest_json(image: &Image) -> Vec<u8> {
    let v = json!([{
        "Config": super::tarball::blob_path(&image.config.0),
        "RepoTags": image.repo_tag.iter().collect::<Vec<_>>(),
        "Layers": image
            .layers
            .iter()
            .map(|(d, _)| super::tarball::blob_path(d))
            .collect::<Vec<_>>(),
    }]);
    serde_json::to_vec(&v).expect("JSON value")
}

/// `repositories`: docker before 1.10 read tags from it (and docker still writes it). Its top
/// layer is named by the digest of the layer's blob; no loader that reads `manifest.json` looks.
pub fn repositories_json(image: &Image) -> Vec<u8> {
    let mut repos = serde_json::Map::new();
    if let (Some(repo_tag), Some((top, _))) = (&image.repo_tag, image.layers.last()) {
        // The tag follows the last ':' after the last '/' (a registry port comes before a '/').
        let slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
        if let Some(colon) = repo_tag[slash..].rfind(':') {
            let (name, tag) = (&repo_tag[..slash + colon], &repo_tag[slash + colon + 1..]);
            repos.insert(name.to_owned(), json!({ tag: top.hex() }));
        }
    }
    serde_json::to_vec(&repos).expect("JSON value")
}
