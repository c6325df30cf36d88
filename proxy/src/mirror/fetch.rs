//! Fetching manifests from an upstream into the cache: the `Fetcher` a single-flight task clones,
//! what it brings back (`Fetched`), and reading an upstream body within a size and a time limit.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::target::{Failure, Target};
use wharf_model::clock::unix_now;
use wharf_model::digest::Digest;
use wharf_model::manifest::{self, bare_media_type};
use wharf_policy::policy::adopt_manifest;
use wharf_protocol::respond::CONTENT_DIGEST;
use wharf_storage::meta::{ManifestPut, ManifestRecord, Meta};
use wharf_storage::store::ContentStore;

#[derive(Debug, Clone)]
pub(super) struct Fetched {
    pub(super) digest: Digest,
    pub(super) record: ManifestRecord,
}

/// What fetching needs, cheap to clone into a single-flight task.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub(super) store: Arc<dyn ContentStore>,
    pub(super) meta: Meta,
    pub(super) max_manifest: u64,
}

impl Fetcher {
    /// A manifest by digest that the cache repository does not record. Bytes already in the content
    /// store that this upstream sent before (through another of its repositories) are recorded for
    /// it once the upstream confirms that repository has them; otherwise they are fetched, as
    /// `blobs.rs` does with blobs: a `HEAD`'s word never lets out a manifest pushed here privately.
    pub(super) async fn by_digest(
        &self,
        t: &Target,
        d: &Digest,
        accept: &HeaderMap,
    ) -> std::result::Result<Fetched, Failure> {
        if self.sent_here(t, d).await {
            manifest_request(t, Method::HEAD, &d.to_string(), accept).await?;
            if let Some(f) = self.adopt(&t.cache, d).await {
                return Ok(f);
            }
        }
        self.get(t, &d.to_string(), Some(d), accept).await
    }

    /// Whether manifest `d` is in the content store and `t`'s upstream has sent it (a verified
    /// `GET`, through any of its repositories): only then may its word stand in for a fetch. A
    /// metadata error reads as "not sent", which costs a fetch, never a leak.
    async fn sent_here(&self, t: &Target, d: &Digest) -> bool {
        self.store.stat(d).await.ok().flatten().is_some()
            && self
                .meta
                .upstream_sent(&t.upstream.host, d)
                .await
                .unwrap_or(false)
    }

    /// Manifest bytes already in the content store that the upstream sent before, through another of
    /// its repositories, are recorded for `cache` instead of fetched again (`sent_here` first).
    async fn adopt(&self, cache: &str, d: &Digest) -> Option<Fetched> {
        let record = adopt_manifest(&*self.store, &self.meta, cache, d, self.max_manifest).await?;
        Some(Fetched {
            digest: d.clone(),
            record,
        })
    }

    /// `adopt` for `t`'s cache repository, if `t`'s upstream sent `d`.
    async fn adopt_sent(&self, t: &Target, d: &Digest) -> Option<Fetched> {
        if !self.sent_here(t, d).await {
            return None;
        }
        self.adopt(&t.cache, d).await
    }

    /// Revalidates a tag: `HEAD` upstream (cheap, and not counted by Docker Hub's pull limits), and a
    /// `GET` only if the digest is one the cache does not hold.
    pub(super) async fn refresh_tag(
        &self,
        t: &Target,
        tag: &str,
        accept: &HeaderMap,
    ) -> std::result::Result<Fetched, Failure> {
        let resp = manifest_request(t, Method::HEAD, tag, accept).await?;
        let f = match named_digest(&resp) {
            Some(d) => match self.meta.manifest(&t.cache, &d).await.ok().flatten() {
                Some(rec) if self.store.stat(&d).await.ok().flatten().is_some() => Fetched {
                    digest: d,
                    record: rec,
                },
                // A tag's `HEAD` may name any digest: stored bytes stand in for a fetch only when
                // this upstream sent them, never one pushed here (the tag would serve it).
                _ => match self.adopt_sent(t, &d).await {
                    Some(f) => f,
                    None => self
                        .get(t, &d.to_string(), Some(&d), accept)
                        .await
                        .map_err(|f| match f {
                            // The tag names a digest the upstream then denies having: an upstream
                            // fault (a lying digest header, a half-replicated registry), not an
                            // answer about what the client asked for.
                            Failure::NotFound(_) => Failure::Unavailable(format!(
                                "upstream {} is inconsistent: its HEAD of {}:{tag} named {d}, but \
                                 a GET of {d} answered 404",
                                t.upstream.host, t.remote
                            )),
                            f => f,
                        })?,
                },
            },
            None => self.get(t, tag, None, accept).await?,
        };
        self.meta
            .mirror_tag(&t.cache, tag, &f.digest, None, unix_now())
            .await
            .map_err(|e| Failure::Unavailable(format!("cannot record the cached tag: {e}")))?;
        Ok(f)
    }

    /// `GET`s a manifest, verifies it (against `expected`, else the upstream's digest header), stores
    /// its exact bytes and records it for the cache repository.
    pub(super) async fn get(
        &self,
        t: &Target,
        reference: &str,
        expected: Option<&Digest>,
        accept: &HeaderMap,
    ) -> std::result::Result<Fetched, Failure> {
        let resp = manifest_request(t, Method::GET, reference, accept).await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| bare_media_type(v).to_owned());
        let named = named_digest(&resp);
        let bytes = read_limited(
            resp.into_body(),
            self.max_manifest as usize,
            t.upstream.timeout,
        )
        .await
        .map_err(|e| {
            Failure::Unavailable(format!(
                "upstream {} manifest {reference}: {e}",
                t.upstream.host
            ))
        })?;
        wharf_metrics::fetched(&t.upstream.host, bytes.len() as u64);
        let want = expected.cloned().or(named);
        let digest = match &want {
            Some(w) => {
                let actual = Digest::of(w.algorithm(), &bytes);
                if &actual != w {
                    return Err(Failure::Unavailable(format!(
                        "upstream {} sent manifest bytes with digest {actual} for {w}; not cached",
                        t.upstream.host
                    )));
                }
                actual
            }
            None => Digest::sha256_of(&bytes),
        };
        let parsed = manifest::parse(content_type.as_deref(), &bytes).ok();
        let record = ManifestRecord {
            media_type: parsed
                .as_ref()
                .map(|m| m.media_type.clone())
                .or(content_type)
                .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned()),
            size: bytes.len() as u64,
            subject: parsed.and_then(|m| m.subject),
        };
        let cache_err = |e: String| Failure::Unavailable(format!("cannot cache manifest: {e}"));
        self.store
            .put(&digest, bytes)
            .await
            .map_err(|e| cache_err(e.to_string()))?;
        // The bytes hash to `digest`: the upstream sent them, whatever else the store held before.
        let put = ManifestPut {
            repo: &t.cache,
            digest: &digest,
            record: record.clone(),
            tag: None,
            referrer: None,
        };
        self.meta
            .put_sent_manifest(put, &t.upstream.host)
            .await
            .map_err(|e| cache_err(e.to_string()))?;
        Ok(Fetched { digest, record })
    }
}

/// `HEAD`/`GET /v2/<remote>/manifests/<reference>` upstream; anything but 200 is a `Failure`.
async fn manifest_request(
    t: &Target,
    method: Method,
    reference: &str,
    accept: &HeaderMap,
) -> std::result::Result<Response<hyper::body::Incoming>, Failure> {
    let path = format!("/v2/{}/manifests/{reference}", t.remote);
    let resp = t.upstream.send(method, &path, accept, &t.scope()).await?;
    if resp.status() != StatusCode::OK {
        return Err(Failure::from_response(
            &resp,
            t,
            &format!("manifest {reference}"),
        ));
    }
    Ok(resp)
}

/// The upstream's `Docker-Content-Digest`, if it sent a valid one.
fn named_digest<B>(resp: &Response<B>) -> Option<Digest> {
    resp.headers()
        .get(CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
    timeout: std::time::Duration,
) -> std::result::Result<Bytes, String> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(format!("no complete body within {} s", timeout.as_secs())),
        Ok(Err(e)) => Err(format!("body unreadable or over {limit} bytes: {e}")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}
