//! Case 9 (issue 15): what platform reduction saves a mirror. An upstream distribution registry holds
//! a 3-platform image (an OCI index over linux/amd64, linux/arm64 and linux/arm/v7, each with its own
//! config and layers); two wharfs mirror it, one keeping every platform, one only linux/amd64. Each
//! fills an empty cache the way a CI warm-up does, and the upstream's access log says what that cost
//! upstream.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};

use super::{dir_bytes, discard, size_label, Env};
use crate::http;
use crate::report::{CaseResult, Metric, Stat};
use crate::seed::{self, Blob, Image, MultiImage, Platform, UploadStyle, ACCEPT};
use crate::servers::{self, DistMode, Server, UpstreamEntry};

const REPO: &str = "bench/multi";
const TAG: &str = "latest";
const PLATFORMS: [Platform; 3] = [
    Platform::LINUX_AMD64,
    Platform::LINUX_ARM64,
    Platform::LINUX_ARM_V7,
];
/// What the reduced mirror keeps.
const KEPT: Platform = Platform::LINUX_AMD64;
const MIB: f64 = (1 << 20) as f64;

/// The two mirrors compared, by the `[mirror]` keys that make them differ.
const PEERS: [(&str, &str); 2] = [
    ("wharf full", ""),
    ("wharf reduced", "platforms = [\"linux/amd64\"]\n"),
];

/// How a mirror's cache is filled.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// `wharf images pull REF`: the chosen platforms' manifests, configs and layers.
    Cli,
    /// The driver asks for everything, as `nerdctl save --all-platforms` would: the index, every
    /// child, every blob of the children it gets (a reduced mirror answers 404 for the others).
    Walk,
}

/// Whether this wharf has `wharf images pull`.
fn images_pull_available(bin: &Path) -> bool {
    Command::new(bin)
        .args(["images", "pull", "--help"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The 3-platform image: per platform its own config and layers (random, distinct).
fn multi_image(layers: &[u64]) -> MultiImage {
    MultiImage::new(
        PLATFORMS
            .iter()
            .enumerate()
            .map(|(p, &platform)| {
                let blobs = layers
                    .iter()
                    .enumerate()
                    .map(|(i, &len)| Blob::random(9_000 + (p * 16 + i) as u64, len))
                    .collect();
                (platform, Image::for_platform(platform, blobs))
            })
            .collect(),
    )
}

/// `wharf images pull` through the mirror `conf` configures; returns the platforms it took.
fn fill_cli(bin: &Path, conf: &Path, reference: &str) -> Result<usize> {
    let mut cmd = Command::new(bin);
    cmd.args(["images", "pull", reference, "--json", "--config"])
        .arg(conf);
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().context("run wharf images pull")?;
    ensure!(
        out.status.success(),
        "wharf images pull {reference} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "wharf images pull --json printed no JSON report: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(v.get("platforms")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len))
}

/// GET of a manifest through the mirror: (status, parsed JSON when 200).
fn get_manifest(addr: SocketAddr, path: &str) -> Result<(u16, serde_json::Value)> {
    let (h, body) = http::call(addr, "GET", path, &[("Accept", ACCEPT)], None)?;
    if h.status != 200 {
        return Ok((h.status, serde_json::Value::Null));
    }
    let v = serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))?;
    Ok((200, v))
}

fn descriptors(m: &serde_json::Value, key: &str) -> Vec<(String, u64)> {
    let list = match key {
        "config" => m.get("config").into_iter().cloned().collect(),
        _ => m
            .get(key)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    list.iter()
        .filter_map(|d| {
            Some((
                d.get("digest")?.as_str()?.to_owned(),
                d.get("size")?.as_u64()?,
            ))
        })
        .collect()
}

/// The driver's own all-platform fill; returns (platforms fetched, children refused with 404).
fn fill_walk(addr: SocketAddr, ns: &str) -> Result<(usize, usize)> {
    let (status, index) = get_manifest(addr, &format!("/v2/{REPO}/manifests/{TAG}?ns={ns}"))?;
    ensure!(status == 200, "GET the index through the mirror: {status}");
    let (mut got, mut refused) = (0, 0);
    for (child, _) in descriptors(&index, "manifests") {
        let (status, m) = get_manifest(addr, &format!("/v2/{REPO}/manifests/{child}?ns={ns}"))?;
        match status {
            200 => got += 1,
            404 => {
                refused += 1;
                continue;
            }
            s => bail!("GET child {child} through the mirror: {s}"),
        }
        for (d, size) in descriptors(&m, "config")
            .into_iter()
            .chain(descriptors(&m, "layers"))
        {
            let (h, n) = http::get_discard(addr, &format!("/v2/{REPO}/blobs/{d}?ns={ns}"))?;
            ensure!(
                h.status == 200 && n == size,
                "GET blob {d} through the mirror: {} with {n} of {size} bytes",
                h.status
            );
        }
    }
    Ok((got, refused))
}

/// What the upstream's access log shows after byte `from`.
#[derive(Default)]
struct UpstreamLog {
    requests: u64,
    blob_bytes: u64,
    /// Requests naming content of a platform the mirror does not keep.
    left_out: u64,
}

/// Reads distribution's access log (combined format: `… "GET /v2/… HTTP/1.1" 200 8388608 …`).
fn upstream_log(log: &Path, from: u64, left_out: &[&str]) -> Result<UpstreamLog> {
    let text = fs::read(log).context("read the upstream's access log")?;
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    let mut out = UpstreamLog::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split('"').collect();
        let Some(request) = parts.get(1) else {
            continue;
        };
        let mut words = request.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        if !path.starts_with("/v2/") {
            continue;
        }
        out.requests += 1;
        let size: u64 = parts
            .get(2)
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if method == "GET" && path.contains("/blobs/") {
            out.blob_bytes += size;
        }
        if left_out.iter().any(|hex| path.contains(hex)) {
            out.left_out += 1;
        }
    }
    Ok(out)
}

/// One fill of an empty cache, measured.
struct Sample {
    wall_s: f64,
    cpu_s: f64,
    upstream: UpstreamLog,
    stored: u64,
}

fn fill_once(
    env: &Env,
    up: &Server,
    fill: Fill,
    label: &str,
    mirror_keys: &str,
    left_out: &[&str],
) -> Result<Sample> {
    let dir = env.root.join(format!("platforms-{label}"));
    let _ = fs::remove_dir_all(&dir);
    let w = servers::start_wharf_mirror(
        &env.wharf_bin,
        &dir,
        &[UpstreamEntry {
            host: up.addr.to_string(),
            endpoint: format!("http://{}", up.addr),
        }],
        mirror_keys,
        "",
    )?;
    let reduced = !mirror_keys.is_empty();
    let from = fs::metadata(&up.log)?.len();
    let ns = up.addr.to_string();
    let (platforms, c) = env.measure(w.pids(), up.pids(), || match fill {
        Fill::Cli => fill_cli(
            &env.wharf_bin,
            &w.dir.join("wharf.toml"),
            &format!("{ns}/{REPO}:{TAG}"),
        ),
        Fill::Walk => {
            let (got, refused) = fill_walk(w.addr, &ns)?;
            ensure!(
                refused == if reduced { PLATFORMS.len() - 1 } else { 0 },
                "{label}: {refused} children refused"
            );
            Ok(got)
        }
    })?;
    let want = if reduced { 1 } else { PLATFORMS.len() };
    ensure!(
        platforms == want,
        "{label}: the fill took {platforms} platforms, not {want}"
    );
    // distribution writes an access-log line when a response ends; let the last one land.
    std::thread::sleep(Duration::from_millis(300));
    let upstream = upstream_log(&up.log, from, left_out)?;
    let (stored, _) = dir_bytes(&w.dir.join("data/blobs"));
    discard(w);
    Ok(Sample {
        wall_s: c.wall_s,
        cpu_s: c.cpu_s,
        upstream,
        stored,
    })
}

fn wharf_only(name: &str, unit: &str, v: Vec<f64>) -> Metric {
    Metric::new(name, unit, [Some(Stat::median(v)), None, None])
}

/// Case 9: the upstream bytes and time of filling a full and a reduced mirror with the image.
pub fn platforms_case(env: &Env) -> Result<CaseResult> {
    let multi = multi_image(&env.s.platform_layers);
    let up = servers::start_distribution(&env.root.join("platforms-upstream"), DistMode::Upstream)?;
    seed::push_multi(up.addr, UploadStyle::PostThenPut, REPO, TAG, &multi)
        .context("seed the 3-platform image into the upstream")?;
    // Every blob once, straight from the upstream: both mirrors then meet the same warm upstream.
    let mut all_bytes = 0;
    for (_, image) in &multi.platforms {
        for b in image.blobs() {
            let (h, n) = http::get_discard(up.addr, &format!("/v2/{REPO}/blobs/{}", b.digest))?;
            ensure!(
                h.status == 200 && n == b.len,
                "upstream: {} for {}",
                h.status,
                b.digest
            );
            all_bytes += b.len;
        }
    }
    // What the reduced mirror must never ask for: the other platforms' manifests, configs, layers.
    let left_out: Vec<String> = multi
        .platforms
        .iter()
        .filter(|(p, _)| *p != KEPT)
        .flat_map(|(_, i)| {
            std::iter::once(&i.manifest)
                .chain(i.blobs())
                .map(|b| b.hex().to_owned())
        })
        .collect();
    let left_out: Vec<&str> = left_out.iter().map(String::as_str).collect();
    let fill = if images_pull_available(&env.wharf_bin) {
        Fill::Cli
    } else {
        Fill::Walk
    };

    let mut samples: [Vec<Sample>; 2] = Default::default();
    for rep in 0..env.s.platform_reps {
        // Alternate which mirror fills first, so a noisy moment does not always hit the same one.
        let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (name, keys) = PEERS[i];
            let label = format!("{}-{rep}", name.replace(' ', "-"));
            let no_left_out: &[&str] = if keys.is_empty() { &[] } else { &left_out };
            samples[i].push(fill_once(env, &up, fill, &label, keys, no_left_out)?);
        }
    }
    let reduced_left_out: u64 = samples[1].iter().map(|s| s.upstream.left_out).sum();
    for s in &samples[0] {
        ensure!(
            s.upstream.blob_bytes >= all_bytes,
            "wharf full fetched {} blob bytes upstream, less than the image's {all_bytes}",
            s.upstream.blob_bytes
        );
    }
    let per =
        |i: usize, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> { samples[i].iter().map(f).collect() };
    let mib = |b: u64| b as f64 / MIB;
    let bytes = [0, 1].map(|i| per(i, &|s| mib(s.upstream.blob_bytes)));
    let wall = [0, 1].map(|i| per(i, &|s| s.wall_s));
    let saved: Vec<f64> = bytes[0]
        .iter()
        .zip(&bytes[1])
        .map(|(f, r)| (1.0 - r / f) * 100.0)
        .collect();
    let time_ratio: Vec<f64> = wall[0].iter().zip(&wall[1]).map(|(f, r)| r / f).collect();
    let saved_med = crate::report::median(&saved);
    let [bytes_full, bytes_reduced] = bytes;
    let [wall_full, wall_reduced] = wall;
    let metrics = vec![
        wharf_only("upstream bytes, wharf full", "MiB", bytes_full),
        wharf_only("upstream bytes, wharf reduced", "MiB", bytes_reduced),
        wharf_only("saved by reduction", "%", saved).with_target(
            "≈ 2/3 (1 of 3 platforms kept)",
            Some((60.0..=72.0).contains(&saved_med)),
        ),
        wharf_only(
            "upstream requests, wharf full",
            "count",
            per(0, &|s| s.upstream.requests as f64),
        ),
        wharf_only(
            "upstream requests, wharf reduced",
            "count",
            per(1, &|s| s.upstream.requests as f64),
        ),
        Metric::new(
            "left-out platform requests, wharf reduced",
            "count",
            [
                Some(Stat::max(per(1, &|s| s.upstream.left_out as f64))),
                None,
                None,
            ],
        )
        .with_target("none", Some(reduced_left_out == 0)),
        wharf_only("fill time, wharf full", "s", wall_full),
        wharf_only("fill time, wharf reduced", "s", wall_reduced),
        wharf_only("fill time, reduced ÷ full", "×", time_ratio),
        wharf_only("server CPU, wharf full", "s", per(0, &|s| s.cpu_s)),
        wharf_only("server CPU, wharf reduced", "s", per(1, &|s| s.cpu_s)),
        wharf_only(
            "cache (blobs/), wharf full",
            "MiB",
            per(0, &|s| mib(s.stored)),
        ),
        wharf_only(
            "cache (blobs/), wharf reduced",
            "MiB",
            per(1, &|s| mib(s.stored)),
        ),
    ];
    let layers = &env.s.platform_layers;
    let notes = vec![
        format!(
            "upstream: distribution holding an OCI index over {} (each {} layers of {} and its own \
             config; {} of blobs in all); wharf full mirrors every platform, wharf reduced has \
             [mirror] platforms = [\"{}\"] (sparse mode); each fill starts from an empty cache",
            PLATFORMS.map(|p| p.label()).join(", "),
            layers.len(),
            size_label(layers.first().copied().unwrap_or(0)),
            size_label(all_bytes),
            KEPT.label()
        ),
        match fill {
            Fill::Cli => format!(
                "fill: `wharf images pull {{upstream}}/{REPO}:{TAG}` (what a CI warm-up runs; it \
                 fetches what the mirror's platform policy keeps), {} runs each, alternating which \
                 mirror goes first; time and server CPU of the whole command",
                env.s.platform_reps
            ),
            Fill::Walk => format!(
                "fill: the driver asks for everything (index, every child manifest, every blob of \
                 the children it gets; the reduced mirror answers 404 for the left-out children), \
                 {} runs each, alternating which mirror goes first",
                env.s.platform_reps
            ),
        },
        "upstream bytes: blob bytes, the sum of the response sizes of blob GETs in the upstream's access log; \
         requests: every /v2/ request it logged (manifests, HEADs included); left-out platforms: \
         requests naming a digest of the arm64 or arm/v7 manifest, config or layers"
            .into(),
    ];
    discard(up);
    Ok(CaseResult {
        id: "9".into(),
        title: format!(
            "platform reduction: a 3-platform image, {} kept, cache filled through each mirror",
            KEPT.label()
        ),
        metrics,
        notes,
    })
}
