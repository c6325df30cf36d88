//! Why an archive command failed, and how the registry said no.

use http::StatusCode;

use wharf_model::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Ref(String),
    #[error("cannot start wharf in this process: {0}")]
    Start(String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("request to wharf failed: {0}")]
    Http(String),
    #[error("wharf refused {what}: {refusal}")]
    Refused { what: String, refusal: Refusal },
    #[error("{what} has digest {actual}, not {expected}: it was not written")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "{what} is {actual} bytes, not the {expected} its descriptor says: it was not written"
    )]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Platforms(String),
}

/// An error answer of the registry, with the spec's code when the body had one.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{} {c}: {}", self.status, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}
