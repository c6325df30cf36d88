//! Manifests: `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<tag or digest>`.
//!
//! Stored and served byte for byte: the digest of what a client gets always equals the digest it asked
//! for, and a tag's digest on `HEAD` is one a `GET` by digest then serves.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::place::{Place, Routed};
use super::services::Registry;
use crate::mirror::Target;
use crate::push::{Push, Pushed};
use wharf_model::digest::Digest;
use wharf_model::manifest::{self};
use wharf_model::reference::{Reference, RepoName};
use wharf_model::request::Operation;
use wharf_policy::policy::{adopt_manifest, Policy, Repo};
use wharf_protocol::body::Body;
use wharf_protocol::error::{BodyIdle, ErrorCode, RegistryError, Result};
use wharf_protocol::respond::accepts;
use wharf_protocol::respond::manifest_response;
use wharf_protocol::respond::not_acceptable;
use wharf_protocol::respond::{
    empty_response, header_str, BoxError, RequestBody, CONTENT_DIGEST, OCI_SUBJECT,
};
use wharf_protocol::route::Route;
use wharf_storage::meta::{ManifestPut, ManifestRecord};

fn manifest_unknown(repo: &RepoName, r: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {r} is not in repository {repo}"),
    )
}

fn too_large(limit: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestInvalid,
        format!(
            "manifest is larger than this registry's limit of {limit} bytes (registry.max_manifest_bytes)"
        ),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Reads a manifest body of at most `limit` bytes. A body that passes the limit is refused at once,
/// the rest unread: `handle` answers it with `Connection: close`, so hyper closes the connection
/// after the answer rather than read on, and the lingering close (`server/limits.rs`) keeps a client
/// still sending from losing the answer to a reset. A client that goes quiet past the limit hears
/// 413, not a timeout.
async fn read_capped<B: RequestBody>(mut body: B, limit: u64) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let e: BoxError = e.into();
            // A body that stopped arriving is a timeout (408), one that broke off is bad input.
            let status = if e.downcast_ref::<BodyIdle>().is_some() {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::BAD_REQUEST
            };
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest body ended early ({e}); nothing was stored"),
            )
            .with_status(status)
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (buf.len() + data.len()) as u64 > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

impl Registry {
    async fn resolve(&self, repo: &RepoName, r: &Reference) -> Result<Digest> {
        match r {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => self
                .meta
                .tag(repo.as_str(), t.as_str())
                .await?
                .ok_or_else(|| manifest_unknown(repo, r)),
        }
    }

    pub(super) async fn get_manifest<B>(
        &self,
        repo: &RepoName,
        r: &Reference,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let d = self.resolve(repo, r).await?;
        let rec = self
            .meta
            .manifest(repo.as_str(), &d)
            .await?
            .ok_or_else(|| manifest_unknown(repo, r))?;
        if !accepts(req.headers(), &rec.media_type) {
            return Err(not_acceptable(repo.as_str(), r, &rec.media_type));
        }
        let (d, rec) = match r {
            // What a tag serves goes through the manifest plugins; a digest is the digest.
            Reference::Tag(t) if self.policy.rewrites() => {
                let ctx = Policy::context(
                    Operation::Pull,
                    None,
                    repo.as_str(),
                    Some(t.to_string()),
                    req,
                );
                self.policy
                    .tag_manifest(Repo::Local(repo.as_str()), ctx, d, rec)
                    .await?
            }
            _ => (d, rec),
        };
        let resp = manifest_response(&*self.store, &d, &rec, req.method() == Method::HEAD).await?;
        // A use of the tags `r` names, for `wharf images` and the status page (noted in memory).
        match r {
            Reference::Tag(t) => self.meta.pulled(repo.as_str(), t.as_str()),
            Reference::Digest(d) => self.meta.pulled(repo.as_str(), &d.to_string()),
        }
        Ok(resp)
    }

    pub(super) async fn put_manifest<B: RequestBody>(
        &self,
        repo: &RepoName,
        r: &Reference,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let limit = self.cfg.max_manifest_bytes;
        // Refused before reading a byte (and before `Expect: 100-continue` is answered): the body
        // would only be thrown away. `handle` closes the connection, as the body stays unread.
        let declared = header_str(&req, CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok());
        if declared.is_some_and(|l| l > limit) {
            return Err(too_large(limit));
        }
        let content_type = header_str(&req, CONTENT_TYPE).map(str::to_owned);
        let (parts, body) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let ctx = Policy::context(
            Operation::Push,
            None,
            repo.as_str(),
            Some(r.to_string()),
            &head,
        );
        let body = read_capped(body, limit).await?;
        let m = manifest::parse(content_type.as_deref(), &body)
            .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        let digest = match r {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(RegistryError::new(
                        ErrorCode::DigestInvalid,
                        format!(
                            "manifest pushed as {d} has digest {actual}; push it by its own digest or \
                             by tag"
                        ),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        // Touched before the check: the collector either sees the touch and spares what it names, or
        // has removed it already and the check says it is missing. Never a tag on content that is
        // about to go.
        self.leases
            .record_edges(&digest, wharf_model::manifest::children_of(&m));
        self.leases.touch(std::slice::from_ref(&digest)).await;
        let missing = self
            .meta
            .missing(
                repo.as_str(),
                m.blobs.iter().map(|b| b.0.clone()).collect(),
                m.manifests.iter().map(|b| b.0.clone()).collect(),
            )
            .await?;
        let missing = if missing.is_empty() {
            missing
        } else {
            self.adopt_pulled(repo, &m, missing, &head).await?
        };
        if let Some(first) = missing.first() {
            let more = match missing.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "manifest references {first}{more}, which repository {repo} does not have; push \
                     blobs and child manifests before the manifest that refers to them"
                ),
            )
            .with_detail(serde_json::json!({
                "missing": missing.iter().map(|d| d.to_string()).collect::<Vec<_>>()
            })));
        }
        let size = body.len() as u64;
        self.store.put(&digest, body).await?;
        let tag = match r {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        let record = ManifestRecord {
            media_type: m.media_type.clone(),
            size,
            subject: m.subject.clone(),
        };
        let referrer = m.subject.as_ref().map(|_| m.descriptor(&digest, size));
        let routed = self
            .push
            .as_ref()
            .filter(|p| p.route_of(repo.as_str()).is_some() && Push::delivers(tag, &m));
        match routed {
            // The push phase: journal, lease, delivery; it records the manifest itself.
            Some(push) => {
                let mut reaches: Vec<Digest> = m.blobs.iter().map(|b| b.0.clone()).collect();
                for (child, _) in &m.manifests {
                    reaches.push(child.clone());
                    reaches.extend(
                        self.leases
                            .edges(child)
                            .iter()
                            .flat_map(|e| e.iter().cloned()),
                    );
                }
                push.pushed(Pushed {
                    repo: repo.to_string(),
                    tag: tag.map(str::to_owned),
                    digest: digest.clone(),
                    record: record.clone(),
                    referrer,
                    reaches,
                })
                .await?;
            }
            None => {
                self.meta
                    .put_manifest(ManifestPut {
                        repo: repo.as_str(),
                        digest: &digest,
                        record: record.clone(),
                        tag,
                        referrer,
                    })
                    .await?
            }
        }
        if tag.is_some() {
            // The rewrite the tag will serve is made now: the push stores both manifests and the
            // mapping. The client's manifest is committed either way; a failure here is the
            // plugins', logged, and tried again on the first pull.
            if let Err(e) = self
                .policy
                .tag_manifest(Repo::Local(repo.as_str()), ctx, digest.clone(), record)
                .await
            {
                tracing::warn!(%repo, %digest, error = %e, "could not rewrite the pushed manifest");
            }
        }
        let mut headers = vec![
            (LOCATION, format!("/v2/{repo}/manifests/{digest}")),
            (CONTENT_DIGEST, digest.to_string()),
        ];
        if let Some(s) = &m.subject {
            // Tells the client this registry keeps referrers itself, so it need not maintain the
            // fallback tag schema.
            headers.push((OCI_SUBJECT, s.to_string()));
        }
        Ok(empty_response(StatusCode::CREATED, &headers))
    }

    /// Of what a pushed manifest names and `repo` lacks (`missing`), what the mirror holds for the
    /// same host-less name is linked here, as a mount would, when the caller may pull it there; the
    /// rest is returned. The everyday "pull from Docker Hub, re-tag, push here" flow: the client's
    /// blob `HEAD`s on the new name were answered by the default upstream's cached repository
    /// (`dispatch_mirror`), so it uploads nothing, and this makes its manifest push agree.
    async fn adopt_pulled(
        &self,
        repo: &RepoName,
        m: &manifest::Manifest,
        missing: Vec<Digest>,
        req: &Request<()>,
    ) -> Result<Vec<Digest>> {
        let Some(t) = self.mirror.default_target(repo.as_str()) else {
            return Ok(missing);
        };
        if !self.mirror.has_cached(&t).await? {
            return Ok(missing);
        }
        let as_pull = Routed {
            route: Route::Blob(repo.clone(), missing[0].clone()),
            place: Some(Place::Mirror {
                target: t.clone(),
                fallback: true,
            }),
            unconfigured: None,
        };
        if let Err(e) = self.access_as(&as_pull, Some(repo), Method::GET, req).await {
            tracing::debug!(%repo, from = %t.cache, error = %e, "pushed manifest's blobs not adopted from the mirror: the caller may not pull them there");
            return Ok(missing);
        }
        let mut left = Vec::new();
        for d in missing {
            let adopted = if m.blobs.iter().any(|(b, _)| *b == d) {
                self.adopt_blob(repo, &t, &d).await?
            } else {
                self.adopt_child(repo, &t, &d, 0).await?
            };
            if adopted {
                tracing::debug!(%repo, digest = %d, from = %t.cache, "linked from the mirror for a pushed manifest");
            } else {
                left.push(d);
            }
        }
        Ok(left)
    }

    /// Links blob `d` into `repo` when the mirror holds it for `t`.
    async fn adopt_blob(&self, repo: &RepoName, t: &Target, d: &Digest) -> Result<bool> {
        let Some(size) = self.mirror.cached_blob(t, d).await? else {
            return Ok(false);
        };
        self.meta.link_blob(repo.as_str(), d, size).await?;
        self.blob_linked(repo, d, size);
        Ok(true)
    }

    /// Records child manifest `d`, which the mirror holds for `t`, in `repo`, after linking what it
    /// references that `repo` lacks: a child is only ever recorded whole (containerd `HEAD`s an
    /// index's children by digest and, told they are here, pushes only the index). `false`, and no
    /// record of `d`, when the mirror lacks any of it.
    async fn adopt_child(
        &self,
        repo: &RepoName,
        t: &Target,
        d: &Digest,
        depth: usize,
    ) -> Result<bool> {
        // An index of indexes of images is as deep as OCI images go in practice.
        if depth > 3 {
            return Ok(false);
        }
        let Some(rec) = self.meta.manifest(&t.cache, d).await? else {
            return Ok(false);
        };
        let Ok(bytes) = self.store.read_all(d, rec.size).await else {
            return Ok(false);
        };
        let Ok(child) = manifest::parse(Some(&rec.media_type), &bytes) else {
            return Ok(false);
        };
        let lacking = self
            .meta
            .missing(
                repo.as_str(),
                child.blobs.iter().map(|b| b.0.clone()).collect(),
                child.manifests.iter().map(|b| b.0.clone()).collect(),
            )
            .await?;
        for x in lacking {
            let done = if child.blobs.iter().any(|(b, _)| *b == x) {
                self.adopt_blob(repo, t, &x).await?
            } else {
                Box::pin(self.adopt_child(repo, t, &x, depth + 1)).await?
            };
            if !done {
                return Ok(false);
            }
        }
        Ok(adopt_manifest(
            &*self.store,
            &self.meta,
            repo.as_str(),
            d,
            self.cfg.max_manifest_bytes,
        )
        .await
        .is_some())
    }

    pub(super) async fn delete_manifest(
        &self,
        repo: &RepoName,
        r: &Reference,
    ) -> Result<Response<Body>> {
        self.require_delete()?;
        let deleted = match r {
            Reference::Digest(d) => self.meta.delete_manifest(repo.as_str(), d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo.as_str(), t.as_str()).await?,
        };
        if !deleted {
            return Err(manifest_unknown(repo, r));
        }
        Ok(empty_response(StatusCode::ACCEPTED, &[]))
    }
}
