//! The registry's error vocabulary: OCI distribution error codes, and the single mapping from them (and
//! from the store's and metadata's errors) to HTTP statuses and the spec's JSON body.
//! Handlers never pick a status for an error themselves.

use http::{HeaderName, HeaderValue, StatusCode};

use wharf_model::digest::DigestError;
use wharf_model::reference::{NameError, ReferenceError};
use wharf_storage::meta::MetaError;
use wharf_storage::store::StoreError;

/// The codes of the OCI distribution spec ("Error Codes"), plus `UNKNOWN` for our own failures, as
/// distribution answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// An upstream wharf needed for the answer failed (unreachable, timed out, 5xx): distribution's
    /// `UNAVAILABLE`, which docker's and containers/image's error registries know by name.
    Unavailable,
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            Unavailable => "UNAVAILABLE",
            Unknown => "UNKNOWN",
        }
    }

    /// The code a registry's error body names, if it is one of ours.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        use ErrorCode::*;
        [
            BlobUnknown,
            BlobUploadInvalid,
            BlobUploadUnknown,
            DigestInvalid,
            ManifestBlobUnknown,
            ManifestInvalid,
            ManifestUnknown,
            NameInvalid,
            NameUnknown,
            SizeInvalid,
            Unauthorized,
            Denied,
            Unsupported,
            TooManyRequests,
            Unavailable,
            Unknown,
        ]
        .into_iter()
        .find(|c| c.as_str() == code)
    }

    /// The status each code is answered with unless the error says otherwise (416 for ranges, 413 for
    /// bodies over a limit).
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestBlobUnknown | ManifestUnknown
            | NameUnknown => StatusCode::NOT_FOUND,
            BlobUploadInvalid | DigestInvalid | ManifestInvalid | NameInvalid | SizeInvalid => {
                StatusCode::BAD_REQUEST
            }
            Unauthorized => StatusCode::UNAUTHORIZED,
            Denied => StatusCode::FORBIDDEN,
            Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            // 424 Failed Dependency (RFC 4918 §11.4: the request depended on another action, which
            // failed), not 502/503: the clients people read these errors in print an error body
            // only for 4xx. docker 20.10 (distribution's `HandleErrorResponse`) and podman 4.3 /
            // skopeo (containers/image 5.23 `handleErrorResponse`) parse the body for 400-499 and
            // show nothing but "received unexpected HTTP status: 502 Bad Gateway" for a 5xx.
            Unavailable => StatusCode::FAILED_DEPENDENCY,
            Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request body from which nothing arrived for `server.body_idle_secs`: the request fails with it.
#[derive(Debug, thiserror::Error)]
#[error(
    "no bytes of the request body arrived for {secs} s; wharf stopped waiting (server.body_idle_secs: \
     raise it for clients that pause this long)"
)]
pub struct BodyIdle {
    pub secs: u64,
}

/// Why a request was refused, attached to its error response for the request log line.
#[derive(Debug, Clone)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

/// An error as a client sees it: code, a message that names the cause and the fix, and the status.
#[derive(Debug)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// Whether the request failed on wharf's side or an upstream's, not the client's: logged as a
    /// warning.
    pub fn is_failure(&self) -> bool {
        self.status.is_server_error() || self.code == ErrorCode::Unavailable
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl std::fmt::Display) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, v));
        }
        self
    }

    /// The spec's body: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        let mut e = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = &self.detail {
            e["detail"] = d.clone();
        }
        serde_json::to_vec(&serde_json::json!({ "errors": [e] })).unwrap_or_default()
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        RegistryError::new(ErrorCode::NameInvalid, e.to_string())
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<ReferenceError> for RegistryError {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::Digest(d) => d.into(),
            ReferenceError::Tag(_) => RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
                .with_status(StatusCode::BAD_REQUEST),
        }
    }
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        if let MetaError::Unavailable { endpoint, .. } | MetaError::Tls { endpoint, .. } = &e {
            tracing::warn!(backend = "postgres", endpoint = %endpoint, error = %e, "metadata backend unavailable: answering 503");
            return backend_unavailable(format!(
                "wharf's metadata database ({endpoint}) is unavailable; nothing was changed: retry shortly"
            ));
        }
        tracing::error!(error = %e, "metadata store failure");
        RegistryError::new(
            ErrorCode::Unknown,
            format!("{e}; see wharf's log for details"),
        )
    }
}

impl From<wharf_storage::lease::LeaseError> for RegistryError {
    fn from(e: wharf_storage::lease::LeaseError) -> Self {
        match e {
            wharf_storage::lease::LeaseError::Meta(m) => m.into(),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(d) => RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("blob {d} is not in this registry"),
            ),
            StoreError::DigestMismatch { expected, actual } => RegistryError::new(
                ErrorCode::DigestInvalid,
                format!(
                    "uploaded content has digest {actual}, not the {expected} given; nothing was \
                     stored: upload the content again with its correct digest"
                ),
            ),
            StoreError::SizeMismatch { expected, actual } => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("uploaded {actual} bytes but {expected} were declared; nothing was stored"),
            ),
            StoreError::TooLarge {
                digest,
                size,
                limit,
            } => RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("{digest} is {size} bytes, over the {limit}-byte limit for manifests"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            StoreError::InvalidArgument(m) => {
                RegistryError::new(ErrorCode::Unknown, format!("internal error: {m}"))
            }
            StoreError::Unavailable { endpoint, detail } => {
                tracing::warn!(backend = "s3", endpoint = %endpoint, error = %detail, "content backend unavailable: answering 503");
                backend_unavailable(format!(
                    "wharf's object store ({endpoint}) is unavailable; nothing was stored: retry shortly"
                ))
            }
            StoreError::Refused { endpoint, detail } => {
                tracing::error!(backend = "s3", endpoint = %endpoint, error = %detail, "content backend refused wharf");
                RegistryError::new(
                    ErrorCode::Unknown,
                    format!("wharf's object store ({endpoint}) refused: {detail}; see wharf's log"),
                )
            }
            StoreError::Io(io) => {
                tracing::error!(error = %io, "content store I/O failure");
                RegistryError::new(
                    ErrorCode::Unknown,
                    format!("storage I/O failed ({io}); check wharf's data directory and its log"),
                )
            }
        }
    }
}

/// Seconds a client is asked to wait when a shared backend is out of reach.
pub const BACKEND_RETRY_AFTER_SECS: u64 = 5;

/// 503 with a `Retry-After`: wharf's own storage is out of reach for now (not an upstream's, which is
/// 424). Clients retry a 503; nothing half-written is visible meanwhile.
fn backend_unavailable(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::Unavailable, message)
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .with_header(http::header::RETRY_AFTER, BACKEND_RETRY_AFTER_SECS)
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_follows_the_spec() {
        let e = RegistryError::new(ErrorCode::BlobUnknown, "gone")
            .with_detail(serde_json::json!({"digest": "x"}));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "gone");
        assert_eq!(v["errors"][0]["detail"]["digest"], "x");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn an_unavailable_upstream_is_a_4xx_that_clients_print() {
        assert_eq!(
            ErrorCode::parse("UNAVAILABLE"),
            Some(ErrorCode::Unavailable)
        );
        let e = RegistryError::new(ErrorCode::Unavailable, "upstream down");
        assert_eq!(e.status, StatusCode::FAILED_DEPENDENCY);
        assert!(
            e.is_failure(),
            "logged as a failure, not a client's mistake"
        );
        assert!(!RegistryError::new(ErrorCode::Denied, "no").is_failure());
    }

    #[test]
    fn store_errors_map_once() {
        let d = wharf_model::digest::Digest::sha256_of(b"");
        let e: RegistryError = StoreError::DigestMismatch {
            expected: d.clone(),
            actual: d,
        }
        .into();
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::DigestInvalid, StatusCode::BAD_REQUEST)
        );
    }

    /// Both shared backends' outages answer 503 with `Retry-After`, in one readable sentence (a
    /// string broken across source lines once put twenty spaces in the middle of it).
    #[test]
    fn backend_outages_are_503_with_retry_after_in_plain_words() {
        let unavailable = [
            RegistryError::from(MetaError::Unavailable {
                endpoint: "wharf@db:5432/wharf".into(),
                detail: "connection refused".into(),
            }),
            RegistryError::from(MetaError::Tls {
                endpoint: "wharf@db:5432/wharf".into(),
                detail: "invalid peer certificate: UnknownIssuer".into(),
            }),
            RegistryError::from(StoreError::Unavailable {
                endpoint: "http://s3:3900 (bucket wharf)".into(),
                detail: "connection refused".into(),
            }),
        ];
        for e in unavailable {
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{}", e.message);
            assert!(e
                .headers
                .iter()
                .any(|(k, _)| k == http::header::RETRY_AFTER));
            assert!(e.message.ends_with("retry shortly"), "{}", e.message);
            assert!(!e.message.contains("  "), "{:?}", e.message);
        }
    }
}
