//! A counting, fault-injecting HTTP/1.1 relay to put between wharf and a real registry.
//!
//! Every request that reaches it is recorded (method, target, headers) *before* anything is forwarded,
//! so counts are exact whenever the caller looks, with no log to flush and no timing to guess. Rules
//! turn chosen requests into faults: a canned status (500, 429), a response cut after N body bytes, or a
//! response held after N body bytes until the test opens a `Gate`.
//!
//! Rules can be limited to a window of the requests they match (`When`: skip the first N, then apply
//! M times) and to requests carrying one `Authorization` value, so a test can fail "the third PATCH",
//! "the first manifest PUT" or "requests with this (revoked) token" and let the retry through.
//!
//! One request per connection: the relay forwards each request with `Connection: close`, so the
//! registry (Go's net/http) answers with `Connection: close` and ends the body by closing, and wharf's
//! client does not reuse the connection. That keeps the relay a plain byte pipe after the response head.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_HEAD: usize = 64 * 1024;

/// A request as the relay saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent (`/v2/team/multi/manifests/v1`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// When the relay had read the request head (for gaps between a failure and its retry).
    pub at: Instant,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Every value of header `name`, in order (repeated header lines stay separate).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Lets held responses go on once the test opens it.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    /// Responses waiting at the gate now.
    waiting: usize,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    pub fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    /// How many responses are being held at the gate right now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().waiting
    }

    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.waiting += 1;
        self.changed.notify_all();
        while !s.open {
            s = self.changed.wait(s).unwrap();
        }
        s.waiting -= 1;
    }
}

#[derive(Clone)]
pub enum Fault {
    /// Answer with this status and a spec error body instead of forwarding.
    Status(u16),
    /// Forward, but close both connections after this many bytes of the response body.
    CutBody(u64),
    /// Forward this many bytes of the response body, then wait for the gate before the rest.
    Hold(u64, Arc<Gate>),
    /// Wait for the gate before forwarding the request at all (holds HEAD requests too).
    HoldRequest(Arc<Gate>),
    /// Forward a 200's body re-framed as `Transfer-Encoding: chunked` without `Content-Length`
    /// (the same bytes, and a proper last chunk), as some registries and CDNs answer; if given, hold
    /// it after this many body bytes until the gate opens.
    Chunked(Option<(u64, Arc<Gate>)>),
    /// Answer with `status`, a spec error body `{"errors":[{code, message}]}` and extra headers
    /// (a `WWW-Authenticate` challenge, a `Retry-After`), instead of forwarding.
    Error {
        status: u16,
        code: String,
        message: String,
        headers: Vec<(String, String)>,
    },
    /// Read the request head (and whatever body bytes came with it), then reset the connection
    /// (RST, `SO_LINGER` 0) without answering or forwarding: the client sees a reset mid-request.
    Reset,
    /// Answer `200 OK` with no body and these headers instead of forwarding: for `HEAD`, a registry
    /// that claims to have whatever it is asked about (a `Content-Length`, a `Docker-Content-Digest`
    /// of the test's choosing).
    Claim(Vec<(String, String)>),
}

impl Fault {
    /// `401 UNAUTHORIZED` with a bearer challenge for the token service at `realm`, as a registry with
    /// token auth answers a request without a (valid) token.
    pub fn bearer_challenge(realm: &str, service: &str) -> Fault {
        Fault::Error {
            status: 401,
            code: "UNAUTHORIZED".into(),
            message: "authentication required (injected by the test relay)".into(),
            headers: vec![(
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="{realm}",service="{service}""#),
            )],
        }
    }
}

/// Which of the requests a rule's method and path match it applies to.
#[derive(Clone, Debug, Default)]
pub struct When {
    /// Let this many matching requests through first.
    pub skip: usize,
    /// Then apply to this many (all that follow if `None`).
    pub times: Option<usize>,
    /// Match only requests whose `Authorization` header is exactly this.
    pub authorization: Option<String>,
}

impl When {
    /// Only the `n`th matching request (1-based).
    pub fn nth(n: usize) -> When {
        When {
            skip: n.saturating_sub(1),
            times: Some(1),
            authorization: None,
        }
    }
}

#[derive(Clone)]
struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    when: When,
    /// Requests this rule's method, path and authorization matched so far.
    matched: usize,
}

impl Rule {
    /// Counts the request if it matches, and says whether the fault applies to it.
    fn applies(&mut self, method: &str, path: &str, authorization: Option<&str>) -> bool {
        let matches = self.method.as_deref().is_none_or(|m| m == method)
            && path.contains(&self.path_contains)
            && self
                .when
                .authorization
                .as_deref()
                .is_none_or(|a| Some(a) == authorization);
        if !matches {
            return false;
        }
        self.matched += 1;
        self.matched > self.when.skip
            && self
                .when
                .times
                .is_none_or(|t| self.matched <= self.when.skip + t)
    }
}

struct Shared {
    upstream: SocketAddr,
    seen: Mutex<Vec<Seen>>,
    rules: Mutex<Vec<Rule>>,
    stop: AtomicBool,
}

pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            seen: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("relay-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = serve(&s, conn) {
                            // Peers hang up on purpose in these tests; only log for debugging.
                            eprintln!("relay: connection ended: {e}");
                        }
                    });
                }
            })
            .expect("spawn relay");
        Relay {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to requests whose path contains `path_contains` (and, if given, with `method`).
    /// The first matching rule wins.
    pub fn add_rule(&self, method: Option<&str>, path_contains: &str, fault: Fault) {
        self.add_rule_when(method, path_contains, When::default(), fault);
    }

    /// `add_rule` for only some of the matching requests: a window (`When::nth(3)`: the third), or
    /// those carrying one `Authorization` value. Requests outside the window go on to the next rule.
    pub fn add_rule_when(
        &self,
        method: Option<&str>,
        path_contains: &str,
        when: When,
        fault: Fault,
    ) {
        self.shared.rules.lock().unwrap().push(Rule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            fault,
            when,
            matched: 0,
        });
    }

    /// The fault heals: every request is forwarded untouched again.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests with `method` whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path().contains(path_contains))
            .count()
    }

    /// Every request seen, one per line, for failure messages.
    pub fn describe(&self) -> String {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for r in self.shared.rules.lock().unwrap().iter() {
            if let Fault::Hold(_, gate)
            | Fault::HoldRequest(gate)
            | Fault::Chunked(Some((_, gate))) = &r.fault
            {
                gate.open();
            }
        }
    }
}

/// Reads up to the end of an HTTP head; returns (head, bytes after it). `None` on a clean EOF first.
fn read_head(s: &mut TcpStream) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::other("HTTP head too large"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::other("EOF inside an HTTP head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn serve(shared: &Shared, mut client: TcpStream) -> io::Result<()> {
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some((head, mut body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers = parse_headers(&head);
    let at = Instant::now();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let content_length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let chunked_request =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let authorization = header("authorization").map(str::to_owned);
    let seen = Seen {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
        at,
    };

    // Decided once per request, before its body is read: windowed rules count what they match.
    let fault = shared.rules.lock().unwrap().iter_mut().find_map(|r| {
        r.applies(&method, &path, authorization.as_deref())
            .then(|| r.fault.clone())
    });

    if let Some(Fault::Reset) = fault {
        shared.seen.lock().unwrap().push(seen);
        reset(client);
        return Ok(());
    }
    if chunked_request {
        read_chunked_body(&mut client, &mut body)?;
    } else {
        while body.len() < content_length {
            let mut chunk = vec![0u8; content_length - body.len()];
            let n = client.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other("EOF inside a request body"));
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    shared.seen.lock().unwrap().push(seen);

    if let Some(Fault::Error {
        status,
        code,
        message,
        headers: extra,
    }) = &fault
    {
        let json =
            serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
                .to_string();
        let mut resp = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n",
            json.len()
        );
        for (k, v) in extra {
            resp += &format!("{k}: {v}\r\n");
        }
        resp += "\r\n";
        if method != "HEAD" {
            resp += &json;
        }
        client.write_all(resp.as_bytes())?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }

    if let Some(Fault::Claim(extra)) = &fault {
        let mut resp = "HTTP/1.1 200 OK\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\
             Connection: close\r\n"
            .to_owned();
        for (k, v) in extra {
            resp += &format!("{k}: {v}\r\n");
        }
        resp += "\r\n";
        client.write_all(resp.as_bytes())?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }

    if let Some(Fault::Status(code)) = fault {
        let (reason, error) = match code {
            429 => ("Too Many Requests", "TOOMANYREQUESTS"),
            500 => ("Internal Server Error", "UNKNOWN"),
            503 => ("Service Unavailable", "UNAVAILABLE"),
            _ => ("Injected", "UNKNOWN"),
        };
        let json = format!(
            r#"{{"errors":[{{"code":"{error}","message":"injected by the test relay","detail":null}}]}}"#
        );
        let body = if method == "HEAD" { "" } else { json.as_str() };
        let mut resp = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n",
            json.len()
        );
        if code == 429 {
            resp += "Retry-After: 1\r\n";
        }
        resp += "\r\n";
        resp += body;
        client.write_all(resp.as_bytes())?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }

    if let Some(Fault::HoldRequest(gate)) = &fault {
        gate.pass();
    }
    let mut upstream = TcpStream::connect(shared.upstream)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    // The same head with `Connection: close` instead of whatever the client asked for.
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("connection") {
            out += &format!("{k}: {v}\r\n");
        }
    }
    out += "Connection: close\r\n\r\n";
    upstream.write_all(out.as_bytes())?;
    upstream.write_all(&body)?;

    let Some((resp_head, first)) = read_head(&mut upstream)? else {
        return Err(io::Error::other("upstream closed without answering"));
    };
    let chunked = matches!(fault, Some(Fault::Chunked(_))) && resp_head.starts_with("HTTP/1.1 200");
    let resp_head = if chunked {
        chunked_head(&resp_head)
    } else {
        resp_head
    };
    client.write_all(resp_head.as_bytes())?;
    let (limit, gate) = match &fault {
        Some(Fault::CutBody(n)) => (Some(*n), None),
        Some(Fault::Hold(n, g)) | Some(Fault::Chunked(Some((n, g)))) => (Some(*n), Some(g.clone())),
        _ => (None, None),
    };
    let mut sent = 0u64;
    let mut released = false;
    let mut pending = first;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if pending.is_empty() {
            let n = upstream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
        }
        let mut take = pending.len();
        if let (Some(limit), false) = (limit, released) {
            if sent < limit {
                take = take.min((limit - sent) as usize);
            } else if let Some(g) = &gate {
                g.pass();
                released = true;
            } else {
                // CutBody: hang up on both sides mid-body.
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        if chunked {
            client.write_all(format!("{take:x}\r\n").as_bytes())?;
            client.write_all(&pending[..take])?;
            client.write_all(b"\r\n")?;
        } else {
            client.write_all(&pending[..take])?;
        }
        sent += take as u64;
        pending.drain(..take);
    }
    if chunked {
        client.write_all(b"0\r\n\r\n")?;
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// Reads a `Transfer-Encoding: chunked` request body to its end into `raw` (which holds what came
/// with the head), keeping the framing: the relay forwards the bytes as they were sent.
fn read_chunked_body(client: &mut TcpStream, raw: &mut Vec<u8>) -> io::Result<()> {
    let mut pos = 0;
    let mut chunk = [0u8; 64 * 1024];
    let mut more = |raw: &mut Vec<u8>| -> io::Result<()> {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("EOF inside a chunked request body"));
        }
        raw.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    loop {
        // A size line, then that many bytes and CRLF; size 0 ends the chunks, then trailers and CRLF.
        let line_end = loop {
            if let Some(i) = find(&raw[pos..], b"\r\n") {
                break pos + i;
            }
            more(raw)?;
        };
        let size_text = String::from_utf8_lossy(&raw[pos..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size line {size_text:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            loop {
                let Some(i) = find(&raw[pos..], b"\r\n") else {
                    more(raw)?;
                    continue;
                };
                pos += i + 2;
                if i == 0 {
                    raw.truncate(pos);
                    return Ok(());
                }
            }
        }
        while raw.len() < pos + size + 2 {
            more(raw)?;
        }
        pos += size + 2;
    }
}

/// Resets the connection: `SO_LINGER` with a zero timeout makes close send RST instead of FIN.
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor we own, with a properly sized `linger`.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

/// `head` (ending in an empty line) with its body framing replaced by `Transfer-Encoding: chunked`.
fn chunked_head(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let name = line.split(':').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("content-length")
            && !name.eq_ignore_ascii_case("transfer-encoding")
        {
            out += line;
            out += "\r\n";
        }
    }
    out + "Transfer-Encoding: chunked\r\n\r\n"
}

/// The relay itself, against a real registry without wharf: if this fails, the tooling is broken, not
/// wharf. Counts, a plain pass-through, a cut body, an injected 429 and a held response.
#[test]
fn relay_counts_and_injects_faults() {
    use crate::harness::DistRegistry;
    use crate::http::Api;
    use crate::mirror::{fetch, push_noise_blob, wait_until};

    const SIZE: u64 = 2 << 20;
    let registry = DistRegistry::start();
    let digest = push_noise_blob(&Api::new(registry.base()), "relay/check", 5, SIZE);
    let relay = Relay::start(registry.addr());
    let url = format!("http://{}/v2/relay/check/blobs/{digest}", relay.addr());

    let f = fetch(&url, &[]);
    assert!(
        f.is_complete(&digest, SIZE),
        "pass-through: {}",
        f.describe()
    );

    relay.add_rule(Some("GET"), "/blobs/", Fault::CutBody(1000));
    let f = fetch(&url, &[]);
    assert!(
        f.status == 200 && f.len == 1000 && f.content_length == Some(SIZE),
        "cut after 1000 body bytes: {}",
        f.describe()
    );

    relay.clear_rules();
    relay.add_rule(None, "/blobs/", Fault::Status(429));
    let f = fetch(&url, &[]);
    assert_eq!(f.status, 429, "{}", f.describe());

    relay.clear_rules();
    let gate = Gate::new();
    relay.add_rule(None, "/blobs/", Fault::Hold(4096, gate.clone()));
    let held = {
        let url = url.clone();
        std::thread::spawn(move || fetch(&url, &[]))
    };
    wait_until(
        || "the response never reached the gate".into(),
        || gate.waiting() == 1,
    );
    gate.open();
    let f = held.join().unwrap();
    assert!(
        f.is_complete(&digest, SIZE),
        "held, then released: {}",
        f.describe()
    );

    assert_eq!(relay.count("GET", &digest), 4, "{}", relay.describe());
}

/// The relay's windows, canned errors, resets and chunked request bodies, against a real registry
/// without wharf (as above: a failure here is the tooling's, not wharf's).
#[test]
fn relay_windows_errors_resets_and_chunked_request_bodies() {
    use crate::harness::DistRegistry;
    use crate::http::{path_of, raw, Api};
    use crate::oci::sha256_digest;

    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let api = Api::new(format!("http://{}", relay.addr()));

    // Only the second GET /v2/ is refused, with the code and message given.
    relay.add_rule_when(
        Some("GET"),
        "/v2/",
        When::nth(2),
        Fault::Error {
            status: 403,
            code: "DENIED".into(),
            message: "read-only for the test".into(),
            headers: vec![("X-Injected".into(), "yes".into())],
        },
    );
    api.get("/v2/").assert_status(200);
    let r = api.get("/v2/");
    r.assert_error(403, "DENIED");
    assert_eq!(r.header("X-Injected"), Some("yes"), "{}", r.describe());
    assert!(String::from_utf8_lossy(&r.body).contains("read-only for the test"));
    api.get("/v2/").assert_status(200);

    // A request carrying a given (revoked) token is challenged; others go through.
    relay.clear_rules();
    relay.add_rule_when(
        None,
        "/v2/",
        When {
            authorization: Some("Bearer revoked".into()),
            ..Default::default()
        },
        Fault::bearer_challenge("http://127.0.0.1:9/token", "svc"),
    );
    let r = api.request("GET", "/v2/", &[("Authorization", "Bearer revoked")], None);
    r.assert_status(401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="http://127.0.0.1:9/token",service="svc""#)
    );
    api.request("GET", "/v2/", &[("Authorization", "Bearer fresh")], None)
        .assert_status(200);

    // A reset instead of an answer, once.
    relay.clear_rules();
    relay.add_rule_when(Some("GET"), "/v2/", When::nth(1), Fault::Reset);
    let mut s = raw::connect(relay.addr());
    s.write_all(raw::head(relay.addr(), "GET", "/v2/", &[]).as_bytes())
        .unwrap();
    assert!(
        raw::read_response(&mut s, "GET /v2/ reset").is_none(),
        "a reset connection answers nothing"
    );
    api.get("/v2/").assert_status(200);

    // A chunked PATCH reaches the registry whole.
    relay.clear_rules();
    let location = path_of(&api.start_upload("relay/chunked"));
    let mut s = raw::connect(relay.addr());
    let head = raw::head(
        relay.addr(),
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let r = raw::read_response(&mut s, "chunked PATCH").expect("an answer to the chunked PATCH");
    r.assert_status(202);
    let digest = sha256_digest(b"hello world");
    let put = crate::http::with_query(r.need_header("Location"), &format!("digest={digest}"));
    api.request("PUT", &put, &[], None).assert_status(201);
    let (status, got, len, _) = Api::new(registry.base()).get_blob_hashed("relay/chunked", &digest);
    assert_eq!((status, got.as_str(), len), (200, digest.as_str(), 11));

    let seen = relay.seen();
    assert!(
        seen.windows(2).all(|w| w[0].at <= w[1].at),
        "requests are recorded in order"
    );
}
