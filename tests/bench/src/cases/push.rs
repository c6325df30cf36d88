//! Case 10 (issue 16): what the push gateway costs a CI job. The job pushes a 1 GiB image (8 layers
//! of random bytes, a config, a manifest by tag) to wharf, whose write-through `[[push]]` route
//! delivers it to a distribution registry before the manifest `PUT` is answered; beside it, the same
//! push straight to a distribution registry. Every push goes to a fresh registry (and a fresh wharf),
//! so the upstream never holds a blob already and every byte crosses the link.
//!
//! Paced, the bytes flowing *to* the registry are shaped (`Pacing::start_to`, the registry's port as
//! destination): the direct push and wharf's delivery share the same kind of link, the job's push to
//! wharf on the runner is not paced.

use std::fs;

use anyhow::{ensure, Context as _, Result};

use super::{discard, gb, num_plain, recycle_memory, size_label, Env, Link};
use crate::http;
use crate::pace::Pacing;
use crate::report::{CaseResult, Metric, Stat};
use crate::seed::{self, Blob, Image, UploadStyle, ACCEPT};
use crate::servers::{self, DistMode, Server};

const LAYERS: u64 = 8;
/// The route's local prefix: what the job pushes to on wharf.
const LOCAL_REPO: &str = "ci/app";
/// Where the route delivers, and where the direct push goes.
const TARGET_REPO: &str = "team/app";
const TAG: &str = "v1";
const MB: f64 = 1e6;

/// One push, measured from the first blob upload to the manifest `PUT`'s answer.
struct Sample {
    wall_s: f64,
    /// CPU of the server the job pushed to (wharf; for the direct push, the registry).
    server_cpu_s: f64,
    /// CPU of the registry that ends up holding the image.
    registry_cpu_s: f64,
    peak_rss_mib: f64,
}

/// The image: `LAYERS` layers of random bytes, `total` bytes in all.
fn image(total: u64) -> Image {
    let each = total / LAYERS;
    Image::new(
        (0..LAYERS)
            .map(|i| Blob::random(10_000 + i, each))
            .collect(),
    )
}

fn route_toml(registry: &Server) -> String {
    format!(
        "[[push]]\nprefix = \"{LOCAL_REPO}\"\ntarget = \"http://{}/{TARGET_REPO}\"\n\
         mode = \"write-through\"\ninsecure = true\n",
        registry.addr
    )
}

/// Paces what is sent to `registry` (nothing on loopback).
fn pace_to(link: Link, registry: &Server) -> Result<Option<Pacing>> {
    link.0
        .map(|g| Pacing::start_to(registry.addr.port(), g))
        .transpose()
}

/// The registry holds `TARGET_REPO:TAG` as this manifest, and every blob whole. Checked right after
/// the push returned: write-through means it is there by then.
fn check_delivered(registry: &Server, image: &Image, who: &str) -> Result<()> {
    let path = format!("/v2/{TARGET_REPO}/manifests/{TAG}");
    let (h, _) = http::call(registry.addr, "HEAD", &path, &[("Accept", ACCEPT)], None)?;
    ensure!(
        h.status == 200 && h.header("docker-content-digest") == Some(image.manifest.digest.as_str()),
        "{who}: when the push returned, the registry answered {} (digest {:?}) for {TARGET_REPO}:{TAG}",
        h.status,
        h.header("docker-content-digest")
    );
    for b in image.blobs() {
        let path = format!("/v2/{TARGET_REPO}/blobs/{}", b.digest);
        let (h, _) = http::call(registry.addr, "HEAD", &path, &[], None)?;
        let len = b.len.to_string();
        ensure!(
            h.status == 200 && h.header("content-length") == Some(len.as_str()),
            "{who}: the registry answered {} for blob {} ({} bytes)",
            h.status,
            b.digest,
            b.len
        );
    }
    Ok(())
}

fn registry(env: &Env, label: &str) -> Result<Server> {
    let dir = env.root.join(format!("push-registry-{label}"));
    let _ = fs::remove_dir_all(&dir);
    servers::start_distribution(&dir, DistMode::Peer)
}

/// The job pushes straight to a fresh registry.
fn push_direct(env: &Env, link: Link, image: &Image, label: &str) -> Result<Sample> {
    let reg = registry(env, label)?;
    let paced = pace_to(link, &reg)?;
    recycle_memory(env)?;
    let (_, c) = env.measure(reg.pids(), vec![], || {
        seed::push_image(
            reg.addr,
            UploadStyle::PostThenPut,
            TARGET_REPO,
            &[TAG],
            image,
        )
    })?;
    drop(paced);
    check_delivered(&reg, image, "direct")?;
    discard(reg);
    Ok(Sample {
        wall_s: c.wall_s,
        server_cpu_s: c.cpu_s,
        registry_cpu_s: c.cpu_s,
        peak_rss_mib: c.peak_rss_mib,
    })
}

/// The job pushes to a fresh wharf whose route delivers to a fresh registry.
fn push_through_wharf(env: &Env, link: Link, image: &Image, label: &str) -> Result<Sample> {
    let reg = registry(env, label)?;
    let dir = env.root.join(format!("push-wharf-{label}"));
    let _ = fs::remove_dir_all(&dir);
    let w = servers::start_wharf_with(&env.wharf_bin, &dir, &[], &route_toml(&reg))?;
    let paced = pace_to(link, &reg)?;
    recycle_memory(env)?;
    let pushed = env.measure(w.pids(), reg.pids(), || {
        seed::push_image(
            w.addr,
            UploadStyle::MonolithicPost,
            LOCAL_REPO,
            &[TAG],
            image,
        )
    });
    drop(paced);
    let (_, c) = pushed.with_context(|| format!("wharf log:\n{}", w.log_tail(20)))?;
    check_delivered(&reg, image, "wharf (write-through)")
        .with_context(|| format!("wharf log:\n{}", w.log_tail(20)))?;
    discard(w);
    discard(reg);
    Ok(Sample {
        wall_s: c.wall_s,
        server_cpu_s: c.cpu_s,
        registry_cpu_s: c.helpers_cpu_s,
        peak_rss_mib: c.peak_rss_mib,
    })
}

/// Case 10 on one link: the push through wharf's route vs the push straight to the registry.
pub fn push_case(env: &Env, link: Link) -> Result<CaseResult> {
    let total = env.s.blob_bytes;
    let image = image(total);
    let bytes = image.unique_bytes();
    let reps = if link.0.is_some() {
        env.s.paced_reps
    } else {
        env.s.cold_reps
    };
    let mut samples: [Vec<Sample>; 2] = Default::default();
    for rep in 0..reps {
        // Alternate which goes first, so a noisy moment does not always hit the same one.
        let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let label = format!("{}{}-{rep}", ["wharf", "direct"][i], link.suffix());
            let s = match i {
                0 => push_through_wharf(env, link, &image, &label)?,
                _ => push_direct(env, link, &image, &label)?,
            };
            samples[i].push(s);
        }
    }
    let [wharf, direct] = &samples;
    let col = |w: Vec<f64>, d: Vec<f64>| [Some(Stat::median(w)), None, Some(Stat::median(d))];
    let of = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| -> Vec<f64> { v.iter().map(f).collect() };
    let rate = |s: &Sample| bytes as f64 / MB / s.wall_s;
    let ratio: Vec<f64> = wharf
        .iter()
        .zip(direct)
        .map(|(w, d)| d.wall_s / w.wall_s)
        .collect();
    let ratio_med = crate::report::median(&ratio);
    let ratio_metric = Metric::new(
        "wharf ÷ direct (throughput)",
        "×",
        [Some(Stat::median(ratio)), None, None],
    );
    let ratio_metric = match link.0 {
        Some(_) => ratio_metric.with_target(
            "≥ 0.9× direct",
            ratio_med.is_finite().then_some(ratio_med >= 0.9),
        ),
        None => ratio_metric,
    };
    let metrics = vec![
        Metric::new(
            "push time",
            "s",
            col(of(wharf, &|s| s.wall_s), of(direct, &|s| s.wall_s)),
        ),
        Metric::new(
            "throughput",
            "MB/s",
            col(of(wharf, &rate), of(direct, &rate)),
        ),
        ratio_metric,
        Metric::new(
            "CPU of the server pushed to",
            "s per GB",
            col(
                of(wharf, &|s| s.server_cpu_s / gb(bytes)),
                of(direct, &|s| s.server_cpu_s / gb(bytes)),
            ),
        ),
        Metric::new(
            "CPU of the receiving registry",
            "s per GB",
            col(
                of(wharf, &|s| s.registry_cpu_s / gb(bytes)),
                of(direct, &|s| s.registry_cpu_s / gb(bytes)),
            ),
        ),
        Metric::new(
            "peak RSS of the server pushed to, max",
            "MiB",
            [
                Some(Stat::max(of(wharf, &|s| s.peak_rss_mib))),
                None,
                Some(Stat::max(of(direct, &|s| s.peak_rss_mib))),
            ],
        ),
    ];
    let mut notes = vec![
        format!(
            "image: {LAYERS} layers of {} (random bytes), a config and a manifest, pushed by tag; \
             the driver uploads blobs one after another (monolithic: wharf POST ?digest=, \
             distribution POST then PUT), then PUTs the manifest; time: first upload to the \
             manifest PUT's answer",
            size_label(total / LAYERS)
        ),
        format!(
            "wharf column: the push to wharf's `[[push]] prefix = \"{LOCAL_REPO}\"` route, \
             write-through to a distribution registry ({TARGET_REPO}); the PUT is answered once the \
             registry holds everything (checked right after); distribution column: the same push \
             straight to a distribution registry. Each push: a fresh registry (and wharf), {reps} \
             runs each, alternating which goes first"
        ),
    ];
    if let Some(g) = link.0 {
        notes.push(format!(
            "paced: what is sent to the registry leaves at {} Gbit/s (tc htb on a private \
             loopback, filtered on the registry's port as destination); the job's push to wharf is \
             not paced",
            num_plain(g)
        ));
    }
    Ok(CaseResult {
        id: format!("10{}", link.suffix()),
        title: format!(
            "push through a write-through route, {}, {}",
            size_label(total),
            link.describe()
        ),
        metrics,
        notes,
    })
}
