//! Blob uploads: monolithic `POST ?digest=`, sessions (`POST`, `PATCH`*, `PUT ?digest=`), status, cancel,
//! and cross-repository mounts (OCI distribution spec, "Pushing blobs").
//!
//! Bytes go to an ingest in the content store as they arrive; nothing is visible under the blob's digest
//! until `PUT` verified it. A session's writer stays in memory between its requests; after a restart the
//! next request reopens the ingest (the record of the session is in the metadata store).

use http::header::{CONTENT_LENGTH, LOCATION, RANGE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::{empty_response, header_str, query_param, unix_now, Registry, RequestBody};
use super::{CONTENT_DIGEST, UPLOAD_UUID};
use crate::body::Body;
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::meta::UploadRecord;
use crate::range::{parse_content_range, upload_range};
use crate::reference::RepoName;
use crate::store::{BlobWriter, IngestRef, StoreError};

/// State of one upload session between its requests.
#[derive(Default)]
pub(super) struct Session {
    writer: Option<Box<dyn BlobWriter>>,
    /// Set once the session was committed or cancelled, for requests that were already waiting on it.
    closed: bool,
}

enum DrainError {
    Body(String),
    Store(StoreError),
}

/// Streams a request body into a writer.
async fn drain<B: RequestBody>(mut body: B, w: &mut dyn BlobWriter) -> Result<(), DrainError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| DrainError::Body(e.into().to_string()))?;
        if let Ok(data) = frame.into_data() {
            w.write(data).await.map_err(DrainError::Store)?;
        }
    }
    Ok(())
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!(
            "upload {id:?} is not in progress here (finished, cancelled, expired, or never started); \
             start a new upload with POST /v2/<name>/blobs/uploads/"
        ),
    )
}

fn blob_created(repo: &RepoName, d: &Digest) -> Response<Body> {
    empty_response(
        StatusCode::CREATED,
        &[
            (LOCATION, format!("/v2/{repo}/blobs/{d}")),
            (CONTENT_DIGEST, d.to_string()),
        ],
    )
}

fn session_headers(repo: &RepoName, id: &str, offset: u64) -> [(http::HeaderName, String); 3] {
    [
        (LOCATION, format!("/v2/{repo}/blobs/uploads/{id}")),
        (RANGE, upload_range(offset)),
        (UPLOAD_UUID, id.to_owned()),
    ]
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    header_str(req, CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

impl Registry {
    pub(super) async fn start_upload<B: RequestBody>(
        &self,
        repo: &RepoName,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        if let Some(mount) = query_param(&req, "mount") {
            let d: Digest = mount.parse()?;
            if let Some(from) = query_param(&req, "from") {
                let from: RepoName = from.parse()?;
                if let Some(size) = self.meta.blob(from.as_str(), &d).await? {
                    if self.store.stat(&d).await?.is_some() {
                        self.meta.link_blob(repo.as_str(), &d, size).await?;
                        return Ok(blob_created(repo, &d));
                    }
                }
            }
            // The spec: a mount that cannot be done falls back to a new upload session (202).
        }
        if let Some(d) = query_param(&req, "digest") {
            let d: Digest = d.parse()?;
            return self.monolithic_upload(repo, &d, req).await;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.meta
            .create_upload(
                &id,
                UploadRecord {
                    repo: repo.to_string(),
                    started: unix_now(),
                },
            )
            .await?;
        Ok(empty_response(
            StatusCode::ACCEPTED,
            &session_headers(repo, &id, 0),
        ))
    }

    async fn monolithic_upload<B: RequestBody>(
        &self,
        repo: &RepoName,
        d: &Digest,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let declared = declared_length(&req);
        let ingest = IngestRef::new(format!("mono-{}", uuid::Uuid::new_v4().simple()))?;
        let mut w = self.store.writer(&ingest).await?;
        if let Err(e) = drain(req.into_body(), w.as_mut()).await {
            let got = w.offset();
            drop(w);
            self.store.abort(&ingest).await?;
            return Err(match e {
                DrainError::Store(e) => e.into(),
                DrainError::Body(e) => RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "request body ended after {got} bytes ({e}); nothing was stored: send the \
                         whole blob again"
                    ),
                ),
            });
        }
        match w.commit(d, declared).await {
            Ok(size) => {
                self.meta.link_blob(repo.as_str(), d, size).await?;
                Ok(blob_created(repo, d))
            }
            Err(e) => {
                self.store.abort(&ingest).await?;
                Err(e.into())
            }
        }
    }

    /// The session `id` of `repo`, as stored; 404 if it is not one.
    async fn session(&self, repo: &RepoName, id: &str) -> Result<super::SessionWriter> {
        let known = IngestRef::new(id).is_ok()
            && self
                .meta
                .upload(id)
                .await?
                .is_some_and(|r| r.repo == repo.as_str());
        if !known {
            return Err(upload_unknown(id));
        }
        Ok(self.sessions.entry(id.to_owned()).or_default().clone())
    }

    /// The session's writer, reopening its ingest if this process has not seen it yet.
    async fn writer<'a>(
        &self,
        id: &str,
        s: &'a mut Session,
    ) -> Result<&'a mut Box<dyn BlobWriter>> {
        if s.closed {
            return Err(upload_unknown(id));
        }
        if s.writer.is_none() {
            s.writer = Some(self.store.writer(&IngestRef::new(id)?).await?);
        }
        Ok(s.writer.as_mut().expect("just set"))
    }

    /// Checks a chunk's `Content-Range` against what the session holds.
    fn check_chunk<B>(
        &self,
        repo: &RepoName,
        id: &str,
        offset: u64,
        req: &Request<B>,
    ) -> Result<()> {
        let Some(cr) = header_str(req, http::header::CONTENT_RANGE) else {
            return Ok(());
        };
        let r = parse_content_range(cr).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range {cr:?} is not of the form <start>-<end>"),
            )
        })?;
        if r.start != offset {
            let mut e = RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "chunk starts at byte {} but the upload holds {offset} bytes; send chunks in order, \
                     starting where the Range header says",
                    r.start
                ),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
            for (k, v) in session_headers(repo, id, offset) {
                e = e.with_header(k, v);
            }
            return Err(e);
        }
        if let Some(len) = declared_length(req).filter(|l| *l != r.len()) {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "Content-Range {cr:?} covers {} bytes but Content-Length is {len}",
                    r.len()
                ),
            ));
        }
        Ok(())
    }

    pub(super) async fn patch_upload<B: RequestBody>(
        &self,
        repo: &RepoName,
        id: &str,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let session = self.session(repo, id).await?;
        let mut s = session.lock().await;
        let w = self.writer(id, &mut s).await?;
        self.check_chunk(repo, id, w.offset(), &req)?;
        let drained = drain(req.into_body(), w.as_mut()).await;
        w.flush().await?;
        if let Err(e) = drained {
            let offset = w.offset();
            let mut err = match e {
                DrainError::Store(e) => RegistryError::from(e),
                DrainError::Body(e) => RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "chunk body ended early ({e}); the upload holds {offset} bytes: continue from \
                         there (GET this URL for its Range)"
                    ),
                ),
            };
            for (k, v) in session_headers(repo, id, offset) {
                err = err.with_header(k, v);
            }
            return Err(err);
        }
        Ok(empty_response(
            StatusCode::ACCEPTED,
            &session_headers(repo, id, w.offset()),
        ))
    }

    pub(super) async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<Response<Body>> {
        let session = self.session(repo, id).await?;
        let mut s = session.lock().await;
        let offset = self.writer(id, &mut s).await?.offset();
        Ok(empty_response(
            StatusCode::NO_CONTENT,
            &session_headers(repo, id, offset),
        ))
    }

    pub(super) async fn finish_upload<B: RequestBody>(
        &self,
        repo: &RepoName,
        id: &str,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let d: Digest = query_param(&req, "digest")
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::DigestInvalid,
                    "completing an upload needs the blob's digest: PUT <location>?digest=<digest>",
                )
            })?
            .parse()?;
        let session = self.session(repo, id).await?;
        let mut s = session.lock().await;
        let w = self.writer(id, &mut s).await?;
        self.check_chunk(repo, id, w.offset(), &req)?;
        let drained = drain(req.into_body(), w.as_mut()).await;
        let w = s.writer.take().expect("writer() set it");
        s.closed = true;
        let committed = match drained {
            Ok(()) => w.commit(&d, None).await.map_err(RegistryError::from),
            Err(DrainError::Store(e)) => Err(e.into()),
            Err(DrainError::Body(e)) => Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("final chunk ended early ({e}); nothing was stored: upload the blob again"),
            )),
        };
        // Whatever happened, this session is over: a failed commit left nothing to resume from.
        self.drop_session(id).await?;
        let size = committed?;
        self.meta.link_blob(repo.as_str(), &d, size).await?;
        Ok(blob_created(repo, &d))
    }

    pub(super) async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<Response<Body>> {
        let session = self.session(repo, id).await?;
        let mut s = session.lock().await;
        s.writer = None;
        s.closed = true;
        self.drop_session(id).await?;
        Ok(empty_response(StatusCode::NO_CONTENT, &[]))
    }

    /// Forgets a session and drops its ingest.
    pub(super) async fn drop_session(&self, id: &str) -> Result<()> {
        self.sessions.remove(id);
        if let Ok(r) = IngestRef::new(id) {
            self.store.abort(&r).await?;
        }
        self.meta.remove_upload(id).await?;
        Ok(())
    }
}
