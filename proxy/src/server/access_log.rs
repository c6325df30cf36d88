//! One log line per request, however it ends (answered, cut short by its client, refused), and the
//! count of requests in flight that a graceful shutdown waits for.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use crate::registry::Registry;
use wharf_model::request::ClientAddr;
use wharf_protocol::body::Body;
use wharf_protocol::error::Refused;

use super::IdleBody;

/// Query keys whose values wharf reads and which hold no secret: the registry API's (`ns`, `digest`,
/// `mount`, `from`, `n`, `last`, `artifactType`), the token endpoint's (`service`, `scope`,
/// `account`, `client_id`, `offline_token`) and the admin socket's.
const PLAIN_KEYS: [&str; 15] = [
    "ns",
    "digest",
    "mount",
    "from",
    "n",
    "last",
    "artifactType",
    "service",
    "scope",
    "account",
    "client_id",
    "offline_token",
    "dry_run",
    "dangling",
    "max_bytes_per_sec",
];

/// A request's path and query as the log writes them: the value of every query key not in
/// [`PLAIN_KEYS`] replaced by `<redacted>`, on every path. A client may put anything in a URL (a
/// password on `/token`, a token beside `ns=`), and a log is read by more people than the secrets
/// are meant for; the keys stay, so the line still shows what was sent.
pub fn logged_path(uri: &http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if PLAIN_KEYS.contains(&k) => kv.to_owned(),
            Some((k, _)) => format!("{k}=<redacted>"),
            None if kv.is_empty() || PLAIN_KEYS.contains(&kv) => kv.to_owned(),
            // A bare value may itself be the secret.
            None => "<redacted>".to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), parts.join("&"))
}

/// Answers a request and logs it once, however it ends. Requests that change state run as their own
/// task, so a client that leaves mid-request cannot cut a commit in half; their line is then written
/// when they finish. Reads stop with their client, and are logged as it leaves.
pub(super) async fn handle_logged(
    registry: Arc<Registry>,
    mut req: Request<IdleBody<Incoming>>,
    peer: SocketAddr,
    inflight: InFlight,
) -> Response<LoggedBody> {
    req.extensions_mut().insert(ClientAddr(peer));
    let start = Instant::now();
    let method = req.method().clone();
    // The query too (`ns=` says which upstream a containerd request meant), without its secrets.
    let path = logged_path(req.uri());
    let log = RequestLog {
        method,
        path,
        status: StatusCode::OK,
        refused: None,
        start,
        peer,
    };
    if matches!(log.method, Method::GET | Method::HEAD) {
        let mut waiting = Waiting(Some(log));
        let guard = inflight.enter();
        let resp = registry.handle(req).await;
        return logged(resp, waiting.0.take().expect("only taken here"), guard);
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<Response<Body>>();
    let mut task_log = log.copy();
    let task_guard = inflight.enter();
    tokio::spawn(async move {
        let _in_flight = task_guard;
        let resp = registry.handle(req).await;
        // The client left before the answer: nobody else will log this request.
        if let Err(resp) = tx.send(resp) {
            task_log.answered(&resp);
            task_log.emit(0, false, true);
        }
    });
    let resp = rx.await.unwrap_or_else(|_| {
        // The handler panicked; its task is gone.
        wharf_protocol::respond::error_response(
            wharf_protocol::error::RegistryError::new(
                wharf_protocol::error::ErrorCode::Unknown,
                "internal error while answering this request; see wharf's log",
            ),
            false,
        )
    });
    logged(resp, log, inflight.enter())
}

fn logged(resp: Response<Body>, mut log: RequestLog, guard: InFlightGuard) -> Response<LoggedBody> {
    log.answered(&resp);
    resp.map(|inner| LoggedBody {
        inner,
        sent: 0,
        log: Some(log),
        _in_flight: guard,
    })
}

/// Requests being answered (handlers running, response bodies being sent). A graceful stop waits for
/// these, not for connections: an idle keep-alive connection holds no request, and hyper would keep
/// it (and the stop) waiting until the client sent another one.
#[derive(Clone, Default)]
pub(super) struct InFlight(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Resolves once no request is in flight.
    pub(super) async fn idle(&self) {
        loop {
            let notified = self.0 .1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0 .0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self
            .0
             .0
             .0
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0 .0 .1.notify_waiters();
        }
    }
}

/// Logs a read whose client left before it was answered (nginx's 499).
struct Waiting(Option<RequestLog>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut l) = self.0.take() {
            l.status = CLIENT_GONE;
            l.emit(0, false, true);
        }
    }
}

/// What the log says for a request whose client left before the answer (as nginx does).
const CLIENT_GONE: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

struct RequestLog {
    method: Method,
    path: String,
    status: StatusCode,
    refused: Option<Refused>,
    start: Instant,
    peer: SocketAddr,
}

impl RequestLog {
    fn copy(&self) -> RequestLog {
        RequestLog {
            method: self.method.clone(),
            path: self.path.clone(),
            status: self.status,
            refused: self.refused.clone(),
            start: self.start,
            peer: self.peer,
        }
    }

    fn answered(&mut self, resp: &Response<Body>) {
        self.status = resp.status();
        self.refused = resp.extensions().get::<Refused>().cloned();
    }

    /// The request's one line: a refusal with its error code, and at debug level its message.
    fn emit(&self, bytes: u64, complete: bool, client_gone: bool) {
        let micros = self.start.elapsed().as_micros() as u64;
        let (peer, method, path, status) =
            (&self.peer, &self.method, &self.path, self.status.as_u16());
        wharf_metrics::request(method, path, status, bytes, micros);
        match &self.refused {
            None => {
                tracing::info!(%peer, %method, %path, status, bytes, micros, complete, client_gone, "request")
            }
            Some(r) if tracing::enabled!(tracing::Level::DEBUG) => tracing::info!(
                %peer, %method, %path, status, error = %r.code, reason = %r.message, bytes, micros,
                complete, client_gone, "request"
            ),
            Some(r) => {
                tracing::info!(%peer, %method, %path, status, error = %r.code, bytes, micros, complete, client_gone, "request")
            }
        }
    }
}

/// A response body that logs its request once the body is done (or abandoned), with the bytes sent:
/// the one place that sees both the status and how the transfer ended.
pub struct LoggedBody {
    inner: Body,
    sent: u64,
    log: Option<RequestLog>,
    _in_flight: InFlightGuard,
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
            l.emit(self.sent, complete, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::logged_path;

    fn logged(uri: &str) -> String {
        logged_path(&uri.parse().unwrap())
    }

    #[test]
    fn query_values_that_may_be_secrets_are_not_logged() {
        assert_eq!(
            logged("/token?service=wharf&scope=repository:a:pull&account=alice&password=hunter2"),
            "/token?service=wharf&scope=repository:a:pull&account=alice&password=<redacted>"
        );
        assert_eq!(
            logged("/v2/a/blobs/uploads/?mount=sha256:ab&from=b&access_token=t0k"),
            "/v2/a/blobs/uploads/?mount=sha256:ab&from=b&access_token=<redacted>"
        );
        assert_eq!(logged("/token?s3cr3t"), "/token?<redacted>");
        assert_eq!(
            logged("/v2/library/alpine/manifests/3?ns=docker.io"),
            "/v2/library/alpine/manifests/3?ns=docker.io"
        );
        assert_eq!(logged("/v2/"), "/v2/");
    }
}
