//! What keeps content the collector would otherwise remove: leases, and recent use.
//!
//! A **lease** is a record in the metadata store (id, purpose, expiry, the digests it protects) that a
//! write path takes before its first byte or reference and releases once a root (a tag, or a manifest
//! a tag reaches) holds what it wrote: upload sessions, mirror fills, building a reduced index, and
//! pushes on their way upstream. An expired lease protects nothing and is dropped by the collector.
//!
//! **Recent use** closes the race distribution has: a client `HEAD`s a blob (or mounts it), gets 200,
//! skips the upload, and pushes a manifest that refers to it a minute later. Every `HEAD`, mount,
//! commit and manifest push touches what it names (a manifest with everything it reaches), and the
//! collector spares whatever was touched within its grace window. Touches are kept in memory: after a
//! start, everything counts as touched at the start, so nothing is collected until a grace window has
//! passed, and a touch lost in a crash costs nothing. With metadata several processes share
//! (Postgres), touches are also written there (each digest at most once per quarter grace window), and
//! a collector counts every process's touches and leases; one collector runs at a time.
//!
//! Touching and sweeping are linearised per digest: the sweeper *dooms* a digest only if it is neither
//! leased nor recently touched, and a touch (or a lease) of a doomed digest waits until it is gone.
//! A caller therefore touches first and then checks that the content is there: either the sweeper saw
//! the touch and spared it, or the caller sees it gone (and the client uploads it again). Never a
//! reference to content that is about to disappear. Across processes the same holds through one
//! `touches` row per digest, which a touch and a doom both upsert (`meta/touches.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;

use crate::meta::{LeaseRecord, Meta, MetaError};
use crate::store::{
    Blob, BlobSource, BlobWriter, ContentStore, IngestInfo, IngestRef, Ingester, Pace, Provider,
    Rehashed, StoreError, StoredCopy, Sweeper, Verifier,
};
use wharf_model::digest::Digest;
use wharf_model::range::ByteRange;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Meta(#[from] MetaError),
}

#[derive(Default)]
struct State {
    /// Digest → unix seconds of its last touch.
    touched: HashMap<Digest, u64>,
    /// Live leases by id.
    leases: HashMap<String, LeaseRecord>,
    /// Digest → how many live leases protect it.
    leased: HashMap<Digest, usize>,
    /// Digests the sweeper is removing: touching or leasing one waits until it is gone.
    doomed: HashSet<Digest>,
    /// Unix seconds of the last pruning of `touched`.
    pruned: u64,
    /// Digest → unix seconds of its last touch written to shared metadata (Postgres), so a busy
    /// digest costs one write per `shared_every` seconds, not one per request.
    shared: HashMap<Digest, u64>,
}

struct Inner {
    meta: Meta,
    state: Mutex<State>,
    /// Signalled when doomed digests are gone.
    buried: tokio::sync::Notify,
    /// Unix seconds this process started: every digest counts as touched then.
    started: u64,
    /// Children of each manifest seen (immutable, so never stale): a touch of a manifest reaches
    /// everything it refers to.
    edges: DashMap<Digest, Arc<[Digest]>>,
    /// Touches older than this are forgotten even when no collection runs to forget them (with
    /// `gc.interval_secs = 0` the map would otherwise grow with every digest ever touched).
    grace_secs: std::sync::atomic::AtomicU64,
}

/// Above this many remembered touches, old ones are forgotten (at most every `PRUNE_EVERY` seconds).
const PRUNE_ABOVE: usize = 1 << 16;
const PRUNE_EVERY: u64 = 1;
/// How often a touch waiting for another process's sweep looks again.
const DOOM_POLL: Duration = Duration::from_millis(50);

/// The protection of content against the collector. Cheap to clone.
#[derive(Clone)]
pub struct Leases(Arc<Inner>);

use wharf_model::clock::unix_now as now;

impl Leases {
    /// No leases and no touches (for a store that has none recorded yet).
    pub fn new(meta: Meta) -> Leases {
        Leases::starting_at(meta, now())
    }

    fn starting_at(meta: Meta, started: u64) -> Leases {
        Leases(Arc::new(Inner {
            meta,
            state: Mutex::new(State::default()),
            buried: tokio::sync::Notify::new(),
            started,
            edges: DashMap::new(),
            grace_secs: std::sync::atomic::AtomicU64::new(u64::MAX),
        }))
    }

    /// The collector's grace window: touches older than it protect nothing and are forgotten.
    pub fn set_grace(&self, secs: u64) {
        self.0
            .grace_secs
            .store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// The leases recorded in `meta` (an earlier process's, until they expire) and no touches.
    pub async fn load(meta: Meta) -> Result<Leases, LeaseError> {
        Leases::load_from(meta, now()).await
    }

    /// As `load`, for when no server runs on the data directory (`wharf gc` on the files): nothing is
    /// in flight, so a start protects nothing.
    pub async fn load_offline(meta: Meta) -> Result<Leases, LeaseError> {
        Leases::load_from(meta, 0).await
    }

    async fn load_from(meta: Meta, started: u64) -> Result<Leases, LeaseError> {
        let leases = Leases::starting_at(meta.clone(), started);
        let t = now();
        for (id, rec) in meta.leases().await? {
            if rec.expires <= t {
                meta.delete_lease(&id).await?;
                continue;
            }
            let mut s = leases.lock();
            for d in &rec.digests {
                *s.leased.entry(d.clone()).or_default() += 1;
            }
            s.leases.insert(id, rec);
        }
        Ok(leases)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until none of `digests` is being removed, then runs `f` on the state (under the lock, so
    /// the sweeper cannot doom one of them in between).
    async fn when_not_doomed<R>(&self, digests: &[Digest], f: impl Fn(&mut State) -> R) -> R {
        loop {
            let notified = self.0.buried.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if !digests.iter().any(|d| s.doomed.contains(d)) {
                    return f(&mut s);
                }
            }
            notified.await;
        }
    }

    /// Records that `digests` were just used (a `HEAD`, a mount, a commit, a manifest push): the
    /// collector spares them for its grace window. A manifest's known children are touched with it.
    /// If one is being removed right now this waits until it is gone: check for it after touching.
    pub async fn touch(&self, digests: &[Digest]) {
        let all = self.closure(digests);
        let t = now();
        let grace = self.0.grace_secs.load(std::sync::atomic::Ordering::Relaxed);
        self.when_not_doomed(&all, |s| {
            for d in &all {
                s.touched.insert(d.clone(), t);
            }
            if s.touched.len() > PRUNE_ABOVE && t >= s.pruned + PRUNE_EVERY {
                let since = t.saturating_sub(grace);
                s.touched.retain(|_, at| *at >= since);
                s.shared.retain(|_, at| *at >= since);
                s.pruned = t;
            }
        })
        .await;
        self.touch_across(&all).await;
    }

    /// How often one digest's touch is written to shared metadata: a quarter of the grace window (at
    /// most a minute), so the last write is always well inside the window a collector checks.
    fn shared_every(&self) -> u64 {
        let grace = self.0.grace_secs.load(std::sync::atomic::Ordering::Relaxed);
        (grace / 4).min(60)
    }

    /// With metadata other processes share: writes the touches of `digests` where their collectors
    /// see them, and waits while one of them removes one of `digests` (then touches again: the doom
    /// took the touch's row with it). On one process's redb this does nothing: memory is the truth.
    async fn touch_across(&self, digests: &[Digest]) {
        let meta = &self.0.meta;
        if !meta.shared() {
            return;
        }
        let every = self.shared_every();
        let t = now();
        let due: Vec<Digest> = {
            let s = self.lock();
            digests
                .iter()
                .filter(|d| s.shared.get(*d).is_none_or(|at| at + every <= t))
                .cloned()
                .collect()
        };
        if due.is_empty() {
            return;
        }
        loop {
            let t = now();
            match meta.touch_shared(&due, t).await {
                Ok(doomed) if doomed.is_empty() => {
                    let mut s = self.lock();
                    for d in due {
                        s.shared.insert(d, t);
                    }
                    return;
                }
                Ok(mut doomed) => {
                    // Another process's collector is removing them: as in memory, the caller must
                    // find them gone afterwards, so wait for the sweep to end.
                    while !doomed.is_empty() {
                        tokio::time::sleep(DOOM_POLL).await;
                        match meta.doomed_shared(&doomed, now()).await {
                            Ok(d) => doomed = d,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot see whether a collector still removes content; going on");
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    // The request that touched needs the same database for what it does next, so
                    // it fails there; nothing here to answer for.
                    tracing::warn!(error = %e, "cannot record recent use in the shared metadata");
                    return;
                }
            }
        }
    }

    /// For the collector: dooms those of `candidates` neither leased nor touched at or after `since`,
    /// in this process and in every process sharing the metadata; answers them. `bury` must follow.
    pub async fn doom_all(
        &self,
        candidates: &[Digest],
        since: u64,
    ) -> Result<Vec<Digest>, LeaseError> {
        let here: Vec<Digest> = candidates
            .iter()
            .filter(|d| self.doom(d, since))
            .cloned()
            .collect();
        match self.0.meta.doom_shared(&here, since, now()).await {
            Ok(doomed) => {
                let kept: Vec<Digest> = here
                    .iter()
                    .filter(|d| !doomed.contains(d))
                    .cloned()
                    .collect();
                self.buried(&kept);
                Ok(doomed)
            }
            Err(e) => {
                self.buried(&here);
                Err(e.into())
            }
        }
    }

    /// The sweeper is done with `digests` everywhere: waiters here and in other processes go on.
    pub async fn bury(&self, digests: &[Digest]) {
        self.buried(digests);
        if let Err(e) = self.0.meta.bury_shared(digests).await {
            // Their dooms lapse after `DOOM_MAX_SECS`: waiters elsewhere go on then.
            tracing::warn!(error = %e, "cannot clear the collector's marks in the shared metadata");
        }
    }

    /// `roots`, with what other processes sharing the metadata protect: their live leases and their
    /// touches at or after `since`.
    pub async fn roots_across(&self, since: u64) -> Result<Roots, LeaseError> {
        let mut roots = self.roots(since);
        let meta = &self.0.meta;
        if meta.shared() {
            let t = now();
            for (_, rec) in meta.leases().await? {
                if rec.expires > t {
                    roots.digests.extend(rec.digests);
                }
            }
            roots.digests.extend(meta.touched_since(since).await?);
        }
        Ok(roots)
    }

    /// `digests` and everything the manifests among them reach, as far as known.
    fn closure(&self, digests: &[Digest]) -> Vec<Digest> {
        if self.0.edges.is_empty() {
            return digests.to_vec();
        }
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut todo: Vec<Digest> = digests.to_vec();
        while let Some(d) = todo.pop() {
            if let Some(children) = self.0.edges.get(&d) {
                todo.extend(children.iter().filter(|c| !seen.contains(*c)).cloned());
            }
            seen.insert(d);
        }
        seen.into_iter().collect()
    }

    /// Records what a manifest refers to (children, config, layers, subject), so touching it reaches
    /// them; the collector records every manifest it reads.
    pub fn record_edges(&self, manifest: &Digest, children: Vec<Digest>) {
        if !self.0.edges.contains_key(manifest) {
            self.0.edges.insert(manifest.clone(), children.into());
        }
    }

    pub fn edges(&self, manifest: &Digest) -> Option<Arc<[Digest]>> {
        self.0.edges.get(manifest).map(|e| e.clone())
    }

    /// Takes a lease for `purpose`, protecting nothing yet, valid for `ttl` unless renewed.
    pub async fn acquire(&self, purpose: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        self.acquire_labelled(purpose, &[], ttl).await
    }

    /// As `acquire`, with labels saying what the lease is about.
    pub async fn acquire_labelled(
        &self,
        purpose: &str,
        labels: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let id = format!("{}", uuid::Uuid::new_v4().simple());
        let t = now();
        let rec = LeaseRecord {
            purpose: purpose.to_owned(),
            created: t,
            expires: t + ttl.as_secs().max(1),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            digests: Vec::new(),
            ingests: Vec::new(),
        };
        self.0.meta.put_lease(&id, &rec).await?;
        self.lock().leases.insert(id.clone(), rec);
        Ok(Lease {
            leases: self.clone(),
            id,
            released: false,
        })
    }

    pub async fn protect(&self, id: &str, digests: &[Digest]) -> Result<(), LeaseError> {
        let rec = self
            .when_not_doomed(digests, |s| {
                let rec = s.leases.get_mut(id)?;
                let mut added = Vec::new();
                for d in digests {
                    if !rec.digests.contains(d) {
                        rec.digests.push(d.clone());
                        added.push(d.clone());
                    }
                }
                let rec = rec.clone();
                for d in added {
                    *s.leased.entry(d).or_default() += 1;
                }
                Some(rec)
            })
            .await;
        if let Some(rec) = rec {
            // Touched first: a collector in another process that reads the lease records before
            // this one is written still sees the touch.
            self.touch_across(digests).await;
            self.0.meta.put_lease(id, &rec).await?;
        }
        Ok(())
    }

    async fn protect_ingest(&self, id: &str, ingest: &str) -> Result<(), LeaseError> {
        let rec = {
            let mut s = self.lock();
            s.leases.get_mut(id).map(|r| {
                if !r.ingests.iter().any(|i| i == ingest) {
                    r.ingests.push(ingest.to_owned());
                }
                r.clone()
            })
        };
        if let Some(rec) = rec {
            self.0.meta.put_lease(id, &rec).await?;
        }
        Ok(())
    }

    /// Whether a live lease protects the ingest `name` (the upload purge leaves it alone).
    pub fn protects_ingest(&self, name: &str) -> bool {
        self.lock()
            .leases
            .values()
            .any(|r| r.ingests.iter().any(|i| i == name))
    }

    pub async fn renew(&self, id: &str, ttl: Duration) -> Result<(), LeaseError> {
        let rec = {
            let mut s = self.lock();
            s.leases.get_mut(id).map(|r| {
                r.expires = now() + ttl.as_secs().max(1);
                r.clone()
            })
        };
        if let Some(rec) = rec {
            self.0.meta.put_lease(id, &rec).await?;
        }
        Ok(())
    }

    /// Drops lease `id`; with `touch`, what it protected counts as used now, in the same step.
    fn forget(&self, id: &str, touch: bool) -> Option<Vec<Digest>> {
        let mut s = self.lock();
        let rec = s.leases.remove(id)?;
        let t = now();
        let digests = rec.digests.clone();
        for d in rec.digests {
            if touch {
                s.touched.insert(d.clone(), t);
            }
            if let Some(n) = s.leased.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    s.leased.remove(&d);
                }
            }
        }
        Some(digests)
    }

    /// Ends a lease (by id: `wharf leases`, a finished push delivery). What it protected stays
    /// protected for one grace window, as if touched now: a collection whose snapshot predates the
    /// reference that now holds the content (a tag recorded just before the release) must not find
    /// it unleased and untouched when it sweeps.
    pub async fn release(&self, id: &str) -> Result<bool, LeaseError> {
        self.end(id, true).await
    }

    async fn end(&self, id: &str, touch: bool) -> Result<bool, LeaseError> {
        let had = self.forget(id, touch);
        if let (Some(digests), true) = (&had, touch) {
            // Before the record goes: another process's collector sees the lease or the touch.
            self.touch_across(digests).await;
        }
        self.0.meta.delete_lease(id).await?;
        Ok(had.is_some())
    }

    /// The live leases, by id.
    pub fn list(&self) -> Vec<(String, LeaseRecord)> {
        let mut v: Vec<(String, LeaseRecord)> = self
            .lock()
            .leases
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
        v
    }

    /// Drops the leases that expired; returns their ids.
    pub async fn expire(&self) -> Result<Vec<String>, LeaseError> {
        self.expire_as_of(now()).await
    }

    /// As `expire`, with `t` (unix seconds) as now.
    async fn expire_as_of(&self, t: u64) -> Result<Vec<String>, LeaseError> {
        let gone: Vec<String> = self
            .lock()
            .leases
            .iter()
            .filter(|(_, r)| r.expires <= t)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &gone {
            // Abandoned, not finished: nothing took over its content, so no grace window follows.
            self.end(id, false).await?;
            tracing::info!(lease = %id, "lease expired");
        }
        Ok(gone)
    }

    /// The digests live leases protect and those touched at or after `since` (everything, if this
    /// process started after `since`), as roots for the collector; forgets older touches.
    pub fn roots(&self, since: u64) -> Roots {
        let mut s = self.lock();
        s.touched.retain(|_, t| *t >= since);
        Roots {
            everything: self.0.started >= since,
            digests: s.leased.keys().chain(s.touched.keys()).cloned().collect(),
        }
    }

    /// For the sweeper: marks `d` as being removed unless a lease protects it or it was touched at or
    /// after `since`. Returns whether it may be removed; then `buried` must follow.
    pub fn doom(&self, d: &Digest, since: u64) -> bool {
        if self.0.started >= since {
            return false;
        }
        let mut s = self.lock();
        if s.leased.contains_key(d) || s.touched.get(d).is_some_and(|t| *t >= since) {
            return false;
        }
        s.doomed.insert(d.clone())
    }

    /// For the scrub: marks damaged content `d` as being removed, leased or recently used as it may
    /// be (its bytes are wrong: whoever refers to it next must find it gone and upload or fetch it
    /// again). `false` if the sweeper is removing it already. Then `buried` must follow.
    pub fn doom_damaged(&self, d: &Digest) -> bool {
        self.lock().doomed.insert(d.clone())
    }

    /// Whether `d` is protected (for a dry run, which dooms nothing).
    pub fn protected(&self, d: &Digest, since: u64) -> bool {
        if self.0.started >= since {
            return true;
        }
        let s = self.lock();
        s.leased.contains_key(d) || s.touched.get(d).is_some_and(|t| *t >= since)
    }

    /// The sweeper is done with `digests` (removed, or failed to be): waiters may go on.
    pub fn buried(&self, digests: &[Digest]) {
        {
            let mut s = self.lock();
            for d in digests {
                s.doomed.remove(d);
                self.0.edges.remove(d);
            }
        }
        self.0.buried.notify_waiters();
    }
}

/// What the lease side contributes to the collector's roots.
pub struct Roots {
    /// This process started within the grace window: nothing may be collected yet.
    pub everything: bool,
    pub digests: HashSet<Digest>,
}

/// A held lease. Release it once a root holds its content; dropped without `release`, it stays until
/// it expires (so a crash or a panic never unprotects anything early).
pub struct Lease {
    leases: Leases,
    id: String,
    released: bool,
}

impl Lease {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds `digests` to what the lease protects. If one is being removed right now this waits until
    /// it is gone: check for it after protecting.
    pub async fn protect(&self, digests: &[Digest]) -> Result<(), LeaseError> {
        self.leases.protect(&self.id, digests).await
    }

    /// Adds an ingest (a write in progress) to what the lease protects.
    pub async fn protect_ingest(&self, ingest: &IngestRef) -> Result<(), LeaseError> {
        self.leases.protect_ingest(&self.id, ingest.as_str()).await
    }

    /// Extends the lease to `ttl` from now.
    pub async fn renew(&self, ttl: Duration) -> Result<(), LeaseError> {
        self.leases.renew(&self.id, ttl).await
    }

    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.released = true;
        self.leases.release(&self.id).await.map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            tracing::debug!(lease = %self.id, "lease dropped without release; it stays until it expires");
        }
    }
}

/// The content store as the request path sees it: `stat` (a `HEAD`, a mount), `put` and `commit` touch
/// what they name first, so the collector spares it for its grace window, and never removes it between
/// the answer and the reference the client makes next.
///
/// The parts that hand out references to content (the registry, the mirror with its fills and
/// reduced indexes, pushes) take this type in their constructors, not any `ContentStore`, and take
/// their `Leases` from it: one built over the bare store, or without leases, does not compile.
pub struct Touching {
    inner: Arc<dyn ContentStore>,
    leases: Leases,
}

impl Touching {
    pub fn wrap(inner: Arc<dyn ContentStore>, leases: Leases) -> Arc<Touching> {
        Arc::new(Touching { inner, leases })
    }

    /// The leases this view touches in.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }
}

#[async_trait]
impl Provider for Touching {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.leases.touch(std::slice::from_ref(digest)).await;
        self.inner.stat(digest).await
    }

    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Blob, StoreError> {
        self.inner.open(digest, range).await
    }

    async fn read_all(&self, digest: &Digest, limit: u64) -> Result<Bytes, StoreError> {
        self.inner.read_all(digest, limit).await
    }
}

#[async_trait]
impl Ingester for Touching {
    async fn writer(&self, ingest: &IngestRef) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(TouchingWriter {
            inner: self.inner.writer(ingest).await?,
            leases: self.leases.clone(),
        }))
    }

    async fn abort(&self, ingest: &IngestRef) -> Result<(), StoreError> {
        self.inner.abort(ingest).await
    }

    async fn abort_unheld(&self, ingest: &IngestRef) -> Result<bool, StoreError> {
        self.inner.abort_unheld(ingest).await
    }

    async fn ingests(&self) -> Result<Vec<IngestInfo>, StoreError> {
        self.inner.ingests().await
    }

    async fn open_ingest(&self, ingest: &IngestRef) -> Result<BlobSource, StoreError> {
        self.inner.open_ingest(ingest).await
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError> {
        self.leases.touch(std::slice::from_ref(digest)).await;
        self.inner.put(digest, bytes).await
    }
}

#[async_trait]
impl Sweeper for Touching {
    async fn contents(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        self.inner.contents().await
    }

    async fn remove(&self, digest: &Digest) -> Result<u64, StoreError> {
        self.inner.remove(digest).await
    }

    async fn remove_many(&self, digests: &[Digest]) -> Result<(), StoreError> {
        self.inner.remove_many(digests).await
    }
}

/// The scrub reads and quarantines without touching: re-reading content is not a use of it.
#[async_trait]
impl Verifier for Touching {
    async fn rehash(&self, digest: &Digest, pace: &Pace) -> Result<Option<Rehashed>, StoreError> {
        self.inner.rehash(digest, pace).await
    }

    async fn stored_copy(&self, digest: &Digest) -> Result<Option<StoredCopy>, StoreError> {
        self.inner.stored_copy(digest).await
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        copy: StoredCopy,
    ) -> Result<Option<std::path::PathBuf>, StoreError> {
        self.inner.quarantine(digest, copy).await
    }
}

struct TouchingWriter {
    inner: Box<dyn BlobWriter>,
    leases: Leases,
}

#[async_trait]
impl BlobWriter for TouchingWriter {
    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.inner.write(chunk).await
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        self.inner.release().await
    }

    async fn sha256(&mut self) -> Result<Digest, StoreError> {
        self.inner.sha256().await
    }

    async fn commit(
        self: Box<Self>,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.leases.touch(std::slice::from_ref(expected)).await;
        self.inner.commit(expected, size).await
    }
}

#[cfg(test)]
mod tests;
