//! The pull-through mirror (issue 4) against real peers: a real `docker-registry` upstream (plain,
//! TLS, token auth), real clients (containerd's `ctr`, skopeo, dockerd) and raw HTTP, with a counting,
//! fault-injecting relay between wharf and the upstream where a test needs to count or break things.
//!
//! Every test starts its own wharf, registries, relays and token service on free loopback ports, and
//! wharf's built-in docker.io upstream is replaced by a closed local port: nothing leaves the machine.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::harness::{DistRegistry, UpstreamSpec, Wharf};
use crate::http::{Api, Resp};
use crate::layout::Layout;
use crate::oci::{self, wharf_blob_path, Noise};
use crate::skopeo::Skopeo;

// Support.
pub(crate) mod ctr;
pub(crate) mod pki;
pub(crate) mod relay;
pub(crate) mod token_server;

// Tests.
mod chunked;
mod containerd;
mod dedupe;
pub(crate) mod docker_daemon;
mod docker_form;
mod faults;
mod liar;
pub(crate) mod platforms;
mod referrers;
mod scoping;
mod single_flight;
mod single_platform;
mod skopeo_mirror;
mod tls;
mod token_auth;
mod upstream_faults;

/// How long a polled condition may take before the test fails. Conditions are polled, so a fast
/// machine never waits for it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` until it holds; fails with `what` (evaluated lazily) at the deadline.
pub fn wait_until(what: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() >= end {
            panic!("not within {DEADLINE:?}: {}", what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain-http upstream entry for `registry` (or a relay in front of it at `via`), known to clients as
/// `host`, selected by path prefix `prefix`.
pub fn upstream(host: &str, via: std::net::SocketAddr, prefix: &str) -> UpstreamSpec {
    UpstreamSpec::http(host, via).with_prefix(prefix)
}

/// Pushes a generated image into `registry` as `repo:tag` (directly, never through wharf).
pub fn push_to_upstream(registry: &DistRegistry, layout: &Layout, repo: &str) {
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/{repo}:{}", registry.host(), layout.tag),
    );
}

/// Pushes `size` bytes of `Noise(seed)` as one blob (monolithic PUT, streamed); returns its digest.
pub fn push_noise_blob(api: &Api, repo: &str, seed: u64, size: u64) -> String {
    let (digest, _) = oci::sha256_reader(Noise::new(seed).take(size)).unwrap();
    let loc = api.start_upload(repo);
    let r = api.send_stream(
        "PUT",
        &crate::http::with_query(&loc, &format!("digest={digest}")),
        size,
        Noise::new(seed).take(size),
    );
    r.assert_status(201);
    digest
}

/// Whether wharf's store holds a file for `digest` (the contract path `blobs/sha256/xx/<hex>`).
pub fn cached(wharf: &Wharf, digest: &str) -> bool {
    wharf_blob_path(&wharf.blobs_dir(), digest).exists()
}

/// The cached file exists and hashes to its name. A fill lets clients finish as soon as the bytes
/// verify and commits (fsync, rename) right after, so the file may appear a moment after the response.
pub fn assert_cached_intact(wharf: &Wharf, digest: &str) {
    let path = wharf_blob_path(&wharf.blobs_dir(), digest);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let f = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{digest} is not cached at {}: {e}", path.display()));
    let (got, _) = oci::sha256_reader(f).unwrap();
    assert_eq!(got, digest, "{} does not hash to its name", path.display());
}

/// The error body's messages mention `needle` (e.g. the upstream's host): errors must say which
/// upstream failed.
pub fn assert_message_names(r: &Resp, needle: &str) {
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains(needle),
        "{}: the error should name {needle}: {}",
        r.request,
        r.describe()
    );
}

/// What a client got for a GET, read to the end (or to the error), hashed as it streamed.
#[derive(Debug)]
pub struct Fetch {
    pub request: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
    /// Body bytes received.
    pub len: u64,
    pub digest: String,
    /// A transport error while reading the body (cut short), if any.
    pub error: Option<String>,
    /// The first bytes of the body, for error answers.
    pub head: Vec<u8>,
}

impl Fetch {
    /// A 200 with every announced byte, hashing to `digest`: what a client would accept.
    pub fn is_complete(&self, digest: &str, size: u64) -> bool {
        self.status == 200
            && self.error.is_none()
            && self.len == size
            && self.content_length.is_none_or(|l| l == size)
            && self.digest == digest
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn describe(&self) -> String {
        // Error answers are JSON worth reading; blob bytes are not.
        let body = if (200..300).contains(&self.status) {
            String::new()
        } else {
            format!(
                " body {:?}",
                String::from_utf8_lossy(&self.head[..self.head.len().min(300)])
            )
        };
        format!(
            "{}: status {} content-length {:?} received {} bytes (digest {}) error {:?}{body}",
            self.request, self.status, self.content_length, self.len, self.digest, self.error,
        )
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// Sends a GET and returns once the response head is in; `finish` reads the body.
pub struct Pending {
    request: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Box<dyn Read + Send>,
}

pub fn get_head(url: &str, headers: &[(&str, &str)]) -> Pending {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: no response: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Pending {
        request: format!("GET {url}"),
        status,
        headers,
        body: Box::new(resp.into_body().into_reader()),
    }
}

impl Pending {
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn finish(mut self) -> Fetch {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let mut head = Vec::new();
        let mut len = 0u64;
        let mut error = None;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match self.body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    if head.len() < 4096 {
                        head.extend_from_slice(&buf[..n.min(4096 - head.len())]);
                    }
                    len += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let content_length = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok());
        Fetch {
            request: self.request,
            status: self.status,
            headers: self.headers,
            content_length,
            len,
            digest: format!("sha256:{}", hex::encode(hasher.finalize())),
            error,
            head,
        }
    }
}

/// GET `url` and read the whole answer, whatever happens on the way.
pub fn fetch(url: &str, headers: &[(&str, &str)]) -> Fetch {
    get_head(url, headers).finish()
}

/// A client must never accept bad bytes: the answer is an error status, or a body cut short (a
/// transport error or fewer bytes than announced), never a complete 200 body.
pub fn assert_not_accepted(f: &Fetch, digest: &str, size: u64) {
    assert!(
        !f.is_complete(digest, size),
        "the client got a complete, correct body although the upstream never sent one: {}",
        f.describe()
    );
    if f.status == 200 {
        assert!(
            f.error.is_some() || f.len < f.content_length.unwrap_or(u64::MAX),
            "a 200 whose body is not the blob must be cut short (an error or fewer bytes than \
             Content-Length), so the client cannot take it for the blob: {}",
            f.describe()
        );
    }
}

/// `HEAD` of a manifest answers 200 with the digest and the length containerd needs to resolve a tag.
pub fn assert_manifest_head(api: &Api, path: &str, digest: &str, size: u64) -> Resp {
    let h = api.request("HEAD", path, &[("Accept", oci::OCI_INDEX)], None);
    h.assert_status(200);
    assert_eq!(
        h.header("Docker-Content-Digest"),
        Some(digest),
        "{}",
        h.describe()
    );
    assert_eq!(
        h.header("Content-Length"),
        Some(size.to_string().as_str()),
        "containerd needs Content-Length on a HEAD: {}",
        h.describe()
    );
    h
}
