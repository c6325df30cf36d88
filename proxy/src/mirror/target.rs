//! A repository on an upstream as the mirror addresses it (`Target`), why an upstream could not
//! provide something of it (`Failure`), and the mark of an answer served stale because it failed.

use std::sync::Arc;

use http::header::{RETRY_AFTER, WARNING};
use http::{HeaderValue, Response, StatusCode};

use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError};
use wharf_protocol::upstream::{Upstream, UpstreamError};

/// A repository on an upstream, and where the mirror caches it.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// Name on the upstream (`library/alpine`).
    pub remote: String,
    /// Name the cache records it under (`docker.io/library/alpine`).
    pub cache: String,
}

impl Target {
    pub(super) fn scope(&self) -> String {
        format!("repository:{}:pull", self.remote)
    }
}

/// Why an upstream could not provide something.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    NotFound(String),
    Denied(String),
    /// 429, with the upstream's `Retry-After` to pass on.
    RateLimited(String, Option<HeaderValue>),
    /// 5xx, unreachable, timed out, inconsistent, or sent bad bytes: the cases stale-if-error covers.
    Unavailable(String),
}

impl Failure {
    pub(super) fn from_status(
        status: StatusCode,
        retry_after: Option<&HeaderValue>,
        t: &Target,
        what: &str,
    ) -> Failure {
        let host = &t.upstream.host;
        match status {
            StatusCode::NOT_FOUND => {
                Failure::NotFound(format!("upstream {host} has no {what} in {}", t.remote))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Denied(format!(
                "upstream {host} refused access to {} ({status}); give wharf credentials for it \
                 ([[upstream]] username and password_env or password_file)",
                t.remote
            )),
            StatusCode::TOO_MANY_REQUESTS => Failure::RateLimited(
                format!(
                    "upstream {host} is rate-limiting requests (429) and {what} of {} is not cached{}",
                    t.remote,
                    retry_after
                        .and_then(|v| v.to_str().ok())
                        .map(|v| format!("; it asks to retry after {v} s"))
                        .unwrap_or_default()
                ),
                retry_after.cloned(),
            ),
            s => Failure::Unavailable(format!(
                "upstream {host} answered {s} for {what} of {}",
                t.remote
            )),
        }
    }

    /// The failure of an upstream response that was not 200.
    pub(super) fn from_response<B>(resp: &Response<B>, t: &Target, what: &str) -> Failure {
        Failure::from_status(resp.status(), resp.headers().get(RETRY_AFTER), t, what)
    }

    pub(super) fn into_error(self, unknown: ErrorCode) -> RegistryError {
        match self {
            Failure::NotFound(m) => RegistryError::new(unknown, m),
            Failure::Denied(m) => RegistryError::new(ErrorCode::Denied, m),
            Failure::RateLimited(m, retry_after) => {
                let e = RegistryError::new(ErrorCode::TooManyRequests, m);
                match retry_after.as_ref().and_then(|v| v.to_str().ok()) {
                    Some(v) => e.with_header(RETRY_AFTER, v),
                    None => e,
                }
            }
            Failure::Unavailable(m) => RegistryError::new(ErrorCode::Unavailable, m),
        }
    }

    /// Whether a cached copy may stand in (`mirror.stale_if_error`): the upstream failed, it did
    /// not say "no".
    pub(super) fn allows_stale(&self) -> bool {
        matches!(self, Failure::Unavailable(_) | Failure::RateLimited(..))
    }
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        match e {
            // Wrong credentials are a refusal, not an outage: no stale copy, no retry hint.
            UpstreamError::TokenDenied { .. } => Failure::Denied(e.to_string()),
            UpstreamError::Unreachable { ref host, .. } => Failure::Unavailable(format!(
                "{e}; check that this machine reaches it (DNS, firewall, proxy), or give {host} \
                 another endpoint in an [[upstream]] entry; what is cached already is still served"
            )),
            e => Failure::Unavailable(e.to_string()),
        }
    }
}

/// Marks a response served from the cache because the upstream failed (RFC 7234's "110 Response
/// is Stale"), naming the upstream.
pub(super) fn stale(mut resp: Response<Body>, t: &Target) -> Response<Body> {
    let warning = format!(
        "110 wharf \"Response is Stale: upstream {} failed\"",
        t.upstream.host
    );
    if let Ok(v) = HeaderValue::from_str(&warning) {
        resp.headers_mut().insert(WARNING, v);
    }
    resp
}
