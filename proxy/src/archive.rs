//! `wharf export`, `wharf import` and `wharf images pull`: images as OCI image layout archives (or,
//! exported for `docker load`, in `docker save`'s layout: `docker.rs`), and the cache filled ahead of
//! time.
//!
//! All three are clients of wharf's own registry API (`client.rs`), never of its store: a cold cache
//! is filled through the mirror, with its platform policy, single-flight fills and leases, and an
//! import is checked like any push. The plan (`plan`) fetches the index, then only the chosen
//! platforms' manifests, and lists their configs and layers: nothing of another platform is asked
//! for (the `nerdctl save` bug fetched every platform to save one).
//!
//! An export's `index.json` points at the original index, byte for byte as the registry served it:
//! the children of platforms not chosen are simply absent (containerd's sparse export does the
//! same). `--reduced` points it at the index reduced to the chosen platforms instead, made by the
//! mirror's own `wharf_model::platform::reduce` (so it is the very index wharf serves in `rewritten` mode for the
//! same choice), with the original's digest in `dev.wharf.reduced-from`.

use std::collections::HashSet;
use std::path::Path;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use wharf_model::config::Config;
use wharf_model::digest::Digest;
use wharf_model::manifest::{self, Kind};
use wharf_model::platform::{PlatformSpec, REDUCED_FROM};
use wharf_model::reference::Reference;

pub mod client;
pub mod docker;
mod error;
mod image_ref;
pub mod import;
mod plan;
pub mod tarball;

#[cfg(test)]
mod tests;

pub use client::{Fetched, WharfApi};
pub use error::{ArchiveError, Refusal};
pub use image_ref::{ImageRef, CONTAINERD_NAME, REF_NAME};
pub use import::{import, import_with, ImportReport};
pub use plan::Plan;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// How deep indexes may nest (an index of indexes); real images have one level.
const MAX_DEPTH: usize = 4;

/// The layout `wharf export` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/`): podman and skopeo
    /// (`oci-archive:`), `ctr images import`, `wharf import`.
    #[default]
    Oci,
    /// `docker save`'s layout (`manifest.json`, `repositories`, `blobs/`), one image: `docker load`
    /// (20.10 reads no other), podman and skopeo (`docker-archive:`), `ctr images import`.
    Docker,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "oci" => Ok(Format::Oci),
            "docker" => Ok(Format::Docker),
            _ => Err(format!(
                "{s:?} is not an archive format: use oci (OCI image layout) or docker (what \
                 `docker load` reads)"
            )),
        }
    }
}

/// Which platforms to take, and which index the archive points at.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// Empty: what wharf's platform policy keeps (every platform when it has none).
    pub platforms: Vec<PlatformSpec>,
    /// Point `index.json` at the index reduced to the chosen platforms.
    pub reduced: bool,
}

fn refused(what: impl Into<String>) -> impl FnOnce(Refusal) -> ArchiveError {
    let what = what.into();
    move |refusal| ArchiveError::Refused { what, refusal }
}

/// Fetches the manifests of what `r` names that `choice` keeps, and lists their blobs.
pub async fn plan(reg: &WharfApi, r: &ImageRef, choice: &Choice) -> Result<Plan, ArchiveError> {
    let served = reg
        .manifest(r, &r.reference.to_string())
        .await?
        .map_err(refused(format!("manifest {r}")))?;
    let mut plan = Plan {
        top: served.clone(),
        manifests: Vec::new(),
        blobs: Vec::new(),
        platforms: Vec::new(),
        left_out: Vec::new(),
        reduced_from: None,
    };
    let mut seen_blobs = HashSet::new();
    match manifest::kind_of(&served.media_type) {
        Some(Kind::Image) => {
            if !choice.platforms.is_empty() {
                plan.left_out.push(format!(
                    "{r} is a single-platform image, not an index: --platform has nothing to choose from"
                ));
            }
            add_image(&mut plan, &mut seen_blobs, served)?;
        }
        Some(Kind::Index) => {
            // In `platform_mode = "rewritten"` a tag serves wharf's reduced index; an archive starts
            // from the original, which stays retrievable by its digest.
            let original = match reduced_from(&served.bytes) {
                Some(orig) if orig != served.digest => reg
                    .manifest(r, &orig.to_string())
                    .await?
                    .map_err(refused(format!("original index {orig} of {r}")))?,
                _ => served,
            };
            walk_index(reg, r, choice, &mut plan, &mut seen_blobs, original.clone()).await?;
            if choice.reduced {
                let bytes = wharf_model::platform::reduce(
                    &original.digest,
                    &original.bytes,
                    &plan.platforms,
                )
                .map_err(|e| {
                    ArchiveError::Invalid(format!(
                        "cannot reduce index {} of {r}: {e}",
                        original.digest
                    ))
                })?;
                plan.reduced_from = Some(original.digest.clone());
                plan.top = Fetched {
                    digest: Digest::sha256_of(&bytes),
                    media_type: original.media_type.clone(),
                    bytes: Bytes::from(bytes),
                };
                plan.manifests[0] = plan.top.clone();
            } else {
                plan.top = original;
            }
        }
        None => {
            return Err(ArchiveError::Invalid(format!(
                "{r} is a {}, which is neither an image manifest nor an index",
                served.media_type
            )))
        }
    }
    Ok(plan)
}

fn add_image(plan: &mut Plan, seen: &mut HashSet<Digest>, m: Fetched) -> Result<(), ArchiveError> {
    let parsed = manifest::parse(Some(&m.media_type), &m.bytes)
        .map_err(|e| ArchiveError::Invalid(format!("manifest {} cannot be read: {e}", m.digest)))?;
    for (d, size) in parsed.blobs {
        if seen.insert(d.clone()) {
            plan.blobs.push((d, size));
        }
    }
    if !plan.manifests.iter().any(|x| x.digest == m.digest) {
        plan.manifests.push(m);
    }
    Ok(())
}

/// The digest a wharf-reduced index was made from.
fn reduced_from(index: &[u8]) -> Option<Digest> {
    let v: Value = serde_json::from_slice(index).ok()?;
    v.get("annotations")?
        .get(REDUCED_FROM)?
        .as_str()?
        .parse()
        .ok()
}

/// The index and the children `choice` keeps (nested indexes too), in index order.
async fn walk_index(
    reg: &WharfApi,
    r: &ImageRef,
    choice: &Choice,
    plan: &mut Plan,
    seen: &mut HashSet<Digest>,
    index: Fetched,
) -> Result<(), ArchiveError> {
    let mut pending = vec![(index, 0usize)];
    while let Some((index, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(ArchiveError::Invalid(format!(
                "indexes of {r} nest more than {MAX_DEPTH} deep"
            )));
        }
        let entries = wharf_model::platform::entries(&index.bytes).map_err(|e| {
            ArchiveError::Invalid(format!("index {} cannot be read: {e}", index.digest))
        })?;
        if !plan.manifests.iter().any(|x| x.digest == index.digest) {
            plan.manifests.push(index.clone());
        }
        let mut offered = Vec::new();
        let mut kept = 0;
        for e in entries {
            let name = e
                .platform
                .as_ref()
                .map_or_else(|| "(no platform)".to_owned(), ToString::to_string);
            offered.push(name.clone());
            let wanted = choice.platforms.is_empty()
                || e.platform
                    .as_ref()
                    .is_some_and(|p| choice.platforms.iter().any(|s| s.matches(p)));
            if !wanted {
                plan.left_out
                    .push(format!("{name} ({}): not asked for", e.digest));
                continue;
            }
            let child = match reg.manifest(r, &e.digest.to_string()).await? {
                Ok(m) => m,
                // Without --platform the mirror's policy decides: what it leaves out answers 404
                // (it is never fetched upstream), and the archive goes without it.
                Err(refusal)
                    if choice.platforms.is_empty() && refusal.status == StatusCode::NOT_FOUND =>
                {
                    plan.left_out
                        .push(format!("{name} ({}): {}", e.digest, refusal.message));
                    continue;
                }
                Err(refusal) => {
                    return Err(refused(format!("the {name} manifest {} of {r}", e.digest))(
                        refusal,
                    ))
                }
            };
            kept += 1;
            if let Some(p) = &e.platform {
                if !plan.platforms.contains(p) {
                    plan.platforms.push(p.clone());
                }
            }
            match manifest::kind_of(&child.media_type) {
                Some(Kind::Index) => pending.push((child, depth + 1)),
                _ => add_image(plan, seen, child)?,
            }
        }
        if kept == 0 && !offered.is_empty() {
            let asked = if choice.platforms.is_empty() {
                "wharf's platform policy".to_owned()
            } else {
                choice
                    .platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ArchiveError::Platforms(format!(
                "index {} of {r} offers {}; {asked} keeps none of them (name one with --platform)",
                index.digest,
                offered.join(", ")
            )));
        }
    }
    Ok(())
}

/// What `index.json` says: one entry, the top manifest, named.
pub fn index_json(plan: &Plan, r: &ImageRef) -> Vec<u8> {
    let mut notes = serde_json::Map::new();
    notes.insert(CONTAINERD_NAME.into(), json!(r.to_string()));
    // As containerd and skopeo write it: the tag (`oci-archive:F.tar:TAG` finds it); a digest
    // reference has no tag, so the full name.
    let ref_name = match &r.reference {
        Reference::Tag(t) => t.to_string(),
        Reference::Digest(_) => r.to_string(),
    };
    notes.insert(REF_NAME.into(), json!(ref_name));
    if let Some(orig) = &plan.reduced_from {
        notes.insert(REDUCED_FROM.into(), json!(orig.to_string()));
    }
    let v = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": [{
            "mediaType": plan.top.media_type,
            "digest": plan.top.digest.to_string(),
            "size": plan.top.bytes.len(),
            "annotations": notes,
        }],
    });
    serde_json::to_vec(&v).expect("JSON value")
}

/// What an export or a warm-up did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub digest: String,
    pub reduced_from: Option<String>,
    pub platforms: Vec<String>,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub left_out: Vec<String>,
    /// A docker archive's image: the ID `docker load` gives it (its config's digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// A docker archive's image: the name `docker load` gives it (none for a digest reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_tag: Option<String>,
}

impl Report {
    fn of(plan: &Plan, r: &ImageRef) -> Report {
        Report {
            image: r.to_string(),
            digest: plan.top.digest.to_string(),
            reduced_from: plan.reduced_from.as_ref().map(ToString::to_string),
            platforms: plan.platforms.iter().map(ToString::to_string).collect(),
            manifests: plan.manifests.len(),
            blobs: plan.blobs.len(),
            bytes: plan.blob_bytes(),
            left_out: plan.left_out.clone(),
            image_id: None,
            repo_tag: None,
        }
    }

    /// A docker archive holds no manifest: the image's config and layers only.
    fn of_docker(plan: &Plan, r: &ImageRef, image: &docker::Image) -> Report {
        let blobs = image.blobs();
        Report {
            manifests: 0,
            blobs: blobs.len(),
            bytes: blobs.iter().map(|(_, s)| s).sum(),
            image_id: Some(image.id().to_string()),
            repo_tag: image.repo_tag.clone(),
            ..Report::of(plan, r)
        }
    }
}

/// Writes `r`'s chosen platforms to `out` as a tar in `format` (through `out.partial`, renamed once
/// complete: a failed export leaves no archive).
pub async fn export_with(
    reg: &WharfApi,
    r: &ImageRef,
    choice: &Choice,
    format: Format,
    out: &Path,
) -> Result<Report, ArchiveError> {
    if format == Format::Docker && choice.reduced {
        return Err(ArchiveError::Invalid(
            "--reduced points an OCI archive at a reduced index; a docker archive holds one image \
             and no index: leave out --reduced"
                .into(),
        ));
    }
    let plan = plan(reg, r, choice).await?;
    let image = match format {
        Format::Oci => None,
        Format::Docker => Some(docker::image_of(&plan, r)?),
    };
    let partial = {
        let mut p = out.as_os_str().to_owned();
        p.push(".partial");
        std::path::PathBuf::from(p)
    };
    let written = match &image {
        None => write_archive(reg, r, &plan, &partial).await,
        Some(image) => write_docker_archive(reg, r, image, &partial).await,
    };
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, out)
        .await
        .map_err(|source| ArchiveError::File {
            path: out.display().to_string(),
            source,
        })?;
    Ok(match &image {
        None => Report::of(&plan, r),
        Some(image) => Report::of_docker(&plan, r, image),
    })
}

async fn write_archive(
    reg: &WharfApi,
    r: &ImageRef,
    plan: &Plan,
    path: &Path,
) -> Result<(), ArchiveError> {
    let mut w = tarball::TarWriter::create(path).await?;
    w.file("oci-layout", OCI_LAYOUT).await?;
    w.file("index.json", &index_json(plan, r)).await?;
    for m in &plan.manifests {
        w.blob_bytes(&m.digest, &m.bytes).await?;
    }
    for (d, size) in &plan.blobs {
        if w.has(d) {
            continue;
        }
        let body = reg.blob(r, d).await?;
        w.blob_stream(d, *size, body).await?;
    }
    w.finish().await
}

async fn write_docker_archive(
    reg: &WharfApi,
    r: &ImageRef,
    image: &docker::Image,
    path: &Path,
) -> Result<(), ArchiveError> {
    let mut w = tarball::TarWriter::create(path).await?;
    w.file("manifest.json", &docker::manifest_json(image))
        .await?;
    w.file("repositories", &docker::repositories_json(image))
        .await?;
    for (d, size) in image.blobs() {
        let body = reg.blob(r, &d).await?;
        w.blob_stream(&d, size, body).await?;
    }
    w.finish().await
}

/// `wharf export`: through the wharf serving `cfg` (or one started here).
pub async fn export(
    cfg: &Config,
    r: &ImageRef,
    choice: &Choice,
    format: Format,
    out: &Path,
) -> Result<Report, ArchiveError> {
    let reg = WharfApi::connect(cfg).await?;
    let res = export_with(&reg, r, choice, format, out).await;
    reg.close().await;
    res
}

/// Fetches every blob of the plan through wharf, verifying each, writing nothing: the mirror fills
/// its cache on the way.
pub async fn pull_with(
    reg: &WharfApi,
    r: &ImageRef,
    choice: &Choice,
) -> Result<Report, ArchiveError> {
    use http_body_util::BodyExt as _;
    let plan = plan(reg, r, choice).await?;
    for (d, size) in &plan.blobs {
        let mut body = reg.blob(r, d).await?;
        let mut hasher = d.algorithm().hasher();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ArchiveError::Http(format!("blob {d}: {e}")))?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                hasher.update(&data);
            }
        }
        let actual = hasher.finish();
        if got != *size {
            return Err(ArchiveError::SizeMismatch {
                what: format!("blob {d}"),
                expected: *size,
                actual: got,
            });
        }
        if &actual != d {
            return Err(ArchiveError::DigestMismatch {
                what: format!("blob {d}"),
                expected: d.clone(),
                actual,
            });
        }
    }
    Ok(Report::of(&plan, r))
}

/// `wharf images pull`.
pub async fn pull(cfg: &Config, r: &ImageRef, choice: &Choice) -> Result<Report, ArchiveError> {
    let reg = WharfApi::connect(cfg).await?;
    let res = pull_with(&reg, r, choice).await;
    reg.close().await;
    res
}
