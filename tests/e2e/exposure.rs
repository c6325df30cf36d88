//! What wharf shows to whom (issue 24: 4, 5): the status page shows a repository only to a caller
//! who may pull it, with the registry's credentials (a real browser logs in through its prompt);
//! `/metrics` names no repository; a metrics listener beyond loopback needs `[auth]` or an explicit
//! `allow_anonymous_remote`; and the data directory is private to wharf's user, an old one made so at
//! start.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;

use crate::harness::{free_port, require_tool, wharf_bin, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::skopeo::Skopeo;
use crate::status_page::DevTools;

const ALICE_PASSWORD: &str = "alice-pw-5c1e";
const BOB_PASSWORD: &str = "bob-pw-93aa";
/// The private image's tag: on the page only for those who may pull it.
const PRIVATE_TAG: &str = "release-7f3d";

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A wharf with alice and bob, anonymous pulls off, `private/` pulled by alice only and `pub/` by
/// anyone, its metrics listener on `metrics`.
fn start_closed(metrics: &str) -> Wharf {
    let home = tempfile::tempdir().unwrap().keep();
    let htpasswd = home.join("htpasswd");
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    fs::write(
        &htpasswd,
        format!(
            "alice:{}\nbob:{}\n",
            hash(ALICE_PASSWORD),
            hash(BOB_PASSWORD)
        ),
    )
    .unwrap();
    Wharf::start(WharfOptions {
        extra_toml: format!(
            "[metrics]\nlisten = \"{metrics}\"\n\
             [auth]\nhtpasswd_file = \"{}\"\nanonymous_pull = false\n\
             [[auth.rule]]\nprefix = \"private\"\npull = [\"alice\"]\npush = [\"alice\"]\n\
             [[auth.rule]]\nprefix = \"pub\"\npull = [\"anonymous\", \"*\"]\npush = [\"alice\"]\n",
            htpasswd.display()
        ),
        ..Default::default()
    })
}

/// The page's HTML as chromium built it, in the page of `session`.
fn dom(browser: &mut DevTools, session: &str) -> String {
    browser
        .evaluate(session, "document.documentElement.outerHTML")
        .as_str()
        .expect("the page's HTML")
        .to_owned()
}

/// What a private repository shows on the page.
struct Private {
    name: &'static str,
    tag: &'static str,
    /// The first 12 hex digits of its digest, as the page shows it.
    digest: String,
}

impl Private {
    /// The first of its marks `html` carries.
    fn shown_in<'a>(&'a self, html: &str) -> Option<&'a str> {
        [self.name, self.tag, self.digest.as_str()]
            .into_iter()
            .find(|m| html.contains(m))
    }
}

/// Proves (issue 24, item 4): with `[auth] anonymous_pull = false` and a repository only alice may
/// pull, the status page seen in chromium without logging in shows no trace of it (name, tag,
/// digest) but shows what anyone may pull and a way to log in; chromium answering the login prompt
/// `/ui?login` raises (a `Basic` challenge) as alice gets the page with it, and keeps getting it on
/// the next visit without another prompt; bob, with the right password, never sees it, nor does an
/// anonymous token; alice's bearer token from the registry's `/token` does; `/metrics` names no
/// repository at all.
#[test]
fn the_status_page_shows_a_private_repository_only_to_who_may_pull_it() {
    crate::status_page::chromium();
    let metrics = format!("127.0.0.1:{}", free_port());
    let wharf = start_closed(&metrics);
    let home = wharf.scratch("layouts");
    let skopeo = Skopeo::new();
    let alice_creds = format!("alice:{ALICE_PASSWORD}");
    let private_layout = write_layout(&home.join("private"), &LayoutSpec::small(PRIVATE_TAG, 2401));
    skopeo.copy_with(
        &["--dest-creds", &alice_creds],
        &private_layout.skopeo_ref(),
        &format!("docker://{}/private/app:{PRIVATE_TAG}", wharf.host()),
    );
    let public = write_layout(&home.join("public"), &LayoutSpec::small("1.0", 2402));
    skopeo.copy_with(
        &["--dest-creds", &alice_creds],
        &public.skopeo_ref(),
        &format!("docker://{}/pub/tool:1.0", wharf.host()),
    );
    let private = Private {
        name: "private/app",
        tag: PRIVATE_TAG,
        digest: private_layout.index.digest["sha256:".len()..][..12].to_owned(),
    };
    let url = format!("http://{metrics}/ui");
    let page = Api::new(format!("http://{metrics}"));

    // Anonymous, in a browser.
    crate::status_page::get_page(&url);
    let profile = tempfile::Builder::new()
        .prefix("wharf-e2e-chromium-")
        .tempdir()
        .unwrap();
    let mut browser = DevTools::start(profile.path());
    let tab = browser.open(&url, 1024, 768);
    let anonymous = dom(&mut browser, &tab);
    assert_eq!(
        private.shown_in(&anonymous),
        None,
        "an anonymous caller sees the private repository:\n{anonymous}"
    );
    assert!(
        anonymous.contains("pub/tool") && anonymous.contains("href=\"/ui?login\""),
        "an anonymous caller sees what anyone may pull, and a way to log in:\n{anonymous}"
    );

    // Alice logs in through the browser's prompt, then comes back.
    let tab = browser.open_logged_in(&format!("{url}?login"), "alice", ALICE_PASSWORD);
    let alice = dom(&mut browser, &tab);
    for mark in [
        private.name,
        private.tag,
        private.digest.as_str(),
        "Signed in as",
    ] {
        assert!(
            alice.contains(mark),
            "alice does not see {mark:?}:\n{alice}"
        );
    }
    let tab = browser.open(&url, 1024, 768);
    let again = dom(&mut browser, &tab);
    assert!(
        again.contains(private.name) && again.contains("Signed in as"),
        "the browser's next visit is alice's without another prompt:\n{again}"
    );
    drop(browser);

    // The login asks a caller without a credential, and a wrong password, to log in.
    for headers in [
        vec![],
        vec![("Authorization", basic("alice", "wrong").clone())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = page.request("GET", "/ui?login", &headers, None);
        r.assert_status(401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"wharf\", charset=\"UTF-8\""),
            "{}",
            r.describe()
        );
    }

    // Bob may pull what any user may, not private/.
    let r = page.request(
        "GET",
        "/ui",
        &[("Authorization", &basic("bob", BOB_PASSWORD))],
        None,
    );
    r.assert_status(200);
    let bob = String::from_utf8_lossy(&r.body).into_owned();
    assert!(bob.contains("Signed in as <b>bob</b>"), "{bob}");
    assert_eq!(private.shown_in(&bob), None, "bob sees it:\n{bob}");
    assert!(bob.contains("pub/tool"), "{bob}");

    // Tokens from the registry's token endpoint: alice's shows it, an anonymous one does not.
    let registry = Api::new(wharf.base());
    let token = |auth: Option<String>| {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = registry.request("GET", "/token?service=wharf", &headers, None);
        r.assert_status(200);
        format!("Bearer {}", r.json()["token"].as_str().expect("a token"))
    };
    let with = |bearer: &str| {
        let r = page.request("GET", "/ui", &[("Authorization", bearer)], None);
        r.assert_status(200);
        String::from_utf8_lossy(&r.body).into_owned()
    };
    let html = with(&token(Some(basic("alice", ALICE_PASSWORD))));
    assert!(html.contains(private.name), "alice's token:\n{html}");
    let html = with(&token(None));
    assert_eq!(private.shown_in(&html), None, "an anonymous token:\n{html}");

    // Prometheus asks for no credential and learns no name.
    let r = page.get("/metrics");
    r.assert_status(200);
    let scraped = String::from_utf8_lossy(&r.body).into_owned();
    assert!(scraped.contains("wharf_"), "{scraped}");
    for name in ["private", "pub/tool", PRIVATE_TAG, private.digest.as_str()] {
        assert!(
            !scraped.contains(name),
            "/metrics names {name:?}:\n{scraped}"
        );
    }
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `wharf <args> <config>` to the end, with no `WHARF_*` override from the caller's shell.
fn wharf_with(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(args).arg(config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run wharf")
}

/// `wharf serve --config <config>`, expected to refuse the config: its output once it exits; the
/// test fails if it is still serving after `within`.
fn serve_until_it_exits(config: &Path, within: Duration) -> Output {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(["serve", "--config"]).arg(config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wharf serve");
    let end = std::time::Instant::now() + within;
    while child.try_wait().expect("wait for wharf serve").is_none() {
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wharf serve's output");
            panic!(
                "wharf serve accepted the config and was still serving after {within:?}:\n{}",
                describe(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("wharf serve's output")
}

/// Proves (issue 24, item 4): `metrics.listen = "0.0.0.0:0"` with no `[auth]` is refused by `wharf
/// serve` (exit non-zero) and by `wharf check-config`, each naming `metrics.listen`, why (the status
/// page) and the fixes; with `[auth] allow_anonymous_remote = true` the check passes and wharf
/// serves the listener.
#[test]
fn a_metrics_listener_beyond_loopback_needs_auth_or_an_explicit_yes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n[storage]\ndata_dir = \"{}\"\n\
         [metrics]\nlisten = \"0.0.0.0:0\"\n",
        free_port(),
        dir.path().join("data").display()
    );
    fs::write(&config, &base).unwrap();

    let out = serve_until_it_exits(&config, Duration::from_secs(60));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{}", describe(&out));
    for part in [
        "0.0.0.0:0 (metrics.listen)",
        "status page",
        "set metrics.listen to a loopback address",
        "allow_anonymous_remote = true",
        "htpasswd_file",
    ] {
        assert!(
            said.contains(part),
            "{part:?} not said:\n{}",
            describe(&out)
        );
    }

    let out = wharf_with(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with(
            "metrics.listen: 0.0.0.0:0 is reachable from other machines and no client \
             authentication is configured: anyone could read the status page"
        ) && l.contains("allow_anonymous_remote = true")),
        "{}",
        describe(&out)
    );

    fs::write(
        &config,
        format!("{base}[auth]\nallow_anonymous_remote = true\n"),
    )
    .unwrap();
    let out = wharf_with(&["check-config"], &config);
    assert!(out.status.success(), "{}", describe(&out));
    let wharf = Wharf::start(WharfOptions {
        extra_toml: "[metrics]\nlisten = \"0.0.0.0:0\"\n[auth]\nallow_anonymous_remote = true\n"
            .into(),
        ..Default::default()
    });
    crate::plugins::wait_for_log(
        &wharf,
        &["serving /metrics and the status page", "0.0.0.0:0"],
        Duration::from_secs(30),
    );
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every directory and file below `dir`, with its mode (not following links).
fn walk(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let kind = e.file_type().unwrap();
        let path = e.path();
        if kind.is_dir() {
            out.push((path.clone(), true, mode(&path)));
            out.extend(walk(&path));
        } else if kind.is_file() {
            out.push((path.clone(), false, mode(&path)));
        }
    }
    out
}

/// `cat path` as user `nobody`: what it printed, or why it could not.
fn cat_as_nobody(path: &Path) -> Output {
    let runuser = require_tool("runuser", "apt-get install util-linux");
    Command::new(runuser)
        .args(["-u", "nobody", "--", "cat"])
        .arg(path)
        .output()
        .expect("run runuser")
}

/// Lets other users reach `wharf`'s data directory's parent (a test's temp dir is 0700), so that
/// only the data directory's own modes can keep them out; checks that they can.
fn let_others_reach_the_parent_of(wharf: &Wharf) {
    let home = wharf.data_dir().parent().unwrap().to_owned();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    let probe = wharf.data_dir().with_file_name("probe.txt");
    fs::write(&probe, "readable").unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o644)).unwrap();
    let out = cat_as_nobody(&probe);
    assert!(
        out.status.success(),
        "nobody cannot read a 0644 file beside the data directory, so this test would prove \
         nothing (is the temp dir, TMPDIR, below a directory other users cannot enter?): {}",
        describe(&out)
    );
}

/// A blob of `layout` in `wharf`'s store.
fn stored_blob(wharf: &Wharf, digest: &str) -> PathBuf {
    let hex = &digest["sha256:".len()..];
    let path = wharf.blobs_dir().join("sha256").join(&hex[..2]).join(hex);
    assert!(path.is_file(), "{} is not stored", path.display());
    path
}

fn assert_denied(out: &Output, what: &str) {
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
            && out.stdout.is_empty(),
        "nobody read {what}: {}",
        describe(out)
    );
}

/// Proves (issue 24, item 5): after skopeo pushes an image, another local user (`nobody`) cannot
/// read its blobs or `meta.redb` (`Permission denied`), though the data directory's parent lets them
/// in: every directory wharf keeps is 0700, every file 0600.
#[test]
fn a_pushed_image_is_readable_only_by_wharfs_user() {
    let wharf = Wharf::start(WharfOptions::default());
    let_others_reach_the_parent_of(&wharf);
    let layout = write_layout(
        &wharf.scratch("src").join("layout"),
        &LayoutSpec::small("v1", 2403),
    );
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/team/private:v1", wharf.host()),
    );

    let data = wharf.data_dir();
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let entries = walk(&data);
    for (path, dir, m) in &entries {
        let want = if *dir { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} is {m:04o}", path.display());
    }
    let layer = &layout.images[0].layers[0].digest;
    assert_denied(&cat_as_nobody(&stored_blob(&wharf, layer)), "a layer");
    // On the shared backends the records are in Postgres: only the local spool and cache are here.
    if wharf.shared().is_none() {
        assert!(entries.iter().any(|(p, ..)| p.ends_with("meta.redb")));
        assert_denied(&cat_as_nobody(&data.join("meta.redb")), "meta.redb");
    }
}

/// Proves (issue 24, item 5): a data directory written before (0755 directories, 0644 files, which
/// `nobody` could read) is made private at the next start, and the log says what changed: the
/// directories 0700, `meta.redb` 0600; an old blob file keeps 0644 but `nobody` can no longer reach
/// it; the image still pulls; the start after that changes nothing and says nothing.
#[test]
fn an_old_data_dir_is_made_private_at_start() {
    let mut wharf = Wharf::start(WharfOptions::default());
    let_others_reach_the_parent_of(&wharf);
    let layout = write_layout(
        &wharf.scratch("src").join("layout"),
        &LayoutSpec::small("v1", 2404),
    );
    let skopeo = Skopeo::new();
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/team/old:v1", wharf.host()),
    );
    wharf.stop();

    // As an older wharf left it.
    let data = wharf.data_dir();
    for (path, dir, _) in walk(&data).into_iter().chain([(data.clone(), true, 0)]) {
        let m = if dir { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
    }
    let blob = stored_blob(&wharf, &layout.images[0].layers[0].digest);
    assert!(
        cat_as_nobody(&blob).status.success(),
        "the old layout was readable"
    );

    wharf.start_again();
    // The harness made the data directory 0755 before the first start, which said so too.
    let made_private = [
        "the data directory was open to other users",
        "meta.redb (was 0644)",
    ];
    let line = crate::plugins::wait_for_log(&wharf, &made_private, Duration::from_secs(30));
    for part in [
        "directories now 0700",
        "(was 0755)",
        "meta.redb (was 0644)",
        "no other user can reach them now",
    ] {
        assert!(line.contains(part), "{part:?} not in: {line}");
    }
    for (path, dir, m) in walk(&data) {
        if dir {
            assert_eq!(m, 0o700, "{}", path.display());
        }
    }
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("meta.redb")), 0o600);
    assert_eq!(mode(&blob), 0o644, "blob files are not walked at start");
    assert_denied(&cat_as_nobody(&blob), "an old blob");
    assert_denied(&cat_as_nobody(&data.join("meta.redb")), "meta.redb");
    let back = wharf.scratch("back");
    skopeo.copy(
        &format!("docker://{}/team/old:v1", wharf.host()),
        &format!("oci:{}:v1", back.display()),
    );

    wharf.stop();
    wharf.start_again();
    wharf.stop();
    assert_eq!(
        crate::plugins::log_count(&wharf, &[made_private[0]]),
        2,
        "a private data directory is left alone, and said nothing of"
    );
}
