//! What `wharf export|import|images pull` are asked for: an image as a client names it, and the
//! annotations that name an image in an archive.

use std::fmt;

use super::error::ArchiveError;

use wharf_model::reference::{split_registry_host, Reference, RepoName, Tag};

/// The annotation of `index.json` that names an image (OCI image layout).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's: the full image name (what `ctr images import` names the image).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What a client would pull from wharf: `docker.io/library/alpine:3`, `team/app:v1`,
/// `ghcr.io/org/app@sha256:…`. A first component that is a registry host by Docker's rule
/// (`reference::is_registry_host`) is sent as containerd's `?ns=`, which the mirror routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub host: Option<String>,
    /// The repository on that host (or in wharf, without a host).
    pub name: String,
    pub reference: Reference,
}

impl std::str::FromStr for ImageRef {
    type Err = ArchiveError;

    fn from_str(s: &str) -> Result<ImageRef, ArchiveError> {
        let bad = |why: String| {
            ArchiveError::Ref(format!(
                "{s:?} is not an image reference ({why}); write [host/]repository[:tag|@digest], \
                 e.g. docker.io/library/alpine:3 or team/app@sha256:…"
            ))
        };
        let (rest, reference) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Reference::Digest(d.parse().map_err(|e| bad(format!("{e}")))?),
            ),
            None => {
                let slash = s.rfind('/').map_or(0, |i| i + 1);
                match s[slash..].rfind(':') {
                    Some(i) => (
                        &s[..slash + i],
                        Reference::Tag(
                            s[slash + i + 1..]
                                .parse::<Tag>()
                                .map_err(|e| bad(e.to_string()))?,
                        ),
                    ),
                    None => (s, Reference::Tag("latest".parse().expect("valid tag"))),
                }
            }
        };
        let (host, name) = match split_registry_host(rest) {
            Some((first, name)) => (Some(first.to_owned()), name),
            None => (None, rest),
        };
        name.parse::<RepoName>().map_err(|e| bad(e.to_string()))?;
        Ok(ImageRef {
            host,
            name: name.to_owned(),
            reference,
        })
    }
}

impl ImageRef {
    /// The name without tag or digest, with its host.
    pub fn repository(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.repository()),
            Reference::Digest(d) => write!(f, "{}@{d}", self.repository()),
        }
    }
}
