//! An upload session as the registry keeps it between its requests: its writer, what it has
//! received, whose it is, its lease, and the signal that ends a request still writing to it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use wharf_model::clock::unix_now;
use wharf_storage::lease::Lease;
use wharf_storage::store::BlobWriter;

/// One upload session, kept between its requests.
pub(super) struct Session {
    pub(super) repo: String,
    /// Whose session it is, for `max_upload_sessions_per_client` (see [`client_of`]); `None` for
    /// the operator's, and for sessions recorded before wharf kept it.
    ///
    /// [`client_of`]: super::uploads::client_of
    pub(super) client: Option<String>,
    /// The writer, released between requests; `None` until a request of this process opens it. Held
    /// (locked) by the request that writes: the purge never expires a session it cannot lock.
    pub(super) writer: tokio::sync::Mutex<Option<Box<dyn BlobWriter>>>,
    /// Bytes surely in the ingest: what the last request acknowledged, or what the request writing
    /// now has written. A status request answers with it instead of waiting for a stalled PATCH.
    pub(super) received: AtomicU64,
    /// Unix seconds when a request last began or ended on this session.
    pub(super) touched: AtomicU64,
    /// Set once the session was committed, cancelled or expired; wakes a request still writing to it.
    pub(super) closed: AtomicBool,
    closing: Notify,
    /// Keeps what this session commits from the collector until the session ends (a session loaded
    /// after a restart has none: its earlier lease stays recorded until it expires).
    pub(super) lease: std::sync::Mutex<Option<Lease>>,
}

impl Session {
    pub(super) fn new(
        repo: &str,
        client: Option<String>,
        touched: u64,
        received: u64,
    ) -> Arc<Session> {
        Arc::new(Session {
            repo: repo.to_owned(),
            client,
            writer: tokio::sync::Mutex::new(None),
            received: AtomicU64::new(received),
            touched: AtomicU64::new(touched),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            lease: std::sync::Mutex::new(None),
        })
    }

    pub(super) fn take_lease(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) fn touch(&self) {
        self.touched.store(unix_now(), Ordering::Relaxed);
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Resolves once the session is closed.
    pub(super) async fn closed(&self) {
        loop {
            let woken = self.closing.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_closed() {
                return;
            }
            woken.await;
        }
    }
}
