//! Processes under test: wharf itself and the CNCF distribution registry as a reference peer.
//!
//! Every test starts its own instances on free loopback ports in private temp dirs, so tests can run in
//! parallel and nothing leaks between them or from the machine. Instances stop on Drop (SIGTERM, then
//! SIGKILL if they hang), and a test that panics prints the tail of the server's log.

use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to answer `GET /v2/` after spawning. Generous because CI machines are slow
/// and wharf may replay metadata on start; we poll, so a fast start costs nothing.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before we fall back to SIGKILL (and fail the graceful check).
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A free port on 127.0.0.1. The listener is dropped before the server binds, so another process may
/// take the port in between: rare, and `start_server` retries on another port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Finds `name` on PATH or fails the test: a missing peer must never turn into a silent skip.
pub fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    panic!("{name} not found: install it with `{install_hint}` or run tests/run.sh");
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The wharf binary: `$WHARF_BIN`, else `<workspace>/target/debug/wharf`.
pub fn wharf_bin() -> PathBuf {
    let path = match std::env::var_os("WHARF_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/wharf"),
    };
    if !is_executable(&path) {
        panic!(
            "wharf binary not found at {}: build it with `cargo build -p wharf` (tests/run.sh does this)",
            path.display()
        );
    }
    path
}

/// What a client printed, stdout then stderr, for assertions on what a user sees.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Polls until the child exits or the deadline passes.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for a child with piped output to exit within `deadline` (killed otherwise: `None`).
pub fn wait_output_within(mut child: Child, deadline: Duration) -> Option<std::process::Output> {
    // The pipes are drained while waiting, so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let status = wait_with_deadline(&mut child, deadline);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// What answer to `GET http://addr/v2/` means "up": wharf must say 200; a peer that wants TLS (Go answers
/// plain HTTP with 400) or a token (401) is up as soon as it answers at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    Status200,
    AnyAnswer,
}

impl Ready {
    fn accepts(self, status: u16) -> bool {
        match self {
            Ready::Status200 => status == 200,
            Ready::AnyAnswer => true,
        }
    }
}

/// Polls `GET http://addr/v2/` until it answers as `ready` wants. Returns the exit status if the process
/// exits first (the caller decides whether to retry on another port); fails, with the log, on the deadline.
fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    what: &str,
    log: &Path,
    ready: Ready,
) -> Result<(), ExitStatus> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let url = format!("http://{addr}/v2/");
    let end = Instant::now() + READY_DEADLINE;
    let mut last;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(status);
        }
        match agent.get(&url).call() {
            Ok(resp) if ready.accepts(resp.status().as_u16()) => return Ok(()),
            Ok(resp) => last = format!("status {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not answer 200 on GET {url} within {READY_DEADLINE:?} (last: {last})\n\
                 --- log tail ({}) ---\n{}",
                log.display(),
                log_tail(log, 60)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Spawns a server until it is ready, on a new free port each try. `free_port` can race with another
/// process taking the port before the server binds it; that (and only that) is retried.
fn start_server(
    what: &str,
    log: &Path,
    ready: Ready,
    mut spawn: impl FnMut(SocketAddr) -> Child,
) -> (Child, SocketAddr) {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_start = fs::metadata(log).map(|m| m.len()).unwrap_or(0) as usize;
        let mut child = spawn(addr);
        match wait_ready(&mut child, addr, what, log, ready) {
            Ok(()) => return (child, addr),
            Err(status) => {
                let text = fs::read(log).unwrap_or_default();
                let this_run =
                    String::from_utf8_lossy(&text[log_start.min(text.len())..]).to_lowercase();
                if attempt < ATTEMPTS && this_run.contains("in use") {
                    continue;
                }
                panic!(
                    "{what} exited with {status} before answering GET http://{addr}/v2/\n\
                     --- log tail ({}) ---\n{}",
                    log.display(),
                    log_tail(log, 60)
                );
            }
        }
    }
    unreachable!()
}

/// Spawns a server on a fixed address (a restart, which clients must find where it was) until it is ready.
fn start_server_at(
    what: &str,
    log: &Path,
    addr: SocketAddr,
    ready: Ready,
    spawn: impl FnOnce(SocketAddr) -> Child,
) -> Child {
    let mut child = spawn(addr);
    if let Err(status) = wait_ready(&mut child, addr, what, log, ready) {
        panic!(
            "{what} exited with {status} before answering GET http://{addr}/v2/ (restart on the same \
             port; was it taken meanwhile?)\n--- log tail ({}) ---\n{}",
            log.display(),
            log_tail(log, 60)
        );
    }
    child
}

fn log_file(path: &Path) -> File {
    // Append, so a restarted server's log follows the first run's in one file.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file")
}

/// Tests must never reach past this machine, and wharf is also a pull-through mirror: by default it
/// sends names it does not hold (every name here has no registry host) to docker.io. Keep such names
/// local (unless a test names a local upstream as the default), and replace the built-in docker.io
/// upstream with a closed loopback port (unless a test maps docker.io to a local registry itself), so
/// that no request (`?ns=docker.io` included) can leave the machine whatever the test does.
const HERMETIC_DOCKER_IO: &str = "
[[upstream]]
host = \"docker.io\"
endpoint = \"http://127.0.0.1:9\"
insecure = true
";

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

/// One `[[upstream]]` entry; `None` leaves the key out so wharf's defaults are what we test. Every
/// endpoint a test configures must be on this machine.
#[derive(Clone, Debug, Default)]
pub struct UpstreamSpec {
    pub host: String,
    pub endpoint: String,
    pub prefix: Option<String>,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub connect_timeout_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
}

impl UpstreamSpec {
    /// A plain-http upstream on `addr`, known to clients as `host` (often the same `127.0.0.1:PORT`).
    pub fn http(host: impl Into<String>, addr: SocketAddr) -> UpstreamSpec {
        UpstreamSpec {
            host: host.into(),
            endpoint: format!("http://{addr}"),
            insecure: true,
            ..Default::default()
        }
    }

    pub fn with_prefix(mut self, prefix: &str) -> UpstreamSpec {
        self.prefix = Some(prefix.to_owned());
        self
    }

    fn to_toml(&self) -> String {
        let host = self.endpoint.split("://").nth(1).unwrap_or_default();
        assert!(
            host.starts_with("127.0.0.1:") || host.starts_with("localhost:"),
            "test upstream endpoints must stay on this machine: {}",
            self.endpoint
        );
        let mut t = format!(
            "\n[[upstream]]\nhost = {}\nendpoint = {}\ninsecure = {}\n",
            toml_str(&self.host),
            toml_str(&self.endpoint),
            self.insecure
        );
        let opt = |t: &mut String, k: &str, v: Option<String>| {
            if let Some(v) = v {
                *t += &format!("{k} = {}\n", toml_str(&v));
            }
        };
        opt(&mut t, "prefix", self.prefix.clone());
        opt(
            &mut t,
            "ca_file",
            self.ca_file.as_ref().map(|p| p.display().to_string()),
        );
        opt(&mut t, "username", self.username.clone());
        opt(&mut t, "password_env", self.password_env.clone());
        opt(
            &mut t,
            "password_file",
            self.password_file.as_ref().map(|p| p.display().to_string()),
        );
        if let Some(v) = self.connect_timeout_secs {
            t += &format!("connect_timeout_secs = {v}\n");
        }
        if let Some(v) = self.timeout_secs {
            t += &format!("timeout_secs = {v}\n");
        }
        t
    }
}

/// `[mirror]` settings and upstreams. The default is hermetic: no default upstream, no upstream but the
/// closed-port docker.io stand-in.
#[derive(Clone, Debug, Default)]
pub struct MirrorOptions {
    /// `mirror.default_upstream`; `None` writes `""` (names without a host stay local).
    pub default_upstream: Option<String>,
    pub tag_ttl_secs: Option<u64>,
    pub stale_if_error: Option<bool>,
    /// More `[mirror]` keys, as `key = value` TOML lines (`platforms`, `platform_mode`).
    pub keys: Vec<String>,
    pub upstreams: Vec<UpstreamSpec>,
}

impl MirrorOptions {
    fn to_toml(&self) -> String {
        let mut t = format!(
            "\n[mirror]\ndefault_upstream = {}\n",
            toml_str(self.default_upstream.as_deref().unwrap_or(""))
        );
        if let Some(v) = self.tag_ttl_secs {
            t += &format!("tag_ttl_secs = {v}\n");
        }
        if let Some(v) = self.stale_if_error {
            t += &format!("stale_if_error = {v}\n");
        }
        for k in &self.keys {
            t += &format!("{k}\n");
        }
        for u in &self.upstreams {
            t += &u.to_toml();
        }
        if !self.upstreams.iter().any(|u| u.host == "docker.io") {
            t += HERMETIC_DOCKER_IO;
        }
        t
    }
}

/// `[registry]` settings; `None` leaves the key out so wharf's defaults are what we test.
#[derive(Clone, Debug, Default)]
pub struct WharfOptions {
    pub delete_enabled: Option<bool>,
    pub max_manifest_bytes: Option<u64>,
    /// Put a decoy listen address and data dir in the config file and pass the real ones as
    /// `WHARF_LISTEN` / `WHARF_DATA_DIR`: the environment must win.
    pub via_env: bool,
    /// `[mirror]` and `[[upstream]]`s; hermetic by default.
    pub mirror: MirrorOptions,
    /// Extra environment for the wharf process (e.g. an upstream's `password_env`).
    pub env: Vec<(String, String)>,
    /// More `[server]` and `[registry]` keys, as `key = value` TOML lines (timeouts, session limits).
    pub server_keys: Vec<String>,
    pub registry_keys: Vec<String>,
    /// TOML appended at the end of the config (`[[plugin]]` entries).
    pub extra_toml: String,
}

impl WharfOptions {
    pub fn with_delete() -> Self {
        WharfOptions {
            delete_enabled: Some(true),
            ..Default::default()
        }
    }
}

/// A running wharf with its own temp dir (config, data dir, log). `stop`/`kill9` + `start_again` reuse the
/// same data dir, which is how the restart and crash tests look at what survived.
pub struct Wharf {
    child: Option<Child>,
    /// With `WHARF_E2E_BACKENDS=shared` (or `start_shared`): this wharf's own Postgres and Garage,
    /// stopped after it.
    shared: Option<SharedBackends>,
    /// The shared backends this wharf's config names (its own, or another wharf's: `start_sharing`).
    backends: Option<BackendConf>,
    addr: SocketAddr,
    /// With `via_env`, the listen address in the config file, which wharf must not use.
    decoy_addr: Option<SocketAddr>,
    options: WharfOptions,
    home: TempDir,
}

impl Wharf {
    pub fn start(options: WharfOptions) -> Wharf {
        Wharf::start_on(
            options,
            SharedBackends::wanted().then(SharedBackends::start),
            None,
        )
    }

    /// On its own Postgres and Garage, whatever `WHARF_E2E_BACKENDS` says (the shared backends' own
    /// tests).
    pub fn start_shared(options: WharfOptions) -> Wharf {
        Wharf::start_on(options, Some(SharedBackends::start()), None)
    }

    /// On files and redb, whatever `WHARF_E2E_BACKENDS` says (`wharf storage copy` between pairs).
    pub fn start_files(options: WharfOptions) -> Wharf {
        Wharf::start_on(options, None, None)
    }

    /// A second wharf on `other`'s Postgres and Garage (a replica: one cache, two processes).
    pub fn start_sharing(options: WharfOptions, other: &Wharf) -> Wharf {
        let conf = other
            .backends
            .clone()
            .expect("start_sharing: the other wharf runs on no shared backends");
        Wharf::start_on(options, None, Some(conf))
    }

    fn start_on(
        options: WharfOptions,
        shared: Option<SharedBackends>,
        conf: Option<BackendConf>,
    ) -> Wharf {
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-")
            .tempdir()
            .expect("tempdir");
        fs::create_dir_all(home.path().join("data")).expect("create data dir");
        let mut wharf = Wharf {
            child: None,
            backends: conf.or_else(|| shared.as_ref().map(SharedBackends::conf)),
            shared,
            addr: "127.0.0.1:0".parse().unwrap(),
            decoy_addr: None,
            options,
            home,
        };
        wharf.start_again();
        wharf
    }

    /// Starts wharf (again) on the same data dir, on a fresh port: callers must re-read `base()`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "wharf is already running");
        let bin = wharf_bin();
        let log = self.log_path();
        // With client authentication on, `GET /v2/` asks for credentials (401); with TLS on, a plain
        // request is answered 400 (use https): either is ready too.
        let toml = &self.options.extra_toml;
        let ready = if toml.contains("[auth]") || toml.contains("[server.tls]") {
            Ready::AnyAnswer
        } else {
            Ready::Status200
        };
        let (child, addr) = start_server("wharf", &log, ready, |addr| {
            let config = self.home.path().join("wharf.toml");
            let (listen, data_dir) = if self.options.via_env {
                let decoy = SocketAddr::from(([127, 0, 0, 1], free_port()));
                self.decoy_addr = Some(decoy);
                (decoy, self.decoy_data_dir())
            } else {
                (addr, self.data_dir())
            };
            fs::write(&config, self.config_toml(listen, &data_dir)).expect("write wharf.toml");
            let out = log_file(&log);
            let mut cmd = Command::new(&bin);
            cmd.arg("serve").arg("--config").arg(&config);
            // The config file must be the whole truth: WHARF_* overrides from the caller's shell would
            // change it (WHARF_LOG, the log filter, is let through for debugging).
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("WHARF_") && key != "WHARF_LOG" {
                    cmd.env_remove(key);
                }
            }
            if self.options.via_env {
                cmd.env("WHARF_LISTEN", addr.to_string())
                    .env("WHARF_DATA_DIR", self.data_dir());
            }
            for (k, v) in &self.options.env {
                cmd.env(k, v);
            }
            if let Some(b) = &self.backends {
                cmd.envs(b.env.iter().cloned());
            }
            cmd.stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup log"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()))
        });
        self.child = Some(child);
        self.addr = addr;
    }

    fn config_toml(&self, listen: SocketAddr, data_dir: &Path) -> String {
        // Compiled plugins are shared by every test's wharf: a Python or JS component takes tens of
        // seconds to compile in a debug build, once.
        let plugin_cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-plugin-cache");
        let mut toml = format!(
            "[server]\nlisten = \"{listen}\"\n{}\n[storage]\ndata_dir = \"{}\"\nplugin_cache_dir = \"{}\"\n{}\n[registry]\n",
            self.options
                .server_keys
                .iter()
                .map(|k| format!("{k}\n"))
                .collect::<String>(),
            data_dir.display(),
            plugin_cache.display(),
            self.backends.as_ref().map(|b| b.toml.clone()).unwrap_or_default()
        );
        for k in &self.options.registry_keys {
            toml += &format!("{k}\n");
        }
        if let Some(v) = self.options.delete_enabled {
            toml += &format!("delete_enabled = {v}\n");
        }
        if let Some(v) = self.options.max_manifest_bytes {
            toml += &format!("max_manifest_bytes = {v}\n");
        }
        toml + &self.options.mirror.to_toml() + "\n" + &self.options.extra_toml
    }

    /// Graceful stop: SIGTERM, then wait. Returns the exit status; fails if wharf does not stop in time.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("wharf is not running");
        sigterm(&child);
        match wait_with_deadline(&mut child, STOP_DEADLINE) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "wharf did not exit within {STOP_DEADLINE:?} of SIGTERM\n--- log tail ---\n{}",
                    log_tail(&self.log_path(), 40)
                );
            }
        }
    }

    /// Crash: SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("wharf is not running");
        child.kill().expect("SIGKILL wharf");
        child.wait().expect("reap wharf");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The options the next `start_again` writes its config from: a restart with another policy over
    /// the same data.
    pub fn options_mut(&mut self) -> &mut WharfOptions {
        &mut self.options
    }

    /// The running wharf's process id (to look at its descriptors, or lower its limits).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("wharf is not running").id()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as skopeo's docker:// references want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// This wharf's Postgres and Garage, when the suite runs on the shared backends.
    pub fn shared(&self) -> Option<&SharedBackends> {
        self.shared.as_ref()
    }

    pub fn shared_mut(&mut self) -> Option<&mut SharedBackends> {
        self.shared.as_mut()
    }

    /// The environment a `wharf` command run on this config needs (the shared backends' secrets).
    pub fn backend_env(&self) -> Vec<(&'static str, String)> {
        self.backends
            .as_ref()
            .map(|b| b.env.clone())
            .unwrap_or_default()
    }

    pub fn decoy_addr(&self) -> Option<SocketAddr> {
        self.decoy_addr
    }

    /// The data dir named in the config file when `via_env` is set; wharf must not use it.
    pub fn decoy_data_dir(&self) -> PathBuf {
        self.home.path().join("decoy-data")
    }

    /// Where blob files are: the store itself, or on the shared backends the local hot cache
    /// (`<data_dir>/s3-local`).
    pub fn blobs_dir(&self) -> PathBuf {
        self.local_store_dir().join("blobs")
    }

    pub fn ingest_dir(&self) -> PathBuf {
        self.local_store_dir().join("ingest")
    }

    /// The digests the content store holds: the files under `blobs/`, or on the shared backends the
    /// objects in the bucket (the local cache is only a copy of some of them).
    pub fn stored_digests(&self) -> std::collections::BTreeSet<String> {
        match &self.shared {
            Some(b) => b
                .garage
                .list_keys("blobs/sha256/")
                .into_iter()
                .filter_map(|k| k.rsplit('/').next().map(|h| format!("sha256:{h}")))
                .collect(),
            None => crate::oci::digests_on_disk(&self.blobs_dir()),
        }
    }

    fn local_store_dir(&self) -> PathBuf {
        match &self.backends {
            Some(_) => self.data_dir().join("s3-local"),
            None => self.data_dir(),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("wharf.log")
    }

    /// The config file `wharf serve` runs with, for CLI commands that act on this server (`wharf gc`).
    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("wharf.toml")
    }

    /// A private scratch dir for the test (layouts, pulled images), removed with the instance.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.home.path().join("scratch").join(name);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- wharf log tail ({}) ---\n{}\n--- end of wharf log ---",
                self.log_path().display(),
                log_tail(&self.log_path(), 40)
            );
        }
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            if wait_with_deadline(&mut child, STOP_DEADLINE).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The suite's second backend pair: content on Garage (S3), metadata on Postgres, each a real server
/// started for one wharf. Chosen by `WHARF_E2E_BACKENDS=shared` (`tests/run.sh` runs the suite once
/// on the default files + redb, then once so); `fs` or unset: the default pair.
pub struct SharedBackends {
    pub postgres: wharf_test_servers::Postgres,
    pub garage: wharf_test_servers::Garage,
}

/// Where the shared pass's credentials reach wharf: the environment, as the README tells users.
const PG_PASSWORD_ENV: &str = "E2E_PG_PASSWORD";
const S3_KEY_ID_ENV: &str = "E2E_S3_KEY_ID";
const S3_SECRET_ENV: &str = "E2E_S3_SECRET";

impl SharedBackends {
    pub fn wanted() -> bool {
        match std::env::var("WHARF_E2E_BACKENDS").as_deref() {
            Ok("shared") => true,
            Ok("fs") | Ok("") | Err(_) => false,
            Ok(other) => panic!("WHARF_E2E_BACKENDS={other}: use fs (the default) or shared"),
        }
    }

    /// Postgres comes up with TLS on, its certificate from a private CA, as Debian's packaged
    /// clusters do: wharf connects as psql would (encrypted, the certificate not checked) unless the
    /// URL asks for more.
    pub fn start() -> SharedBackends {
        SharedBackends {
            postgres: wharf_test_servers::Postgres::start_tls(&["127.0.0.1", "localhost"]),
            garage: wharf_test_servers::Garage::start(),
        }
    }

    fn conf(&self) -> BackendConf {
        BackendConf {
            toml: self.toml(),
            env: self.env(),
        }
    }

    /// The `[storage]` keys (inside that table) and the `[metadata]` table.
    pub fn toml(&self) -> String {
        let g = &self.garage;
        format!(
            "backend = \"s3\"\n[storage.s3]\nendpoint = {}\nbucket = {}\nregion = {}\n\
             access_key_id_env = \"{S3_KEY_ID_ENV}\"\nsecret_access_key_env = \"{S3_SECRET_ENV}\"\n\
             \n[metadata]\nbackend = \"postgres\"\nurl = {}\npassword_env = \"{PG_PASSWORD_ENV}\"\n",
            toml_str(&g.endpoint()),
            toml_str(g.bucket()),
            toml_str(g.region()),
            toml_str(&self.postgres.url_without_password()),
        )
    }

    /// The secrets the config names, for every wharf command run on this config.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                PG_PASSWORD_ENV,
                wharf_test_servers::postgres::PASSWORD.to_owned(),
            ),
            (S3_KEY_ID_ENV, self.garage.access_key_id().to_string()),
            (S3_SECRET_ENV, self.garage.secret_access_key().to_string()),
        ]
    }
}

/// What a wharf's config and environment say of its shared backends.
#[derive(Clone, Debug)]
struct BackendConf {
    toml: String,
    env: Vec<(&'static str, String)>,
}

/// How a `docker-registry` is set up beyond plain http on a free port.
#[derive(Clone, Debug, Default)]
pub struct DistOptions {
    /// `http.tls`: serve https with this PEM certificate chain and PEM private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `auth.token`: require bearer tokens from a token service.
    pub token: Option<TokenAuth>,
}

/// distribution's `auth.token` settings.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM bundle of the CAs the tokens' signing certificates (`x5c`) must chain to.
    pub rootcertbundle: PathBuf,
}

/// The CNCF distribution registry (Debian `docker-registry`), a known-good peer to push to and copy
/// from, and the upstream the mirror tests pull through. Its access log (one Apache-style line per
/// request, with the user agent) goes to `log_path()`.
pub struct DistRegistry {
    child: Option<Child>,
    addr: SocketAddr,
    options: DistOptions,
    home: TempDir,
}

impl DistRegistry {
    pub fn start() -> DistRegistry {
        DistRegistry::start_with(DistOptions::default())
    }

    pub fn start_with(options: DistOptions) -> DistRegistry {
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-dist-")
            .tempdir()
            .expect("tempdir");
        let mut registry = DistRegistry {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            options,
            home,
        };
        let log = registry.log_path();
        let (child, addr) = start_server("docker-registry", &log, Ready::AnyAnswer, |addr| {
            registry.spawn(addr)
        });
        registry.child = Some(child);
        registry.addr = addr;
        registry
    }

    fn spawn(&self, addr: SocketAddr) -> Child {
        let bin = require_tool("docker-registry", "apt-get install docker-registry");
        let config = self.home.path().join("config.yml");
        let mut yml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            self.storage_dir().display()
        );
        if let Some((cert, key)) = &self.options.tls {
            yml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some(t) = &self.options.token {
            yml += &format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.rootcertbundle.display()
            );
        }
        fs::write(&config, yml).expect("write registry config");
        let out = log_file(&self.log_path());
        Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()))
    }

    /// Graceful stop (SIGTERM); the storage stays, and `start_again` serves it on the same address.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("docker-registry is not running");
        sigterm(&child);
        if wait_with_deadline(&mut child, STOP_DEADLINE).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and storage (clients configured with its address find it).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "docker-registry is already running");
        let log = self.log_path();
        let child = start_server_at("docker-registry", &log, self.addr, Ready::AnyAnswer, |a| {
            self.spawn(a)
        });
        self.child = Some(child);
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://` when it serves TLS.
    pub fn base(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// `storage.filesystem.rootdirectory`
    pub fn storage_dir(&self) -> PathBuf {
        self.home.path().join("storage")
    }

    /// Where distribution keeps a blob's bytes: `docker/registry/v2/blobs/sha256/<xx>/<hex>/data`.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = crate::oci::hex_part(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("registry.log")
    }

    /// The access log's request lines (`"GET /v2/... HTTP/1.1" 200 ...`), in order.
    pub fn access_log(&self) -> Vec<String> {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\" ") && l.contains(" HTTP/1."))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for DistRegistry {
    fn drop(&mut self) {
        let log = self.log_path();
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log tail ({}) ---\n{}\n--- end ---",
                log.display(),
                log_tail(&log, 20)
            );
        }
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            if wait_with_deadline(&mut child, STOP_DEADLINE).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
