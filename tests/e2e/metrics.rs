//! Prometheus metrics and `wharf status` (issue 17): a wharf with a metrics listener, a real
//! `docker-registry` as its upstream and as a push route's target, and an access plugin. Pulls (cold,
//! then warm), pushes (delivered, and one that cannot be), a refused pull and a collection must each
//! move their counters, by exactly as much as they did where that is deterministic; `wharf status
//! --json` must show the cached repository with its bytes, the hit ratio, the last collection and the
//! push journal.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fixtures::SmallImage;
use crate::gc::{cli, collect, wait_until_collectable};
use crate::harness::{free_port, DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;
use crate::mirror::{upstream, wait_until};
use crate::oci::Noise;
use crate::plugins::{component, Entry, PluginFiles};

/// One scrape, as `series → value` (`name{labels}` exactly as exposed).
fn scrape(metrics: &Api) -> BTreeMap<String, f64> {
    let r = metrics.get("/metrics");
    r.assert_status(200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "the Prometheus text format: {}",
        r.describe()
    );
    String::from_utf8(r.body)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        panic!(
            "{series} is not exposed; the scrape has:\n{}",
            m.keys().cloned().collect::<Vec<_>>().join("\n")
        )
    })
}

/// Proves: each event reaches its counter. Cold pulls are misses that fetch exactly the image's
/// bytes from the upstream; warm pulls are hits that serve exactly those bytes from the cache; the
/// pushes and the refusal count by route and status; the plugin's calls and its one denial count
/// under its name; the collection's run and reclaimed bytes match its report; a delivered and a stuck
/// routed push show in the journal gauges. `wharf status --json` agrees.
#[test]
fn metrics_and_status_follow_pulls_pushes_denials_and_collections() {
    let registry = DistRegistry::start();
    let up = registry.host();
    let image = SmallImage::push(&Api::new(registry.base()), "team/app", "v1", 1717);
    let image_bytes = image.manifest.len() as u64 + image.config.size + image.layer.size;

    let metrics_port = free_port();
    let closed = free_port();
    let files = PluginFiles::new();
    let mut gate = Entry::new(
        "gate",
        &files.add("allow_list.wasm", &component("allow_list")),
        r#"{"deny": ["team/secret"]}"#,
    );
    gate.on = Some(vec!["pull"]);
    let extra = format!(
        "{}\n[[push]]\nprefix = \"ci/app\"\ntarget = \"http://{up}/team/pushed\"\ninsecure = true\n\
         \n[[push]]\nprefix = \"ci/stuck\"\ntarget = \"http://127.0.0.1:{closed}/team/stuck\"\n\
         insecure = true\nmode = \"store-and-forward\"\n\
         \n[gc]\ngrace_secs = 0\ninterval_secs = 0\n\
         \n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        gate.toml()
    );
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&up, registry.addr(), "up")],
            tag_ttl_secs: Some(3600),
            ..Default::default()
        },
        extra_toml: extra,
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let metrics = Api::new(format!("http://127.0.0.1:{metrics_port}"));

    // Cold, then warm: the same three GETs.
    for round in 0..2 {
        let r = api.get_manifest("up/team/app", "v1");
        r.assert_status(200);
        assert_eq!(r.body, image.manifest);
        for d in [&image.config.digest, &image.layer.digest] {
            api.get(&format!("/v2/up/team/app/blobs/{d}"))
                .assert_status(200);
        }
        if round == 0 {
            // A fill commits (fsync, rename) just after its client has the last byte: the warm
            // round must find both blobs stored, or it joins a fill and counts a second miss.
            for d in [&image.config.digest, &image.layer.digest] {
                let hex = d.trim_start_matches("sha256:");
                let path = wharf.blobs_dir().join("sha256").join(&hex[..2]).join(hex);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !path.exists() {
                    assert!(std::time::Instant::now() < deadline, "{d} never committed");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
    // Refused by the plugin before anything is looked up.
    api.get_manifest("team/secret", "v1")
        .assert_error(403, "DENIED");
    // A routed push delivered before its manifest PUT is answered (write-through), and one whose
    // target is a closed port (store-and-forward: answered, then pending).
    SmallImage::push(&api, "ci/app", "v1", 1718);
    SmallImage::push(&api, "ci/stuck", "v1", 1719);
    // A blob nothing refers to, for the collection to reclaim (grace_secs = 0, but a touch in the
    // current second still protects it): dry runs, which the metrics do not count, say when.
    let orphan = Noise::bytes(1720, 10_000);
    let orphan_digest = api.push_blob("local/orphan", &orphan);
    wait_until_collectable(&wharf, [&orphan_digest]);
    let report = collect(&wharf, false);
    let removed_bytes = report["removed_bytes"].as_u64().unwrap();
    let removed = report["removed"].as_array().unwrap().len() as f64;
    assert!(
        removed_bytes >= orphan.len() as u64,
        "the orphan blob must be collected: {report}"
    );

    let host_label = format!("upstream=\"{up}\"");
    let closed_label = format!("upstream=\"127.0.0.1:{closed}\"");
    wait_until(
        || "the stuck push to show as pending and its target as unreachable".into(),
        || {
            let m = scrape(&metrics);
            m.get("wharf_pushes{state=\"pending\"}") == Some(&1.0)
                && m.get(&format!(
                    "wharf_upstream_errors_total{{{closed_label},outcome=\"unreachable\"}}"
                ))
                .is_some_and(|v| *v >= 1.0)
        },
    );
    let m = scrape(&metrics);
    let fetched = format!("wharf_upstream_fetched_bytes_total{{{host_label}}}");
    let exact = [
        (
            "wharf_cache_lookups_total{kind=\"blob\",result=\"miss\"}",
            2.0,
        ),
        (
            "wharf_cache_lookups_total{kind=\"blob\",result=\"hit\"}",
            2.0,
        ),
        (
            "wharf_cache_lookups_total{kind=\"manifest\",result=\"miss\"}",
            1.0,
        ),
        (
            "wharf_cache_lookups_total{kind=\"manifest\",result=\"hit\"}",
            1.0,
        ),
        ("wharf_cache_hit_ratio{kind=\"blob\"}", 0.5),
        ("wharf_cache_served_bytes_total", image_bytes as f64),
        (fetched.as_str(), image_bytes as f64),
        (
            "wharf_requests_total{route=\"manifests\",method=\"GET\",status=\"200\"}",
            2.0,
        ),
        (
            "wharf_requests_total{route=\"blobs\",method=\"GET\",status=\"200\"}",
            4.0,
        ),
        (
            "wharf_requests_total{route=\"manifests\",method=\"GET\",status=\"403\"}",
            1.0,
        ),
        (
            "wharf_requests_total{route=\"uploads\",method=\"POST\",status=\"202\"}",
            5.0,
        ),
        (
            "wharf_requests_total{route=\"uploads\",method=\"PUT\",status=\"201\"}",
            5.0,
        ),
        (
            "wharf_requests_total{route=\"manifests\",method=\"PUT\",status=\"201\"}",
            2.0,
        ),
        ("wharf_plugin_denials_total{plugin=\"gate\"}", 1.0),
        ("wharf_gc_runs_total", 1.0),
        ("wharf_gc_reclaimed_bytes_total", removed_bytes as f64),
        ("wharf_gc_removed_blobs_total", removed),
        ("wharf_pushes{state=\"delivered\"}", 1.0),
    ];
    for (series, want) in exact {
        assert_eq!(get(&m, series), want, "{series}");
    }
    // The stuck delivery is retried with backoff: between tries it is pending, during one delivering.
    assert_eq!(
        get(&m, "wharf_pushes{state=\"pending\"}") + get(&m, "wharf_pushes{state=\"delivering\"}"),
        1.0,
        "the stuck push"
    );
    let at_least = [
        // HEAD and GET of the manifest, GET of each blob.
        (
            format!("wharf_upstream_requests_total{{{host_label},outcome=\"2xx\"}}"),
            4.0,
        ),
        (
            format!("wharf_upstream_request_duration_seconds_count{{{host_label}}}"),
            4.0,
        ),
        // Every pull: six served, one refused.
        (
            "wharf_plugin_calls_total{plugin=\"gate\",call=\"access\"}".into(),
            7.0,
        ),
        (
            "wharf_plugin_call_duration_seconds_count{plugin=\"gate\",call=\"access\"}".into(),
            7.0,
        ),
        (
            "wharf_request_duration_seconds_count{route=\"blobs\"}".into(),
            4.0,
        ),
        (
            "wharf_response_bytes_total{route=\"blobs\"}".into(),
            (image.config.size + image.layer.size) as f64 * 2.0,
        ),
        ("wharf_gc_last_run_timestamp_seconds".into(), 1.0),
    ];
    for (series, min) in at_least {
        let v = get(&m, &series);
        assert!(v >= min, "{series} = {v}, expected at least {min}");
    }
    assert!(m.contains_key("wharf_leases"), "live leases are exposed");
    assert_eq!(get(&m, "wharf_plugin_errors_total{plugin=\"gate\"}"), 0.0);

    // The listener serves nothing else, and says what it does serve.
    let r = metrics.get("/nothing");
    r.assert_status(404);

    // `wharf status --json`, through the running server.
    let out = cli(&wharf, &["status", "--json"]);
    assert!(
        out.status.success(),
        "wharf status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(s["server"], true, "{s:#}");
    let cached = format!("{up}/team/app");
    let repo = s["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == cached.as_str())
        .unwrap_or_else(|| panic!("{cached} is not listed: {s:#}"));
    assert_eq!(repo["upstream"], up.as_str(), "{repo}");
    assert_eq!(repo["tags"], 1, "{repo}");
    assert_eq!(repo["bytes"], image_bytes, "{repo}");
    let by_upstream = s["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == up.as_str())
        .unwrap_or_else(|| panic!("{up} is not listed: {s:#}"));
    assert_eq!(by_upstream["bytes"], image_bytes, "{by_upstream}");
    assert_eq!(s["cache"]["blob_hits"], 2, "{s:#}");
    assert_eq!(s["cache"]["bytes_from_cache"], image_bytes, "{s:#}");
    assert_eq!(s["hit_ratio"], 0.5, "{s:#}");
    assert_eq!(s["last_gc"]["removed_bytes"], removed_bytes, "{s:#}");
    assert_eq!(s["pushes"]["delivered"], 1, "{s:#}");
    let waiting =
        s["pushes"]["pending"].as_u64().unwrap() + s["pushes"]["delivering"].as_u64().unwrap();
    assert_eq!(waiting, 1, "{s:#}");

    // And as a table.
    let out = cli(&wharf, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        cached.as_str(),
        "hit ratio 50.0%",
        "1 delivered",
        "last gc:",
    ] {
        assert!(
            text.contains(want),
            "`wharf status` lacks {want:?}:\n{text}"
        );
    }
}

/// The cached image's cold and warm pulls through `api` (three requests each): 3 misses, then
/// 3 hits, once the fills have committed.
fn pull_cold_then_warm(api: &Api, wharf: &Wharf, image: &SmallImage) {
    for round in 0..2 {
        api.get_manifest("up/team/app", "v1").assert_status(200);
        for d in [&image.config.digest, &image.layer.digest] {
            api.get(&format!("/v2/up/team/app/blobs/{d}"))
                .assert_status(200);
        }
        if round == 0 {
            // The warm round must find both blobs stored and linked, or it joins a fill (or finds
            // the file published but not yet recorded) and counts a miss: the fill logs "blob
            // cached" once both are done.
            for d in [&image.config.digest, &image.layer.digest] {
                let hex = d.trim_start_matches("sha256:");
                let path = wharf.blobs_dir().join("sha256").join(&hex[..2]).join(hex);
                wait_until(|| format!("{d} to be committed"), || path.exists());
                wait_until(
                    || format!("{d} to be recorded (the fill's \"blob cached\" line)"),
                    || {
                        std::fs::read_to_string(wharf.log_path())
                            .unwrap_or_default()
                            .lines()
                            .any(|l| l.contains("blob cached") && l.contains(d.as_str()))
                    },
                );
            }
        }
    }
}

fn status_json(wharf: &Wharf) -> Value {
    let out = cli(wharf, &["status", "--json"]);
    assert!(
        out.status.success(),
        "wharf status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Proves: what `wharf status` and `/ui` show outlives the server. Right after a pull (no collection,
/// no restart) the page shows the image's last use; after a collection and a stop, `wharf status`
/// with no server running shows that collection and the hit ratio and bytes of the pulls before the
/// stop; started again, the page still shows that ratio, the bytes saved and the history's charts,
/// and the totals count on from there, while Prometheus' counters start again from zero. The sampling
/// interval is an hour, so the only samples are the ones taken at each start and at the stop: what
/// the second run shows was written by the first one's stop.
#[test]
fn status_and_page_survive_a_restart() {
    let registry = DistRegistry::start();
    let up = registry.host();
    let image = SmallImage::push(&Api::new(registry.base()), "team/app", "v1", 1731);
    let image_bytes = image.manifest.len() as u64 + image.config.size + image.layer.size;
    let metrics_port = free_port();
    let mut wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&up, registry.addr(), "up")],
            tag_ttl_secs: Some(3600),
            ..Default::default()
        },
        extra_toml: format!(
            "[gc]\ngrace_secs = 0\ninterval_secs = 0\n\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\nsample_secs = 3600\n"
        ),
        ..Default::default()
    });
    let page_url = format!("http://127.0.0.1:{metrics_port}/ui");
    let api = Api::new(wharf.base());
    pull_cold_then_warm(&api, &wharf, &image);

    // Last use, before anything writes the mirror's batched uses (a collection, a stop, the minute).
    let (_, _, page) = crate::status_page::get_page(&page_url);
    let images = crate::status_page::section(&page, "images");
    assert!(
        images.contains("team/app</h4>") && images.contains("<td data-label=\"Last use\"><time"),
        "the image just pulled shows when:\n{images}"
    );

    let orphan = Noise::bytes(1732, 10_000);
    let orphan_digest = api.push_blob("local/orphan", &orphan);
    wait_until_collectable(&wharf, [&orphan_digest]);
    let report = collect(&wharf, false);
    assert!(
        report["removed_bytes"].as_u64().unwrap() >= orphan.len() as u64,
        "the orphan is collected: {report}"
    );
    assert!(wharf.stop().success(), "wharf stops cleanly");

    // No server: the files say it all.
    let s = status_json(&wharf);
    assert_eq!(s["server"], false, "{s:#}");
    assert_eq!(s["hit_ratio"], 0.5, "three hits, three misses: {s:#}");
    let totals = &s["cache_totals"]["totals"];
    assert_eq!(totals["hits"], 3, "{s:#}");
    assert_eq!(totals["misses"], 3, "{s:#}");
    assert_eq!(totals["bytes_from_cache"], image_bytes, "{s:#}");
    assert_eq!(totals["bytes_from_upstream"], image_bytes, "{s:#}");
    let gc = &s["last_gc"];
    assert_eq!(gc["started"], report["started"], "{s:#}");
    assert_eq!(gc["removed_bytes"], report["removed_bytes"], "{s:#}");
    assert_eq!(
        gc["removed"].as_u64(),
        report["removed"].as_array().map(|r| r.len() as u64),
        "{s:#}"
    );
    let out = cli(&wharf, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hit ratio 50.0%")
            && text.contains("last gc: ")
            && !text.contains("last gc: none"),
        "{text}"
    );

    // Started again: the page carries on from before the stop.
    wharf.start_again();
    let (_, _, page) = crate::status_page::get_page(&page_url);
    let ratio = crate::status_page::section(&page, "tile-hit-ratio");
    assert!(ratio.contains("<b>50 %</b>"), "{ratio}");
    let saved = crate::status_page::section(&page, "tile-saved");
    assert!(!saved.contains("<b>0 B</b>"), "{saved}");
    let history = crate::status_page::section(&page, "history");
    assert!(
        history.matches("<svg").count() == 2
            && history.contains("<polyline")
            && history.contains("id=\"counted-since\""),
        "the history from before the restart is drawn:\n{history}"
    );

    // The totals count on; Prometheus' counters started again.
    let api = Api::new(wharf.base());
    api.get_manifest("up/team/app", "v1").assert_status(200);
    let s = status_json(&wharf);
    assert_eq!(s["server"], true, "{s:#}");
    assert_eq!(s["cache_totals"]["totals"]["hits"], 4, "{s:#}");
    assert_eq!(s["cache"]["manifest_hits"], 1, "{s:#}");
    let m = scrape(&Api::new(format!("http://127.0.0.1:{metrics_port}")));
    assert_eq!(
        get(
            &m,
            "wharf_cache_lookups_total{kind=\"manifest\",result=\"hit\"}"
        ),
        1.0
    );
}
