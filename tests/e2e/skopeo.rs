//! skopeo, isolated from the machine: no policy file, no auth file, no registries.conf and no HOME of the
//! caller, so a developer's credentials or mirrors can never change what a test sees.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use crate::harness::require_tool;

pub struct Skopeo {
    bin: PathBuf,
    home: TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        Skopeo::with_registries_conf("")
    }

    /// A skopeo whose `registries.conf` is `conf` (mirrors, insecure registries) and nothing else.
    pub fn with_registries_conf(conf: &str) -> Skopeo {
        let bin = require_tool("skopeo", "apt-get install skopeo");
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-skopeo-")
            .tempdir()
            .expect("tempdir");
        fs::write(home.path().join("auth.json"), "{\"auths\":{}}").unwrap();
        // By default an empty registries.conf: no search registries, no mirrors, no blocked registries.
        fs::write(home.path().join("registries.conf"), conf).unwrap();
        fs::create_dir_all(home.path().join("registries.d")).unwrap();
        Skopeo { bin, home }
    }

    fn command(&self) -> Command {
        let h = self.home.path();
        let mut cmd = Command::new(&self.bin);
        cmd.env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join(".config"))
            .env("XDG_RUNTIME_DIR", h)
            .env("REGISTRY_AUTH_FILE", h.join("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", h.join("registries.conf"))
            .env("TMPDIR", h)
            .arg("--insecure-policy")
            // skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF (it read /etc/containers/registries.conf
            // despite it); only the flag (hidden, still honoured) makes the file ours. The drop-in dir
            // /etc/containers/registries.conf.d is still read: it only holds short-name aliases, which
            // fully qualified references never use.
            .arg("--registries-conf")
            .arg(h.join("registries.conf"))
            // Signature-storage config (sigstore locations): none.
            .arg("--registries.d")
            .arg(h.join("registries.d"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = self.command().args(args).output().expect("run skopeo");
        if !out.status.success() {
            panic!(
                "skopeo {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.stdout
    }

    /// Runs skopeo and returns what it printed, whatever its exit status: for refusals a test expects.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("run skopeo")
    }

    /// `skopeo copy --all --preserve-digests SRC DST`: every platform, bytes unchanged.
    pub fn copy(&self, src: &str, dst: &str) {
        self.copy_with(&[], src, dst);
    }

    /// `copy` with extra options (e.g. `--dest-creds user:password`).
    pub fn copy_with(&self, extra: &[&str], src: &str, dst: &str) {
        let mut args = vec![
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--retry-times=0",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[src, dst]);
        self.run(&args);
    }

    /// `skopeo inspect`: the image's JSON summary, which lists the repository's tags (`RepoTags`).
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let out = self.run(&["inspect", "--tls-verify=false", "--retry-times=0", image]);
        serde_json::from_slice(&out).expect("skopeo inspect prints JSON")
    }

    /// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
    pub fn inspect_raw(&self, image: &str) -> Vec<u8> {
        self.run(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--retry-times=0",
            image,
        ])
    }
}
