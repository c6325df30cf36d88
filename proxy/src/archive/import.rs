//! `wharf import`: an OCI image layout tar (wharf's export, skopeo's `oci-archive`, `ctr images
//! export`) pushed into wharf through its registry API: blobs, then manifests by digest (children
//! before the index), then the tag. Digests are kept: every manifest is pushed as the bytes in the
//! archive.
//!
//! A sparse archive (an original index whose unchosen children are absent, as `wharf export` and
//! containerd write by default) cannot be stored as is: wharf, like distribution, refuses an index
//! whose children it does not have. Such an index is stored reduced to the children present
//! (`wharf_model::platform::reduce`, annotated with the original digest), and the import says so.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use wharf_model::config::Config;
use wharf_model::digest::Digest;
use wharf_model::manifest::{self, Kind};
use wharf_model::reference::{Reference, RepoName, Tag};

use super::client::{ReaderBody, WharfApi};
use super::error::ArchiveError;
use super::image_ref::{ImageRef, CONTAINERD_NAME, REF_NAME};
use super::tarball::{self, blob_path, Region};

/// What one image of the archive became.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// `repo:tag`, or `repo@digest` when the archive names no tag.
    pub name: String,
    pub digest: String,
    /// When the archive's index was sparse and was stored reduced: the original's digest.
    pub reduced_from: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub images: Vec<Imported>,
    pub manifests: usize,
    pub blobs_pushed: usize,
    /// Blobs the repository had already (not sent again).
    pub blobs_present: usize,
    pub bytes: u64,
    pub notes: Vec<String>,
}

/// `--tag REPO[:TAG]`: a repository of wharf's own.
fn parse_tag_arg(s: &str) -> Result<(String, Option<Tag>), ArchiveError> {
    let r: ImageRef = s.parse()?;
    if let Some(h) = &r.host {
        return Err(ArchiveError::Ref(format!(
            "--tag {s}: name a repository of wharf's own, without a registry host ({h})"
        )));
    }
    let explicit_tag = s.rsplit('/').next().is_some_and(|last| last.contains(':'));
    match r.reference {
        Reference::Tag(t) => Ok((r.name, explicit_tag.then_some(t))),
        Reference::Digest(_) => Err(ArchiveError::Ref(format!(
            "--tag {s}: give a tag, not a digest (digests are kept as they are)"
        ))),
    }
}

/// What an `index.json` entry names: a full reference (containerd's annotation, or a ref.name with
/// a repository), or only a tag (skopeo's `oci-archive`).
enum Named {
    Full(ImageRef),
    TagOnly(Tag),
    Nothing,
}

fn named(annotations: Option<&Value>) -> Result<Named, ArchiveError> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    if let Some(full) = get(CONTAINERD_NAME) {
        return Ok(Named::Full(full.parse()?));
    }
    match get(REF_NAME) {
        Some(n) if n.contains(['/', ':', '@']) => Ok(Named::Full(n.parse()?)),
        Some(n) => Ok(Named::TagOnly(n.parse().map_err(|e| {
            ArchiveError::Invalid(format!("the archive names the image {n:?}: {e}"))
        })?)),
        None => Ok(Named::Nothing),
    }
}

struct Importer<'a> {
    reg: &'a WharfApi,
    file: PathBuf,
    entries: HashMap<String, Region>,
    max_manifest: u64,
    /// (repo, digest) already pushed in this run.
    done: HashSet<(String, Digest)>,
    report: ImportReport,
}

/// What was stored for a manifest of the archive (the reduced index, for a sparse one).
struct Stored {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
    reduced_from: Option<Digest>,
}

impl Importer<'_> {
    fn region(&self, d: &Digest) -> Option<Region> {
        self.entries.get(&blob_path(d)).copied()
    }

    async fn read_manifest(&self, d: &Digest) -> Result<Bytes, ArchiveError> {
        let region = self.region(d).ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "{} has no {} (manifest {d})",
                self.file.display(),
                blob_path(d)
            ))
        })?;
        let bytes = tarball::read_region(&self.file, region, self.max_manifest).await?;
        let actual = Digest::of(d.algorithm(), &bytes);
        if &actual != d {
            return Err(ArchiveError::DigestMismatch {
                what: format!("manifest {} in {}", blob_path(d), self.file.display()),
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    async fn push_blob(&mut self, repo: &str, d: &Digest, size: u64) -> Result<(), ArchiveError> {
        if !self.done.insert((repo.to_owned(), d.clone())) {
            return Ok(());
        }
        let region = self.region(d).ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "{} has no {}, which a manifest in it needs",
                self.file.display(),
                blob_path(d)
            ))
        })?;
        if region.size != size {
            return Err(ArchiveError::SizeMismatch {
                what: format!("{} in {}", blob_path(d), self.file.display()),
                expected: size,
                actual: region.size,
            });
        }
        if self.reg.has_blob(repo, d).await? {
            self.report.blobs_present += 1;
            return Ok(());
        }
        let reader = tarball::open_region(&self.file, region).await?;
        // wharf verifies the digest (and size) as it commits the upload.
        self.reg
            .push_blob(repo, d, size, ReaderBody::boxed(reader, size))
            .await?;
        self.report.blobs_pushed += 1;
        self.report.bytes += size;
        Ok(())
    }

    async fn put(
        &mut self,
        repo: &str,
        d: &Digest,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Result<(), super::Refusal>, ArchiveError> {
        let r = self
            .reg
            .put_manifest(repo, &d.to_string(), media_type, bytes)
            .await?;
        if r.is_ok() {
            self.report.manifests += 1;
        }
        Ok(r)
    }

    /// Pushes manifest `d` of the archive and everything it references that the archive holds,
    /// children first.
    async fn push_manifest(
        &mut self,
        repo: &str,
        d: &Digest,
        listed_type: Option<&str>,
    ) -> Result<Stored, ArchiveError> {
        let bytes = self.read_manifest(d).await?;
        let parsed = manifest::parse(listed_type, &bytes)
            .or_else(|_| manifest::parse(None, &bytes))
            .map_err(|e| {
                ArchiveError::Invalid(format!("manifest {d} in the archive cannot be read: {e}"))
            })?;
        let media_type = parsed.media_type.clone();
        let stored = |bytes: Bytes| Stored {
            digest: d.clone(),
            media_type: media_type.clone(),
            bytes,
            reduced_from: None,
        };
        if self.done.contains(&(repo.to_owned(), d.clone())) {
            return Ok(stored(bytes));
        }
        match parsed.kind {
            Kind::Image => {
                for (b, size) in &parsed.blobs {
                    self.push_blob(repo, b, *size).await?;
                }
                self.put(repo, d, &media_type, bytes.clone())
                    .await?
                    .map_err(super::refused(format!("manifest {d} pushed to {repo}")))?;
                self.done.insert((repo.to_owned(), d.clone()));
                Ok(stored(bytes))
            }
            Kind::Index => {
                let entries = wharf_model::platform::entries(&bytes).map_err(|e| {
                    ArchiveError::Invalid(format!("index {d} in the archive cannot be read: {e}"))
                })?;
                let mut present = Vec::new();
                let mut absent = Vec::new();
                for e in entries {
                    if self.region(&e.digest).is_some() {
                        Box::pin(self.push_manifest(repo, &e.digest, None)).await?;
                        if let Some(p) = e.platform {
                            present.push(p);
                        }
                    } else {
                        absent.push(e);
                    }
                }
                let refusal = match self.put(repo, d, &media_type, bytes.clone()).await? {
                    Ok(()) => {
                        self.done.insert((repo.to_owned(), d.clone()));
                        return Ok(stored(bytes));
                    }
                    Err(refusal) => refusal,
                };
                if absent.is_empty() || refusal.code.as_deref() != Some("MANIFEST_BLOB_UNKNOWN") {
                    return Err(super::refused(format!("index {d} pushed to {repo}"))(
                        refusal,
                    ));
                }
                let reduced = wharf_model::platform::reduce(d, &bytes, &present)
                    .map_err(|e| ArchiveError::Invalid(format!("cannot reduce index {d}: {e}")))?;
                let reduced = Bytes::from(reduced);
                let rd = Digest::sha256_of(&reduced);
                self.put(repo, &rd, &media_type, reduced.clone())
                    .await?
                    .map_err(super::refused(format!(
                        "reduced index {rd} pushed to {repo}"
                    )))?;
                self.report.notes.push(format!(
                    "index {d} is sparse in the archive ({} of its entries absent: {}); wharf keeps \
                     no index without its children, so {repo} holds it reduced to the entries \
                     present, as {rd} (annotated {}: {d})",
                    absent.len(),
                    absent
                        .iter()
                        .map(|e| e
                            .platform
                            .as_ref()
                            .map_or_else(|| e.digest.to_string(), ToString::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                    wharf_model::platform::REDUCED_FROM
                ));
                Ok(Stored {
                    digest: rd,
                    media_type,
                    bytes: reduced,
                    reduced_from: Some(d.clone()),
                })
            }
        }
    }
}

/// Imports the archive at `file` through `reg`. `tag`: `REPO[:TAG]` for the image (an archive of
/// one image); without it each image takes the name the archive gives it.
pub async fn import_with(
    reg: &WharfApi,
    file: &Path,
    tag: Option<&str>,
    max_manifest: u64,
) -> Result<ImportReport, ArchiveError> {
    let path = file.to_owned();
    let entries = tokio::task::spawn_blocking(move || tarball::scan(&path))
        .await
        .map_err(|e| ArchiveError::Invalid(e.to_string()))??;
    let not_layout = |what: &str| {
        ArchiveError::Invalid(format!(
            "{} is not an OCI image layout archive: it has no {what} (make one with `wharf export`, \
             `skopeo copy … oci-archive:FILE` or `ctr images export`)",
            file.display()
        ))
    };
    if !entries.contains_key("oci-layout") {
        if entries.contains_key("manifest.json") {
            return Err(ArchiveError::Invalid(format!(
                "{} is a `docker save` archive (manifest.json), not an OCI image layout: convert it \
                 with `skopeo copy docker-archive:{0} oci-archive:OUT.tar`, then import that",
                file.display()
            )));
        }
        return Err(not_layout("oci-layout file"));
    }
    let index_region = *entries
        .get("index.json")
        .ok_or_else(|| not_layout("index.json"))?;
    let index = tarball::read_region(file, index_region, max_manifest).await?;
    let index: Value = serde_json::from_slice(&index)
        .map_err(|e| ArchiveError::Invalid(format!("index.json cannot be read: {e}")))?;
    let tops = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if tops.is_empty() {
        return Err(ArchiveError::Invalid(format!(
            "{}'s index.json lists no image",
            file.display()
        )));
    }
    let tag_arg = tag.map(parse_tag_arg).transpose()?;
    if tag_arg.is_some() && tops.len() > 1 {
        return Err(ArchiveError::Ref(format!(
            "{} holds {} images; --tag names one (import without --tag, and each image takes the \
             name the archive gives it)",
            file.display(),
            tops.len()
        )));
    }
    let mut imp = Importer {
        reg,
        file: file.to_owned(),
        entries,
        max_manifest,
        done: HashSet::new(),
        report: ImportReport::default(),
    };
    for top in &tops {
        let digest: Digest = top
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                ArchiveError::Invalid(format!("an index.json entry has no valid digest: {top}"))
            })?;
        let listed_type = top.get("mediaType").and_then(Value::as_str);
        let (repo, tag): (String, Option<Tag>) = match (&tag_arg, named(top.get("annotations"))?) {
            (Some((repo, Some(t))), _) => (repo.clone(), Some(t.clone())),
            (Some((repo, None)), Named::Full(r)) => (repo.clone(), tag_of(&r)),
            (Some((repo, None)), Named::TagOnly(t)) => (repo.clone(), Some(t)),
            (Some((repo, None)), Named::Nothing) => (repo.clone(), None),
            // The registry host of the name is dropped: the image is wharf's own now.
            (None, Named::Full(r)) => (r.name.clone(), tag_of(&r)),
            (None, Named::TagOnly(t)) => {
                return Err(ArchiveError::Ref(format!(
                "{} names image {digest} only by tag {t}; give the repository with --tag REPO:{t}",
                file.display()
            )))
            }
            (None, Named::Nothing) => {
                return Err(ArchiveError::Ref(format!(
                    "{} does not name image {digest}; give it a name with --tag REPO:TAG",
                    file.display()
                )))
            }
        };
        repo.parse::<RepoName>()
            .map_err(|e| ArchiveError::Ref(e.to_string()))?;
        let stored = imp.push_manifest(&repo, &digest, listed_type).await?;
        let name = match &tag {
            Some(t) => {
                imp.reg
                    .put_manifest(&repo, t.as_str(), &stored.media_type, stored.bytes.clone())
                    .await?
                    .map_err(super::refused(format!("tag {repo}:{t}")))?;
                format!("{repo}:{t}")
            }
            None => format!("{repo}@{}", stored.digest),
        };
        imp.report.images.push(Imported {
            name,
            digest: stored.digest.to_string(),
            reduced_from: stored.reduced_from.map(|d| d.to_string()),
        });
    }
    Ok(imp.report)
}

fn tag_of(r: &ImageRef) -> Option<Tag> {
    match &r.reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    }
}

/// `wharf import`: through the wharf serving `cfg` (or one started here).
pub async fn import(
    cfg: &Config,
    file: &Path,
    tag: Option<&str>,
) -> Result<ImportReport, ArchiveError> {
    let reg = WharfApi::connect(cfg).await?;
    let res = import_with(&reg, file, tag, cfg.registry.max_manifest_bytes).await;
    reg.close().await;
    res
}
