//! A client for one upstream registry: TLS (rustls with the web PKI roots plus configured CAs), the
//! registry auth flows (anonymous, basic, and bearer tokens from the `WWW-Authenticate` realm, cached
//! until they expire), redirects to blob storage (followed without credentials), and timeouts.
//!
//! It answers with the upstream's response, whatever its status: deciding what a 404, 429 or 5xx means
//! is the mirror's job. Errors here are only "could not get an answer".

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashMap;
use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use wharf_model::config::UpstreamConfig;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ClientBody = BoxBody<Bytes, BoxError>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ClientBody>;

/// Redirect hops followed for one request (blob storage usually needs one).
const MAX_REDIRECTS: usize = 5;
/// Largest token response read.
const MAX_TOKEN_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {host} is misconfigured: {reason}")]
    Config { host: String, reason: String },
    /// What to do about it depends on who asked (the mirror, a push route): they add it.
    #[error("upstream {host} ({url}) could not be reached: {cause}")]
    Unreachable {
        host: String,
        url: String,
        cause: String,
    },
    #[error("cannot read what is to be sent to upstream {host} ({url}): {cause}")]
    Body {
        host: String,
        url: String,
        cause: String,
    },
    #[error("upstream {host} did not answer {url} within {secs} s (its timeout_secs)")]
    Timeout {
        host: String,
        url: String,
        secs: u64,
    },
    #[error(
        "upstream {host}: token service {realm} refused the credentials ({status}); check the \
         upstream's username and password_env/password_file"
    )]
    TokenDenied {
        host: String,
        realm: String,
        status: StatusCode,
    },
    #[error("upstream {host}: token service {realm} answered {status}")]
    Token {
        host: String,
        realm: String,
        status: String,
    },
}

/// A request body that can be sent again: after a 401 and a fresh token, or along a redirect.
#[async_trait::async_trait]
pub trait Payload: Send + Sync {
    /// Its length, sent as `Content-Length`.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The body from its first byte.
    async fn open(&self) -> Result<ClientBody, BoxError>;
}

#[async_trait::async_trait]
impl Payload for Bytes {
    fn len(&self) -> u64 {
        Bytes::len(self) as u64
    }
    async fn open(&self) -> Result<ClientBody, BoxError> {
        Ok(http_body_util::Full::new(self.clone())
            .map_err(|e| match e {})
            .boxed())
    }
}

struct Token {
    value: String,
    expires: Instant,
}

pub struct Upstream {
    /// The host as clients name it (`docker.io`).
    pub host: String,
    /// The path prefix that selects it.
    pub prefix: String,
    base: String,
    endpoint_host: String,
    client: HttpsClient,
    credentials: Option<(String, String)>,
    /// Bearer tokens by scope.
    tokens: DashMap<String, Arc<Token>>,
    pub timeout: Duration,
}

fn config_err(host: &str, reason: impl Into<String>) -> UpstreamError {
    UpstreamError::Config {
        host: host.to_owned(),
        reason: reason.into(),
    }
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let host = cfg.host.as_str();
        let base = cfg.endpoint.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| config_err(host, format!("endpoint {base:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if cfg.insecure => {}
            Some("http") => {
                return Err(config_err(
                    host,
                    format!("endpoint {base} is plain http; set insecure = true to allow it"),
                ))
            }
            _ => {
                return Err(config_err(
                    host,
                    format!("endpoint {base} must be http(s)://"),
                ))
            }
        }
        let endpoint_host = uri.host().unwrap_or_default().to_owned();

        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &cfg.ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| config_err(host, format!("ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(config_err(
                    host,
                    format!("ca_file {} holds no PEM certificate", path.display()),
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| config_err(host, format!("ca_file {}: {e}", path.display())))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(host, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(cfg.connect_timeout_secs)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);

        let password = match (&cfg.password_env, &cfg.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                config_err(host, format!("password_env names {var}, which is not set"))
            })?),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| config_err(host, format!("password_file {}: {e}", f.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let credentials = match (&cfg.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (None, None) => None,
            _ => {
                return Err(config_err(
                    host,
                    "set both username and password_env/password_file, or neither",
                ))
            }
        };
        Ok(Upstream {
            host: cfg.host.clone(),
            prefix: cfg.prefix.clone().unwrap_or_else(|| cfg.host.clone()),
            base,
            endpoint_host,
            client,
            credentials,
            tokens: DashMap::new(),
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (u, p) = self.credentials.as_ref()?;
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        HeaderValue::from_str(&format!("Basic {enc}")).ok()
    }

    async fn roundtrip(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        auth: Option<&HeaderValue>,
        payload: Option<&dyn Payload>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let body: ClientBody = match payload {
            None => Empty::new().map_err(|e| match e {}).boxed(),
            Some(p) => {
                req = req.header(http::header::CONTENT_LENGTH, p.len());
                p.open().await.map_err(|e| UpstreamError::Body {
                    host: self.host.clone(),
                    url: url.to_owned(),
                    cause: e.to_string(),
                })?
            }
        };
        let req = req
            .body(body)
            .map_err(|e| config_err(&self.host, format!("bad request URL {url}: {e}")))?;
        // The answer to a request with a body comes after the body: allow for sending it at 1 MiB/s.
        let limit = self.timeout + Duration::from_secs(payload.map_or(0, |p| p.len() >> 20));
        let sent = tokio::time::timeout(limit, self.client.request(req));
        match wharf_metrics::upstream_timed(&self.host, sent).await {
            Err(_) => Err(UpstreamError::Timeout {
                host: self.host.clone(),
                url: url.to_owned(),
                secs: limit.as_secs(),
            }),
            Ok(Err(e)) => Err(UpstreamError::Unreachable {
                host: self.host.clone(),
                url: url.to_owned(),
                cause: error_chain(&e),
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends `method path` (a `/v2/...` path with query) with `headers`, authenticating as the
    /// upstream asks and following redirects. `scope` is the token scope to present first (cached).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        scope: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_with(method, path, headers, scope, None).await
    }

    /// `send` with a body. `path` may also be an absolute URL on this upstream (an upload's
    /// `Location`).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        scope: &str,
        payload: Option<&dyn Payload>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut auth = match self.tokens.get(scope) {
            Some(t) if t.expires > Instant::now() => bearer(&t.value),
            _ => self.basic(),
        };
        let mut resp = self
            .roundtrip(&method, &url, headers, auth.as_ref(), payload)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(challenge) = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(Challenge::parse)
            {
                auth = match challenge {
                    Challenge::Bearer(params) => {
                        // The token we sent (if any) was refused: a new one, not the cached one.
                        self.tokens.remove(scope);
                        if let Some(s) = &params.scope {
                            self.tokens.remove(s.as_str());
                        }
                        let token = self.token(&params, scope).await?;
                        bearer(&token)
                    }
                    Challenge::Basic => self.basic(),
                    Challenge::Other => None,
                };
                if auth.is_some() {
                    resp = self
                        .roundtrip(&method, &url, headers, auth.as_ref(), payload)
                        .await?;
                }
            }
        }
        // Blob storage (S3, a CDN) is reached by redirect and must not see our credentials.
        let mut hops = 0;
        let mut current = url;
        while resp.status().is_redirection() && hops < MAX_REDIRECTS {
            let Some(next) = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(|l| resolve_location(&current, l))
            else {
                break;
            };
            hops += 1;
            resp = self
                .roundtrip(&method, &next, headers, None, payload)
                .await?;
            current = next;
        }
        Ok(resp)
    }

    async fn token(&self, p: &BearerParams, scope: &str) -> Result<String, UpstreamError> {
        let scope = p.scope.as_deref().unwrap_or(scope);
        if let Some(t) = self.tokens.get(scope) {
            if t.expires > Instant::now() {
                return Ok(t.value.clone());
            }
        }
        let realm_uri: Uri = p.realm.parse().map_err(|e| UpstreamError::Token {
            host: self.host.clone(),
            realm: p.realm.clone(),
            status: format!("an unusable realm URL ({e})"),
        })?;
        // Credentials go only where they cannot leak: an https realm, or the upstream's own host.
        let trusted = realm_uri.scheme_str() == Some("https")
            || realm_uri.host() == Some(self.endpoint_host.as_str());
        let auth = if trusted { self.basic() } else { None };
        let mut url = p.realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (k, v) in [("service", p.service.as_deref()), ("scope", Some(scope))] {
            if let Some(v) = v {
                url.push(sep);
                url.push_str(k);
                url.push('=');
                url.push_str(&query_escape(v));
                sep = '&';
            }
        }
        let resp = self
            .roundtrip(&Method::GET, &url, &HeaderMap::new(), auth.as_ref(), None)
            .await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_TOKEN_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(UpstreamError::TokenDenied {
                host: self.host.clone(),
                realm: p.realm.clone(),
                status,
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Token {
                host: self.host.clone(),
                realm: p.realm.clone(),
                status: status.to_string(),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| UpstreamError::Token {
            host: self.host.clone(),
            realm: p.realm.clone(),
            status: format!("200 with an unreadable body ({e})"),
        })?;
        let value = t
            .token
            .or(t.access_token)
            .ok_or_else(|| UpstreamError::Token {
                host: self.host.clone(),
                realm: p.realm.clone(),
                status: "200 without a token".into(),
            })?;
        // The spec's default lifetime is 60 s; renew a little early so a token never expires in flight.
        let ttl = t.expires_in.unwrap_or(60).max(10);
        self.tokens.insert(
            scope.to_owned(),
            Arc::new(Token {
                value: value.clone(),
                expires: Instant::now() + Duration::from_secs(ttl - ttl / 10),
            }),
        );
        Ok(value)
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// `Location` may be relative to the URL that answered.
fn resolve_location(current: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let Ok(u) = current.parse::<Uri>() else {
        return location.to_owned();
    };
    let origin = format!(
        "{}://{}",
        u.scheme_str().unwrap_or("https"),
        u.authority().map_or("", |a| a.as_str())
    );
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let path = u.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{location}")
    }
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub struct BearerParams {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Bearer(BearerParams),
    Basic,
    Other,
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` (RFC 6750 §3) or `Basic realm="…"`.
    pub fn parse(h: &str) -> Challenge {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Challenge::Basic;
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Challenge::Other;
        }
        let mut params = std::collections::HashMap::new();
        let mut s = rest.trim();
        while !s.is_empty() {
            let Some((k, after)) = s.split_once('=') else {
                break;
            };
            let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
            let (v, tail) = if let Some(q) = after.strip_prefix('"') {
                let end = q.find('"').unwrap_or(q.len());
                (q[..end].to_owned(), q.get(end + 1..).unwrap_or(""))
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            };
            params.insert(k, v);
            s = tail.trim_start_matches([',', ' ']);
        }
        match params.remove("realm") {
            Some(realm) => Challenge::Bearer(BearerParams {
                realm,
                service: params.remove("service"),
                scope: params.remove("scope"),
            }),
            None => Challenge::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Challenge::Bearer(BearerParams {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(Challenge::parse(r#"Basic realm="x""#), Challenge::Basic);
        assert_eq!(Challenge::parse("Negotiate"), Challenge::Other);
        let unquoted = Challenge::parse("bearer realm=http://h/t, service=s");
        assert!(
            matches!(unquoted, Challenge::Bearer(p) if p.realm == "http://h/t" && p.service.as_deref() == Some("s"))
        );
    }

    #[test]
    fn redirects_resolve() {
        assert_eq!(
            resolve_location("https://a/v2/x", "https://cdn/y"),
            "https://cdn/y"
        );
        assert_eq!(
            resolve_location("https://a:1/v2/x", "/blob/1"),
            "https://a:1/blob/1"
        );
        assert_eq!(resolve_location("http://a/v2/x/y", "z"), "http://a/v2/x/z");
    }

    #[test]
    fn refuses_plain_http_unless_insecure() {
        let mut cfg = UpstreamConfig::docker_hub();
        cfg.endpoint = "http://127.0.0.1:1".into();
        let err = Upstream::new(&cfg).err().unwrap();
        assert!(err.to_string().contains("insecure = true"), "{err}");
        cfg.insecure = true;
        assert!(Upstream::new(&cfg).is_ok());
    }

    /// A server answering each request with `answer(request headers, path)`; returns its address.
    async fn serve(
        answer: impl Fn(&HeaderMap, &str) -> Response<String> + Send + Sync + Clone + 'static,
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = answer(req.headers(), req.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn basic_auth_then_redirect_without_credentials() {
        let seen_auth_at_storage = Arc::new(std::sync::Mutex::new(None));
        let seen = seen_auth_at_storage.clone();
        let storage = serve(move |h, _| {
            *seen.lock().unwrap() = Some(h.contains_key(AUTHORIZATION));
            Response::new("blob bytes".to_owned())
        })
        .await;
        let registry = serve(move |h, _| {
            let mut r = Response::new(String::new());
            match h.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                Some(a) if a.starts_with("Basic ") => {
                    *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                    r.headers_mut().insert(
                        LOCATION,
                        HeaderValue::from_str(&format!("http://{storage}/data")).unwrap(),
                    );
                }
                _ => {
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"r\""),
                    );
                }
            }
            r
        })
        .await;
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "secret\n").unwrap();
        let mut cfg = UpstreamConfig::docker_hub();
        cfg.endpoint = format!("http://{registry}");
        cfg.insecure = true;
        cfg.username = Some("me".into());
        cfg.password_file = Some(secret.path().to_owned());
        let up = Upstream::new(&cfg).unwrap();
        let resp = up
            .send(
                Method::GET,
                "/v2/a/blobs/x",
                &HeaderMap::new(),
                "repository:a:pull",
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"blob bytes");
        assert_eq!(
            *seen_auth_at_storage.lock().unwrap(),
            Some(false),
            "blob storage must not see the registry's credentials"
        );
    }

    #[test]
    fn scope_escaping() {
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
