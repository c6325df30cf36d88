//! The metrics listener (`[metrics] listen`): `GET /metrics` for Prometheus and the status page
//! (`/ui`, ui.rs), on an address of their own. `/metrics` names no repository (counters by route
//! kind, upstream host and plugin), so it asks for no credential; the page shows each caller the
//! repositories `[auth]` lets them pull. With no `[auth]`, the listener stays on loopback unless
//! `allow_anonymous_remote` says otherwise (`auth::exposures`).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::admin::Admin;
use crate::push::journal::State;
use wharf_model::config::MetricsConfig;

/// Why `[metrics] listen` cannot work beside `server.listen`: the same port on a shared address
/// (a wildcard address shares every one of its family's).
pub fn collides(cfg: &wharf_model::config::Config) -> Option<String> {
    let (m, s) = (cfg.metrics.listen?, cfg.server.listen);
    let shared = m.ip() == s.ip()
        || (m.is_ipv4() == s.is_ipv4() && (m.ip().is_unspecified() || s.ip().is_unspecified()));
    (m.port() == s.port() && shared).then(|| {
        format!(
            "metrics.listen {m} is where wharf serves the registry (server.listen {s}); give the \
             metrics listener a port of its own, e.g. \"127.0.0.1:9090\", or \"\" for none"
        )
    })
}

/// Starts the metrics listener when `[metrics] listen` names an address. A port that cannot be bound
/// is logged (the registry goes on serving: metrics are not worth refusing pulls over).
pub fn spawn(cfg: &MetricsConfig, admin: &Admin) -> Option<tokio::task::JoinHandle<()>> {
    let addr = cfg.listen?;
    let listener = match std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                %addr, error = %e,
                "cannot listen for metrics (set metrics.listen to a free address, or \"\" for none); \
                 serving without /metrics"
            );
            return None;
        }
    };
    tracing::info!(%addr, "serving /metrics and the status page (/ui)");
    Some(tokio::spawn(serve(listener, admin.clone())))
}

/// What the listener serves from.
struct ListenerState {
    admin: Admin,
}

async fn serve(listener: tokio::net::TcpListener, admin: Admin) {
    let state = Arc::new(ListenerState { admin });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer.ip()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// `client`: where the request came from, whose failed logins count as on the registry's port.
async fn handle<B>(
    state: &ListenerState,
    req: Request<B>,
    client: IpAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/ui" || path.starts_with("/ui/") {
        return crate::ui::serve(&state.admin, &req, Some(client)).await;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "the metrics listener only answers GET\n".into(),
        );
    }
    match path {
        "/metrics" => text(
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            scrape(&state.admin).await,
        ),
        "/" => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "wharf: GET /metrics (Prometheus text format), GET /ui (status page)\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("nothing at {path} here: this listener serves /metrics and /ui\n"),
        ),
    }
}

/// Sets what is read at scrape time (leases, the push journal, the last scrub) and encodes everything.
pub async fn scrape(admin: &Admin) -> String {
    wharf_metrics::set_leases(admin.leases.list().len());
    match admin.push.status().await {
        Ok(list) => {
            for state in [
                State::Pending,
                State::Delivering,
                State::Delivered,
                State::Failed,
            ] {
                let n = list.iter().filter(|s| s.state == state).count();
                wharf_metrics::set_pushes(state.as_str(), n);
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "metrics: cannot read the push journal"),
    }
    // From the metadata: the last pass may have run before this process started, or in `wharf
    // fsck` on the files.
    match admin
        .collector
        .meta
        .last_scrub::<wharf_storage::scrub::LastScrub>()
        .await
    {
        Ok(Some(s)) => wharf_metrics::set_last_scrub(
            s.started,
            &[
                ("damaged", s.damaged as u64),
                ("missing_content", s.missing_content as u64),
                ("missing_child", s.missing_children as u64),
                ("dangling_tag", s.dangling_tags as u64),
            ],
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the last scrub"),
    }
    wharf_metrics::encode()
}
