//! `wharf plugins check | run | new`, run as the binary a plugin author runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::harness::{output_text, require_tool, wharf_bin};
use crate::oci::sha256_digest;

use super::{component, repo_root};

fn wharf_plugins(args: &[&str]) -> Output {
    Command::new(wharf_bin())
        .arg("plugins")
        .args(args)
        .env_remove("WHARF_CONFIG")
        .output()
        .expect("run wharf plugins")
}

/// `wharf plugins ARGS` must succeed; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = wharf_plugins(args);
    assert!(
        out.status.success(),
        "wharf plugins {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `wharf plugins ARGS` must fail; returns everything it printed.
fn fails(args: &[&str]) -> String {
    let out = wharf_plugins(args);
    assert!(
        !out.status.success(),
        "wharf plugins {} should have failed:\n{}",
        args.join(" "),
        output_text(&out)
    );
    output_text(&out)
}

fn has(out: &str, needles: &[&str]) {
    for n in needles {
        assert!(out.contains(n), "output lacks {n:?}:\n{out}");
    }
}

/// Proves: `wharf plugins check` names each first-party component's capability, its digest (the
/// file's sha256) and its exports and imports, and refuses a component of the wrong world and a file of
/// garbage, saying why.
#[test]
fn check_says_what_a_component_is_or_why_it_cannot_load() {
    for (stem, cap, export) in [
        ("allow_list", "access", "wharf:policy/access@0.1.0"),
        (
            "platform_filter",
            "platforms",
            "wharf:policy/platforms@0.1.0",
        ),
        ("annotate", "manifests", "wharf:policy/manifests@0.1.0"),
    ] {
        let path = component(stem);
        let digest = sha256_digest(&fs::read(&path).unwrap());
        let out = ok(&["check", path.to_str().unwrap()]);
        has(
            &out,
            &[
                "a wharf:policy@0.1.0 plugin",
                &format!("capabilities: {cap}"),
                &digest,
                export,
                "wharf:policy/lifecycle@0.1.0",
                "wharf:policy/log@0.1.0",
            ],
        );
    }
    let wrong = component("test_wrong_world");
    has(
        &fails(&["check", wrong.to_str().unwrap()]),
        &["exports none of wharf:policy@0.1.0"],
    );
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    fs::write(&garbage, b"\0asm not really a component").unwrap();
    has(
        &fails(&["check", garbage.to_str().unwrap()]),
        &["is not a WebAssembly component wharf can run"],
    );
}

/// Proves: `wharf plugins run` evaluates each capability offline: the allow list's decisions for a
/// mirrored name (allow, and deny with the rule), platform-filter's choice from an image index, and
/// `--identity` as the allow list's identity keys see it, annotate's rewrite of a manifest (printed
/// with a digest that matches the printed bytes); a plugin
/// that never returns is stopped at `--timeout-ms`.
#[test]
fn run_evaluates_one_call_offline() {
    let allow = component("allow_list");
    let allow = allow.to_str().unwrap();
    let cfg = r#"{"allow": ["docker.io/library/*"], "deny": ["docker.io/library/re*"]}"#;
    let base = [
        "run",
        allow,
        "--config",
        cfg,
        "--op",
        "pull",
        "--registry",
        "docker.io",
        "--ref",
        "3",
    ];
    let out = ok(&[&base[..], &["--repo", "library/alpine"]].concat());
    has(&out, &["access: allow"]);
    let out = ok(&[&base[..], &["--repo", "library/redis"]].concat());
    has(
        &out,
        &["access: deny: docker.io/library/redis is denied by rule \"docker.io/library/re*\""],
    );
    let out = ok(&[&base[..], &["--repo", "other/tool"]].concat());
    has(&out, &["access: deny:", "not in the allow list"]);

    // `--identity`: the caller [auth] would have proved, as the allow list's identity keys see it.
    let robot = r#"{"deny": ["release/**"], "except_identities": ["ci-robot"]}"#;
    let release = [
        "run",
        allow,
        "--config",
        robot,
        "--op",
        "push",
        "--repo",
        "release/app",
    ];
    let out = ok(&[&release[..], &["--identity", "ci-robot"]].concat());
    has(&out, &["access: allow"]);
    let out = ok(&[&release[..], &["--identity", "bob"]].concat());
    has(&out, &["access: deny:", "for bob"]);
    let out = ok(&release);
    has(&out, &["access: deny:", "for anonymous callers"]);

    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.json");
    let entry = |arch: &str, variant: Option<&str>| {
        let mut p = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            p["variant"] = json!(v);
        }
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "a".repeat(64)),
            "size": 100,
            "platform": p,
        })
    };
    fs::write(
        &index,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry("amd64", None), entry("arm64", Some("v8")), entry("arm", Some("v7"))],
        }))
        .unwrap(),
    )
    .unwrap();
    let pf = component("platform_filter");
    let out = ok(&[
        "run",
        pf.to_str().unwrap(),
        "--config",
        r#"{"platforms": ["linux/amd64", "linux/arm64"]}"#,
        "--repo",
        "library/alpine",
        "--platforms",
        index.to_str().unwrap(),
    ]);
    has(
        &out,
        &["platforms: keeps 2 of 3: [linux/amd64, linux/arm64/v8]"],
    );

    let manifest = dir.path().join("manifest.json");
    fs::write(
        &manifest,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "b".repeat(64)), "size": 2},
            "layers": [],
        }))
        .unwrap(),
    )
    .unwrap();
    let an = component("annotate");
    let out = ok(&[
        "run",
        an.to_str().unwrap(),
        "--config",
        r#"{"annotations": {"org.example.k": "v"}}"#,
        "--repo",
        "team/app",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    let (head, body) = out
        .split_once("manifests: rewritten to ")
        .unwrap_or_else(|| panic!("no rewrite in:\n{out}"));
    let _ = head;
    let digest = body.split_whitespace().next().unwrap();
    let bytes = body.split_once(":\n").expect("the bytes follow").1;
    let bytes = bytes.strip_suffix('\n').unwrap_or(bytes);
    assert_eq!(sha256_digest(bytes.as_bytes()), digest, "{out}");
    let v: serde_json::Value = serde_json::from_str(bytes).unwrap();
    assert_eq!(v["annotations"]["org.example.k"], "v", "{out}");

    let looper = component("test_loop_forever");
    has(
        &fails(&[
            "run",
            looper.to_str().unwrap(),
            "--repo",
            "team/app",
            "--timeout-ms",
            "50",
        ]),
        &["did not answer within 50 ms"],
    );
}

/// Proves: `plugins run` prints its results and none of the plugin's info lines (with
/// `WHARF_LOG=info`, its `init` line once, not once per instance), and `plugins new` ends its output
/// with a newline (issue 23).
#[test]
fn run_and_new_print_their_output_alone() {
    let allow = component("allow_list");
    let run = |log: Option<&str>| {
        let mut cmd = Command::new(wharf_bin());
        cmd.args(["plugins", "run", allow.to_str().unwrap()])
            .args(["--config", r#"{"allow": ["docker.io/library/*"]}"#])
            .args(["--registry", "docker.io", "--repo", "library/alpine"])
            .env_remove("WHARF_CONFIG")
            .env_remove("WHARF_LOG");
        if let Some(filter) = log {
            cmd.env("WHARF_LOG", filter);
        }
        let out = cmd.output().expect("run wharf plugins run");
        assert!(out.status.success(), "{}", output_text(&out));
        out
    };
    let out = run(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("loaded "), "{stdout}");
    has(&stdout, &["access: allow"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "plugins run writes nothing but its results:\n{}",
        output_text(&out)
    );
    let out = run(Some("info"));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("allow-list ready")
            .count(),
        1,
        "{}",
        output_text(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let said = ok(&[
        "new",
        "newline-policy",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(said.ends_with('\n'), "{said:?}");
}

/// The files `new` must write for `lang`, besides `wit/policy.wit`.
fn expect_files(root: &Path, files: &[&str]) {
    for f in files.iter().chain(&["wit/policy.wit", "README.md"]) {
        assert!(
            root.join(f).is_file(),
            "wharf plugins new did not write {}",
            root.join(f).display()
        );
    }
    let wit = fs::read_to_string(root.join("wit/policy.wit")).unwrap();
    assert_eq!(
        wit,
        fs::read_to_string(repo_root().join("wit/policy.wit")).unwrap(),
        "the project's WIT must be wharf's, unchanged"
    );
}

fn new_project(name: &str, lang: &str, dir: &Path) -> PathBuf {
    let out = ok(&["new", name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    has(&out, &[name]);
    dir.join(name)
}

fn run_build(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        output_text(&out)
    );
}

/// Proves: `wharf plugins new --lang rust` writes a project that builds for wasm32-wasip2 as it is, and
/// `wharf plugins check` accepts the result as an access policy; `new` refuses a bad name and an
/// existing directory.
#[test]
fn new_rust_project_builds_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_project("my-policy", "rust", dir.path());
    expect_files(&root, &["Cargo.toml", "src/lib.rs"]);
    let cargo = require_tool("cargo", "install Rust with rustup");
    // A target dir that outlives the test, so wit-bindgen is compiled once per machine, not per run.
    let target = repo_root().join("target/e2e-plugins-new");
    run_build(
        Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--offline",
                "--target",
                "wasm32-wasip2",
            ])
            .env("CARGO_TARGET_DIR", &target),
        "cargo build --release --offline --target wasm32-wasip2 of the generated project (run \
         plugins/build.sh first: it adds the target and fetches wit-bindgen)",
    );
    let wasm = target.join("wasm32-wasip2/release/my_policy.wasm");
    let out = ok(&["check", wasm.to_str().unwrap()]);
    has(&out, &["capabilities: access"]);
    let out = ok(&[
        "run",
        wasm.to_str().unwrap(),
        "--config",
        "{}",
        "--registry",
        "docker.io",
        "--repo",
        "library/alpine",
    ]);
    has(&out, &["access: allow"]);

    has(
        &fails(&[
            "new",
            "My_Policy",
            "--lang",
            "rust",
            "--dir",
            dir.path().to_str().unwrap(),
        ]),
        &["is not a plugin name"],
    );
    has(
        &fails(&[
            "new",
            "my-policy",
            "--lang",
            "rust",
            "--dir",
            dir.path().to_str().unwrap(),
        ]),
        &["already exists"],
    );
    has(
        &fails(&[
            "new",
            "x",
            "--lang",
            "cobol",
            "--dir",
            dir.path().to_str().unwrap(),
        ]),
        &["use rust, python or js"],
    );
}

/// Proves: `wharf plugins new --lang python` writes a project (app.py, README, the WIT) that
/// componentize-py (as plugins/build.sh installs it) builds into a component `check` accepts.
#[test]
fn new_python_project_builds_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_project("py-policy", "python", dir.path());
    expect_files(&root, &["app.py"]);
    let tool = repo_root().join("plugins/.tools/venv/bin/componentize-py");
    if !tool.is_file() {
        panic!(
            "{} is not installed: run plugins/build.sh (tests/run.sh runs it), which installs \
             componentize-py 0.25.1 there",
            tool.display()
        );
    }
    run_build(
        Command::new(&tool)
            .current_dir(&root)
            .args([
                "-d",
                "wit",
                "-w",
                "access-policy",
                "componentize",
                "-p",
                ".",
                "app",
                "-o",
            ])
            .arg("py-policy.wasm"),
        "componentize-py of the generated project",
    );
    let out = ok(&["check", root.join("py-policy.wasm").to_str().unwrap()]);
    has(&out, &["capabilities: access"]);
}

/// Proves: `wharf plugins new --lang js` writes a project (policy.js, build.mjs, package.json, README,
/// the WIT) that componentize-js (the example's node_modules, as plugins/build.sh installs them)
/// builds into a component `check` accepts.
#[test]
fn new_js_project_builds_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let root = new_project("js-policy", "js", dir.path());
    expect_files(&root, &["policy.js", "build.mjs", "package.json"]);
    let node = require_tool("node", "apt-get install nodejs npm");
    let modules = repo_root().join("examples/plugins/js/node_modules");
    if !modules.join("@bytecodealliance/componentize-js").is_dir() {
        panic!(
            "{} has no componentize-js: run plugins/build.sh (tests/run.sh runs it), which runs npm ci \
             there",
            modules.display()
        );
    }
    // The same pinned packages as the example's: no registry is asked during the test.
    std::os::unix::fs::symlink(&modules, root.join("node_modules")).unwrap();
    run_build(
        Command::new(node).current_dir(&root).arg("build.mjs"),
        "node build.mjs of the generated project",
    );
    let out = ok(&["check", root.join("js-policy.wasm").to_str().unwrap()]);
    has(&out, &["capabilities: access"]);
}
