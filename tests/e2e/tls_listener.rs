//! wharf's own listener over TLS (`[server.tls]`): real clients trust it through a test CA made here
//! (rcgen; never `--tls-verify=false`), HTTP/2 is negotiated by ALPN, `SIGHUP` swaps the certificate
//! for new connections while open ones go on, and stalled TLS peers meet the same limits as plain ones.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;

use crate::harness::{free_port, log_tail, require_tool, wharf_bin};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::mirror::ctr::Containerd;
use crate::mirror::pki::TestCa;
use crate::oci::{sha256_digest, Noise};
use crate::skopeo::Skopeo;

const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A wharf serving TLS with a certificate for 127.0.0.1 from its own test CA. Its certificate and key
/// live at fixed paths (`cert_path`, `key_path`) that a test may overwrite before a `SIGHUP`.
pub(crate) struct TlsWharf {
    child: Option<Child>,
    addr: SocketAddr,
    home: TempDir,
    ca: TestCa,
    /// TOML appended to the config (`[auth]` for the auth_clients tests).
    extra_toml: String,
}

impl TlsWharf {
    fn start() -> TlsWharf {
        TlsWharf::start_with(&[])
    }

    /// `server_keys`: more `[server]` lines (timeouts).
    fn start_with(server_keys: &[&str]) -> TlsWharf {
        TlsWharf::start_with_config(server_keys, "")
    }

    /// `extra_toml`: appended to the config. With `[auth]` in it, a 401 from `GET /v2/` means ready.
    pub(crate) fn start_with_config(server_keys: &[&str], extra_toml: &str) -> TlsWharf {
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-tls-")
            .tempdir()
            .unwrap();
        let ca = TestCa::new(&home.path().join("ca"), "listener");
        let (cert, key) = ca.server_cert(&home.path().join("issued"));
        fs::create_dir_all(home.path().join("tls")).unwrap();
        let mut w = TlsWharf {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            home,
            ca,
            extra_toml: extra_toml.to_owned(),
        };
        fs::copy(cert, w.cert_path()).unwrap();
        fs::copy(key, w.key_path()).unwrap();
        for attempt in 1..=3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log_start = fs::metadata(w.log_path()).map_or(0, |m| m.len()) as usize;
            w.write_config(addr, server_keys);
            let mut child = w.spawn();
            match w.wait_ready(&mut child, addr) {
                Ok(()) => {
                    w.child = Some(child);
                    w.addr = addr;
                    return w;
                }
                Err(status) => {
                    let log = fs::read_to_string(w.log_path()).unwrap_or_default();
                    if attempt < 3 && log[log_start.min(log.len())..].contains("in use") {
                        continue;
                    }
                    panic!(
                        "wharf exited with {status} before serving TLS\n--- log tail ---\n{}",
                        log_tail(&w.log_path(), 40)
                    );
                }
            }
        }
        unreachable!()
    }

    fn write_config(&self, addr: SocketAddr, server_keys: &[&str]) {
        let s = |p: PathBuf| serde_json::to_string(&p.display().to_string()).unwrap();
        let config = format!(
            "[server]\nlisten = \"{addr}\"\n{}\n[server.tls]\ncert_file = {}\nkey_file = {}\n\n\
             [storage]\ndata_dir = {}\n\n[mirror]\ndefault_upstream = \"\"\n\n\
             [[upstream]]\nhost = \"docker.io\"\nendpoint = \"http://127.0.0.1:9\"\ninsecure = true\n{}",
            server_keys.join("\n"),
            s(self.cert_path()),
            s(self.key_path()),
            s(self.home.path().join("data")),
            self.extra_toml,
        );
        fs::write(self.config_path(), config).unwrap();
    }

    fn spawn(&self) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(wharf_bin());
        cmd.arg("serve").arg("--config").arg(self.config_path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WHARF_") {
                cmd.env_remove(k);
            }
        }
        // The server's debug lines say which protocol each TLS connection negotiated.
        cmd.env("WHARF_LOG", "info,wharf::server=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn wharf")
    }

    /// Ready once a client trusting the CA gets 200 from `GET /v2/`.
    fn wait_ready(
        &self,
        child: &mut Child,
        addr: SocketAddr,
    ) -> Result<(), std::process::ExitStatus> {
        let end = Instant::now() + READY_DEADLINE;
        let mut last;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(status);
            }
            match TlsConn::connect(addr, &self.ca.pem_path)
                .and_then(|mut c| c.request("GET", "/v2/", &[]))
            {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) if r.status == 401 && self.extra_toml.contains("[auth]") => return Ok(()),
                Ok(r) => last = format!("status {}", r.status),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "wharf did not answer GET https://{addr}/v2/ within {READY_DEADLINE:?} (last: {last})\n\
                     --- log tail ---\n{}",
                    log_tail(&self.log_path(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn cert_path(&self) -> PathBuf {
        self.home.path().join("tls/tls.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.home.path().join("tls/tls.key")
    }

    fn config_path(&self) -> PathBuf {
        self.home.path().join("wharf.toml")
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.home.path().join("wharf.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        let d = self.home.path().join("scratch").join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A directory holding the CA as `ca.crt`: the layout skopeo's `--*-cert-dir` and podman's
    /// `--cert-dir` read (a `certs.d/<host:port>/` entry).
    pub(crate) fn cert_dir(&self) -> PathBuf {
        let d = self.scratch("certs.d").join(self.host());
        fs::create_dir_all(&d).unwrap();
        fs::copy(&self.ca.pem_path, d.join("ca.crt")).unwrap();
        d
    }

    /// The negotiated protocols of the TLS connections logged so far (`h2`, `http/1.1`), for the
    /// report: which protocol a client chose is its business, not an assertion.
    fn protocols(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("TLS connection"))
            .filter_map(|l| l.split("protocol=").nth(1))
            .map(|p| {
                p.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_owned()
            })
            .collect()
    }

    fn sighup(&self) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGHUP);
        }
    }

    /// Waits until the log holds `n` lines containing `what`.
    fn wait_log(&self, what: &str, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.log().matches(what).count() < n {
            assert!(
                Instant::now() < end,
                "wharf never logged {what:?} ({n} times)\n--- log tail ---\n{}",
                log_tail(&self.log_path(), 30)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsWharf {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- wharf log tail ---\n{}\n--- end ---",
                log_tail(&self.log_path(), 40)
            );
        }
        self.stop();
    }
}

impl TlsWharf {
    /// SIGTERM, then wait (a stopped wharf has written its whole log); SIGKILL after 30 s.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 connection over TLS (rustls), trusting only the given CA file: the client that can
/// hold a connection across a `SIGHUP` and say which certificate the server presented.
struct TlsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    host: String,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl TlsConn {
    /// Connects and completes the handshake (a certificate the CA did not issue fails here).
    fn connect(addr: SocketAddr, ca_pem: &Path) -> io::Result<TlsConn> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(ca_pem).map_err(io::Error::other)?;
        roots.add(ca).map_err(io::Error::other)?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::IpAddress(addr.ip().into());
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsConn {
            tls,
            host: addr.to_string(),
        })
    }

    /// The certificate the server presented (DER).
    fn server_cert(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().expect("a certificate")[0].to_vec()
    }

    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<()> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.tls.write_all(head.as_bytes())?;
        self.tls.write_all(body)?;
        self.tls.flush()
    }

    /// Reads a response head: status and `Content-Length`.
    fn read_head(&mut self) -> io::Result<(u16, usize)> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.tls.read(&mut byte)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad response head: {text}")))?;
        let len = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        Ok((status, len))
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Answer> {
        self.send(method, path, body)?;
        let (status, len) = self.read_head()?;
        let mut body = vec![0u8; if method == "HEAD" { 0 } else { len }];
        self.tls.read_exact(&mut body)?;
        Ok(Answer { status, body })
    }
}

/// The DER of the first certificate in a PEM file.
fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).unwrap().to_vec()
}

fn curl() -> Command {
    let mut cmd = Command::new(require_tool("curl", "apt-get install curl"));
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "60"]);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Pushes a fresh 3-platform image to `team/app:v1` with skopeo, trusting the CA; returns its layout.
fn push_image(wharf: &TlsWharf, seed: u64) -> crate::layout::Layout {
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", seed));
    let certs = wharf.cert_dir();
    skopeo_copy(
        &["--dest-cert-dir", certs.to_str().unwrap()],
        &layout.skopeo_ref(),
        &format!("docker://{}/team/app:v1", wharf.host()),
    );
    layout
}

/// `skopeo copy --all --preserve-digests` with TLS verification on (skopeo's default).
fn skopeo_copy(extra: &[&str], src: &str, dst: &str) -> Output {
    let mut args = vec!["copy", "--all", "--preserve-digests", "--retry-times=0"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[src, dst]);
    let out = Skopeo::new().output(&args);
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Proves: skopeo pushes a 3-platform image to wharf over TLS and pulls it back byte for byte, trusting
/// wharf's certificate only through the test CA in `--dest-cert-dir` / `--src-cert-dir`; without the CA
/// skopeo refuses the certificate (so TLS, with this certificate, is what it spoke).
#[test]
fn skopeo_pushes_and_pulls_over_tls_with_the_test_ca() {
    let wharf = TlsWharf::start();
    let layout = push_image(&wharf, 1701);
    let certs = wharf.cert_dir();
    let out = wharf.scratch("out");
    skopeo_copy(
        &["--src-cert-dir", certs.to_str().unwrap()],
        &format!("docker://{}/team/app:v1", wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    let refused = Skopeo::new().output(&[
        "inspect",
        "--raw",
        "--retry-times=0",
        &format!("docker://{}/team/app:v1", wharf.host()),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("certificate"),
        "skopeo without the CA must refuse wharf's certificate: {stderr}"
    );
    eprintln!("skopeo connections negotiated: {:?}", wharf.protocols());
}

/// Proves: ALPN offers HTTP/2 (curl --http2 gets HTTP/2) and HTTP/1.1 (curl --http1.1 gets 1.1); over
/// HTTP/2 a blob uploads in a session whose PATCH body has no length (streamed from stdin), and comes
/// back byte for byte, with its HEAD giving the size.
#[test]
fn http2_and_http1_are_negotiated_by_alpn() {
    let wharf = TlsWharf::start();
    let ca = wharf.ca.pem_path.to_str().unwrap().to_owned();
    let version = |flag: &str| {
        let out = run(curl()
            .args([
                flag,
                "--cacert",
                &ca,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg(wharf.url("/v2/")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(version("--http2"), "2 200");
    assert_eq!(version("--http1.1"), "1.1 200");

    let data = Noise::bytes(17, 3 << 20);
    let digest = sha256_digest(&data);
    let out = run(curl()
        .args([
            "--http2",
            "--cacert",
            &ca,
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-D",
            "-",
        ])
        .arg(wharf.url("/v2/h2/blob/blobs/uploads/")));
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(head.starts_with("HTTP/2 202"), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_else(|| panic!("no location in {head}"))
        .trim()
        .to_owned();
    let location = if location.starts_with('/') {
        wharf.url(&location)
    } else {
        location
    };
    // `-T -`: stdin of unknown length, so the HTTP/2 request carries no content-length.
    let mut patch = curl()
        .args([
            "--http2",
            "--cacert",
            &ca,
            "-X",
            "PATCH",
            "-T",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(&location)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    patch.stdin.take().unwrap().write_all(&data).unwrap();
    let out = patch.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 202",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if location.contains('?') { '&' } else { '?' };
    let out = run(curl()
        .args([
            "--http2",
            "--cacert",
            &ca,
            "-X",
            "PUT",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("{location}{sep}digest={digest}")));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 201");

    let got = run(curl()
        .args(["--http2", "--cacert", &ca])
        .arg(wharf.url(&format!("/v2/h2/blob/blobs/{digest}"))));
    assert_eq!(got.stdout.len(), data.len());
    assert_eq!(
        sha256_digest(&got.stdout),
        digest,
        "the blob came back changed over HTTP/2"
    );
    let head = run(curl()
        .args(["--http2", "--cacert", &ca, "-I"])
        .arg(wharf.url(&format!("/v2/h2/blob/blobs/{digest}"))));
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(
        head.starts_with("http/2 200") && head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
    assert!(
        wharf.protocols().iter().any(|p| p == "h2"),
        "{:?}",
        wharf.protocols()
    );
}

/// Proves: `SIGHUP` swaps the certificate without dropping connections. A connection opened before
/// (mid-way through a 16 MiB blob) finishes that blob intact and serves another request afterwards,
/// still on the first certificate; a new connection gets the certificate of another CA (and is
/// refused by a client that trusts only the first CA). A reload that fails (a key that is not the
/// certificate's) keeps the current certificate and logs why.
#[test]
fn sighup_swaps_the_certificate_and_open_connections_go_on() {
    let wharf = TlsWharf::start();
    let data = Noise::bytes(33, 16 << 20);
    let digest = sha256_digest(&data);
    let mut setup = TlsConn::connect(wharf.addr, &wharf.ca.pem_path).unwrap();
    let r = setup
        .request(
            "POST",
            &format!("/v2/hup/blob/blobs/uploads/?digest={digest}"),
            &data,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let first_cert = der(&wharf.cert_path());
    let mut before = TlsConn::connect(wharf.addr, &wharf.ca.pem_path).unwrap();
    assert_eq!(before.server_cert(), first_cert);
    before
        .send("GET", &format!("/v2/hup/blob/blobs/{digest}"), &[])
        .unwrap();
    let (status, len) = before.read_head().unwrap();
    assert_eq!((status, len), (200, data.len()));
    let mut got = vec![0u8; 64 * 1024];
    before.tls.read_exact(&mut got).unwrap();

    // New certificate and key from another CA, in place; then SIGHUP.
    let other = TestCa::new(&wharf.scratch("ca2"), "second");
    let (cert2, key2) = other.server_cert(&wharf.scratch("issued2"));
    fs::copy(&cert2, wharf.cert_path()).unwrap();
    fs::copy(&key2, wharf.key_path()).unwrap();
    wharf.sighup();
    wharf.wait_log("TLS certificate reloaded", 1);

    let after = TlsConn::connect(wharf.addr, &other.pem_path).unwrap();
    assert_eq!(
        after.server_cert(),
        der(&cert2),
        "a new connection must get the new certificate"
    );
    let refused = TlsConn::connect(wharf.addr, &wharf.ca.pem_path);
    assert!(
        refused.is_err(),
        "a client trusting only the first CA must now refuse wharf"
    );

    // The connection opened before: the rest of the blob, then another request.
    let mut rest = Vec::new();
    (&mut before.tls)
        .take((len - got.len()) as u64)
        .read_to_end(&mut rest)
        .unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(
        sha256_digest(&got),
        digest,
        "the blob sent across the SIGHUP changed"
    );
    let r = before.request("GET", "/v2/", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(before.server_cert(), first_cert);

    // A failed reload: a key that does not belong to the certificate. The current one stays.
    let (_, key3) = other.server_cert(&wharf.scratch("issued3"));
    fs::copy(&key3, wharf.key_path()).unwrap();
    wharf.sighup();
    wharf.wait_log("TLS certificate not reloaded", 1);
    let line = wharf
        .log()
        .lines()
        .find(|l| l.contains("TLS certificate not reloaded"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("server.tls.key_file") && line.contains("not the key"),
        "{line}"
    );
    let still = TlsConn::connect(wharf.addr, &other.pem_path).unwrap();
    assert_eq!(still.server_cert(), der(&cert2));
    let mut still = still;
    assert_eq!(still.request("GET", "/v2/", &[]).unwrap().status, 200);
}

/// Proves: a certificate or key that is missing, or a key that is not the certificate's, stops wharf at
/// start with a message naming the `server.tls` key and the fix.
#[test]
fn a_bad_certificate_or_key_fails_at_start_naming_the_key() {
    let wharf = TlsWharf::start();
    // What is broken, how, and what the error must name.
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            "missing cert_file",
            Box::new(|| fs::remove_file(wharf.cert_path()).unwrap()),
            &["server.tls.cert_file", "tls.crt", "PEM file"],
        ),
        (
            "unreadable key_file",
            Box::new(|| {
                fs::copy(
                    wharf.home.path().join("issued/server.pem"),
                    wharf.cert_path(),
                )
                .unwrap();
                fs::write(wharf.key_path(), "no key here\n").unwrap();
            }),
            &["server.tls.key_file", "PRIVATE KEY"],
        ),
        (
            "key of another certificate",
            Box::new(|| {
                let (_, other_key) = wharf.ca.server_cert(&wharf.scratch("other"));
                fs::copy(other_key, wharf.key_path()).unwrap();
            }),
            &["server.tls.key_file", "server.tls.cert_file", "not the key"],
        ),
    ];
    for (what, break_it, wanted) in cases {
        break_it();
        let out = Command::new(wharf_bin())
            .args(["serve", "--config"])
            .arg(wharf.config_path())
            .env("WHARF_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("WHARF_DATA_DIR", wharf.scratch("data-start"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{what}: wharf started anyway:\n{stderr}"
        );
        for w in wanted {
            assert!(
                stderr.contains(w),
                "{what}: the error must name {w:?}:\n{stderr}"
            );
        }
    }
}

/// Proves: containerd 1.6 (`ctr images pull --hosts-dir`) pulls from wharf over TLS, trusting it through
/// `ca = ...` in `hosts.toml`, and gets the image wharf holds (its digest and unpacked layers check).
#[test]
fn ctr_pulls_over_tls_with_the_ca_in_hosts_toml() {
    let wharf = TlsWharf::start();
    let layout = push_image(&wharf, 1702);
    let hosts = wharf.scratch("hosts");
    let dir = hosts.join(wharf.host());
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{h}\"\n\n[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {ca}\n",
            h = wharf.host(),
            ca = serde_json::to_string(&wharf.ca.pem_path.display().to_string()).unwrap()
        ),
    )
    .unwrap();
    let reference = format!("{}/team/app:v1", wharf.host());
    let containerd = Containerd::start();
    containerd.pull(&hosts, &reference, "linux/amd64");
    assert_eq!(containerd.image_digest(&reference), layout.index.digest);
    let amd64 = layout
        .images
        .iter()
        .find(|i| i.platform.architecture == "amd64")
        .unwrap();
    for d in amd64.layers.iter().map(|l| &l.digest) {
        assert_eq!(sha256_digest(&containerd.content(d)), *d);
    }
    eprintln!("containerd connections negotiated: {:?}", wharf.protocols());
}

/// podman, isolated: its own storage (vfs), runroot, registries.conf and HOME; nothing of the machine's.
pub(crate) fn podman(home: &Path) -> Command {
    let bin = require_tool("podman", "apt-get install podman");
    for d in ["root", "runroot", "tmp", "run", "config"] {
        fs::create_dir_all(home.join(d)).unwrap();
    }
    fs::write(home.join("registries.conf"), "").unwrap();
    fs::write(
        home.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
            serde_json::to_string(&home.join("root").display().to_string()).unwrap(),
            serde_json::to_string(&home.join("runroot").display().to_string()).unwrap()
        ),
    )
    .unwrap();
    fs::write(
        home.join("containers.conf"),
        "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("CONTAINERS_REGISTRIES_CONF", home.join("registries.conf"))
        .env("CONTAINERS_STORAGE_CONF", home.join("storage.conf"))
        .env("CONTAINERS_CONF", home.join("containers.conf"))
        .env("TMPDIR", home.join("tmp"))
        .arg("--root")
        .arg(home.join("root"))
        .arg("--runroot")
        .arg(home.join("runroot"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .stdin(Stdio::null());
    cmd
}

/// Proves: podman pulls from wharf over TLS with the CA in a certs.d directory (`--cert-dir`, TLS
/// verification on), and the image it stores is linux/amd64's (its ID is that config's digest).
#[test]
fn podman_pulls_over_tls_with_the_ca_in_certs_d() {
    let wharf = TlsWharf::start();
    let layout = push_image(&wharf, 1703);
    let home = wharf.scratch("podman");
    let reference = format!("{}/team/app:v1", wharf.host());
    let certs = wharf.cert_dir();
    run(podman(&home)
        .args(["pull", "--tls-verify=true", "--cert-dir"])
        .arg(&certs)
        .arg(&reference));
    let out = run(podman(&home)
        .args(["image", "inspect", "--format", "{{.Id}}"])
        .arg(&reference));
    let amd64 = layout
        .images
        .iter()
        .find(|i| i.platform.architecture == "amd64")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        crate::oci::hex_part(&amd64.config.digest)
    );
    eprintln!("podman connections negotiated: {:?}", wharf.protocols());
}

/// Proves: the head timeout holds over TLS: a peer that connects and sends nothing, and one that
/// completes the handshake and sends no request, are both closed after `header_timeout_secs`.
#[test]
fn stalled_tls_peers_are_closed_after_the_head_timeout() {
    let wharf = TlsWharf::start_with(&["header_timeout_secs = 1"]);
    let silent = TcpStream::connect(wharf.addr).unwrap();
    let handshaken = TlsConn::connect(wharf.addr, &wharf.ca.pem_path).unwrap();
    let started = Instant::now();
    let closed_within = |mut r: Box<dyn Read>, what: &str| {
        let mut buf = [0u8; 64];
        // EOF or a reset: closed by wharf; a read timeout (20 s) would be an error of its own.
        match r.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("{what}: wharf sent {n} bytes instead of closing"),
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{what}: closed only after {took:?}"
        );
    };
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    closed_within(Box::new(silent), "a silent TCP peer");
    let TlsConn { tls, .. } = handshaken;
    closed_within(
        Box::new(tls),
        "a peer that sent no request after its handshake",
    );
    // And wharf goes on serving.
    let mut c = TlsConn::connect(wharf.addr, &wharf.ca.pem_path).unwrap();
    assert_eq!(c.request("GET", "/v2/", &[]).unwrap().status, 200);
}

/// Proves: a graceful stop waits for TLS connections as for plain ones: a blob download under way when
/// SIGTERM arrives finishes intact, then wharf exits cleanly.
#[test]
fn sigterm_lets_a_tls_download_finish() {
    let mut wharf = TlsWharf::start();
    let data = Noise::bytes(44, 16 << 20);
    let digest = sha256_digest(&data);
    let mut setup = TlsConn::connect(wharf.addr, &wharf.ca.pem_path).unwrap();
    let r = setup
        .request(
            "POST",
            &format!("/v2/term/blob/blobs/uploads/?digest={digest}"),
            &data,
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let mut conn = TlsConn::connect(wharf.addr, &wharf.ca.pem_path).unwrap();
    conn.send("GET", &format!("/v2/term/blob/blobs/{digest}"), &[])
        .unwrap();
    let (status, len) = conn.read_head().unwrap();
    assert_eq!((status, len), (200, data.len()));
    let mut got = vec![0u8; 64 * 1024];
    conn.tls.read_exact(&mut got).unwrap();

    let mut child = wharf.child.take().unwrap();
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    wharf.wait_log("shutting down", 1);
    let mut rest = Vec::new();
    (&mut conn.tls)
        .take((len - got.len()) as u64)
        .read_to_end(&mut rest)
        .unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(
        sha256_digest(&got),
        digest,
        "the download was cut by the stop"
    );
    drop(conn);
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "wharf did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "wharf exited with {status}");
}

/// Proves: a client that sends plain HTTP to the TLS port (an `http://` URL, an insecure-registry
/// setting) gets a 400 that says to use https, in the registry's error shape, instead of a closed
/// connection; containerd told to use plain HTTP gets that answer too. (skopeo with
/// `--tls-verify=false` still tries TLS first, and succeeds.) HTTPS on the same port still
/// works afterwards.
#[test]
fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let wharf = TlsWharf::start();
    let out = run(curl().args(["-i", &format!("http://{}/v2/", wharf.host())]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 400"), "answer: {text}");
    assert!(
        text.contains("UNSUPPORTED") && text.contains("use https://"),
        "the answer names the cause and the fix: {text}"
    );

    // containerd told to use plain HTTP (`--plain-http`, or an `http://` server in hosts.toml).
    let containerd = crate::mirror::ctr::Containerd::start();
    let pulled = containerd.output(&[
        "images",
        "pull",
        "--plain-http",
        &format!("{}/team/none:v1", wharf.host()),
    ]);
    let said = String::from_utf8_lossy(&pulled.stderr);
    assert!(
        !pulled.status.success() && said.contains("400 Bad Request"),
        "ctr is answered, not cut off (containerd 1.6 prints the status, not the body): {said}"
    );
    // The log says what happened (it is written in batches: wait for it).
    wharf.wait_log("plain HTTP on the TLS listener", 2);

    let ok = run(curl().args([
        "--cacert",
        wharf.ca.pem_path.to_str().unwrap(),
        &wharf.url("/v2/"),
    ]));
    assert!(ok.status.success());
}

/// Proves: dockerd pushes an image to wharf's TLS listener and pulls it back (same image ID), over
/// TLS: every connection docker made is a TLS session, never a fall-back to plain HTTP, and the
/// protocol ALPN gave it is printed (Debian's docker 28.2 offers no ALPN to registries: HTTP/1.1 over
/// TLS, as skopeo, podman and containerd 1.6 here; only curl asks for HTTP/2). dockerd treats
/// loopback registries as insecure, so it does not check the certificate against a CA here: the
/// skopeo, ctr and podman tests show that.
#[test]
fn docker_pushes_and_pulls_over_tls() {
    crate::mirror::docker_daemon::in_private_network("docker-tls-netns", docker_over_tls);
}

fn docker_over_tls() {
    use crate::mirror::docker_daemon::{native_image, DockerTools, Dockerd};
    let tools = DockerTools::find();
    let wharf = TlsWharf::start();
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1791));
    let reference = format!("{}/team/app:v1", wharf.host());
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    // No mirror for docker.io here: a closed port, so nothing can go around wharf unseen.
    let docker = Dockerd::start(tools, SocketAddr::from(([127, 0, 0, 1], 9)));
    docker.docker(&["load", "-i", archive.to_str().unwrap()]);
    let before = wharf.protocols().len();
    docker.docker(&["push", &reference]);
    docker.rmi(&reference);
    docker.docker(&["pull", &reference]);
    assert_eq!(
        docker.image_id(&reference).as_deref(),
        Some(native_image(&layout.images).config.digest.as_str()),
        "the image docker pulled back is not the one it pushed"
    );
    wharf.wait_log("path=/v2/team/app/manifests/v1 status=200", 1);
    let protocols = wharf.protocols()[before..].to_vec();
    assert!(
        !protocols.is_empty(),
        "no TLS connection from docker in wharf's log:\n{}",
        log_tail(&wharf.log_path(), 30)
    );
    let plain = wharf
        .log()
        .matches("plain HTTP on the TLS listener")
        .count();
    assert_eq!(plain, 0, "docker fell back to plain HTTP");
    eprintln!("dockerd's connections negotiated: {protocols:?}");
}
