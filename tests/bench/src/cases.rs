//! The cases of issue 5, each run against wharf, nginx and distribution in the same run, servers
//! interleaved within each repetition so that a noisy moment hurts all three alike. With
//! `--baseline`, cases 1, 2, 3 and 7 also measure a second wharf (an older build), interleaved
//! the same way, for a before/after of one change from one run. With `--backends`, cases 1, 3 and 4
//! also measure wharf on S3 (Garage) + Postgres beside wharf on files + redb (issue 26).

use std::cell::{Cell, RefCell};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

use crate::http;
use crate::load;
use crate::procstat::{self, Cost, Meter};
use crate::report::{self, CaseResult, Metric, Stat};
use crate::seed::{self, Blob, Image, UploadStyle, ACCEPT};
use crate::servers::{self, DistMode, Server, SharedBackends, UpstreamEntry};

mod gc;
mod platforms;
mod push;
mod tls;

pub use gc::gc_case;
pub use platforms::platforms_case;
pub use push::push_case;
pub use tls::tls_case;

pub const REPO: &str = "bench/app";
pub const TAG: &str = "latest";
const COLD_REPO: &str = "bench/cold";
const GB: f64 = 1e9;

/// One list of samples per server, in `SERVERS` order.
type PerServer = [Vec<f64>; 3];

/// The baseline wharf's slot in [`Env::lineup`], after the three of `SERVERS`.
const BASELINE: usize = 3;
/// How the baseline wharf is named in errors and notes.
pub const BASELINE_NAME: &str = "wharf (baseline)";
/// `--backends`: the slot of wharf on S3 + Postgres with its local hot cache (cases 1, 3, 4)…
const S3: usize = 4;
/// … and of a second wharf on the same bucket and database with none (case 1's `1-s3cold`).
const S3_COLD: usize = 5;
/// Slots in all: the three of `SERVERS`, the baseline, the two on S3.
const SLOTS: usize = 6;
pub const S3_NAME: &str = "wharf s3+pg";
pub const S3_COLD_NAME: &str = "wharf s3+pg, no local cache";

/// A metric's samples for each server of [`Env::lineup`]: the three columns, the baseline
/// wharf's (empty without `--baseline`), the wharfs on S3 + Postgres' (empty without
/// `--backends`).
#[derive(Default)]
struct Samples {
    servers: PerServer,
    baseline: Vec<f64>,
    s3: Vec<f64>,
    s3_cold: Vec<f64>,
}

impl Samples {
    fn push(&mut self, slot: usize, v: f64) {
        match slot {
            BASELINE => self.baseline.push(v),
            S3 => self.s3.push(v),
            S3_COLD => self.s3_cold.push(v),
            _ => self.servers[slot].push(v),
        }
    }

    /// The `1-s3cold` row: wharf on files (the same runs as case 1's) beside the wharf with no
    /// local cache, in the s3+pg column.
    fn cold(&self, name: &str, unit: &str, stat: fn(Vec<f64>) -> Stat) -> Metric {
        Metric::new(
            name,
            unit,
            [Self::stat(self.servers[0].clone(), stat), None, None],
        )
        .with_backends(Self::stat(self.s3_cold.clone(), stat))
    }

    /// A server's figure, where it was measured (case 7 measures only the wharfs).
    fn stat(v: Vec<f64>, stat: fn(Vec<f64>) -> Stat) -> Option<Stat> {
        (!v.is_empty()).then(|| stat(v))
    }

    fn metric(self, name: &str, unit: &str, stat: fn(Vec<f64>) -> Stat) -> Metric {
        Metric::new(name, unit, self.servers.map(|v| Self::stat(v, stat)))
            .with_baseline(Self::stat(self.baseline, stat))
            .with_backends(Self::stat(self.s3, stat))
    }

    fn medians(self, name: &str, unit: &str) -> Metric {
        self.metric(name, unit, Stat::median)
    }

    fn peaks(self) -> Metric {
        self.metric("peak RSS, max", "MiB", Stat::max)
    }
}

/// How much work each case does (`--quick` or full).
#[derive(Debug, Clone)]
pub struct Settings {
    pub blob_bytes: u64,
    /// Repetitions of the short cases (1 and 3).
    pub reps: usize,
    /// Repetitions of the 16-stream case, which moves 16 blobs per server each time.
    pub reps_parallel: usize,
    pub streams: usize,
    pub load_secs: u32,
    pub conns: u32,
    pub cold_reps: usize,
    pub herd_reps: usize,
    /// Repetitions of the paced cold cases (a 1 GiB pull takes 8.6 s at 1 Gbit/s).
    pub paced_reps: usize,
    pub herd: usize,
    pub storage_repos: usize,
    pub storage_layers: Vec<u64>,
    /// Case 8: repositories of `gc_tags` tags each, every tag its own image.
    pub gc_repos: usize,
    pub gc_tags: usize,
    /// Case 9: each platform's layers.
    pub platform_layers: Vec<u64>,
    pub platform_reps: usize,
}

impl Settings {
    pub fn new(quick: bool, blob_mib: Option<u64>) -> Settings {
        const MIB: u64 = 1 << 20;
        let blob_bytes = blob_mib.unwrap_or(if quick { 128 } else { 1024 }) * MIB;
        if quick {
            Settings {
                blob_bytes,
                reps: 3,
                reps_parallel: 3,
                streams: 16,
                load_secs: 1,
                conns: 64,
                cold_reps: 3,
                herd_reps: 2,
                paced_reps: 2,
                herd: 8,
                storage_repos: 20,
                storage_layers: vec![8 * MIB, 4 * MIB, 2 * MIB, MIB, MIB / 2, MIB / 8],
                gc_repos: 20,
                gc_tags: 10,
                platform_layers: vec![MIB; 3],
                platform_reps: 2,
            }
        } else {
            Settings {
                blob_bytes,
                reps: 5,
                reps_parallel: 3,
                streams: 16,
                load_secs: 3,
                conns: 64,
                cold_reps: 5,
                herd_reps: 3,
                paced_reps: 3,
                herd: 8,
                storage_repos: 20,
                storage_layers: vec![32 * MIB, 16 * MIB, 8 * MIB, 4 * MIB, MIB, MIB / 8],
                gc_repos: 100,
                gc_tags: 10,
                platform_layers: vec![8 * MIB; 3],
                platform_reps: 3,
            }
        }
    }
}

/// Everything the cases share: the three servers (wharf, nginx, distribution, in `SERVERS` order),
/// the upstream registry of the mirror cases, and the seeded image.
pub struct Env {
    pub s: Settings,
    pub wharf_bin: PathBuf,
    /// `--baseline`: an older wharf that cases 1, 2, 3 and 7 measure beside `wharf_bin`.
    pub baseline_bin: Option<PathBuf>,
    pub root: PathBuf,
    pub servers: [Server; 3],
    /// The baseline wharf of cases 1–3, seeded like `servers[0]` (started only for them).
    pub baseline: Option<Server>,
    /// `--backends`: Postgres and Garage, and the wharfs of cases 1 and 3 on them.
    pub backends: Option<Backends>,
    pub upstream: Server,
    pub image: Image,
    /// Every measured run's cost, for the machine-noise summary.
    pub costs: RefCell<Vec<Cost>>,
}

fn blob_path(repo: &str, b: &Blob) -> String {
    format!("/v2/{repo}/blobs/{}", b.digest)
}

fn manifest_path() -> String {
    format!("/v2/{REPO}/manifests/{TAG}")
}

/// Where wharf stores a blob (or manifest) under its `<data_dir>/blobs`: what nginx serves.
fn blob_file(blobs: &Path, b: &Blob) -> PathBuf {
    blobs.join("sha256").join(&b.hex()[..2]).join(b.hex())
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / GB
}

/// What `--backends` starts in [`setup`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackendsNeed {
    None,
    /// Postgres and Garage only: case 4 starts its own wharfs on them.
    Servers,
    /// And the two wharfs of cases 1 and 3, seeded like wharf on files.
    Wharfs,
}

/// `--backends`: one Postgres cluster and one Garage node for the run, and the wharfs on them.
pub struct Backends {
    pub shared: SharedBackends,
    /// On database `wharf`, keys without a prefix, the default local hot cache (20 GiB): seeded
    /// like `Env::servers[0]`, so it holds the image locally too.
    pub wharf: Option<Server>,
    /// A second process on the same database and bucket with `cache_max_bytes = 0`: every blob
    /// GET is a ranged GET from Garage, streamed through.
    pub cold: Option<Server>,
    /// Databases and key prefixes handed out to case 4's wharfs so far (each gets new ones).
    made: Cell<usize>,
}

impl Backends {
    /// Garage's and Postgres's processes, read now (Postgres forks one per connection).
    fn pids(&self) -> Vec<u32> {
        self.shared.pids()
    }
}

impl Env {
    fn measure<T>(
        &self,
        pids: Vec<u32>,
        helpers: Vec<u32>,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Cost)> {
        let m = Meter::start(pids, helpers);
        let r = f()?;
        let c = m.stop();
        self.costs.borrow_mut().push(c);
        Ok((r, c))
    }

    fn big(&self) -> &Blob {
        &self.image.layers[0]
    }

    /// The servers of cases 1–3 in the order each repetition measures them, with their slot
    /// (`SERVERS` index, [`BASELINE`], [`S3`], [`S3_COLD`]): the baseline wharf and the wharfs on S3
    /// right after wharf, so that what is compared meets the most similar moments of this noisy
    /// machine. `s3`: which of the wharfs on S3 + Postgres take part (none, the cached one, both).
    fn lineup(&self, s3: &[usize]) -> Vec<(usize, &Server)> {
        let [wharf, nginx, dist] = &self.servers;
        let mut v = vec![(0, wharf)];
        if let Some(b) = &self.backends {
            let on_s3 = [(S3, &b.wharf), (S3_COLD, &b.cold)];
            v.extend(
                on_s3
                    .into_iter()
                    .filter(|(slot, _)| s3.contains(slot))
                    .filter_map(|(slot, w)| Some((slot, w.as_ref()?))),
            );
        }
        v.extend(self.baseline.iter().map(|b| (BASELINE, b)));
        v.extend([(1, nginx), (2, dist)]);
        v
    }

    /// Processes whose CPU a measurement of the server in `slot` counts as its helpers': the
    /// shared backends for the wharfs on them, none otherwise.
    fn helpers_of(&self, slot: usize) -> Vec<u32> {
        match (&self.backends, slot) {
            (Some(b), S3 | S3_COLD) => b.pids(),
            _ => vec![],
        }
    }

    /// The blob is whole on every server of `lineup` (and now in the page cache, and in the local
    /// hot cache of the wharf on S3: the cases are "warm").
    fn warm_up(&self, lineup: &[(usize, &Server)]) -> Result<()> {
        let path = blob_path(REPO, self.big());
        for (_, s) in lineup {
            let (h, n) = http::get_discard(s.addr, &path)?;
            ensure!(
                h.status == 200 && n == self.big().len,
                "{} answered {} with {n} of {} bytes for {path}",
                s.name,
                h.status,
                self.big().len
            );
        }
        Ok(())
    }
}

/// Three per-server sample lists → a metric of medians.
fn medians(name: &str, unit: &str, v: PerServer) -> Metric {
    let [a, b, c] = v;
    Metric::new(
        name,
        unit,
        [
            Stat::median(a).into(),
            Stat::median(b).into(),
            Stat::median(c).into(),
        ],
    )
}

fn peaks(v: PerServer) -> Metric {
    let [a, b, c] = v;
    Metric::new(
        "peak RSS, max",
        "MiB",
        [
            Stat::max(a).into(),
            Stat::max(b).into(),
            Stat::max(c).into(),
        ],
    )
}

fn at_least(m: &Metric, other: usize, factor: f64) -> Option<bool> {
    m.ratio(other).map(|r| r >= factor)
}

/// Case 1: one client reads the 1 GiB blob. With `--backends`, also from wharf on S3 + Postgres
/// (from its local hot cache) and from a second one with no local cache (`1-s3cold`).
pub fn blob_one_stream(env: &Env) -> Result<Vec<CaseResult>> {
    let lineup = env.lineup(&[S3, S3_COLD]);
    env.warm_up(&lineup)?;
    let big = env.big();
    let path = blob_path(REPO, big);
    let [mut rate, mut cpu, mut rss, mut backends_cpu]: [Samples; 4] = Default::default();
    for _ in 0..env.s.reps {
        for &(i, s) in &lineup {
            let ((h, n), c) = env.measure(s.pids(), env.helpers_of(i), || {
                http::get_discard(s.addr, &path)
            })?;
            ensure!(h.status == 200 && n == big.len, "{}: short read", s.name);
            rate.push(i, gb(n) / c.wall_s);
            cpu.push(i, c.cpu_s / gb(n));
            rss.push(i, c.peak_rss_mib);
            if matches!(i, S3 | S3_COLD) {
                backends_cpu.push(i, c.helpers_cpu_s / gb(n));
            }
        }
    }
    let with_s3 = env.backends.as_ref().is_some_and(|b| b.wharf.is_some());
    let cold = if with_s3 {
        Some(CaseResult {
            id: "1-s3cold".into(),
            title: format!(
                "warm blob GET, {}, one stream, s3+pg with no local cache",
                size_label(big.len)
            ),
            metrics: vec![
                rate.cold("throughput", "GB/s", Stat::median),
                cpu.cold("server CPU", "s per GB", Stat::median),
                backends_cpu.cold("backends' CPU", "s per GB", Stat::median),
                rss.cold("peak RSS, max", "MiB", Stat::max),
            ],
            notes: vec![
                "s3+pg: a second wharf on the same bucket and database with cache_max_bytes = 0, \
                 so every GET is a ranged GET from Garage streamed through; wharf: the same \
                 fs+redb runs as case 1's, interleaved with it"
                    .into(),
            ],
        })
    } else {
        None
    };
    let tput = rate.medians("throughput", "GB/s");
    let met = at_least(&tput, 1, 1.0);
    let mut tput = tput.with_target("≥ 1.0× nginx", met);
    let mut cpu = cpu.medians("server CPU", "s per GB");
    let mut notes =
        vec!["client: the driver's own HTTP reader (1 MiB reads, body discarded)".to_owned()];
    let mut metrics = Vec::new();
    if with_s3 {
        // Issue 26: a warm path from the local cache within 10% of wharf on files.
        tput = tput.with_backends_goal("s3+pg ≥ 0.9× fs+redb", true, 0.9);
        cpu = cpu.with_backends_goal("s3+pg ≤ 1.1× fs+redb", false, 1.1);
        notes.push(
            "s3+pg: wharf on Garage + Postgres, from its local hot cache (the seeding and a first \
             GET filled it); backends' CPU: Garage's and Postgres's during the GET"
                .into(),
        );
    }
    metrics.extend([tput, cpu]);
    if with_s3 {
        metrics.push(backends_cpu.medians("backends' CPU", "s per GB"));
    }
    metrics.push(rss.peaks());
    let mut out = vec![CaseResult {
        id: "1".into(),
        title: format!("warm blob GET, {}, one stream", size_label(big.len)),
        metrics,
        notes,
    }];
    out.extend(cold);
    Ok(out)
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// `n` clients GET `path` at once; returns (successful pulls, bytes) when all are done.
fn concurrent_gets(addr: SocketAddr, path: &str, n: usize, expect: u64) -> Result<(usize, u64)> {
    let barrier = Barrier::new(n);
    let results: Vec<Result<(http::Head, u64)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                sc.spawn(|| {
                    barrier.wait();
                    http::get_discard(addr, path)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("client thread panicked")))
            .collect()
    });
    let mut ok = 0;
    let mut bytes = 0;
    for (h, got) in results.into_iter().flatten() {
        bytes += got;
        if h.status == 200 && got == expect {
            ok += 1;
        }
    }
    Ok((ok, bytes))
}

/// Case 2: 16 clients read the same blob at once.
pub fn blob_concurrent(env: &Env) -> Result<CaseResult> {
    let lineup = env.lineup(&[]);
    env.warm_up(&lineup)?;
    let big = env.big();
    let path = blob_path(REPO, big);
    let n = env.s.streams;
    let [mut rate, mut cpu, mut rss]: [Samples; 3] = Default::default();
    for _ in 0..env.s.reps_parallel {
        for &(i, s) in &lineup {
            let ((ok, bytes), c) = env.measure(s.pids(), vec![], || {
                concurrent_gets(s.addr, &path, n, big.len)
            })?;
            ensure!(ok == n, "{}: only {ok} of {n} streams completed", s.name);
            rate.push(i, gb(bytes) / c.wall_s);
            cpu.push(i, c.cpu_s / gb(bytes));
            rss.push(i, c.peak_rss_mib);
        }
    }
    let tput = rate.medians("aggregate throughput", "GB/s");
    let met = at_least(&tput, 1, 1.0);
    let cpu = cpu.medians("server CPU", "s per GB");
    let cpu_met = cpu.ratio(1).map(|r| r <= 2.0);
    let rss = rss.peaks();
    let rss_met = rss.value(0).map(|v| v <= 64.0);
    Ok(CaseResult {
        id: "2".into(),
        title: format!("warm blob GET, {n} × {} at once", size_label(big.len)),
        metrics: vec![
            tput.with_target("≥ 1.0× nginx", met),
            cpu.with_target("≤ 2× nginx", cpu_met),
            rss.with_target("wharf ≤ 64 MiB", rss_met),
        ],
        notes: vec![format!(
            "{n} clients (threads) read the same blob at once, as when a fleet pulls one layer"
        )],
    })
}

enum Tool {
    Wrk,
    Head,
}

/// Case 3: small requests at 64 connections; one result per endpoint. With `--backends`, also on
/// wharf on S3 + Postgres (tags and manifest records in Postgres, cached in memory as on redb).
pub fn request_rates(env: &Env) -> Result<Vec<CaseResult>> {
    let lineup = env.lineup(&[S3]);
    let with_s3 = lineup.iter().any(|&(i, _)| i == S3);
    let manifest = manifest_path();
    let blob = blob_path(REPO, env.big());
    let endpoints = [
        (
            "3a",
            "manifest GET by tag (wrk)",
            Tool::Wrk,
            &manifest,
            true,
        ),
        ("3b", "manifest HEAD by tag", Tool::Head, &manifest, true),
        ("3c", "blob HEAD", Tool::Head, &blob, false),
    ];
    let mut out = Vec::new();
    for (id, title, tool, path, is_manifest) in endpoints {
        let headers: &[(&str, &str)] = if is_manifest {
            &[("Accept", ACCEPT)]
        } else {
            &[]
        };
        let method = match tool {
            Tool::Wrk => "GET",
            Tool::Head => "HEAD",
        };
        let want_digest = if is_manifest {
            &env.image.manifest.digest
        } else {
            &env.big().digest
        };
        // One request first: the load tools count only statuses, so check the answer is right.
        for (_, s) in &lineup {
            let (h, _) = http::call(s.addr, method, path, headers, None)?;
            ensure!(
                h.status == 200 && h.header("docker-content-digest") == Some(want_digest),
                "{} answered {method} {path} with {} / digest {:?}",
                s.name,
                h.status,
                h.header("docker-content-digest")
            );
            ensure!(
                h.header("content-length").is_some(),
                "{}: no Content-Length on {method} {path}",
                s.name
            );
        }
        let [mut rps, mut cpu, mut rss, mut backends_cpu]: [Samples; 4] = Default::default();
        let mut errors = [0u64; SLOTS];
        for _ in 0..env.s.reps {
            for &(i, s) in &lineup {
                let (l, c) = env.measure(s.pids(), env.helpers_of(i), || match tool {
                    Tool::Wrk => load::wrk(s.addr, path, headers, env.s.conns, env.s.load_secs),
                    Tool::Head => load::head_load(
                        s.addr,
                        path,
                        headers,
                        env.s.conns,
                        f64::from(env.s.load_secs),
                    ),
                })?;
                ensure!(l.requests > 0, "{}: no request succeeded", s.name);
                rps.push(i, l.rps());
                cpu.push(i, c.cpu_s / l.requests as f64 * 1e6);
                rss.push(i, c.peak_rss_mib);
                if i == S3 {
                    backends_cpu.push(i, c.helpers_cpu_s / l.requests as f64 * 1e6);
                }
                errors[i] += l.errors;
            }
        }
        let rps = rps.medians("requests", "req/s");
        let rps_met = match (at_least(&rps, 1, 0.5), at_least(&rps, 2, 5.0)) {
            (Some(a), Some(b)) => Some(a && b),
            _ => None,
        };
        let cpu = cpu.medians("server CPU", "µs per req");
        let cpu_met = cpu.value(0).map(|v| v <= 30.0);
        let mut notes = vec![match tool {
            Tool::Wrk => format!("wrk -t2 -c{} -d{}s", env.s.conns, env.s.load_secs),
            Tool::Head => format!(
                "the driver's keep-alive HEAD generator, 2 threads, {} connections, {}s (wrk 4.1 \
                 stalls on HEAD with Content-Length)",
                env.s.conns, env.s.load_secs
            ),
        }];
        for &(i, s) in &lineup {
            if errors[i] > 0 {
                notes.push(format!(
                    "{}: {} errors (non-2xx or socket) over all runs",
                    s.name, errors[i]
                ));
            }
        }
        let mut rps = rps.with_target("≥ 0.5× nginx and ≥ 5× distrib.", rps_met);
        let mut metrics = vec![];
        if with_s3 && id == "3a" {
            // Issue 26: a manifest GET on Postgres at ≥ 0.8× the rate on redb.
            rps = rps.with_backends_goal("s3+pg ≥ 0.8× fs+redb", true, 0.8);
        }
        metrics.extend([rps, cpu.with_target("wharf ≤ 30 µs", cpu_met)]);
        if with_s3 {
            metrics.push(backends_cpu.medians("backends' CPU", "µs per req"));
            notes.push(
                "s3+pg: wharf on Garage + Postgres; backends' CPU: Garage's and Postgres's during the \
                 load"
                    .into(),
            );
        }
        metrics.push(rss.peaks());
        out.push(CaseResult {
            id: id.into(),
            title: title.into(),
            metrics,
            notes,
        });
    }
    Ok(out)
}

/// A wharf with an empty cache that mirrors the upstream registry under its `host:port`.
fn mirror_wharf(env: &Env, label: &str) -> Result<Server> {
    let dir = env.root.join(format!("mirror-{label}"));
    let _ = fs::remove_dir_all(&dir);
    servers::start_wharf(
        &env.wharf_bin,
        &dir,
        &[UpstreamEntry {
            host: env.upstream.addr.to_string(),
            endpoint: format!("http://{}", env.upstream.addr),
        }],
    )
}

/// distribution as a pull-through cache of the same upstream, with an empty cache.
fn proxy_distribution(env: &Env, label: &str) -> Result<Server> {
    let dir = env.root.join(format!("dproxy-{label}"));
    let _ = fs::remove_dir_all(&dir);
    servers::start_distribution(
        &dir,
        DistMode::Proxy {
            remote: format!("http://{}", env.upstream.addr),
        },
    )
}

/// Stops a server and frees its disk (a cold cache holds a whole blob).
fn discard(mut s: Server) {
    s.stop();
    let _ = fs::remove_dir_all(&s.dir);
}

fn cold_path_wharf(env: &Env) -> String {
    format!(
        "{}?ns={}",
        blob_path(COLD_REPO, env.big()),
        env.upstream.addr
    )
}

/// One cold pull through a fresh cache: (GB/s, cost).
fn cold_pull(env: &Env, via: &Server, path: &str) -> Result<(f64, Cost)> {
    cold_pull_with(env, via, path, Memory::Recycled)
}

/// What the page-cache pages a cold pull writes into were before it.
#[derive(Clone, Copy, PartialEq)]
enum Memory {
    /// Just freed by a deleted file (see [`recycle_memory`]).
    Recycled,
    /// Left free for longer than this VM's host takes to reclaim them.
    Reclaimed,
}

/// How long memory is left free for [`Memory::Reclaimed`] (the dd figures: 8 s is enough).
const RECLAIM_WAIT: Duration = Duration::from_secs(10);

/// Repetitions of case 4 that also pull into reclaimed memory.
const RECLAIMED_REPS: usize = 3;

fn cold_pull_with(env: &Env, via: &Server, path: &str, memory: Memory) -> Result<(f64, Cost)> {
    let big = env.big();
    match memory {
        Memory::Recycled => recycle_memory(env)?,
        Memory::Reclaimed => std::thread::sleep(RECLAIM_WAIT),
    }
    let ((h, n), c) = env.measure(via.pids(), env.upstream.pids(), || {
        http::get_discard(via.addr, path)
    })?;
    ensure!(
        h.status == 200 && n == big.len,
        "{} answered {} with {n} of {} bytes for a cold pull",
        via.name,
        h.status,
        big.len
    );
    Ok((gb(n) / c.wall_s, c))
}

/// What a run cost the machine, less what other work on it used: every process of the run and the
/// kernel's work for them.
fn pull_cpu(c: &Cost) -> f64 {
    c.machine_busy_s - c.background_cpu_s
}

/// Writes and deletes a file a little larger than the blob, right before a cold pull, so that the
/// page-cache pages the pull's cache file takes are ones this VM has just used and freed.
///
/// On this VM (a virtio-balloon with free-page reporting) the host takes back memory the guest has
/// left free for a few seconds; the next write into such a page faults on the host first. Measured
/// with `dd` of 1 GiB into a new file: 0.35 s of system CPU right after deleting another file, 1.5-2
/// s eight seconds later. Without this step a cold pull's CPU per GB depends on how long ago the
/// previous server's cache was deleted (in case 4, distribution's pull came right after wharf's
/// cache was deleted, wharf's after a direct GET and a server start): a mirror that has run for a
/// while reuses memory its page cache already holds, so recycled pages are the fair case.
fn recycle_memory(env: &Env) -> Result<()> {
    use std::io::Write as _;
    let path = env.root.join("recycle");
    let mut f = fs::File::create(&path).context("create the recycle file")?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(env.big().len >> 20) + 64 {
        f.write_all(&chunk)?;
    }
    drop(f);
    fs::remove_file(&path)?;
    Ok(())
}

/// The upstream's replies limited to a link rate (`pace`), or loopback's full speed (`None`).
#[derive(Debug, Clone, Copy)]
pub struct Link(pub Option<f64>);

impl Link {
    /// The case id's suffix: "" for loopback, "-1g" / "-10g" when paced.
    pub fn suffix(self) -> String {
        match self.0 {
            None => String::new(),
            Some(g) => format!("-{}g", num_plain(g)),
        }
    }

    fn describe(self) -> String {
        match self.0 {
            None => "loopback, unpaced".into(),
            Some(g) => format!("upstream paced at {} Gbit/s", num_plain(g)),
        }
    }

    /// Paces the upstream's replies while the guard lives (nothing for loopback).
    fn start(self, env: &Env) -> Result<Option<crate::pace::Pacing>> {
        self.0
            .map(|g| crate::pace::Pacing::start(env.upstream.addr.port(), g))
            .transpose()
    }
}

fn num_plain(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Case 4: one cold pull through wharf, and through distribution's proxy mode, vs a direct GET (the
/// direct GET paced like the pulls). With `--backends`, also through wharf on S3 + Postgres, whose
/// fill ends in the bucket and the database.
pub fn cold_pull_case(env: &Env, link: Link) -> Result<CaseResult> {
    let big = env.big();
    let direct_path = blob_path(COLD_REPO, big);
    let wharf_path = cold_path_wharf(env);
    // Warm the upstream's page cache, as for a local upstream that serves the blob often.
    http::get_discard(env.upstream.addr, &direct_path)?;
    // A mirror that verifies a blob before its client has the last byte cannot finish sooner than
    // one core hashes it, whatever else it does: measured here, with the SHA-256 code wharf uses.
    let sha = Stat::median((0..3).map(|_| sha256_rate()).collect());
    let _paced = link.start(env)?;
    let reps = if link.0.is_some() {
        env.s.paced_reps
    } else {
        env.s.cold_reps
    };
    let [mut rate, mut ratio, mut of_ceiling, mut cpu, mut rss, mut busy]: [Samples; 6] =
        Default::default();
    let [mut machine, mut upstream_cpu, mut cpu_reclaimed]: [Samples; 3] = Default::default();
    let [mut in_bucket, mut backends_cpu]: [Samples; 2] = Default::default();
    let mut s3_failures = Vec::new();
    let (mut direct, mut direct_machine, mut direct_upstream) =
        (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let ((h, n), c) = env.measure(env.upstream.pids(), vec![], || {
            http::get_discard(env.upstream.addr, &direct_path)
        })?;
        ensure!(h.status == 200 && n == big.len, "upstream: short read");
        let d = gb(n) / c.wall_s;
        direct.push(d);
        direct_machine.push(pull_cpu(&c) / gb(n));
        direct_upstream.push(c.cpu_s / gb(n));

        let mut record = |slot: usize, r: f64, c: &Cost, upstream: f64| {
            rate.push(slot, r);
            ratio.push(slot, r / d);
            of_ceiling.push(slot, r / d.min(sha.value));
            cpu.push(slot, c.cpu_s / gb(big.len));
            rss.push(slot, c.peak_rss_mib);
            busy.push(slot, c.machine_busy_s / c.wall_s);
            machine.push(slot, pull_cpu(c) / gb(big.len));
            upstream_cpu.push(slot, upstream / gb(big.len));
        };

        let w = mirror_wharf(env, &rep.to_string())?;
        let (r, c) = cold_pull(env, &w, &wharf_path)?;
        discard(w);
        record(0, r, &c, c.helpers_cpu_s);

        if let Some(b) = &env.backends {
            let (w, prefix) = mirror_wharf_s3(env, b, &rep.to_string())?;
            let pull = cold_pull_s3(env, b, &w, &prefix, &wharf_path);
            discard(w);
            // A fill that does not reach the bucket costs the column a sample, not the case.
            match pull {
                Ok(pull) => {
                    let c = &pull.cost;
                    record(S3, pull.rate, c, c.helpers_cpu_s - pull.backends_cpu_s);
                    in_bucket.push(S3, pull.in_bucket_s);
                    backends_cpu.push(S3, pull.backends_cpu_s / gb(big.len));
                }
                Err(e) => {
                    eprintln!("{S3_NAME}, run {rep}: {e:#}");
                    s3_failures.push(format!("{S3_NAME}, run {rep}: {e:#}"));
                }
            }
        }

        let p = proxy_distribution(env, &rep.to_string())?;
        let (r, c) = cold_pull(env, &p, &direct_path)?;
        discard(p);
        record(2, r, &c, c.helpers_cpu_s);

        // A/B in the same run: the same pulls into memory the host has taken back meanwhile.
        if link.0.is_none() && rep < RECLAIMED_REPS {
            let w = mirror_wharf(env, &format!("{rep}-reclaimed"))?;
            let (_, c) = cold_pull_with(env, &w, &wharf_path, Memory::Reclaimed)?;
            discard(w);
            cpu_reclaimed.push(0, c.cpu_s / gb(big.len));
            let p = proxy_distribution(env, &format!("{rep}-reclaimed"))?;
            let (_, c) = cold_pull_with(env, &p, &direct_path, Memory::Reclaimed)?;
            discard(p);
            cpu_reclaimed.push(2, c.cpu_s / gb(big.len));
        }
    }
    let paced = link.0.is_some();
    let ratio = ratio.medians("cold ÷ direct", "×");
    let ratio = if paced {
        let met = ratio.value(0).map(|r| r >= 0.95);
        ratio.with_target("wharf ≥ 0.95× direct", met)
    } else {
        ratio
    };
    let direct_stat = Stat::median(direct);
    let direct_med = direct_stat.value;
    let ceiling = Stat::median(vec![(sha.value / direct_med).min(1.0)]);
    let mut metrics = vec![
        rate.medians("cold pull", "GB/s"),
        Metric::new(
            "direct GET from upstream",
            "GB/s",
            [None, None, Some(direct_stat)],
        ),
        ratio,
    ];
    if !paced {
        let of_ceiling = of_ceiling.medians("cold ÷ verifying ceiling", "×");
        let met = of_ceiling.value(0).map(|r| r >= 0.8);
        metrics.extend([
            Metric::new("SHA-256 on one core", "GB/s", [Some(sha), None, None]),
            Metric::new(
                "verifying ceiling ÷ direct",
                "×",
                [Some(ceiling), None, None],
            ),
            of_ceiling.with_target("wharf ≥ 0.8× the ceiling", met),
        ]);
    }
    let direct_machine = Stat::median(direct_machine);
    let direct_upstream = Stat::median(direct_upstream);
    if env.backends.is_some() {
        metrics.push(in_bucket.medians("in the bucket after", "s"));
    }
    metrics.push(cpu.medians("server CPU", "s per GB"));
    if env.backends.is_some() {
        metrics.push(backends_cpu.medians("backends' CPU", "s per GB"));
    }
    metrics.extend([
        cpu_reclaimed.medians("server CPU, memory reclaimed", "s per GB"),
        upstream_cpu.medians("upstream's CPU", "s per GB"),
        machine.medians("CPU of all the pull's processes", "s per GB"),
        busy.medians("machine CPUs busy", "CPUs"),
        rss.peaks(),
    ]);
    let mut notes = vec![
        format!(
            "machine CPUs busy: of 2; near 2 means the pull was bound by CPU, not by waiting; \
             CPU of all the pull's processes: server, upstream, client and the kernel's work for \
             them (the machine's busy time less other work on it), which bounds the rate on 2 CPUs \
             to 2 ÷ it (a direct GET costs {} s per GB, {} of it the upstream's)",
            crate::report::num(direct_machine.value),
            crate::report::num(direct_upstream.value)
        ),
        format!(
            "each pull's cache file takes page-cache pages just freed by a deleted file: on this \
             VM the host reclaims pages left free for seconds, and writing into those costs more \
             (see recycle_memory in cases.rs); \"memory reclaimed\": {RECLAIMED_REPS} more pulls \
             each, made {}s after the last file was deleted (loopback only)",
            RECLAIM_WAIT.as_secs()
        ),
        "distribution column: distribution as a pull-through cache (proxy.remoteurl) of the same \
         upstream; nginx has no such mode"
            .into(),
        format!(
            "direct: GET from the upstream distribution itself ({} GB/s{}); each pull starts a \
             cache with an empty data dir; a cold pull runs upstream, cache and client on the same \
             2 CPUs, a direct one only upstream and client",
            crate::report::num(direct_med),
            if paced { ", paced too" } else { "" }
        ),
    ];
    notes.extend(s3_failures);
    if env.backends.is_some() {
        notes.push(
            "s3+pg: a fresh wharf on Garage + Postgres per pull (its own database and key prefix, \
             an empty data dir); its client has the blob once it verified, then the fill uploads \
             it to the bucket (multipart) and records it in Postgres: its CPU figures (server, \
             backends' (Garage + Postgres), all the pull's processes, CPUs busy) run until the \
             object is in the bucket (\"in the bucket after\": from the GET's start), its rates \
             until the client's last byte"
                .into(),
        );
    }
    if paced {
        notes.push(pacing_note(link));
    } else {
        notes.push(
            "verifying ceiling: SHA-256 rate ÷ direct rate, the best any mirror can do that holds \
             the last byte until the digest verifies, with a core of its own for hashing (wharf \
             does; distribution 2.8's proxy mode does not: it passes a second upstream GET to its \
             client unverified and stores the blob from another GET beside it); cold ÷ verifying \
             ceiling: the cold pull's rate ÷ the lower of the SHA-256 and direct rates"
                .into(),
        );
    }
    Ok(CaseResult {
        id: format!("4{}", link.suffix()),
        title: format!(
            "cold pull through the mirror, {}, {}",
            size_label(big.len),
            link.describe()
        ),
        metrics,
        notes,
    })
}

/// A wharf on the shared backends with an empty cache (a database and a key prefix of its own, an
/// empty data dir) that mirrors the upstream; the prefix its keys go under.
fn mirror_wharf_s3(env: &Env, b: &Backends, label: &str) -> Result<(Server, String)> {
    let n = b.made.get();
    b.made.set(n + 1);
    let (db, prefix) = (format!("pull_{n}"), format!("pull-{n}/"));
    b.shared.create_database(&db)?;
    let dir = env.root.join(format!("mirror-s3-{label}"));
    let _ = fs::remove_dir_all(&dir);
    let mut w = servers::start_wharf_on(
        &env.wharf_bin,
        &dir,
        &[UpstreamEntry {
            host: env.upstream.addr.to_string(),
            endpoint: format!("http://{}", env.upstream.addr),
        }],
        Some(&b.shared.conf(&db, &prefix, None)),
        "",
        "",
    )?;
    w.name = S3_NAME;
    Ok((w, prefix))
}

/// One cold pull through a wharf on the shared backends, measured until its fill is in the bucket.
struct S3Pull {
    /// GB/s to the client (until its last byte).
    rate: f64,
    /// Seconds from the GET's start until the bucket listed the object.
    in_bucket_s: f64,
    /// Over the whole of it; `helpers_cpu_s` counts the upstream and the backends.
    cost: Cost,
    backends_cpu_s: f64,
}

/// How long a fill may take to reach the bucket after its client is done.
const IN_BUCKET_DEADLINE: Duration = Duration::from_secs(300);

fn cold_pull_s3(env: &Env, b: &Backends, via: &Server, prefix: &str, path: &str) -> Result<S3Pull> {
    let big = env.big();
    let key = format!("{prefix}blobs/sha256/{}", big.hex());
    recycle_memory(env)?;
    let backend_pids = b.pids();
    let mut helpers = env.upstream.pids();
    helpers.extend(&backend_pids);
    let backends0 = procstat::sum_cpu(&backend_pids);
    let ((h, n, client_s, in_bucket_s), cost) = env.measure(via.pids(), helpers, || {
        let t = Instant::now();
        let (h, n) = http::get_discard(via.addr, path)?;
        let client_s = t.elapsed().as_secs_f64();
        if h.status == 200 {
            // The fill goes on after its client has the last byte: the upload to the bucket.
            while !b.shared.has_key(prefix, &key)? {
                let failed = via.log_tail(3).contains("fill failed");
                ensure!(
                    !failed && t.elapsed() < IN_BUCKET_DEADLINE,
                    "{} client done after {client_s:.1}s, but {}; its log:\n{}\nGarage's log:\n{}",
                    via.name,
                    if failed {
                        format!("the fill failed {:.1}s after the pull started", t.elapsed().as_secs_f64())
                    } else {
                        format!("{key} is not in the bucket {IN_BUCKET_DEADLINE:?} after the pull started")
                    },
                    via.log_tail(8),
                    b.shared.log_tail(30)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok((h, n, client_s, t.elapsed().as_secs_f64()))
    })?;
    let backends_cpu_s = procstat::sum_cpu(&backend_pids) - backends0;
    ensure!(
        h.status == 200 && n == big.len,
        "{} answered {} with {n} of {} bytes for a cold pull",
        via.name,
        h.status,
        big.len
    );
    Ok(S3Pull {
        rate: gb(n) / client_s,
        in_bucket_s,
        cost,
        backends_cpu_s,
    })
}

fn pacing_note(link: Link) -> String {
    format!(
        "paced: the upstream's replies leave at {} Gbit/s (tc htb on a private loopback, filtered \
         on the upstream's port); everything else on loopback is unpaced",
        num_plain(link.0.unwrap_or_default())
    )
}

/// GB/s of SHA-256 on one core over 256 MiB in memory (the `sha2` crate, as in wharf).
fn sha256_rate() -> f64 {
    use sha2::Digest as _;
    let data = vec![0x5au8; 256 << 20];
    let t = std::time::Instant::now();
    let d = sha2::Sha256::digest(&data);
    std::hint::black_box(d);
    gb(data.len() as u64) / t.elapsed().as_secs_f64()
}

/// GETs of `hex` the upstream logged after byte `from` of its access log.
fn upstream_gets(log: &Path, from: u64, hex: &str) -> Result<u64> {
    let text = fs::read(log).context("read upstream access log")?;
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    let needle = format!("\"GET /v2/{COLD_REPO}/blobs/sha256:{hex}");
    Ok(text.lines().filter(|l| l.contains(&needle)).count() as u64)
}

/// Case 5: 8 clients pull the same cold blob at once; how many times did the upstream send it, and
/// what did the bytes delivered cost (beside nginx sending the same bytes, warm, to 8 clients)?
/// Paced, distribution is left out: its 8 upstream GETs would share the paced link.
pub fn herd_case(env: &Env, link: Link) -> Result<CaseResult> {
    let big = env.big();
    let n = env.s.herd;
    let direct_path = blob_path(COLD_REPO, big);
    let wharf_path = cold_path_wharf(env);
    let warm_path = blob_path(REPO, big);
    let nginx = &env.servers[1];
    let paced = link.0.is_some();
    let _paced = link.start(env)?;
    let reps = if paced {
        env.s.paced_reps
    } else {
        env.s.herd_reps
    };
    let servers: &[(usize, bool)] = if paced {
        &[(0, true)]
    } else {
        &[(0, true), (2, false)]
    };
    let [mut gets, mut rel, mut rate, mut cpu, mut rss, mut busy]: [PerServer; 6] =
        Default::default();
    let mut notes = Vec::new();
    let (h, _) = http::get_discard(nginx.addr, &warm_path)?;
    ensure!(
        h.status == 200,
        "nginx answered {} for the warm blob",
        h.status
    );
    for rep in 0..reps {
        for &(i, is_wharf) in servers {
            let label = format!("herd-{rep}");
            let fresh = |label: &str| {
                if is_wharf {
                    mirror_wharf(env, label)
                } else {
                    proxy_distribution(env, label)
                }
            };
            let path = if is_wharf { &wharf_path } else { &direct_path };
            // The reference: one cold pull through a fresh cache just before the herd, so that the
            // ratio compares runs made under the same conditions of this noisy machine.
            let one_server = fresh(&format!("one-{rep}"))?;
            let (_, one) = cold_pull(env, &one_server, path)?;
            discard(one_server);
            let s = fresh(&label)?;
            let from = fs::metadata(&env.upstream.log)?.len();
            recycle_memory(env)?;
            let ((ok, bytes), c) = env.measure(s.pids(), env.upstream.pids(), || {
                concurrent_gets(s.addr, path, n, big.len)
            })?;
            // distribution writes an access-log line when a response ends; let it land.
            std::thread::sleep(Duration::from_millis(300));
            let g = upstream_gets(&env.upstream.log, from, big.hex())?;
            discard(s);
            if ok < n {
                notes.push(format!(
                    "{}: only {ok} of {n} pulls completed whole (run {rep})",
                    crate::report::SERVERS[i]
                ));
            }
            gets[i].push(g as f64);
            rel[i].push(c.wall_s / one.wall_s);
            busy[i].push(c.machine_busy_s / c.wall_s);
            rate[i].push(gb(bytes) / c.wall_s);
            cpu[i].push(c.cpu_s / gb(bytes));
            rss[i].push(c.peak_rss_mib);
        }
        // nginx sending the same bytes: the warm blob to as many clients at once.
        let ((ok, bytes), c) = env.measure(nginx.pids(), vec![], || {
            concurrent_gets(nginx.addr, &warm_path, n, big.len)
        })?;
        ensure!(ok == n, "nginx: only {ok} of {n} warm GETs completed");
        cpu[1].push(c.cpu_s / gb(bytes));
    }
    let all_one = gets[0].iter().all(|&g| g == 1.0);
    let [a, b, c] = gets;
    let gets = Metric::new(
        "upstream GETs, max",
        "count",
        [
            Stat::max(a).into(),
            Stat::max(b).into(),
            Stat::max(c).into(),
        ],
    )
    .with_target("exactly 1 (every run)", Some(all_one));
    let rel = medians("all done ÷ one cold pull", "×", rel);
    let rel = match link.0 {
        Some(g) if g > 1.0 => rel,
        _ => {
            let met = rel.value(0).map(|v| v <= 1.1);
            rel.with_target("wharf ≤ 1.1×", met)
        }
    };
    notes.insert(
        0,
        format!(
            "{}upstream GETs counted in the upstream's access log; \"one cold pull\": a single pull \
             through a fresh cache right before each herd run; server CPU per GB delivered to the \
             {n} clients; nginx: the same bytes, {n} warm GETs of the blob at once, unpaced",
            if paced {
                ""
            } else {
                "distribution column: distribution's proxy mode; "
            }
        ),
    );
    if paced {
        notes.push(pacing_note(link));
        notes.push(
            "distribution left out when paced: its proxy makes one upstream GET per client \
             (see the unpaced case), which would share the paced link"
                .into(),
        );
    }
    Ok(CaseResult {
        id: format!("5{}", link.suffix()),
        title: format!(
            "{n} concurrent cold pulls of one {}, {}",
            size_label(big.len),
            link.describe()
        ),
        metrics: vec![
            gets,
            rel,
            medians("aggregate to clients", "GB/s", rate),
            medians("server CPU", "s per GB delivered", cpu),
            medians("machine CPUs busy", "CPUs", busy),
            peaks(rss),
        ],
        notes,
    })
}

/// (apparent bytes, allocated bytes) of the files under `dir`.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// Case 6: one image copied into 20 repositories with two tags each; what does it cost on disk?
pub fn storage_case(env: &Env) -> Result<CaseResult> {
    let layers = env
        .s
        .storage_layers
        .iter()
        .enumerate()
        .map(|(i, &n)| Blob::random(100 + i as u64, n))
        .collect();
    let image = Image::new(layers);
    let unique = image.unique_bytes();
    let w = servers::start_wharf(&env.wharf_bin, &env.root.join("storage-wharf"), &[])?;
    let d = servers::start_distribution(&env.root.join("storage-dist"), DistMode::Peer)?;
    let repos = env.s.storage_repos;
    let tags = ["1.0", "latest"];
    let mut push_s = [None, None, None];
    let mut cpu = [None, None, None];
    for (i, s, style) in [
        (0usize, &w, UploadStyle::MonolithicPost),
        (2usize, &d, UploadStyle::PostThenPut),
    ] {
        let (_, c) = env.measure(s.pids(), vec![], || {
            for r in 0..repos {
                let repo = format!("store/app-{r}");
                // Half arrive as full uploads (dedup on write), half as mounts (how clients copy).
                if r < repos / 2 {
                    seed::push_image(s.addr, style, &repo, &tags, &image)?;
                } else {
                    for b in image.blobs() {
                        seed::mount_blob(s.addr, &repo, "store/app-0", b)?;
                    }
                    for t in tags {
                        seed::put_manifest(s.addr, &repo, t, &image)?;
                    }
                }
            }
            Ok(())
        })?;
        push_s[i] = Some(Stat::median(vec![c.wall_s]));
        cpu[i] = Some(Stat::median(vec![c.cpu_s]));
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (w_blobs, _) = dir_bytes(&w.dir.join("data/blobs"));
    let (_, w_all) = dir_bytes(&w.dir.join("data"));
    let d_root = d.dir.join("root");
    let (d_blobs, _) = dir_bytes(&d_root.join("docker/registry/v2/blobs"));
    let (_, d_all) = dir_bytes(&d_root);
    let one = |v: f64| Some(Stat::median(vec![v]));
    let ratio = Metric::new(
        "blob bytes ÷ unique bytes",
        "×",
        [
            one(w_blobs as f64 / unique as f64),
            None,
            one(d_blobs as f64 / unique as f64),
        ],
    )
    .with_target("wharf = 1.00", Some(w_blobs == unique));
    let result = CaseResult {
        id: "6".into(),
        title: format!("storage: one image in {repos} repos × {} tags", tags.len()),
        metrics: vec![
            Metric::new(
                "bytes under blobs/",
                "MiB",
                [one(mib(w_blobs)), None, one(mib(d_blobs))],
            ),
            ratio,
            Metric::new(
                "all files, allocated",
                "MiB",
                [one(mib(w_all)), None, one(mib(d_all))],
            ),
            Metric::new("push time", "s", push_s),
            Metric::new("server CPU for the pushes", "s", cpu),
        ],
        notes: vec![format!(
            "unique bytes {} ({} layers, config, manifest); repos 1–{} pushed whole, the rest by \
             cross-repo mount; \"all files\" includes metadata (wharf meta.redb, distribution's \
             link files)",
            unique,
            image.layers.len(),
            repos / 2
        )],
    };
    discard(w);
    discard(d);
    Ok(result)
}

/// What each plugin configuration of case 7 loads: (label, `[[plugin]]` TOML or none).
fn plugin_configs() -> Vec<(&'static str, Option<String>)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let entry = |name: &str, path: PathBuf, config: &str| {
        format!(
            "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\nconfig = '{config}'\n",
            path.display()
        )
    };
    // Each allows the request: what is measured is the check, not a refusal.
    vec![
        ("no plugin", None),
        (
            "Rust allow-list",
            Some(entry(
                "allow-list",
                repo.join("plugins/target/wasm32-wasip2/release/allow_list.wasm"),
                r#"{"allow": ["**"], "deny": ["nothing/here"]}"#,
            )),
        ),
        (
            "Python policy",
            Some(entry(
                "python",
                repo.join("examples/plugins/python/policy.wasm"),
                r#"{"deny": ["nothing/here"]}"#,
            )),
        ),
        (
            "JS policy",
            Some(entry(
                "js",
                repo.join("examples/plugins/js/policy.wasm"),
                r#"{"deny": ["nothing/here"]}"#,
            )),
        ),
    ]
}

/// Case 7: what an access plugin costs per request: manifest GET by tag (wrk, 64 connections) on a
/// wharf with no plugin, the Rust `allow-list`, the Python and the JS example policies, interleaved
/// within each repetition. Every request goes through the plugin's `access.check`. With a baseline
/// wharf, each configuration also runs on it (the same components: the WIT is shared), right after
/// the checkout's.
pub fn plugins_case(env: &Env) -> Result<Vec<CaseResult>> {
    let image = Image::new(vec![Blob::random(7, 4096)]);
    let builds: Vec<(bool, &Path)> = [(false, env.wharf_bin.as_path())]
        .into_iter()
        .chain(env.baseline_bin.as_deref().map(|b| (true, b)))
        .collect();
    let configs = plugin_configs();
    // (configuration, is the baseline, server), in the order each repetition measures them.
    let mut servers = Vec::new();
    for (i, (label, plugin)) in configs.iter().enumerate() {
        if let Some(toml) = &plugin {
            let path = toml
                .lines()
                .find_map(|l| l.strip_prefix("path = \""))
                .map(|p| p.trim_end_matches('"').to_owned())
                .unwrap_or_default();
            ensure!(
                Path::new(&path).is_file(),
                "{label}: no component at {path}; build the plugins with plugins/build.sh"
            );
        }
        for &(is_base, bin) in &builds {
            let suffix = if is_base { "-baseline" } else { "" };
            let mut w = servers::start_wharf_with(
                bin,
                &env.root.join(format!("plugins-{i}{suffix}")),
                &[],
                plugin.as_deref().unwrap_or(""),
            )
            .with_context(|| format!("{label}: start {}", bin.display()))?;
            if is_base {
                w.name = BASELINE_NAME;
            }
            seed::push_image(w.addr, UploadStyle::MonolithicPost, REPO, &[TAG], &image)?;
            let (h, _) = http::call(w.addr, "GET", &manifest_path(), &[("Accept", ACCEPT)], None)?;
            ensure!(
                h.status == 200
                    && h.header("docker-content-digest") == Some(&image.manifest.digest),
                "{}, {label}: GET {} answered {}",
                w.name,
                manifest_path(),
                h.status
            );
            servers.push((i, is_base, w));
        }
    }
    let n = configs.len();
    // Per configuration: the checkout's samples (slot 0) and the baseline's.
    let mut rps: Vec<Samples> = (0..n).map(|_| Samples::default()).collect();
    let mut cpu_us: Vec<Samples> = (0..n).map(|_| Samples::default()).collect();
    let mut errors = vec![[0u64; 2]; n];
    for _ in 0..env.s.reps {
        for (i, is_base, w) in &servers {
            let (l, c) = env.measure(w.pids(), vec![], || {
                load::wrk(
                    w.addr,
                    &manifest_path(),
                    &[("Accept", ACCEPT)],
                    env.s.conns,
                    env.s.load_secs,
                )
            })?;
            let slot = if *is_base { BASELINE } else { 0 };
            errors[*i][usize::from(*is_base)] += l.errors;
            rps[*i].push(slot, l.rps());
            cpu_us[*i].push(slot, c.cpu_s / l.requests.max(1) as f64 * 1e6);
        }
    }
    let base = report::median(&cpu_us[0].servers[0]);
    let base_of_baseline = report::median(&cpu_us[0].baseline);
    let mut out = Vec::new();
    for (i, ((label, _), (rps, cpu_us))) in
        configs.iter().zip(rps.into_iter().zip(cpu_us)).enumerate()
    {
        let cpu = cpu_us.medians("server CPU", "µs/request");
        let cpu_value = cpu.value(0).unwrap_or(f64::NAN);
        let added = cpu_value - base;
        let (target, met) = match i {
            0 => (None, None),
            1 => (Some("adds ≤ 20 µs"), Some(added <= 20.0)),
            _ => (Some("adds ≤ 200 µs"), Some(added <= 200.0)),
        };
        let mut cpu_metric = cpu;
        if let Some(t) = target {
            cpu_metric = cpu_metric.with_target(t, met);
        }
        let mut notes = vec![];
        if i > 0 {
            notes.push(format!(
                "{added:+.1} µs of server CPU per request against no plugin"
            ));
            if let Some(b) = cpu_metric.baseline_value() {
                notes.push(format!(
                    "{BASELINE_NAME}: {:+.1} µs against its own run with no plugin",
                    b - base_of_baseline
                ));
            }
        }
        let whose = [String::new(), format!("{BASELINE_NAME}: ")];
        for (e, who) in errors[i].iter().zip(whose) {
            if *e > 0 {
                notes.push(format!("{who}{e} requests failed"));
            }
        }
        out.push(CaseResult {
            id: format!("7{}", ["a", "b", "c", "d"][i]),
            title: format!("manifest GET by tag, {label}"),
            metrics: vec![rps.medians("requests", "req/s"), cpu_metric],
            notes,
        });
    }
    Ok(out)
}

/// Starts the servers and seeds the same image into wharf and distribution, the cold blob into the
/// upstream; nginx then serves wharf's own files. `serve_baseline`: cases 1–3 will run, so the
/// baseline wharf (if any) is started too, with a data dir of its own seeded like wharf's.
/// `backends`: what of Postgres, Garage and the wharfs on them to start (`--backends`).
pub fn setup(
    s: Settings,
    wharf_bin: PathBuf,
    baseline_bin: Option<PathBuf>,
    serve_baseline: bool,
    backends: BackendsNeed,
    root: PathBuf,
) -> Result<Env> {
    let t = Instant::now();
    eprintln!(
        "generating a {} blob (random bytes) …",
        size_label(s.blob_bytes)
    );
    let image = Image::new(vec![
        Blob::random(1, s.blob_bytes),
        Blob::random(2, 1 << 20),
    ]);
    let wharf = servers::start_wharf(&wharf_bin, &root.join("wharf"), &[])?;
    let dist = servers::start_distribution(&root.join("dist"), DistMode::Peer)?;
    let upstream = servers::start_distribution(&root.join("upstream"), DistMode::Upstream)?;
    eprintln!("seeding wharf, distribution and the upstream over HTTP …");
    seed::push_image(
        wharf.addr,
        UploadStyle::MonolithicPost,
        REPO,
        &[TAG],
        &image,
    )
    .context("seed wharf")?;
    let baseline = match baseline_bin.as_deref().filter(|_| serve_baseline) {
        Some(bin) => {
            let mut b = servers::start_wharf(bin, &root.join("wharf-baseline"), &[])
                .with_context(|| format!("start the baseline wharf {}", bin.display()))?;
            b.name = BASELINE_NAME;
            seed::push_image(b.addr, UploadStyle::MonolithicPost, REPO, &[TAG], &image)
                .context("seed the baseline wharf")?;
            Some(b)
        }
        None => None,
    };
    let backends = match backends {
        BackendsNeed::None => None,
        need => Some(start_backends(&wharf_bin, &root, need, &image)?),
    };
    seed::push_image(dist.addr, UploadStyle::PostThenPut, REPO, &[TAG], &image)
        .context("seed distribution")?;
    seed::upload_blob(
        upstream.addr,
        UploadStyle::PostThenPut,
        COLD_REPO,
        &image.layers[0],
    )
    .context("seed the upstream")?;
    let blobs = wharf.dir.join("data/blobs");
    let file_of = |b: &Blob| blob_file(&blobs, b);
    for b in image.blobs().chain([&image.manifest]) {
        if !file_of(b).is_file() {
            bail!(
                "wharf did not store {} at {}: the nginx config in servers.rs assumes \
                 <data_dir>/blobs/sha256/<2 hex>/<64 hex> for blobs and manifests",
                b.digest,
                file_of(b).display()
            );
        }
    }
    let nginx = servers::start_nginx(
        &root.join("nginx"),
        &blobs,
        &[servers::StaticManifest {
            path: manifest_path(),
            file: file_of(&image.manifest),
            media_type: seed::OCI_MANIFEST.into(),
            digest: image.manifest.digest.clone(),
        }],
    )?;
    eprintln!("set up in {:.1}s", t.elapsed().as_secs_f64());
    Ok(Env {
        s,
        wharf_bin,
        baseline_bin,
        root,
        servers: [wharf, nginx, dist],
        baseline,
        backends,
        upstream,
        image,
        costs: RefCell::new(Vec::new()),
    })
}

/// Postgres and Garage; with `BackendsNeed::Wharfs`, the wharf on them seeded like wharf on files
/// (its local hot cache then holds the image) and a second one on the same database and bucket
/// with no local cache.
fn start_backends(bin: &Path, root: &Path, need: BackendsNeed, image: &Image) -> Result<Backends> {
    eprintln!("starting Postgres and Garage …");
    let shared = SharedBackends::start()?;
    let (wharf, cold) = if need == BackendsNeed::Wharfs {
        let conf = shared.conf("wharf", "", None);
        let mut w = servers::start_wharf_on(bin, &root.join("wharf-s3"), &[], Some(&conf), "", "")
            .context("start wharf on S3 + Postgres")?;
        w.name = S3_NAME;
        eprintln!("seeding wharf s3+pg over HTTP …");
        seed::push_image(w.addr, UploadStyle::MonolithicPost, REPO, &[TAG], image)
            .context("seed wharf s3+pg")?;
        let conf = shared.conf("wharf", "", Some(0));
        let mut c =
            servers::start_wharf_on(bin, &root.join("wharf-s3-cold"), &[], Some(&conf), "", "")
                .context("start wharf on S3 + Postgres with no local cache")?;
        c.name = S3_COLD_NAME;
        (Some(w), Some(c))
    } else {
        (None, None)
    };
    Ok(Backends {
        shared,
        wharf,
        cold,
        made: Cell::new(0),
    })
}
