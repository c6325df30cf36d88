//! Reloads while wharf runs: "Reload on SIGHUP and when a plugin file changes; if the new set fails to
//! load, the old set keeps running and the log says why."

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::http::Api;

use super::{
    assert_body_names, component, example, log_count, start, wait_for_log, Entry, PluginFiles,
};

/// wharf polls its plugin files every 2 s; a reload compiles the component (the JS one is 12 MB).
const RELOAD: Duration = Duration::from_secs(60);

/// Replaces `dst` with `bytes` in one step (write beside it, rename over it), as a deploy would.
fn replace(dst: &Path, bytes: &[u8]) {
    let tmp = dst.with_extension("new");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, dst).unwrap();
}

/// Waits until the log has `n` lines with all of `needles`.
fn wait_for_count(wharf: &crate::harness::Wharf, needles: &[&str], n: usize) {
    let end = std::time::Instant::now() + RELOAD;
    while log_count(wharf, needles) < n {
        if std::time::Instant::now() >= end {
            panic!(
                "wharf's log has fewer than {n} lines with {needles:?} after {RELOAD:?}\n--- log tail ---\n{}",
                crate::harness::log_tail(&wharf.log_path(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proves, on one running wharf whose plugin `policy` has the config `{"deny": ["team/secret"]}`:
/// 1. as the Rust allow-list (an exact glob) it refuses `team/secret` and allows `team/secret-x`;
/// 2. the file is replaced by the JavaScript example (a prefix, same config): wharf reloads on its own
///    ("a plugin file changed"), and now refuses `team/secret-x` too, with the new plugin's reason;
/// 3. the file is replaced by garbage: wharf keeps serving with the JS policy, and the log says the
///    plugins were not reloaded, naming the plugin and the reason (not a WebAssembly component);
/// 4. the allow-list is put back: reloaded, and `team/secret-x` is allowed again;
/// 5. SIGHUP: the log says the plugins were reloaded, on SIGHUP.
#[test]
fn plugins_reload_on_change_and_sighup_and_keep_the_old_set_on_failure() {
    let files = PluginFiles::new();
    let path = files.add("policy.wasm", &component("allow_list"));
    let js = fs::read(example("js")).unwrap();
    let allow_list = fs::read(component("allow_list")).unwrap();
    let wharf = start(
        &[Entry::new("policy", &path, r#"{"deny": ["team/secret"]}"#)],
        None,
    );
    let api = Api::new(wharf.base());
    let pull = |repo: &str| api.get_manifest(repo, "v1");

    // 1. The allow-list.
    let r = pull("team/secret");
    r.assert_error(403, "DENIED");
    assert_body_names(&r, "(allow-list plugin)");
    pull("team/secret-x").assert_error(404, "MANIFEST_UNKNOWN");

    // 2. Swapped for the JS policy: reloaded, and the decisions are the new plugin's.
    replace(&path, &js);
    wait_for_count(&wharf, &["plugins reloaded", "a plugin file changed"], 1);
    let r = pull("team/secret-x");
    r.assert_error(403, "DENIED");
    assert_body_names(&r, "denied by plugin policy");
    assert_body_names(&r, "(js example plugin)");

    // 3. Garbage: the JS policy keeps running; the log names the plugin and why.
    replace(&path, &crate::oci::Noise::bytes(23, 8192));
    let line = wait_for_log(
        &wharf,
        &[
            "plugins not reloaded",
            "plugin policy",
            "is not a WebAssembly component",
        ],
        RELOAD,
    );
    assert!(
        line.contains("policy.wasm"),
        "the log should name the file: {line}"
    );
    let r = pull("team/secret-x");
    r.assert_error(403, "DENIED");
    assert_body_names(&r, "(js example plugin)");
    api.get("/v2/").assert_status(200);
    // A broken file is not retried on every poll: one line until it changes again.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        log_count(&wharf, &["plugins not reloaded"]),
        1,
        "wharf retried the broken file without it changing"
    );

    // 4. The allow-list again: reloaded.
    replace(&path, &allow_list);
    wait_for_count(&wharf, &["plugins reloaded", "a plugin file changed"], 2);
    pull("team/secret-x").assert_error(404, "MANIFEST_UNKNOWN");

    // 5. SIGHUP.
    // SAFETY: kill(2) on the wharf this test started.
    unsafe {
        libc::kill(wharf.pid() as libc::pid_t, libc::SIGHUP);
    }
    wait_for_count(&wharf, &["plugins reloaded", "SIGHUP"], 1);
    let r = pull("team/secret");
    r.assert_error(403, "DENIED");
    assert_body_names(&r, "(allow-list plugin)");
}
