//! Manifest media types and validation of pushed manifests.
//!
//! wharf never re-serialises a manifest: the bytes a client pushed are the bytes every later client gets,
//! so the digest always verifies. Parsing here only checks a manifest and extracts what the registry needs
//! to know about it (what it references, its subject, its artifact type).

use std::collections::HashMap;

use oci_spec::image::{Descriptor as OciDescriptor, ImageIndex, ImageManifest};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// Every manifest media type wharf stores and serves.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error(
        "manifest media type {0:?} is not supported; push an OCI image manifest or index, or a Docker \
         schema 2 manifest or manifest list"
    )]
    UnsupportedType(String),
    #[error(
        "Docker schema 1 manifests are deprecated and not accepted; convert the image (e.g. `skopeo copy \
         --format v2s2`)"
    )]
    Schema1,
    #[error("the Content-Type {content_type:?} does not match the manifest's mediaType {body:?}")]
    TypeMismatch { content_type: String, body: String },
    #[error("manifest schemaVersion is {0}; only 2 is supported")]
    SchemaVersion(u32),
    #[error("manifest is invalid as {media_type}: {reason}")]
    Invalid { media_type: String, reason: String },
    #[error("manifest references {0:?}, which is not a valid digest")]
    BadDigest(String),
}

/// What the registry needs to know of a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    /// Blobs that must be present in the repository (config and layers, minus foreign layers), each
    /// once, in the order the manifest names them.
    pub blobs: Vec<(Digest, u64)>,
    /// Child manifests that must be present in the repository (an index's entries), each once.
    pub manifests: Vec<(Digest, u64)>,
    pub subject: Option<Digest>,
    /// What the referrers API lists as this manifest's artifact type.
    pub artifact_type: Option<String>,
    pub annotations: Option<HashMap<String, String>>,
}

impl Manifest {
    /// The descriptor of this manifest as the referrers API lists it.
    pub fn descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.clone(),
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.as_ref().map(|a| {
                a.iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect()
            }),
        }
    }
}

/// The media type without parameters (`; charset=...`).
pub fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Layers whose bytes live elsewhere (`urls`): registries do not hold them, so a manifest may refer to
/// them without pushing them (Windows base layers).
fn is_foreign(d: &OciDescriptor) -> bool {
    let mt = d.media_type().to_string();
    let foreign = mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        || mt.starts_with("application/vnd.oci.image.layer.nondistributable.");
    foreign && d.urls().as_ref().is_some_and(|u| !u.is_empty())
}

/// Drops repeated digests, keeping the first. A manifest may name one blob twice (an artifact whose
/// config and layer are both the empty `{}`, a layer repeated in an image), but it is one requirement:
/// an error listing what is missing must name it once.
fn each_once(mut refs: Vec<(Digest, u64)>) -> Vec<(Digest, u64)> {
    let mut seen = std::collections::HashSet::new();
    refs.retain(|(d, _)| seen.insert(d.clone()));
    refs
}

fn digest_of(d: &OciDescriptor) -> Result<(Digest, u64), ManifestError> {
    let s = d.digest().to_string();
    let digest = s.parse().map_err(|_| ManifestError::BadDigest(s))?;
    Ok((digest, d.size()))
}

/// Checks a pushed manifest and extracts its references. `content_type` is the request's Content-Type.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let ct = content_type
        .map(bare_media_type)
        .filter(|c| MANIFEST_TYPES.contains(c) || DOCKER_SCHEMA1.contains(c));
    if let (Some(ct), Some(body)) = (ct, head.media_type.as_deref()) {
        if ct != body {
            return Err(ManifestError::TypeMismatch {
                content_type: ct.to_owned(),
                body: body.to_owned(),
            });
        }
    }
    // The OCI image spec lets mediaType be absent from a manifest; then the Content-Type says, and failing
    // that the shape does (an index has `manifests`).
    let media_type = match (head.media_type, ct) {
        (Some(m), _) => m,
        (None, Some(c)) => c.to_owned(),
        (None, None) if head.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
        return Err(ManifestError::Schema1);
    }
    let kind =
        kind_of(&media_type).ok_or_else(|| ManifestError::UnsupportedType(media_type.clone()))?;
    if let Some(v) = head.schema_version.filter(|v| *v != 2) {
        return Err(ManifestError::SchemaVersion(v));
    }
    let invalid = |e: serde_json::Error| ManifestError::Invalid {
        media_type: media_type.clone(),
        reason: e.to_string(),
    };
    match kind {
        Kind::Image => {
            let m: ImageManifest = serde_json::from_slice(bytes).map_err(invalid)?;
            let mut blobs = vec![digest_of(m.config())?];
            for l in m.layers().iter().filter(|l| !is_foreign(l)) {
                blobs.push(digest_of(l)?);
            }
            // The referrers API's rule: artifactType, else the config's media type.
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            Ok(Manifest {
                media_type,
                kind,
                blobs: each_once(blobs),
                manifests: Vec::new(),
                subject: m
                    .subject()
                    .as_ref()
                    .map(digest_of)
                    .transpose()?
                    .map(|d| d.0),
                artifact_type,
                annotations: m.annotations().clone(),
            })
        }
        Kind::Index => {
            let i: ImageIndex = serde_json::from_slice(bytes).map_err(invalid)?;
            Ok(Manifest {
                media_type,
                kind,
                blobs: Vec::new(),
                manifests: each_once(
                    i.manifests()
                        .iter()
                        .map(digest_of)
                        .collect::<Result<_, _>>()?,
                ),
                subject: i
                    .subject()
                    .as_ref()
                    .map(digest_of)
                    .transpose()?
                    .map(|d| d.0),
                artifact_type: i.artifact_type().as_ref().map(|t| t.to_string()),
                annotations: i.annotations().clone(),
            })
        }
    }
}

/// An OCI descriptor as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a manifest refers to: child manifests, config and layers, subject.
pub fn children_of(m: &Manifest) -> Vec<Digest> {
    m.manifests
        .iter()
        .chain(m.blobs.iter())
        .map(|(d, _)| d.clone())
        .chain(m.subject.clone())
        .collect()
}

#[cfg(test)]
mod tests;
