//! Reduced-platform pushes (the seed bug, "content digest not found"): a route with `platforms`
//! delivers a reduced index wharf builds itself, with only the kept platforms' content, and a
//! collection running at any moment never removes what such a push still needs.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::gc::{cli, layer, on_disk, push_image, removed};
use crate::harness::WharfOptions;
use crate::http::Api;
use crate::layout::{write_layout, Layout, LayoutSpec, PlatformImage};
use crate::oci::{self, sha256_digest};
use crate::skopeo::Skopeo;

use super::{
    assert_blobs_upstream, assert_manifest_upstream, image_blobs, push_status, setup,
    wait_delivered, Setup, LOCAL, REMOTE,
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

/// A collection that really collects: content untouched for a second and reached by nothing goes.
const GRACE: u64 = 1;
const PUSHES: usize = 20;
const PUSHERS: usize = 4;

/// Small images: 4 skopeo clients and a collector in a loop on 2 CPUs.
fn spec(tag: &str, seed: u64) -> LayoutSpec {
    LayoutSpec {
        tag: tag.into(),
        seed,
        shared_file_bytes: 32 * 1024,
        file_bytes: 8 * 1024,
        large_file_bytes: None,
    }
}

/// Runs `f`, turning a panic (a failed skopeo) into an error message.
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

/// Proves (the seed bug): while `wharf gc` runs back to back through the running server with a 1 s
/// grace window (and garbage keeps appearing for it to remove), 20 reduced-platform pushes (distinct
/// images and tags, skopeo, 4 at a time) go through a write-through route with `platforms`: every
/// push succeeds, every upstream image is the complete reduced image (each blob checked upstream),
/// `push status` lists 20 deliveries and no failure, and wharf still holds every pushed image whole.
#[test]
fn collections_in_a_tight_loop_lose_nothing_of_reduced_platform_pushes() {
    let started = Instant::now();
    let s = setup(
        &[ROUTE_PLATFORMS],
        |_| String::new(),
        WharfOptions {
            delete_enabled: Some(true),
            extra_toml: format!("[gc]\ngrace_secs = {GRACE}\ninterval_secs = 0\n"),
            ..Default::default()
        },
    );
    let src = s.wharf.scratch("src");
    let layouts: Vec<Layout> = (0..PUSHES)
        .map(|i| {
            write_layout(
                &src.join(format!("i{i}")),
                &spec(&format!("t{i}"), 1700 + i as u64),
            )
        })
        .collect();
    let api = s.api();

    let stop = AtomicBool::new(false);
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
        // over and over, so collections remove content while the pushes run.
        sc.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                push_image(&api, "scrap/app", "v1", &[&layer(1800 + n, 2048)]);
                api.delete("/v2/scrap/app/manifests/v1").assert_status(202);
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        });
        let mut pushers = Vec::new();
        for _ in 0..PUSHERS {
            pushers.push(sc.spawn(|| {
                let skopeo = Skopeo::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(l) = layouts.get(i) else { break };
                    let dst = format!("docker://{}/{LOCAL}:t{i}", s.wharf.host());
                    if let Err(e) =
                        attempt(format!("push {i}"), || skopeo.copy(&l.skopeo_ref(), &dst))
                    {
                        errors.lock().unwrap().push(e);
                    }
                }
            }));
        }
        for p in pushers {
            p.join().expect("pusher thread");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (runs, removed_total) = (runs.into_inner(), removed_total.into_inner());
    eprintln!(
        "{PUSHES} reduced pushes ({PUSHERS} at a time) in {:?} with {runs} collections removing \
         {removed_total} blobs; setup {:?}",
        load.elapsed(),
        load.duration_since(started)
    );
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} failures:\n{}",
        errors.len(),
        errors.join("\n\n")
    );
    assert!(
        runs >= 3 && removed_total > 0,
        "the collector should have run, and removed garbage, during the pushes: {runs} runs, \
         {removed_total} removed"
    );

    let up = s.upstream();
    for (i, l) in layouts.iter().enumerate() {
        assert_reduced_upstream(&up, &format!("t{i}"), l);
    }
    let entries: Vec<Value> = push_status(&s.wharf)
        .into_iter()
        .filter(|e| e["repository"] == LOCAL)
        .collect();
    let failed: Vec<&Value> = entries.iter().filter(|e| e["state"] == "failed").collect();
    assert!(failed.is_empty(), "failed deliveries: {failed:#?}");
    for (i, l) in layouts.iter().enumerate() {
        let e = wait_delivered(&s.wharf, LOCAL, &format!("t{i}"));
        assert_eq!(e["digest"], l.index.digest, "{e:#}");
        for d in l.all_digests() {
            assert!(
                on_disk(&s.wharf, &d),
                "wharf lost {d} of ci/app:t{i}, which is tagged"
            );
        }
    }
    eprintln!("whole test took {:?}", started.elapsed());
}
