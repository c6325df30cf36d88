//! HTTP clients for the registry API.
//!
//! `Api` (ureq) covers well-formed requests. `raw` writes bytes straight to a `TcpStream` for requests a
//! client library would refuse or normalise: paths with `..` or `//`, bodies shorter than the declared
//! Content-Length, huge bodies we abandon half way.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;
use ureq::http::{HeaderMap, Method};

use crate::oci::{self, sha256_digest};

/// A response with its body read; `headers` keeps every value so tests can assert on exact headers.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `METHOD url`, for failure messages.
    pub request: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The header, or a failure naming the request.
    pub fn need_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: no {name} header in {}", self.request, self.describe()))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                self.request,
                self.describe()
            )
        })
    }

    /// The `code`s of a spec error body (`{"errors":[{"code":..}]}`); empty if the body is not one.
    pub fn error_codes(&self) -> Vec<String> {
        let Ok(v) = serde_json::from_slice::<Value>(&self.body) else {
            return Vec::new();
        };
        v["errors"]
            .as_array()
            .map(|errs| {
                errs.iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Status, headers and (the start of) the body, for failure messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(600)]).into_owned();
        format!(
            "status {} headers {:?} body {body:?}",
            self.status, self.headers
        )
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}: expected {status}, got {}",
            self.request,
            self.describe()
        );
        self
    }

    /// Status AND spec error code: a registry that answers the right status for the wrong reason is wrong.
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        let codes = self.error_codes();
        assert!(
            self.status == status && codes.iter().any(|c| c == code),
            "{}: expected {status} {code}, got {}",
            self.request,
            self.describe()
        );
        self
    }
}

/// A registry client bound to one base URL (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // 4xx/5xx are answers we assert on, not transport errors.
            .http_status_as_error(false)
            // A registry may redirect blob GETs; we want to see exactly what wharf answered.
            .max_redirects(0)
            // Bounded so a hung server fails the test instead of hanging CI.
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Api {
            base: base.into(),
            agent,
        }
    }

    /// `path` is either absolute (`/v2/...`) or a full URL (e.g. a `Location` the server gave us).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `request`, but a transport failure (reset, broken pipe) is returned, not a panic.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let url = self.url(path);
        let method_v = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = ureq::http::Request::builder().method(method_v).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let result = match body {
            Some(b) => self.agent.run(req.body(b.to_vec()).expect("build request")),
            // No body at all: ureq sends no Content-Length for GET/HEAD/DELETE and `0` for the others.
            None => self.agent.run(req.body(()).expect("build request")),
        };
        let what = format!("{method} {url}");
        let mut resp = result.map_err(|e| format!("{what}: transport error: {e}"))?;
        let status = resp.status().as_u16();
        let headers = header_list(resp.headers());
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .map_err(|e| format!("{what}: reading body: {e}"))?
        };
        Ok(Resp {
            status,
            headers,
            body,
            request: what,
        })
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    pub fn head(&self, path: &str) -> Resp {
        self.request("HEAD", path, &[], None)
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, &[], None)
    }

    /// Streams a request body of `len` bytes from `body` (Content-Length, not chunked).
    pub fn send_stream(
        &self,
        method: &str,
        path: &str,
        len: u64,
        body: impl Read + 'static,
    ) -> Resp {
        let url = self.url(path);
        let what = format!("{method} {url} ({len} streamed bytes)");
        let req = ureq::http::Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string())
            .body(ureq::SendBody::from_owned_reader(body))
            .expect("build request");
        let mut resp = self
            .agent
            .run(req)
            .unwrap_or_else(|e| panic!("{what}: transport error: {e}"));
        let status = resp.status().as_u16();
        let headers = header_list(resp.headers());
        let body = resp
            .body_mut()
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{what}: reading body: {e}"));
        Resp {
            status,
            headers,
            body,
            request: what,
        }
    }

    /// GETs a blob and hashes it as it streams: `(status, digest, length)`.
    pub fn get_blob_hashed(
        &self,
        repo: &str,
        digest: &str,
    ) -> (u16, String, u64, Vec<(String, String)>) {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self
            .agent
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = header_list(resp.headers());
        let (got, len) = oci::sha256_reader(resp.into_body().into_reader())
            .unwrap_or_else(|e| panic!("GET {url}: reading body: {e}"));
        (status, got, len, headers)
    }

    // ---- higher-level helpers; each asserts the happy-path status so tests read as a story ----

    /// Opens an upload session: 202 with a Location.
    pub fn start_upload(&self, repo: &str) -> String {
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], None);
        r.assert_status(202);
        r.need_header("Location").to_owned()
    }

    /// Pushes a blob the way most clients do (POST session, PUT ?digest= with the bytes); returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let loc = self.start_upload(repo);
        let r = self.request(
            "PUT",
            &with_query(&loc, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            Some(data),
        );
        r.assert_status(201);
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(digest.as_str()),
            "{}",
            r.describe()
        );
        digest
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(body),
        )
    }

    /// PUTs a manifest and expects 201 with the right digest; returns the digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let digest = sha256_digest(body);
        let r = self.put_manifest(repo, reference, media_type, body);
        r.assert_status(201);
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(digest.as_str()),
            "{}",
            r.describe()
        );
        digest
    }

    /// GET a manifest accepting every type we use.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.request(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", &all_manifest_types())],
            None,
        )
    }

    /// GET a manifest path (with a query, say) accepting every type we use.
    pub fn get_manifest_path(&self, path: &str) -> Resp {
        self.request("GET", path, &[("Accept", &all_manifest_types())], None)
    }

    /// The blob is in `repo` and its bytes hash to its digest.
    pub fn assert_blob_intact(&self, repo: &str, digest: &str, len: u64) {
        let h = self.head(&format!("/v2/{repo}/blobs/{digest}"));
        h.assert_status(200);
        assert_eq!(
            h.header("Content-Length"),
            Some(len.to_string().as_str()),
            "{}",
            h.describe()
        );
        let (status, got, got_len, _) = self.get_blob_hashed(repo, digest);
        assert_eq!(
            (status, got.as_str(), got_len),
            (200, digest, len),
            "GET /v2/{repo}/blobs/{digest}"
        );
    }
}

pub fn all_manifest_types() -> String {
    [
        oci::OCI_MANIFEST,
        oci::OCI_INDEX,
        oci::DOCKER_MANIFEST,
        oci::DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

/// The path part of a Location (which may be absolute), for raw requests.
pub fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_else(|| "/".into()),
        None => location.to_owned(),
    }
}

/// Appends a query parameter to a URL that may or may not have a query already.
pub fn with_query(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

fn header_list(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

pub mod raw;
