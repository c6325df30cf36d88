//! Sending one image to an upstream repository, in the order a registry accepts it: blobs (`HEAD`
//! first; a cross-repository mount where wharf delivered the blob to another repository of the same
//! upstream; else `POST`, `PATCH`, `PUT`), then child manifests by digest, then the top manifest by
//! its reference. Idempotent: what the upstream already has is not sent again, so a delivery cut short
//! (a crash, a fault) is simply run again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use wharf_model::digest::Digest;
use wharf_protocol::body::{Body, Sending};
use wharf_protocol::upstream::{BoxError, ClientBody, Payload, Upstream, UpstreamError};
use wharf_storage::meta::Meta;
use wharf_storage::store::ContentStore;

use super::progress::Progress;

/// Largest upstream error body read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why a delivery step failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliverError {
    /// A refusal (403, an invalid manifest, credentials refused): trying again will not help.
    pub permanent: bool,
    /// The upstream failed or refused (as opposed to wharf itself: its store, a lease).
    pub upstream: bool,
    /// The upstream's answer, when it answered.
    pub status: Option<StatusCode>,
    /// The upstream's error code (`DENIED`, `MANIFEST_INVALID`, …).
    pub code: Option<String>,
    pub message: String,
    /// A 429's or 503's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl DeliverError {
    /// A failure on wharf's side (reading the store, a lease): tried again.
    pub fn local(message: String) -> DeliverError {
        DeliverError {
            permanent: false,
            upstream: false,
            status: None,
            code: None,
            message,
            retry_after: None,
        }
    }

    /// A failure trying again cannot mend (the route is gone, nothing would be delivered).
    pub fn permanent(message: String) -> DeliverError {
        DeliverError {
            permanent: true,
            ..DeliverError::local(message)
        }
    }

    /// A write-through delivery the upstream let stall: it ends here, and its client is told.
    pub fn stalled(message: String) -> DeliverError {
        DeliverError {
            permanent: true,
            upstream: true,
            ..DeliverError::local(message)
        }
    }

    fn unreachable(e: UpstreamError, step: &str) -> DeliverError {
        let permanent = matches!(
            e,
            UpstreamError::Config { .. } | UpstreamError::TokenDenied { .. }
        );
        DeliverError {
            permanent,
            upstream: true,
            status: None,
            code: None,
            message: format!("{step}: {e}"),
            retry_after: None,
        }
    }
}

/// A committed blob as an upload body: opened again for every attempt.
struct StoredBlob {
    store: Arc<dyn ContentStore>,
    digest: Digest,
    size: u64,
    progress: Arc<Progress>,
}

#[async_trait::async_trait]
impl Payload for StoredBlob {
    fn len(&self) -> u64 {
        self.size
    }
    async fn open(&self) -> Result<ClientBody, BoxError> {
        let blob = self.store.open(&self.digest, None).await?;
        // Copied into the socket by the client connection: the server's zero-copy path does not apply.
        let body = Body::blob_sent(blob, Some(Sending::Copy))
            .map_err(BoxError::from)
            .boxed();
        Ok(self.progress.watch(body))
    }
}

/// One upstream repository as a delivery target. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    pub upstream: Arc<Upstream>,
    /// The upstream repository.
    pub repo: String,
    pub store: Arc<dyn ContentStore>,
    pub meta: Meta,
    /// How deliveries to this upstream repository are moving.
    pub progress: Arc<Progress>,
}

impl Sender {
    fn scope(&self) -> String {
        format!("repository:{}:pull,push", self.repo)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        payload: Option<&dyn Payload>,
        step: &str,
    ) -> Result<hyper::Response<Incoming>, DeliverError> {
        let resp = self
            .upstream
            .send_with(method, path, headers, &self.scope(), payload)
            .await
            .map_err(|e| DeliverError::unreachable(e, step))?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            self.progress.moved();
        }
        Ok(resp)
    }

    /// Makes sure the upstream repository has blob `d`.
    pub async fn blob(&self, d: &Digest, size: u64) -> Result<(), DeliverError> {
        let none = HeaderMap::new();
        let step = format!("blob {d}");
        let path = format!("/v2/{}/blobs/{d}", self.repo);
        let head = self.send(Method::HEAD, &path, &none, None, &step).await?;
        match head.status() {
            StatusCode::OK => return Ok(()),
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.refusal(head, &format!("HEAD {step}")).await),
        }
        // Mounting costs the upstream nothing and sends no bytes; a registry that will not mount
        // (another repository's permissions, a registry without mounts) answers 202 and a session.
        let from = self
            .meta
            .delivered_blob(self.upstream.endpoint(), d)
            .await
            .ok()
            .flatten()
            .filter(|r| *r != self.repo);
        let start = match &from {
            Some(from) => format!("/v2/{}/blobs/uploads/?mount={d}&from={from}", self.repo),
            None => format!("/v2/{}/blobs/uploads/", self.repo),
        };
        let resp = self
            .send(
                Method::POST,
                &start,
                &none,
                None,
                &format!("upload of {step}"),
            )
            .await?;
        let location = match resp.status() {
            StatusCode::CREATED if from.is_some() => {
                drain(resp).await;
                return self.delivered(d).await;
            }
            StatusCode::ACCEPTED => location(&resp),
            _ => None,
        };
        let Some(location) = location else {
            return Err(self.refusal(resp, &format!("POST upload of {step}")).await);
        };
        drain(resp).await;

        let body = StoredBlob {
            store: self.store.clone(),
            digest: d.clone(),
            size,
            progress: self.progress.clone(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = self
            .send(
                Method::PATCH,
                &location,
                &h,
                Some(&body),
                &format!("upload of {step}"),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.refusal(resp, &format!("PATCH upload of {step}")).await);
        }
        let location = location_or(&resp, location);
        drain(resp).await;
        let sep = if location.contains('?') { '&' } else { '?' };
        let commit = format!("{location}{sep}digest={d}");
        let resp = self
            .send(
                Method::PUT,
                &commit,
                &none,
                Some(&Bytes::new()),
                &format!("upload of {step}"),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.refusal(resp, &format!("PUT upload of {step}")).await);
        }
        drain(resp).await;
        self.delivered(d).await
    }

    async fn delivered(&self, d: &Digest) -> Result<(), DeliverError> {
        if let Err(e) = self
            .meta
            .record_delivered_blob(self.upstream.endpoint(), d, &self.repo)
            .await
        {
            tracing::debug!(digest = %d, error = %e, "cannot remember where a blob was delivered");
        }
        Ok(())
    }

    /// Whether the upstream repository has manifest `d`.
    pub async fn has_manifest(&self, d: &Digest, media_type: &str) -> Result<bool, DeliverError> {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(media_type) {
            h.insert(ACCEPT, v);
        }
        let step = format!("manifest {d}");
        let path = format!("/v2/{}/manifests/{d}", self.repo);
        let resp = self.send(Method::HEAD, &path, &h, None, &step).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refusal(resp, &format!("HEAD {step}")).await),
        }
    }

    /// `PUT`s manifest bytes under `reference` (a tag, or the digest); returns the digest the upstream
    /// says it stored.
    pub async fn manifest(
        &self,
        d: &Digest,
        media_type: &str,
        bytes: &Bytes,
        reference: &str,
    ) -> Result<Option<Digest>, DeliverError> {
        let mut h = HeaderMap::new();
        let ct = HeaderValue::from_str(media_type)
            .map_err(|_| DeliverError::local(format!("manifest {d} has an unusable media type")))?;
        h.insert(CONTENT_TYPE, ct);
        let step = format!("manifest {d} as {}:{reference}", self.repo);
        let path = format!("/v2/{}/manifests/{reference}", self.repo);
        let resp = self
            .send(Method::PUT, &path, &h, Some(bytes), &step)
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.refusal(resp, &format!("PUT {step}")).await);
        }
        let said = resp
            .headers()
            .get(wharf_protocol::respond::CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        drain(resp).await;
        if let Some(s) = &said {
            if s != d {
                return Err(DeliverError::permanent(format!(
                    "{step}: the upstream stored it as {s}, not {d}: it changed the bytes, so a pull \
                     by digest would not verify"
                )));
            }
        }
        Ok(said)
    }

    /// The upstream's answer as an error: its status, code and message, and whether to try again.
    async fn refusal(&self, resp: hyper::Response<Incoming>, step: &str) -> DeliverError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let (code, text) = error_of(&body);
        // An upload session the upstream no longer knows (purged, or another replica behind a load
        // balancer) is started again on the next attempt.
        let session_lost = code.as_deref() == Some("BLOB_UPLOAD_UNKNOWN");
        let permanent = !(status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || session_lost);
        let mut message = format!("upstream {} refused {step}: {status}", self.upstream.host);
        if let Some(c) = &code {
            message.push_str(&format!(" {c}"));
        }
        if let Some(t) = &text {
            message.push_str(&format!(": {t}"));
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            message.push_str(
                "; check the push route's credentials (username, password_env/password_file) and \
                 that they may push to this repository",
            );
        }
        DeliverError {
            permanent,
            upstream: true,
            status: Some(status),
            code,
            message,
            retry_after,
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The first error of a distribution error body: code and message.
fn error_of(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => match e.errors.into_iter().next() {
            Some(i) => (i.code, i.message),
            None => (None, None),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            (
                None,
                (!text.is_empty()).then(|| text.chars().take(300).collect()),
            )
        }
    }
}

fn location(resp: &hyper::Response<Incoming>) -> Option<String> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn location_or(resp: &hyper::Response<Incoming>, before: String) -> String {
    location(resp).unwrap_or(before)
}

/// Reads the rest of a response, so its connection can be used again.
async fn drain(resp: hyper::Response<Incoming>) {
    let _ = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_distribution_errors() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":null}]}"#;
        assert_eq!(
            error_of(body),
            (
                Some("DENIED".into()),
                Some("requested access to the resource is denied".into())
            )
        );
        assert_eq!(error_of(b"  nope \n"), (None, Some("nope".into())));
        assert_eq!(error_of(b""), (None, None));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
