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

use crate::registry::Registry;
use crate::tls::{HeadTimeout, Tls};
use wharf_model::config::ServerConfig;

mod access_log;
mod limits;
pub mod peer;

use access_log::{handle_logged, InFlight};
pub use access_log::{logged_path, LoggedBody};
pub use limits::{ClientStream, IdleBody, WriteIdle};

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
pub(crate) async fn purge_uploads(registry: &Registry) {
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
