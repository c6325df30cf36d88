//! Single-flight fills of blobs from an upstream: however many clients miss the same digest of the
//! same upstream at once, one upstream GET runs, written to an ingest as it arrives, and every client
//! streams from that growing ingest (late arrivals start from its beginning). The fill runs as its
//! own task, so clients that disconnect do not stop it, and the cache gets the blob anyway.
//!
//! The digest is verified at the end. On a mismatch or a truncated upstream body nothing is committed,
//! and every client's response is cut short with an error, so no client can accept bad bytes.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use http::header::{ACCEPT, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use wharf_model::digest::Digest;
use wharf_protocol::body::{map_chunk, map_if_resident, Body, Sending, MAP_CHUNK};
use wharf_storage::lease::{Lease, Leases, Touching};
use wharf_storage::meta::Meta;

/// A fill's lease lasts this long unless released (a fill that hangs that long has failed anyway).
const FILL_LEASE: std::time::Duration = std::time::Duration::from_secs(3600);
use wharf_protocol::upstream::{Upstream, UpstreamError};
use wharf_storage::store::{BlobSource, ContentStore, IngestRef};

/// How long an upstream may pause before what it has sent so far is written out for readers.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the upstream's response headers.
    Connecting,
    Streaming,
    /// All bytes are in and hash to the digest; being made durable. Readers may finish now.
    Verified,
    /// Verified and committed: `size` bytes under the digest.
    Done,
    /// The upstream answered something other than the blob.
    Refused {
        status: StatusCode,
        message: Arc<str>,
        /// The upstream's `Retry-After` (with a 429 or 503), passed on to clients.
        retry_after: Option<http::HeaderValue>,
    },
    /// Started but failed: nothing was committed.
    Failed(Arc<str>),
}

#[derive(Debug, Clone)]
pub struct Progress {
    pub phase: Phase,
    /// The blob's size, once the upstream said (Content-Length) or the bytes verified.
    pub size: Option<u64>,
    /// Bytes in the ingest file, which readers may send.
    pub written: u64,
}

/// Where to fetch a blob from and under which cached repository to record it.
pub struct Source {
    pub upstream: Arc<Upstream>,
    /// The repository name on the upstream.
    pub remote: String,
    /// The repository name the mirror caches it under (`<host>/<remote>`).
    pub cache_repo: String,
    /// The blob's size as a manifest's descriptor gives it, when the fill's starter knows it (a
    /// config the platform policy reads): an upstream that announces or sends more fails at once, so
    /// such a fill is bounded by what the manifest said, not by what the upstream chooses to send.
    pub size: Option<u64>,
}

pub struct Fill {
    pub digest: Digest,
    /// The cache repository the fill was started for: a request for another repository that joins
    /// it must first have the upstream confirm that repository has the blob (no cross-repo leaks).
    pub cache_repo: String,
    ingest: IngestRef,
    progress: watch::Receiver<Progress>,
}

/// Fills are single-flight per digest *and upstream*: bytes on their way from one upstream say
/// nothing about what another has, so a request naming another upstream never joins them (it would
/// serve them under that upstream's name on its `HEAD`'s word alone); it fetches from its own.
type FillKey = (Digest, String);

#[derive(Clone)]
pub struct Fills {
    running: Arc<DashMap<FillKey, Arc<Fill>>>,
    store: Arc<dyn ContentStore>,
    meta: Meta,
    /// Each fill holds a lease on its blob from before its first byte until it is linked to its cache
    /// repository (`wharf leases` lists fills in progress).
    leases: Leases,
}

impl Fills {
    /// Fills into `store`, each under a lease from its leases.
    pub fn new(store: Arc<Touching>, meta: Meta) -> Self {
        Fills {
            running: Arc::new(DashMap::new()),
            leases: store.leases().clone(),
            store,
            meta,
        }
    }

    /// A lease on `digest` for one fill; a fill goes on without one if the metadata store refuses
    /// (the grace window after its commit still protects the blob).
    async fn lease(&self, digest: &Digest, ingest: &IngestRef, src: &Source) -> Option<Lease> {
        let leases = &self.leases;
        let purpose = format!("fill {} {digest}", src.cache_repo);
        let taken = async {
            let d = digest.to_string();
            let labels = [
                ("repository", src.cache_repo.as_str()),
                ("upstream", src.upstream.host.as_str()),
                ("digest", d.as_str()),
            ];
            let l = leases
                .acquire_labelled(&purpose, &labels, FILL_LEASE)
                .await?;
            l.protect(std::slice::from_ref(digest)).await?;
            l.protect_ingest(ingest).await?;
            Ok::<_, wharf_storage::lease::LeaseError>(l)
        };
        match taken.await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "fill goes on without a lease");
                None
            }
        }
    }

    /// The running fill of `digest` from `source`'s upstream, or a new one fetching it from `source`.
    pub fn get(&self, digest: &Digest, source: Source) -> Arc<Fill> {
        match self
            .running
            .entry((digest.clone(), source.upstream.host.clone()))
        {
            Entry::Occupied(e) => {
                wharf_metrics::joined(wharf_metrics::Flight::Fill);
                e.get().clone()
            }
            Entry::Vacant(e) => {
                let ingest = IngestRef::new(format!("fill-{}", uuid::Uuid::new_v4().simple()))
                    .expect("a valid ref");
                let (tx, rx) = watch::channel(Progress {
                    phase: Phase::Connecting,
                    size: None,
                    written: 0,
                });
                let fill = Arc::new(Fill {
                    digest: digest.clone(),
                    cache_repo: source.cache_repo.clone(),
                    ingest: ingest.clone(),
                    progress: rx,
                });
                e.insert(fill.clone());
                let this = self.clone();
                let d = digest.clone();
                tokio::spawn(async move { this.run(d, ingest, source, tx).await });
                fill
            }
        }
    }

    /// The fill of `digest` from `upstream` in progress now, if any (it stays listed until its blob
    /// is committed and linked to its cache repository).
    pub fn running(&self, digest: &Digest, upstream: &str) -> Option<Arc<Fill>> {
        self.running
            .get(&(digest.clone(), upstream.to_owned()))
            .map(|f| f.clone())
    }

    /// Fills in progress now.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    async fn run(
        self,
        digest: Digest,
        ingest: IngestRef,
        src: Source,
        tx: watch::Sender<Progress>,
    ) {
        let lease = self.lease(&digest, &ingest, &src).await;
        let outcome = self.fetch(&digest, &ingest, &src, &tx).await;
        if let Some(l) = lease {
            // Linked (or failed, leaving nothing to protect): the cache repository's tag, or the
            // grace window after the commit, keeps the blob from here on.
            if let Err(e) = l.release().await {
                tracing::warn!(%digest, error = %e, "could not release a fill's lease; it expires");
            }
        }
        let end = match outcome {
            Ok(size) => {
                tracing::info!(upstream = %src.upstream.host, repo = %src.remote, %digest, size, "blob cached");
                wharf_metrics::fetched(&src.upstream.host, size);
                Progress {
                    phase: Phase::Done,
                    size: Some(size),
                    written: size,
                }
            }
            Err(phase) => {
                if let Err(e) = self.store.abort(&ingest).await {
                    tracing::warn!(error = %e, %digest, "could not drop a failed fill's ingest");
                }
                if let Phase::Failed(why) = &phase {
                    tracing::error!(upstream = %src.upstream.host, repo = %src.remote, %digest, error = %why, "blob fill failed; nothing cached");
                }
                let p = tx.borrow().clone();
                Progress { phase, ..p }
            }
        };
        // Forget the fill before announcing its end: a request that comes after either finds the
        // committed blob in the store or starts a fresh fill (a retry after a failure).
        self.running.remove(&(digest, src.upstream.host.clone()));
        tx.send_replace(end);
    }

    async fn fetch(
        &self,
        digest: &Digest,
        ingest: &IngestRef,
        src: &Source,
        tx: &watch::Sender<Progress>,
    ) -> Result<u64, Phase> {
        let failed = |m: String| Phase::Failed(m.into());
        let mut w = self
            .store
            .writer(ingest)
            .await
            .map_err(|e| failed(format!("cannot write to the cache: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        let path = format!("/v2/{}/blobs/{digest}", src.remote);
        let scope = format!("repository:{}:pull", src.remote);
        let resp = src
            .upstream
            .send(Method::GET, &path, &headers, &scope)
            .await
            .map_err(|e| match e {
                UpstreamError::TokenDenied { status, .. } => Phase::Refused {
                    status,
                    message: e.to_string().into(),
                    retry_after: None,
                },
                e => failed(e.to_string()),
            })?;
        if resp.status() != StatusCode::OK {
            return Err(Phase::Refused {
                status: resp.status(),
                retry_after: resp.headers().get(http::header::RETRY_AFTER).cloned(),
                message: format!(
                    "upstream {} answered {} for blob {digest} of {}",
                    src.upstream.host,
                    resp.status(),
                    src.remote
                )
                .into(),
            });
        }
        let size = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let not_as_described = |what: String, want: u64| {
            failed(format!(
                "upstream {} {what} for {digest}, whose manifest says {want} bytes; nothing cached",
                src.upstream.host
            ))
        };
        if let (Some(want), Some(n)) = (src.size, size) {
            if n != want {
                return Err(not_as_described(format!("announced {n} bytes"), want));
            }
        }
        tx.send_modify(|p| {
            p.phase = Phase::Streaming;
            p.size = size;
        });
        let mut body = resp.into_body();
        let mut published = 0;
        loop {
            let next = match tokio::time::timeout(IDLE_FLUSH, body.frame()).await {
                Ok(next) => Ok(next),
                Err(_) => {
                    // The upstream paused: readers only see written bytes, so write out what has
                    // arrived rather than hold it until a whole write batch has come in.
                    w.flush()
                        .await
                        .map_err(|e| failed(format!("cannot write to the cache: {e}")))?;
                    published = w.written();
                    tx.send_modify(|p| p.written = published);
                    tokio::time::timeout(src.upstream.timeout, body.frame()).await
                }
            };
            let frame = match next {
                Err(_) => {
                    return Err(failed(format!(
                        "upstream {} stalled after {} bytes",
                        src.upstream.host,
                        w.offset()
                    )))
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(failed(format!(
                        "upstream {} broke off after {} of {} bytes: {e}",
                        src.upstream.host,
                        w.offset(),
                        size.map_or("?".into(), |s| s.to_string())
                    )))
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if let Some(want) = src.size {
                if w.offset() + data.len() as u64 > want {
                    return Err(not_as_described("sent more bytes".into(), want));
                }
            }
            w.write(data)
                .await
                .map_err(|e| failed(format!("cannot write to the cache: {e}")))?;
            // Readers wake when a write to the ingest has finished, not per received frame.
            let written = w.written();
            if written != published {
                published = written;
                tx.send_modify(|p| p.written = written);
            }
        }
        let got = w.offset();
        if let Some(s) = size.filter(|s| *s != got) {
            return Err(failed(format!(
                "upstream {} sent {got} bytes for {digest}, not the {s} it announced",
                src.upstream.host
            )));
        }
        if digest.algorithm() == wharf_model::digest::Algorithm::Sha256 {
            // Verify first and let clients finish; fsync and rename need not delay them.
            let actual = w
                .sha256()
                .await
                .map_err(|e| failed(format!("cannot write to the cache: {e}")))?;
            if &actual != digest {
                return Err(failed(format!(
                    "upstream {} sent bytes with digest {actual} for {digest}",
                    src.upstream.host
                )));
            }
            // The length is known now even if the upstream never said it (a chunked response):
            // readers that streamed without one end their bodies here.
            tx.send_modify(|p| {
                p.written = got;
                p.size = Some(got);
                p.phase = Phase::Verified;
            });
        } else {
            w.flush()
                .await
                .map_err(|e| failed(format!("cannot write to the cache: {e}")))?;
            tx.send_modify(|p| {
                p.written = got;
            });
        }
        let size = w.commit(digest, size).await.map_err(|e| match e {
            // The bytes were fine (readers may have them already); keeping them was not.
            e if e.is_unavailable() => failed(format!("cannot cache {digest}: {e}")),
            e => failed(format!(
                "upstream {} sent bad content for {digest}: {e}",
                src.upstream.host
            )),
        })?;
        // The bytes verified (the commit hashed them, for every algorithm): the link, and the proof
        // that this upstream sent them, which lets its other repositories have them on a `HEAD`.
        self.meta
            .link_sent_blob(&src.cache_repo, &src.upstream.host, digest, size)
            .await
            .map_err(|e| failed(format!("cannot record the cached blob: {e}")))?;
        Ok(size)
    }
}

impl Fill {
    /// Waits until the upstream has answered: the fill is streaming, done, or refused/failed.
    pub async fn ready(&self) -> Progress {
        let mut rx = self.progress.clone();
        let waited = rx
            .wait_for(|p| p.phase != Phase::Connecting)
            .await
            .map(|p| p.clone());
        waited.unwrap_or_else(|_| rx.borrow().clone())
    }

    /// Waits until the fill has ended: committed (`Done`), refused or failed.
    pub async fn finished(&self) -> Progress {
        let mut rx = self.progress.clone();
        let waited = rx
            .wait_for(|p| {
                !matches!(
                    p.phase,
                    Phase::Connecting | Phase::Streaming | Phase::Verified
                )
            })
            .await
            .map(|p| p.clone());
        waited.unwrap_or_else(|_| rx.borrow().clone())
    }

    /// A response body with bytes `start..start+len` of the blob (to the end if `len` is None),
    /// following the fill as it grows.
    pub fn body(
        self: &Arc<Self>,
        store: Arc<dyn ContentStore>,
        start: u64,
        len: Option<u64>,
    ) -> Body {
        let (tx, rx) = mpsc::channel(4);
        let fill = self.clone();
        tokio::spawn(async move {
            if let Err(e) = fill.feed(store, start, len.map(|l| start + l), &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Body::channel(rx, len)
    }

    async fn feed(
        &self,
        store: Arc<dyn ContentStore>,
        start: u64,
        end: Option<u64>,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> io::Result<()> {
        let mut rx = self.progress.clone();
        let mut file: Option<Arc<std::fs::File>> = None;
        let mut pos = start;
        loop {
            let p = rx.borrow_and_update().clone();
            match &p.phase {
                Phase::Failed(why) | Phase::Refused { message: why, .. } => {
                    return Err(fail(&format!("blob fill failed: {why}")))
                }
                _ => {}
            }
            let finished = matches!(p.phase, Phase::Done | Phase::Verified);
            // Without a length (the upstream answered chunked) a body runs to what has been
            // written, and ends only when the fill is finished: the end of a chunked body is the
            // "last byte" held back until the digest verifies.
            let end = match end.or(p.size) {
                Some(e) => e,
                None if finished => p.written,
                None => u64::MAX,
            };
            if pos >= end {
                return Ok(());
            }
            // The blob's last byte is held back until it is verified: a client must never receive
            // a whole body that then turns out to have the wrong digest.
            let limit = if finished {
                end
            } else {
                let total = p.size.unwrap_or(u64::MAX);
                p.written.min(total.saturating_sub(1)).min(end)
            };
            if pos < limit {
                // Readers send what is written to the ingest: mapped, it leaves with `sendfile` from
                // the page cache (see `zerocopy`), with no copy through wharf, and trails what has
                // arrived from the upstream by one write.
                let f = match &file {
                    Some(f) => f.clone(),
                    None => match self.open_file(&store, &mut rx, pos, end).await? {
                        Opened::File(f) => file.insert(f).clone(),
                        Opened::Stream(mut rest) => {
                            while let Some(chunk) = rest.recv().await {
                                if tx.send(Ok(chunk?)).await.is_err() {
                                    return Ok(()); // the client went away
                                }
                            }
                            return Ok(());
                        }
                    },
                };
                let n = (limit - pos).min(MAP_CHUNK) as usize;
                // Always zero-copy: a fill keeps the CPUs busy (hashing, writing), so sparing them
                // the copies matters more here than the client's cache.
                let chunk = match map_if_resident(&f, pos, n, Sending::Zerocopy)? {
                    Some(c) => c,
                    None => tokio::task::spawn_blocking(move || {
                        map_chunk(&f, pos, n, Sending::Zerocopy)
                    })
                    .await
                    .map_err(io::Error::other)??,
                };
                if !chunk.is_empty() {
                    pos += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(()); // the client went away
                    }
                    continue;
                }
                if finished {
                    return Err(fail("cached blob is shorter than announced"));
                }
            }
            if rx.changed().await.is_err()
                && !matches!(rx.borrow().phase, Phase::Done | Phase::Verified)
            {
                return Err(fail("fill ended unexpectedly"));
            }
        }
    }

    /// The ingest while the fill runs; once it is committed, the blob (same bytes, same inode), or,
    /// when the store keeps it elsewhere (an object store without room in its local cache), bytes
    /// `pos..end` of it as they come from there.
    async fn open_file(
        &self,
        store: &Arc<dyn ContentStore>,
        rx: &mut watch::Receiver<Progress>,
        pos: u64,
        end: u64,
    ) -> io::Result<Opened> {
        if let Ok(BlobSource::File(f)) = store.open_ingest(&self.ingest).await {
            return Ok(Opened::File(f));
        }
        let p = rx
            .wait_for(|p| {
                !matches!(
                    p.phase,
                    Phase::Connecting | Phase::Streaming | Phase::Verified
                )
            })
            .await
            .map(|p| p.clone())
            .map_err(|_| fail("fill ended unexpectedly"))?;
        if p.phase != Phase::Done {
            return Err(fail("upstream fill failed; see wharf's log"));
        }
        let end = p.size.map_or(end, |size| end.min(size));
        if pos >= end {
            let (_, empty) = mpsc::channel(1);
            return Ok(Opened::Stream(empty));
        }
        let range = wharf_model::range::ByteRange {
            start: pos,
            end: end - 1,
        };
        let blob = store
            .open(&self.digest, Some(range))
            .await
            .map_err(|e| fail(&e.to_string()))?;
        Ok(match blob.source {
            BlobSource::File(f) => Opened::File(f),
            BlobSource::Stream(rest) => Opened::Stream(rest),
        })
    }
}

/// What a reader that came late to a fill reads from.
enum Opened {
    File(Arc<std::fs::File>),
    /// The rest of the requested bytes, from the store.
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

fn fail(m: &str) -> io::Error {
    io::Error::other(m.to_owned())
}

#[cfg(test)]
mod tests;
