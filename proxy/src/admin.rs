//! The local admin interface: CLI commands that act on a running server's state (`wharf gc`, `wharf
//! leases`) ask it over a unix socket in the data directory, `<data_dir>/admin.sock`, because the
//! server holds the metadata store's lock. When no server runs, the same commands work on the files
//! directly.
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

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use wharf_storage::gc::{Collector, Report, Settings};
use wharf_storage::lease::Leases;
use wharf_storage::meta::LeaseRecord;

pub const SOCKET: &str = "admin.sock";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Failed(String),
    /// The metadata store is damaged (what `open_storage` said).
    #[error("{0}")]
    Damaged(String),
    #[error(
        "the wharf server using {dir} did not answer on {socket}: {reason} (is it still starting? \
         try again; if no server runs, remove the stale socket)"
    )]
    Unreachable {
        dir: String,
        socket: String,
        reason: String,
    },
    #[error(
        "permission denied on {socket}: {whose}; this is a permission problem, not a stale socket: \
         run this command as the user that runs the server (e.g. `sudo -u <that user> wharf …`)"
    )]
    Denied { socket: String, whose: String },
}

/// Who may use `path` (its owner and mode, or those of the first directory above it this user can
/// see), for a permission error: the fix is to become that user.
pub(crate) fn whose(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut p = Some(path);
    while let Some(at) = p {
        if let Ok(m) = std::fs::symlink_metadata(at) {
            let what = if at == path { "it" } else { "the directory" };
            let at_text = if at == path {
                String::new()
            } else {
                format!(" {}", at.display())
            };
            return format!(
                "{what}{at_text} belongs to {} with mode {:o}, and this command runs as {}",
                user_name(m.uid()),
                m.mode() & 0o7777,
                // SAFETY: getuid(2) cannot fail.
                user_name(unsafe { libc::getuid() })
            );
        }
        p = at.parent();
    }
    "this user cannot reach it".to_owned()
}

/// `name (uid N)`, or `uid N` when the user database has no name for it.
fn user_name(uid: u32) -> String {
    // SAFETY: `passwd` is plain data (integers and pointers); all zeroes is a valid value of it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, which outlive the call, and sets `out` to
    // `&pw` or null; `pw_name` points into `buf`.
    let found = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if found == 0 && !out.is_null() && !pw.pw_name.is_null() {
        // SAFETY: as above: a NUL-terminated string in `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return format!("{} (uid {uid})", name.to_string_lossy());
    }
    format!("uid {uid}")
}

/// A lease as the admin interface lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    pub id: String,
    #[serde(flatten)]
    pub record: LeaseRecord,
}

/// What the admin interface acts on.
#[derive(Clone)]
pub struct Admin {
    pub collector: Arc<Collector>,
    pub scrub: Arc<wharf_storage::scrub::Scrubber>,
    pub leases: Leases,
    pub push: Arc<crate::push::Push>,
    /// The registry a server serves; `None` for the offline admin state.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// The status page's memory: the sampler's base and the policy's denials.
    pub history: Arc<crate::ui::History>,
}

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

impl Admin {
    /// Writes the batched last uses of tags now (`meta::LastUse`), before a view shows them (`wharf
    /// images`, `wharf status`, the status page). The views would read the batch all the same (the
    /// metadata merges it in); this keeps the files as current as the server. A no-op offline.
    pub async fn flush_usage(&self) {
        if let Some(registry) = &self.registry {
            if let Err(e) = registry.mirror().flush_usage().await {
                tracing::warn!(error = %e, "could not record cache usage");
            }
        }
    }

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

    fn lease_entries(&self) -> Vec<LeaseEntry> {
        self.leases
            .list()
            .into_iter()
            .map(|(id, record)| LeaseEntry { id, record })
            .collect()
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

/// The scrub's settings from the config.
pub fn scrub_settings(cfg: &wharf_model::config::Config) -> wharf_storage::scrub::Settings {
    wharf_storage::scrub::Settings {
        max_bytes_per_sec: cfg.scrub.max_bytes_per_sec,
        mirror_hosts: gc_settings(cfg).mirror_hosts,
    }
}

/// The collector's settings from the config.
pub fn gc_settings(cfg: &wharf_model::config::Config) -> Settings {
    Settings {
        grace_secs: cfg.gc.grace_secs,
        max_cache_bytes: cfg.cache.max_bytes,
        mirror_hosts: cfg
            .upstreams
            .iter()
            .map(|u| u.host.clone())
            .chain(std::iter::once("docker.io".to_owned()))
            .collect(),
    }
}

/// The admin state over the files, for when no server runs: opening the metadata store fails if a
/// server holds it.
pub async fn offline(cfg: &wharf_model::config::Config) -> Result<Admin, AdminError> {
    offline_with(cfg, false).await
}

/// As `offline`; with `check`, the metadata's every page is verified (and repaired where redb can)
/// before it is used: for `wharf fsck`.
async fn offline_with(cfg: &wharf_model::config::Config, check: bool) -> Result<Admin, AdminError> {
    let (store, meta) = crate::server::open_storage_with(cfg, check)
        .await
        .map_err(|e| offline_failure(cfg, e))?;
    // No server runs: nothing is in flight, so there is no restart window to wait out.
    let leases = Leases::load_offline(meta.clone())
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    let store = wharf_storage::lease::Touching::wrap(Arc::new(store), leases.clone());
    let policy = wharf_policy::policy::Policy::new(
        wharf_policy::plugin::Plugins::none(),
        store.clone(),
        meta.clone(),
        cfg.registry.max_manifest_bytes,
    );
    let push = crate::push::Push::new(cfg, store.clone(), meta.clone(), policy)
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    let scrub = Arc::new(wharf_storage::scrub::Scrubber::new(
        meta.clone(),
        store.clone(),
        leases.clone(),
        scrub_settings(cfg),
    ));
    let collector = Arc::new(Collector::new(
        meta,
        store,
        leases.clone(),
        gc_settings(cfg),
    ));
    Ok(Admin {
        collector,
        scrub,
        leases,
        push: Arc::new(push),
        registry: None,
        history: Arc::default(),
    })
}

/// Why the files could not be opened with no server answering: in use by a wharf that does not
/// serve the socket (yet), or something only the metadata error says (permissions, damage).
fn offline_failure(cfg: &wharf_model::config::Config, e: crate::server::StartError) -> AdminError {
    use wharf_storage::meta::OpenFailure;
    let failure = match &e {
        crate::server::StartError::Meta { source, .. } => Some(source.open_failure()),
        _ => None,
    };
    match failure {
        Some(OpenFailure::InUse) => AdminError::Failed(format!(
            "{e}; a server that runs on it answers on {}",
            cfg.storage.data_dir.join(SOCKET).display()
        )),
        Some(OpenFailure::Damaged) => AdminError::Damaged(e.to_string()),
        _ => AdminError::Failed(e.to_string()),
    }
}

/// Runs a collection through the server on the data directory, or on the files when none runs.
pub async fn gc(cfg: &wharf_model::config::Config, dry_run: bool) -> Result<Report, AdminError> {
    let path = if dry_run { "/gc?dry_run=1" } else { "/gc" };
    match ask(&cfg.storage.data_dir, Method::POST, path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused the collection ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => {
            let admin = offline(cfg).await?;
            admin
                .collector
                .collect(dry_run)
                .await
                .map_err(|e| AdminError::Failed(e.to_string()))
        }
    }
}

/// A scrub pass (`wharf fsck`) through the server on the data directory, or on the files when none
/// runs (then the metadata's pages are checked first).
pub async fn fsck(
    cfg: &wharf_model::config::Config,
    max_bytes_per_sec: Option<u64>,
) -> Result<wharf_storage::scrub::Report, AdminError> {
    let path = match max_bytes_per_sec {
        Some(n) => format!("/fsck?max_bytes_per_sec={n}"),
        None => "/fsck".to_owned(),
    };
    match ask(&cfg.storage.data_dir, Method::POST, &path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server's scrub failed ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => {
            let admin = offline_with(cfg, true).await.map_err(|e| match e {
                AdminError::Damaged(m) => AdminError::Damaged(format!(
                    "{m}\nfsck could not repair it. Restore meta.redb from a backup; or move it \
                     aside (`mv meta.redb meta.redb.damaged` in the data directory) and start \
                     wharf with empty metadata: mirrored images are fetched again, pushed tags \
                     must be pushed again, and the content stays on disk until the collector \
                     removes what no tag names"
                )),
                e => e,
            })?;
            admin
                .scrub
                .run(max_bytes_per_sec)
                .await
                .map_err(|e| AdminError::Failed(e.to_string()))
        }
    }
}

/// The live leases, from the server or the files.
pub async fn leases(cfg: &wharf_model::config::Config) -> Result<Vec<LeaseEntry>, AdminError> {
    match ask(&cfg.storage.data_dir, Method::GET, "/leases").await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => Ok(offline(cfg).await?.lease_entries()),
    }
}

/// Ends a lease now.
pub async fn release_lease(
    cfg: &wharf_model::config::Config,
    id: &str,
) -> Result<bool, AdminError> {
    let path = format!("/leases/{id}");
    match ask(&cfg.storage.data_dir, Method::DELETE, &path).await? {
        Some((StatusCode::NO_CONTENT, _)) => Ok(true),
        Some((StatusCode::NOT_FOUND, _)) => Ok(false),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => offline(cfg)
            .await?
            .leases
            .release(id)
            .await
            .map_err(|e| AdminError::Failed(e.to_string())),
    }
}

/// What wharf holds (or, with `dangling`, what no tag reaches), from the server or the files.
pub async fn images(
    cfg: &wharf_model::config::Config,
    dangling: bool,
) -> Result<Vec<wharf_storage::images::Image>, AdminError> {
    let path = if dangling {
        "/images?dangling=1"
    } else {
        "/images"
    };
    match ask(&cfg.storage.data_dir, Method::GET, path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => wharf_storage::images::list(&offline(cfg).await?.collector, dangling)
            .await
            .map_err(|e| AdminError::Failed(e.to_string())),
    }
}

/// `wharf status`: from the server (with its counters), or the files when none runs.
pub async fn status(
    cfg: &wharf_model::config::Config,
) -> Result<crate::status::Status, AdminError> {
    match ask(&cfg.storage.data_dir, Method::GET, "/status").await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => crate::status::collect(&offline(cfg).await?, false)
            .await
            .map_err(|e| AdminError::Failed(e.to_string())),
    }
}

/// The push journal, from the server or the files.
pub async fn pushes(
    cfg: &wharf_model::config::Config,
) -> Result<Vec<crate::push::DeliveryStatus>, AdminError> {
    match ask(&cfg.storage.data_dir, Method::GET, "/pushes").await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => offline(cfg)
            .await?
            .push
            .status()
            .await
            .map_err(|e| AdminError::Failed(e.message)),
    }
}

/// `wharf push retry ID` (`retry`) or `wharf push drop ID`: the delivery as it is now, `None` when the
/// journal has no such entry. Without a server, a retried delivery goes at its next start.
pub async fn push_action(
    cfg: &wharf_model::config::Config,
    id: u64,
    retry: bool,
) -> Result<Option<crate::push::DeliveryStatus>, AdminError> {
    let (method, path) = if retry {
        (Method::POST, format!("/pushes/{id}/retry"))
    } else {
        (Method::DELETE, format!("/pushes/{id}"))
    };
    match ask(&cfg.storage.data_dir, method, &path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((StatusCode::NOT_FOUND, _)) => Ok(None),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => {
            let push = offline(cfg).await?.push;
            let done = if retry {
                push.retry(id).await
            } else {
                push.drop_delivery(id).await
            };
            done.map_err(|e| AdminError::Failed(e.message))
        }
    }
}
