//! Uses of tags and digests noted in memory on the request path and not written yet (`usage.rs`
//! writes them in batches and merges them into what it reads).

use std::collections::HashMap;

use dashmap::DashMap;

/// Uses noted since the last flush: repository → reference → unix seconds. Nested so a repeated use
/// (the common case: the same tag pulled again) allocates nothing.
#[derive(Default)]
pub(super) struct Pending(pub(super) DashMap<String, HashMap<String, u64>>);

impl Pending {
    pub(super) fn note(&self, repo: &str, reference: &str, at: u64) {
        let mut refs = match self.0.get_mut(repo) {
            Some(r) => r,
            None => self.0.entry(repo.to_owned()).or_default(),
        };
        match refs.get_mut(reference) {
            Some(t) => *t = (*t).max(at),
            None => {
                refs.insert(reference.to_owned(), at);
            }
        }
    }

    /// Everything noted, removed from here.
    pub(super) fn take(&self) -> Vec<(String, HashMap<String, u64>)> {
        let repos: Vec<String> = self.0.iter().map(|e| e.key().clone()).collect();
        repos
            .into_iter()
            .filter_map(|r| self.0.remove(&r))
            .collect()
    }

    /// Puts back what a failed flush took (keeping any later use noted meanwhile).
    pub(super) fn put_back(&self, taken: Vec<(String, HashMap<String, u64>)>) {
        for (repo, refs) in taken {
            for (reference, at) in refs {
                self.note(&repo, &reference, at);
            }
        }
    }
}
