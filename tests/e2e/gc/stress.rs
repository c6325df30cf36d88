//! Collections in a tight loop while skopeo pushes and pulls through the mirror.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::harness::{DistRegistry, MirrorOptions, UpstreamSpec, Wharf};
use crate::layout::{assert_same_image, write_layout, Layout, LayoutSpec};
use crate::skopeo::Skopeo;

use super::{cli, options, removed, wait_for_dry_run};

/// Short, so that content left behind by moved tags is collected while the clients run, but longer
/// than the longest gap between a skopeo push's steps on a loaded machine: skopeo pushes an index's
/// child manifests by digest (untagged: only the grace window keeps them and their layers) and tags
/// the index last, seconds later with 12 clients on 2 CPUs. With 1 s, skopeo's own pushes fail with
/// MANIFEST_BLOB_UNKNOWN, as they should: the window is the contract.
const GRACE: u64 = 5;
const PUSHERS: usize = 6;
const PULLERS: usize = 6;
const ROUNDS: usize = 8;
/// Images the pushers rotate through: more than pushers, so some are always unreferenced (and
/// collected) while another pusher is about to push them again.
const LOCAL_IMAGES: usize = 8;

/// A layout that is smaller than `LayoutSpec::small`: 12 clients on 2 CPUs.
fn spec(tag: &str, seed: u64) -> LayoutSpec {
    LayoutSpec {
        tag: tag.into(),
        seed,
        shared_file_bytes: 32 * 1024,
        file_bytes: 8 * 1024,
        large_file_bytes: None,
    }
}

/// Runs `f`, turning a panic (a failed skopeo, a failed assertion) into an error message.
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

/// Proves: while `wharf gc` runs back to back against the running server (grace 5 s), 6 skopeo
/// clients push images into wharf (moving tags, so content keeps becoming unreachable and being
/// pushed again, sometimes just as it is collected: skopeo `HEAD`s a blob, skips it, and refers to
/// it) and 6 pull images through the mirror from a `docker-registry` (partly the same content as the
/// pushes). Every push and pull succeeds and each pull verifies; afterwards, past the grace window and
/// after one more collection, every tag's whole image is still there and pulls byte for byte, and
/// nothing else is.
#[test]
fn collections_in_a_tight_loop_lose_nothing_of_concurrent_pushes_and_pulls() {
    let started = Instant::now();
    let upstream = DistRegistry::start();
    let mut opts = options(GRACE);
    opts.mirror = MirrorOptions {
        upstreams: vec![UpstreamSpec::http(upstream.host(), upstream.addr()).with_prefix("up")],
        ..Default::default()
    };
    let wharf = Wharf::start(opts);
    let src = wharf.scratch("src");
    let local: Vec<Layout> = (0..LOCAL_IMAGES)
        .map(|i| write_layout(&src.join(format!("l{i}")), &spec("latest", 3000 + i as u64)))
        .collect();
    // The upstream holds two of the pushed images (the same content arrives both ways) and one of its
    // own.
    let remote: Vec<Layout> = [3000, 3004, 3100]
        .iter()
        .enumerate()
        .map(|(i, seed)| write_layout(&src.join(format!("r{i}")), &spec("v1", *seed)))
        .collect();
    std::thread::scope(|s| {
        for (i, l) in remote.iter().enumerate() {
            let host = upstream.host();
            s.spawn(move || {
                Skopeo::new().copy(&l.skopeo_ref(), &format!("docker://{host}/stress/m{i}:v1"))
            });
        }
    });
    // Garbage from the start: every local image pushed once and untagged, so the first collections
    // have content to remove that the pushers are about to push again.
    let skopeo = Skopeo::new();
    for (i, l) in local.iter().enumerate() {
        skopeo.copy(
            &l.skopeo_ref(),
            &format!("docker://{}/stress/seed{i}:latest", wharf.host()),
        );
        crate::http::Api::new(wharf.base())
            .delete(&format!("/v2/stress/seed{i}/manifests/latest"))
            .assert_status(202);
    }
    wait_for_dry_run(&wharf, "the deleted seed images to be collectable", |r| {
        !removed(r).is_empty()
    });
    eprintln!("setup took {:?}", started.elapsed());

    let stop = AtomicBool::new(false);
    let runs = AtomicUsize::new(0);
    let removed_total = AtomicUsize::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let load = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = cli(&wharf, &["gc", "--json"]);
                let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                    Ok(r) if out.status.success() => r,
                    _ => {
                        errors.lock().unwrap().push(format!(
                            "wharf gc failed ({}): {}{}",
                            out.status,
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                        continue;
                    }
                };
                runs.fetch_add(1, Ordering::Relaxed);
                removed_total.fetch_add(removed(&report).len(), Ordering::Relaxed);
            }
        });
        let mut clients = Vec::new();
        for p in 0..PUSHERS {
            let (local, wharf, errors) = (&local, &wharf, &errors);
            clients.push(s.spawn(move || {
                let skopeo = Skopeo::new();
                for r in 0..ROUNDS {
                    let l = &local[(p + r) % LOCAL_IMAGES];
                    let dst = format!("docker://{}/stress/p{p}:latest", wharf.host());
                    if let Err(e) = attempt(format!("push {p} round {r}"), || {
                        skopeo.copy(&l.skopeo_ref(), &dst)
                    }) {
                        errors.lock().unwrap().push(e);
                    }
                }
            }));
        }
        for q in 0..PULLERS {
            let (remote, wharf, errors) = (&remote, &wharf, &errors);
            clients.push(s.spawn(move || {
                let skopeo = Skopeo::new();
                for r in 0..ROUNDS {
                    let i = (q + r) % remote.len();
                    let out = wharf.scratch(&format!("pull-{q}-{r}"));
                    if let Err(e) = attempt(format!("pull {q} round {r} of m{i}"), || {
                        skopeo.copy(
                            &format!("docker://{}/up/stress/m{i}:v1", wharf.host()),
                            &format!("oci:{}:v1", out.display()),
                        );
                        assert_same_image(&remote[i], &out, "v1");
                    }) {
                        errors.lock().unwrap().push(e);
                    }
                    let _ = std::fs::remove_dir_all(&out);
                }
            }));
        }
        for c in clients {
            c.join().expect("client thread");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (runs, removed_total) = (runs.into_inner(), removed_total.into_inner());
    eprintln!(
        "{} clients × {ROUNDS} rounds in {:?} with {runs} collections removing {removed_total} blobs",
        PUSHERS + PULLERS,
        load.elapsed()
    );
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} failures:\n{}",
        errors.len(),
        errors.join("\n\n")
    );
    assert!(
        runs >= 5 && removed_total > 0,
        "the collector should have run (and removed the untagged images) during the load: \
         {runs} runs, {removed_total} removed"
    );

    // Past the grace window nothing but the tags keeps anything: one more collection, then every
    // tag's image must be whole, and nothing else may be stored.
    let mut want: BTreeSet<String> = BTreeSet::new();
    for p in 0..PUSHERS {
        want.extend(local[(p + ROUNDS - 1) % LOCAL_IMAGES].all_digests());
    }
    for l in &remote {
        want.extend(l.all_digests());
    }
    wait_for_dry_run(
        &wharf,
        "everything but the tagged images to be collectable",
        |r| {
            let stored = crate::oci::digests_on_disk(&wharf.blobs_dir());
            stored
                .difference(&removed(r))
                .cloned()
                .collect::<BTreeSet<_>>()
                == want
        },
    );
    let out = cli(&wharf, &["gc", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in 0..PUSHERS {
        let l = &local[(p + ROUNDS - 1) % LOCAL_IMAGES];
        let out = wharf.scratch(&format!("final-p{p}"));
        skopeo.copy(
            &format!("docker://{}/stress/p{p}:latest", wharf.host()),
            &format!("oci:{}:latest", out.display()),
        );
        assert_same_image(l, &out, "latest");
    }
    for (i, l) in remote.iter().enumerate() {
        let out = wharf.scratch(&format!("final-m{i}"));
        skopeo.copy(
            &format!("docker://{}/up/stress/m{i}:v1", wharf.host()),
            &format!("oci:{}:v1", out.display()),
        );
        assert_same_image(l, &out, "v1");
    }
    let stored = crate::oci::digests_on_disk(&wharf.blobs_dir());
    assert_eq!(
        stored, want,
        "after a collection past the grace window, exactly the tagged images are stored"
    );
    eprintln!("whole test took {:?}", started.elapsed());
}
