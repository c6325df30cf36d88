//! The status page (issue 17), `/ui` on the metrics listener, loaded by a real browser: headless
//! Debian `chromium` renders it against a wharf that has mirrored an image from a real
//! `docker-registry`, holds a store-and-forward push it cannot deliver (its upstream is a closed port),
//! and whose access plugin refused a pull. The DOM chromium built is checked for what an operator must
//! see, the layout at a laptop's width is measured through the DevTools protocol, and screenshots
//! (a phone's, a laptop's) are left under `target/e2e-output/status_page/` for a human.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, require_tool, DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::mirror::{push_to_upstream, upstream};
use crate::plugins::{component, Entry, PluginFiles};
use crate::skopeo::Skopeo;

/// How long chromium may take to load and print or shoot the page (a cold start on a busy machine).
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

/// `chromium`, or the test fails with how to install it.
pub(crate) fn chromium() -> PathBuf {
    require_tool("chromium", "apt-get install chromium")
}

/// Runs headless chromium on `url` with `args` (`--dump-dom`, `--screenshot=…`), in a private profile,
/// with everything that would reach past this machine turned off; fails the test on a timeout.
fn run_chromium(profile: &Path, url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .env("HOME", profile)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn chromium");
    let end = Instant::now() + BROWSER_DEADLINE;
    loop {
        if child.try_wait().expect("try_wait chromium").is_some() {
            return child.wait_with_output().expect("chromium output");
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("chromium output");
            panic!(
                "chromium {args:?} {url} did not finish within {BROWSER_DEADLINE:?}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Chromium driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: it reads
/// commands on fd 3 and answers on fd 4, each message a JSON text ended by a NUL byte). An expression
/// evaluated this way runs whatever the page's CSP says (the page itself may run no script), so a
/// test can ask for the layout chromium computed.
pub(crate) struct DevTools {
    child: std::process::Child,
    to: fs::File,
    from: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Events that arrived while a command waited for its answer, oldest first.
    events: std::collections::VecDeque<serde_json::Value>,
    next: u64,
    end: Instant,
}

impl DevTools {
    pub(crate) fn start(profile: &Path) -> DevTools {
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (to_chromium, commands) = std::io::pipe().expect("pipe");
        let (answers, from_chromium) = std::io::pipe().expect("pipe");
        let (r, w) = (to_chromium.as_raw_fd(), from_chromium.as_raw_fd());
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .env("HOME", profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The pipe ends are
        // first copied above 9, so that placing them on 3 and 4 cannot overwrite one with the other.
        unsafe {
            cmd.pre_exec(move || {
                let (r, w) = (
                    libc::fcntl(r, libc::F_DUPFD, 10),
                    libc::fcntl(w, libc::F_DUPFD, 10),
                );
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn chromium");
        drop(OwnedFd::from(to_chromium));
        drop(OwnedFd::from(from_chromium));
        let (tx, from) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut answers = std::io::BufReader::new(answers);
            let mut msg = Vec::new();
            while answers.read_until(0, &mut msg).is_ok_and(|n| n > 0) {
                let text = msg.strip_suffix(&[0]).unwrap_or(&msg);
                let Ok(v) = serde_json::from_slice(text) else {
                    return;
                };
                if tx.send(v).is_err() {
                    return;
                }
                msg.clear();
            }
        });
        DevTools {
            child,
            to: fs::File::from(OwnedFd::from(commands)),
            from,
            events: std::collections::VecDeque::new(),
            next: 0,
            end: Instant::now() + BROWSER_DEADLINE,
        }
    }

    /// The next message, or the test fails when chromium has said nothing by the deadline.
    fn receive(&mut self, waiting_for: &str) -> serde_json::Value {
        let left = self.end.saturating_duration_since(Instant::now());
        match self.from.recv_timeout(left) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.child.kill();
                panic!("chromium gave no {waiting_for} within {BROWSER_DEADLINE:?} ({e})");
            }
        }
    }

    /// Sends `method` (to the page of `session`, if given) and returns its result.
    fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
        session: Option<&str>,
    ) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        self.send(id, method, params, session);
        loop {
            let answer = self.receive(method);
            if answer["id"] == id {
                assert!(
                    answer["error"].is_null(),
                    "chromium refused {method}: {answer}"
                );
                return answer["result"].clone();
            }
            if answer["id"].is_null() {
                self.events.push_back(answer);
            }
        }
    }

    /// Sends command `id` without waiting for its answer.
    fn send(&mut self, id: u64, method: &str, params: serde_json::Value, session: Option<&str>) {
        use std::io::Write;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).expect("JSON");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
    }

    /// The next event, one that came in meanwhile first.
    fn event(&mut self, waiting_for: &str) -> serde_json::Value {
        match self.events.pop_front() {
            Some(e) => e,
            None => self.receive(waiting_for),
        }
    }

    /// Opens `url` in a new page of `width`×`height` CSS pixels and waits for it to load; returns the
    /// page's session.
    pub(crate) fn open(&mut self, url: &str, width: u32, height: u32) -> String {
        let session = self.blank(width, height);
        let s = Some(session.as_str());
        self.call("Page.navigate", serde_json::json!({"url": url}), s);
        self.loaded(&session);
        session
    }

    /// Opens `url` in a new page as a person who answers the browser's login prompt with `user` and
    /// `password` (the prompt a `401` with a `Basic` challenge brings up), and waits for the page
    /// to load; returns its session. The browser keeps the credentials, as it would after a prompt,
    /// for the pages opened after.
    pub(crate) fn open_logged_in(&mut self, url: &str, user: &str, password: &str) -> String {
        let session = self.blank(1024, 768);
        let s = Some(session.as_str());
        self.call(
            "Fetch.enable",
            serde_json::json!({"handleAuthRequests": true, "patterns": [{"urlPattern": "*"}]}),
            s,
        );
        // Not waited for: the navigation's answer comes once its requests, paused below, go on.
        self.next += 1;
        let id = self.next;
        self.send(id, "Page.navigate", serde_json::json!({"url": url}), s);
        loop {
            let e = self.event("the login page");
            let id = &e["params"]["requestId"];
            match e["method"].as_str() {
                Some("Fetch.requestPaused") => {
                    self.call(
                        "Fetch.continueRequest",
                        serde_json::json!({"requestId": id}),
                        s,
                    );
                }
                Some("Fetch.authRequired") => {
                    self.call(
                        "Fetch.continueWithAuth",
                        serde_json::json!({"requestId": id, "authChallengeResponse": {
                            "response": "ProvideCredentials", "username": user, "password": password
                        }}),
                        s,
                    );
                }
                Some("Page.loadEventFired") if e["sessionId"] == session.as_str() => break,
                _ => {}
            }
        }
        self.call("Fetch.disable", serde_json::json!({}), s);
        session
    }

    /// A new blank page of `width`×`height` CSS pixels, its page events on; its session.
    fn blank(&mut self, width: u32, height: u32) -> String {
        let target = self.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
            None,
        );
        let session = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target["targetId"], "flatten": true}),
            None,
        )["sessionId"]
            .as_str()
            .expect("a session")
            .to_owned();
        let s = Some(session.as_str());
        self.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            s,
        );
        self.call("Page.enable", serde_json::json!({}), s);
        session
    }

    /// Waits for the page of `session` to load.
    fn loaded(&mut self, session: &str) {
        loop {
            let event = self.event("Page.loadEventFired");
            if event["method"] == "Page.loadEventFired" && event["sessionId"] == session {
                return;
            }
        }
    }

    /// The value of a JavaScript expression in the page of `session`.
    pub(crate) fn evaluate(&mut self, session: &str, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
            Some(session),
        );
        assert!(r["exceptionDetails"].is_null(), "{expression} failed: {r}");
        r["result"]["value"].clone()
    }

    /// A PNG of the whole page of `session`, at its width.
    fn screenshot(&mut self, session: &str) -> Vec<u8> {
        use base64::Engine;
        let size = self.evaluate(
            session,
            "[document.documentElement.clientWidth, document.documentElement.scrollHeight]",
        );
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png", "captureBeyondViewport": true, "clip": {
                "x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1
            }}),
            Some(session),
        );
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }
}

impl Drop for DevTools {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where this test leaves what a human may want to look at: it outlives the test's temp dirs.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-output/status_page");
    fs::create_dir_all(&dir).expect("create the test output dir");
    dir
}

/// `GET url` until it answers 200 (the metrics listener starts beside the main one); returns the
/// response's content type, CSP and body.
pub(crate) fn get_page(url: &str) -> (String, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match agent.get(url).call() {
            Ok(mut r) if r.status() == 200 => {
                let header = |name: &str| {
                    r.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (ctype, csp) = (header("content-type"), header("content-security-policy"));
                let body = r.body_mut().read_to_string().expect("read /ui");
                return (ctype, csp, body);
            }
            other => assert!(
                Instant::now() < end,
                "GET {url} did not answer 200 within 30 s: {:?}",
                other.map(|r| r.status())
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The part of `html` from the element with `id` to the end of its section.
pub(crate) fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element with id {id:?} in the page:\n{html}"));
    let rest = &html[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

/// Proves: chromium renders `/ui` from the metrics listener with the mirrored repository under its
/// upstream with the three platforms kept, the push waiting for its unreachable upstream, the plugin's
/// denial, and the hit-ratio and bytes-saved charts as SVG; the page carries no script, and a
/// 412×915 (phone) screenshot of it is a real image. At a laptop's width (1366 px) the page is no
/// wider than the window, though the push's last error (the upstream's, with a blob URL in it) is
/// long: it is clipped, whole in a `<details>`, and the push's image and target keep a readable
/// width (issue 23: the error ran off the right edge, the names wrapped one character a line).
#[test]
fn chromium_renders_the_status_page() {
    chromium();
    let registry = DistRegistry::start();
    let metrics = format!("127.0.0.1:{}", free_port());
    let closed = format!("127.0.0.1:{}", free_port());
    let files = PluginFiles::new();
    let gate = Entry::new(
        "gatekeeper",
        &files.add("allow_list.wasm", &component("allow_list")),
        r#"{"deny": ["secret/**"]}"#,
    );
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&registry.host(), registry.addr(), "up")],
            ..Default::default()
        },
        extra_toml: format!(
            "[metrics]\nlisten = \"{metrics}\"\n{}\n\
             [delivery]\nretry_initial_ms = 200\nretry_max_secs = 2\nmax_attempts = 1000\n{}",
            crate::push::route_toml(&closed, &["mode = \"store-and-forward\""]),
            gate.toml()
        ),
        ..Default::default()
    });
    let skopeo = Skopeo::new();

    // Mirrored: pulled twice through the path prefix, so the second pull is served from the cache.
    let mirrored = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1701));
    push_to_upstream(&registry, &mirrored, "team/app");
    for n in 0..2 {
        let out = wharf.scratch(&format!("pulled-{n}"));
        skopeo.copy(
            &format!("docker://{}/up/team/app:v1", wharf.host()),
            &format!("oci:{}:v1", out.display()),
        );
    }
    // Routed to a closed port: accepted here, waiting in the journal.
    let routed = write_layout(&wharf.scratch("routed"), &LayoutSpec::small("v1", 1702));
    skopeo.copy(
        &routed.skopeo_ref(),
        &format!("docker://{}/{}:v1", wharf.host(), crate::push::LOCAL),
    );
    // Denied by the plugin.
    Api::new(wharf.base())
        .get_manifest("secret/app", "v1")
        .assert_error(403, "DENIED");

    let url = format!("http://{metrics}/ui");
    let (ctype, csp, served) = get_page(&url);
    assert!(ctype.starts_with("text/html"), "content type {ctype:?}");
    assert!(
        csp.contains("default-src 'none'"),
        "the page tells the browser to load and run nothing: {csp:?}"
    );
    assert!(
        !served.contains("<script"),
        "no script on the page:\n{served}"
    );

    let profile = tempfile::Builder::new()
        .prefix("wharf-e2e-chromium-")
        .tempdir()
        .expect("tempdir");
    let out = run_chromium(profile.path(), &url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("wharf status"),
        "chromium --dump-dom {url} failed ({}):\n--- stdout ---\n{dom}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let images = section(&dom, "images");
    for needle in [
        format!("From {}", registry.host()),
        "team/app</h4>".to_owned(),
        "linux/amd64".to_owned(),
        "linux/arm64".to_owned(),
        "linux/arm/v7".to_owned(),
        "Pushed here".to_owned(),
        format!("{}</h4>", crate::push::LOCAL),
    ] {
        assert!(
            images.contains(&needle),
            "{needle:?} not among the cached images:\n{images}"
        );
    }
    // Last use: the mirror batches it in memory; the page writes the batch before reading, so the
    // image just pulled (no collection, no stop since) shows when.
    assert!(
        images.contains("<th>Last use</th>")
            && images.contains("<td data-label=\"Last use\"><time"),
        "the mirrored image's last use is shown:\n{images}"
    );

    let pushes = section(&dom, "pushes");
    assert!(
        pushes.contains(&format!("{}:v1", crate::push::LOCAL))
            && (pushes.contains(">pending<") || pushes.contains(">delivering<"))
            && pushes.contains(&format!("{closed}/{}", crate::push::REMOTE)),
        "the push waiting for {closed} is listed:\n{pushes}"
    );

    let denials = section(&dom, "denials");
    assert!(
        denials.contains("gatekeeper") && denials.contains("pull of secret/app"),
        "the plugin's denial is listed:\n{denials}"
    );

    let history = section(&dom, "history");
    assert_eq!(
        history.matches("<svg").count(),
        2,
        "hit ratio and bytes saved as charts:\n{history}"
    );
    assert!(
        history.contains("<polyline") || history.contains("<circle"),
        "the charts draw something:\n{history}"
    );
    let saved = section(&dom, "tile-saved");
    assert!(
        !saved.contains("<b>0 B</b>"),
        "the second pull was served from the cache:\n{saved}"
    );

    // Phone-sized screenshot.
    let png = output_dir().join("status-page.png");
    let _ = fs::remove_file(&png);
    let out = run_chromium(
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=412,915",
        ],
    );
    let bytes = fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "chromium --screenshot wrote no {} ({e}; exit {}):\n{}",
            png.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 8 * 1024,
        "{} is not a real screenshot ({} bytes)",
        png.display(),
        bytes.len()
    );
    // IHDR: width and height, big-endian, right after the signature and the chunk header.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(
        (width, height),
        (412, 915),
        "the screenshot has the phone's size"
    );
    println!("status page screenshot: {}", png.display());

    // A laptop's width: nothing runs off the right edge (the pushes table's last error did), and the
    // pushes table's names keep a readable width (they wrapped one character a line).
    let mut devtools = DevTools::start(profile.path());
    let page = devtools.open(&url, LAPTOP.0, LAPTOP.1);
    let layout = devtools.evaluate(
        &page,
        "(() => ({ scroll: document.documentElement.scrollWidth, \
         client: document.documentElement.clientWidth, \
         errors: Array.from(document.querySelectorAll('#pushes details')).map(d => d.textContent), \
         cells: Array.from(document.querySelectorAll('#pushes td')).map(td => { \
           const r = td.getBoundingClientRect(); \
           return { label: td.dataset.label, width: Math.round(r.width), right: Math.round(r.right) }; }) \
         }))()",
    );
    assert!(
        layout["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "the push's long last error opens in a <details>: {layout}"
    );
    let client = layout["client"].as_u64().expect("clientWidth");
    assert!(
        layout["scroll"].as_u64() <= Some(client),
        "at {LAPTOP:?} the page is wider than the window: {layout}"
    );
    let cells = layout["cells"].as_array().expect("cells");
    assert!(!cells.is_empty(), "the pushes table has rows: {layout}");
    for c in cells {
        assert!(
            c["right"].as_u64() <= Some(client),
            "a pushes cell runs off the right edge: {c} ({layout})"
        );
        if c["label"] == "Image" || c["label"] == "To" {
            assert!(
                c["width"].as_u64() >= Some(150),
                "a name column is squeezed: {c} ({layout})"
            );
        }
    }
    let png = output_dir().join("status-page-laptop.png");
    fs::write(&png, devtools.screenshot(&page)).expect("write the laptop screenshot");
    println!("status page at a laptop's width: {}", png.display());
}

/// A common laptop screen, in CSS pixels.
const LAPTOP: (u32, u32) = (1366, 768);

/// Proves: the page's recent plugin denials survive a restart. The denial is written when wharf
/// stops (the hourly sampling writes nothing in between), and the restarted wharf lists it again.
#[test]
fn recent_denials_survive_a_restart() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let files = PluginFiles::new();
    let gate = Entry::new(
        "gatekeeper",
        &files.add("allow_list.wasm", &component("allow_list")),
        r#"{"deny": ["secret/**"]}"#,
    );
    let mut wharf = Wharf::start(WharfOptions {
        extra_toml: format!(
            "[metrics]\nlisten = \"{metrics}\"\nsample_secs = 3600\n{}",
            gate.toml()
        ),
        ..Default::default()
    });
    Api::new(wharf.base())
        .get_manifest("secret/app", "v1")
        .assert_error(403, "DENIED");
    let url = format!("http://{metrics}/ui");
    let listed = |html: &str| {
        let d = section(html, "denials");
        d.contains("gatekeeper") && d.contains("pull of secret/app")
    };
    let (_, _, before) = get_page(&url);
    assert!(listed(&before), "{}", section(&before, "denials"));

    wharf.stop();
    wharf.start_again();
    let (_, _, after) = get_page(&url);
    assert!(
        listed(&after),
        "the denial is gone after a restart:\n{}",
        section(&after, "denials")
    );
}
