//! What a derived manifest (a plugin's rewrite, a reduced index) must be before a repository serves
//! it for a tag: no larger than a push may be (`registry.max_manifest_bytes`), a manifest of the
//! original's media type, and naming only content the repository can serve. wharf never serves an
//! index whose children answer 404: skopeo, containerd and docker fail half-way through such an
//! image, and by then the tag has answered 200.
//!
//! "Can serve": what the repository links (a manifest push is held to the same), and, for the
//! mirror's cache repository, whatever the original names, since its upstream serves those (the
//! mirror fetches them when asked). Content that is merely in the store, another repository's
//! included, does not count: it is not served under this name.

use std::collections::HashSet;

use wharf_model::digest::Digest;
use wharf_model::manifest::{self, Manifest, ManifestError};
use wharf_storage::meta::{Meta, MetaError};

/// A repository a tag's manifest is served from, and so where its content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repo<'a> {
    /// One of wharf's own repositories (a push route's included): it serves what it links.
    Local(&'a str),
    /// The mirror's cache repository `<upstream host>/<repository there>`.
    Mirror(&'a str),
}

impl<'a> Repo<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Repo::Local(n) | Repo::Mirror(n) => n,
        }
    }

    /// A repository of the same kind named `name`.
    pub fn like<'b>(&self, name: &'b str) -> Repo<'b> {
        match self {
            Repo::Local(_) => Repo::Local(name),
            Repo::Mirror(_) => Repo::Mirror(name),
        }
    }
}

/// Why a derived manifest is not served.
#[derive(Debug, thiserror::Error)]
pub enum Unservable {
    #[error(
        "it is {size} bytes, more than a manifest may be (registry.max_manifest_bytes = {limit}; \
         clients refuse larger ones too)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("it is not a valid manifest: {0}")]
    Invalid(ManifestError),
    #[error("it changed the media type from {from} to {to}")]
    MediaType { from: String, to: String },
    #[error(
        "it names {first}{more}, which repository {repo} does not have{mirrored}; a tag never serves \
         a manifest whose content answers 404"
    )]
    Missing {
        first: Digest,
        more: String,
        repo: String,
        mirrored: &'static str,
    },
    #[error("wharf cannot check what it names: {0}")]
    Meta(#[from] MetaError),
}

/// The check for the derivations of one original manifest in one repository.
pub struct Servable {
    meta: Meta,
    repo: String,
    mirrored: bool,
    media_type: String,
    limit: u64,
    /// For a mirrored repository, what the original names (its upstream serves those).
    upstream: HashSet<Digest>,
}

impl Servable {
    /// `original`: the bytes of the manifest being derived from, of `media_type`.
    pub fn new(meta: Meta, repo: Repo<'_>, media_type: &str, original: &[u8], limit: u64) -> Self {
        let upstream = match repo {
            Repo::Local(_) => HashSet::new(),
            // An original the mirror cached but cannot read names nothing: every reference must then
            // be linked here.
            Repo::Mirror(_) => manifest::parse(Some(media_type), original)
                .map(|m| {
                    m.blobs
                        .into_iter()
                        .chain(m.manifests)
                        .map(|(d, _)| d)
                        .collect()
                })
                .unwrap_or_default(),
        };
        Servable {
            meta,
            repo: repo.name().to_owned(),
            mirrored: matches!(repo, Repo::Mirror(_)),
            media_type: media_type.to_owned(),
            limit,
            upstream,
        }
    }

    /// `out` as the manifest the repository would serve, or why it cannot.
    pub async fn servable(&self, out: &[u8]) -> Result<Manifest, Unservable> {
        let size = out.len() as u64;
        if size > self.limit {
            return Err(Unservable::TooLarge {
                size,
                limit: self.limit,
            });
        }
        let m = manifest::parse(Some(&self.media_type), out).map_err(Unservable::Invalid)?;
        if m.media_type != self.media_type {
            return Err(Unservable::MediaType {
                from: self.media_type.clone(),
                to: m.media_type,
            });
        }
        let unknown = |refs: &[(Digest, u64)]| -> Vec<Digest> {
            refs.iter()
                .map(|(d, _)| d)
                .filter(|d| !self.upstream.contains(*d))
                .cloned()
                .collect()
        };
        let missing = self
            .meta
            .missing(&self.repo, unknown(&m.blobs), unknown(&m.manifests))
            .await?;
        let Some(first) = missing.first().cloned() else {
            return Ok(m);
        };
        Err(Unservable::Missing {
            first,
            more: match missing.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            },
            repo: self.repo.clone(),
            mirrored: if self.mirrored {
                " and the original does not name (so its upstream need not serve it)"
            } else {
                ""
            },
        })
    }
}

impl crate::plugin::RewriteCheck for Servable {
    async fn check(&self, out: &[u8]) -> Result<(), String> {
        self.servable(out)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
