//! `tests/run.sh` itself: its last line sums up the whole run, and its exit status says whether
//! everything passed.
//!
//! run.sh cannot run the real suite from inside it (cargo holds the build directory's lock while the
//! tests run), so each case runs the real run.sh and summary.awk in a scratch tree where `cargo` is a
//! script replaying what cargo prints: `test result:` lines on stdout, one per test binary, the
//! doc-tests' `0 passed` last (and, for the deploy test's static relink, a binary `strip` accepts).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::require_tool;

const UNIT: &str = "test result: ok. 80 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.10s";
const E2E_OK: &str = "test result: ok. 95 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 301.52s";
const E2E_FAILED: &str = "test result: FAILED. 93 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 298.00s";
/// What the second pass prints (the end-to-end binary again, on the shared backends).
const SHARED_OK: &str = "test result: ok. 90 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 420.00s";
const DOC: &str =
    "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s";

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    /// The arguments `cargo` was called with, one call per line.
    cargo_calls: String,
}

impl Run {
    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

/// Runs the repository's run.sh (with `args`) in a scratch tree where `cargo build` exits with
/// `build_status` and `cargo test` prints `test_output` and exits with `test_status`.
fn run(args: &[&str], build_status: i32, test_output: &[&str], test_status: i32) -> Run {
    require_tool("awk", "apt-get install mawk");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("tree");
    let bin = scratch.path().join("bin");
    fs::create_dir_all(tree.join("tests")).unwrap();
    fs::create_dir_all(&bin).unwrap();
    for f in ["run.sh", "summary.awk"] {
        fs::copy(repo.join("tests").join(f), tree.join("tests").join(f))
            .unwrap_or_else(|e| panic!("copy tests/{f}: {e}"));
    }
    // The peers are installed and the plugins built already (this test binary runs beside them).
    executable(&tree.join("tests/setup.sh"), "#!/bin/sh\nexit 0\n");
    fs::create_dir_all(tree.join("plugins")).unwrap();
    executable(&tree.join("plugins/build.sh"), "#!/bin/sh\nexit 0\n");
    let calls = scratch.path().join("cargo-calls");
    let output = scratch.path().join("cargo-test-output");
    fs::write(&output, test_output.join("\n") + "\n").unwrap();
    executable(
        &bin.join("cargo"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{calls}'\ncase \"$1\" in\n  build) exit {build_status} ;;\n  \
             rustc) mkdir -p target/debug && cp /bin/true target/debug/wharf; exit 0 ;;\n  \
             test) echo '   Compiling wharf v0.1.0' >&2; \
               if [ \"$WHARF_E2E_BACKENDS\" = shared ]; then echo '{SHARED_OK}'; exit 0; fi; \
               cat '{output}'; exit {test_status} ;;\nesac\nexit 99\n",
            calls = calls.display(),
            output = output.display(),
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(tree.join("tests/run.sh"))
        .args(args)
        .env("PATH", path)
        // This test may itself run in run.sh's shared pass: the run it starts begins afresh.
        .env_remove("WHARF_E2E_BACKENDS")
        .output()
        .expect("run tests/run.sh");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        cargo_calls: fs::read_to_string(&calls).unwrap_or_default(),
    }
}

fn executable(path: &PathBuf, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Proves: when every test passes, run.sh's last line is `wharf tests: N passed, 0 failed` with N
/// summed over every test binary (not the doc-tests' `0 passed`), cargo's own output is still shown,
/// the exit status is 0, and the arguments reach `cargo test` with `--no-fail-fast`.
#[test]
fn summary_counts_every_binary() {
    let r = run(&["--", "crash"], 0, &[UNIT, E2E_OK, DOC], 0);
    assert_eq!(
        r.last_line(),
        "wharf tests: 265 passed, 0 failed",
        "{:?}",
        r.stdout
    );
    assert!(r.status.success(), "{:?}\n{:?}", r.status, r.stdout);
    assert!(
        r.stdout.contains(E2E_OK),
        "cargo's output is hidden: {:?}",
        r.stdout
    );
    assert!(
        r.cargo_calls
            .lines()
            .any(|l| l == "test --workspace --no-fail-fast -- crash"),
        "{}",
        r.cargo_calls
    );
    // The second pass, on the shared backends, gets the same filter.
    assert!(
        r.cargo_calls
            .lines()
            .any(|l| l == "test -p wharf-e2e --test e2e --no-fail-fast -- crash"),
        "{}",
        r.cargo_calls
    );
}

/// Proves: a failed test makes the last line say how many failed and the exit status non-zero.
#[test]
fn summary_counts_failures() {
    let r = run(&[], 0, &[UNIT, E2E_FAILED, DOC], 101);
    assert_eq!(
        r.last_line(),
        "wharf tests: 263 passed, 2 failed",
        "{:?}",
        r.stdout
    );
    assert!(!r.status.success(), "{:?}", r.stdout);
}

/// Proves: a test target that does not compile (cargo fails, no `test result:` line for it) or a
/// wharf that does not build fails the run, and the last line still sums up and says so.
#[test]
fn build_failures_fail_the_run() {
    let r = run(&[], 0, &[UNIT], 101);
    assert!(!r.status.success(), "{:?}", r.stdout);
    assert!(
        r.last_line()
            .starts_with("wharf tests: 170 passed, 0 failed; cargo test exited with status 101"),
        "{:?}",
        r.stdout
    );
    let r = run(&[], 101, &[UNIT], 0);
    assert!(!r.status.success(), "{:?}", r.stdout);
    assert!(
        r.last_line()
            .starts_with("wharf tests: 0 passed, 0 failed;"),
        "{:?}",
        r.stdout
    );
    assert!(!r.cargo_calls.contains("test"), "{}", r.cargo_calls);
}
