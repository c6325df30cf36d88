//! The requests plugins denied lately, as data: `Policy::allow` records each denial here, and the
//! status page (above this layer) reads them. A ring keeps the newest `DENIALS_KEPT`, so memory stays
//! bounded however long wharf runs and however many requests a plugin denies; the ring is written to
//! the metadata when it changed (by the status page's sampler) and put back after a restart.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use wharf_model::clock::unix_now;
use wharf_storage::meta::Meta;

/// Denials kept.
pub const DENIALS_KEPT: usize = 50;
/// A plugin's reason is kept up to this many characters (a plugin may say a lot).
const REASON_CHARS: usize = 400;
/// The status record the ring is kept under.
const RECORD: &str = "recent_denials";

/// The recent denials of one server, shared by its policy (which records) and its status page.
#[derive(Debug)]
pub struct Denials {
    ring: Mutex<Ring<DeniedRequest>>,
    /// Denials recorded by this process: the ring is written to the metadata when it moved.
    seen: AtomicU64,
}

impl Default for Denials {
    fn default() -> Self {
        Denials {
            ring: Mutex::new(Ring::new(DENIALS_KEPT)),
            seen: AtomicU64::new(0),
        }
    }
}

impl Denials {
    /// Records a plugin's denial of `request` on `repository` (the name the rules judge).
    pub fn record(&self, plugin: &str, repository: &str, request: &str, reason: &str) {
        let clip = |s: &str| match s.char_indices().nth(REASON_CHARS) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s.to_owned(),
        };
        self.lock().push(DeniedRequest {
            at: unix_now(),
            plugin: clip(plugin),
            request: clip(request),
            reason: clip(reason),
            repository: repository.to_owned(),
        });
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<DeniedRequest> {
        self.lock().to_vec()
    }

    /// Puts the denials a previous run recorded before this run's (at start, before serving).
    pub async fn restore(&self, meta: &Meta) {
        match meta.status_record::<Vec<DeniedRequest>>(RECORD).await {
            Ok(Some(older)) => self.lock().restore_older(older),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "status page: cannot read the recent denials"),
        }
    }

    /// Writes the denials when some were added since `*saved` (the count then); one small write per
    /// call at most, none while plugins deny nothing.
    pub async fn save(&self, meta: &Meta, saved: &mut u64) {
        let seen = self.seen.load(Ordering::Relaxed);
        if seen == *saved {
            return;
        }
        let list = self.list();
        match meta.put_status_record(RECORD, &list).await {
            Ok(()) => *saved = seen,
            Err(e) => tracing::warn!(error = %e, "status page: cannot record the recent denials"),
        }
    }

    /// A poisoned lock only means a panic elsewhere mid-push; the ring is still a ring.
    fn lock(&self) -> std::sync::MutexGuard<'_, Ring<DeniedRequest>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The newest `cap` items pushed, oldest first.
#[derive(Debug)]
pub struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T: Clone> Ring<T> {
    pub const fn new(cap: usize) -> Ring<T> {
        Ring {
            cap,
            items: VecDeque::new(),
        }
    }

    pub fn push(&mut self, item: T) {
        if self.cap == 0 {
            return;
        }
        while self.items.len() >= self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Puts `older` (oldest first) before what the ring holds, keeping the newest `cap` of all.
    pub fn restore_older(&mut self, older: Vec<T>) {
        let newer = std::mem::take(&mut self.items);
        for item in older.into_iter().chain(newer) {
            self.push(item);
        }
    }

    /// Oldest first.
    pub fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }
}

/// A request a plugin's access check refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeniedRequest {
    /// Unix seconds.
    pub at: u64,
    pub plugin: String,
    /// `pull of ghcr.io/team/app`, as the log line says it.
    pub request: String,
    pub reason: String,
    /// The name the rules judge (`ghcr.io/team/app`): the page shows the denial to callers who may
    /// pull it. Empty in records from before it was kept: see [`DeniedRequest::repository`].
    #[serde(default)]
    pub repository: String,
}

impl DeniedRequest {
    /// The repository the denied request named. Records written before the name was kept carry it
    /// only in `request` (`<operation> of <name>`).
    pub fn repository(&self) -> &str {
        if !self.repository.is_empty() {
            return &self.repository;
        }
        self.request
            .split_once(" of ")
            .map_or("", |(_, name)| name.trim_end_matches('…'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = Ring::new(3);
        for i in 0..10 {
            r.push(i);
        }
        assert_eq!(r.to_vec(), vec![7, 8, 9]);
        let mut none = Ring::new(0);
        none.push(1);
        assert!(none.to_vec().is_empty());
    }

    #[test]
    fn a_denial_is_recorded_clipped() {
        let long = "x".repeat(REASON_CHARS * 3);
        let denials = Denials::default();
        denials.record("gatekeeper-unit-test", "a/b", "pull of a/b", &long);
        let d = denials
            .list()
            .into_iter()
            .find(|d| d.plugin == "gatekeeper-unit-test")
            .expect("recorded");
        assert_eq!(d.reason.chars().count(), REASON_CHARS + 1);
        assert!(d.reason.ends_with('…'));
    }

    #[test]
    fn restored_denials_go_before_this_runs_and_the_ring_stays_bounded() {
        let mut r = Ring::new(3);
        r.push(10);
        r.push(11);
        r.restore_older(vec![1, 2, 3]);
        assert_eq!(
            r.to_vec(),
            vec![3, 10, 11],
            "the newest three, oldest first"
        );
        let mut empty = Ring::new(3);
        empty.restore_older(vec![1, 2]);
        assert_eq!(empty.to_vec(), vec![1, 2]);
    }
}
