//! A client of wharf's own registry API: the archive commands go through it rather than the store,
//! so a cold cache is filled by the mirror (its platform policy, its single-flight fills, its leases)
//! exactly as for any other client. It speaks to the admin socket of the wharf serving the configured
//! data directory (`admin::SOCKET`), never to the network listener: whatever TLS or client
//! authentication that asks for, the operator who can open the socket may use the registry. When no
//! wharf serves the data directory, one is started in this process (the metadata lock is free) and
//! its admin socket is served for the command's duration.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::UnixStream;

use wharf_model::config::Config;
use wharf_model::digest::Digest;
use wharf_model::manifest::{self, MANIFEST_TYPES};

use super::error::{ArchiveError, Refusal};
use super::image_ref::ImageRef;

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// How long to wait for a running wharf to answer on its admin socket before starting one here.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A manifest as the registry served it, its digest verified.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// A wharf started by this command, stopped by `WharfApi::close`.
struct InProcess {
    registry: Arc<crate::registry::Registry>,
    socket: tokio::task::JoinHandle<()>,
}

/// wharf's registry API, through the admin socket.
pub struct WharfApi {
    base: String,
    http: Client<Dial, ReqBody>,
    max_manifest: u64,
    server: Option<InProcess>,
}

/// Dials the admin socket, whatever host a request names.
#[derive(Clone)]
pub struct Dial(Arc<PathBuf>);

impl tower_service::Service<http::Uri> for Dial {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(&*path).await?)) })
    }
}

fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(b: Bytes) -> ReqBody {
    Full::new(b).map_err(|never| match never {}).boxed()
}

impl WharfApi {
    /// The wharf serving `cfg`'s data directory, or one started in this process when none does.
    pub async fn connect(cfg: &Config) -> Result<WharfApi, ArchiveError> {
        let data_dir = &cfg.storage.data_dir;
        let dial = Dial(Arc::new(data_dir.join(crate::admin_socket::SOCKET)));
        let mut reg = WharfApi {
            base: "http://wharf".to_owned(),
            http: Client::builder(TokioExecutor::new()).build(dial),
            max_manifest: cfg.registry.max_manifest_bytes,
            server: None,
        };
        if reg.answers().await {
            tracing::debug!(data_dir = %data_dir.display(), "using the wharf that serves the data directory");
            return Ok(reg);
        }
        // The network listener this starts is never served: the command's requests go through the
        // admin socket.
        let mut own = cfg.clone();
        own.server.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let (registry, admin, _unused) = crate::app::start(&own)
            .await
            .map_err(|e| ArchiveError::Start(e.to_string()))?;
        let socket = crate::admin_socket::bind(data_dir).map_err(|(_, e)| ArchiveError::Io(e))?;
        tracing::info!(
            data_dir = %data_dir.display(),
            "no wharf serves the data directory; serving the registry API in this process"
        );
        reg.server = Some(InProcess {
            registry,
            socket: tokio::spawn(admin.serve_on(socket)),
        });
        Ok(reg)
    }

    /// Stops the wharf this command started, if any: its requests are done by now.
    pub async fn close(self) {
        if let Some(s) = self.server {
            s.socket.abort();
            let _ = s.socket.await;
            if let Err(e) = s.registry.mirror().flush_usage().await {
                tracing::warn!(error = %e, "could not record cache usage");
            }
        }
    }

    /// Whether something speaking the registry API answers `GET /v2/` at `base`.
    async fn answers(&self) -> bool {
        let req = Request::get(format!("{}/v2/", self.base))
            .body(empty())
            .expect("valid request");
        match tokio::time::timeout(PROBE_TIMEOUT, self.http.request(req)).await {
            Ok(Ok(resp)) => resp
                .headers()
                .contains_key("docker-distribution-api-version"),
            _ => false,
        }
    }

    fn url(&self, name: &str, ns: Option<&str>, rest: &str) -> String {
        let mut u = format!("{}/v2/{name}/{rest}", self.base);
        if let Some(ns) = ns {
            u.push_str("?ns=");
            u.push_str(ns);
        }
        u
    }

    async fn send(&self, req: Request<ReqBody>) -> Result<Response<Incoming>, ArchiveError> {
        let what = format!("{} {}", req.method(), req.uri());
        self.http
            .request(req)
            .await
            .map_err(|e| ArchiveError::Http(format!("{what}: {e}")))
    }

    /// Reads an error answer into a refusal (its body is small and capped).
    async fn refusal(resp: Response<Incoming>) -> Refusal {
        let status = resp.status();
        let body = read_capped(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let first = v.get("errors").and_then(|e| e.get(0));
        let code = first
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        let message = first
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        Refusal {
            status,
            code,
            message,
        }
    }

    /// `GET` a manifest of `r` by `reference` (its tag or a digest), verifying the digest.
    pub async fn manifest(
        &self,
        r: &ImageRef,
        reference: &str,
    ) -> Result<Result<Fetched, Refusal>, ArchiveError> {
        let url = self.url(
            &r.name,
            r.host.as_deref(),
            &format!("manifests/{reference}"),
        );
        let req = Request::get(&url)
            .header(ACCEPT, MANIFEST_TYPES.join(", "))
            .body(empty())
            .expect("valid request");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Ok(Err(Self::refusal(resp).await));
        }
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| manifest::bare_media_type(v).to_owned());
        let named = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = read_capped(resp.into_body(), self.max_manifest)
            .await
            .map_err(|e| ArchiveError::Http(format!("GET {url}: {e}")))?;
        let expected = match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => named,
        };
        let digest = match &expected {
            Some(d) => Digest::of(d.algorithm(), &bytes),
            None => Digest::sha256_of(&bytes),
        };
        if let Some(want) = expected {
            if want != digest {
                return Err(ArchiveError::DigestMismatch {
                    what: format!("manifest {reference} of {r}"),
                    expected: want,
                    actual: digest,
                });
            }
        }
        let media_type = media_type_of(&bytes)
            .or(header_type)
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_owned());
        Ok(Ok(Fetched {
            digest,
            media_type,
            bytes,
        }))
    }

    /// `GET` blob `d` of `r`: the response, to stream.
    pub async fn blob(&self, r: &ImageRef, d: &Digest) -> Result<Incoming, ArchiveError> {
        let url = self.url(&r.name, r.host.as_deref(), &format!("blobs/{d}"));
        let req = Request::get(&url).body(empty()).expect("valid request");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(ArchiveError::Refused {
                what: format!("blob {d} of {r}"),
                refusal: Self::refusal(resp).await,
            });
        }
        Ok(resp.into_body())
    }

    /// Whether repository `repo` (local) has blob `d`.
    pub async fn has_blob(&self, repo: &str, d: &Digest) -> Result<bool, ArchiveError> {
        let url = self.url(repo, None, &format!("blobs/{d}"));
        let req = Request::head(&url).body(empty()).expect("valid request");
        Ok(self.send(req).await?.status() == StatusCode::OK)
    }

    /// Pushes blob `d` of `size` bytes to `repo` (one upload session, one monolithic `PUT`).
    pub async fn push_blob(
        &self,
        repo: &str,
        d: &Digest,
        size: u64,
        body: ReqBody,
    ) -> Result<(), ArchiveError> {
        let url = self.url(repo, None, "blobs/uploads/");
        let req = Request::post(&url)
            .header(CONTENT_LENGTH, "0")
            .body(empty())
            .expect("valid request");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(ArchiveError::Refused {
                what: format!("starting the upload of {d} to {repo}"),
                refusal: Self::refusal(resp).await,
            });
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ArchiveError::Http(format!("POST {url}: no Location")))?
            .to_owned();
        let mut put = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={d}"));
        let req = Request::put(&put)
            .header(CONTENT_LENGTH, size.to_string())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .expect("valid request");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(ArchiveError::Refused {
                what: format!("pushing blob {d} to {repo}"),
                refusal: Self::refusal(resp).await,
            });
        }
        Ok(())
    }

    /// `PUT` a manifest to `repo` by `reference` (digest or tag).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Result<(), Refusal>, ArchiveError> {
        let url = self.url(repo, None, &format!("manifests/{reference}"));
        let req = Request::put(&url)
            .header(CONTENT_TYPE, media_type)
            .header(CONTENT_LENGTH, bytes.len().to_string())
            .body(full(bytes))
            .expect("valid request");
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::CREATED {
            return Ok(Err(Self::refusal(resp).await));
        }
        Ok(Ok(()))
    }
}

/// The `mediaType` a manifest names itself.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Head>(bytes).ok()?.media_type
}

/// A body read whole, refused past `limit` bytes (manifests, error answers).
pub async fn read_capped(mut body: Incoming, limit: u64) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(format!(
                    "larger than {limit} bytes (registry.max_manifest_bytes)"
                ));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// A request body read from a file region (`AsyncRead` that ends where the region does), in chunks:
/// a blob pushed from an archive is never held whole in memory.
pub struct ReaderBody<R> {
    reader: R,
    remaining: u64,
}

const CHUNK: usize = 256 * 1024;

impl<R: AsyncRead + Unpin + Send + Sync + 'static> ReaderBody<R> {
    pub fn boxed(reader: R, len: u64) -> ReqBody {
        BoxBody::new(ReaderBody {
            reader,
            remaining: len,
        })
    }
}

impl<R: AsyncRead + Unpin> http_body::Body for ReaderBody<R> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = CHUNK.min(usize::try_from(self.remaining).unwrap_or(CHUNK));
        let mut buf = vec![0u8; want];
        let mut rb = ReadBuf::new(&mut buf);
        ready!(Pin::new(&mut self.reader).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the archive ended {} bytes early", self.remaining),
            ))));
        }
        self.remaining -= n as u64;
        buf.truncate(n);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
