//! Building responses the OCI distribution API way: the headers it names, errors as its JSON error
//! bodies, blobs whole or by range, manifests with their media type and digest, tag and referrer
//! lists with their `Link` pagination. Used by every endpoint, local or mirrored, so a
//! mirrored answer and a local one are the same shape.

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, LINK, RANGE,
};
use http::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::route;
use wharf_model::digest::Digest;
use wharf_model::manifest::{bare_media_type, MANIFEST_TYPES};
use wharf_model::range::{parse_range, ByteRange, RangeRequest};
use wharf_model::reference::Reference;
use wharf_storage::meta::ManifestRecord;
use wharf_storage::store::ContentStore;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");

pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body wharf can read: hyper's, or any other `http_body::Body` (tests).
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}
impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

pub fn error_response(e: RegistryError, head_only: bool) -> Response<Body> {
    if e.is_failure() {
        tracing::warn!(error = %e, "request failed");
    }
    let body = e.body();
    // For the request's log line: refusals are logged with their code (and, at debug, the message).
    let refused = crate::error::Refused {
        code: e.code.as_str(),
        message: e.message.clone(),
    };
    let mut b = Response::builder()
        .status(e.status)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .extension(refused);
    for (k, v) in e.headers {
        b = b.header(k, v);
    }
    let body = if head_only {
        Body::Empty
    } else {
        Body::full(body)
    };
    b.body(body).unwrap_or_else(|_| Response::new(Body::Empty))
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *r.body_mut() = Body::full(body);
    r
}

/// An empty response with the given headers: what most write endpoints answer.
pub fn empty_response(status: StatusCode, headers: &[(HeaderName, String)]) -> Response<Body> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k.clone(), v);
        }
    }
    r
}

/// The decoded value of query parameter `key`.
pub fn query_param(req: &Request<impl Sized>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| route::percent_decode(v))
    })
}

pub fn header_str(
    req: &Request<impl Sized>,
    name: impl http::header::AsHeaderName,
) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A committed blob of `size` bytes, whole or the range the request asks for.
pub async fn blob_response<B>(
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
pub fn blob_head<B>(
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

/// Whether the request's `Accept` allows `media_type`. A request that names no manifest type at all
/// (no `Accept`, `*/*`, `application/json`) takes whatever is stored; one that names some takes only
/// those, as distribution does, so a client is never handed a format it said it cannot read.
pub fn accepts(headers: &http::HeaderMap, media_type: &str) -> bool {
    let mut names_manifest_types = false;
    for v in headers.get_all(ACCEPT) {
        for part in v.to_str().unwrap_or("").split(',') {
            let t = bare_media_type(part);
            if t == media_type || t == "*/*" {
                return true;
            }
            names_manifest_types |= MANIFEST_TYPES.contains(&t);
        }
    }
    !names_manifest_types
}

pub fn not_acceptable(repo: &str, r: &Reference, media_type: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!(
            "manifest {r} in {repo} is a {media_type}, which this request's Accept header does not list; \
             add that media type to Accept"
        ),
    )
}

/// A manifest as stored: its exact bytes, media type and digest.
pub async fn manifest_response(
    store: &dyn ContentStore,
    d: &Digest,
    rec: &ManifestRecord,
    head_only: bool,
) -> Result<Response<Body>> {
    let mut resp = Response::new(Body::Empty);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&rec.media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(rec.size));
    h.insert(
        CONTENT_DIGEST,
        HeaderValue::from_str(&d.to_string()).expect("ASCII"),
    );
    h.insert(
        ETAG,
        HeaderValue::from_str(&format!("\"{d}\"")).expect("ASCII"),
    );
    if head_only {
        return Ok(resp);
    }
    let bytes = store.read_all(d, rec.size).await?;
    *resp.body_mut() = Body::full(bytes);
    Ok(resp)
}

/// The page a tag list request asks for: `n` (page size) and `last` (the tag to continue after).
pub fn tag_page<B>(req: &Request<B>) -> Result<(Option<usize>, Option<String>)> {
    let n = match query_param(req, "n") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            RegistryError::new(
                ErrorCode::Unsupported,
                format!("n={v:?} is not a page size; use a non-negative integer"),
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    Ok((n, query_param(req, "last")))
}

/// A tag list page, with a `Link` to the next one when `more` follow.
pub fn tag_list(name: &str, tags: &[String], more: bool, n: Option<usize>) -> Response<Body> {
    let body =
        serde_json::to_vec(&serde_json::json!({ "name": name, "tags": tags })).expect("plain JSON");
    let mut resp = json_response(StatusCode::OK, body.into());
    if let (true, Some(n), Some(last)) = (more, n, tags.last()) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(LINK, v);
        }
    }
    resp
}
