//! The scrub (`wharf fsck`, and `[scrub] interval_secs`): finds content that rotted at rest and
//! records that name content which is not there.
//!
//! A pass re-hashes every stored blob and manifest in digest order, no faster than
//! `max_bytes_per_sec`, recording after each stretch the last digest verified (so a pass that is
//! stopped goes on from there next time). Content whose bytes no longer hash to its name is
//! *quarantined*: its records go first (one durable transaction: nothing names it any more, so a
//! `HEAD` says it is not here, a push uploads it again, the mirror fetches it again), then its file
//! moves to `quarantine/` (a rename: a download already reading it keeps its open file, and no
//! cache keeps its bytes). Then the records are checked against what is stored: blob links and
//! manifest records without content, tags naming a manifest their repository does not record, and
//! manifests pushed here whose children (an index's manifests, a manifest's config and layers) are
//! not stored. (A mirror's cache fetches children as clients ask for them, and a platform policy
//! leaves some out: there, missing children are normal.)
//!
//! Against the collector: damaged content is doomed before anything of it is removed, as the
//! sweeper dooms what it removes (`lease.rs`), so the two never remove the same content twice and a
//! use of it in between waits and then finds it gone; the copy quarantined is the copy that was
//! read (a copy removed and published again meanwhile is left alone). The check of records against
//! content reads the store's listing before and after the records, and reports only what both
//! readings show missing: content published or removed while it looked is not mistaken for missing.
//!
//! What is wrong, given the listings, is a pure function ([`problems`]), tested apart from the part
//! that reads files.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::lease::Leases;
use crate::meta::{Inventory, Meta, MetaError};
use crate::store::{ContentStore, Pace, StoreError};
use wharf_model::digest::Digest;

/// How often a running pass records how far it got (and logs it).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// A pass logs at most this many records without content (`wharf fsck` prints them all).
const LOGGED_PROBLEMS: usize = 100;
/// Manifests larger than this are not read for their children (the registry refuses larger ones).
const MAX_MANIFEST: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("content store: {0}")]
    Store(#[from] StoreError),
}

/// Settings a scrub runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes read per second at most (0: as fast as the disk goes).
    pub max_bytes_per_sec: u64,
    /// Upstream hosts: a repository `<host>/…` is a mirror cache.
    pub mirror_hosts: Vec<String>,
}

/// Content whose bytes no longer hash to its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damaged {
    pub digest: Digest,
    pub size: u64,
    /// What its bytes hash to now.
    pub actual: Digest,
    /// Repositories that linked or recorded it, or whose manifests refer to it.
    pub repositories: Vec<String>,
    /// Where its file was moved; `None` if it was gone before it could be (the collector removed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
}

/// A record that names content which is not stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A repository links a blob whose content is not stored.
    BlobMissing { repository: String, digest: Digest },
    /// A repository records a manifest whose bytes are not stored.
    ManifestMissing { repository: String, digest: Digest },
    /// A tag names a manifest its repository does not record.
    TagDangling {
        repository: String,
        tag: String,
        digest: Digest,
    },
    /// A manifest pushed here (an index, an image manifest) refers to content that is not stored.
    ChildMissing {
        repository: String,
        manifest: Digest,
        child: Digest,
    },
}

impl Problem {
    /// The metrics' and the status line's name for its kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::BlobMissing { .. } | Problem::ManifestMissing { .. } => "missing_content",
            Problem::TagDangling { .. } => "dangling_tag",
            Problem::ChildMissing { .. } => "missing_child",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BlobMissing { repository, digest } => write!(
                f,
                "{repository} links blob {digest}, which is not stored (a pull of it fails; push it \
                 again, or a mirror fetches it again)"
            ),
            Problem::ManifestMissing { repository, digest } => write!(
                f,
                "{repository} records manifest {digest}, which is not stored"
            ),
            Problem::TagDangling {
                repository,
                tag,
                digest,
            } => write!(
                f,
                "tag {repository}:{tag} names manifest {digest}, which {repository} does not \
                 record (push the image again)"
            ),
            Problem::ChildMissing {
                repository,
                manifest,
                child,
            } => write!(
                f,
                "manifest {manifest} in {repository} refers to {child}, which is not stored (push \
                 the image again)"
            ),
        }
    }
}

/// What a pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Unix seconds the pass started (an interrupted pass's start, when this one went on from it).
    pub started: u64,
    pub millis: u64,
    /// Set when this pass went on from one that stopped: the last digest that one verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<Digest>,
    /// Content stored when the pass (or its last part) started.
    pub contents: usize,
    /// Content re-hashed by the pass, its interrupted parts included.
    pub verified: usize,
    pub verified_bytes: u64,
    pub max_bytes_per_sec: u64,
    pub damaged: Vec<Damaged>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Nothing damaged, nothing missing.
    pub fn clean(&self) -> bool {
        self.damaged.is_empty() && self.problems.is_empty()
    }

    fn count(&self, kind: &str) -> usize {
        self.problems.iter().filter(|p| p.kind() == kind).count()
    }
}

/// Where a stopped pass got to (recorded while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub started: u64,
    /// The last digest verified: the next pass goes on after it.
    pub after: Digest,
    pub verified: usize,
    pub verified_bytes: u64,
    pub damaged: Vec<Damaged>,
    /// Unix seconds of this record.
    pub at: u64,
}

/// The last finished pass, as `wharf status` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastScrub {
    pub started: u64,
    pub millis: u64,
    pub verified: usize,
    pub verified_bytes: u64,
    pub damaged: usize,
    pub missing_content: usize,
    pub missing_children: usize,
    pub dangling_tags: usize,
}

impl LastScrub {
    pub fn problems(&self) -> usize {
        self.missing_content + self.missing_children + self.dangling_tags
    }
}

impl From<&Report> for LastScrub {
    fn from(r: &Report) -> LastScrub {
        LastScrub {
            started: r.started,
            millis: r.millis,
            verified: r.verified,
            verified_bytes: r.verified_bytes,
            damaged: r.damaged.len(),
            missing_content: r.count("missing_content"),
            missing_children: r.count("missing_child"),
            dangling_tags: r.count("dangling_tag"),
        }
    }
}

/// What a manifest refers to that must be stored with it: an index's manifests, a manifest's config
/// and layers (not its `subject`: a referrer may be pushed before its subject).
pub type Children = HashMap<Digest, Vec<Digest>>;

/// The records of `inv` that name content `stored` does not hold; the children (`children`) of
/// manifests recorded in repositories `local` says are wharf's own must be stored too. Sorted.
pub fn problems(
    inv: &Inventory,
    stored: &HashSet<Digest>,
    children: &Children,
    local: impl Fn(&str) -> bool,
) -> Vec<Problem> {
    let mut out = BTreeSet::new();
    for (repo, d) in &inv.blob_links {
        if !stored.contains(d) {
            out.insert(Problem::BlobMissing {
                repository: repo.clone(),
                digest: d.clone(),
            });
        }
    }
    let mut recorded: HashSet<(&str, &Digest)> = HashSet::new();
    for (repo, d, _) in &inv.manifests {
        recorded.insert((repo.as_str(), d));
        if !stored.contains(d) {
            out.insert(Problem::ManifestMissing {
                repository: repo.clone(),
                digest: d.clone(),
            });
            continue;
        }
        if !local(repo) {
            continue;
        }
        for c in children.get(d).into_iter().flatten() {
            if !stored.contains(c) {
                out.insert(Problem::ChildMissing {
                    repository: repo.clone(),
                    manifest: d.clone(),
                    child: c.clone(),
                });
            }
        }
    }
    for (repo, tag, d) in &inv.tags {
        if !recorded.contains(&(repo.as_str(), d)) {
            out.insert(Problem::TagDangling {
                repository: repo.clone(),
                tag: tag.clone(),
                digest: d.clone(),
            });
        }
    }
    out.into_iter().collect()
}

/// The repositories whose recorded manifests refer to `d` directly.
pub fn referring(inv: &Inventory, children: &Children, d: &Digest) -> BTreeSet<String> {
    inv.manifests
        .iter()
        .filter(|(_, m, _)| children.get(m).is_some_and(|c| c.contains(d)))
        .map(|(r, _, _)| r.clone())
        .collect()
}

/// Runs scrub passes, one at a time.
pub struct Scrubber {
    meta: Meta,
    store: Arc<dyn ContentStore>,
    leases: Leases,
    settings: Settings,
    running: tokio::sync::Mutex<()>,
}

impl Scrubber {
    pub fn new(
        meta: Meta,
        store: Arc<dyn ContentStore>,
        leases: Leases,
        settings: Settings,
    ) -> Scrubber {
        Scrubber {
            meta,
            store,
            leases,
            settings,
            running: tokio::sync::Mutex::new(()),
        }
    }

    fn is_local(&self, repo: &str) -> bool {
        !crate::gc::mirrored(&self.settings.mirror_hosts, repo)
    }

    /// One pass (or the rest of a stopped one), reading at most `max_bytes_per_sec` (the
    /// configured bound when `None`; 0: no bound). Waits for a pass already running.
    pub async fn run(&self, max_bytes_per_sec: Option<u64>) -> Result<Report, ScrubError> {
        let _one = self.running.lock().await;
        let clock = Instant::now();
        let rate = max_bytes_per_sec.unwrap_or(self.settings.max_bytes_per_sec);
        let pace = Pace::new(rate);
        let now = wharf_model::clock::unix_now();
        let resumed: Option<Progress> = self.meta.scrub_progress().await?;
        let mut report = Report {
            started: now,
            max_bytes_per_sec: rate,
            ..Report::default()
        };
        if let Some(p) = resumed {
            tracing::info!(after = %p.after, verified = p.verified, "scrub: going on from where the last pass stopped");
            report.started = p.started;
            report.resumed_after = Some(p.after);
            report.verified = p.verified;
            report.verified_bytes = p.verified_bytes;
            report.damaged = p.damaged;
        }
        let mut todo = self.store.contents().await?;
        report.contents = todo.len();
        todo.sort();
        if let Some(after) = &report.resumed_after {
            todo.retain(|(d, _)| d > after);
        }
        let total = todo.len();
        let mut saved = Instant::now();
        for (i, (d, _)) in todo.iter().enumerate() {
            if let Some(found) = self.verify(d, &pace).await? {
                report.verified += 1;
                report.verified_bytes += found.0;
                if let Some(damaged) = found.1 {
                    report.damaged.push(damaged);
                }
            }
            if saved.elapsed() >= PROGRESS_EVERY && i + 1 < total {
                self.save_progress(&report, d).await?;
                tracing::info!(
                    verified = report.verified,
                    left = total - i - 1,
                    bytes = report.verified_bytes,
                    after = %d,
                    "scrub progress (saved: a stopped pass goes on from here)"
                );
                saved = Instant::now();
            }
        }
        self.check_records(&mut report).await?;
        report.millis = clock.elapsed().as_millis() as u64;
        self.meta.scrub_finished(&LastScrub::from(&report)).await?;
        wharf_metrics::scrub_done(report.verified_bytes);
        if report.clean() {
            tracing::info!(
                verified = report.verified,
                bytes = report.verified_bytes,
                millis = report.millis,
                "scrub done: every stored digest verified, every record has its content"
            );
        } else {
            for p in report.problems.iter().take(LOGGED_PROBLEMS) {
                tracing::warn!("scrub: {p}");
            }
            tracing::warn!(
                verified = report.verified,
                damaged = report.damaged.len(),
                problems = report.problems.len(),
                millis = report.millis,
                "scrub done: damaged content was quarantined, or records lack their content (named above; `wharf fsck` checks again)"
            );
        }
        Ok(report)
    }

    async fn save_progress(&self, r: &Report, after: &Digest) -> Result<(), ScrubError> {
        let p = Progress {
            started: r.started,
            after: after.clone(),
            verified: r.verified,
            verified_bytes: r.verified_bytes,
            damaged: r.damaged.clone(),
            at: wharf_model::clock::unix_now(),
        };
        Ok(self.meta.save_scrub_progress(&p).await?)
    }

    /// Re-hashes `d`: `None` if it is gone since the listing; else its size, and what was done if
    /// it is damaged.
    async fn verify(
        &self,
        d: &Digest,
        pace: &Pace,
    ) -> Result<Option<(u64, Option<Damaged>)>, ScrubError> {
        let Some(found) = self.store.rehash(d, pace).await? else {
            return Ok(None);
        };
        if &found.actual == d {
            return Ok(Some((found.size, None)));
        }
        tracing::error!(digest = %d, actual = %found.actual, size = found.size, "scrub: stored content is damaged: its bytes no longer hash to its digest; quarantining it");
        wharf_metrics::scrub_damaged();
        let mut damaged = Damaged {
            digest: d.clone(),
            size: found.size,
            actual: found.actual.clone(),
            repositories: self.meta.holders(d).await?.into_iter().collect(),
            quarantined: None,
        };
        // Removed as the sweeper removes: a use of it waits, then finds it gone.
        if !self.leases.doom_damaged(d) {
            tracing::info!(digest = %d, "scrub: the collector is removing this damaged content already");
            return Ok(Some((found.size, Some(damaged))));
        }
        let moved = self.quarantine(d, found.copy).await;
        self.leases.buried(std::slice::from_ref(d));
        match moved? {
            Some((repos, to)) => {
                damaged.repositories.extend(repos);
                damaged.repositories.sort();
                damaged.repositories.dedup();
                tracing::warn!(digest = %d, to = %to, repositories = ?damaged.repositories, "scrub: damaged content quarantined; pulls fetch it again from an upstream, or answer BLOB_UNKNOWN until it is pushed again");
                damaged.quarantined = Some(to);
            }
            None => {
                tracing::info!(digest = %d, "scrub: damaged content was removed before it could be quarantined")
            }
        }
        Ok(Some((found.size, Some(damaged))))
    }

    /// Under the doom: if the copy read is still the stored one, forgets its records, then moves
    /// it away. Returns the repositories that held it and where it went.
    async fn quarantine(
        &self,
        d: &Digest,
        copy: crate::store::StoredCopy,
    ) -> Result<Option<(BTreeSet<String>, String)>, ScrubError> {
        // Nothing publishes or removes `d` while it is doomed: if this copy is there now, it is
        // still there after its records are gone.
        if self.store.stored_copy(d).await? != Some(copy) {
            return Ok(None);
        }
        let repos = self.meta.forget_damaged(d).await?;
        let to = self.store.quarantine(d, copy).await?;
        Ok(to.map(|p| (repos, p.display().to_string())))
    }

    /// Records against content: what both listings (before and after the records are read) miss.
    async fn check_records(&self, report: &mut Report) -> Result<(), ScrubError> {
        let before = self.store.contents().await?;
        let inv = self.meta.inventory().await?;
        let after = self.store.contents().await?;
        let stored: HashSet<Digest> = before.into_iter().chain(after).map(|(d, _)| d).collect();
        let mut children = Children::new();
        let mut seen = HashSet::new();
        for (_, d, rec) in &inv.manifests {
            if !seen.insert(d.clone()) || !stored.contains(d) {
                continue;
            }
            let bytes = match self.store.read_all(d, MAX_MANIFEST).await {
                Ok(b) => b,
                Err(StoreError::NotFound(_)) | Err(StoreError::TooLarge { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match wharf_model::manifest::parse(Some(&rec.media_type), &bytes) {
                Ok(m) => {
                    let c = m.manifests.iter().chain(&m.blobs).map(|(c, _)| c.clone());
                    children.insert(d.clone(), c.collect());
                }
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "scrub: a stored manifest does not parse; its children are not checked")
                }
            }
        }
        report.problems = problems(&inv, &stored, &children, |r| self.is_local(r));
        for damaged in &mut report.damaged {
            damaged
                .repositories
                .extend(referring(&inv, &children, &damaged.digest));
            damaged.repositories.sort();
            damaged.repositories.dedup();
        }
        Ok(())
    }

    /// A pass every `every`, until dropped.
    pub async fn run_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        // A pass longer than the interval is followed by the next one an interval later, not at once.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.run(None).await {
                tracing::error!(error = %e, "scrub failed; it runs again next interval (and goes on from where it stopped)");
            }
        }
    }
}

#[cfg(test)]
mod tests;
