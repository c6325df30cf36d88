//! The identify phase and the rules: who is calling, and whether that caller may pull, push or delete a
//! repository. Off (everyone may do everything) until `[auth]` names a credential source.
//!
//! Callers prove who they are as registry clients do (the distribution "token authentication"
//! flow): a request without a usable credential gets `401` with `WWW-Authenticate: Bearer
//! realm="<wharf>/token",service="wharf",scope=…`; the client asks `/token` (Basic credentials on a
//! `GET`, or an OAuth2 password grant `POST`, as containerd does) and presents the short-lived token it
//! gets. `Basic` credentials and static tokens (the tokens file) are also accepted on every request.
//! Passwords are checked against bcrypt hashes (the htpasswd file) on the blocking pool, and a
//! verified pair is remembered briefly so a client that sends `Basic` each time costs one bcrypt.
//! A token from `/token` grants only the scope it was asked for, as far as the rules allow its
//! identity (`auth/scope.rs`): a pull token cannot push. Failed logins are counted per client address
//! and user name, and that pair is refused for a while past a limit (`auth/limit.rs`). No credential
//! is ever logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use wharf_model::clock::unix_now;
use wharf_model::config::{AuthConfig, Config};
use wharf_model::request::Caller;
use wharf_model::request::Operation;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError};
use wharf_protocol::respond::{json_response, RequestBody};

pub mod limit;
pub mod rules;

pub mod token;

use limit::Failures;
use token::Signer;
use wharf_model::scope::{Access, Action, Scope};

/// The `service` wharf's challenges and tokens name.
pub const SERVICE: &str = "wharf";
/// A verified `Basic` pair is trusted this long without another bcrypt.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Largest token request body read (an OAuth2 form).
const MAX_FORM: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth.{key} = {path}: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "wharf would listen on {listen} ({key}) with no client authentication: anyone who reaches \
         that address could {could}; set [auth] htpasswd_file or tokens_file (see \
         examples/wharf.toml), set {key} to a loopback address (\"127.0.0.1:{port}\"), or set [auth] \
         allow_anonymous_remote = true to allow it anyway",
        port = listen.port()
    )]
    Exposed {
        /// The config key of the listener.
        key: &'static str,
        listen: std::net::SocketAddr,
        /// What anyone could do there.
        could: &'static str,
    },
}

pub struct Auth {
    cfg: AuthConfig,
    /// user → bcrypt hash
    users: HashMap<String, String>,
    /// static token → identity
    tokens: HashMap<String, String>,
    signer: Signer,
    /// Whether wharf listens with TLS: the realm it names is `https://` then.
    secure: bool,
    failures: Failures,
    /// sha256(user NUL password) → (identity, when verified)
    verified: DashMap<[u8; 32], (String, Instant)>,
}

/// Refuses a listen address others can reach when nothing says who they are (the first of
/// [`exposures`]).
pub fn check_exposure(cfg: &Config) -> Result<(), AuthError> {
    exposures(cfg).into_iter().next().map_or(Ok(()), Err)
}

/// Each listener others could reach with no client authentication: the registry's, and the metrics
/// listener's, whose status page would show them every repository, tag and digest (with `[auth]`,
/// it shows each caller what that caller may pull; `/metrics` names no repository).
pub fn exposures(cfg: &Config) -> Vec<AuthError> {
    if cfg.auth.enabled() || cfg.auth.allow_anonymous_remote {
        return Vec::new();
    }
    let listeners = [
        (
            "server.listen",
            Some(cfg.server.listen),
            "push, delete and pull",
        ),
        (
            "metrics.listen",
            cfg.metrics.listen,
            "read the status page (/ui): the name, tags, digests and sizes of every repository",
        ),
    ];
    listeners
        .into_iter()
        .filter_map(|(key, listen, could)| {
            let listen = listen.filter(|a| !a.ip().is_loopback())?;
            Some(AuthError::Exposed { key, listen, could })
        })
        .collect()
}

fn read(key: &'static str, path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|e| AuthError::File {
        key,
        path: path.display().to_string(),
        reason: format!("{e}; point it at a readable file"),
    })
}

/// `user:hash` lines; only bcrypt (`$2a$`, `$2b$`, `$2y$`), as distribution and nginx's `-B`.
pub fn parse_htpasswd(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {} is not user:hash", n + 1))?;
        if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
            return Err(format!(
                "line {} (user {user}) is not a bcrypt hash; make it with `htpasswd -B`",
                n + 1
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// `<token> <identity>` lines.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, String>, String> {
    let mut tokens = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(id), None) if t.len() >= 16 => {
                tokens.insert(t.to_owned(), id.to_owned());
            }
            (Some(_), Some(_), None) => {
                return Err(format!(
                    "line {}: a token must be at least 16 characters (make one with `openssl rand \
                     -hex 32`)",
                    n + 1
                ))
            }
            _ => return Err(format!("line {} is not `<token> <identity>`", n + 1)),
        }
    }
    Ok(tokens)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize().into()
}

impl Auth {
    /// The configured authentication, `None` when it is off.
    pub fn load(cfg: &AuthConfig) -> Result<Option<Auth>, AuthError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let users = match &cfg.htpasswd_file {
            Some(p) => {
                parse_htpasswd(&read("htpasswd_file", p)?).map_err(|reason| AuthError::File {
                    key: "htpasswd_file",
                    path: p.display().to_string(),
                    reason,
                })?
            }
            None => HashMap::new(),
        };
        let tokens = match &cfg.tokens_file {
            Some(p) => {
                parse_tokens(&read("tokens_file", p)?).map_err(|reason| AuthError::File {
                    key: "tokens_file",
                    path: p.display().to_string(),
                    reason,
                })?
            }
            None => HashMap::new(),
        };
        Ok(Some(Auth {
            cfg: cfg.clone(),
            users,
            tokens,
            signer: Signer::random(),
            secure: false,
            failures: Failures::new(
                cfg.max_failed_logins,
                Duration::from_secs(cfg.failed_login_window_secs.max(1)),
            ),
            verified: DashMap::new(),
        }))
    }

    /// The listener speaks TLS: challenges name an `https://` realm.
    pub fn secure(mut self, secure: bool) -> Auth {
        self.secure = secure;
        self
    }

    /// The identify phase: the caller a request's credential proves, or a refusal (a wrong
    /// credential, or too many wrong ones for that user, or tokens, from this address). A valid token
    /// always passes: it cannot be guessed.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        addr: Option<IpAddr>,
    ) -> Result<Caller, RegistryError> {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Ok(Caller::default());
        };
        let (scheme, cred) = value.split_once(' ').unwrap_or((value, ""));
        let cred = cred.trim();
        let wrong = || {
            RegistryError::new(
                ErrorCode::Unauthorized,
                "the credential sent is wrong or has expired: log in again (`docker login`, \
                 `podman login`, skopeo --creds) with a user from wharf's htpasswd file or a \
                 token from its tokens file",
            )
        };
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some((user, pass)) = decode_basic(cred) {
                return match self.login(addr, &user, &pass).await? {
                    Some(identity) => Ok(Caller {
                        identity: Some(identity),
                        credentialed: true,
                        access: None,
                    }),
                    None => Err(wrong()),
                };
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(id) = self.tokens.get(cred) {
                return Ok(Caller {
                    identity: Some(id.clone()),
                    credentialed: true,
                    access: None,
                });
            }
            if let Some(claims) = self.signer.verify(cred, unix_now()) {
                return Ok(Caller {
                    identity: claims.identity,
                    credentialed: true,
                    access: Some(Arc::new(claims.access)),
                });
            }
        }
        // A forged or expired token (or a credential of no known form) names no user: it counts
        // for the address.
        self.not_locked_out(addr, None)?;
        self.failed(addr, None);
        Err(wrong())
    }

    /// The rules' verdict for `caller` doing `op` on `repo` (`None`: the API root, `/v2/`): the
    /// routing phase's name, `<registry>/<repository>` for the mirror's. A challenge names `scope`,
    /// the repository as the client wrote it, which is what clients ask a token for. A token from
    /// `/token` must also grant the operation on one of the two names (the API root needs none).
    pub fn authorize<B>(
        &self,
        caller: &Caller,
        op: Option<Operation>,
        repo: Option<&str>,
        scope: Option<&str>,
        req: &Request<B>,
    ) -> Result<(), RegistryError> {
        let (Some(op), Some(repo)) = (op, repo) else {
            // The API root answers who may use wharf at all: `docker login` checks credentials here.
            return if caller.credentialed {
                Ok(())
            } else {
                Err(self.challenge(req, None, "log in to use this registry"))
            };
        };
        let want = match op {
            Operation::Pull | Operation::List => rules::Want::Pull,
            Operation::Push | Operation::Delete => rules::Want::Push,
        };
        let client_name = scope.unwrap_or(repo);
        match rules::decide(&self.cfg, repo, want, caller.identity.as_deref()) {
            rules::Verdict::Allow => match &caller.access {
                Some(access) if !access.covers(&[client_name, repo], Action::of(op)) => {
                    Err(self.insufficient_scope(req, access, client_name, repo, op))
                }
                _ => Ok(()),
            },
            rules::Verdict::NeedIdentity(why) => {
                Err(self.challenge(req, Some((client_name, op)), &why))
            }
            rules::Verdict::Deny(why) => Err(RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "{} may not {} {repo}: {why}",
                    caller.identity.as_deref().unwrap_or("anonymous"),
                    op.as_str()
                ),
            )),
        }
    }

    /// Whether the rules let `identity` (`None`: anonymous) do `action` on `repo`: what a token
    /// may be granted. Deletes are judged as pushes, as everywhere.
    pub fn allows(&self, identity: Option<&str>, repo: &str, action: Action) -> bool {
        let want = match action {
            Action::Pull => rules::Want::Pull,
            Action::Push | Action::Delete => rules::Want::Push,
        };
        rules::decide(&self.cfg, repo, want, identity) == rules::Verdict::Allow
    }

    /// Whether `identity` (`None`: anonymous) may pull `repo` by the rules: what the status page
    /// shows that caller. `repo` is the routing phase's name (`<registry>/<repository>` for the
    /// mirror's).
    pub fn may_pull(&self, identity: Option<&str>, repo: &str) -> bool {
        self.allows(identity, repo, Action::Pull)
    }

    /// `401` with the challenge that sends the client to `/token` (for `scope`: the repository as
    /// the client named it, and what the request does there).
    fn challenge<B>(
        &self,
        req: &Request<B>,
        scope: Option<(&str, Operation)>,
        why: &str,
    ) -> RegistryError {
        let host = request_host(req);
        let mut e = RegistryError::new(
            ErrorCode::Unauthorized,
            format!(
                "authentication required: {why} (log in to {host} first: docker login, podman \
                 login, skopeo --creds, ctr --user)"
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&self.challenge_header(req, scope, None)) {
            e.headers.push((WWW_AUTHENTICATE, v));
        }
        e
    }

    /// A token whose grant does not cover the request: `401` with a challenge for the scope it
    /// needs, and `error="insufficient_scope"`, as distribution answers; clients ask `/token` again
    /// for that scope (and the rules, already passed, will grant it).
    fn insufficient_scope<B>(
        &self,
        req: &Request<B>,
        access: &Access,
        client_name: &str,
        repo: &str,
        op: Operation,
    ) -> RegistryError {
        let actions = challenge_actions(op);
        let names: &[&str] = if client_name == repo {
            &[client_name]
        } else {
            &[client_name, repo]
        };
        let mut e = RegistryError::new(
            ErrorCode::Unauthorized,
            format!(
                "the token sent grants {}, not {} on {client_name}: ask wharf's /token for scope \
                 repository:{client_name}:{actions} (docker, podman, skopeo and ctr do on this \
                 answer); a token asked for pull cannot push",
                access.describe(names),
                Action::of(op).as_str(),
            ),
        );
        let header =
            self.challenge_header(req, Some((client_name, op)), Some("insufficient_scope"));
        if let Ok(v) = HeaderValue::from_str(&header) {
            e.headers.push((WWW_AUTHENTICATE, v));
        }
        e
    }

    fn challenge_header<B>(
        &self,
        req: &Request<B>,
        scope: Option<(&str, Operation)>,
        error: Option<&str>,
    ) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        let host = request_host(req);
        let mut challenge =
            format!("Bearer realm=\"{scheme}://{host}/token\",service=\"{SERVICE}\"");
        if let Some((repo, op)) = scope {
            let actions = challenge_actions(op);
            challenge.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        challenge
    }

    /// `GET|POST /token`, first half: who the credentials prove (`None`: no credentials, an
    /// anonymous token) and the scopes asked for (`scope` query parameters, and the form's `scope`).
    /// The caller decides what to grant (`Registry::grant`), then [`Auth::issue`].
    pub async fn token_request<B: RequestBody>(
        &self,
        req: Request<B>,
        addr: Option<IpAddr>,
    ) -> Result<TokenRequest, RegistryError> {
        let oauth = req.method() == Method::POST;
        let mut scopes: Vec<String> = query_values(req.uri().query(), "scope");
        let (user, pass) = if oauth {
            let form = read_form(req).await?;
            scopes.extend(form.get("scope").cloned());
            match form.get("grant_type").map(String::as_str) {
                Some("password") => (form.get("username").cloned(), form.get("password").cloned()),
                other => {
                    return Err(RegistryError::new(
                        ErrorCode::Unsupported,
                        format!(
                            "grant_type {other:?} is not supported by wharf's token endpoint; use \
                             grant_type=password, or GET with Basic credentials"
                        ),
                    )
                    .with_status(StatusCode::BAD_REQUEST))
                }
            }
        } else {
            match req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            {
                Some(v) => match v.split_once(' ') {
                    Some((s, c)) if s.eq_ignore_ascii_case("basic") => match decode_basic(c.trim())
                    {
                        Some((u, p)) => (Some(u), Some(p)),
                        None => (Some(String::new()), Some(String::new())),
                    },
                    _ => (Some(String::new()), Some(String::new())),
                },
                None => (None, None),
            }
        };
        let identity = match (user, pass) {
            (Some(u), Some(p)) => match self.login(addr, &u, &p).await? {
                Some(id) => Some(id),
                None => {
                    return Err(RegistryError::new(
                        ErrorCode::Unauthorized,
                        "wrong username or password (users are in wharf's htpasswd file; a token \
                         from its tokens file works as the password)",
                    ));
                }
            },
            _ => None,
        };
        Ok(TokenRequest {
            identity,
            scopes: wharf_model::scope::parse_scopes(scopes.iter().map(String::as_str)),
        })
    }

    /// `GET|POST /token`, second half: a short-lived token for `identity` granting `access`.
    pub fn issue(&self, identity: Option<&str>, access: &Access) -> Response<Body> {
        let ttl = self.cfg.token_ttl_secs.max(10);
        let token = self.signer.sign(identity, access, unix_now() + ttl);
        // `issued_at` is optional, and clients parse it as RFC 3339 only: left out.
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": ttl,
        });
        json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        )
    }

    /// The identity `user:pass` proves (`None`: wrong, and counted), or a refusal when that user has
    /// failed too often from `addr` lately. A static token as the password passes whatever the count
    /// (it cannot be guessed); a password is not even checked while its user is held, so guessing
    /// learns nothing then.
    async fn login(
        &self,
        addr: Option<IpAddr>,
        user: &str,
        pass: &str,
    ) -> Result<Option<String>, RegistryError> {
        if let Some(id) = self.tokens.get(pass) {
            return Ok(Some(id.clone()));
        }
        self.not_locked_out(addr, Some(user))?;
        let found = self.verify_password(user, pass).await;
        if found.is_none() {
            self.failed(addr, Some(user));
        }
        Ok(found)
    }

    /// The identity `user:pass` proves by the user's bcrypt hash.
    async fn verify_password(&self, user: &str, pass: &str) -> Option<String> {
        let hash = self.users.get(user)?.clone();
        let key = sha256(&[user.as_bytes(), pass.as_bytes(), hash.as_bytes()]);
        if let Some(v) = self.verified.get(&key) {
            if v.1.elapsed() < VERIFIED_FOR {
                return Some(v.0.clone());
            }
        }
        // bcrypt takes tens of milliseconds by design: never on the runtime's threads.
        let pass = pass.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok {
            return None;
        }
        if self.verified.len() > 10_000 {
            self.verified.clear();
        }
        self.verified.insert(key, (user.to_owned(), Instant::now()));
        Some(user.to_owned())
    }

    /// A refusal while `user` (`None`: tokens) from `addr` is over the failed-login limit.
    fn not_locked_out(
        &self,
        addr: Option<IpAddr>,
        user: Option<&str>,
    ) -> Result<(), RegistryError> {
        let Some(ip) = addr else { return Ok(()) };
        let Some(wait) = self.failures.locked(ip, user) else {
            return Ok(());
        };
        let secs = wait.as_secs().max(1);
        let (what, fix) = match user {
            Some(_) => (
                "for this user",
                "other users, and tokens from /token, are not held",
            ),
            None => (
                "with tokens that are forged or expired",
                "ask /token for a new token",
            ),
        };
        let mut e = RegistryError::new(
            ErrorCode::TooManyRequests,
            format!(
                "too many failed logins from {ip} {what} (auth.max_failed_logins = {} within \
                 auth.failed_login_window_secs = {}); try again in {secs} s with the right \
                 credentials ({fix})",
                self.cfg.max_failed_logins, self.cfg.failed_login_window_secs
            ),
        );
        e.headers.push((RETRY_AFTER, HeaderValue::from(secs)));
        Err(e)
    }

    fn failed(&self, addr: Option<IpAddr>, user: Option<&str>) {
        if let Some(ip) = addr {
            let count = self.failures.record(ip, user);
            let kind = if user.is_some() { "password" } else { "token" };
            tracing::info!(client = %ip, failures = count, kind, "failed login");
        }
    }
}

/// What a token request asks for: see [`Auth::token_request`].
pub struct TokenRequest {
    pub identity: Option<String>,
    pub scopes: Vec<Scope>,
}

/// The actions a challenge asks a token for: what distribution's registry asks for the same request.
fn challenge_actions(op: Operation) -> &'static str {
    match op {
        Operation::Pull | Operation::List => "pull",
        Operation::Push => "pull,push",
        Operation::Delete => "delete",
    }
}

/// The host the client addressed, for the realm it is sent to.
fn request_host<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        // HTTP/2 carries the host as the URI's authority.
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
}

/// Every value of query parameter `key` (a token request repeats `scope`).
fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| form_decode(v))
        })
        .collect()
}

fn decode_basic(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

async fn read_form<B: RequestBody>(
    req: Request<B>,
) -> Result<HashMap<String, String>, RegistryError> {
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|_| {
            RegistryError::new(
                ErrorCode::Unsupported,
                format!("a token request body must be a form of at most {MAX_FORM} bytes"),
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?
        .to_bytes();
    if !is_form {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            "a token POST must be application/x-www-form-urlencoded (OAuth2 password grant)",
        )
        .with_status(StatusCode::BAD_REQUEST));
    }
    Ok(String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((form_decode(k), form_decode(v)))
        })
        .collect())
}

fn form_decode(s: &str) -> String {
    wharf_protocol::route::percent_decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests;
