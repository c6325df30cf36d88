//! A throw-away Postgres cluster: `initdb` once per test process into a template (a password-protected
//! user `wharf` and a database `wharf`), copied for each server, which listens on a free loopback port
//! only. Postgres refuses to run as root, so as root the cluster runs as `nobody`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::util::{free_port, wait_for_port, Child};

pub const USER: &str = "wharf";
pub const PASSWORD: &str = "wharf-test-password";
pub const DATABASE: &str = "wharf";

pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// TLS on (`start_tls`): the CA that signed the server's certificate, PEM.
    ca: Option<PathBuf>,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "Postgres is not installed (no /usr/lib/postgresql/*/bin/postgres): run tests/setup.sh, \
             which installs Debian's postgresql package"
        )
    })
}

fn as_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd` as the cluster's user: `nobody` when we are root.
fn as_cluster_user(program: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_cluster_user(path: &Path) {
    if as_root() {
        let st = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(st.success(), "chown nobody {}", path.display());
    }
}

/// A directory the cluster's user may enter: under /tmp, world-traversable.
fn traversable_tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The initialised cluster every server copies (initdb takes a second or two; a copy, milliseconds).
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let bin = bin_dir();
            let root = traversable_tempdir("wharf-pg-template-");
            let data = root.path().join("data");
            let pwfile = root.path().join("pw");
            std::fs::write(&pwfile, PASSWORD).unwrap();
            chown_to_cluster_user(root.path());
            let out = as_cluster_user(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    USER,
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["--no-sync", "--encoding=UTF8", "--locale=C"])
                .output()
                .expect("run initdb");
            assert!(
                out.status.success(),
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The database wharf uses, made in single-user mode: no server needed.
            let mut single = as_cluster_user(&bin.join("postgres"))
                .args(["--single", "-D"])
                .arg(&data)
                .arg("postgres")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run postgres --single");
            use std::io::Write;
            single
                .stdin
                .take()
                .unwrap()
                .write_all(format!("CREATE DATABASE {DATABASE};\n").as_bytes())
                .unwrap();
            let out = single.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "creating the database failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            root
        })
        .path()
}

impl Postgres {
    /// Starts a fresh cluster (its own copy of the template) on a free loopback port.
    pub fn start() -> Postgres {
        let mut pg = Postgres::copy_template();
        pg.start_again();
        pg
    }

    /// A cluster with TLS on (`ssl = on`, as Debian's packaged clusters and managed databases come),
    /// its certificate naming `names` and signed by a throw-away CA (`ca_path`). Plain connections
    /// are still accepted, as with `ssl = on` alone.
    pub fn start_tls(names: &[&str]) -> Postgres {
        let mut pg = Postgres::copy_template();
        let dir = pg.dir.path().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = crate::pki::server_certificate(names);
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        // Postgres refuses a key others may read.
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        chown_to_cluster_user(&dir);
        pg.ca = Some(dir.join("ca.pem"));
        pg.start_again();
        pg
    }

    fn copy_template() -> Postgres {
        let dir = traversable_tempdir("wharf-pg-");
        let st = Command::new("cp")
            .arg("-a")
            .arg(template().join("data"))
            .arg(dir.path().join("data"))
            .status()
            .expect("cp");
        assert!(st.success(), "copying the postgres template failed");
        Postgres {
            dir,
            port: free_port(),
            child: None,
            ca: None,
        }
    }

    /// The CA file that verifies a `start_tls` cluster's certificate.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Starts the server again (same data, same port) after `stop` or `kill9`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "postgres is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = as_cluster_user(&bin_dir().join("postgres"));
        if self.ca.is_some() {
            let tls = self.dir.path().join("tls");
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    tls.join("server.pem").display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.join("server.key").display()));
        }
        let child = cmd
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            // A test's cluster holds nothing worth an fsync; a crash test kills wharf, not this.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(Child(child));
        wait_for_port(
            self.port,
            "postgres",
            &self.log_path(),
            Duration::from_secs(30),
        );
        // Listening is not accepting: wait until a query answers.
        for _ in 0..200 {
            if self.try_psql("SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("postgres does not answer queries; log:\n{}", self.log());
    }

    /// A fast shutdown: connections are cut, committed data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.pid() as i32, libc::SIGINT) };
            let _ = c.0.wait();
        }
    }

    /// Kills the server as a crash would.
    pub fn kill9(&mut self) {
        self.child.take();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs (its children serve the connections): what a
    /// benchmark counts the CPU of.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// The connection URL, password included.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The connection URL without the password (which then comes from elsewhere).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs SQL with psql against the `wharf` database; panics with psql's words on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                USER,
                "-d",
                DATABASE,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// A new, empty database in this cluster; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name}"));
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // An immediate stop: the cluster is thrown away with its directory.
        if let Some(c) = self.child.take() {
            unsafe { libc::kill(c.pid() as i32, libc::SIGQUIT) };
            drop(c);
        }
    }
}
