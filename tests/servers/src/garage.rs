//! A throw-away single-node Garage (S3-compatible object storage, 2.x): `replication_factor = 1`, its
//! own temporary directory, free loopback ports (RPC, S3 API, admin API). The cluster is made once
//! per test process into a template by Garage's own CLI (layout assigned and applied, a bucket
//! `wharf`, a key allowed to read and write it); each server copies the template and starts on new
//! ports in well under a second, where the CLI dance takes a few.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{free_port, tools_dir, wait_for_port, Child};

/// The S3 region Garage is configured with; clients must sign for it.
pub const REGION: &str = "garage";
/// The bucket every server has.
pub const BUCKET: &str = "wharf";
/// The key allowed on it (Garage's key ids are `GK` and 24 hex digits, secrets 64 hex digits).
pub const ACCESS_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET_ACCESS_KEY: &str =
    "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
/// The cluster's RPC secret: a server only ever talks to itself on loopback.
const RPC_SECRET: &str = "7a2f3e1c9b8d4a6f0e5c2b1a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";

pub struct Garage {
    dir: tempfile::TempDir,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    child: Option<Child>,
}

/// The binary: `$WHARF_GARAGE`, else where `tests/setup.sh` installs it.
fn binary() -> PathBuf {
    let bin = std::env::var_os("WHARF_GARAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("garage/bin/garage"));
    if !bin.exists() {
        panic!(
            "Garage is not installed ({} is missing): run tests/setup.sh (builds it once with \
             cargo install --locked garage, ~12 min), or point WHARF_GARAGE at a garage 2.x binary",
            bin.display()
        );
    }
    bin
}

struct Ports {
    rpc: u16,
    s3: u16,
    admin: u16,
}

/// Writes `dir/garage.toml` for a node keeping its state under `dir`.
fn write_config(dir: &Path, ports: &Ports, db_engine: &str) {
    let config = format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "{db_engine}"
# A test's cluster holds nothing worth an fsync.
metadata_fsync = false
data_fsync = false
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{RPC_SECRET}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
        dir = dir.display(),
        rpc = ports.rpc,
        s3 = ports.s3,
        admin = ports.admin,
    );
    std::fs::write(dir.join("garage.toml"), config).expect("write garage.toml");
}

fn spawn(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("garage.log"))
        .expect("garage.log");
    let child = Command::new(binary())
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .arg("server")
        .env("RUST_LOG", "garage=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start garage");
    Child(child)
}

/// Whether the admin API's `/health` answers 200 (the node is up and its layout usable).
fn healthy(admin_port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", admin_port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .lines()
        .next()
        .is_some_and(|status| status.split(' ').nth(1) == Some("200"))
}

/// Runs `garage -c <dir>/garage.toml <args>`; its stdout, or a panic with its words.
fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .args(args)
        .output()
        .expect("run garage");
    assert!(
        out.status.success(),
        "garage {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops a server: SIGTERM (its APIs close at once), then, if it is still draining its background
/// workers after a moment (it takes up to 10 s), SIGKILL. Nothing is lost either way: what it wrote
/// is in the page cache, and only a power loss would need the fsyncs a test node skips.
fn terminate(mut c: Child) {
    unsafe { libc::kill(c.pid() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(Some(_)) = c.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Dropping kills it.
}

/// Whether process `pid` listens on every one of `ports` (asked of `ss`, from iproute2, which
/// tests/setup.sh installs).
fn owns_ports(pid: u32, ports: &[u16]) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mine = ports.iter().all(|port| {
            let out = Command::new("ss")
                .args(["-Hltnp", &format!("sport = :{port}")])
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run ss ({e}): install iproute2 (tests/setup.sh does)")
                });
            String::from_utf8_lossy(&out.stdout).contains(&format!("pid={pid},"))
        });
        if mine || Instant::now() >= until {
            return mine;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the node became healthy within `within` (panics if it exited).
fn became_healthy(dir: &Path, admin_port: u16, child: &mut Child, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if healthy(admin_port) {
            return true;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "garage exited ({status}) while starting; its log:\n{}",
                std::fs::read_to_string(dir.join("garage.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn wait_healthy(dir: &Path, admin_port: u16, child: &mut Child) {
    if !became_healthy(dir, admin_port, child, Duration::from_secs(60)) {
        panic!(
            "garage did not become healthy on 127.0.0.1:{admin_port} within 60 s; its log:\n{}",
            std::fs::read_to_string(dir.join("garage.log")).unwrap_or_default()
        );
    }
}

/// The configured cluster every server copies, and the database engine it uses.
fn template() -> &'static (tempfile::TempDir, &'static str) {
    static TEMPLATE: OnceLock<(tempfile::TempDir, &'static str)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        // sqlite where this build has it (lighter than lmdb's large sparse map per server).
        for engine in ["sqlite", "lmdb"] {
            let dir = tempfile::Builder::new()
                .prefix("wharf-garage-template-")
                .tempdir()
                .expect("tempdir");
            let ports = Ports {
                rpc: free_port(),
                s3: free_port(),
                admin: free_port(),
            };
            write_config(dir.path(), &ports, engine);
            let mut child = spawn(dir.path());
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(Some(_)) = child.0.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("garage.log")).unwrap_or_default();
                if engine == "sqlite" && log.to_lowercase().contains("sqlite") {
                    continue; // built without sqlite
                }
                panic!("garage exited at once; its log:\n{log}");
            }
            wait_for_port(
                ports.rpc,
                "garage (rpc)",
                &dir.path().join("garage.log"),
                Duration::from_secs(30),
            );
            configure(dir.path());
            wait_healthy(dir.path(), ports.admin, &mut child);
            terminate(child);
            return (dir, engine);
        }
        unreachable!("lmdb is always built")
    })
}

/// Layout, bucket and key, by Garage's own CLI (as an operator would).
fn configure(dir: &Path) {
    // `node id` prints `<id>@<addr>`; `layout assign` takes the id (or a prefix of it).
    let id = cli(dir, &["node", "id", "-q"]);
    let id = id.trim().split('@').next().unwrap_or_default().to_owned();
    cli(dir, &["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
    cli(dir, &["layout", "apply", "--version", "1"]);
    cli(dir, &["bucket", "create", BUCKET]);
    cli(
        dir,
        &[
            "key",
            "import",
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            "-n",
            "wharf",
            "--yes",
        ],
    );
    allow(dir, BUCKET);
}

fn allow(dir: &Path, bucket: &str) {
    cli(
        dir,
        &[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            bucket,
            "--key",
            ACCESS_KEY_ID,
        ],
    );
}

impl Garage {
    /// Starts a fresh node (its own copy of the template) on free loopback ports.
    pub fn start() -> Garage {
        let (template, engine) = template();
        let dir = tempfile::Builder::new()
            .prefix("wharf-garage-")
            .tempdir()
            .expect("tempdir");
        for sub in ["meta", "data"] {
            let st = Command::new("cp")
                .arg("-a")
                .arg(template.path().join(sub))
                .arg(dir.path().join(sub))
                .status()
                .expect("cp");
            assert!(st.success(), "copying the garage template failed");
        }
        let mut g = Garage {
            dir,
            rpc_port: 0,
            s3_port: 0,
            admin_port: 0,
            child: None,
        };
        // Free ports are picked, released and bound again by garage: under a parallel test run
        // another server may take one in between, and this node then never becomes healthy. A
        // node that does not is started again on other ports (seen in CI-like load, once).
        for attempt in 1..=3 {
            (g.rpc_port, g.s3_port, g.admin_port) = (free_port(), free_port(), free_port());
            write_config(
                g.dir.path(),
                &Ports {
                    rpc: g.rpc_port,
                    s3: g.s3_port,
                    admin: g.admin_port,
                },
                engine,
            );
            let mut child = spawn(g.dir.path());
            let wait = Duration::from_secs(if attempt == 3 { 60 } else { 20 });
            if became_healthy(g.dir.path(), g.admin_port, &mut child, wait) {
                wait_for_port(
                    g.s3_port,
                    "garage (s3 api)",
                    &g.log_path(),
                    Duration::from_secs(30),
                );
                // Something answering is not enough: another server may have bound a port this
                // node then could not (seen once: another node's admin API on this one's S3 port).
                if owns_ports(child.pid(), &[g.s3_port, g.admin_port]) {
                    g.child = Some(child);
                    return g;
                }
                eprintln!(
                    "garage's ports {} and {} are held by another process; trying other ports",
                    g.s3_port, g.admin_port
                );
                terminate(child);
                continue;
            }
            eprintln!(
                "garage did not become healthy on 127.0.0.1:{}; trying other ports",
                g.admin_port
            );
        }
        panic!(
            "garage did not become healthy in three starts; its log:\n{}",
            g.log()
        );
    }

    /// Starts the node again (same data, same ports) after `stop` or `kill9`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "garage is already running");
        let mut child = spawn(self.dir.path());
        wait_healthy(self.dir.path(), self.admin_port, &mut child);
        wait_for_port(
            self.s3_port,
            "garage (s3 api)",
            &self.log_path(),
            Duration::from_secs(30),
        );
        self.child = Some(child);
    }

    /// A graceful stop: the S3 port closes, the data stays.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// Kills the node as a crash would.
    pub fn kill9(&mut self) {
        self.child.take();
    }

    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn s3_port(&self) -> u16 {
        self.s3_port
    }

    /// The node's process id while it runs: what a benchmark counts the CPU of.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// What `garage --version` prints, without its feature list (`garage cargo:2.5.0`).
    pub fn version(&self) -> Option<String> {
        let out = Command::new(binary()).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        out.status
            .success()
            .then(|| first.split(" [").next().unwrap_or(first).trim().to_owned())
    }

    pub fn region(&self) -> &'static str {
        REGION
    }

    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    pub fn access_key_id(&self) -> &'static str {
        ACCESS_KEY_ID
    }

    pub fn secret_access_key(&self) -> &'static str {
        SECRET_ACCESS_KEY
    }

    /// A new, empty bucket the key may read and write (the node must be running).
    pub fn create_bucket(&self, name: &str) {
        cli(self.dir.path(), &["bucket", "create", name]);
        allow(self.dir.path(), name);
    }

    /// The keys under `prefix` in the bucket `wharf`, sorted (read with the S3 API, as wharf reads it).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        use futures::StreamExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("an S3 client for garage");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut keys: Vec<String> = rt.block_on(async {
            let prefix = object_store::path::Path::from(prefix.trim_end_matches('/'));
            let mut list = object_store::ObjectStore::list(&store, Some(&prefix));
            let mut out = Vec::new();
            while let Some(item) = list.next().await {
                out.push(item.expect("list the bucket").location.to_string());
            }
            out
        });
        keys.sort();
        keys
    }

    /// Runs `garage <args>` against this node; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.dir.path(), args)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        // Thrown away with its directory: no need to wait for a graceful stop.
        self.child.take();
    }
}
