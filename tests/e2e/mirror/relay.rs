//! A counting, fault-injecting HTTP/1.1 relay to put between wharf and a real registry.
//!
//! Every request that reaches it is recorded (method, target, headers) *before* anything is forwarded,
//! so counts are exact whenever the caller looks, with no log to flush and no timing to guess. Rules
//! turn chosen requests into faults: a canned status (500, 429), a response cut after N body bytes, or a
//! response held after N body bytes until the test opens a `Gate`.
//!
//! One request per connection: the relay forwards each request with `Connection: close`, so the
//! registry (Go's net/http) answers with `Connection: close` and ends the body by closing, and wharf's
//! client does not reuse the connection. That keeps the relay a plain byte pipe after the response head.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_HEAD: usize = 64 * 1024;

/// A request as the relay saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent (`/v2/team/multi/manifests/v1`).
    pub target: String,
    pub headers: Vec<(String, String)>,
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
}

#[derive(Clone)]
struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
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
        self.shared.rules.lock().unwrap().push(Rule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            fault,
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
    let content_length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while body.len() < content_length {
        let mut chunk = vec![0u8; content_length - body.len()];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("EOF inside a request body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
    };
    let path = seen.path().to_owned();
    shared.seen.lock().unwrap().push(seen);

    let fault = shared
        .rules
        .lock()
        .unwrap()
        .iter()
        .find(|r| {
            r.method.as_deref().is_none_or(|m| m == method) && path.contains(&r.path_contains)
        })
        .map(|r| r.fault.clone());

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
