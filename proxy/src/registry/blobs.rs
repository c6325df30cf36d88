//! Blob reads and deletes: `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::{empty_response, header_str, Registry, CONTENT_DIGEST};
use crate::body::Body;
use crate::error::{ErrorCode, RegistryError, Result};
use wharf_model::digest::Digest;
use wharf_model::range::{parse_range, ByteRange, RangeRequest};
use wharf_model::reference::RepoName;
use wharf_storage::store::ContentStore;

pub(super) fn blob_unknown(repo: &RepoName, d: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {d} is not in repository {repo}"),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

/// A committed blob of `size` bytes, whole or the range the request asks for.
pub(crate) async fn blob_response<B>(
    store: &dyn ContentStore,
    d: &Digest,
    size: u64,
    req: &Request<B>,
    unknown: impl FnOnce() -> RegistryError,
) -> Result<Response<Body>> {
    let (mut resp, range) = blob_head(d, size, req)?;
    if req.method() == Method::HEAD || size == 0 {
        return Ok(resp);
    }
    let blob = store.open(d, range).await.map_err(|e| match e {
        wharf_storage::store::StoreError::NotFound(_) => unknown(),
        e => e.into(),
    })?;
    *resp.body_mut() = Body::blob(blob);
    Ok(resp)
}

/// Status and headers for serving `size` bytes of blob `d`, and the range to serve.
pub(crate) fn blob_head<B>(
    d: &Digest,
    size: u64,
    req: &Request<B>,
) -> Result<(Response<Body>, Option<ByteRange>)> {
    let range = match header_str(req, RANGE) {
        Some(h) => parse_range(h, size),
        None => RangeRequest::Full,
    };
    let (status, range) = match range {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        RangeRequest::Unsatisfiable => {
            return Err(RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("requested range is outside blob {d} of {size} bytes"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        CONTENT_DIGEST,
        HeaderValue::from_str(&d.to_string()).expect("digests are ASCII"),
    );
    // Content-addressed: the ETag is the digest, forever.
    h.insert(
        http::header::ETAG,
        HeaderValue::from_str(&format!("\"{d}\"")).expect("ASCII"),
    );
    let len = range.map_or(size, |r| r.len());
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(r) = range {
        h.insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end)).expect("ASCII"),
        );
    }
    Ok((resp, range))
}

impl Registry {
    pub(super) async fn get_blob<B>(
        &self,
        repo: &RepoName,
        d: &Digest,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        if req.method() == Method::HEAD {
            // A client that finds the blob here skips uploading it and refers to it later: that
            // counts as a use, which the collector spares for its grace window.
            self.leases.touch(std::slice::from_ref(d)).await;
        }
        let size = self
            .meta
            .blob(repo.as_str(), d)
            .await?
            .ok_or_else(|| blob_unknown(repo, d))?;
        blob_response(&*self.store, d, size, req, || blob_unknown(repo, d)).await
    }

    pub(super) async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> Result<Response<Body>> {
        self.require_delete()?;
        if !self.meta.unlink_blob(repo.as_str(), d).await? {
            return Err(blob_unknown(repo, d));
        }
        Ok(empty_response(
            StatusCode::ACCEPTED,
            &[(CONTENT_DIGEST, d.to_string())],
        ))
    }
}
