//! A private containerd 1.6 for one test, driven with `ctr`.
//!
//! What it takes to run in a test sandbox (worked out against Debian's containerd 1.6.20):
//! - root: containerd applies layers through a temporary (bind) mount, which needs CAP_SYS_ADMIN;
//! - its own `root`, `state` and gRPC/ttrpc socket paths in a temp dir, debug and metrics listeners
//!   off, so nothing touches /var/lib/containerd, /run/containerd or another containerd;
//! - plugins off that a pull does not need and that would reach outside the temp dir or need more of
//!   the host: CRI (CNI, its own state), `opt` (creates /opt/containerd), the runtimes, task services,
//!   cgroup monitor, and every snapshotter but `native`;
//! - `ctr images pull` in 1.6 always unpacks (there is no `--skip-unpack`), so it needs a snapshotter
//!   that works here: the default `overlayfs` needs overlay mounts, which fail in many nested
//!   sandboxes; `--snapshotter native` only copies files. Unpacking also makes containerd check every
//!   layer against the config's `diff_ids`, so a pull that succeeds got exactly the right bytes.
//! - containerd sends no `/v2/` probe and adds `?ns=<registry host>` to every request to a mirror;
//!   `--hosts-dir DIR` reads `DIR/<registry host>/hosts.toml`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::{log_tail, require_tool};

const NAMESPACE: &str = "wharf-e2e";
const READY_DEADLINE: Duration = Duration::from_secs(60);

const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.zfs",
];

pub struct Containerd {
    child: Option<Child>,
    ctr: PathBuf,
    home: TempDir,
}

impl Containerd {
    /// Starts containerd on a fresh root; fails the test if containerd, ctr or root are missing.
    pub fn start() -> Containerd {
        let bin = require_tool("containerd", "apt-get install containerd");
        let ctr = require_tool("ctr", "apt-get install containerd");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!(
                "the containerd tests need root (containerd mounts layers to unpack them); run them \
                 as root, e.g. `sudo -E cargo test -p wharf-e2e mirror::containerd`"
            );
        }
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-ctrd-")
            .tempdir()
            .expect("tempdir");
        let h = home.path();
        let disabled = DISABLED_PLUGINS
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [{disabled}]\n\n\
             [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n[debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n",
            h.join("root").display(),
            h.join("state").display(),
            h.join("containerd.sock").display(),
            h.join("containerd.sock.ttrpc").display(),
        );
        fs::write(h.join("config.toml"), config).unwrap();
        let log = fs::File::create(h.join("containerd.log")).unwrap();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(h.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut c = Containerd {
            child: Some(child),
            ctr,
            home,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&mut self) {
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "containerd exited with {status} on start\n--- log tail ---\n{}",
                    log_tail(&self.log_path(), 40)
                );
            }
            let out = self.ctr_command().arg("version").output().expect("run ctr");
            if out.status.success() {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "containerd did not answer `ctr version` within {READY_DEADLINE:?}: {}\n--- log tail ---\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    log_tail(&self.log_path(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("containerd.log")
    }

    fn ctr_command(&self) -> Command {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("--address")
            .arg(self.home.path().join("containerd.sock"))
            .arg("--namespace")
            .arg(NAMESPACE)
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr ARGS` and returns its output whatever its exit status: for refusals a test expects.
    pub fn output(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().expect("run ctr")
    }

    /// Runs `ctr ARGS`; fails the test with its output and containerd's log if it fails.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let out = self.ctr_command().args(args).output().expect("run ctr");
        if !out.status.success() {
            panic!(
                "ctr {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- containerd log tail ---\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log_tail(&self.log_path(), 30)
            );
        }
        out
    }

    /// `ctr images pull --snapshotter native --hosts-dir DIR --platform P REF` (fetch and unpack).
    pub fn pull(&self, hosts_dir: &Path, reference: &str, platform: &str) -> Output {
        self.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
            hosts_dir.to_str().unwrap(),
            "--platform",
            platform,
            reference,
        ])
    }

    /// The bytes containerd's content store holds for `digest`.
    pub fn content(&self, digest: &str) -> Vec<u8> {
        self.ctr(&["content", "get", digest]).stdout
    }

    /// The digest `ctr images ls` records for `reference`.
    pub fn image_digest(&self, reference: &str) -> String {
        let out = self.ctr(&["images", "ls"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(reference))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
            .unwrap_or_else(|| panic!("ctr images ls has no {reference}:\n{text}"))
            .to_owned()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on a child we have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() >= end {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- containerd log tail ({}) ---\n{}\n--- end ---",
                self.log_path().display(),
                log_tail(&self.log_path(), 30)
            );
        }
        self.stop();
    }
}

/// Writes `DIR/<registry>/hosts.toml`: pull and resolve through `mirror` (wharf, plain http), with the
/// registry itself as the `server` containerd falls back to.
pub fn write_hosts_dir(dir: &Path, registry: &str, mirror: &str) {
    let d = dir.join(registry);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}
