//! Case 11 (issue 17): what the TLS listener costs wharf on the warm paths, beside nginx with TLS on
//! the same files. Plain HTTP, wharf sends blobs with `sendfile` (zero-copy); through TLS rustls
//! encrypts from the file's mapping into its own buffers and writes the ciphertext: a copy and
//! AES-GCM per byte, in user space.
//! nginx is in the same position unless the kernel does the encryption (kTLS), which the note says.
//!
//! - 11a: one client GETs the warm blob, plain and over TLS (HTTP/1.1, and HTTP/2 as containerd and
//!   docker negotiate it with wharf), from wharf and from nginx. The client is `curl`, the same for
//!   every run (plain too, so that TLS ÷ plain compares like with like): a real TLS client (OpenSSL)
//!   that verifies the certificate against the test CA, costs the driver nothing to build and
//!   reports its own transfer rate. The driver's own reader (cases 1, 2) speaks no TLS.
//! - 11b: manifest GET by tag under load, `wrk -t2 -c64` over `https://` and over `http://`: keep-
//!   alive, so each connection's handshake happens once and is amortised over the run.
//!
//! The TLS servers are a second wharf (seeded with the same image over plain HTTP, then restarted
//! on the same data dir with `[server.tls]`) and a second nginx serving the first wharf's blob files;
//! the plain ones are the run's own wharf and nginx. Certificates: a CA and a server certificate for
//! 127.0.0.1 made here (`pki.rs`).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};

use super::{blob_file, blob_path, gb, manifest_path, size_label, Env, PerServer, REPO, TAG};
use crate::load;
use crate::pki;
use crate::report::{CaseResult, Metric, Stat};
use crate::seed::{self, UploadStyle, ACCEPT, OCI_MANIFEST};
use crate::servers::{self, Server, StaticManifest};

/// How a blob GET is made.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    TlsHttp1,
    TlsHttp2,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Plain, Mode::TlsHttp1, Mode::TlsHttp2];

    fn label(self) -> &'static str {
        match self {
            Mode::Plain => "plain HTTP/1.1",
            Mode::TlsHttp1 => "TLS, HTTP/1.1",
            Mode::TlsHttp2 => "TLS, HTTP/2",
        }
    }

    fn tls(self) -> bool {
        self != Mode::Plain
    }
}

/// What curl reports about one GET.
struct Fetch {
    status: u16,
    bytes: u64,
    /// Bytes per second, curl's own average over the transfer.
    speed: f64,
    /// "1.1" or "2".
    http_version: String,
    /// curl's stderr (with `-v`: the handshake's outcome).
    stderr: String,
}

/// One GET with curl, body to /dev/null. Over TLS the certificate is verified against `ca`.
fn curl(
    server: &Server,
    mode: Mode,
    path: &str,
    headers: &[(&str, &str)],
    ca: &Path,
    verbose: bool,
) -> Result<Fetch> {
    let mut cmd = Command::new("curl");
    // -q first: no ~/.curlrc; no proxy from the environment on loopback.
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", "300"])
        .args(["-o", "/dev/null"])
        .args([
            "-w",
            "%{http_code} %{size_download} %{speed_download} %{http_version}",
        ]);
    if verbose {
        cmd.arg("-v");
    }
    match mode {
        Mode::Plain | Mode::TlsHttp1 => cmd.arg("--http1.1"),
        Mode::TlsHttp2 => cmd.arg("--http2"),
    };
    if mode.tls() {
        cmd.arg("--cacert").arg(ca);
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let scheme = if mode.tls() { "https" } else { "http" };
    cmd.arg(format!("{scheme}://{}{path}", server.addr));
    let out = cmd.output().context("run curl")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!(
            "curl {scheme}://{}{path} failed ({}): {stdout}{}",
            server.addr,
            out.status,
            stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    let mut w = stdout.split_whitespace();
    let mut next = || w.next().unwrap_or_default().to_owned();
    let (status, bytes, speed, http_version) = (next(), next(), next(), next());
    Ok(Fetch {
        status: status
            .parse()
            .with_context(|| format!("curl -w: {stdout}"))?,
        bytes: bytes
            .parse()
            .with_context(|| format!("curl -w: {stdout}"))?,
        speed: speed
            .parse()
            .with_context(|| format!("curl -w: {stdout}"))?,
        http_version,
        stderr,
    })
}

/// A GET that must answer 200 with `len` bytes in the expected HTTP version.
fn curl_ok(
    server: &Server,
    mode: Mode,
    path: &str,
    headers: &[(&str, &str)],
    ca: &Path,
    len: Option<u64>,
    verbose: bool,
) -> Result<Fetch> {
    let f = curl(server, mode, path, headers, ca, verbose)?;
    let want_version = if mode == Mode::TlsHttp2 { "2" } else { "1.1" };
    ensure!(
        f.status == 200 && len.is_none_or(|l| f.bytes == l) && f.http_version == want_version,
        "{} ({}): GET {path} answered {} with {} bytes over HTTP/{} (expected 200, {len:?} bytes, \
         HTTP/{want_version})",
        server.name,
        mode.label(),
        f.status,
        f.bytes,
        f.http_version
    );
    Ok(f)
}

/// "TLSv1.3 / TLS_AES_256_GCM_SHA384": what curl -v says the handshake settled on.
fn negotiated(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split_once("SSL connection using ").map(|(_, r)| r.trim()))
        .unwrap_or("?")
        .to_owned()
}

/// TLS sessions the kernel has encrypted for (software or device kTLS), from /proc/net/tls_stat;
/// None when the kernel has no kTLS (the file exists only with the `tls` module).
fn ktls_tx_sessions() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/tls_stat").ok()?;
    Some(
        s.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (k, v) = (w.next()?, w.next()?);
                matches!(k, "TlsTxSw" | "TlsTxDevice")
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
            })
            .sum(),
    )
}

/// Whether the running kernel was built with kTLS (`CONFIG_TLS`), where it says.
fn kernel_tls_config() -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("CONFIG_TLS=") || l.starts_with("# CONFIG_TLS is not set"))
        .map(|l| l.trim_start_matches("# ").to_owned())
}

fn require_curl() -> Result<()> {
    match Command::new("curl").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("curl is not installed (tests/bench/run.sh installs it: apt-get install curl)"),
    }
}

/// Per mode, per server (wharf, nginx).
type ByMode = [PerServer; 3];

fn metric(name: &str, unit: &str, v: PerServer) -> Metric {
    let [a, b, _] = v;
    Metric::new(
        name,
        unit,
        [Some(Stat::median(a)), Some(Stat::median(b)), None],
    )
}

fn peak(name: &str, v: PerServer) -> Metric {
    let [a, b, _] = v;
    Metric::new(name, "MiB", [Some(Stat::max(a)), Some(Stat::max(b)), None])
}

/// Case 11: 11a blob GET (plain, TLS HTTP/1.1, TLS HTTP/2), 11b manifest GET by tag under load.
pub fn tls_case(env: &Env) -> Result<Vec<CaseResult>> {
    require_curl()?;
    let dir = env.root.join("tls");
    let _ = std::fs::remove_dir_all(&dir);
    let pki = pki::generate(&dir.join("pki"))?;

    // wharf with TLS holds the same image: pushed over plain HTTP, then the same data dir served
    // with `[server.tls]` (the listener is TLS only).
    let wdir = dir.join("wharf");
    let mut seeding = servers::start_wharf(&env.wharf_bin, &wdir, &[])?;
    seed::push_image(
        seeding.addr,
        UploadStyle::MonolithicPost,
        REPO,
        &[TAG],
        &env.image,
    )
    .context("seed the TLS wharf")?;
    seeding.stop();
    drop(seeding);
    let wharf_tls =
        servers::start_wharf_with(&env.wharf_bin, &wdir, &[], &pki.server.wharf_toml())?;
    let blobs = env.servers[0].dir.join("data/blobs");
    let nginx_tls = servers::start_nginx_tls(
        &dir.join("nginx"),
        &blobs,
        &[StaticManifest {
            path: manifest_path(),
            file: blob_file(&blobs, &env.image.manifest),
            media_type: OCI_MANIFEST.into(),
            digest: env.image.manifest.digest.clone(),
        }],
        Some(&pki.server),
    )?;

    // Column 0 wharf, 1 nginx; plain: the run's own servers.
    let tls_servers = [&wharf_tls, &nginx_tls];
    let pick = |mode: Mode, col: usize| {
        if mode.tls() {
            tls_servers[col]
        } else {
            &env.servers[col]
        }
    };
    let big = env.big();
    let blob = blob_path(REPO, big);
    let ca = pki.ca.as_path();

    // Every server answers right in every mode, and the blob is in the page cache for each.
    let mut handshakes = Vec::new();
    for mode in Mode::ALL {
        for col in 0..2 {
            let s = pick(mode, col);
            let f = curl_ok(s, mode, &blob, &[], ca, Some(big.len), mode.tls())?;
            if mode == Mode::TlsHttp1 {
                handshakes.push(format!("{} {}", s.name, negotiated(&f.stderr)));
            }
        }
    }

    // 11a: interleaved per repetition, every mode on both servers.
    let [mut rate, mut cpu, mut rss]: [ByMode; 3] = Default::default();
    // TLS ÷ plain per repetition, each server against itself.
    let [mut cpu_ratio, mut rate_ratio]: [PerServer; 2] = Default::default();
    let ktls0 = ktls_tx_sessions();
    for _ in 0..env.s.reps {
        for (m, mode) in Mode::ALL.into_iter().enumerate() {
            for col in 0..2 {
                let s = pick(mode, col);
                let (f, c) = env.measure(s.pids(), vec![], || {
                    curl_ok(s, mode, &blob, &[], ca, Some(big.len), false)
                })?;
                rate[m][col].push(f.speed / 1e6);
                cpu[m][col].push(c.cpu_s / gb(f.bytes));
                rss[m][col].push(c.peak_rss_mib);
            }
        }
        for col in 0..2 {
            let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
            cpu_ratio[col].push(last(&cpu[1][col]) / last(&cpu[0][col]));
            rate_ratio[col].push(last(&rate[1][col]) / last(&rate[0][col]));
        }
    }
    let ktls1 = ktls_tx_sessions();

    let mut metrics = Vec::new();
    for (m, mode) in Mode::ALL.into_iter().enumerate() {
        metrics.push(metric(
            &format!("throughput, {}", mode.label()),
            "MB/s",
            std::mem::take(&mut rate[m]),
        ));
    }
    metrics.push(metric("TLS ÷ plain, throughput, HTTP/1.1", "×", rate_ratio));
    for (m, mode) in Mode::ALL.into_iter().enumerate() {
        metrics.push(metric(
            &format!("server CPU, {}", mode.label()),
            "s per GB",
            std::mem::take(&mut cpu[m]),
        ));
    }
    metrics.push(metric("TLS ÷ plain, CPU, HTTP/1.1", "×", cpu_ratio));
    for (m, mode) in Mode::ALL.into_iter().enumerate() {
        metrics.push(peak(
            &format!("peak RSS, {}, max", mode.label()),
            std::mem::take(&mut rss[m]),
        ));
    }
    let ktls_note = match (ktls0, ktls1) {
        (Some(a), Some(b)) => format!(
            "kTLS: the kernel has it; {} TLS sessions got kernel encryption during the runs (nginx \
             asks for it with `ssl_conf_command Options KTLS`, and then sendfiles through TLS; \
             rustls in wharf does not use kTLS)",
            b.saturating_sub(a)
        ),
        _ => format!(
            "kTLS: none on this kernel (no /proc/net/tls_stat; {}): nginx's `ssl_conf_command \
             Options KTLS` has no effect, so nginx, like wharf, encrypts in user space and copies: no \
             sendfile through TLS",
            kernel_tls_config().unwrap_or_else(|| "kernel config not readable".into())
        ),
    };
    let a = CaseResult {
        id: "11a".into(),
        title: format!(
            "TLS listener: warm blob GET, {}, one stream",
            size_label(big.len)
        ),
        metrics,
        notes: vec![
            format!(
                "client: curl (OpenSSL), body to /dev/null, certificate verified against the \
                 test CA; --http1.1 or --http2 (ALPN); MB/s is curl's own average; plain: the \
                 run's wharf (sendfile) and nginx (sendfile), TLS: a second wharf with \
                 [server.tls] and a second nginx (listen ssl http2) on the same files; {} runs, \
                 interleaved",
                env.s.reps
            ),
            format!("negotiated: {}", handshakes.join("; ")),
            ktls_note,
        ],
    };

    // 11b: manifest GET by tag under load, plain and TLS, keep-alive.
    let manifest = manifest_path();
    let accept = [("Accept", ACCEPT)];
    for col in 0..2 {
        let s = pick(Mode::TlsHttp1, col);
        let f = curl(s, Mode::TlsHttp1, &manifest, &accept, ca, false)?;
        ensure!(
            f.status == 200 && f.bytes == env.image.manifest.len,
            "{} (TLS): GET {manifest} answered {} with {} bytes",
            s.name,
            f.status,
            f.bytes
        );
    }
    // [plain, TLS][wharf, nginx]
    let [mut rps, mut us, mut rss]: [[[Vec<f64>; 2]; 2]; 3] = Default::default();
    let mut errors = [[0u64; 2]; 2];
    for _ in 0..env.s.reps {
        for (m, mode) in [Mode::Plain, Mode::TlsHttp1].into_iter().enumerate() {
            for col in 0..2 {
                let s = pick(mode, col);
                let scheme = if mode.tls() { "https" } else { "http" };
                let url = format!("{scheme}://{}{manifest}", s.addr);
                let (l, c) = env.measure(s.pids(), vec![], || {
                    load::wrk_url(&url, &accept, env.s.conns, env.s.load_secs)
                })?;
                ensure!(
                    l.requests > 0,
                    "{} ({}): no request succeeded",
                    s.name,
                    mode.label()
                );
                rps[m][col].push(l.rps());
                us[m][col].push(c.cpu_s / l.requests as f64 * 1e6);
                rss[m][col].push(c.peak_rss_mib);
                errors[m][col] += l.errors;
            }
        }
    }
    let [us_plain, us_tls] = us;
    let added = |col: usize| -> Vec<f64> {
        us_tls[col]
            .iter()
            .zip(&us_plain[col])
            .map(|(t, p)| t - p)
            .collect()
    };
    let added: PerServer = [added(0), added(1), Vec::new()];
    let [rps_plain, rps_tls] = rps;
    let [rss_plain, rss_tls] = rss;
    let mut notes = vec![format!(
        "wrk -t2 -c{} -d{}s, https:// (OpenSSL, HTTP/1.1: wrk offers no ALPN) and http://; \
         keep-alive: each connection's handshake happens once and is amortised over the run ({} \
         handshakes in {} s); added: TLS − plain per run, each server against itself",
        env.s.conns, env.s.load_secs, env.s.conns, env.s.load_secs
    )];
    for (m, label) in ["plain", "TLS"].into_iter().enumerate() {
        for (col, name) in ["wharf", "nginx"].into_iter().enumerate() {
            if errors[m][col] > 0 {
                notes.push(format!(
                    "{name} ({label}): {} errors (non-2xx or socket) over all runs",
                    errors[m][col]
                ));
            }
        }
    }
    let with_empty = |[a, b]: [Vec<f64>; 2]| -> PerServer { [a, b, Vec::new()] };
    let b = CaseResult {
        id: "11b".into(),
        title: "TLS listener: manifest GET by tag under load (wrk)".into(),
        metrics: vec![
            metric("requests, plain", "req/s", with_empty(rps_plain)),
            metric("requests, TLS", "req/s", with_empty(rps_tls)),
            metric("server CPU, plain", "µs per req", with_empty(us_plain)),
            metric("server CPU, TLS", "µs per req", with_empty(us_tls)),
            metric("added by TLS", "µs per req", added),
            peak("peak RSS, plain, max", with_empty(rss_plain)),
            peak("peak RSS, TLS, max", with_empty(rss_tls)),
        ],
        notes,
    };
    Ok(vec![a, b])
}
