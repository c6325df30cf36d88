//! `wharf check-config FILE`: every mistake named by its key with the fix, one per line, exit 1; a good
//! file prints `ok: FILE` and exits 0. The deployment examples' configs pass it.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{free_port, wharf_bin};

/// `wharf check-config FILE`, with no `WHARF_*` variable from the caller's shell (they would change
/// what is checked).
fn check_config(file: &Path) -> Output {
    let mut cmd = Command::new(wharf_bin());
    cmd.arg("check-config").arg(file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run wharf check-config")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Proves: a config with an upstream, a push route and a plugin-free policy, every file it names
/// present, is `ok` with exit status 0.
#[test]
fn good_config_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("upstream-password");
    fs::write(&pw, "secret\n").unwrap();
    let file = dir.path().join("wharf.toml");
    fs::write(
        &file,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
data_dir = "{data}"
[gc]
grace_secs = 600
[mirror]
platforms = ["linux/amd64", "linux/arm64"]
[[upstream]]
host = "registry.example"
endpoint = "https://registry.example"
username = "bot"
password_file = "{pw}"
[[push]]
prefix = "ci"
target = "https://registry.example/team"
mode = "store-and-forward"
"#,
            port = free_port(),
            data = dir.path().join("data").display(),
            pw = pw.display()
        ),
    )
    .unwrap();
    let out = check_config(&file);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok: {}\n", file.display()),
        "{}",
        describe(&out)
    );
    // Named as `serve --config` names it, the same answer.
    let out = Command::new(wharf_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

/// Proves: one run names every mistake of a file with many (an unknown key with the key it is a typo
/// of, a duration written as text with the number it should be, a bad platform, a missing file, an
/// upstream and a push route the server would refuse, an exposed listen address), one line each as
/// `<key>: <problem>; <fix>`, and exits 1.
#[test]
fn every_mistake_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    fs::write(
        &file,
        r#"
[server]
listen = "0.0.0.0:5000"
shutdown_grace = 5
[gc]
grace_secs = "2h"
[mirror]
platforms = ["linux/amd64", "arm64"]
[[upstream]]
host = "plain.example"
endpoint = "http://plain.example"
[[upstream]]
host = "private.example"
endpoint = "https://private.example"
ca_file = "/nonexistent/wharf-e2e/ca.pem"
[[push]]
prefix = "ci"
target = "ftp://registry.example/team"
[metrics]
listen = "127.0.0.1:5000"
"#,
    )
    .unwrap();
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = [
        "server.shutdown_grace: unknown key (line 4); did you mean `shutdown_grace_secs`?",
        "gc.grace_secs: invalid type: string \"2h\", expected u64 (line 6); write a whole number of \
         seconds without quotes: grace_secs = 7200",
        "mirror.platforms: \"arm64\" is not a platform (line 8); write os/architecture[/variant], \
         e.g. \"linux/amd64\" or \"linux/arm/v7\"",
        "upstream[0].endpoint: endpoint http://plain.example is plain http; set insecure = true to \
         allow it",
        "upstream[1].ca_file: /nonexistent/wharf-e2e/ca.pem does not exist; create it, or correct \
         the path",
        "server.listen: 0.0.0.0:5000 is reachable from other machines and no client authentication \
         is configured: anyone could push, delete and pull; ",
        "push[0].target: target \"ftp://registry.example/team\" must be http(s)://host[:port]/\
         repository",
        "metrics.listen: metrics.listen 127.0.0.1:5000 is where wharf serves the registry \
         (server.listen 0.0.0.0:5000); give the metrics listener a port of its own",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "no line starting with {e:?}\n{}",
            describe(&out)
        );
    }
    assert_eq!(lines.len(), expect.len(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("8 problems in {}", file.display())),
        "{}",
        describe(&out)
    );
}

/// Proves: a file that is not TOML is one problem naming the line; a file that is not there is named.
#[test]
fn syntax_error_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    fs::write(&file, "[server]\nlisten = 127.0.0.1:5000\n").unwrap();
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("line 2: not valid TOML"),
        "{}",
        describe(&out)
    );
    assert_eq!(stdout.lines().count(), 1, "{}", describe(&out));

    let out = check_config(&dir.path().join("absent.toml"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("absent.toml: cannot read the file"),
        "{}",
        describe(&out)
    );
}

/// Proves: the wharf.toml of the Kubernetes example (its ConfigMap) passes the check.
#[test]
fn deploy_example_config_is_ok() {
    let yaml = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy/kubernetes/wharf.yaml"),
    )
    .unwrap();
    // The block scalar under `wharf.toml: |`, indented four spaces.
    let toml: String = yaml
        .lines()
        .skip_while(|l| l.trim() != "wharf.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("[server]"), "no wharf.toml in the ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    fs::write(&file, toml).unwrap();
    let out = check_config(&file);
    assert!(out.status.success(), "{}", describe(&out));
}

/// Proves: `wharf serve` refuses a metrics listener on the registry's own address, naming both keys,
/// instead of serving without metrics.
#[test]
fn serve_refuses_metrics_on_the_registry_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    let port = free_port();
    fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(wharf_bin());
    cmd.arg("serve").arg("--config").arg(&file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("run wharf serve");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("metrics.listen")
            && said.contains("server.listen")
            && said.contains("a port of its own"),
        "{}",
        describe(&out)
    );
}

/// Proves: `wharf serve` with a file it cannot read (an unknown key, a value of the wrong type)
/// prints `check-config`'s lines, each once, "did you mean" included, and exits non-zero, instead of
/// the parser's first error twice (issue 23).
#[test]
fn serve_says_what_check_config_says() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace = 5\n[storage]\ndata_dir = \"{}\"\n\
             [gc]\ngrace_secs = \"2h\"\n",
            free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let checked = check_config(&file);
    assert_eq!(checked.status.code(), Some(1), "{}", describe(&checked));
    let lines: Vec<String> = String::from_utf8_lossy(&checked.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "{}", describe(&checked));

    let mut cmd = Command::new(wharf_bin());
    cmd.arg("serve").arg("--config").arg(&file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    let served = cmd.output().expect("run wharf serve");
    let said = String::from_utf8_lossy(&served.stderr);
    assert!(!served.status.success(), "{}", describe(&served));
    for l in &lines {
        assert_eq!(
            said.matches(l.as_str()).count(),
            1,
            "serve should say {l:?} once:\n{}",
            describe(&served)
        );
    }
    assert!(
        said.contains("did you mean `shutdown_grace_secs`?"),
        "{}",
        describe(&served)
    );
    assert!(
        said.contains(&format!("{} has 2 problems", file.display())),
        "{}",
        describe(&served)
    );
    assert!(!said.contains("TOML parse error"), "{}", describe(&served));
}

/// Proves: `check-config` of a file with a plugin prints its verdict and nothing the plugin logs at
/// info; with `WHARF_LOG=info` the plugin's `init` line is there once, not once per instance (issue
/// 23).
#[test]
fn check_config_prints_no_plugin_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[storage]\ndata_dir = \"{}\"\n\
             [[plugin]]\nname = \"allow-list\"\npath = \"{}\"\n\
             config = '{{\"allow\": [\"docker.io/library/*\"]}}'\n",
            free_port(),
            dir.path().join("data").display(),
            crate::plugins::component("allow_list").display()
        ),
    )
    .unwrap();
    let out = check_config(&file);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok: {}\n", file.display()),
        "{}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("INFO"),
        "{}",
        describe(&out)
    );

    let out = Command::new(wharf_bin())
        .arg("check-config")
        .arg(&file)
        .env("WHARF_LOG", "info")
        .output()
        .expect("run wharf check-config");
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.matches("allow-list ready").count(),
        1,
        "{}",
        describe(&out)
    );
}
