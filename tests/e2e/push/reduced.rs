//! Reduced-platform pushes (the seed bug, "content digest not found"): a route with `platforms`
//! delivers a reduced index wharf builds itself, with only the kept platforms' content, and a
//! collection running at any moment never removes what such a push still needs.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gc::{cli, layer, on_disk, push_image, removed};
use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, Layout, LayoutSpec, PlatformImage};
use crate::mirror::relay::{Fault, Gate, Relay};
use crate::oci::{self, sha256_digest};

use super::{
    assert_blobs_upstream, assert_manifest_upstream, image_blobs, layout_blobs, push_blobs_raw,
    push_manifests_raw, push_status, route_toml, setup, wait_delivered, Setup, LOCAL, REMOTE,
};

const KEPT: [&str; 2] = ["linux/amd64", "linux/arm64"];
const ROUTE_PLATFORMS: &str = r#"platforms = ["linux/amd64", "linux/arm64"]"#;

fn platform_name(img: &PlatformImage) -> String {
    let p = &img.platform;
    match p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn kept(layout: &Layout) -> Vec<&PlatformImage> {
    layout
        .images
        .iter()
        .filter(|i| KEPT.contains(&platform_name(i).as_str()))
        .collect()
}

/// Digests only the dropped platform (linux/arm/v7) has: its manifest, config and own layers (the
/// layer every platform shares is not among them).
fn dropped_own_digests(layout: &Layout) -> BTreeSet<String> {
    let img = layout
        .images
        .iter()
        .find(|i| !KEPT.contains(&platform_name(i).as_str()))
        .expect("a third platform");
    let mut own = BTreeSet::from([img.manifest.digest.clone(), img.config.digest.clone()]);
    own.extend(
        img.layers
            .iter()
            .filter(|l| **l != layout.shared_layer)
            .map(|l| l.digest.clone()),
    );
    own
}

/// What `digest` is in `layout`, for failure messages.
fn what_is(layout: &Layout, digest: &str) -> String {
    if digest == layout.index.digest {
        return "the index".into();
    }
    let mut roles = Vec::new();
    for img in &layout.images {
        let p = platform_name(img);
        if img.manifest.digest == digest {
            roles.push(format!("{p} manifest"));
        }
        if img.config.digest == digest {
            roles.push(format!("{p} config"));
        }
        if img.layers.iter().any(|l| l.digest == digest) {
            roles.push(format!("{p} layer"));
        }
    }
    roles.join(", ")
}

/// The upstream's `team/app:<tag>` is the reduction of `layout`: an OCI index listing exactly the kept
/// platforms, each with its original child manifest (same digest), annotated with the original
/// index's digest; each kept child and all its blobs are there. Returns the reduced index's digest.
fn assert_reduced_upstream(upstream: &Api, tag: &str, layout: &Layout) -> String {
    let r = upstream.get_manifest(REMOTE, tag);
    assert_eq!(
        r.status,
        200,
        "the upstream lacks {REMOTE}:{tag}: {}",
        r.describe()
    );
    let reduced = sha256_digest(&r.body);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(reduced.as_str()),
        "{}",
        r.describe()
    );
    assert_ne!(
        reduced, layout.index.digest,
        "the upstream got the original 3-platform index, not a reduced one"
    );
    let v: Value = r.json();
    assert_eq!(v["mediaType"], oci::OCI_INDEX, "{v:#}");
    assert_eq!(
        v["annotations"]["dev.wharf.reduced-from"], layout.index.digest,
        "the reduced index names its original: {v:#}"
    );
    let listed: Vec<(String, String)> = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests: {v:#}"))
        .iter()
        .map(|d| {
            let p = &d["platform"];
            let mut name = format!(
                "{}/{}",
                p["os"].as_str().unwrap_or_default(),
                p["architecture"].as_str().unwrap_or_default()
            );
            if let Some(var) = p["variant"].as_str() {
                name += &format!("/{var}");
            }
            (name, d["digest"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let want: Vec<(String, String)> = kept(layout)
        .iter()
        .map(|i| (platform_name(i), i.manifest.digest.clone()))
        .collect();
    assert_eq!(
        listed, want,
        "the reduced index lists exactly the kept platforms, with their original manifests: {v:#}"
    );
    for img in kept(layout) {
        let bytes = std::fs::read(layout.blob_path(&img.manifest.digest)).unwrap();
        assert_manifest_upstream(upstream, REMOTE, &img.manifest.digest, &bytes);
        assert_blobs_upstream(upstream, REMOTE, &image_blobs(img));
    }
    reduced
}

/// Nothing only the dropped platform has is anywhere in the upstream: not as a manifest or blob of
/// `team/app`, not as a file in its storage.
fn assert_dropped_absent_upstream(s: &Setup, layout: &Layout) {
    let up = s.upstream();
    for d in dropped_own_digests(layout) {
        let m = up.request(
            "HEAD",
            &format!("/v2/{REMOTE}/manifests/{d}"),
            &[("Accept", &crate::http::all_manifest_types())],
            None,
        );
        let b = up.head(&format!("/v2/{REMOTE}/blobs/{d}"));
        assert!(
            m.status == 404 && b.status == 404,
            "the upstream has {d} of the dropped platform: manifest {}, blob {}",
            m.status,
            b.status
        );
        assert!(
            !s.registry.blob_data_path(&d).exists(),
            "the upstream stored {d} of the dropped platform"
        );
    }
}

/// Proves: with `platforms = ["linux/amd64", "linux/arm64"]` on the route, skopeo's push of a
/// 3-platform index (amd64, arm64, arm/v7) delivers a 2-platform index wharf built (annotated with
/// the original digest), both kept children and all their blobs, and nothing only arm/v7 has (each
/// `HEAD` 404 upstream, no file in its storage). wharf keeps the original under `ci/app:v1`; `push
/// status` shows the mapping: digest = original, upstream_digest = reduced, platforms = the two.
#[test]
fn a_route_with_platforms_delivers_the_reduced_index_and_only_its_content() {
    let s = setup(
        &[ROUTE_PLATFORMS],
        |_| String::new(),
        WharfOptions::default(),
    );
    let layout = write_layout(&s.wharf.scratch("src"), &LayoutSpec::small("v1", 1650));

    s.skopeo_push(&layout, &format!("{LOCAL}:v1"));
    let reduced = assert_reduced_upstream(&s.upstream(), "v1", &layout);
    assert_dropped_absent_upstream(&s, &layout);

    let head = s.api().request(
        "HEAD",
        &format!("/v2/{LOCAL}/manifests/v1"),
        &[("Accept", oci::OCI_INDEX)],
        None,
    );
    head.assert_status(200);
    assert_eq!(
        head.header("Docker-Content-Digest"),
        Some(layout.index.digest.as_str()),
        "wharf keeps the image as pushed: {}",
        head.describe()
    );

    let e = wait_delivered(&s.wharf, LOCAL, "v1");
    assert_eq!(e["digest"], layout.index.digest, "{e:#}");
    assert_eq!(e["upstream_digest"], reduced, "{e:#}");
    assert_eq!(e["platforms"], serde_json::json!(KEPT), "{e:#}");
    assert_eq!(e["upstream_repository"], REMOTE, "{e:#}");
}

/// A collection that really collects: content reached by nothing and untouched since the last whole
/// second but one goes.
const GRACE: u64 = 1;
const PUSHES: usize = 20;
const PUSHERS: usize = 4;
/// How long the upstream's answer to each delivery's last step (the reduced index, by tag) is held:
/// well past the grace window, so that while a delivery waits for it only its lease keeps the image
/// (a write-through push tags it locally once the upstream has accepted it).
const HOLD: Duration = Duration::from_secs(GRACE + 2);

/// Small images: 4 pushers and a collector in a loop on 2 CPUs.
fn spec(tag: &str, seed: u64) -> LayoutSpec {
    LayoutSpec {
        tag: tag.into(),
        seed,
        shared_file_bytes: 32 * 1024,
        file_bytes: 8 * 1024,
        large_file_bytes: None,
    }
}

/// Runs `f`, turning a panic (a refused request) into an error message.
fn attempt(what: String, f: impl FnOnce()) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what}: {msg}")
    })
}

/// Proves (the seed bug, nerdctl's "content digest not found"): while `wharf gc` runs back to back
/// through the running server with a 1 s grace window (and garbage keeps appearing for it to
/// remove), 20 reduced-platform pushes (distinct images and tags, 4 at a time) go through a
/// write-through route with `platforms`. Each delivery is held at its last upstream step (the
/// reduced index, by tag) for 3 s, past every touch's protection: meanwhile only the delivery's
/// lease keeps the image, and a collection that started before the local tag was recorded may
/// sweep after it. Every push succeeds, every upstream image is the complete reduced image (each
/// blob checked upstream), `push status` lists 20 deliveries and no failure, and wharf still holds
/// every pushed image whole.
///
/// The clients push as containerd does (blobs, then the child manifests, then the index at once),
/// and check their blobs (`HEAD`, uploading again what is gone) just before the manifests: the
/// window before a manifest arrives is the grace window's, not the push's. skopeo pushes each
/// platform's child manifest as it goes, 1-2 s before the index on this loaded machine; with a 1 s
/// grace window the collector may take such an untagged child before its index arrives
/// (`MANIFEST_BLOB_UNKNOWN`): that is the grace window's contract (issue 15), not this test's.
#[test]
fn collections_in_a_tight_loop_lose_nothing_of_reduced_platform_pushes() {
    let started = Instant::now();
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = Wharf::start(WharfOptions {
        delete_enabled: Some(true),
        extra_toml: format!(
            "[gc]\ngrace_secs = {GRACE}\ninterval_secs = 0\n{}",
            route_toml(&relay.addr().to_string(), &[ROUTE_PLATFORMS])
        ),
        ..Default::default()
    });
    let s = Setup { registry, wharf };
    let src = s.wharf.scratch("src");
    // Tags of one width: a relay rule matches a path by substring.
    let tag = |i: usize| format!("r{i:02}");
    let layouts: Vec<Layout> = (0..PUSHES)
        .map(|i| write_layout(&src.join(tag(i)), &spec(&tag(i), 1700 + i as u64)))
        .collect();
    let gates: Vec<Arc<Gate>> = (0..PUSHES)
        .map(|i| {
            let gate = Gate::new();
            relay.add_rule(
                Some("PUT"),
                &format!("/v2/{REMOTE}/manifests/{}", tag(i)),
                Fault::HoldRequest(gate.clone()),
            );
            gate
        })
        .collect();
    let api = s.api();

    let stop = AtomicBool::new(false);
    let pushing = AtomicBool::new(true);
    let runs = AtomicUsize::new(0);
    let removed_total = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let load = Instant::now();
    std::thread::scope(|sc| {
        // The collector, back to back.
        sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = cli(&s.wharf, &["gc", "--json"]);
                match serde_json::from_slice::<Value>(&out.stdout) {
                    Ok(r) if out.status.success() => {
                        runs.fetch_add(1, Ordering::Relaxed);
                        removed_total.fetch_add(removed(&r).len(), Ordering::Relaxed);
                    }
                    _ => errors.lock().unwrap().push(format!(
                        "wharf gc failed ({}): {}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )),
                }
            }
        });
        // Garbage for it to find: a small image pushed to a repository no route covers and untagged,
        // over and over, so collections remove content while the pushes run. Its own blobs may be
        // collected before its manifest arrives on this loaded machine (the grace window is short
        // on purpose): such a refusal is the collector doing its job, not a failure here.
        sc.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let _ = attempt(format!("garbage {n}"), || {
                    push_image(&api, "scrap/app", "v1", &[&layer(1800 + n, 2048)]);
                    api.delete("/v2/scrap/app/manifests/v1").assert_status(202);
                });
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        // Each held delivery goes on HOLD after it reached the relay.
        sc.spawn(|| {
            let mut seen: Vec<Option<Instant>> = vec![None; PUSHES];
            while pushing.load(Ordering::Relaxed) {
                for (i, gate) in gates.iter().enumerate() {
                    if seen[i].is_none() && gate.waiting() > 0 {
                        seen[i] = Some(Instant::now());
                    }
                    if seen[i].is_some_and(|t| t.elapsed() >= HOLD) {
                        gate.open();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut pushers = Vec::new();
        for _ in 0..PUSHERS {
            pushers.push(sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(l) = layouts.get(i) else { break };
                if let Err(e) = attempt(format!("push {LOCAL}:{}", tag(i)), || {
                    push_blobs_raw(&api, LOCAL, None, l);
                    // As skopeo and containerd do before they refer to a blob: check it is there,
                    // and upload it (again) if it is not.
                    for d in layout_blobs(l) {
                        if api.head(&format!("/v2/{LOCAL}/blobs/{d}")).status == 404 {
                            api.push_blob(LOCAL, &std::fs::read(l.blob_path(&d)).unwrap());
                        }
                    }
                    push_manifests_raw(&api, LOCAL, None, l, &tag(i));
                }) {
                    errors.lock().unwrap().push(e);
                }
            }));
        }
        for p in pushers {
            p.join().expect("pusher thread");
        }
        pushing.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
    });
    let (runs, removed_total) = (runs.into_inner(), removed_total.into_inner());
    eprintln!(
        "{PUSHES} reduced pushes ({PUSHERS} at a time, each held {HOLD:?} upstream) in {:?} with \
         {runs} collections removing {removed_total} blobs; setup {:?}",
        load.elapsed(),
        load.duration_since(started)
    );
    let errors = errors.into_inner().unwrap();
    if !errors.is_empty() {
        let refusals: Vec<String> = std::fs::read_to_string(s.wharf.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                (l.contains("path=/v2/ci/app/manifests/") && !l.contains("status=2"))
                    || l.contains(" WARN ")
                    || l.contains(" ERROR ")
            })
            .map(str::to_owned)
            .collect();
        panic!(
            "{} failures:\n{}\n--- wharf's refusals and warnings ---\n{}",
            errors.len(),
            errors.join("\n\n"),
            refusals.join("\n")
        );
    }
    assert!(
        runs >= 10 && removed_total > 0,
        "the collector should have run, and removed garbage, during the pushes: {runs} runs, \
         {removed_total} removed"
    );
    for (i, gate) in gates.iter().enumerate() {
        assert!(
            relay.count("PUT", &format!("/v2/{REMOTE}/manifests/{}", tag(i))) > 0
                && gate.waiting() == 0,
            "the delivery of {} never reached the relay's hold",
            tag(i)
        );
    }

    let up = s.upstream();
    for (i, l) in layouts.iter().enumerate() {
        assert_reduced_upstream(&up, &tag(i), l);
    }
    let failed: Vec<Value> = push_status(&s.wharf)
        .into_iter()
        .filter(|e| e["state"] == "failed")
        .collect();
    assert!(failed.is_empty(), "failed deliveries: {failed:#?}");
    for (i, l) in layouts.iter().enumerate() {
        let e = wait_delivered(&s.wharf, LOCAL, &tag(i));
        assert_eq!(e["digest"], l.index.digest, "{e:#}");
        let lost: Vec<String> = l
            .all_digests()
            .into_iter()
            .filter(|d| !on_disk(&s.wharf, d))
            .map(|d| format!("{d} ({})", what_is(l, &d)))
            .collect();
        if !lost.is_empty() {
            let head = api.request(
                "HEAD",
                &format!("/v2/{LOCAL}/manifests/{}", tag(i)),
                &[("Accept", oci::OCI_INDEX)],
                None,
            );
            panic!(
                "wharf lost content of {LOCAL}:{}, which it delivered: {lost:#?}\nHEAD by tag: {}\n\
                 tags: {}\nits delivery: {e:#}",
                tag(i),
                head.describe(),
                String::from_utf8_lossy(&api.get(&format!("/v2/{LOCAL}/tags/list")).body),
            );
        }
    }
    eprintln!("whole test took {:?}", started.elapsed());
}
