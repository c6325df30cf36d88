//! Small texts that misled (issue 24, 11): a permission problem told to remove a "stale socket", a
//! damaged metadata file taken for another wharf, and a secret a client put in a `/token` URL
//! written to the access log.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::gc::{cli, cli_command};
use crate::harness::{output_text, wharf_bin, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::skopeo::Skopeo;

/// The unprivileged user the tests run commands as (Debian's `nobody`).
const NOBODY: u32 = 65534;

/// Proves: `wharf gc` run by `nobody` against a server root runs says it is a permission problem,
/// naming the owner and mode of what keeps it out (the private data directory), never "remove the stale socket" (removing it would cut the
/// running server off from every admin command); with no server running, the private data directory,
/// or (once opened to others) the metadata file it may not open, is a permission problem too, not
/// "another wharf".
#[test]
fn gc_as_another_user_is_told_it_is_a_permission_problem() {
    let mut wharf = Wharf::start(WharfOptions::default());
    // Let nobody reach the config and the data directory, as in a shared install; the socket and
    // the metadata stay root's.
    let home = wharf.config_path().parent().unwrap().to_owned();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |wharf: &Wharf| {
        let mut cmd = cli_command(wharf, &["gc"]);
        cmd.uid(NOBODY).gid(NOBODY).env("HOME", "/nonexistent");
        cmd.output().expect("run wharf gc as nobody")
    };

    let out = as_nobody(&wharf);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("permission problem"), "{text}");
    assert!(text.contains("admin.sock"), "names the socket: {text}");
    // The data directory is wharf's alone (0700): that, not the socket's own mode, is what keeps
    // nobody out, and what the message names.
    assert!(
        text.contains("root (uid 0)") && text.contains("mode 700"),
        "says whose it is: {text}"
    );
    assert!(!text.contains("remove the stale socket"), "{text}");

    assert!(wharf.stop().success());
    let out = as_nobody(&wharf);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    // With no server, the private data directory is still what keeps nobody out: the same
    // permission problem, never "another wharf" (nor a metadata file wharf could not even see).
    assert!(
        text.contains("permission problem") && text.contains("mode 700"),
        "{text}"
    );
    assert!(!text.contains("is another wharf using"), "{text}");
    // Where the data directory lets nobody in, the file it may not open is named.
    let data = wharf.data_dir();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&wharf);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("permission problem") && text.contains("meta.redb"),
        "{text}"
    );
    assert!(!text.contains("is another wharf using"), "{text}");
}

/// Runs `wharf serve` on `wharf`'s config and returns what it printed when it exited (it must, within
/// 30 s).
fn serve_until_it_exits(wharf: &Wharf) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(wharf_bin())
        .arg("serve")
        .arg("--config")
        .arg(wharf.config_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wharf serve");
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wharf serve ran on a damaged metadata file:\n{}",
                output_text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, output_text(&out))
}

/// Proves: a truncated `meta.redb` stops `wharf serve` with a message that calls it damaged and
/// names `wharf fsck` (it said "is another wharf using this data directory?"), and other commands
/// say the same; `wharf fsck`, which cannot repair a file cut in half, says how to recover.
#[test]
fn a_truncated_metadata_file_is_called_damaged_and_names_fsck() {
    let mut wharf = Wharf::start(WharfOptions::default());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 2420));
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/team/app:v1", wharf.host()),
    );
    assert!(wharf.stop().success());
    let meta = wharf.data_dir().join("meta.redb");
    let len = std::fs::metadata(&meta).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);

    let (status, text) = serve_until_it_exits(&wharf);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("is damaged") && text.contains("corrupt") && text.contains("wharf fsck"),
        "{text}"
    );
    assert!(!text.contains("is another wharf using"), "{text}");

    let out = cli(&wharf, &["gc"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("is damaged") && text.contains("wharf fsck"),
        "{text}"
    );

    let out = cli(&wharf, &["fsck"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("could not repair it") && text.contains("Restore meta.redb from a backup"),
        "{text}"
    );
}

/// Proves: a password a client puts in the query of a `/token` request (wharf reads credentials from
/// the Authorization header or a POST body, but a client may send anything) is not written to the
/// access log; the key is, with its value redacted, and the parameters wharf reads stay readable.
#[test]
fn a_secret_in_a_token_url_is_not_logged() {
    const SECRET: &str = "pw-in-url-8c1f2e";
    let home = tempfile::tempdir().unwrap();
    let htpasswd = home.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap()),
    )
    .unwrap();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: format!("\n[auth]\nhtpasswd_file = \"{}\"\n", htpasswd.display()),
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let path = format!(
        "/token?service=wharf&scope=repository:team/app:pull&account=alice&password={SECRET}"
    );
    api.request("GET", &path, &[], None);
    let log = crate::plugins::wait_for_log(&wharf, &["/token?"], Duration::from_secs(10));
    assert!(
        !log.contains(SECRET),
        "the access log has the secret:\n{log}"
    );
    assert!(
        log.contains(
            "/token?service=wharf&scope=repository:team/app:pull&account=alice&password=<redacted>"
        ),
        "{log}"
    );
}
