//! Blob uploads: monolithic `POST ?digest=`, sessions (`POST`, `PATCH`*, `PUT ?digest=`), status, cancel,
//! and cross-repository mounts (OCI distribution spec, "Pushing blobs").
//!
//! Bytes go to an ingest in the content store as they arrive; nothing is visible under the blob's digest
//! until `PUT` verified it. A session's writer stays in memory between its requests, released (it holds
//! no file descriptor while idle); after a restart the next request reopens the ingest (the record of
//! the session is in the metadata store).
//!
//! Sessions are bounded: at most `registry.max_upload_sessions` at once, of which one client (the
//! identity it logged in as, else its address) holds at most `max_upload_sessions_per_client`, so
//! one client cannot take every session from the others; and the purge drops those idle for
//! `upload_idle_secs` or older than `upload_ttl_secs` — but never one a request is writing to.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, LOCATION, RANGE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::services::Registry;
use super::session::Session;
use wharf_model::clock::unix_now;
use wharf_model::digest::Digest;
use wharf_model::range::{parse_content_range, upload_range};
use wharf_model::reference::RepoName;
use wharf_model::request::ClientAddr;
use wharf_model::request::{Caller, Operator};
use wharf_protocol::body::Body;
use wharf_protocol::error::{BodyIdle, ErrorCode, RegistryError, Result};
use wharf_protocol::respond::{empty_response, header_str, query_param, BoxError, RequestBody};
use wharf_protocol::respond::{CONTENT_DIGEST, UPLOAD_UUID};
use wharf_storage::lease::Lease;
use wharf_storage::meta::UploadRecord;
use wharf_storage::store::{BlobWriter, IngestRef, StoreError};

/// What one purge removed, and what it left because a transfer held it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub sessions: usize,
    pub ingests: usize,
    pub bytes: u64,
    /// Expired sessions and orphaned ingests left alone because a request is writing to them.
    pub in_progress: usize,
}

enum DrainError {
    Body(BoxError),
    Store(StoreError),
    /// The session was cancelled or expired while the body arrived.
    Closed,
}

impl DrainError {
    /// 408 for a body that stopped arriving, 400 for one that broke off.
    fn body_status(e: &BoxError) -> StatusCode {
        if e.downcast_ref::<BodyIdle>().is_some() {
            StatusCode::REQUEST_TIMEOUT
        } else {
            StatusCode::BAD_REQUEST
        }
    }
}

/// Streams a request body into a writer; for a session, until the session closes, and keeping its
/// `received` up to date.
async fn drain<B: RequestBody>(
    mut body: B,
    w: &mut dyn BlobWriter,
    session: Option<&Session>,
) -> Result<(), DrainError> {
    loop {
        let frame = match session {
            Some(s) => tokio::select! {
                f = body.frame() => f,
                () = s.closed() => return Err(DrainError::Closed),
            },
            None => body.frame().await,
        };
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame.map_err(|e| DrainError::Body(e.into()))?;
        if let Ok(data) = frame.into_data() {
            w.write(data).await.map_err(DrainError::Store)?;
            if let Some(s) = session {
                s.received.store(w.written(), Ordering::Relaxed);
            }
        }
    }
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

fn too_many_sessions(open: usize, cfg: &wharf_model::config::RegistryConfig) -> RegistryError {
    RegistryError::new(
        ErrorCode::TooManyRequests,
        format!(
            "{open} upload sessions are open, the most this registry allows \
             (registry.max_upload_sessions = {}); finish or cancel (DELETE) unfinished uploads, or \
             retry once idle ones expire (registry.upload_idle_secs = {}), or raise \
             registry.max_upload_sessions",
            cfg.max_upload_sessions, cfg.upload_idle_secs
        ),
    )
    .with_header(RETRY_AFTER, cfg.upload_purge_secs.max(1))
}

/// `max_upload_sessions_per_client` is reached by `client`, which holds `mine`.
fn too_many_for_client(
    client: &str,
    mine: usize,
    cfg: &wharf_model::config::RegistryConfig,
) -> RegistryError {
    RegistryError::new(
        ErrorCode::TooManyRequests,
        format!(
            "{client} holds {mine} upload sessions, the most one client may hold \
             (registry.max_upload_sessions_per_client = {}; a client is the identity it logs in \
             as, else its address); finish or cancel (DELETE) its unfinished uploads, or retry once \
             idle ones expire (registry.upload_idle_secs = {}), or raise \
             registry.max_upload_sessions_per_client",
            cfg.max_upload_sessions_per_client, cfg.upload_idle_secs
        ),
    )
    .with_header(RETRY_AFTER, cfg.upload_purge_secs.max(1))
}

/// Whose upload session a request would start: the identity its credential proved, else its
/// address. The operator (the admin socket: `wharf import`) is held by the global cap alone.
fn client_of<B>(req: &Request<B>) -> Option<String> {
    if req.extensions().get::<Operator>().is_some() {
        return None;
    }
    if let Some(id) = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.identity.as_deref())
    {
        return Some(format!("identity {id}"));
    }
    req.extensions()
        .get::<ClientAddr>()
        .map(|a| format!("address {}", a.0.ip()))
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    header_str(req, CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

impl Registry {
    /// `mount_from`: the repository a `?mount=` may link from, once the access phase found the
    /// caller may read it (`Registry::mount_source`); `None` makes any mount an ordinary upload.
    pub(super) async fn start_upload<B: RequestBody>(
        &self,
        repo: &RepoName,
        mount_from: Option<String>,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        if let Some(mount) = query_param(&req, "mount") {
            let d: Digest = mount.parse()?;
            if let Some(from) = query_param(&req, "from") {
                // A malformed name is the client's mistake to hear about, not a mount to skip.
                from.parse::<RepoName>()?;
            }
            if let Some(from) = mount_from {
                if let Some(size) = self.meta.blob(&from, &d).await? {
                    if self.store.stat(&d).await?.is_some() {
                        self.meta.link_blob(repo.as_str(), &d, size).await?;
                        self.blob_linked(repo, &d, size);
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
        let now = unix_now();
        let client = client_of(&req);
        let session = Session::new(repo.as_str(), client.clone(), now, 0);
        self.admit(&id, session.clone())?;
        let lease = match self.open_session(repo, &id, now, client).await {
            Ok(lease) => lease,
            Err(e) => {
                self.sessions.remove(&id);
                return Err(e);
            }
        };
        *session.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        Ok(empty_response(
            StatusCode::ACCEPTED,
            &session_headers(repo, &id, 0),
        ))
    }

    /// A new session's lease (over its ingest) and record.
    async fn open_session(
        &self,
        repo: &RepoName,
        id: &str,
        now: u64,
        client: Option<String>,
    ) -> Result<Lease> {
        let lease = self
            .leases
            .acquire_labelled(
                &format!("upload {repo} {id}"),
                &[("repository", repo.as_str()), ("upload", id)],
                std::time::Duration::from_secs(self.cfg.upload_ttl_secs),
            )
            .await?;
        let recorded = async {
            // The session's ingest is named by its id.
            lease.protect_ingest(&IngestRef::new(id)?).await?;
            let rec = UploadRecord {
                repo: repo.to_string(),
                started: now,
                client,
                owner: self.cluster.as_ref().map(|c| c.advertise().to_owned()),
            };
            self.meta.create_upload(id, rec).await?;
            Ok::<_, RegistryError>(())
        };
        match recorded.await {
            Ok(()) => Ok(lease),
            Err(e) => {
                lease.release().await?;
                Err(e)
            }
        }
    }

    /// Counts a new session in, unless the registry or its client holds as many as allowed.
    /// Counting and adding happen under one lock: concurrent starts never pass a cap together.
    fn admit(&self, id: &str, session: Arc<Session>) -> Result<()> {
        let _counting = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let open = self.sessions.len();
        if open >= self.cfg.max_upload_sessions {
            return Err(too_many_sessions(open, &self.cfg));
        }
        if let Some(client) = &session.client {
            let mine = self
                .sessions
                .iter()
                .filter(|s| s.client.as_ref() == Some(client))
                .count();
            if mine >= self.cfg.max_upload_sessions_per_client {
                tracing::info!(%client, sessions = mine, "upload session refused: the client holds registry.max_upload_sessions_per_client");
                return Err(too_many_for_client(client, mine, &self.cfg));
            }
        }
        self.sessions.insert(id.to_owned(), session);
        Ok(())
    }

    async fn monolithic_upload<B: RequestBody>(
        &self,
        repo: &RepoName,
        d: &Digest,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let declared = declared_length(&req);
        let ingest = IngestRef::new(format!("mono-{}", uuid::Uuid::new_v4().simple()))?;
        let lease = self
            .leases
            .acquire_labelled(
                &format!("upload {repo} {}", ingest.as_str()),
                &[("repository", repo.as_str()), ("digest", &d.to_string())],
                // One request: if it is cut off mid-body the lease is left to expire, soon.
                std::time::Duration::from_secs(3600),
            )
            .await?;
        lease.protect(std::slice::from_ref(d)).await?;
        lease.protect_ingest(&ingest).await?;
        let result = self.monolithic_write(repo, d, &ingest, declared, req).await;
        // Linked and touched by the commit (or nothing stored): the lease has done its work.
        lease.release().await?;
        result
    }

    async fn monolithic_write<B: RequestBody>(
        &self,
        repo: &RepoName,
        d: &Digest,
        ingest: &IngestRef,
        declared: Option<u64>,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let ingest = ingest.clone();
        let mut w = self.store.writer(&ingest).await?;
        if let Err(e) = drain(req.into_body(), w.as_mut(), None).await {
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
                )
                .with_status(DrainError::body_status(&e)),
                DrainError::Closed => unreachable!("a monolithic upload has no session"),
            });
        }
        match w.commit(d, declared).await {
            Ok(size) => {
                self.meta.link_blob(repo.as_str(), d, size).await?;
                self.blob_linked(repo, d, size);
                Ok(blob_created(repo, d))
            }
            Err(e) => {
                self.store.abort(&ingest).await?;
                Err(e.into())
            }
        }
    }

    /// The replica that holds `rec`'s session, if not this one.
    fn owned_elsewhere<'r>(&self, rec: &'r UploadRecord) -> Option<&'r str> {
        let owner = rec.owner.as_deref()?;
        match &self.cluster {
            Some(c) if c.advertise() == owner => None,
            // Outside a cluster a record naming an owner is another replica's too.
            _ => Some(owner),
        }
    }

    /// Where a request for session `id` is served: `None` here (this replica holds it, or it is no
    /// session at all, which the handler says), or the address of the replica that holds it.
    pub(super) async fn session_owner(&self, repo: &RepoName, id: &str) -> Result<Option<String>> {
        if self.cluster.is_none() || self.sessions.contains_key(id) || IngestRef::new(id).is_err() {
            return Ok(None);
        }
        Ok(self
            .meta
            .upload(id)
            .await?
            .filter(|r| r.repo == repo.as_str())
            .and_then(|r| self.owned_elsewhere(&r).map(str::to_owned)))
    }

    /// The session `id` of `repo`; 404 if it is not one.
    async fn session(&self, repo: &RepoName, id: &str) -> Result<Arc<Session>> {
        if let Some(s) = self.sessions.get(id).map(|s| s.clone()) {
            if s.repo != repo.as_str() {
                return Err(upload_unknown(id));
            }
            s.touch();
            return Ok(s);
        }
        // Not seen by this process yet (the startup purge loads every session, so this is rare).
        let rec = match IngestRef::new(id) {
            Ok(_) => self.meta.upload(id).await?,
            Err(_) => None,
        };
        let Some(rec) = rec.filter(|r| r.repo == repo.as_str()) else {
            return Err(upload_unknown(id));
        };
        let s = self
            .sessions
            .entry(id.to_owned())
            .or_insert_with(|| Session::new(&rec.repo, rec.client.clone(), unix_now(), 0))
            .clone();
        s.touch();
        Ok(s)
    }

    /// The session's writer, reopening its ingest if this process has not seen it yet.
    async fn writer<'a>(
        &self,
        id: &str,
        s: &Session,
        slot: &'a mut Option<Box<dyn BlobWriter>>,
    ) -> Result<&'a mut Box<dyn BlobWriter>> {
        if s.is_closed() {
            return Err(upload_unknown(id));
        }
        if slot.is_none() {
            let w = self.store.writer(&IngestRef::new(id)?).await?;
            s.received.store(w.offset(), Ordering::Relaxed);
            *slot = Some(w);
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// Ends a request's use of the session's writer: it keeps what it received and holds no
    /// descriptor until the next request.
    async fn release(&self, id: &str, s: &Session, slot: &mut Option<Box<dyn BlobWriter>>) {
        if let Some(w) = slot.as_mut() {
            if let Err(e) = w.release().await {
                tracing::warn!(upload = id, error = %e, "could not flush an upload session");
            }
            s.received.store(w.offset(), Ordering::Relaxed);
        }
        s.touch();
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
        let mut slot = session.writer.lock().await;
        let res = self.patch_locked(repo, id, &session, &mut slot, req).await;
        self.release(id, &session, &mut slot).await;
        res
    }

    async fn patch_locked<B: RequestBody>(
        &self,
        repo: &RepoName,
        id: &str,
        s: &Session,
        slot: &mut Option<Box<dyn BlobWriter>>,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let w = self.writer(id, s, slot).await?;
        self.check_chunk(repo, id, w.offset(), &req)?;
        let drained = drain(req.into_body(), w.as_mut(), Some(s)).await;
        w.flush().await?;
        if let Err(e) = drained {
            let offset = w.offset();
            let mut err = match e {
                DrainError::Store(e) => RegistryError::from(e),
                DrainError::Closed => return Err(upload_unknown(id)),
                DrainError::Body(e) => RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "chunk body ended early ({e}); the upload holds {offset} bytes: continue from \
                         there (GET this URL for its Range)"
                    ),
                )
                .with_status(DrainError::body_status(&e)),
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

    /// Answers at once: while a request writes to the session, with what is surely received so far.
    pub(super) async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<Response<Body>> {
        let session = self.session(repo, id).await?;
        let offset = match session.writer.try_lock() {
            Ok(mut slot) => {
                let offset = self.writer(id, &session, &mut slot).await?.offset();
                self.release(id, &session, &mut slot).await;
                offset
            }
            Err(_) if session.is_closed() => return Err(upload_unknown(id)),
            Err(_) => session.received.load(Ordering::Relaxed),
        };
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
        let mut slot = session.writer.lock().await;
        let w = self.writer(id, &session, &mut slot).await?;
        if let Err(e) = self.check_chunk(repo, id, w.offset(), &req) {
            self.release(id, &session, &mut slot).await;
            return Err(e);
        }
        let drained = drain(req.into_body(), w.as_mut(), Some(&session)).await;
        let w = slot.take().expect("writer() set it");
        let lease = session.take_lease();
        if let Some(l) = &lease {
            l.protect(std::slice::from_ref(&d)).await?;
        }
        let committed = match drained {
            Ok(()) => match w.commit(&d, None).await {
                // A shared content store (S3) out of reach: nothing was published and the ingest
                // is kept, so the session stays and the client's retry of this PUT commits it (a
                // retry that repeats body bytes fails the digest check and ends the session).
                Err(e) if e.is_unavailable() => {
                    if let Some(l) = lease {
                        l.release().await?;
                    }
                    return Err(e.into());
                }
                r => r.map_err(RegistryError::from),
            },
            Err(DrainError::Store(e)) => Err(e.into()),
            Err(DrainError::Closed) => return Err(upload_unknown(id)),
            Err(DrainError::Body(e)) => Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("final chunk ended early ({e}); nothing was stored: upload the blob again"),
            )
            .with_status(DrainError::body_status(&e))),
        };
        // Whatever happened, this session is over: a failed commit left nothing to resume from.
        self.end_session(id, &session).await?;
        let size = match committed {
            Ok(size) => size,
            Err(e) => {
                if let Some(l) = lease {
                    l.release().await?;
                }
                return Err(e);
            }
        };
        self.meta.link_blob(repo.as_str(), &d, size).await?;
        self.blob_linked(repo, &d, size);
        // Linked and just touched by the commit: the grace window keeps it until a manifest refers
        // to it.
        if let Some(l) = lease {
            l.release().await?;
        }
        Ok(blob_created(repo, &d))
    }

    /// Answers at once; a request still writing to the session is stopped, and the ingest is dropped
    /// once it has let go.
    pub(super) async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<Response<Body>> {
        let session = self.session(repo, id).await?;
        let idle = match session.writer.try_lock() {
            Ok(mut slot) => {
                slot.take();
                true
            }
            Err(_) => false,
        };
        match idle {
            true => self.end_session(id, &session).await?,
            false => {
                self.forget_session(id, &session).await?;
                let store = self.store.clone();
                let ingest = IngestRef::new(id)?;
                tokio::spawn(async move {
                    session.writer.lock().await.take();
                    if let Err(e) = store.abort(&ingest).await {
                        tracing::warn!(upload = %ingest.as_str(), error = %e, "could not drop a cancelled upload");
                    }
                });
            }
        }
        Ok(empty_response(StatusCode::NO_CONTENT, &[]))
    }

    /// Closes a session (waking a request that writes to it) and forgets it: in the metadata first, so
    /// that a request looking it up meanwhile finds it closed or not at all, never a fresh copy.
    async fn forget_session(&self, id: &str, s: &Session) -> Result<()> {
        s.close();
        self.meta.remove_upload(id).await?;
        self.sessions.remove(id);
        if let Some(l) = s.take_lease() {
            l.release().await?;
        }
        Ok(())
    }

    /// Forgets a session and drops its ingest; its writer must be gone.
    async fn end_session(&self, id: &str, s: &Session) -> Result<()> {
        self.forget_session(id, s).await?;
        if let Ok(r) = IngestRef::new(id) {
            self.store.abort(&r).await?;
        }
        Ok(())
    }

    /// Drops sessions past `upload_ttl_secs` or idle for `upload_idle_secs`, and partial writes that
    /// nothing owns (left by a crash or a failed transfer), saying what it removed. A transfer in
    /// progress (a request writing to a session, a monolithic upload, a mirror fill) is never removed,
    /// whatever its age. Also loads the sessions this process has not seen (after a restart), so that
    /// `max_upload_sessions` counts them.
    pub(super) async fn purge(&self) -> Result<Purged> {
        let now = unix_now();
        let records = self.meta.uploads().await?;
        let ingests: HashMap<String, wharf_storage::store::IngestInfo> = self
            .store
            .ingests()
            .await?
            .into_iter()
            .map(|i| (i.ingest.as_str().to_owned(), i))
            .collect();
        let mut out = Purged::default();
        let owned: HashSet<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
        for (id, rec) in &records {
            if self.owned_elsewhere(rec).is_some() {
                // Another replica's: its bytes, its idle time, its purge.
                continue;
            }
            let held = ingests.get(id);
            let s = self
                .sessions
                .entry(id.clone())
                .or_insert_with(|| {
                    // After a restart: idle since its last write, as far as anyone can tell.
                    let touched = held.map_or(rec.started, |i| i.modified.max(rec.started));
                    Session::new(
                        &rec.repo,
                        rec.client.clone(),
                        touched,
                        held.map_or(0, |i| i.size),
                    )
                })
                .clone();
            let age = now.saturating_sub(rec.started);
            let idle = now.saturating_sub(s.touched.load(Ordering::Relaxed));
            let reason = if age >= self.cfg.upload_ttl_secs {
                "older than registry.upload_ttl_secs"
            } else if idle >= self.cfg.upload_idle_secs {
                "idle for registry.upload_idle_secs"
            } else {
                continue;
            };
            let Ok(mut slot) = s.writer.try_lock() else {
                tracing::info!(upload = %id, repo = %rec.repo, age_secs = age, "upload session is past its expiry but a request is writing to it; kept");
                out.in_progress += 1;
                continue;
            };
            let bytes = slot
                .as_ref()
                .map_or(held.map_or(0, |i| i.size), |w| w.offset());
            slot.take();
            drop(slot);
            self.end_session(id, &s).await?;
            tracing::info!(upload = %id, repo = %rec.repo, age_secs = age, idle_secs = idle, bytes, reason, "removed upload session");
            out.sessions += 1;
            out.bytes += bytes;
        }
        for (name, info) in &ingests {
            if owned.contains(name.as_str())
                || self.sessions.contains_key(name)
                || self.leases.protects_ingest(name)
            {
                continue;
            }
            // Checked again where it is removed: a writer may have opened it since the listing.
            if info.held || !self.store.abort_unheld(&info.ingest).await? {
                tracing::debug!(ingest = %name, bytes = info.size, "partial write in progress; kept");
                out.in_progress += 1;
                continue;
            }
            tracing::info!(ingest = %name, bytes = info.size, idle_secs = now.saturating_sub(info.modified), "removed a partial write no transfer owns");
            out.ingests += 1;
            out.bytes += info.size;
        }
        Ok(out)
    }
}
