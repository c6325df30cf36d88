//! The admin socket, `<data_dir>/admin.sock`: the running server's side (its HTTP/1.1 handler over
//! `Admin`) and the CLI's (`ask`). Only the user who can reach the data directory can connect (the
//! socket is created mode 0600).
//!
//! The socket speaks HTTP/1.1 with JSON bodies; only the user who can reach the data directory can
//! connect (the socket is created mode 0600).
//!
//! - `POST /gc[?dry_run=1]` → `gc::Report`
//! - `GET /leases` → `[{id, purpose, created, expires, digests}]`
//! - `DELETE /leases/<id>` → 204, or 404
//! - `GET /images[?dangling=1]` → `[images::Image]`
//! - `GET /status` → `status::Status` (with the server's cache counters and last collection)
//! - `POST /fsck[?max_bytes_per_sec=N]` → `scrub::Report` (a scrub pass, or the rest of a stopped one)
//! - `/v2/...`: the registry API itself, for `wharf export|import|images pull`, as the operator
//!   (`auth::Operator`: the rules of `[auth]` do not apply, the plugins do), whatever TLS or
//!   authentication the network listener asks for.

use crate::admin::whose;
use crate::admin::Admin;
use crate::admin::AdminError;
use bytes::Bytes;
use http::Method;
use http::Request;
use http::Response;
use http::StatusCode;
use http_body_util::BodyExt;
use http_body_util::Either;
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use std::convert::Infallible;
use std::path::Path;
use std::path::PathBuf;

pub const SOCKET: &str = "admin.sock";

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn text(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(msg)))
        .expect("valid response")
}

/// The admin socket, bound; its file goes when the server stops serving it.
pub struct Socket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

/// Opens the admin socket in `data_dir`, mode 0600. Any socket file there is stale: this process
/// holds the data directory's metadata lock.
pub fn bind(data_dir: &Path) -> Result<Socket, (PathBuf, std::io::Error)> {
    let path = data_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| (path.clone(), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(Socket { listener, path })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A request to the server on `data_dir`'s socket; `None` when no server listens there.
pub async fn ask(
    data_dir: &Path,
    method: Method,
    path: &str,
) -> Result<Option<(StatusCode, Bytes)>, AdminError> {
    let socket = data_dir.join(SOCKET);
    let unreachable = |reason: String| AdminError::Unreachable {
        dir: data_dir.display().to_string(),
        socket: socket.display().to_string(),
        reason,
    };
    let stream = match tokio::net::UnixStream::connect(&socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(AdminError::Denied {
                socket: socket.display().to_string(),
                whose: whose(&socket),
            })
        }
        Err(e) => return Err(unreachable(e.to_string())),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "wharf-admin")
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    Ok(Some((status, body)))
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let flag = |name: &str| {
            req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == format!("{name}=1") || p == format!("{name}=true"))
            })
        };
        let (dry_run, dangling) = (flag("dry_run"), flag("dangling"));
        match (req.method(), path.as_str()) {
            (&Method::POST, "/gc") => match self.collector.collect(dry_run).await {
                Ok(r) => json(StatusCode::OK, &r),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            (&Method::POST, "/fsck") => {
                let rate = req.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|p| p.strip_prefix("max_bytes_per_sec="))
                        .and_then(|v| v.parse().ok())
                });
                match self.scrub.run(rate).await {
                    Ok(r) => json(StatusCode::OK, &r),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            (&Method::GET, "/leases") => json(StatusCode::OK, &self.lease_entries()),
            (&Method::GET, "/images") => {
                self.flush_usage().await;
                match wharf_storage::images::list(&self.collector, dangling).await {
                    Ok(list) => json(StatusCode::OK, &list),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            (&Method::GET, "/status") => match crate::status::collect(self, true).await {
                Ok(s) => json(StatusCode::OK, &s),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            (&Method::GET, "/pushes") => match self.push.status().await {
                Ok(list) => json(StatusCode::OK, &list),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.message),
            },
            (m, p) if p.starts_with("/pushes/") => {
                self.push_action(m, &p["/pushes/".len()..]).await
            }
            (&Method::DELETE, p) if p.starts_with("/leases/") => {
                match self.leases.release(&p["/leases/".len()..]).await {
                    Ok(true) => text(StatusCode::NO_CONTENT, String::new()),
                    Ok(false) => text(StatusCode::NOT_FOUND, "no such lease".into()),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint {} {path}", req.method()),
            ),
        }
    }

    /// `POST /pushes/<id>/retry`, `DELETE /pushes/<id>`.
    async fn push_action(&self, method: &Method, rest: &str) -> Response<Full<Bytes>> {
        let (id, retry) = match rest.strip_suffix("/retry") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        let Ok(id) = id.parse::<u64>() else {
            return text(StatusCode::NOT_FOUND, format!("no delivery {id:?}"));
        };
        let done = match (method, retry) {
            (&Method::POST, true) => self.push.retry(id).await,
            (&Method::DELETE, false) => self.push.drop_delivery(id).await,
            _ => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no admin endpoint {method} /pushes/{rest}"),
                )
            }
        };
        match done {
            Ok(Some(s)) => json(StatusCode::OK, &s),
            Ok(None) => text(
                StatusCode::NOT_FOUND,
                format!("no delivery {id} in the push journal"),
            ),
            Err(e) => text(e.status, e.message),
        }
    }

    /// Serves the admin socket in `data_dir` until dropped.
    pub async fn serve(self, data_dir: PathBuf) {
        match bind(&data_dir) {
            Ok(socket) => self.serve_on(socket).await,
            Err((path, e)) => {
                tracing::warn!(socket = %path.display(), error = %e, "cannot open the admin socket; `wharf gc` and `wharf leases` will not reach this server");
            }
        }
    }

    /// Serves a socket [`bind`] opened, until dropped.
    pub async fn serve_on(self, socket: Socket) {
        let Socket { listener, path } = socket;
        let _remove = RemoveOnDrop(path);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let admin = admin.clone();
                    async move {
                        let path = req.uri().path();
                        let api = path == "/v2" || path.starts_with("/v2/");
                        Ok::<_, Infallible>(match (&admin.registry, api) {
                            (Some(registry), true) => {
                                req.extensions_mut().insert(wharf_model::request::Operator);
                                let method = req.method().clone();
                                let path = crate::server::logged_path(req.uri());
                                let resp = registry.handle(req).await;
                                // The network listener's access log does not see these.
                                tracing::info!(via = SOCKET, %method, path = %path, status = resp.status().as_u16(), "request");
                                resp.map(Either::Right)
                            }
                            _ => admin.handle(req).await.map(Either::Left),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}
