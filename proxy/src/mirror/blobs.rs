//! The mirror's blobs: served from the store when the cache repository links them; when stored but
//! not linked here, confirmed upstream if that upstream has sent them before, else fetched from it
//! like any other miss; filled once (`fill.rs`) and streamed to every client as they arrive.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::state::Mirror;
use super::target::{Failure, Target};
use crate::fill::{Phase, Source};
use wharf_model::digest::Digest;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_protocol::respond::{blob_head, blob_response, CONTENT_DIGEST};

impl Mirror {
    pub async fn blob<B>(
        &self,
        t: &Target,
        d: &Digest,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let store = &self.fetcher.store;
        let meta = &self.fetcher.meta;
        let unknown = || {
            RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("blob {d} is not in {} on {}", t.remote, t.upstream.host),
            )
        };
        let stored = store.stat(d).await?;
        let linked = meta.blob(&t.cache, d).await?.is_some();
        // A fill of this repository from its upstream is as good as a link for a blob not stored
        // yet: it links the blob once committed (and only then leaves `running`).
        let ours = self
            .fills
            .running(d, &t.upstream.host)
            .filter(|f| f.cache_repo == t.cache);
        // Blobs carry no platform: under a platform policy, the upstream is asked only for those a
        // kept manifest of this repository references.
        if !linked && ours.is_none() && self.platforms.active(t, &self.policy) {
            self.platforms.check_blob(t, &self.policy, d).await?;
        }
        let mut confirmed = false;
        if let Some(size) = stored {
            if linked {
                return (blob_response(&**store, d, size, req, unknown).await)
                    .map(|r| wharf_metrics::blob_hit(req.method(), r));
            }
            // Stored once, whoever brought it; but another repository's blob (pushed to wharf,
            // mirrored from elsewhere) is served under this name only once this upstream confirms
            // the repository has it, as distribution's proxy does with its repository-scoped
            // store, and only if this upstream has sent those very bytes before: a `HEAD`'s 200
            // alone proves nothing (a registry may answer it for any digest, and a private blob
            // would then go out under its name). A "no" records nothing.
            if meta.upstream_sent(&t.upstream.host, d).await? {
                self.confirm_blob(t, d).await?;
                meta.link_blob(&t.cache, d, size).await?;
                return (blob_response(&**store, d, size, req, unknown).await)
                    .map(|r| wharf_metrics::blob_hit(req.method(), r));
            }
            // Not sent by this upstream: answered as if not stored, so nothing about the stored
            // copy shows. A `GET` fetches the bytes (the commit of what is already stored adds
            // nothing), asking first whether the repository has them at all, which costs no
            // transfer when it does not.
            if req.method() == Method::GET && ours.is_none() {
                self.confirm_blob(t, d).await?;
                confirmed = true;
            }
        }
        if req.method() == Method::HEAD {
            // A fill in progress knows the length: no need to ask the upstream (which may be down).
            if let Some(fill) = &ours {
                let p = fill.ready().await;
                if let (Some(size), Phase::Streaming | Phase::Verified | Phase::Done) =
                    (p.size, &p.phase)
                {
                    let (resp, _) = blob_head(d, size, req)?;
                    return Ok(resp);
                }
            }
            let length = self.confirm_blob(t, d).await?;
            let mut out = blob_without_length(d, Body::Empty);
            if let Some(len) = length {
                out.headers_mut().insert(CONTENT_LENGTH, len);
            }
            return Ok(out);
        }
        wharf_metrics::cache_miss(wharf_metrics::Lookup::Blob);
        // The fill seen above even if it has ended since: a fresh one would fetch the blob again.
        let fill = ours.unwrap_or_else(|| {
            self.fills.get(
                d,
                Source {
                    upstream: t.upstream.clone(),
                    remote: t.remote.clone(),
                    cache_repo: t.cache.clone(),
                    size: None,
                },
            )
        });
        if fill.cache_repo != t.cache && !linked && !confirmed {
            // Joining a fill started for another repository of this upstream: the same rule as for
            // stored blobs (its bytes are this upstream's, and verify before any client has them all).
            self.confirm_blob(t, d).await?;
        }
        let p = fill.ready().await;
        match p.phase {
            Phase::Refused {
                status,
                retry_after,
                ..
            } => {
                return Err(Failure::from_status(
                    status,
                    retry_after.as_ref(),
                    t,
                    &format!("blob {d}"),
                )
                .into_error(ErrorCode::BlobUnknown))
            }
            Phase::Failed(why) => {
                return Err(Failure::Unavailable(why.to_string()).into_error(ErrorCode::BlobUnknown))
            }
            Phase::Connecting | Phase::Streaming | Phase::Verified | Phase::Done => {}
        }
        match p.size {
            Some(size) => {
                let (mut resp, range) = blob_head(d, size, req)?;
                let (start, len) = range.map_or((0, size), |r| (r.start, r.len()));
                *resp.body_mut() = fill.body(store.clone(), start, Some(len));
                Ok(resp)
            }
            None => {
                // The upstream did not say how long: stream without a length (and without ranges).
                Ok(blob_without_length(d, fill.body(store.clone(), 0, None)))
            }
        }
    }

    /// The size of blob `d` when the cache repository of `t` links it and the store holds it: what
    /// the mirror has of that repository already, without asking the upstream.
    pub async fn cached_blob(&self, t: &Target, d: &Digest) -> Result<Option<u64>> {
        if self.fetcher.meta.blob(&t.cache, d).await?.is_none() {
            return Ok(None);
        }
        // Through the request path's store: the stat touches `d`, so a manifest push that links it
        // next finds it still there.
        Ok(self.fetcher.store.stat(d).await?)
    }

    /// `HEAD`s the blob in the target's upstream repository: its `Content-Length` if it is there, the
    /// upstream's refusal otherwise.
    async fn confirm_blob(&self, t: &Target, d: &Digest) -> Result<Option<HeaderValue>> {
        let path = format!("/v2/{}/blobs/{d}", t.remote);
        let resp = t
            .upstream
            .send(Method::HEAD, &path, &HeaderMap::new(), &t.scope())
            .await
            .map_err(|e| Failure::from(e).into_error(ErrorCode::BlobUnknown))?;
        if resp.status() != StatusCode::OK {
            return Err(Failure::from_response(&resp, t, &format!("blob {d}"))
                .into_error(ErrorCode::BlobUnknown));
        }
        Ok(resp.headers().get(CONTENT_LENGTH).cloned())
    }
}

/// A blob response whose length the upstream decides (or did not say).
fn blob_without_length(d: &Digest, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        CONTENT_DIGEST,
        HeaderValue::from_str(&d.to_string()).expect("digests are ASCII"),
    );
    resp
}
