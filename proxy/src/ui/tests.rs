use std::time::Duration;

use serde_json::json;

use super::chart;
use super::escape::esc;
use super::html::{render, upstream_of};
use super::page::Page;
use crate::push::DeliveryStatus;
use wharf_policy::denials::DeniedRequest;
use wharf_storage::images::Image;
use wharf_storage::meta::{CacheTotals, Retention, Sample};

const NOW: u64 = 1_800_000_000;
const HOSTILE: &str = "<script>alert('x')</script>\"&";

fn digest(fill: char) -> String {
    format!("sha256:{}", fill.to_string().repeat(64))
}

fn image(repository: &str, tag: &str, platforms: &[&str], absent: usize) -> Image {
    serde_json::from_value(json!({
        "repository": repository,
        "tag": tag,
        "digest": digest('a'),
        "media_type": "application/vnd.oci.image.index.v1+json",
        "platforms": platforms,
        "platforms_absent": absent,
        "size": 3 * 1024 * 1024,
        "last_used": NOW - 90,
    }))
    .expect("an images::Image")
}

fn push(state: &str, repository: &str, error: Option<&str>) -> DeliveryStatus {
    serde_json::from_value(json!({
        "id": 7,
        "state": state,
        "mode": "store-and-forward",
        "repository": repository,
        "reference": "v1",
        "digest": digest('b'),
        "target": "http://127.0.0.1:5000",
        "upstream_repository": "team/app",
        "upstream_digest": null,
        "platforms": null,
        "attempts": 3,
        "last_error": error,
        "next_try": NOW + 5,
        "created": NOW - 60,
        "delivered_at": null,
        "lease": null,
    }))
    .expect("a push::DeliveryStatus")
}

fn sample(at: u64, hits: u64, misses: u64, from_cache: u64) -> Sample {
    Sample {
        at,
        since: NOW - 86_400,
        totals: CacheTotals {
            hits,
            misses,
            bytes_from_cache: from_cache,
            bytes_from_upstream: 0,
        },
    }
}

fn empty_page() -> Page {
    Page {
        now: NOW,
        images: Ok(Vec::new()),
        pushes: Ok(Vec::new()),
        samples: Vec::new(),
        denials: Vec::new(),
        sample_every: Duration::from_secs(10),
        keep: Retention::DEFAULT,
        audience: super::Audience::Everyone,
    }
}

/// The opening tags the page writes itself; anything else that looks like a tag came from data.
fn tags_in(html: &str) -> Vec<String> {
    html.split('<')
        .skip(1)
        .map(|t| {
            t.split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn esc_escapes_what_html_and_attributes_need() {
    assert_eq!(
        esc("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(esc("ghcr.io/team/app"), "ghcr.io/team/app");
}

#[test]
fn names_from_clients_are_shown_not_run() {
    let mut page = empty_page();
    page.images = Ok(vec![image(
        &format!("ci/{HOSTILE}"),
        HOSTILE,
        &[HOSTILE],
        0,
    )]);
    page.pushes = Ok(vec![push("failed", HOSTILE, Some(HOSTILE))]);
    page.denials = vec![DeniedRequest {
        at: NOW - 5,
        plugin: HOSTILE.into(),
        request: HOSTILE.into(),
        reason: HOSTILE.into(),
        repository: HOSTILE.into(),
    }];
    let html = render(&page);
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("alert('x')"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"),
        "{html}"
    );
    let allowed = [
        "!doctype",
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "h1",
        "h2",
        "h3",
        "h4",
        "p",
        "section",
        "div",
        "b",
        "span",
        "table",
        "colgroup",
        "col",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "code",
        "details",
        "summary",
        "small",
        "br",
        "time",
        "figure",
        "figcaption",
        "svg",
        "line",
        "text",
        "polyline",
        "polygon",
        "circle",
    ];
    for t in tags_in(&html) {
        assert!(
            allowed.contains(&t.as_str()),
            "unexpected tag <{t}> in {html}"
        );
    }
}

#[test]
fn empty_states_say_so() {
    let html = render(&empty_page());
    for expected in [
        "Nothing cached yet",
        "No push is waiting or failed",
        "No request was denied by a plugin",
        "No history yet: a sample is taken every 10 s",
        "name=\"viewport\"",
    ] {
        assert!(html.contains(expected), "{expected:?} missing: {html}");
    }
    assert!(!html.contains("<svg"), "no chart without history: {html}");
    assert!(!html.contains("<table"), "no empty tables: {html}");
}

#[test]
fn errors_reading_state_are_shown() {
    let mut page = empty_page();
    page.images = Err("metadata store unavailable".into());
    page.pushes = Err("journal <unreadable>".into());
    let html = render(&page);
    assert!(html.contains("Cannot list images: metadata store unavailable"));
    assert!(html.contains("Cannot read the push journal: journal &lt;unreadable&gt;"));
}

#[test]
fn images_grouped_by_upstream_then_repository_with_platforms() {
    let mut page = empty_page();
    page.images = Ok(vec![
        image("ci/app", "v1", &["linux/amd64"], 0),
        image(
            "127.0.0.1:5000/team/app",
            "v2",
            &["linux/amd64", "linux/arm64/v8"],
            1,
        ),
        image("docker.io/library/alpine", "3", &["linux/amd64"], 6),
    ]);
    let html = render(&page);
    let at = |s: &str| {
        html.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing: {html}"))
    };
    assert!(at("<h3>From 127.0.0.1:5000</h3>") < at("<h3>From docker.io</h3>"));
    assert!(at("<h3>From docker.io</h3>") < at("<h3>Pushed here</h3>"));
    assert!(at("<h3>From 127.0.0.1:5000</h3>") < at(">team/app</h4>"));
    at("<span class=\"chip\">linux/arm64/v8</span>");
    at("+1 not kept");
    at("+6 not kept");
    at("3.0 MiB");
    at("90 s ago");
    at(">aaaaaaaaaaaa</code>");
    at("id=\"tile-images\"><b>3</b>");
}

#[test]
fn pushes_list_waiting_and_failed_not_delivered() {
    let mut page = empty_page();
    page.pushes = Ok(vec![
        push("pending", "ci/app", Some("connection refused")),
        push("failed", "ci/app/tools", Some("unauthorized")),
        push("delivered", "ci/app/done", None),
    ]);
    let html = render(&page);
    assert!(html.contains("class=\"state-pending\">pending<"), "{html}");
    assert!(html.contains("class=\"state-failed\">failed<"), "{html}");
    assert!(html.contains("<code>ci/app:v1</code>"), "{html}");
    assert!(html.contains("connection refused"), "{html}");
    assert!(html.contains("in 5 s"), "next try: {html}");
    assert!(!html.contains("ci/app/done:v1"), "{html}");
    assert!(html.contains("1 delivered push in the journal"), "{html}");
    assert!(html.contains("id=\"tile-pending\"><b>1</b>"), "{html}");
    assert!(html.contains("id=\"tile-failed\"><b>1</b>"), "{html}");
}

#[test]
fn a_long_push_error_is_clipped_with_the_whole_text_in_a_details() {
    let long = format!(
        "upstream http://127.0.0.1:1/v2/{}/blobs/uploads/ refused: {} <end>",
        "team/".repeat(30),
        "x".repeat(300)
    );
    let mut page = empty_page();
    page.pushes = Ok(vec![
        push("failed", "ci/app", Some(&long)),
        push("pending", "ci/app/tools", Some("connection refused")),
    ]);
    let html = render(&page);
    let pushes = &html[html.find("id=\"pushes\"").unwrap()..];
    assert!(
        pushes.contains("<table class=\"pushes\"><colgroup>"),
        "fixed columns: {pushes}"
    );
    let details = &pushes[pushes.find("<details>").expect("a details element")..];
    let summary = &details[..details.find("</summary>").unwrap()];
    assert!(
        summary.ends_with('…') && !summary.contains("&lt;end&gt;</"),
        "the summary is clipped: {summary}"
    );
    assert!(
        details.contains(&format!("<p>{}</p></details>", esc(&long))),
        "the whole error opens below: {details}"
    );
    assert!(
        pushes.contains("<td data-label=\"Last error\">connection refused</td>"),
        "a short error is shown as it is: {pushes}"
    );
}

#[test]
fn denials_newest_first() {
    let mut page = empty_page();
    for (i, plugin) in ["older", "newer"].iter().enumerate() {
        page.denials.push(DeniedRequest {
            at: NOW - 100 + i as u64,
            plugin: (*plugin).into(),
            request: "pull of ghcr.io/team/app".into(),
            reason: "not on the allow list".into(),
            repository: "ghcr.io/team/app".into(),
        });
    }
    let html = render(&page);
    assert!(html.find(">newer<").unwrap() < html.find(">older<").unwrap());
    assert!(html.contains("<code>pull of ghcr.io/team/app</code>"));
}

#[test]
fn upstream_is_the_host_part_of_a_cache_repository() {
    assert_eq!(upstream_of("ghcr.io/team/app"), Some("ghcr.io"));
    assert_eq!(upstream_of("127.0.0.1:5000/app"), Some("127.0.0.1:5000"));
    assert_eq!(upstream_of("localhost/app"), Some("localhost"));
    assert_eq!(upstream_of("ci/app"), None);
    assert_eq!(upstream_of("app"), None);
}

#[test]
fn hit_ratio_per_interval_with_gaps() {
    let samples = [
        sample(100, 0, 0, 0),
        sample(110, 3, 1, 0),  // 3 of 4
        sample(120, 3, 1, 0),  // no request: a gap
        sample(130, 3, 11, 0), // 0 of 10
    ];
    assert_eq!(
        chart::hit_ratio(&samples),
        vec![(110, Some(75.0)), (120, None), (130, Some(0.0))]
    );
    assert!(chart::hit_ratio(&samples[..1]).is_empty());
}

#[test]
fn bytes_saved_counts_from_the_oldest_sample() {
    let samples = [sample(100, 0, 0, 500), sample(110, 0, 0, 1500)];
    assert_eq!(
        chart::bytes_saved(&samples),
        vec![(100, Some(0.0)), (110, Some(1000.0))]
    );
    assert!(chart::bytes_saved(&[]).is_empty());
}

/// The `x,y` pairs of every `points="…"` attribute of `element`.
fn coords(svg: &str, element: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split(&format!("<{element} "))
        .skip(1)
        .map(|rest| {
            let p = rest
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            p.split_whitespace()
                .map(|xy| {
                    let (x, y) = xy.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

#[test]
fn chart_svg_draws_lines_inside_its_box() {
    let points = vec![
        (100, Some(0.0)),
        (110, Some(50.0)),
        (120, Some(100.0)),
        (130, None),
        (140, Some(25.0)),
    ];
    let svg = chart::svg("Hit <ratio>", &points, 100.0, |v| format!("{v:.0} %"));
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"), "{svg}");
    assert!(svg.contains("viewBox=\"0 0 600 200\""), "{svg}");
    assert!(svg.contains("<title>Hit &lt;ratio&gt;</title>"), "{svg}");
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    let lines = coords(&svg, "polyline");
    assert_eq!(lines.len(), 1, "one line before the gap: {svg}");
    assert_eq!(lines[0].len(), 3);
    for (x, y) in &lines[0] {
        assert!(
            (0.0..=600.0).contains(x) && (0.0..=200.0).contains(y),
            "{svg}"
        );
    }
    // Time runs left to right, values upwards (SVG's y grows downwards).
    assert!(lines[0][0].0 < lines[0][1].0 && lines[0][1].0 < lines[0][2].0);
    assert!(lines[0][0].1 > lines[0][1].1 && lines[0][1].1 > lines[0][2].1);
    assert_eq!(
        svg.matches("<circle").count(),
        1,
        "the lone value after the gap: {svg}"
    );
    for label in [">0 %<", ">50 %<", ">100 %<", ">40 s ago<", ">now<"] {
        assert!(svg.contains(label), "{label} missing: {svg}");
    }
}

#[test]
fn chart_svg_of_flat_or_odd_values_is_finite() {
    for points in [
        vec![(5, Some(0.0)), (5, Some(0.0))],
        vec![
            (1, Some(f64::NAN)),
            (2, Some(f64::INFINITY)),
            (3, Some(-4.0)),
        ],
        vec![],
    ] {
        let svg = chart::svg("t", &points, 0.0, |v| {
            wharf_model::units::human_bytes(v as u64)
        });
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.ends_with("</svg>"));
    }
}

#[test]
fn history_charts_appear_with_two_samples() {
    let mut page = empty_page();
    page.samples = vec![sample(NOW - 10, 0, 0, 0), sample(NOW, 4, 1, 2048)];
    let html = render(&page);
    assert!(html.contains("id=\"chart-hit-ratio\""), "{html}");
    assert!(html.contains("id=\"chart-bytes-saved\""), "{html}");
    assert_eq!(html.matches("<svg ").count(), 2);
    assert!(html.contains("id=\"tile-hit-ratio\"><b>80 %</b>"), "{html}");
    assert!(html.contains("id=\"tile-saved\"><b>2.0 KiB</b>"), "{html}");
}

#[test]
fn chart_svg_puts_a_lone_value_at_now() {
    let svg = chart::svg("t", &[(100, Some(50.0))], 100.0, |v| format!("{v:.0}"));
    assert!(svg.contains("<circle class=\"dot\" cx=\"590.0\""), "{svg}");
}

fn totals(hits: u64, misses: u64, from_cache: u64) -> CacheTotals {
    CacheTotals {
        hits,
        misses,
        bytes_from_cache: from_cache,
        bytes_from_upstream: 7,
    }
}

/// A restart: the second run's counters start at zero, its samples count on from the first run's
/// last one (same `since`), so the ratio and the bytes saved do not fall back.
#[tokio::test]
async fn the_sampler_counts_on_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let meta = wharf_storage::meta::Meta::open(&path).unwrap();
    let mut first = crate::history::Sampler::start(meta.clone(), Retention::DEFAULT, NOW)
        .await
        .unwrap();
    first.record(totals(0, 0, 0), NOW, false).await.unwrap();
    first
        .record(totals(3, 1, 300), NOW + 10, true)
        .await
        .unwrap();
    drop((first, meta));

    let meta = wharf_storage::meta::Meta::open(&path).unwrap();
    let mut second = crate::history::Sampler::start(meta.clone(), Retention::DEFAULT, NOW)
        .await
        .unwrap();
    let s = second
        .record(totals(1, 1, 100), NOW + 100, false)
        .await
        .unwrap()
        .expect("written");
    assert_eq!(s.since, NOW);
    assert_eq!(
        s.totals,
        CacheTotals {
            hits: 4,
            misses: 2,
            bytes_from_cache: 400,
            bytes_from_upstream: 14,
        }
    );
    let history = meta.samples().await.unwrap();
    assert_eq!(
        history.iter().map(|s| s.at).collect::<Vec<_>>(),
        vec![NOW, NOW + 10, NOW + 100]
    );
    // The interval across the restart is an ordinary one: one hit, one miss.
    let ratio = chart::hit_ratio(&history);
    assert_eq!(ratio.last(), Some(&(NOW + 100, Some(50.0))));
}

#[test]
fn with_nothing_recorded_the_totals_start_now() {
    let s = crate::history::continued(None, totals(1, 0, 5), NOW);
    assert_eq!((s.at, s.since, s.totals.hits), (NOW, NOW, 1));
}

#[test]
fn the_history_says_since_when_it_counts() {
    let mut page = empty_page();
    page.samples = vec![sample(NOW - 20, 0, 0, 0), sample(NOW, 2, 2, 10)];
    let html = render(&page);
    assert!(html.contains("id=\"counted-since\""), "{html}");
    assert!(
        html.contains("1 days ago") || html.contains("24 h ago"),
        "{html}"
    );
    assert!(html.contains("50 %"), "{html}");
}

/// Idle: nothing written; the next change writes the last idle sample first (a flat line until the
/// change, not a slope across the idle time); a stop writes even with nothing new.
#[tokio::test]
async fn an_idle_sampler_writes_nothing_until_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let meta = wharf_storage::meta::Meta::open(&dir.path().join("meta.redb")).unwrap();
    let mut s = crate::history::Sampler::start(meta.clone(), Retention::DEFAULT, NOW)
        .await
        .unwrap();
    let times = || async {
        meta.samples()
            .await
            .unwrap()
            .iter()
            .map(|s| s.at)
            .collect::<Vec<_>>()
    };
    assert!(s
        .record(totals(1, 0, 5), NOW, false)
        .await
        .unwrap()
        .is_some());
    for t in 1..=5 {
        assert_eq!(
            s.record(totals(1, 0, 5), NOW + t * 10, false)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(times().await, vec![NOW]);
    s.record(totals(2, 0, 9), NOW + 60, false).await.unwrap();
    assert_eq!(times().await, vec![NOW, NOW + 50, NOW + 60]);
    s.record(totals(2, 0, 9), NOW + 70, true).await.unwrap();
    assert_eq!(times().await, vec![NOW, NOW + 50, NOW + 60, NOW + 70]);
}

fn serving(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<crate::registry::Registry>,
    crate::admin::Admin,
) {
    serving_with(dir, None)
}

/// A registry and the admin state over it, in `dir`, wired as the server wires them (no upstream is
/// ever asked: the mirrored content below is recorded as the mirror records it), with `auth`.
fn serving_with(
    dir: &std::path::Path,
    auth: Option<std::sync::Arc<wharf_policy::auth::Auth>>,
) -> (
    std::sync::Arc<crate::registry::Registry>,
    crate::admin::Admin,
) {
    use std::sync::Arc;
    let mut cfg = wharf_model::config::Config::default();
    cfg.storage.data_dir = dir.to_owned();
    cfg.mirror.default_upstream = String::new();
    let meta = wharf_storage::meta::Meta::open(&dir.join("meta.redb")).unwrap();
    let leases = wharf_storage::lease::Leases::new(meta.clone());
    let store = wharf_storage::lease::Touching::wrap(
        Arc::new(wharf_storage::store::FsStore::open(dir).unwrap()),
        leases.clone(),
    );
    let policy = wharf_policy::policy::Policy::new(
        wharf_policy::plugin::Plugins::none(),
        store.clone(),
        meta.clone(),
        4 << 20,
    );
    let mirror =
        crate::mirror::Mirror::new(&cfg, store.clone(), meta.clone(), policy.clone()).unwrap();
    let registry = Arc::new(
        crate::registry::Registry::new(store.clone(), meta.clone(), cfg.registry.clone(), mirror)
            .with_auth(auth),
    );
    let push = crate::push::Push::new(&cfg, store.clone(), meta.clone(), policy).unwrap();
    let admin = crate::admin::Admin {
        backends: crate::backends::Backends::of(&cfg),
        scrub: Arc::new(wharf_storage::scrub::Scrubber::new(
            meta.clone(),
            store.clone(),
            leases.clone(),
            crate::app::scrub_settings(&cfg),
        )),
        collector: Arc::new(wharf_storage::gc::Collector::new(
            meta,
            store,
            leases.clone(),
            crate::app::gc_settings(&cfg),
        )),
        leases,
        push: Arc::new(push),
        history: Arc::new(crate::history::History::new(
            registry.policy().denials().clone(),
        )),
        registry: Some(registry.clone()),
    };
    (registry, admin)
}

async fn call(
    r: &crate::registry::Registry,
    method: http::Method,
    uri: &str,
    content_type: &str,
    body: &[u8],
) -> http::StatusCode {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap();
    let resp = r.handle(req).await;
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

/// Proves (issue 23): a tag pushed now that names the same image as a mirrored tag last pulled three
/// days ago reads as used now on the status page, in `wharf images` and in `wharf status`, and all
/// three give it the same time; the mirrored tag keeps its own, old, last use. (The status page said
/// "8 min ago" for such a push: last use was kept per digest, and only for the mirror's pulls.) The
/// mirror's old pull is written as the mirror notes it, with the time it had then.
#[tokio::test]
async fn a_tag_pushed_now_is_used_now_in_every_view_though_its_image_was_mirrored_long_ago() {
    use http::{Method, StatusCode};
    use wharf_model::digest::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (registry, admin) = serving(dir.path());
    let (meta, store) = (admin.collector.meta.clone(), admin.collector.store.clone());
    let (config, layer) = (
        b"{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        b"layer bytes",
    );
    let (cd, ld) = (Digest::sha256_of(config), Digest::sha256_of(layer));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{}}}]}}"#,
        wharf_model::manifest::OCI_MANIFEST,
        config.len(),
        layer.len()
    );
    let md = Digest::sha256_of(manifest.as_bytes());

    // Mirrored three days ago, and pulled then, by tag and by digest.
    let long_ago = wharf_model::clock::unix_now() - 3 * 86_400;
    let cache = "docker.io/library/app";
    for (d, bytes) in [(&cd, &config[..]), (&ld, &layer[..])] {
        store
            .put(d, bytes::Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        meta.link_blob(cache, d, bytes.len() as u64).await.unwrap();
    }
    store
        .put(&md, bytes::Bytes::from(manifest.clone()))
        .await
        .unwrap();
    let record = wharf_storage::meta::ManifestRecord {
        media_type: wharf_model::manifest::OCI_MANIFEST.into(),
        size: manifest.len() as u64,
        subject: None,
    };
    meta.mirror_tag(cache, "1", &md, Some(record), long_ago)
        .await
        .unwrap();
    meta.note_use(cache, "1", long_ago);
    meta.note_use(cache, &md.to_string(), long_ago);
    meta.flush_uses().await.unwrap();

    // Pushed now, through the registry API.
    let before = wharf_model::clock::unix_now();
    for (d, bytes) in [(&cd, &config[..]), (&ld, &layer[..])] {
        let uri = format!("/v2/ci/app/blobs/uploads/?digest={d}");
        let s = call(
            &registry,
            Method::POST,
            &uri,
            "application/octet-stream",
            bytes,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let s = call(
        &registry,
        Method::PUT,
        "/v2/ci/app/manifests/v1",
        wharf_model::manifest::OCI_MANIFEST,
        manifest.as_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let after = wharf_model::clock::unix_now();

    let images = wharf_storage::images::list(&admin.collector, false)
        .await
        .unwrap();
    let row = |repo: &str| {
        images
            .iter()
            .find(|i| i.repository == repo)
            .unwrap_or_else(|| panic!("no {repo} in {images:?}"))
            .last_used
    };
    let pushed = row("ci/app").expect("the pushed tag has a last use");
    assert!(
        (before..=after).contains(&pushed),
        "wharf images: ci/app:v1 pushed between {before} and {after} was last used at {pushed}"
    );
    assert_eq!(row(cache), Some(long_ago), "the mirrored tag keeps its own");

    let status = crate::status::collect(&admin, true).await.unwrap();
    let repo = |name: &str| {
        status
            .repositories
            .iter()
            .find(|r| r.repository == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", status.repositories))
            .last_used
    };
    assert_eq!(
        repo("ci/app"),
        Some(pushed),
        "wharf status agrees with images"
    );
    assert_eq!(repo(cache), Some(long_ago));
    let text = crate::status::text(&status);
    let line = text.lines().find(|l| l.starts_with("ci/app ")).unwrap();
    assert!(line.ends_with(" s ago"), "wharf status: {line}");

    let html = render(&super::gather(&admin, &super::Viewer::Anyone).await);
    let table = &html[html
        .find("<h4 title=\"ci/app\">")
        .expect("ci/app on the page")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains(&format!(
            "<td data-label=\"Last use\"><time datetime=\"{pushed}\""
        )),
        "the page shows the same time: {table}"
    );
    assert!(table.contains(" s ago</time>"), "used seconds ago: {table}");

    // A local pull by digest is noted as a use of the tags naming it (containerd fetches so).
    let uri = format!("/v2/ci/app/manifests/{md}");
    assert_eq!(
        call(&registry, Method::GET, &uri, "", b"").await,
        StatusCode::OK
    );
    let used = meta.snapshot().await.unwrap().last_use;
    assert!(used.of_tag("ci/app", None, &md).is_some(), "{used:?}");
}

/// `[auth]` with alice and bob (passwords `alice-pw`, `bob-pw`), anonymous pulls off, `private`
/// pulled by alice only, `pub` by anyone.
fn closed_auth() -> std::sync::Arc<wharf_policy::auth::Auth> {
    use wharf_model::config::{AuthConfig, AuthRule};
    let dir = tempfile::tempdir().unwrap().keep();
    let htpasswd = dir.join("htpasswd");
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    std::fs::write(
        &htpasswd,
        format!("alice:{}\nbob:{}\n", hash("alice-pw"), hash("bob-pw")),
    )
    .unwrap();
    let rule = |prefix: &str, pull: &[&str]| AuthRule {
        prefix: prefix.into(),
        pull: pull.iter().map(|s| (*s).into()).collect(),
        push: vec!["alice".into()],
    };
    let cfg = AuthConfig {
        htpasswd_file: Some(htpasswd),
        anonymous_pull: false,
        rules: vec![
            rule("private", &["alice"]),
            rule("pub", &["anonymous", "*"]),
        ],
        ..AuthConfig::default()
    };
    std::sync::Arc::new(wharf_policy::auth::Auth::load(&cfg).unwrap().unwrap())
}

/// A page naming `private/app` (an image with its own digest, a failed push, a plugin's denial, and
/// a denial recorded before denials kept their repository), `pub/tool` and a mirrored image.
fn page_with_a_private_repository() -> Page {
    let mut page = empty_page();
    let mut private = image("private/app", "v1", &["linux/amd64"], 0);
    private.digest = digest('c').parse().unwrap();
    page.images = Ok(vec![
        private,
        image("pub/tool", "1.0", &["linux/amd64"], 0),
        image("docker.io/library/alpine", "3", &["linux/amd64"], 0),
    ]);
    page.pushes = Ok(vec![
        push(
            "failed",
            "private/app",
            Some("upstream refused private/app"),
        ),
        push("pending", "pub/tool", None),
    ]);
    let denial = |repository: &str, request: &str| DeniedRequest {
        at: NOW - 5,
        plugin: "gate".into(),
        request: request.into(),
        reason: "no".into(),
        repository: repository.into(),
    };
    page.denials = vec![
        denial("private/app", "pull of private/app"),
        denial("", "pull of private/old"),
        denial("pub/tool", "push of pub/tool"),
    ];
    page
}

fn rendered_for(viewer: &super::Viewer) -> String {
    let mut page = page_with_a_private_repository();
    viewer.filter(&mut page);
    render(&page)
}

/// Proves (issue 24): with `[auth]`, the page shows a repository (its tags, digests, pushes and
/// denials) only to a caller the rules let pull it: an anonymous caller sees no private name, tag or
/// digest, and is offered to log in; bob sees what any user may pull but not `private/`; alice sees
/// it all, a denial recorded before denials kept their repository included (its name is read from the
/// request). Without `[auth]` everyone sees everything.
#[test]
fn a_caller_sees_only_the_repositories_the_rules_let_them_pull() {
    use super::Viewer;
    let auth = closed_auth();
    let caller = |identity: Option<&str>| Viewer::Caller {
        auth: auth.clone(),
        identity: identity.map(str::to_owned),
    };
    let private_digest = &digest('c')["sha256:".len()..][..12];

    let anonymous = rendered_for(&caller(None));
    assert!(!anonymous.contains("private"), "{anonymous}");
    assert!(!anonymous.contains(private_digest), "{anonymous}");
    assert!(!anonymous.contains("library/alpine"), "{anonymous}");
    assert!(anonymous.contains("pub/tool"), "{anonymous}");
    assert!(
        anonymous.contains("<a href=\"/ui?login\">Log in</a>"),
        "{anonymous}"
    );
    assert!(
        anonymous.contains("<div class=\"tile\" id=\"tile-images\"><b>1</b>"),
        "the count is of what is shown: {anonymous}"
    );

    let bob = rendered_for(&caller(Some("bob")));
    assert!(!bob.contains("private"), "{bob}");
    assert!(!bob.contains(private_digest), "{bob}");
    assert!(
        bob.contains("library/alpine") && bob.contains("pub/tool"),
        "{bob}"
    );
    assert!(bob.contains("Signed in as <b>bob</b>"), "{bob}");

    let alice = rendered_for(&caller(Some("alice")));
    for shown in [
        "<h4 title=\"private/app\">",
        private_digest,
        "upstream refused private/app",
        "<code>pull of private/app</code>",
        "<code>pull of private/old</code>",
    ] {
        assert!(alice.contains(shown), "{shown} not shown to alice: {alice}");
    }

    let everyone = rendered_for(&Viewer::Anyone);
    assert!(everyone.contains("private/old") && !everyone.contains("id=\"audience\""));
}

/// Proves (issue 24): `/ui` takes the registry's credentials as a browser sends them: `/ui?login`
/// answers an anonymous caller `401` with a `Basic` challenge (the browser's prompt), and a logged-in
/// one `303` back to `/ui`, which shows whom it is for; a wrong password is asked again, never shown
/// the anonymous page. With no `[auth]` there is nothing to log in to.
#[tokio::test]
async fn the_page_logs_a_browser_in_with_the_registry_credentials() {
    use base64::Engine as _;
    use http::StatusCode;
    use http_body_util::BodyExt;
    let dir = tempfile::tempdir().unwrap();
    let (_registry, admin) = serving_with(dir.path(), Some(closed_auth()));
    let ip = Some("192.0.2.7".parse().unwrap());
    let get = |uri: &str, user: Option<(&str, &str)>| {
        let mut b = http::Request::builder().uri(uri);
        if let Some((u, p)) = user {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            b = b.header("authorization", format!("Basic {v}"));
        }
        b.body(()).unwrap()
    };
    let text = |r: http::Response<http_body_util::Full<bytes::Bytes>>| async move {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };

    let r = super::serve(&admin, &get("/ui?login", None), ip).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"wharf\", charset=\"UTF-8\""
    );
    assert!(text(r).await.contains("htpasswd"));

    let r = super::serve(&admin, &get("/ui?login", Some(("alice", "alice-pw"))), ip).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui");

    let r = super::serve(&admin, &get("/ui", Some(("alice", "alice-pw"))), ip).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(text(r).await.contains("Signed in as <b>alice</b>"));

    let r = super::serve(&admin, &get("/ui", Some(("alice", "wrong"))), ip).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    assert!(!text(r).await.contains("wharf status</h1>"));

    let r = super::serve(&admin, &get("/ui", None), ip).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(text(r)
        .await
        .contains("Showing the repositories anonymous callers may pull"));

    let open = tempfile::tempdir().unwrap();
    let (_registry, admin) = serving_with(open.path(), None);
    let r = super::serve(&admin, &get("/ui?login", None), ip).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = super::serve(&admin, &get("/ui", None), ip).await;
    assert!(!text(r).await.contains("id=\"audience\""));
}
