//! The HTTP server: accepts connections, hands requests to the registry, logs one line per request,
//! and shuts down gracefully (stop accepting, let in-flight requests finish, up to a grace period).
//!
//! Peers that stall are bounded (`[server]` keys): a request head must arrive within
//! `header_timeout_secs`, a request body may pause at most `body_idle_secs`, and a client that takes
//! none of a response for `write_idle_secs` is dropped, with its connection and descriptors.
//!
//! Plain connections speak HTTP/1.1 on the socket itself, so blob bytes leave with `sendfile`
//! (`zerocopy.rs`). With `[server.tls]`, each connection is a TLS session (`tls.rs`) serving
//! HTTP/1.1 or HTTP/2 as ALPN chose, under the same limits (the handshake counts toward the head
//! timeout); its bytes are encrypted in wharf, so they are copied.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::mirror::Mirror;
use crate::push::Push;
use crate::registry::Registry;
use crate::tls::{HeadTimeout, Tls};
use wharf_model::config::{Config, ServerConfig};
use wharf_policy::plugin::Plugins;
use wharf_policy::policy::Policy;
use wharf_storage::gc::Collector;
use wharf_storage::lease::{Leases, Touching};
use wharf_storage::meta::{Meta, MetaError};
use wharf_storage::store::{FsStore, StoreError};

mod access_log;
mod limits;

use access_log::{handle_logged, InFlight};
pub use access_log::{logged_path, LoggedBody};
pub use limits::{ClientStream, IdleBody, WriteIdle};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot use data directory {dir}: {source} (set storage.data_dir in the config, or WHARF_DATA_DIR)"
    )]
    DataDir { dir: String, source: StoreError },
    #[error("{}", meta_failure(path, source))]
    Meta { path: String, source: MetaError },
    #[error("{0}")]
    Upstream(wharf_protocol::upstream::UpstreamError),
    #[error("{0}")]
    Plugin(wharf_policy::plugin::PluginError),
    #[error("{0}")]
    Push(crate::push::PushError),
    #[error("{0}")]
    Auth(wharf_policy::auth::AuthError),
    #[error(
        "cannot listen on {addr}: {source} (set server.listen in the config, or WHARF_LISTEN, to a free \
         address)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Metrics(String),
}

/// What a metadata store that would not open means, and what to do: another wharf holding it, a
/// permission problem and a damaged file each need something else.
fn meta_failure(path: &str, e: &MetaError) -> String {
    use wharf_storage::meta::OpenFailure;
    match e.open_failure() {
        OpenFailure::InUse => format!(
            "cannot open metadata {path}: another wharf is using this data directory ({e}); stop \
             it, or point this one at another storage.data_dir"
        ),
        OpenFailure::Denied => format!(
            "cannot open metadata {path}: {e}: a permission problem: {}; run wharf as the user \
             that owns the data directory, or give this user read and write access to it",
            crate::admin::whose(std::path::Path::new(path))
        ),
        OpenFailure::Damaged => format!(
            "metadata {path} is damaged ({e}): the file is corrupt (truncated or overwritten), \
             not in use by another wharf; run `wharf fsck` with no server running to check and \
             repair it"
        ),
        OpenFailure::Other => format!("cannot open metadata {path}: {e}"),
    }
}

/// Opens the data directory: the content store, and the metadata store (locked while it is open:
/// one wharf per data directory). A data directory others could read is made private first, and
/// the log says what changed.
pub async fn open_storage(cfg: &Config) -> Result<(FsStore, Meta), StartError> {
    open_storage_with(cfg, false).await
}

/// As `open_storage`; with `check`, every page of the metadata is verified (and repaired where redb
/// can) before it is used (`wharf fsck`).
pub async fn open_storage_with(cfg: &Config, check: bool) -> Result<(FsStore, Meta), StartError> {
    let dir = cfg.storage.data_dir.clone();
    let d = dir.clone();
    match tokio::task::spawn_blocking(move || wharf_storage::data_dir::make_private(&d)).await {
        Ok(t) => log_tightened(&dir, &t),
        Err(e) => tracing::warn!(error = %e, "could not check the data directory's permissions"),
    }
    let store = FsStore::open(&dir).map_err(|source| StartError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let meta_path = dir.join("meta.redb");
    let p = meta_path.clone();
    let meta = tokio::task::spawn_blocking(move || {
        if check {
            Meta::open_checked(&p)
        } else {
            Meta::open(&p)
        }
    })
    .await
    .map_err(|e| StartError::Meta {
        path: meta_path.display().to_string(),
        source: MetaError::Task(e),
    })?
    .map_err(|source| StartError::Meta {
        path: meta_path.display().to_string(),
        source,
    })?;
    Ok((store, meta))
}

/// Says what `make_private` changed in the data directory `dir`, or could not change and how to.
fn log_tightened(dir: &std::path::Path, t: &wharf_storage::data_dir::Tightened) {
    if !t.dirs.is_empty() || !t.files.is_empty() {
        tracing::warn!(
            data_dir = %dir.display(),
            "the data directory was open to other users: made it private ({}); blob files \
             written before keep their mode, but no other user can reach them now",
            t.summary()
        );
    }
    for (path, mode, e) in &t.failed {
        tracing::warn!(
            path = %path.display(), mode = format!("{mode:04o}"), error = %e,
            "cannot make this part of the data directory private: other users may read it; run \
             `chmod go= {}` as its owner, or give wharf a data directory its user owns",
            path.display()
        );
    }
}

/// Opens storage and binds the listener: everything that can fail at startup fails here, with a message
/// that says which setting to change.
pub async fn start(cfg: &Config) -> Result<(Arc<Registry>, Admin, TcpListener), StartError> {
    let dir = cfg.storage.data_dir.clone();
    let meta_path = dir.join("meta.redb");
    let (store, meta) = open_storage(cfg).await?;
    let leases = Leases::load(meta.clone())
        .await
        .map_err(|e| StartError::Meta {
            path: meta_path.display().to_string(),
            source: match e {
                wharf_storage::lease::LeaseError::Meta(m) => m,
            },
        })?;
    leases.set_grace(cfg.gc.grace_secs);
    let store = Touching::wrap(Arc::new(store), leases.clone());
    let plugins = {
        let cache = (cfg.storage.plugin_cache_dir.clone()).unwrap_or_else(|| dir.join("plugins"));
        let cfgs = cfg.plugins.clone();
        let max_answer = cfg.registry.max_manifest_bytes;
        tokio::task::spawn_blocking(move || Plugins::load(&cfgs, &cache, max_answer))
            .await
            .map_err(|e| {
                StartError::Plugin(wharf_policy::plugin::PluginError::Trap {
                    plugin: "(loading)".into(),
                    reason: e.to_string(),
                })
            })?
            .map_err(StartError::Plugin)?
    };
    let policy = Policy::new(
        plugins,
        store.clone(),
        meta.clone(),
        cfg.registry.max_manifest_bytes,
    );
    let mirror =
        Mirror::new(cfg, store.clone(), meta.clone(), policy).map_err(StartError::Upstream)?;
    for u in mirror.upstreams() {
        tracing::info!(host = %u.host, prefix = %u.prefix, endpoint = %u.endpoint(), "mirroring upstream");
    }
    let push = Arc::new(
        Push::new(cfg, store.clone(), meta.clone(), mirror.policy().clone())
            .map_err(StartError::Push)?,
    );
    wharf_policy::auth::check_exposure(cfg).map_err(StartError::Auth)?;
    if let Some(why) = crate::metrics_listener::collides(cfg) {
        return Err(StartError::Metrics(why));
    }
    let auth = wharf_policy::auth::Auth::load(&cfg.auth)
        .map_err(StartError::Auth)?
        .map(|a| Arc::new(a.secure(cfg.server.tls.is_some())));
    let registry = Arc::new(
        Registry::new(store.clone(), meta.clone(), cfg.registry.clone(), mirror)
            .with_push(push.clone())
            .with_auth(auth),
    );
    purge_uploads(&registry).await;
    // Before the status page can be asked for them.
    registry.policy().denials().restore(&meta).await;
    let reg = registry.clone();
    let flush_usage: wharf_storage::gc::BeforeHook = Box::new(move || {
        let reg = reg.clone();
        Box::pin(async move {
            if let Err(e) = reg.mirror().flush_usage().await {
                tracing::warn!(error = %e, "could not record cache usage before a collection");
            }
        })
    });
    let admin = Admin {
        scrub: Arc::new(wharf_storage::scrub::Scrubber::new(
            meta.clone(),
            store.clone(),
            leases.clone(),
            crate::admin::scrub_settings(cfg),
        )),
        collector: Arc::new(
            Collector::new(meta, store, leases.clone(), crate::admin::gc_settings(cfg))
                .with_before(flush_usage),
        ),
        leases,
        push,
        history: Arc::new(crate::ui::History::new(registry.policy().denials().clone())),
        registry: Some(registry.clone()),
    };
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.server.listen,
            source,
        })?;
    Ok((registry, admin, listener))
}

/// The server's background tasks, until [`Housekeeping::stop`].
pub struct Housekeeping {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Ends by itself when the process is asked to stop, after its last (durable) write.
    sampler: tokio::task::JoinHandle<()>,
}

/// How long a stopping server waits for the sampler's last write.
const SAMPLER_STOP: Duration = Duration::from_secs(5);

impl Housekeeping {
    /// Lets the status sampler finish its last write (the counts and denials since its last tick),
    /// then stops the rest.
    pub async fn stop(self) {
        let mut sampler = self.sampler;
        if tokio::time::timeout(SAMPLER_STOP, &mut sampler)
            .await
            .is_err()
        {
            sampler.abort();
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// The collector every `gc.interval_secs` and the scrub every `scrub.interval_secs` (0: never on
/// their own), the push delivery worker, the admin socket in `data_dir`, the metrics listener and
/// the status sampler.
pub fn housekeeping(admin: Admin, cfg: &Config) -> Housekeeping {
    let mut tasks = vec![
        tokio::spawn(admin.clone().serve(cfg.storage.data_dir.clone())),
        tokio::spawn(admin.push.clone().run()),
    ];
    tasks.extend(crate::metrics_listener::spawn(&cfg.metrics, &admin));
    // With or without a metrics listener: `wharf status` shows the history it records.
    let sampler = tokio::spawn(crate::ui::sampler(
        admin.collector.meta.clone(),
        Duration::from_secs(cfg.metrics.sample_secs),
        admin.history.clone(),
    ));
    if cfg.scrub.interval_secs > 0 {
        tasks.push(tokio::spawn(
            admin
                .scrub
                .clone()
                .run_every(Duration::from_secs(cfg.scrub.interval_secs)),
        ));
    }
    if cfg.gc.interval_secs > 0 {
        tasks.push(tokio::spawn(
            admin
                .collector
                .clone()
                .run_every(Duration::from_secs(cfg.gc.interval_secs)),
        ));
    }
    Housekeeping { tasks, sampler }
}

/// Serves plain HTTP until `shutdown` resolves, then drains connections for up to
/// `shutdown_grace_secs`.
pub async fn serve(
    registry: Arc<Registry>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    cfg: &ServerConfig,
) {
    serve_with(registry, listener, None, shutdown, cfg).await
}

/// [`serve`], over TLS when `tls` is given (its certificate reloaded on `SIGHUP`).
pub async fn serve_with(
    registry: Arc<Registry>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
    cfg: &ServerConfig,
) {
    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    let header_timeout = Duration::from_secs(cfg.header_timeout_secs.max(1));
    let body_idle = Duration::from_secs(cfg.body_idle_secs.max(1));
    let write_idle = Duration::from_secs(cfg.write_idle_secs.max(1));
    let graceful = GracefulShutdown::new();
    let inflight = InFlight::default();
    let purger = tokio::spawn(purge_periodically(registry.clone()));
    let plugin_watch = tokio::spawn(
        registry
            .policy()
            .plugins()
            .clone()
            .watch(Duration::from_secs(2)),
    );
    let tls_reload = tls.as_ref().map(|t| tokio::spawn(t.reload_on_sighup()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let reg = registry.clone();
                let inflight = inflight.clone();
                // Whether a request has reached the service (ends the TLS first-request deadline).
                let served = Arc::new(AtomicBool::new(false));
                let svc = {
                    let served = served.clone();
                    service_fn(move |req: Request<Incoming>| {
                        served.store(true, Ordering::Relaxed);
                        let req = req.map(|b| IdleBody::new(b, body_idle));
                        let (reg, inflight) = (reg.clone(), inflight.clone());
                        async move { Ok::<_, Infallible>(handle_logged(reg, req, peer, inflight).await) }
                    })
                };
                let Some(tls) = &tls else {
                    let io = ClientStream::new(wharf_protocol::zerocopy::Stream::new(stream), write_idle);
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .serve_connection(TokioIo::new(io), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            log_connection_error(peer, &e, header_timeout);
                        }
                    });
                    continue;
                };
                let (tls, watcher) = (tls.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let mut stream = stream;
                    if !crate::tls::starts_tls(&mut stream, header_timeout).await {
                        return;
                    }
                    let io = crate::tls::FirstRequest::new(stream, header_timeout, served);
                    let stream = match tls.accept(io).await {
                        Ok(s) => s,
                        Err(e) => return log_handshake_error(peer, &e),
                    };
                    tracing::debug!(%peer, protocol = crate::tls::alpn(&stream), "TLS connection");
                    let io = ClientStream::new(stream, write_idle);
                    let mut http = auto::Builder::new(TokioExecutor::new());
                    http.http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    // HTTP/2 has no head timeout; pings find peers that went away while idle.
                    http.http2()
                        .timer(TokioTimer::new())
                        .keep_alive_interval(header_timeout)
                        .keep_alive_timeout(write_idle);
                    let conn = http.serve_connection(TokioIo::new(io), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        log_connection_error(peer, &*e, header_timeout);
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    purger.abort();
    plugin_watch.abort();
    if let Some(t) = tls_reload {
        t.abort();
    }
    if let Err(e) = registry.mirror().flush_usage().await {
        tracing::warn!(error = %e, "could not record cache usage");
    }
    tracing::info!("shutting down: waiting for in-flight requests");
    let closed = graceful.shutdown();
    tokio::pin!(closed);
    tokio::select! {
        () = &mut closed => tracing::info!("all connections closed"),
        () = inflight.idle() => {
            tracing::info!("no request in flight; closing idle connections");
            // A request leaves the count when hyper has taken its body's last bytes, which may
            // still sit in hyper's or the TLS session's buffers: let those connections flush and
            // close (lingering ones are cut), or the end of the last answers is lost.
            let _ = tokio::time::timeout(DRAIN.min(grace), &mut closed).await;
        }
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        ),
    }
}

/// How long a stop waits, once no request is in flight, for connections to send what they hold.
const DRAIN: Duration = Duration::from_secs(1);

fn log_connection_error(
    peer: SocketAddr,
    e: &(dyn std::error::Error + 'static),
    header_timeout: Duration,
) {
    for cause in std::iter::successors(Some(e), |c| c.source()) {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            tracing::debug!(
                %peer,
                secs = header_timeout.as_secs(),
                "closed a connection that sent no complete request head in time (server.header_timeout_secs)"
            );
            return;
        }
        let inner = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(w) = inner.and_then(|i| i.downcast_ref::<WriteIdle>()) {
            tracing::info!(%peer, "{w}");
            return;
        }
        if let Some(h) = inner.and_then(|i| i.downcast_ref::<HeadTimeout>()) {
            tracing::debug!(%peer, "{h}");
            return;
        }
    }
    tracing::debug!(%peer, error = %e, "connection ended with an error");
}

/// A handshake that failed: a client that does not trust the certificate (it says so, and closes),
/// one that speaks plain HTTP to the TLS port, a scanner. Debug level: nothing wharf can act on.
fn log_handshake_error(peer: SocketAddr, e: &std::io::Error) {
    match e.get_ref().and_then(|i| i.downcast_ref::<HeadTimeout>()) {
        Some(h) => tracing::debug!(%peer, "{h}"),
        None => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    }
}

/// Housekeeping: last-use times of cached content every minute, upload sessions and partial writes
/// every `registry.upload_purge_secs`.
async fn purge_periodically(registry: Arc<Registry>) {
    let mut usage = tokio::time::interval(Duration::from_secs(60));
    let mut uploads = tokio::time::interval(registry.upload_purge_interval());
    // The first ticks are immediate; startup already purged.
    usage.tick().await;
    uploads.tick().await;
    loop {
        tokio::select! {
            _ = usage.tick() => {
                if let Err(e) = registry.mirror().flush_usage().await {
                    tracing::warn!(error = %e, "could not record cache usage");
                }
            }
            _ = uploads.tick() => purge_uploads(&registry).await,
        }
    }
}

/// One purge of upload sessions and partial writes; each removal is logged where it happens, and
/// the run with its totals.
async fn purge_uploads(registry: &Registry) {
    match registry.purge_uploads_report().await {
        Ok(p) if p.sessions + p.ingests > 0 => tracing::info!(
            sessions = p.sessions,
            partial_writes = p.ingests,
            bytes = p.bytes,
            in_progress_kept = p.in_progress,
            "upload purge removed expired sessions and orphaned partial writes"
        ),
        Ok(p) => tracing::debug!(
            in_progress_kept = p.in_progress,
            "upload purge ran: nothing to remove"
        ),
        Err(e) => tracing::warn!(error = %e, "could not purge old uploads"),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop wharf with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
