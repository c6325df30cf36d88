//! Hostile components (`plugins/testing/`): one that never returns, one that eats memory, one that
//! traps, one that returns `err`, one of the wrong world, garbage bytes, an `init` that refuses. wharf
//! keeps serving, applies the fail policy, and its messages say which plugin failed and why.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::SmallImage;
use crate::harness::{free_port, wharf_bin};
use crate::http::Api;

use super::{assert_body_names, component, start, wait_for_log, Entry, PluginFiles};

/// One failing access plugin, loaded twice: `<name>-closed` judges pulls with the default fail policy
/// (closed: refuse), `<name>-open` judges tag lists with `fail = "open"` (as if it were not there).
/// Pushes reach neither. `why` is what the refusal must say about the failure.
fn fails_by_policy(stem: &str, name: &str, tune: impl Fn(&mut Entry), why: &str) {
    let files = PluginFiles::new();
    let path = files.add(&format!("{stem}.wasm"), &component(stem));
    let mut closed = Entry::new(&format!("{name}-closed"), &path, "");
    closed.on = Some(vec!["pull"]);
    tune(&mut closed);
    let mut open = Entry::new(&format!("{name}-open"), &path, "");
    open.on = Some(vec!["list"]);
    open.fail = Some("open");
    tune(&mut open);
    let wharf = start(&[closed, open], None);
    let api = Api::new(wharf.base());

    // wharf keeps serving what the plugin does not judge.
    let image = SmallImage::push(&api, "team/app", "v1", 1700);

    // Closed: every pull is refused, promptly, naming the plugin and the failure; each call gets a
    // fresh instance and fails the same way (a failed instance is not reused half-broken).
    for round in 0..3 {
        let started = Instant::now();
        let r = api.get_manifest("team/app", "v1");
        let took = started.elapsed();
        r.assert_error(403, "DENIED");
        assert_body_names(&r, &format!("plugin {name}-closed"));
        assert_body_names(&r, why);
        assert_body_names(&r, "fail = \\\"closed\\\"");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("wasm backtrace"),
            "the refusal should say what failed, not dump a backtrace: {}",
            r.describe()
        );
        assert!(
            took < Duration::from_secs(3),
            "round {round}: a failing plugin held the request for {took:?}"
        );
    }
    api.get(&format!("/v2/team/app/blobs/{}", image.layer.digest))
        .assert_error(403, "DENIED");

    // Open: the tag list is served as if the plugin were not there.
    let tags = api.get("/v2/team/app/tags/list");
    tags.assert_status(200);
    assert_eq!(tags.json()["tags"][0], "v1", "{}", tags.describe());

    // Still serving: another push, and the API root.
    SmallImage::push(&api, "team/other", "v1", 1701);
    api.get("/v2/").assert_status(200);

    // The log says which plugin failed, why, and counts the failures.
    wait_for_log(
        &wharf,
        &[&format!("{name}-closed"), "access check failed", why],
        Duration::from_secs(5),
    );
    wait_for_log(
        &wharf,
        &[&format!("{name}-open"), "access check failed", "Open"],
        Duration::from_secs(5),
    );
    wait_for_log(
        &wharf,
        &[&format!("{name}-closed"), "failures=3"],
        Duration::from_secs(5),
    );
}

/// Proves: a plugin that never returns is stopped at its deadline (`timeout_ms = 50`): pulls are
/// refused within a fraction of a second with "did not answer within 50 ms", tag lists (fail open) are
/// served, and wharf goes on serving pushes.
#[test]
fn a_plugin_that_never_returns_is_stopped_at_its_deadline() {
    fails_by_policy(
        "test_loop_forever",
        "looper",
        |e| e.timeout_ms = Some(50),
        "did not answer within 50 ms",
    );
}

/// Proves: a plugin that allocates without end is stopped at `max_memory_mb` (16 here): a failure of
/// the plugin (closed: refused; open: ignored), not of wharf, which keeps serving.
#[test]
fn a_plugin_that_eats_memory_is_stopped_at_its_limit() {
    fails_by_policy(
        "test_memory_bomb",
        "bomb",
        |e| e.max_memory_mb = Some(16),
        "it ran out of memory (max_memory_mb = 16",
    );
}

/// Proves: a plugin that traps (a Rust panic) is a failure of the plugin, with the trap in the message.
#[test]
fn a_plugin_that_traps_is_a_failure_not_a_decision() {
    fails_by_policy(
        "test_trap",
        "trapper",
        |_| {},
        "plugin trapper-closed failed: call: wasm trap: wasm `unreachable` instruction executed",
    );
}

/// Proves: an `err` result is a failure, not a decision, and its text reaches the client and the log.
#[test]
fn an_err_result_is_a_failure_with_its_reason() {
    fails_by_policy(
        "test_err_result",
        "erring",
        |_| {},
        "err-result plugin: deliberate error from check",
    );
}

/// `wharf serve` with `entries` must refuse to start; returns what it printed.
fn serve_refuses(entries: &[Entry]) -> String {
    let home = tempfile::Builder::new()
        .prefix("wharf-e2e-refuse-")
        .tempdir()
        .unwrap();
    let config = home.path().join("wharf.toml");
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n\n[storage]\ndata_dir = \"{}\"\n\n[mirror]\ndefault_upstream = \"\"\n",
        free_port(),
        home.path().join("data").display()
    );
    for e in entries {
        toml += &e.toml();
    }
    fs::write(&config, toml).unwrap();
    let mut child = Command::new(wharf_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wharf");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wharf started with a plugin it must refuse:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "wharf exited 0 with a bad plugin");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_says(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "wharf's message lacks {n:?}:\n{text}");
    }
}

/// Proves: wharf refuses to start with a component of the wrong world, a file of garbage bytes, or a
/// plugin whose `init` refuses its config, and its message names the plugin, the file and the reason
/// (with what to do about it).
#[test]
fn components_wharf_cannot_run_stop_it_from_starting() {
    let files = PluginFiles::new();
    let wrong = files.add("wrong.wasm", &component("test_wrong_world"));
    let out = serve_refuses(&[Entry::new("wrong", &wrong, "")]);
    assert_says(
        &out,
        &[
            "plugin wrong",
            "wrong.wasm",
            "exports none of wharf:policy@0.1.0",
        ],
    );

    let garbage = files.path("garbage.wasm");
    fs::write(&garbage, crate::oci::Noise::bytes(17, 4096)).unwrap();
    let out = serve_refuses(&[Entry::new("garbage", &garbage, "")]);
    assert_says(
        &out,
        &[
            "plugin garbage",
            "garbage.wasm",
            "is not a WebAssembly component",
        ],
    );

    let refusing = files.add("init_fails.wasm", &component("test_init_fails"));
    let out = serve_refuses(&[Entry::new("picky", &refusing, r#"{"x": 1}"#)]);
    assert_says(
        &out,
        &[
            "plugin picky",
            "init refused its config",
            "deliberately refusing config",
        ],
    );

    let out = serve_refuses(&[Entry::new("missing", &files.path("nothere.wasm"), "")]);
    assert_says(&out, &["plugin missing", "nothere.wasm", "cannot read"]);
}
