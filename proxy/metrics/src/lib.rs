//! What wharf is doing, for Prometheus: one process-wide set of counters (`prometheus-client`), fed by
//! one-line calls from the modules that see each event, and a small listener of its own
//! (`[metrics] listen`, metrics/listener.rs) that serves them as `GET /metrics` in the Prometheus
//! text format, and the status page.
//!
//! Counting is always on (atomics; labels are `&'static str`, numbers, or per-name handles looked up
//! without allocating), so `wharf status` can report the hit ratio whether or not anyone scrapes.
//! Values that live elsewhere (live leases, the push journal) are read when a scrape arrives.
//!
//! What counts as what:
//! - a *hit* is a mirror request answered from the cache without asking the upstream (a blob linked
//!   to the cache repository, a manifest by digest recorded there, a tag within `tag_ttl_secs`); a
//!   *miss* asked the upstream (a blob fill, a manifest fetch, a tag revalidation);
//! - *served from cache* counts the bytes of hits' `GET` responses (what a miss would have fetched);
//!   *fetched from upstream* the bytes the mirror took from each upstream (blob fills, manifests);
//! - a *join* is a request that found the content it missed already on its way (a running blob fill,
//!   or a manifest/referrers/rewrite computation in flight), so no second upstream request was made.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use dashmap::DashMap;
use http::{Method, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// What a cache lookup was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Blob,
    Manifest,
}

impl Lookup {
    fn as_str(self) -> &'static str {
        match self {
            Lookup::Blob => "blob",
            Lookup::Manifest => "manifest",
        }
    }
}

/// Which single-flight a request joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flight {
    /// A running blob fill (`fill.rs`).
    Fill,
    /// A manifest, referrers or rewrite computation in flight (`inflight.rs`).
    Fetch,
}

/// A plugin capability, as the chain calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginCall {
    Access,
    Platforms,
    Manifests,
}

impl PluginCall {
    const ALL: [PluginCall; 3] = [
        PluginCall::Access,
        PluginCall::Platforms,
        PluginCall::Manifests,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PluginCall::Access => "access",
            PluginCall::Platforms => "platforms",
            PluginCall::Manifests => "manifests",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOutcome {
    upstream: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    plugin: String,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 0.25 ms … 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn upstream_histogram() -> Histogram {
    // 5 ms … 20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

fn plugin_histogram() -> Histogram {
    // 5 µs … 1.3 s: a warm call is microseconds, an instantiation of a Python component a millisecond.
    Histogram::new(exponential_buckets(0.000_005, 4.0, 10))
}

/// One plugin's handles, made once per name: the chain's calls then count without allocating a label.
struct PluginHandles {
    calls: [Counter; 3],
    seconds: [Histogram; 3],
    denials: Counter,
    errors: Counter,
}

/// One upstream's latency histogram, made once per host.
struct UpstreamHandles {
    seconds: Histogram,
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabel>,
    response_bytes: Family<RouteLabel, Counter>,
    cache: Family<CacheLabels, Counter>,
    served_from_cache: Counter,
    fetched: Family<UpstreamLabel, Counter>,
    joins: Family<KindLabel, Counter>,
    upstream_requests: Family<UpstreamOutcome, Counter>,
    upstream_seconds: Histograms<UpstreamLabel>,
    upstream_errors: Family<UpstreamOutcome, Counter>,
    upstreams: DashMap<String, UpstreamHandles>,
    gc_runs: Counter,
    gc_removed: Counter,
    gc_reclaimed: Counter,
    gc_last: Gauge,
    scrub_runs: Counter,
    scrub_verified_bytes: Counter,
    scrub_damaged: Counter,
    scrub_last: Gauge,
    scrub_found: Family<KindLabel, Gauge>,
    leases: Gauge,
    pushes: Family<StateLabel, Gauge>,
    hit_ratio: Family<KindLabel, Gauge<f64, AtomicU64>>,
    plugin_calls: Family<PluginCallLabels, Counter>,
    plugin_seconds: Histograms<PluginCallLabels>,
    plugin_denials: Family<PluginLabel, Counter>,
    plugin_errors: Family<PluginLabel, Counter>,
    plugins: DashMap<String, PluginHandles>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wharf");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            response_bytes: Family::default(),
            cache: Family::default(),
            served_from_cache: Counter::default(),
            fetched: Family::default(),
            joins: Family::default(),
            upstream_requests: Family::default(),
            upstream_seconds: Family::new_with_constructor(upstream_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            upstreams: DashMap::new(),
            gc_runs: Counter::default(),
            gc_removed: Counter::default(),
            gc_reclaimed: Counter::default(),
            gc_last: Gauge::default(),
            scrub_runs: Counter::default(),
            scrub_verified_bytes: Counter::default(),
            scrub_damaged: Counter::default(),
            scrub_last: Gauge::default(),
            scrub_found: Family::default(),
            leases: Gauge::default(),
            pushes: Family::default(),
            hit_ratio: Family::default(),
            plugin_calls: Family::default(),
            plugin_seconds: Family::new_with_constructor(plugin_histogram as fn() -> Histogram),
            plugin_denials: Family::default(),
            plugin_errors: Family::default(),
            plugins: DashMap::new(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests to the registry API, by route kind, method and status (499: the client left)",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response body, by route kind",
            m.request_seconds.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes sent to clients, by route kind",
            m.response_bytes.clone(),
        );
        r.register(
            "cache_lookups",
            "Mirror requests by kind and result: hit (answered from the cache) or miss (the upstream was asked)",
            m.cache.clone(),
        );
        r.register(
            "cache_hit_ratio",
            "hits / (hits + misses) since start, by kind (computed at scrape time)",
            m.hit_ratio.clone(),
        );
        r.register(
            "cache_served_bytes",
            "Bytes of mirror GET responses answered from the cache (what the upstreams were spared)",
            m.served_from_cache.clone(),
        );
        r.register(
            "upstream_fetched_bytes",
            "Bytes the mirror fetched from each upstream (blob fills and manifests)",
            m.fetched.clone(),
        );
        r.register(
            "single_flight_joins",
            "Requests that joined content already being fetched instead of asking the upstream again \
             (fill: a blob fill; fetch: a manifest, referrers or rewrite in flight)",
            m.joins.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests to upstreams, by upstream and outcome (status class, timeout, unreachable)",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time until an upstream's response headers, by upstream",
            m.upstream_seconds.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream requests that failed, by upstream and kind (timeout, unreachable, 5xx)",
            m.upstream_errors.clone(),
        );
        r.register(
            "gc_runs",
            "Garbage collections run (not dry runs)",
            m.gc_runs.clone(),
        );
        r.register(
            "gc_removed_blobs",
            "Content (blobs and manifests) garbage collection removed",
            m.gc_removed.clone(),
        );
        r.register(
            "gc_reclaimed_bytes",
            "Bytes garbage collection removed",
            m.gc_reclaimed.clone(),
        );
        r.register(
            "gc_last_run_timestamp_seconds",
            "Unix time the last garbage collection started (0: none since start)",
            m.gc_last.clone(),
        );
        r.register(
            "scrub_runs",
            "Scrub passes finished (wharf fsck, [scrub] interval_secs)",
            m.scrub_runs.clone(),
        );
        r.register(
            "scrub_verified_bytes",
            "Bytes of stored content the scrub re-hashed",
            m.scrub_verified_bytes.clone(),
        );
        r.register(
            "scrub_damaged",
            "Stored content the scrub found damaged (its bytes no longer hash to its digest) and quarantined",
            m.scrub_damaged.clone(),
        );
        r.register(
            "scrub_last_run_timestamp_seconds",
            "Unix time the last finished scrub pass started (0: none recorded)",
            m.scrub_last.clone(),
        );
        r.register(
            "scrub_last_found",
            "What the last finished scrub pass found, by kind: damaged (content quarantined), \
             missing_content (blob links or manifest records without their content), missing_child \
             (manifests pushed here referring to content not stored), dangling_tag (tags naming a \
             manifest their repository does not record)",
            m.scrub_found.clone(),
        );
        r.register(
            "leases",
            "Live leases (uploads, fills, reductions, pushes) keeping content from the collector",
            m.leases.clone(),
        );
        r.register(
            "pushes",
            "Routed push deliveries in the journal, by state",
            m.pushes.clone(),
        );
        r.register(
            "plugin_calls",
            "Plugin calls, by plugin and capability",
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_call_duration_seconds",
            "Time in each plugin call, by plugin and capability",
            m.plugin_seconds.clone(),
        );
        r.register(
            "plugin_denials",
            "Requests an access plugin denied, by plugin",
            m.plugin_denials.clone(),
        );
        r.register(
            "plugin_errors",
            "Plugin calls that failed (trap, timeout, error result), by plugin",
            m.plugin_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    fn plugin(&self, name: &str) -> dashmap::mapref::one::Ref<'_, String, PluginHandles> {
        if let Some(h) = self.plugins.get(name) {
            return h;
        }
        let plugin = name.to_owned();
        let call = |c: PluginCall| PluginCallLabels {
            plugin: plugin.clone(),
            call: c.as_str(),
        };
        let handles = PluginHandles {
            calls: PluginCall::ALL.map(|c| self.plugin_calls.get_or_create_owned(&call(c))),
            seconds: PluginCall::ALL.map(|c| self.plugin_seconds.get_or_create_owned(&call(c))),
            denials: self.plugin_denials.get_or_create_owned(&PluginLabel {
                plugin: plugin.clone(),
            }),
            errors: self.plugin_errors.get_or_create_owned(&PluginLabel {
                plugin: plugin.clone(),
            }),
        };
        self.plugins.entry(plugin).or_insert(handles).downgrade()
    }

    fn upstream(&self, host: &str) -> dashmap::mapref::one::Ref<'_, String, UpstreamHandles> {
        if let Some(h) = self.upstreams.get(host) {
            return h;
        }
        let seconds = self.upstream_seconds.get_or_create_owned(&UpstreamLabel {
            upstream: host.to_owned(),
        });
        self.upstreams
            .entry(host.to_owned())
            .or_insert(UpstreamHandles { seconds })
            .downgrade()
    }

    fn lookups(&self, kind: Lookup, result: &'static str) -> u64 {
        self.cache
            .get(&CacheLabels {
                kind: kind.as_str(),
                result,
            })
            .map_or(0, |c| c.get())
    }
}

fn m() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The kind of registry route a request path names (`/v2/<name>/blobs/…` → `blobs`), from the end of
/// the path as the router reads it: a repository may be called `blobs/manifests`.
pub fn route_kind(path: &str) -> &'static str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path == "/v2" || path == "/v2/" {
        return "base";
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return match path {
            "/token" => "token",
            _ => "other",
        };
    };
    if rest == "_catalog" {
        return "catalog";
    }
    let marks = [
        ("/blobs/", "blobs"),
        ("/manifests/", "manifests"),
        ("/tags/list", "tags"),
        ("/referrers/", "referrers"),
    ];
    let Some((at, mark, kind)) = marks
        .iter()
        .filter_map(|(m, k)| rest.rfind(m).map(|i| (i, *m, *k)))
        .max_by_key(|(i, _, _)| *i)
    else {
        return "other";
    };
    if kind == "blobs" && rest[at + mark.len()..].starts_with("uploads") {
        return "uploads";
    }
    kind
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A request answered (or abandoned): where the server logs it.
pub fn request(method: &Method, path: &str, status: u16, bytes: u64, micros: u64) {
    let m = m();
    let route = route_kind(path);
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method: method_name(method),
            status,
        })
        .inc();
    let r = RouteLabel { route };
    m.request_seconds
        .get_or_create(&r)
        .observe(micros as f64 / 1e6);
    if bytes > 0 {
        m.response_bytes.get_or_create(&r).inc_by(bytes);
    }
}

/// A mirror request the cache answered. For a `GET`, `bytes` were served from the cache.
pub fn cache_hit(kind: Lookup, method: &Method, bytes: u64) {
    let m = m();
    m.cache
        .get_or_create(&CacheLabels {
            kind: kind.as_str(),
            result: "hit",
        })
        .inc();
    if method == Method::GET {
        m.served_from_cache.inc_by(bytes);
    }
}

/// A blob response the cache answered: counted as a hit with the body's length (a range's, for a
/// 206), passed through.
pub fn blob_hit<B>(method: &Method, resp: Response<B>) -> Response<B> {
    if resp.status().is_success() {
        let len = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        cache_hit(Lookup::Blob, method, len);
    }
    resp
}

/// A mirror request that had to ask the upstream.
pub fn cache_miss(kind: Lookup) {
    m().cache
        .get_or_create(&CacheLabels {
            kind: kind.as_str(),
            result: "miss",
        })
        .inc();
}

/// `bytes` the mirror took from `upstream`.
pub fn fetched(upstream: &str, bytes: u64) {
    m().fetched
        .get_or_create_owned(&UpstreamLabel {
            upstream: upstream.to_owned(),
        })
        .inc_by(bytes);
}

/// A request that joined work already in flight.
pub fn joined(flight: Flight) {
    let kind = match flight {
        Flight::Fill => "fill",
        Flight::Fetch => "fetch",
    };
    m().joins.get_or_create(&KindLabel { kind }).inc();
}

/// Times an upstream request (until its response headers) and counts how it ended. `fut` is the
/// request under its timeout, as `upstream.rs` sends it.
pub async fn upstream_timed<B, E, T>(
    upstream: &str,
    fut: impl Future<Output = Result<Result<Response<B>, E>, T>>,
) -> Result<Result<Response<B>, E>, T> {
    let started = Instant::now();
    let r = fut.await;
    let m = m();
    m.upstream(upstream)
        .seconds
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &r {
        Err(_) => "timeout",
        Ok(Err(_)) => "unreachable",
        Ok(Ok(resp)) => match resp.status().as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
    };
    let labels = UpstreamOutcome {
        upstream: upstream.to_owned(),
        outcome,
    };
    m.upstream_requests.get_or_create(&labels).inc();
    if matches!(outcome, "timeout" | "unreachable" | "5xx") {
        m.upstream_errors.get_or_create(&labels).inc();
    }
    r
}

/// A garbage collection that ran (not a dry run): what it removed, and when it started (unix seconds).
pub fn gc_done(removed: usize, removed_bytes: u64, started: u64) {
    let m = m();
    m.gc_runs.inc();
    m.gc_removed.inc_by(removed as u64);
    m.gc_reclaimed.inc_by(removed_bytes);
    m.gc_last.set(started as i64);
}

/// A scrub pass finished, having read this many bytes.
pub fn scrub_done(verified_bytes: u64) {
    let m = m();
    m.scrub_runs.inc();
    m.scrub_verified_bytes.inc_by(verified_bytes);
}

/// The scrub found damaged content.
pub fn scrub_damaged() {
    m().scrub_damaged.inc();
}

/// Times one plugin call and counts it.
pub async fn plugin_call<T>(plugin: &str, call: PluginCall, fut: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let r = fut.await;
    let h = m().plugin(plugin);
    let i = call as usize;
    h.calls[i].inc();
    h.seconds[i].observe(started.elapsed().as_secs_f64());
    r
}

/// An access plugin said no.
pub fn plugin_denied(plugin: &str) {
    m().plugin(plugin).denials.inc();
}

/// A plugin call failed (trap, timeout, error result).
pub fn plugin_error(plugin: &str) {
    m().plugin(plugin).errors.inc();
}

/// The cache's counters since this process started, for `wharf status` and the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheCounts {
    pub blob_hits: u64,
    pub blob_misses: u64,
    pub manifest_hits: u64,
    pub manifest_misses: u64,
    /// Bytes of mirror `GET`s answered from the cache.
    pub bytes_from_cache: u64,
    /// Bytes fetched from upstreams.
    pub bytes_from_upstream: u64,
    pub single_flight_joins: u64,
}

impl CacheCounts {
    /// hits / (hits + misses) over blobs and manifests; `None` before any mirror request.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(
            self.blob_hits + self.manifest_hits,
            self.blob_misses + self.manifest_misses,
        )
    }
}

fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let all = hits + misses;
    (all > 0).then(|| hits as f64 / all as f64)
}

/// The cache's counters as they are now.
pub fn cache_counts() -> CacheCounts {
    let m = m();
    let mut fetched = 0;
    let mut joins = 0;
    // Family has no iteration of its own; the registry's few upstreams and two flights are read by
    // their known labels.
    for e in m.upstreams.iter() {
        fetched += m
            .fetched
            .get(&UpstreamLabel {
                upstream: e.key().clone(),
            })
            .map_or(0, |c| c.get());
    }
    for kind in ["fill", "fetch"] {
        joins += m.joins.get(&KindLabel { kind }).map_or(0, |c| c.get());
    }
    CacheCounts {
        blob_hits: m.lookups(Lookup::Blob, "hit"),
        blob_misses: m.lookups(Lookup::Blob, "miss"),
        manifest_hits: m.lookups(Lookup::Manifest, "hit"),
        manifest_misses: m.lookups(Lookup::Manifest, "miss"),
        bytes_from_cache: m.served_from_cache.get(),
        bytes_from_upstream: fetched,
        single_flight_joins: joins,
    }
}

/// Live leases, read when a scrape arrives.
pub fn set_leases(n: usize) {
    m().leases.set(n as i64);
}

/// Deliveries in the push journal in one state (`pending`, …), read when a scrape arrives.
pub fn set_pushes(state: &'static str, n: usize) {
    m().pushes
        .get_or_create(&StateLabel { state })
        .set(n as i64);
}

/// The last scrub pass (which may have run before this process started, or in `wharf fsck`): when it
/// started and what it found, by kind (`damaged`, `missing_content`, …).
pub fn set_last_scrub(started: u64, found: &[(&'static str, u64)]) {
    let m = m();
    m.scrub_last.set(started as i64);
    for &(kind, n) in found {
        m.scrub_found
            .get_or_create(&KindLabel { kind })
            .set(n as i64);
    }
}

/// Everything, in the Prometheus text format (the hit ratios computed now).
pub fn encode() -> String {
    let m = m();
    for kind in [Lookup::Blob, Lookup::Manifest] {
        if let Some(r) = ratio(m.lookups(kind, "hit"), m.lookups(kind, "miss")) {
            m.hit_ratio
                .get_or_create(&KindLabel {
                    kind: kind.as_str(),
                })
                .set(r);
        }
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    out
}

/// Blob streams being served now (the body decides between `sendfile` and copying by it).
static BLOB_STREAMS: AtomicUsize = AtomicUsize::new(0);
/// Bytes sent with `sendfile` since start: the tests read it to see that the zero-copy path ran.
static SENDFILE_BYTES: AtomicU64 = AtomicU64::new(0);

/// A blob stream began; [`blob_stream_ended`] when it ends.
pub fn blob_stream_started() {
    BLOB_STREAMS.fetch_add(1, Ordering::Relaxed);
}

pub fn blob_stream_ended() {
    BLOB_STREAMS.fetch_sub(1, Ordering::Relaxed);
}

/// Blob streams being served now.
pub fn blob_streams() -> usize {
    BLOB_STREAMS.load(Ordering::Relaxed)
}

/// `n` bytes left by `sendfile`.
pub fn sendfile_sent(n: u64) {
    SENDFILE_BYTES.fetch_add(n, Ordering::Relaxed);
}

/// Bytes left by `sendfile` since start.
pub fn sendfile_bytes() -> u64 {
    SENDFILE_BYTES.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_kinds() {
        let cases = [
            ("/v2/", "base"),
            ("/v2", "base"),
            ("/v2/_catalog?n=10", "catalog"),
            ("/v2/library/alpine/manifests/3", "manifests"),
            ("/v2/library/alpine/manifests/3?ns=docker.io", "manifests"),
            ("/v2/a/blobs/sha256:abcd", "blobs"),
            ("/v2/a/blobs/uploads/", "uploads"),
            ("/v2/a/blobs/uploads/0a1b?digest=sha256:00", "uploads"),
            ("/v2/a/tags/list?n=2", "tags"),
            ("/v2/a/referrers/sha256:abcd", "referrers"),
            // Names are read from the end: a repository may contain a route word.
            ("/v2/blobs/manifests/x/blobs/sha256:ab", "blobs"),
            ("/v2/x/blobs/y/manifests/latest", "manifests"),
            ("/v2/uploads/tags/list", "tags"),
            ("/v2/a/b", "other"),
            ("/token?scope=x", "token"),
            ("/favicon.ico", "other"),
        ];
        for (path, want) in cases {
            assert_eq!(route_kind(path), want, "{path}");
        }
    }

    #[test]
    fn hit_ratio_needs_lookups() {
        let mut s = CacheCounts::default();
        assert_eq!(s.hit_ratio(), None);
        s.blob_hits = 3;
        s.manifest_misses = 1;
        assert_eq!(s.hit_ratio(), Some(0.75));
    }

    #[test]
    fn counters_reach_the_text_format() {
        // The process-wide registry: other tests may count too, so look for names and lower bounds.
        request(&Method::GET, "/v2/a/blobs/sha256:ab", 200, 10, 1500);
        cache_hit(Lookup::Blob, &Method::GET, 10);
        cache_miss(Lookup::Manifest);
        joined(Flight::Fill);
        plugin_denied("deny-all");
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m().registry).unwrap();
        for want in [
            "wharf_requests_total{route=\"blobs\",method=\"GET\",status=\"200\"}",
            "wharf_request_duration_seconds_bucket{route=\"blobs\",le=",
            "wharf_cache_lookups_total{kind=\"blob\",result=\"hit\"}",
            "wharf_cache_lookups_total{kind=\"manifest\",result=\"miss\"}",
            "wharf_single_flight_joins_total{kind=\"fill\"}",
            "wharf_plugin_denials_total{plugin=\"deny-all\"}",
            "# TYPE wharf_cache_served_bytes_total counter",
        ] {
            assert!(out.contains(want), "{want} missing from\n{out}");
        }
        let s = cache_counts();
        assert!(s.blob_hits >= 1 && s.manifest_misses >= 1 && s.bytes_from_cache >= 10);
    }
}
