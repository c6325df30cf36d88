//! The replicas of one cache (`[cluster]`): who this one is to the others, how a request for an
//! upload session another replica owns reaches it, and how the peer listener tells a replica from
//! anyone else.
//!
//! An upload session's bytes are spooled on the replica that started it (its local `data_dir`, then
//! uploaded to the bucket at commit), and its record names that replica (`UploadRecord::owner`). A
//! `PATCH`, `PUT`, `GET` or `DELETE` of the session that a load balancer sends elsewhere is forwarded
//! to the owner's peer listener, body and answer streamed, with the client's own headers (so the
//! owner authenticates the client as usual). Forwarding rather than a spool every replica can append
//! to: an object store has no append, and a chunk copied part by part costs a bucket round trip per
//! `PATCH` where forwarding costs one loopback hop.
//!
//! Every request on the peer listener carries `Wharf-Peer: <unix seconds>.<hex HMAC-SHA256>` of its
//! time, method and path under the shared secret; the listener refuses anything unsigned, stale (more
//! than `SKEW_SECS` off) or forged, and serves upload sessions only. The secret itself never travels.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

use wharf_model::clock::unix_now;
use wharf_model::config::Config;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError};

/// The header a peer request is signed in.
pub const PEER_HEADER: &str = "wharf-peer";
/// How far a signature's time may be from this replica's clock.
pub const SKEW_SECS: u64 = 30;
/// The shortest secret accepted.
const SECRET_MIN: usize = 32;

/// Marks a request that came in on the peer listener: it is served here, never forwarded again (a
/// record naming a replica that forwards back would otherwise loop).
#[derive(Debug, Clone, Copy)]
pub struct FromPeer;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Config(String),
}

pub struct Cluster {
    /// How the others reach this replica: what its session records name.
    advertise: String,
    secret: Vec<u8>,
    client: Client<HttpConnector, Forwarded>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Forwarded = UnsyncBoxBody<Bytes, BoxError>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// `None` when `[cluster]` is not configured; a message naming the key to fix when it is
    /// configured wrong.
    pub fn from_config(cfg: &Config) -> Result<Option<Cluster>, ClusterError> {
        let c = &cfg.cluster;
        if !c.is_on() {
            return Ok(None);
        }
        let bad = |m: &str| ClusterError::Config(m.to_owned());
        let advertise = c.advertise.clone().ok_or_else(|| {
            bad("set cluster.advertise (host:port the other replicas reach this one at)")
        })?;
        if c.peer_listen.is_none() {
            return Err(bad(
                "set cluster.peer_listen (the address the peer listener binds)",
            ));
        }
        if cfg.metadata.backend != wharf_model::config::MetadataBackend::Postgres
            || cfg.storage.backend != wharf_model::config::StorageBackend::S3
        {
            return Err(bad(
                "replicas share one cache only on the shared backends: set [storage] backend = \"s3\" \
                 and [metadata] backend = \"postgres\", or remove [cluster]",
            ));
        }
        let secret = match (&c.secret_file, &c.secret_env) {
            (Some(f), None) => std::fs::read(f).map_err(|e| {
                ClusterError::Config(format!("cluster.secret_file {}: {e}", f.display()))
            })?,
            (None, Some(v)) => std::env::var(v)
                .map_err(|_| {
                    ClusterError::Config(format!("cluster.secret_env names {v}, which is not set"))
                })?
                .into_bytes(),
            (Some(_), Some(_)) => return Err(bad("set one of cluster.secret_file and secret_env")),
            (None, None) => return Err(bad(
                "set cluster.secret_file or cluster.secret_env (the secret every replica shares)",
            )),
        };
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < SECRET_MIN {
            return Err(ClusterError::Config(format!(
                "the cluster secret is {} bytes; use at least {SECRET_MIN} (openssl rand -hex 32)",
                secret.len()
            )));
        }
        Ok(Some(Cluster::new(advertise, &secret)))
    }

    pub fn new(advertise: String, secret: &[u8]) -> Cluster {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        Cluster {
            advertise,
            secret: secret.to_vec(),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(http),
        }
    }

    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    fn mac(&self, at: u64, method: &str, path: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{at}\n{method}\n{path}").as_bytes());
        mac
    }

    /// The `Wharf-Peer` value for a request made now.
    pub fn sign(&self, method: &str, path_and_query: &str) -> String {
        let at = unix_now();
        let tag = self.mac(at, method, path_and_query).finalize().into_bytes();
        format!("{at}.{}", hex::encode(tag))
    }

    /// Whether a request on the peer listener comes from a replica: signed, recently, for this very
    /// method and path. The refusal says which, for the log; the caller learns nothing more.
    pub fn verify<B>(&self, req: &Request<B>) -> Result<(), &'static str> {
        let value = req
            .headers()
            .get(PEER_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("unsigned")?;
        let (at, tag) = value.split_once('.').ok_or("malformed signature")?;
        let at: u64 = at.parse().map_err(|_| "malformed signature")?;
        if unix_now().abs_diff(at) > SKEW_SECS {
            return Err("stale signature (or clocks apart)");
        }
        let tag = hex::decode(tag).map_err(|_| "malformed signature")?;
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // Constant time: a forger learns nothing from how long a refusal takes.
        self.mac(at, req.method().as_str(), path)
            .verify_slice(&tag)
            .map_err(|_| "bad signature")
    }

    /// Sends `req` to the replica at `owner` and answers what it answers, both bodies streamed.
    pub async fn forward<B>(
        &self,
        owner: &str,
        req: Request<B>,
    ) -> Result<Response<Body>, RegistryError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let uri: http::Uri = format!("http://{owner}{path}")
            .parse()
            .map_err(|e| unreachable_owner(owner, &format!("{e}")))?;
        let mut out = Request::builder().method(parts.method.clone()).uri(uri);
        for (k, v) in parts.headers.iter() {
            if !is_hop_by_hop(k.as_str()) && k != http::header::HOST && k.as_str() != PEER_HEADER {
                out = out.header(k, v);
            }
        }
        let signature = self.sign(parts.method.as_str(), &path);
        out = out.header(
            PEER_HEADER,
            HeaderValue::from_str(&signature).expect("digits, a dot and hex"),
        );
        let out = out
            .body(body.map_err(Into::into).boxed_unsync())
            .map_err(|e| unreachable_owner(owner, &format!("{e}")))?;
        let answer = self
            .client
            .request(out)
            .await
            .map_err(|e| unreachable_owner(owner, &format!("{e}")))?;
        let (parts, body) = answer.into_parts();
        let len = hyper::body::Body::size_hint(&body).exact();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let sent = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(data) => tx.send(Ok(data)).await,
                        Err(_) => continue,
                    },
                    Err(e) => tx.send(Err(std::io::Error::other(e))).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(Body::channel(rx, len));
        *resp.status_mut() = parts.status;
        for (k, v) in parts.headers.iter() {
            if !is_hop_by_hop(k.as_str()) {
                resp.headers_mut().append(k, v.clone());
            }
        }
        Ok(resp)
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

fn unreachable_owner(owner: &str, detail: &str) -> RegistryError {
    tracing::warn!(peer = %owner, error = %detail, "cannot reach the replica that owns an upload session");
    RegistryError::new(
        ErrorCode::Unavailable,
        format!(
            "this upload session is held by the wharf replica at {owner}, which cannot be reached \
             now ({detail}); retry shortly, or start the upload again"
        ),
    )
    .with_status(StatusCode::SERVICE_UNAVAILABLE)
    .with_header(http::header::RETRY_AFTER, 5)
}

#[cfg(test)]
mod tests;
