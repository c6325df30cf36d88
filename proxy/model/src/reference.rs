//! Repository names and manifest references, validated against the OCI distribution spec's grammar.
//!
//! Names and tags are only ever used as keys in the metadata store, never as paths, but refusing what the
//! grammar refuses keeps clients honest and error messages early and precise.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Longest repository name we accept. The spec leaves it to the registry; distribution uses 255 and clients
/// (Docker) refuse longer names themselves.
pub const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error(
        "repository name {0:?} is invalid: use path components of lowercase letters and digits, \
         separated by '/', each component may contain '.', '_', '__' or '-' between alphanumerics"
    )]
    Grammar(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "tag {0:?} is invalid: a tag is 1 to 128 characters of letters, digits, '_', '.' and '-', \
         not starting with '.' or '-'"
    )]
    Tag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A repository name such as `library/alpine` or `ghcr.io/org/app`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        if !s.split('/').all(valid_component) {
            return Err(NameError::Grammar(s.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // one alphanumeric run
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // one separator, then another run must follow
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag, `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(ReferenceError::Tag(s.to_owned()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest. A `:` can only appear in a digest, so it decides.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// Whether `component`, the first component of an image name, is a registry host rather than the
/// start of a path on the default registry: it has a `.` (a domain, an IP address) or a `:` (a port),
/// or it is `localhost`. This is Docker's rule, which clients follow when they read `host/name`:
/// docker/distribution's `reference.ParseNormalizedNamed` (its `splitDockerDomain`, in
/// `reference/normalize.go`). Newer versions also count a component with capitals as a host;
/// repository names are lowercase, and wharf keeps to the three checks.
pub fn is_registry_host(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

/// The registry host `name` starts with, and the rest (`ghcr.io/team/app` → `ghcr.io`, `team/app`);
/// `None` when its first component is not a host by [`is_registry_host`] (`team/app`, `alpine`).
pub fn split_registry_host(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
        .filter(|(first, _)| is_registry_host(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_component_is_a_host_by_dockers_rule() {
        for (name, split) in [
            (
                "docker.io/library/alpine",
                Some(("docker.io", "library/alpine")),
            ),
            (
                "127.0.0.1:5000/team/app",
                Some(("127.0.0.1:5000", "team/app")),
            ),
            ("registry:5000/app", Some(("registry:5000", "app"))),
            ("localhost/app", Some(("localhost", "app"))),
            ("[::1]:5000/app", Some(("[::1]:5000", "app"))),
            ("team/app", None),
            ("localhostx/app", None),
            ("ci/docker.io/app", None),
            ("alpine", None),
            ("docker.io", None),
        ] {
            assert_eq!(split_registry_host(name), split, "{name:?}");
        }
        assert!(is_registry_host("ghcr.io") && is_registry_host("host:80"));
        assert!(is_registry_host("localhost") && !is_registry_host("library"));
    }

    #[test]
    fn accepts_spec_names() {
        for good in [
            "a",
            "library/alpine",
            "ghcr.io/org/app",
            "a_b/c__d/e---f/g.h",
            "0/1/2",
            "x-y.z_w",
        ] {
            assert!(
                good.parse::<RepoName>().is_ok(),
                "{good:?} should be accepted"
            );
        }
        assert!("a".repeat(MAX_NAME_LEN).parse::<RepoName>().is_ok());
    }

    #[test]
    fn refuses_path_tricks_and_bad_grammar() {
        for bad in [
            "",
            "..",
            "a/../b",
            "a/./b",
            "/abs",
            "a/",
            "a//b",
            "Upper",
            "a/B",
            "a..b",
            "a.-b",
            "a___b",
            "-a",
            "a-",
            "a b",
            "a\\b",
            "a%2fb",
            "localhost:5000/a",
        ] {
            assert!(
                bad.parse::<RepoName>().is_err(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(
            "a".repeat(MAX_NAME_LEN + 1).parse::<RepoName>(),
            Err(NameError::TooLong(MAX_NAME_LEN + 1))
        );
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.0.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good:?}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a+b", &"t".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references_pick_tag_or_digest() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "sha256:xyz".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
    }
}
