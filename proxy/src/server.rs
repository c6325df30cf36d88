//! The HTTP server: accepts connections, hands requests to the registry, logs one line per request,
//! and shuts down gracefully (stop accepting, let in-flight requests finish, up to a grace period).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::config::Config;
use crate::meta::{Meta, MetaError};
use crate::mirror::Mirror;
use crate::registry::Registry;
use crate::store::{ContentStore, FsStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot use data directory {dir}: {source} (set storage.data_dir in the config, or WHARF_DATA_DIR)"
    )]
    DataDir { dir: String, source: StoreError },
    #[error(
        "cannot open metadata {path}: {source} (is another wharf using this data directory? stop it, or \
         point this one at another storage.data_dir)"
    )]
    Meta { path: String, source: MetaError },
    #[error("{0}")]
    Upstream(crate::upstream::UpstreamError),
    #[error(
        "cannot listen on {addr}: {source} (set server.listen in the config, or WHARF_LISTEN, to a free \
         address)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens storage and binds the listener: everything that can fail at startup fails here, with a message
/// that says which setting to change.
pub async fn start(cfg: &Config) -> Result<(Arc<Registry>, TcpListener), StartError> {
    let dir = cfg.storage.data_dir.clone();
    let store = FsStore::open(&dir).map_err(|source| StartError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let meta_path = dir.join("meta.redb");
    let meta = {
        let p = meta_path.clone();
        tokio::task::spawn_blocking(move || Meta::open(&p))
            .await
            .map_err(|e| StartError::Meta {
                path: meta_path.display().to_string(),
                source: MetaError::Task(e),
            })?
            .map_err(|source| StartError::Meta {
                path: meta_path.display().to_string(),
                source,
            })?
    };
    let store: Arc<dyn ContentStore> = Arc::new(store);
    let mirror = Mirror::new(cfg, store.clone(), meta.clone()).map_err(StartError::Upstream)?;
    for u in mirror.upstreams() {
        tracing::info!(host = %u.host, prefix = %u.prefix, endpoint = %u.endpoint(), "mirroring upstream");
    }
    let registry = Arc::new(Registry::new(store, meta, cfg.registry.clone(), mirror));
    match registry.purge_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "dropped expired or orphaned uploads"),
        Err(e) => tracing::warn!(error = %e, "could not purge old uploads"),
    }
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.server.listen,
            source,
        })?;
    Ok((registry, listener))
}

/// Serves until `shutdown` resolves, then drains connections for up to `grace`.
pub async fn serve(
    registry: Arc<Registry>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let purger = tokio::spawn(purge_periodically(registry.clone()));
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
                let svc = service_fn(move |req| {
                    let reg = reg.clone();
                    async move { Ok::<_, Infallible>(handle_logged(&reg, req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(crate::zerocopy::Stream::new(stream)), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    purger.abort();
    if let Err(e) = registry.mirror().flush_usage().await {
        tracing::warn!(error = %e, "could not record cache usage");
    }
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        ),
    }
}

/// Housekeeping: last-use times of cached content every minute, expired uploads every hour.
async fn purge_periodically(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await; // the first tick is immediate; startup already purged
    for n in 1u64.. {
        tick.tick().await;
        if let Err(e) = registry.mirror().flush_usage().await {
            tracing::warn!(error = %e, "could not record cache usage");
        }
        if n % 60 == 0 {
            if let Err(e) = registry.purge_uploads().await {
                tracing::warn!(error = %e, "could not purge old uploads");
            }
        }
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

async fn handle_logged(
    registry: &Registry,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<LoggedBody> {
    let start = Instant::now();
    let method = req.method().clone();
    // The query too: `ns=` says which upstream a containerd request meant.
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let resp = registry.handle(req).await;
    let status = resp.status();
    resp.map(|inner| LoggedBody {
        inner,
        sent: 0,
        log: Some(RequestLog {
            method,
            path,
            status,
            start,
            peer,
        }),
    })
}

struct RequestLog {
    method: Method,
    path: String,
    status: StatusCode,
    start: Instant,
    peer: SocketAddr,
}

/// A response body that logs its request once the body is done (or abandoned), with the bytes sent:
/// the one place that sees both the status and how the transfer ended.
pub struct LoggedBody {
    inner: Body,
    sent: u64,
    log: Option<RequestLog>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.sent += d.len() as u64;
            }
        }
        if let Poll::Ready(Some(Err(e))) = &r {
            if let Some(l) = &this.log {
                tracing::error!(path = %l.path, error = %e, "response body failed; aborting the transfer");
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(l) = self.log.take() {
            let complete = self.inner.is_end_stream();
            tracing::info!(
                peer = %l.peer,
                method = %l.method,
                path = %l.path,
                status = l.status.as_u16(),
                bytes = self.sent,
                micros = l.start.elapsed().as_micros() as u64,
                complete,
                "request"
            );
        }
    }
}
