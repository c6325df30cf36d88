//! The token service of a token-auth registry, served by the test on 127.0.0.1 (the Docker token
//! protocol: `GET <realm>?service=..&scope=..` with basic credentials → `{"token", "expires_in"}`).
//!
//! It checks the credentials, issues an ES256 JWT that distribution 2.8 accepts (`iss`, `aud` =
//! service, `exp`/`nbf`, `access` for every requested scope, the signing certificate in `x5c`), and
//! records every request so tests can see who asked, with what, how often.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::pki::TokenSigner;

pub const SERVICE: &str = "wharf-e2e-registry";
pub const ISSUER: &str = "wharf-e2e-token-issuer";
/// What the token endpoint says tokens live for; wharf may cache them that long.
pub const EXPIRES_IN: u64 = 600;

/// One request to the token endpoint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub service: Option<String>,
    pub scopes: Vec<String>,
    /// `user:password` from a `Basic` Authorization header, if any.
    pub basic: Option<String>,
    /// The status the endpoint answered.
    pub status: u16,
}

struct Shared {
    signer: TokenSigner,
    user: String,
    password: String,
    log: Mutex<Vec<TokenRequest>>,
    stop: AtomicBool,
    serial: AtomicU64,
}

pub struct TokenServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Serves `/token` on a free loopback port for one user.
    pub fn start(signer: TokenSigner, user: &str, password: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            signer,
            user: user.to_owned(),
            password: password.to_owned(),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            serial: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || handle(&s, conn));
            }
        });
        TokenServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The realm URL to configure in the registry.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The realm under another name for the same address (`localhost` instead of `127.0.0.1`).
    pub fn realm_named(&self, host: &str) -> String {
        format!("http://{host}:{}/token", self.addr.port())
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets what it saw (after the test's own pushes, say).
    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Percent-decoding for query values (`repository%3Ateam%2Fmulti%3Apull`, `+` as space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `repository:team/multi:pull,push` → an `access` claim entry.
fn access_entry(scope: &str) -> Option<Value> {
    let mut parts = scope.splitn(3, ':');
    let (kind, rest) = (parts.next()?, parts.collect::<Vec<_>>());
    // Names may hold a port (`host:5000/x`): the actions are after the last colon.
    let joined = rest.join(":");
    let (name, actions) = joined.rsplit_once(':')?;
    Some(json!({
        "type": kind,
        "name": name,
        "actions": actions.split(',').filter(|a| !a.is_empty()).collect::<Vec<_>>(),
    }))
}

fn handle(shared: &Shared, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut service = None;
    let mut scopes = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "service" => service = Some(unescape(v)),
            // Several scopes come as repeated parameters, or space-separated in one.
            "scope" => scopes.extend(unescape(v).split(' ').map(str::to_owned)),
            _ => {}
        }
    }
    let basic = header("authorization").and_then(|a| {
        let enc = a
            .strip_prefix("Basic ")
            .or_else(|| a.strip_prefix("basic "))?;
        String::from_utf8(STANDARD.decode(enc.trim()).ok()?).ok()
    });
    let authorized = basic.as_deref() == Some(&format!("{}:{}", shared.user, shared.password));
    let (status, body) = if path != "/token" {
        (404, json!({"details": "no such endpoint"}))
    } else if !authorized {
        (401, json!({"details": "wrong or missing credentials"}))
    } else {
        let now = now();
        let claims = json!({
            "iss": ISSUER,
            "sub": shared.user,
            "aud": service.clone().unwrap_or_default(),
            "exp": now + EXPIRES_IN,
            "nbf": now - 60,
            "iat": now,
            "jti": format!("wharf-e2e-{}", shared.serial.fetch_add(1, Ordering::SeqCst)),
            "access": scopes.iter().filter_map(|s| access_entry(s)).collect::<Vec<_>>(),
        });
        let token = shared.signer.sign(&claims);
        (
            200,
            json!({ "token": token, "access_token": token, "expires_in": EXPIRES_IN }),
        )
    };
    shared.log.lock().unwrap().push(TokenRequest {
        service,
        scopes,
        basic,
        status,
    });
    let body = serde_json::to_vec(&body).unwrap();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        resp += "WWW-Authenticate: Basic realm=\"wharf-e2e\"\r\n";
    }
    resp += "\r\n";
    let _ = conn.write_all(resp.as_bytes());
    let _ = conn.write_all(&body);
}

#[test]
fn scopes_become_access_claims() {
    assert_eq!(
        access_entry("repository:team/multi:pull,push").unwrap(),
        json!({"type": "repository", "name": "team/multi", "actions": ["pull", "push"]})
    );
    assert_eq!(
        access_entry("repository:127.0.0.1:5000/x:pull").unwrap()["name"],
        "127.0.0.1:5000/x"
    );
    assert_eq!(
        unescape("repository%3Ateam%2Fmulti%3Apull"),
        "repository:team/multi:pull"
    );
}
