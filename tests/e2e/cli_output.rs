//! Output that is cut short (issue 23, bug 6): `wharf images | head -1` and the like. A command whose
//! reader goes away ends as Unix tools do, quietly, with status 141 (what a shell reports for a
//! process SIGPIPE killed), never with `failed printing to stdout: Broken pipe` and a backtrace.
//!
//! The reader here is gone before the command writes anything (the read end of its stdout pipe is
//! closed before it starts), which is what `| head -1` does to every write after the first line, and
//! makes no race of it.

use std::fs;
use std::os::fd::FromRawFd;
use std::process::{Command, Output, Stdio};

use crate::harness::{wharf_bin, Wharf, WharfOptions};
use crate::layout::{write_layout, LayoutSpec};
use crate::skopeo::Skopeo;

/// The write end of a pipe nobody reads: every write to it fails with EPIPE.
fn pipe_without_reader() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two new descriptors, owned here from now on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    // SAFETY: the read end is ours and used nowhere else.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is ours; the File (then the child's stdio) owns it.
    Stdio::from(unsafe { fs::File::from_raw_fd(fds[1]) })
}

fn wharf(args: &[&str]) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "wharf {what}: exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` with its stdout cut; it must end with 141 and say nothing about it.
fn assert_ends_quietly(what: &str, cmd: &mut Command) {
    let out = cmd
        .stdout(pipe_without_reader())
        .stderr(Stdio::piped())
        .output()
        .expect("run wharf");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("Broken pipe") && !said.contains("panicked") && !said.contains("backtrace"),
        "{}",
        describe(what, &out)
    );
    assert_eq!(out.status.code(), Some(141), "{}", describe(what, &out));
}

/// Proves: with its output cut, each command that prints (the effective config, check-config's
/// problems, the image list, the status, leases, an export's report in both formats, `plugins new`)
/// ends with status 141 and no message; a command whose stderr is cut as it fails ends with its
/// failure status, not a panic.
#[test]
fn commands_whose_output_is_cut_end_quietly() {
    let wharf_srv = Wharf::start(WharfOptions::default());
    let layout = write_layout(&wharf_srv.scratch("src"), &LayoutSpec::small("v1", 2301));
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/team/app:v1", wharf_srv.host()),
    );
    let config = wharf_srv.config_path();
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "[server]\nlistn = \"127.0.0.1:5000\"\n").unwrap();
    let bad = bad.to_str().unwrap();
    let archive = dir.path().join("app.tar");
    let archive = archive.to_str().unwrap();

    let cases: Vec<Vec<&str>> = vec![
        vec!["config", "--config", config],
        vec!["check-config", bad],
        vec!["images", "--config", config],
        vec!["images", "--json", "--config", config],
        vec!["status", "--config", config],
        vec!["leases", "--config", config],
        vec![
            "export",
            "team/app:v1",
            "-o",
            archive,
            "--platform",
            "linux/amd64",
            "--config",
            config,
        ],
        vec![
            "export",
            "team/app:v1",
            "-o",
            archive,
            "--platform",
            "linux/amd64",
            "--format",
            "docker",
            "--config",
            config,
        ],
    ];
    for args in &cases {
        assert_ends_quietly(&args.join(" "), &mut wharf(args));
    }
    let projects = dir.path().join("projects");
    assert_ends_quietly(
        "plugins new",
        &mut wharf(&[
            "plugins",
            "new",
            "cut-policy",
            "--dir",
            projects.to_str().unwrap(),
        ]),
    );

    // check-config prints the problems, then fails on stderr: with stderr cut it still fails as
    // itself (1), not as a panic (101).
    let out = wharf(&["check-config", bad])
        .stdout(Stdio::piped())
        .stderr(pipe_without_reader())
        .output()
        .expect("run wharf");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe("check-config with stderr cut", &out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("did you mean `listen`?"),
        "{}",
        describe("check-config with stderr cut", &out)
    );
}
