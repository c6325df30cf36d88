//! The listener's TLS (`[server.tls]`): rustls with the configured certificate, HTTP/2 and HTTP/1.1
//! offered by ALPN (containerd, docker and podman speak HTTP/2 when the server offers it).
//!
//! The certificate sits behind a resolver that `SIGHUP` swaps: each handshake takes the current one,
//! so connections already open keep the session they negotiated, and new ones get the new
//! certificate (cert-manager and certbot renew files in place, then signal). A reload that fails
//! (a missing file, a key that does not match) keeps the old certificate and says why.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use wharf_model::config::TlsConfig;

/// ALPN identifiers, in the server's order of preference.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read server.tls.{key} {path}: {source} (point server.tls.{key} at a PEM file that \
         the user running wharf can read)"
    )]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "server.tls.cert_file {path} holds no PEM certificate{detail} (it must hold the server \
         certificate, then any intermediates, each as -----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate { path: PathBuf, detail: String },
    #[error(
        "server.tls.key_file {path} holds no usable PEM private key{detail} (it must hold the \
         certificate's key as -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey { path: PathBuf, detail: String },
    #[error(
        "server.tls.key_file {key} is not the key of the certificate in server.tls.cert_file {cert} \
         (give the key the certificate was issued for, or the certificate issued for this key)"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "server.tls.cert_file {path} is not a certificate rustls can use: {reason} (give an X.509 \
         server certificate in PEM)"
    )]
    BadCertificate { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
    #[error("loading the TLS certificate stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The listener's TLS: the acceptor, and the certificate it presents (swapped by [`Tls::reload`]).
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<CurrentCert>,
    files: TlsConfig,
}

impl Tls {
    /// Reads the certificate and key (on the blocking pool) and builds the acceptor; a file that is
    /// missing, unreadable or wrong fails here, naming the key to fix.
    pub async fn load(files: &TlsConfig) -> Result<Arc<Tls>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = read_certified(files.clone(), provider.clone()).await?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Arc::new(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files: files.clone(),
        }))
    }

    /// The TLS handshake on an accepted connection.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.acceptor.accept(io).await
    }

    /// Reads the files again; on success new handshakes present the new certificate, on failure the
    /// old one stays.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = read_certified(self.files.clone(), provider).await?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// Reloads on every `SIGHUP`, until dropped. The signal stream is registered before this returns,
    /// so a `SIGHUP` sent once the listener is up is never missed (nor fatal: with no handler
    /// installed, `SIGHUP` ends the process). tokio delivers each signal to every stream registered
    /// for it, so this and the plugin reload (`Plugins::watch`) each see every `SIGHUP`: one signal
    /// reloads both.
    pub fn reload_on_sighup(self: &Arc<Self>) -> impl Future<Output = ()> + Send {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let tls = self.clone();
        async move {
            let mut hup = match hup {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; the TLS certificate is reloaded only by a restart");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                match tls.reload().await {
                    Ok(()) => tracing::info!(
                        cert_file = %tls.files.cert_file.display(),
                        "SIGHUP: TLS certificate reloaded; new connections use it"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS certificate not reloaded; the previous one stays in use"
                    ),
                }
            }
        }
    }
}

/// The negotiated application protocol of a TLS connection, for the log.
pub fn alpn<IO>(stream: &TlsStream<IO>) -> &'static str {
    match stream.get_ref().1.alpn_protocol() {
        Some(ALPN_H2) => "h2",
        Some(ALPN_HTTP11) => "http/1.1",
        _ => "none",
    }
}

/// The certificate every new handshake presents.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

async fn read_certified(
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
) -> Result<CertifiedKey, TlsError> {
    tokio::task::spawn_blocking(move || certified_key(&files, &provider)).await?
}

/// The chain and key from `files`, checked to belong together.
fn certified_key(files: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (cert_path, key_path) = (&files.cert_file, &files.key_file);
    let cert_pem = read("cert_file", cert_path)?;
    let key_pem = read("key_file", key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_path.clone(),
            detail: format!(": {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.clone(),
            detail: String::new(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.clone(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            e => format!(": {e}"),
        },
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::NoKey {
            path: key_path.clone(),
            detail: format!(": {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
        }),
        Err(e) => Err(TlsError::BadCertificate {
            path: cert_path.clone(),
            reason: e.to_string(),
        }),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Whether the client on `stream` starts a TLS handshake (looked at without consuming it). A client
/// that sends plain HTTP instead (an `http://` URL, an "insecure registry" setting) gets a plain
/// HTTP answer that says to use https, rather than a closed connection it cannot explain; one that
/// sends nothing within `wait` is closed.
pub async fn starts_tls(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => true,
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            let body = "{\"errors\":[{\"code\":\"UNSUPPORTED\",\"message\":\"wharf speaks TLS on \
                this port and the client sent plain HTTP: use https:// (and no insecure-registry or \
                --tls-verify=false setting for it; trust wharf's certificate instead)\"}]}\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Ok(peer) = stream.peer_addr() {
                tracing::info!(%peer, "plain HTTP on the TLS listener: answered 400, use https");
            }
            // Best effort: the client may already be gone. Its request is read and dropped until
            // it closes (or for a second): closing over unread bytes sends a reset, which can
            // destroy the answer before the client reads it.
            let _ = tokio::time::timeout(wait, async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            false
        }
        // Anything else is for the handshake to refuse (and log).
        Ok(Ok(_)) => true,
        Ok(Err(_)) | Err(_) => false,
    }
}

/// A TLS client that has not sent a complete first request within `server.header_timeout_secs`
/// of connecting (handshake included): its connection is closed.
#[derive(Debug, thiserror::Error)]
#[error(
    "closed a TLS connection that completed no handshake and request head within {secs} s \
     (server.header_timeout_secs)"
)]
pub struct HeadTimeout {
    secs: u64,
}

/// The accepted socket under TLS: reads fail once `limit` has passed since the connection was
/// accepted and no request has reached the service yet. hyper's own head timeout starts only once
/// HTTP is running, and HTTP/2 has none: without this, a peer that stalls in the handshake, or
/// after it, would hold its connection and task forever. Once a request is served, the HTTP
/// layer's own limits apply (HTTP/1.1 head timeout, HTTP/2 keep-alive pings).
pub struct FirstRequest<S> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    served: Arc<AtomicBool>,
}

impl<S> FirstRequest<S> {
    /// `served` is set by the service when the connection's first request arrives.
    pub fn new(inner: S, limit: Duration, served: Arc<AtomicBool>) -> FirstRequest<S> {
        FirstRequest {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            served,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRequest<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if r.is_ready() || this.served.load(Ordering::Relaxed) {
            return r;
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                HeadTimeout {
                    secs: this.limit.as_secs(),
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRequest<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
