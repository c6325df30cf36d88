//! Policy plugins (issue 14) against real peers: skopeo and containerd pulling and pushing through a
//! wharf that runs WebAssembly components built from source (`plugins/build.sh` builds the Rust plugins
//! in `plugins/`, the test-only hostile ones in `plugins/testing/`, and the Python and JavaScript
//! examples in `examples/plugins/`), the `wharf plugins` tools, and reloads while wharf runs.
//!
//! A component that is not built fails the test and says to run `plugins/build.sh`: no test is skipped
//! because a build step was.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::{log_tail, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};

// Tests.
mod access;
mod annotate;
mod cli;
mod containerd;
mod hostile;
mod reload;
mod rewrite_checks;

/// The repository root (the e2e package lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn require_built(path: PathBuf) -> PathBuf {
    if !path.is_file() {
        panic!(
            "{} is not built: run `plugins/build.sh` (tests/run.sh runs it) to build every plugin \
             component from source",
            path.display()
        );
    }
    path
}

/// A Rust component of `plugins/` (`allow_list`, `annotate`, `platform_filter`, `test_trap`, ...).
pub fn component(stem: &str) -> PathBuf {
    require_built(
        repo_root()
            .join("plugins/target/wasm32-wasip2/release")
            .join(format!("{stem}.wasm")),
    )
}

/// The Python (`python`) or JavaScript (`js`) example policy.
pub fn example(lang: &str) -> PathBuf {
    require_built(
        repo_root()
            .join("examples/plugins")
            .join(lang)
            .join("policy.wasm"),
    )
}

/// A private copy of the components a test loads: wharf watches its plugin files, so a test must own
/// them (a `plugins/build.sh` running meanwhile must not reload anyone's wharf), and the reload tests
/// change them.
pub struct PluginFiles {
    dir: TempDir,
}

impl PluginFiles {
    pub fn new() -> PluginFiles {
        PluginFiles {
            dir: tempfile::Builder::new()
                .prefix("wharf-e2e-plugins-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// Copies `src` in as `name` and returns the copy's path.
    pub fn add(&self, name: &str, src: &Path) -> PathBuf {
        let dst = self.dir.path().join(name);
        fs::copy(src, &dst)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        dst
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One `[[plugin]]` entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub config: String,
    pub on: Option<Vec<&'static str>>,
    pub timeout_ms: Option<u64>,
    pub max_memory_mb: Option<u64>,
    pub fail: Option<&'static str>,
}

impl Entry {
    /// A plugin with a generous deadline: these tests run beside parallel builds on two cores, where
    /// wharf's 10 ms default could fail a healthy plugin; the hostile tests set their own.
    pub fn new(name: &str, path: &Path, config: &str) -> Entry {
        Entry {
            name: name.into(),
            path: path.into(),
            config: config.into(),
            on: None,
            timeout_ms: Some(2000),
            max_memory_mb: None,
            fail: None,
        }
    }

    pub fn toml(&self) -> String {
        let s = |v: &str| serde_json::to_string(v).unwrap();
        let mut t = format!(
            "\n[[plugin]]\nname = {}\npath = {}\nconfig = {}\n",
            s(&self.name),
            s(&self.path.display().to_string()),
            s(&self.config)
        );
        if let Some(on) = &self.on {
            let list: Vec<String> = on.iter().map(|o| s(o)).collect();
            t += &format!("on = [{}]\n", list.join(", "));
        }
        if let Some(v) = self.timeout_ms {
            t += &format!("timeout_ms = {v}\n");
        }
        if let Some(v) = self.max_memory_mb {
            t += &format!("max_memory_mb = {v}\n");
        }
        if let Some(v) = self.fail {
            t += &format!("fail = {}\n", s(v));
        }
        t
    }
}

/// The host name the tests' upstream is known by: the allow list judges mirrored content as
/// `mirror.test/<repository>`.
pub const MIRROR_HOST: &str = "mirror.test";

/// wharf with `plugins`, and (when given) `registry` as upstream `mirror.test` under path prefix `up`.
pub fn start(plugins: &[Entry], registry: Option<&DistRegistry>) -> Wharf {
    let upstreams = registry
        .map(|r| vec![UpstreamSpec::http(MIRROR_HOST, r.addr()).with_prefix("up")])
        .unwrap_or_default();
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams,
            ..Default::default()
        },
        extra_toml: plugins.iter().map(Entry::toml).collect(),
        ..Default::default()
    })
}

/// wharf's log as events: a line that does not start with a timestamp continues the event before it
/// (a plugin's trap message carries a multi-line wasm backtrace, with the event's fields after it).
pub fn log_events(wharf: &Wharf) -> Vec<String> {
    let text = fs::read_to_string(wharf.log_path()).unwrap_or_default();
    let mut events: Vec<String> = Vec::new();
    for line in text.lines() {
        let starts_event = line.len() > 4 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit);
        match events.last_mut() {
            Some(last) if !starts_event => {
                last.push('\n');
                last.push_str(line);
            }
            _ => events.push(line.to_owned()),
        }
    }
    events
}

/// Polls wharf's log until an event has every one of `needles`; returns that event.
pub fn wait_for_log(wharf: &Wharf, needles: &[&str], within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        if let Some(e) = log_events(wharf)
            .into_iter()
            .find(|e| needles.iter().all(|n| e.contains(n)))
        {
            return e;
        }
        if Instant::now() >= end {
            panic!(
                "no event in wharf's log has all of {needles:?} within {within:?}\n--- log tail ---\n{}",
                log_tail(&wharf.log_path(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many events of wharf's log have every one of `needles`.
pub fn log_count(wharf: &Wharf, needles: &[&str]) -> usize {
    log_events(wharf)
        .iter()
        .filter(|e| needles.iter().all(|n| e.contains(n)))
        .count()
}

/// The response body (a spec error's message) mentions `needle`: the client must see the reason.
pub fn assert_body_names(r: &crate::http::Resp, needle: &str) {
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains(needle),
        "{}: the answer should say {needle:?}: {}",
        r.request,
        r.describe()
    );
}
