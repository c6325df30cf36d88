use super::*;
use wharf_model::platform::Platform;
use wharf_model::request::Operation;
use wharf_model::request::RequestCtx;

/// What the tests' plugins may hand back (wharf's default `registry.max_manifest_bytes`).
const MAX_ANSWER: u64 = 4 << 20;

/// A check that takes every rewrite.
struct Accept;

impl RewriteCheck for Accept {
    async fn check(&self, _out: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// `wharf:policy@0.1.0` is frozen: components built against it must keep loading, so its text may
/// never change. A new capability is a new interface in a new version (see wit/README.md).
#[test]
fn wit_is_frozen() {
    let digest = wharf_model::digest::Digest::sha256_of(WIT_TEXT.as_bytes());
    assert_eq!(
        digest.hex(),
        "616e2967a372752e26e1607214ef98030bead69d08d6f9970f63a2ea9faa14eb",
        "wit/policy.wit ({WIT_PACKAGE}) changed; released WIT is frozen: add a new version instead"
    );
}

#[test]
fn operations_parse_and_name_themselves() {
    for op in [
        Operation::Pull,
        Operation::Push,
        Operation::Delete,
        Operation::List,
    ] {
        assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
    }
    let e = "read".parse::<Operation>().unwrap_err();
    assert!(e.contains("pull, push, delete or list"), "{e}");
}

#[test]
fn no_plugins_allow_everything_and_rewrite_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = Plugins::none();
    let ctx = RequestCtx {
        operation: Operation::Pull,
        registry: None,
        repository: "team/app".into(),
        reference: Some("v1".into()),
        client_address: "127.0.0.1:1".into(),
        identity: None,
        user_agent: None,
    };
    rt.block_on(async {
        assert_eq!(p.access(ctx.clone()).await, Ok(()));
        assert_eq!(p.rewrite_key(), None);
        assert_eq!(
            p.rewrite(ctx.clone(), "x".into(), Bytes::from_static(b"{}"), &Accept)
                .await,
            Ok(Rewritten {
                bytes: None,
                failed: false
            })
        );
        let linux = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
            os_features: vec![],
        };
        assert_eq!(p.platforms(ctx, vec![linux.clone()]).await, vec![linux]);
    });
}

// ---- The chain with real components, built from source by plugins/build.sh ----

use std::os::unix::fs::MetadataExt;

/// A component from `plugins/target/wasm32-wasip2/release/`; a missing one fails the test (never skips).
fn component(stem: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/target/wasm32-wasip2/release")
        .join(format!("{stem}.wasm"));
    assert!(
        p.is_file(),
        "{} is not built: run `plugins/build.sh` (tests/run.sh runs it) to build the plugin \
         components from source",
        p.display()
    );
    p
}

fn plugin(name: &str, stem: &str, config: &str) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        path: component(stem),
        config: config.into(),
        on: None,
        // Generous: these tests run beside parallel builds; the deadline tests set their own.
        timeout_ms: 2000,
        max_memory_mb: 64,
        fail: None,
    }
}

fn pull(registry: Option<&str>, repository: &str) -> RequestCtx {
    RequestCtx {
        operation: Operation::Pull,
        registry: registry.map(str::to_owned),
        repository: repository.into(),
        reference: Some("v1".into()),
        client_address: "127.0.0.1:1".into(),
        identity: None,
        user_agent: Some("unit-test".into()),
    }
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
    Platform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(str::to_owned),
        os_version: None,
        os_features: vec![],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn load(cfgs: &[PluginConfig]) -> (Plugins, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let p = Plugins::load(cfgs, cache.path(), MAX_ANSWER).unwrap_or_else(|e| panic!("load: {e}"));
    (p, cache)
}

/// Two allow-lists that both refuse `team/app`: the first one's refusal is the answer (the second is
/// not asked); a name only the second refuses is refused by the second; a name both allow is allowed.
#[test]
fn access_chain_first_deny_wins() {
    let (p, _cache) = load(&[
        plugin("first", "allow_list", r#"{"deny": ["team/**"]}"#),
        plugin(
            "second",
            "allow_list",
            r#"{"deny": ["team/app", "other/*"]}"#,
        ),
    ]);
    let rt = runtime();
    rt.block_on(async {
        let d = p.access(pull(None, "team/app")).await.unwrap_err();
        assert_eq!(d.plugin, "first", "{d:?}");
        assert!(d.reason.contains("\"team/**\""), "{d:?}");
        let d = p.access(pull(None, "other/x")).await.unwrap_err();
        assert_eq!(d.plugin, "second", "{d:?}");
        assert!(d.reason.contains("\"other/*\""), "{d:?}");
        assert_eq!(p.access(pull(None, "free/x")).await, Ok(()));
        // Mirrored names are judged as <registry>/<repository>.
        assert_eq!(p.access(pull(Some("docker.io"), "team/app")).await, Ok(()));
    });
    for pl in &p.set().plugins {
        assert_eq!(pl.failures(), 0, "{} failed", pl.name);
    }
}

/// Two platform filters: what is kept is the intersection of their choices, in the index's order;
/// one alone keeps its own choice (platform selection at the host level).
#[test]
fn platform_chain_intersects() {
    let available = vec![
        platform("linux", "amd64", None),
        platform("linux", "arm64", Some("v8")),
        platform("linux", "arm", Some("v7")),
        platform("windows", "amd64", None),
    ];
    let rt = runtime();
    let (one, _c1) = load(&[plugin(
        "a",
        "platform_filter",
        r#"{"platforms": ["linux/amd64", "linux/arm64"]}"#,
    )]);
    let kept = rt.block_on(one.platforms(pull(None, "team/app"), available.clone()));
    assert_eq!(kept, vec![available[0].clone(), available[1].clone()]);

    let (two, _c2) = load(&[
        plugin(
            "a",
            "platform_filter",
            r#"{"platforms": ["linux/amd64", "linux/arm64"]}"#,
        ),
        plugin(
            "b",
            "platform_filter",
            r#"{"platforms": ["linux/arm64", "linux/arm/v7"]}"#,
        ),
    ]);
    let kept = rt.block_on(two.platforms(pull(None, "team/app"), available.clone()));
    assert_eq!(kept, vec![available[1].clone()]);
}

/// Two annotate plugins: the second sees the first's output, so both annotations are in the result,
/// and where both set a key the second's value wins.
#[test]
fn rewrite_chain_applies_in_order() {
    let (p, _cache) = load(&[
        plugin(
            "first",
            "annotate",
            r#"{"annotations": {"org.example.first": "1", "org.example.both": "first"}}"#,
        ),
        plugin(
            "second",
            "annotate",
            r#"{"annotations": {"org.example.second": "2", "org.example.both": "second"}}"#,
        ),
    ]);
    assert!(p.rewrite_key().is_some());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", "a".repeat(64)),
            "size": 2,
        },
        "layers": [],
    }))
    .unwrap();
    let rt = runtime();
    let out = rt
        .block_on(p.rewrite(
            pull(None, "team/app"),
            "application/vnd.oci.image.manifest.v1+json".into(),
            Bytes::from(manifest),
            &Accept,
        ))
        .unwrap()
        .bytes
        .expect("rewritten");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let a = &v["annotations"];
    assert_eq!(a["org.example.first"], "1", "{v}");
    assert_eq!(a["org.example.second"], "2", "{v}");
    assert_eq!(a["org.example.both"], "second", "{v}");
    assert_eq!(v["config"]["size"], 2, "the rest is kept: {v}");
    // Docker's manifest types have no annotations: left as they are.
    let docker = rt.block_on(p.rewrite(
        pull(None, "team/app"),
        "application/vnd.docker.distribution.manifest.v2+json".into(),
        Bytes::from_static(br#"{"schemaVersion":2}"#),
        &Accept,
    ));
    assert_eq!(docker.unwrap().bytes, None);
}

/// The compiled component is kept on disk by the digest of its bytes, and a second load with the same
/// cache dir uses it: the file is not written again (same inode and time), and the load is faster.
#[test]
fn compiled_components_are_cached_by_digest() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = [plugin("a", "allow_list", r#"{"deny": ["x"]}"#)];
    let started = Instant::now();
    let first = Plugins::load(&cfg, cache.path(), MAX_ANSWER).unwrap();
    let cold = started.elapsed();
    let digest = first.set().plugins[0].loaded.digest().hex().to_owned();
    let cached: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(&digest), "{name} is not named by {digest}");
    let before = std::fs::metadata(&cached[0]).unwrap();

    let started = Instant::now();
    let second = Plugins::load(&cfg, cache.path(), MAX_ANSWER).unwrap();
    let warm = started.elapsed();
    let after = std::fs::metadata(&cached[0]).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec()),
        "the second load compiled the component again and rewrote {name}"
    );
    // Measured here: about 150 ms to compile allow_list, 7 ms from the cache. A margin for busy machines.
    assert!(
        warm * 3 < cold,
        "a load from the cache ({warm:?}) should be much faster than compiling ({cold:?})"
    );
    eprintln!("allow_list: compile+load {cold:?}, load from cache {warm:?}");
    let rt = runtime();
    assert!(rt.block_on(second.access(pull(None, "x"))).is_err());
}

/// A trap and a timeout are failures, counted per plugin: with `fail = "open"` the chain goes on as if
/// the plugin were not there; with the default (closed) the refusal names the plugin and the failure.
#[test]
fn traps_and_timeouts_are_counted_failures() {
    let mut trap = plugin("trap", "test_trap", "");
    trap.fail = Some(FailPolicy::Open);
    let mut looper = plugin("looper", "test_loop_forever", "");
    looper.fail = Some(FailPolicy::Open);
    looper.timeout_ms = 20;
    let (p, _cache) = load(&[trap, looper]);
    let rt = runtime();
    for round in 1..=2u64 {
        let started = Instant::now();
        assert_eq!(rt.block_on(p.access(pull(None, "team/app"))), Ok(()));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let set = p.set();
        assert_eq!(set.plugins[0].failures(), round, "trap");
        assert_eq!(set.plugins[1].failures(), round, "timeout");
    }

    let mut looper = plugin("looper", "test_loop_forever", "");
    looper.timeout_ms = 20;
    let (p, _cache) = load(&[looper, plugin("err", "test_err_result", "")]);
    let d = rt.block_on(p.access(pull(None, "team/app"))).unwrap_err();
    assert_eq!(d.plugin, "looper");
    assert!(d.reason.contains("did not answer within 20 ms"), "{d:?}");
    assert_eq!(p.set().plugins[0].failures(), 1);
    assert_eq!(
        p.set().plugins[1].failures(),
        0,
        "not asked after a closed failure"
    );

    let (p, _cache) = load(&[plugin("err", "test_err_result", "")]);
    let d = rt.block_on(p.access(pull(None, "team/app"))).unwrap_err();
    assert!(d.reason.contains("deliberate error from check"), "{d:?}");
    assert_eq!(p.set().plugins[0].failures(), 1);
}

/// A plugin whose `init` refuses its config stops the load, and the error names the plugin and the
/// plugin's own reason.
#[test]
fn a_refused_config_fails_the_load_with_the_plugins_reason() {
    let cache = tempfile::tempdir().unwrap();
    let e = Plugins::load(
        &[plugin("pf", "platform_filter", r#"{"platforms": []}"#)],
        cache.path(),
        MAX_ANSWER,
    )
    .err()
    .expect("an empty platform list is refused");
    let msg = e.to_string();
    assert!(
        msg.contains("plugin pf") && msg.contains("`platforms` is empty"),
        "{msg}"
    );
}

/// Calls run inline on the request's task; a plugin that loops yields its worker thread every epoch
/// tick, so on a one-thread runtime other tasks keep running until the call's deadline stops it.
#[test]
fn a_long_call_shares_its_worker_thread() {
    let mut looper = plugin("looper", "test_loop_forever", "");
    looper.timeout_ms = 300;
    let (p, _cache) = load(&[looper]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(5));
            loop {
                every.tick().await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        let d = p.access(pull(None, "team/app")).await.unwrap_err();
        let during = ticks.load(Ordering::Relaxed) - before;
        ticker.abort();
        assert!(d.reason.contains("did not answer within 300 ms"), "{d:?}");
        // 60 ticks if nothing else ran; a call that held the thread would leave at most one.
        assert!(
            during >= 20,
            "only {during} ticks of a 5 ms timer ran during a 300 ms plugin call on the same thread"
        );
    });
}

/// A request that goes away mid-call (its future dropped) discards the instance and frees its place in
/// the warm pool: after more abandoned calls than the pool holds, a call still gets an instance.
#[test]
fn an_abandoned_call_frees_its_instance() {
    let mut looper = plugin("looper", "test_loop_forever", "");
    looper.timeout_ms = 300;
    let (p, _cache) = load(&[looper]);
    assert!(
        p.set().plugins[0].loaded.pooled(),
        "this test is about the warm pool"
    );
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..6 {
            let abandoned =
                tokio::time::timeout(Duration::from_millis(10), p.access(pull(None, "a"))).await;
            assert!(abandoned.is_err(), "the call should still be running");
        }
        let last = tokio::time::timeout(Duration::from_secs(10), p.access(pull(None, "a")))
            .await
            .expect("a call after abandoned ones must get an instance, not wait forever");
        let d = last.unwrap_err();
        assert!(d.reason.contains("did not answer within 300 ms"), "{d:?}");
    });
}

/// A check that refuses any rewrite naming `deadbeef`, as wharf's refuses one naming content the
/// repository does not have.
struct NoGhosts;

impl RewriteCheck for NoGhosts {
    async fn check(&self, out: &[u8]) -> Result<(), String> {
        match String::from_utf8_lossy(out).contains("deadbeef") {
            true => {
                Err("it names sha256:…deadbeef, which repository team/app does not have".into())
            }
            false => Ok(()),
        }
    }
}

fn index() -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [],
        }))
        .unwrap(),
    )
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const GHOST: &str = r#"{"child": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:00000000000000000000000000000000000000000000000000000000deadbeef", "size": 2}}"#;

/// A rewrite the caller's check refuses is a failure of the plugin that made it: failing open, its
/// output is dropped and the next plugin rewrites the manifest as if it had not run (the outcome says
/// a plugin failed); failing closed, the chain refuses, naming the plugin and the check's reason, and
/// the next plugin is not asked.
#[test]
fn a_rewrite_the_check_refuses_is_its_plugins_failure() {
    let annotate = plugin(
        "annotate",
        "annotate",
        r#"{"annotations": {"org.example.k": "v"}}"#,
    );
    let (p, _cache) = load(&[plugin("ghost", "test_rewrite", GHOST), annotate.clone()]);
    let rt = runtime();
    let out = rt
        .block_on(p.rewrite(pull(None, "team/app"), INDEX.into(), index(), &NoGhosts))
        .unwrap();
    assert!(out.failed);
    let v: serde_json::Value = serde_json::from_slice(&out.bytes.expect("annotated")).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]), "{v}");
    assert_eq!(v["annotations"]["org.example.k"], "v", "{v}");
    assert_eq!(p.set().plugins[0].failures(), 1);

    let mut ghost = plugin("ghost", "test_rewrite", GHOST);
    ghost.fail = Some(FailPolicy::Closed);
    let (p, _cache) = load(&[ghost, annotate]);
    let d = rt
        .block_on(p.rewrite(pull(None, "team/app"), INDEX.into(), index(), &NoGhosts))
        .unwrap_err();
    assert_eq!(d.plugin, "ghost");
    assert!(
        d.reason
            .contains("plugin ghost's rewrite cannot be served: it names sha256:…deadbeef"),
        "{d:?}"
    );
    assert_eq!(p.set().plugins[1].failures(), 0);
}

/// An answer of more than `max_answer` bytes fails the call inside the instance (wasmtime's hostcall
/// fuel), with a message that says so; one of exactly `max_answer` bytes is taken. This also pins the
/// text of wasmtime's fuel error, which the host recognises.
#[test]
fn an_answer_over_the_limit_is_refused_before_it_is_copied() {
    let limit = MAX_ANSWER as usize;
    let over = plugin(
        "hoarder",
        "test_rewrite",
        &format!(r#"{{"bytes": {}}}"#, limit + 1),
    );
    let (p, _cache) = load(&[over]);
    let rt = runtime();
    let out = rt
        .block_on(p.rewrite(pull(None, "team/app"), INDEX.into(), index(), &Accept))
        .unwrap();
    assert_eq!((out.bytes, out.failed), (None, true));

    let mut over = plugin(
        "hoarder",
        "test_rewrite",
        &format!(r#"{{"bytes": {}}}"#, limit + 1),
    );
    over.fail = Some(FailPolicy::Closed);
    let (p, _cache) = load(&[over]);
    let d = rt
        .block_on(p.rewrite(pull(None, "team/app"), INDEX.into(), index(), &Accept))
        .unwrap_err();
    assert!(
        d.reason.contains(&format!(
            "plugin hoarder handed wharf more than {limit} bytes"
        )),
        "{d:?}"
    );

    let (p, _cache) = load(&[plugin(
        "full",
        "test_rewrite",
        &format!(r#"{{"bytes": {limit}}}"#),
    )]);
    let out = rt
        .block_on(p.rewrite(pull(None, "team/app"), INDEX.into(), index(), &Accept))
        .unwrap();
    assert!(!out.failed);
    assert_eq!(out.bytes.map(|b| b.len()), Some(limit));
}
