//! What the status page remembers between requests: the recent plugin denials, in a ring that keeps
//! the newest `cap` entries, so memory stays bounded however long wharf runs and however many
//! requests a plugin denies (the sampler writes it to the metadata when it changed).

use std::collections::VecDeque;

/// The newest `cap` items pushed, oldest first.
#[derive(Debug)]
pub struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T: Clone> Ring<T> {
    /// `const`, so the rings can be statics: the page has one history per process.
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
