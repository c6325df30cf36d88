//! Hashing beside the writes: a writer queues each batch it writes, and one job on the blocking pool
//! at a time drains the queue into the running digest. The hash never waits for a write and a write
//! never waits for the hash of the batch before it; on a machine with few cores this keeps the hashing
//! core busy instead of idling at every hand-over (measured: a cold pull had the CPUs 15-20% idle when
//! each flush waited for both its write and its hash).
//!
//! No thread is held while the queue is empty, so an upload session idle between two PATCHes costs
//! nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use wharf_model::digest::Hasher;

pub struct HashQueue {
    state: Mutex<State>,
    /// Signalled each time a batch has been hashed.
    drained: Notify,
}

struct State {
    /// The running digest; `None` while a drain job holds it.
    hasher: Option<Hasher>,
    queue: VecDeque<Arc<Vec<Bytes>>>,
    /// Bytes queued and not yet hashed.
    queued: usize,
    running: bool,
}

impl HashQueue {
    pub fn new(hasher: Hasher) -> Arc<HashQueue> {
        Arc::new(HashQueue {
            state: Mutex::new(State {
                hasher: Some(hasher),
                queue: VecDeque::new(),
                queued: 0,
                running: false,
            }),
            drained: Notify::new(),
        })
    }

    /// Queues `batch` for hashing, after everything queued before it.
    pub fn push(self: &Arc<Self>, batch: Arc<Vec<Bytes>>) {
        let len: usize = batch.iter().map(Bytes::len).sum();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.queued += len;
        s.queue.push_back(batch);
        if !s.running {
            s.running = true;
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.drain());
        }
    }

    fn drain(&self) {
        loop {
            let (mut hasher, batch) = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let Some(batch) = s.queue.pop_front() else {
                    s.running = false;
                    drop(s);
                    self.drained.notify_waiters();
                    return;
                };
                (s.hasher.take().expect("one drain job at a time"), batch)
            };
            let mut len = 0;
            for c in batch.iter() {
                hasher.update(c);
                len += c.len();
            }
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                s.hasher = Some(hasher);
                s.queued -= len;
            }
            self.drained.notify_waiters();
        }
    }

    /// Waits until at most `limit` bytes are waiting to be hashed: a writer's bound on how far the
    /// hash may fall behind (and on the memory the queued batches hold).
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let hashed = self.drained.notified();
            {
                let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.queued <= limit && (limit > 0 || !s.running) {
                    return;
                }
            }
            hashed.await;
        }
    }

    /// The digest state over everything queued so far, once it is all hashed.
    pub async fn current(&self) -> Hasher {
        self.wait_below(0).await;
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.hasher.clone().expect("no drain job is running")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_model::digest::Algorithm;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_batches_in_order_whatever_the_timing() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut want = Algorithm::Sha256.hasher();
        want.update(&data);
        let q = HashQueue::new(Algorithm::Sha256.hasher());
        for (i, piece) in data.chunks(100_003).enumerate() {
            let b = Bytes::copy_from_slice(piece);
            q.push(Arc::new(vec![
                b.slice(..b.len() / 2),
                b.slice(b.len() / 2..),
            ]));
            if i % 7 == 0 {
                q.wait_below(200_000).await;
            }
        }
        assert_eq!(q.current().await.finish(), want.clone().finish());
        // Idle, then more: a new drain job picks up where the last one stopped.
        q.push(Arc::new(vec![Bytes::from_static(b"tail")]));
        want.update(b"tail");
        assert_eq!(q.current().await.finish(), want.finish());
    }
}
