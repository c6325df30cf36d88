//! Which blobs the local hot cache holds, and which go first: least recently used out, so the cache
//! stays under `cache_max_bytes`. Only the accounting lives here (pure, in memory); the store
//! removes the files it is told to. The files are the truth for reads: an entry whose file is gone
//! (removed by an eviction racing a new copy) only makes a read go to the object store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use wharf_model::digest::Digest;

pub struct HotCache {
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Size and last use (a tick) of each cached blob.
    entries: HashMap<Digest, (u64, u64)>,
    /// The same entries by last use, oldest first.
    by_use: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: u64,
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

impl HotCache {
    pub fn new(max_bytes: u64) -> HotCache {
        HotCache {
            max_bytes,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether content of `size` bytes may be kept at all (0 = no cache: every read from the store).
    pub fn fits(&self, size: u64) -> bool {
        self.max_bytes > 0 && size <= self.max_bytes
    }

    /// `d` was read from the cache: it goes last in line.
    pub fn touch(&self, d: &Digest) {
        let mut s = self.lock();
        let tick = s.next_tick();
        if let Some((_, used)) = s.entries.get_mut(d) {
            let old = std::mem::replace(used, tick);
            s.by_use.remove(&old);
            s.by_use.insert(tick, d.clone());
        }
    }

    /// `d` (`size` bytes) is in the cache now. Returns what must go to make room, oldest first
    /// (the caller removes their files); never `d` itself unless it cannot fit at all.
    #[must_use]
    pub fn admit(&self, d: &Digest, size: u64) -> Vec<Digest> {
        if !self.fits(size) {
            return vec![d.clone()];
        }
        let mut s = self.lock();
        let tick = s.next_tick();
        if let Some((old_size, old_tick)) = s.entries.insert(d.clone(), (size, tick)) {
            s.by_use.remove(&old_tick);
            s.bytes -= old_size;
        }
        s.by_use.insert(tick, d.clone());
        s.bytes += size;
        let mut out = Vec::new();
        while s.bytes > self.max_bytes {
            let Some((_, victim)) = s.by_use.pop_first() else {
                break;
            };
            if let Some((n, _)) = s.entries.remove(&victim) {
                s.bytes -= n;
            }
            out.push(victim);
        }
        out
    }

    /// `d` is no longer cached (removed, quarantined, or its file found missing).
    pub fn forget(&self, d: &Digest) {
        let mut s = self.lock();
        if let Some((n, used)) = s.entries.remove(d) {
            s.by_use.remove(&used);
            s.bytes -= n;
        }
    }

    /// Bytes the cache accounts for now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let c = HotCache::new(10);
        assert!(c.admit(&d(1), 4).is_empty());
        assert!(c.admit(&d(2), 4).is_empty());
        c.touch(&d(1)); // 2 is now the oldest
        assert_eq!(c.admit(&d(3), 4), vec![d(2)]);
        assert_eq!(c.bytes(), 8);
        // Larger than the whole cache: never kept, nothing else evicted for it.
        assert_eq!(c.admit(&d(4), 11), vec![d(4)]);
        assert_eq!(c.bytes(), 8);
        // Admitting what is there already only moves it to the back.
        assert!(c.admit(&d(1), 4).is_empty());
        assert_eq!(c.admit(&d(5), 7), vec![d(3), d(1)]);
        assert_eq!(c.bytes(), 7);
        c.forget(&d(5));
        c.forget(&d(5));
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let c = HotCache::new(0);
        assert!(!c.fits(0));
        assert_eq!(c.admit(&d(1), 1), vec![d(1)]);
        assert_eq!(c.bytes(), 0);
    }
}
