//! Single-flight for small results: concurrent callers asking for the same key share one computation.
//!
//! The first caller's future runs as its own task, so a caller that goes away (a client disconnect)
//! does not cancel the work the others are waiting for. The key is forgotten once the result is in:
//! this deduplicates concurrent work, it is not a cache.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

pub struct Flights<K, V> {
    running: Arc<DashMap<K, watch::Receiver<Option<V>>>>,
}

impl<K, V> Default for Flights<K, V>
where
    K: Eq + Hash,
{
    fn default() -> Self {
        Flights {
            running: Arc::new(DashMap::new()),
        }
    }
}

/// Another handle on the same flights.
impl<K, V> Clone for Flights<K, V> {
    fn clone(&self) -> Self {
        Flights {
            running: self.running.clone(),
        }
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key` unless it is already running, and returns its result either way.
    /// `work` must not panic; if it does, the waiters get `None`.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut rx = match self.running.entry(key.clone()) {
            Entry::Occupied(e) => {
                wharf_metrics::joined(wharf_metrics::Flight::Fetch);
                e.get().clone()
            }
            Entry::Vacant(e) => {
                let (tx, rx) = watch::channel(None);
                e.insert(rx.clone());
                let fut = work();
                let running = self.running.clone();
                tokio::spawn(async move {
                    let v = fut.await;
                    // Forget the key before publishing, so a caller arriving after the result starts
                    // afresh instead of reading a value that may already be stale.
                    running.remove(&key);
                    let _ = tx.send(Some(v));
                });
                rx
            }
        };
        let v = rx.wait_for(Option::is_some).await.ok()?.clone();
        v
    }

    /// How many keys are running now.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<Flights<&'static str, u32>> = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (f, runs, mut gate) = (flights.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                f.run("k", move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|g| *g).await;
                    42
                })
                .await
            }));
        }
        // All eight are waiting on one run before it may finish.
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(true).unwrap();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(42));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
        // Afterwards the key runs again: this is not a cache.
        assert_eq!(flights.run("k", || async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_departed_caller_does_not_cancel_the_work() {
        let flights: Arc<Flights<u8, u8>> = Arc::new(Flights::default());
        let (tx, rx) = watch::channel(false);
        let f = flights.clone();
        let first = tokio::spawn(async move {
            f.run(1, move || async move {
                let mut rx = rx;
                let _ = rx.wait_for(|g| *g).await;
                9
            })
            .await
        });
        while flights.is_empty() {
            tokio::task::yield_now().await;
        }
        first.abort();
        let f = flights.clone();
        let second = tokio::spawn(async move { f.run(1, || async { 0 }).await });
        tx.send(true).unwrap();
        assert_eq!(second.await.unwrap(), Some(9));
    }
}
