//! What the status page remembers between requests: samples of the cache counters and the recent
//! plugin denials, each in a ring that keeps the newest `cap` entries, so memory stays bounded
//! however long wharf runs and however many requests a plugin denies.

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

    /// Oldest first.
    pub fn to_vec(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }
}

/// The cache counters at one moment: cumulative since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheTotals {
    /// Mirror requests answered from what wharf holds.
    pub hits: u64,
    /// Mirror requests that went to an upstream.
    pub misses: u64,
    /// Bytes served from the cache: what the upstreams did not have to send again.
    pub bytes_from_cache: u64,
    /// Bytes fetched from upstreams.
    pub bytes_from_upstream: u64,
}

/// One point of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    pub totals: CacheTotals,
}

/// A request a plugin's access check refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Unix seconds.
    pub at: u64,
    pub plugin: String,
    /// `pull of ghcr.io/team/app`, as the log line says it.
    pub request: String,
    pub reason: String,
}
