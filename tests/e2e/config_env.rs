//! The documented environment overrides of the config file, and `wharf config`, which prints the
//! effective configuration as a file `wharf serve --config` accepts.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{empty_config, manifest_of_size};
use crate::harness::{free_port, wharf_bin, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::Desc;
use crate::oci::{self, regular_files, Noise};

/// Proves: `WHARF_LISTEN` and `WHARF_DATA_DIR` win over `[server] listen` and `[storage] data_dir`:
/// wharf answers on the env address only and stores blobs under the env data dir only.
#[test]
fn env_overrides_listen_and_data_dir() {
    let wharf = Wharf::start(WharfOptions {
        via_env: true,
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let data = Noise::bytes(61, 5000);
    let digest = api.push_blob("env/app", &data);
    api.assert_blob_intact("env/app", &digest, 5000);

    assert!(
        regular_files(&wharf.blobs_dir())
            .iter()
            .any(|f| f.ends_with(crate::oci::hex_part(&digest))),
        "blob not under WHARF_DATA_DIR ({})",
        wharf.data_dir().display()
    );
    let decoy_files = regular_files(&wharf.decoy_data_dir());
    assert!(
        decoy_files.is_empty(),
        "wharf wrote to the config's data_dir despite WHARF_DATA_DIR: {decoy_files:?}"
    );
    let decoy = wharf.decoy_addr().unwrap();
    assert!(
        TcpStream::connect(decoy).is_err(),
        "wharf listens on the config's address {decoy} despite WHARF_LISTEN"
    );
}

/// `wharf <args>` with no `WHARF_*` variable from the caller's shell (`WHARF_LOG` aside) but `env`.
fn wharf_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") && key != "WHARF_LOG" {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `wharf config --config <file>`: its stdout, or a failure with its stderr.
fn print_config(file: &Path, env: &[(&str, &str)]) -> String {
    let out = wharf_command(&["config", "--config", &file.to_string_lossy()], env)
        .output()
        .expect("run wharf config");
    assert!(
        out.status.success(),
        "wharf config --config {} failed ({}): {}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("wharf config prints UTF-8")
}

/// A `wharf serve` started by the test; SIGTERM and reaped on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Proves: `wharf config` prints TOML that `wharf serve --config` accepts and that means the same:
/// the built-in docker.io upstream is listed; `WHARF_*` overrides are in it (wharf, fed the printed
/// file alone, answers on the `WHARF_LISTEN` address, stores under `WHARF_DATA_DIR`, and refuses a
/// manifest over the `WHARF_MAX_MANIFEST_BYTES` limit with 413); printing the printed file again gives
/// the same text; and no upstream password appears (neither the value of the variable `password_env`
/// names nor the contents of `password_file`).
#[test]
fn printed_config_serves_the_same() {
    const LIMIT: usize = 20_000;
    const ENV_SECRET: &str = "env-secret-4f0c9a";
    const FILE_SECRET: &str = "file-secret-8be21d";
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("data");
    let secret_file = home.path().join("upstream-password");
    fs::write(&secret_file, format!("{FILE_SECRET}\n")).unwrap();
    let input = home.path().join("in.toml");
    // Decoys: the env overrides must replace them in what is printed.
    fs::write(
        &input,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n[storage]\ndata_dir = {:?}\n\n\
             [registry]\ndelete_enabled = true\n\n[mirror]\ndefault_upstream = \"\"\n\n\
             [[upstream]]\nhost = \"127.0.0.1:9\"\nendpoint = \"http://127.0.0.1:9\"\ninsecure = true\n\
             username = \"bot\"\npassword_env = \"E2E_UPSTREAM_TOKEN\"\n\n\
             [[upstream]]\nhost = \"127.0.0.1:7\"\nendpoint = \"http://127.0.0.1:7\"\ninsecure = true\n\
             username = \"bot\"\npassword_file = {:?}\n",
            free_port(),
            home.path().join("decoy-data"),
            secret_file,
        ),
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (addr_s, data_s, limit_s) = (
        addr.to_string(),
        data.display().to_string(),
        LIMIT.to_string(),
    );
    let printed = print_config(
        &input,
        &[
            ("WHARF_LISTEN", &addr_s),
            ("WHARF_DATA_DIR", &data_s),
            ("WHARF_MAX_MANIFEST_BYTES", &limit_s),
            ("E2E_UPSTREAM_TOKEN", ENV_SECRET),
        ],
    );
    assert!(
        !printed.contains(ENV_SECRET) && !printed.contains(FILE_SECRET),
        "wharf config printed a password:\n{printed}"
    );
    assert!(
        printed.contains("host = \"docker.io\"")
            && printed.contains("endpoint = \"https://registry-1.docker.io\""),
        "the built-in docker.io upstream is not shown:\n{printed}"
    );
    let fed_back = home.path().join("printed.toml");
    fs::write(&fed_back, &printed).unwrap();
    assert_eq!(
        print_config(&fed_back, &[]),
        printed,
        "the printed config, printed again, differs"
    );

    let log = home.path().join("wharf.log");
    let out = fs::File::create(&log).unwrap();
    let mut served = Served(
        wharf_command(
            &["serve", "--config", &fed_back.to_string_lossy()],
            // Starting the upstream clients reads the password; none is contacted.
            &[("E2E_UPSTREAM_TOKEN", ENV_SECRET)],
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn wharf serve"),
    );
    let api = Api::new(format!("http://{addr}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.try_request("GET", "/v2/", &[], None).map(|r| r.status) != Ok(200) {
        if let Some(status) = served.0.try_wait().unwrap() {
            panic!(
                "wharf serve --config <printed> exited with {status}:\n{}\n--- config ---\n{printed}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "wharf serve --config <printed> did not answer on {addr}:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let repo = "cfg/app";
    let layer = Noise::bytes(62, 3000);
    let layer = Desc {
        media_type: oci::OCI_LAYER_TAR.into(),
        digest: api.push_blob(repo, &layer),
        size: 3000,
    };
    assert!(
        regular_files(&data.join("blobs"))
            .iter()
            .any(|f| f.ends_with(crate::oci::hex_part(&layer.digest))),
        "blob not under the printed data_dir {}",
        data.display()
    );
    let (config, config_bytes) = empty_config();
    api.push_blob(repo, config_bytes);
    api.put_manifest(
        repo,
        "big",
        oci::OCI_MANIFEST,
        &manifest_of_size(&config, &layer, LIMIT + 1),
    )
    .assert_status(413);
    api.push_manifest(
        repo,
        "fits",
        oci::OCI_MANIFEST,
        &manifest_of_size(&config, &layer, LIMIT),
    );
}
