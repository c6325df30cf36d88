//! The three servers under test, each on a free 127.0.0.1 port with its own temp dir, stopped when
//! dropped (and, through PR_SET_PDEATHSIG, when the driver dies): wharf (release binary), nginx
//! serving wharf's own blob files, and the CNCF distribution registry (Debian `docker-registry`).
//!
//! Nothing may leave the machine: wharf's built-in docker.io upstream is pointed at a closed local
//! port, and every other upstream is a local registry.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use wharf_test_servers::{Garage, Postgres};

use crate::http;
use crate::procstat;

const READY_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A port nobody listens on right now (the listener is dropped; the server binds it next).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running server process.
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Its config, data and log live here.
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The processes whose cost is the server's: nginx's master and workers, else the one process.
    pub fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        v.extend(procstat::children(self.pid()));
        v
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within the deadline.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `cmd` with its output in `log` and waits until `GET /v2/` answers on `addr`.
fn spawn(
    name: &'static str,
    mut cmd: Command,
    addr: SocketAddr,
    dir: &Path,
    log: PathBuf,
) -> Result<Server> {
    let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGTERM the child when the
    // driver (the spawning thread, always the main thread here) goes away.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name}: {cmd:?}"))?;
    let mut server = Server {
        name,
        addr,
        dir: dir.to_owned(),
        log,
        child: Some(child),
    };
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(c) = server.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                server.child = None;
                bail!(
                    "{name} exited at startup ({status}); log:\n{}",
                    server.log_tail(20)
                );
            }
        }
        if let Ok((h, _)) = http::call(addr, "GET", "/v2/", &[], None) {
            if h.status < 500 {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer on {addr} within {READY_DEADLINE:?}; log:\n{}",
                server.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A registry wharf mirrors, besides the closed docker.io.
pub struct UpstreamEntry {
    pub host: String,
    pub endpoint: String,
}

/// wharf, release build, with `<dir>/data` as data dir.
pub fn start_wharf(bin: &Path, dir: &Path, upstreams: &[UpstreamEntry]) -> Result<Server> {
    start_wharf_with(bin, dir, upstreams, "")
}

/// `start_wharf` with more TOML at the end of its config (`[[plugin]]` entries).
pub fn start_wharf_with(
    bin: &Path,
    dir: &Path,
    upstreams: &[UpstreamEntry],
    extra_toml: &str,
) -> Result<Server> {
    start_wharf_mirror(bin, dir, upstreams, "", extra_toml)
}

/// `start_wharf_with` plus keys of its `[mirror]` table (`platforms = [...]`), which the config
/// already opens (TOML allows a table once).
pub fn start_wharf_mirror(
    bin: &Path,
    dir: &Path,
    upstreams: &[UpstreamEntry],
    mirror_keys: &str,
    extra_toml: &str,
) -> Result<Server> {
    start_wharf_on(bin, dir, upstreams, None, mirror_keys, extra_toml)
}

/// `start_wharf_mirror` on the shared backends (`Some`) or on files and redb (`None`).
pub fn start_wharf_on(
    bin: &Path,
    dir: &Path,
    upstreams: &[UpstreamEntry],
    backends: Option<&BackendConf>,
    mirror_keys: &str,
    extra_toml: &str,
) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let addr = loopback(free_port()?);
    // docker.io is built in and would reach the Internet: point it at a port nobody listens on.
    let closed = free_port()?;
    let mut cfg = format!(
        "[server]\nlisten = \"{addr}\"\nshutdown_grace_secs = 2\n\n\
         [storage]\ndata_dir = \"{}\"\n{}\n\
         [mirror]\ndefault_upstream = \"\"\n{mirror_keys}\n\
         [[upstream]]\nhost = \"docker.io\"\nendpoint = \"http://127.0.0.1:{closed}\"\ninsecure = true\n\
         connect_timeout_secs = 1\ntimeout_secs = 5\n",
        dir.join("data").display(),
        backends.map_or("", |b| b.toml.as_str()),
    );
    for u in upstreams {
        write!(
            cfg,
            "\n[[upstream]]\nhost = \"{}\"\nendpoint = \"{}\"\ninsecure = true\n",
            u.host, u.endpoint
        )?;
    }
    cfg.push('\n');
    cfg.push_str(extra_toml);
    let conf = dir.join("wharf.toml");
    fs::write(&conf, cfg)?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg("--config").arg(&conf);
    // Only the config file counts: no WHARF_* overrides from the caller's shell. wharf's default log
    // level (info: one line per request) is part of what we measure.
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    if let Some(b) = backends {
        cmd.envs(b.env.iter().map(|(k, v)| (*k, v)));
    }
    spawn("wharf", cmd, addr, dir, dir.join("wharf.log"))
}

/// What a distribution instance is for.
pub enum DistMode {
    /// The peer under test: access log off, in-memory blob descriptor cache (a usual production
    /// setup).
    Peer,
    /// The upstream of the mirror cases: its access log counts the GETs each cold pull makes.
    Upstream,
    /// A pull-through cache of `remote` (distribution's `proxy.remoteurl`), the peer for cold pulls.
    Proxy { remote: String },
}

pub fn start_distribution(dir: &Path, mode: DistMode) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let addr = loopback(free_port()?);
    let accesslog = matches!(mode, DistMode::Upstream);
    let mut cfg = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: {}\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  cache:\n    blobdescriptor: inmemory\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: wharf-bench-not-a-secret\n",
        !accesslog,
        dir.join("root").display()
    );
    if let DistMode::Proxy { remote } = &mode {
        write!(cfg, "proxy:\n  remoteurl: {remote}\n")?;
    }
    let conf = dir.join("config.yml");
    fs::write(&conf, cfg)?;
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(&conf);
    spawn("distribution", cmd, addr, dir, dir.join("registry.log"))
}

/// A manifest nginx serves by tag: URL path, the file wharf stored, and its headers.
pub struct StaticManifest {
    pub path: String,
    pub file: PathBuf,
    pub media_type: String,
    pub digest: String,
}

/// A server certificate and its key (PEM files), for a TLS listener.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// wharf's `[server.tls]` table, to append to its config (TOML allows a sub-table anywhere).
    pub fn wharf_toml(&self) -> String {
        format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// nginx serving the blob files of `blobs_dir` (wharf's `<data_dir>/blobs`) under the registry's
/// URL paths, with sendfile: the fastest static server, the bar for warm content.
pub fn start_nginx(dir: &Path, blobs_dir: &Path, manifests: &[StaticManifest]) -> Result<Server> {
    start_nginx_tls(dir, blobs_dir, manifests, None)
}

/// `start_nginx`, with TLS (TLS 1.3 and 1.2, HTTP/2 and HTTP/1.1 by ALPN, as wharf offers) when
/// `tls` is given. `sendfile on` stays: nginx uses it through TLS only with kernel TLS, which
/// `Options KTLS` asks OpenSSL for where the kernel and OpenSSL have it; elsewhere nginx encrypts
/// in user space and copies, like wharf.
pub fn start_nginx_tls(
    dir: &Path,
    blobs_dir: &Path,
    manifests: &[StaticManifest],
    tls: Option<&TlsFiles>,
) -> Result<Server> {
    fs::create_dir_all(dir.join("tmp"))?;
    let addr = loopback(free_port()?);
    let d = dir.display();
    let blobs = blobs_dir.display();
    // As root nginx would drop its workers to `nobody`, who cannot read our temp dirs.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let mut locations = String::new();
    for m in manifests {
        write!(
            locations,
            "    location = {} {{\n      alias {};\n      default_type {};\n      \
             add_header Docker-Content-Digest {};\n    }}\n",
            m.path,
            m.file.display(),
            m.media_type,
            m.digest
        )?;
    }
    let (listen_tls, tls_keys) = match tls {
        None => ("", String::new()),
        Some(t) => (
            " ssl http2",
            format!(
                "    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                 ssl_protocols TLSv1.3 TLSv1.2;\n    ssl_conf_command Options KTLS;\n",
                t.cert.display(),
                t.key.display()
            ),
        ),
    };
    let conf = format!(
        "{user}worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
         \x20 keepalive_timeout 75s;\n  keepalive_requests 100000000;\n\
         \x20 client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
         \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20 scgi_temp_path {d}/tmp/scgi;\n\
         \x20 types {{ }}\n  default_type application/octet-stream;\n\
         \x20 server {{\n    listen {addr}{listen_tls};\n{tls_keys}\
         \x20   location = /v2/ {{ default_type application/json; return 200 '{{}}'; }}\n\
         \x20   location ~ \"^/v2/.+/blobs/sha256:(([0-9a-f]{{2}})[0-9a-f]{{62}})$\" {{\n\
         \x20     alias {blobs}/sha256/$2/$1;\n      add_header Docker-Content-Digest sha256:$1;\n    }}\n\
         {locations}  }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"));
    let server = spawn("nginx", cmd, addr, dir, dir.join("nginx.log"))?;
    // Workers start right after the master; the cost of nginx is all of them.
    let deadline = Instant::now() + READY_DEADLINE;
    while procstat::children(server.pid()).is_empty() {
        if Instant::now() > deadline {
            bail!("nginx started no worker processes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// Where the shared backends' secrets reach wharf: the environment, as the README tells users.
const PG_PASSWORD_ENV: &str = "BENCH_PG_PASSWORD";
const S3_KEY_ID_ENV: &str = "BENCH_S3_KEY_ID";
const S3_SECRET_ENV: &str = "BENCH_S3_SECRET";

/// What a wharf's config and environment say of its shared backends: keys inside `[storage]` (it
/// goes right after `data_dir`), the `[storage.s3]` and `[metadata]` tables, and the secrets.
pub struct BackendConf {
    pub toml: String,
    pub env: Vec<(&'static str, String)>,
}

/// The `--backends` pair, one of each per run (the same servers the e2e suite's shared pass starts,
/// crate `wharf-test-servers`): a throw-away Postgres cluster and a single-node Garage, on free
/// loopback ports. Each wharf on them names a database and a key prefix: the s3+pg wharfs of cases 1
/// and 3 share `wharf` and no prefix, each cold pull of case 4 gets a fresh database and prefix.
pub struct SharedBackends {
    pub postgres: Postgres,
    pub garage: Garage,
    /// `postgres --version` and `garage --version`, for the report.
    pub versions: String,
}

/// Runs `f`, which panics on failure (the test servers' way), as a `Result`.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    // Nothing `f` touches is used again after it panicked: the run stops or goes without it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        anyhow!("{what}: {why}")
    })
}

impl SharedBackends {
    pub fn start() -> Result<SharedBackends> {
        let postgres = no_panic("start Postgres", Postgres::start)?;
        let garage = no_panic("start Garage", Garage::start)?;
        let pg = postgres
            .try_psql("SHOW server_version")
            .map_err(|e| anyhow!("ask Postgres its version: {e}"))?;
        let g = garage
            .version()
            .unwrap_or_else(|| "garage (version unknown)".into());
        Ok(SharedBackends {
            versions: format!("{g}, PostgreSQL {pg}"),
            postgres,
            garage,
        })
    }

    /// A new, empty database in the cluster (a cold pull's fresh metadata).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.postgres
            .try_psql(&format!("CREATE DATABASE {name}"))
            .map(drop)
            .map_err(|e| anyhow!("create database {name}: {e}"))
    }

    /// The config of a wharf on database `db` and keys under `prefix` ("" for none), keeping at most
    /// `cache_max_bytes` of blobs in its local hot cache (0: none, every read goes to Garage; None:
    /// wharf's default).
    pub fn conf(&self, db: &str, prefix: &str, cache_max_bytes: Option<u64>) -> BackendConf {
        let g = &self.garage;
        let mut toml = format!(
            "backend = \"s3\"\n[storage.s3]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\n\
             access_key_id_env = \"{S3_KEY_ID_ENV}\"\nsecret_access_key_env = \"{S3_SECRET_ENV}\"\n",
            g.endpoint(),
            g.bucket(),
            g.region(),
        );
        if !prefix.is_empty() {
            toml += &format!("prefix = \"{prefix}\"\n");
        }
        if let Some(n) = cache_max_bytes {
            toml += &format!("cache_max_bytes = {n}\n");
        }
        toml += &format!(
            "\n[metadata]\nbackend = \"postgres\"\nurl = \"postgres://{}@127.0.0.1:{}/{db}\"\n\
             password_env = \"{PG_PASSWORD_ENV}\"\n",
            wharf_test_servers::postgres::USER,
            self.postgres.port(),
        );
        BackendConf {
            toml,
            env: vec![
                (
                    PG_PASSWORD_ENV,
                    wharf_test_servers::postgres::PASSWORD.to_owned(),
                ),
                (S3_KEY_ID_ENV, g.access_key_id().to_owned()),
                (S3_SECRET_ENV, g.secret_access_key().to_owned()),
            ],
        }
    }

    /// Garage's process and Postgres's (the postmaster and its children: one backend per wharf
    /// connection, its background workers): what the shared backends' CPU is counted over.
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.garage.pid().into_iter().collect();
        if let Some(pg) = self.postgres.pid() {
            v.push(pg);
            v.extend(procstat::children(pg));
        }
        v
    }

    /// The last lines of Garage's log: what it said when a request to it failed.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.garage.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the bucket holds `key` (listed the way wharf lists it).
    pub fn has_key(&self, prefix: &str, key: &str) -> Result<bool> {
        let keys = no_panic("list the bucket", || self.garage.list_keys(prefix))?;
        Ok(keys.iter().any(|k| k == key))
    }
}
