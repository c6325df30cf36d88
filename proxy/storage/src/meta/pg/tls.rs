//! A Postgres connection string read the way libpq (psql, pg_dump, every driver built on it) reads
//! it, TLS included, so a URL that works in psql works here:
//! - `sslmode=prefer` (the default) and `require` encrypt without checking the server's
//!   certificate. Debian's and most distributions' clusters come up with TLS on and a self-signed
//!   "snakeoil" certificate; verifying it by default would refuse the database psql connects to.
//! - `verify-ca` checks the certificate chains to a trusted root; `verify-full` also that it names
//!   the host. The roots are `sslrootcert=FILE` (PEM), else the Mozilla roots (webpki-roots), which
//!   is also what `sslrootcert=system` means.
//! - `require` (or `prefer`) with an `sslrootcert` verifies the chain, as libpq does when a root
//!   file is present.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no `sslrootcert`, so those two
//! parameters are taken out of the string here and applied to the TLS setup.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, certificate not checked (libpq's `prefer`, `require`).
    Nothing,
    /// Chains to a trusted root; any name (`verify-ca`).
    Chain,
    /// Chains to a trusted root and names the host (`verify-full`).
    Full,
}

/// A parsed connection string: what tokio-postgres takes, and the TLS to connect with.
#[derive(Clone)]
pub struct Target {
    pub cfg: tokio_postgres::Config,
    pub verify: Verify,
    pub root_cert: Option<PathBuf>,
    pub tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("verify", &self.verify)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes `sslmode` and `sslrootcert` out of `url` (URL or `key=value` form): the rest, and the two.
fn split_tls(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                !take(k, percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode, root);
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|p| match p.split_once('=') {
            Some((k, v)) => !take(k.trim(), v.trim_matches('\'').to_owned()),
            None => true,
        })
        .collect();
    (kept.join(" "), mode, root)
}

/// Parses a connection string; the error says what is wrong with it.
pub fn parse(url: &str) -> Result<Target, String> {
    let (rest, mode, root) = split_tls(url);
    let mut cfg: tokio_postgres::Config = rest.parse().map_err(|e| format!("{e}"))?;
    let root_cert = root.filter(|r| r != "system").map(PathBuf::from);
    let rooted = root_cert.is_some();
    let (ssl, verify) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "allow" | "prefer" if rooted => (SslMode::Prefer, Verify::Chain),
        "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" if rooted => (SslMode::Require, Verify::Chain),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => {
            return Err(format!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ))
        }
    };
    cfg.ssl_mode(ssl);
    let tls = connector(verify, root_cert.as_deref())?;
    Ok(Target {
        cfg,
        verify,
        root_cert,
        tls,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let Some(path) = file else {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("sslrootcert {shown} holds no PEM certificate"));
    }
    let mut store = rustls::RootCertStore::empty();
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    }
    Ok(store)
}

fn connector(
    verify: Verify,
    root_cert: Option<&std::path::Path>,
) -> Result<MakeRustlsConnect, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match verify {
        Verify::Full => builder
            .with_root_certificates(roots(root_cert)?)
            .with_no_client_auth(),
        Verify::Chain | Verify::Nothing => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(root_cert)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    webpki,
                    provider,
                    check_chain: verify == Verify::Chain,
                }))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `verify-ca` and below: the chain is checked or not, the name never; the handshake's signatures
/// always are (the server must hold the key of the certificate it sent).
#[derive(Debug)]
struct Lenient {
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    check_chain: bool,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS failure behind a tokio-postgres error, if that is what it was: the handshake's own
/// words ("invalid peer certificate: UnknownIssuer"), which tokio-postgres's message leaves out.
pub fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    let mut handshake = e.to_string().contains("TLS");
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r.to_string());
            }
        }
        handshake |= s.to_string().contains("TLS");
        source = s.source();
    }
    handshake.then(|| e.to_string())
}

#[cfg(test)]
mod tests;
