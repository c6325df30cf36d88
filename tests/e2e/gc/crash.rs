//! `kill -9` in the middle of a sweep.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::harness::Wharf;
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{regular_files, sha256_digest};
use crate::skopeo::Skopeo;

use super::{cli_command, collect, options, removed, wait_for_dry_run};

const GRACE: u64 = 4;
/// Unreferenced blobs: enough that a sweep takes a while (the collector removes them in batches, one
/// metadata transaction each, then the files).
const JUNK: usize = 3000;
const PUSH_THREADS: usize = 4;

fn junk_blob(i: usize) -> Vec<u8> {
    format!("junk blob {i} {}", "x".repeat(i % 64)).into_bytes()
}

/// Proves: a `kill -9` of the server while a collection sweeps thousands of unreachable blobs loses
/// nothing reachable: after a restart on the same data directory the tagged image pulls whole with
/// skopeo and every blob it needs answers `HEAD` 200; every junk blob the registry still serves is
/// whole (no record of a removed file); and a collection on the restarted server, past its start
/// protection, removes the rest and leaves exactly the tagged image.
#[test]
fn kill_9_during_a_sweep_loses_nothing_reachable() {
    let mut wharf = Wharf::start(options(GRACE));
    let api = Api::new(wharf.base());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 900));
    let skopeo = Skopeo::new();
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/keep/img:v1", wharf.host()),
    );
    let pushing = Instant::now();
    // (index, digest): junk_blob(index) has that digest.
    let junk: Vec<(usize, String)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..PUSH_THREADS)
            .map(|t| {
                let api = api.clone();
                s.spawn(move || {
                    (t..JUNK)
                        .step_by(PUSH_THREADS)
                        .map(|i| (i, api.push_blob("junk/blobs", &junk_blob(i))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    eprintln!("pushed {JUNK} junk blobs in {:?}", pushing.elapsed());
    let keep = layout.all_digests();
    let before = regular_files(&wharf.blobs_dir()).len();
    assert_eq!(before, keep.len() + JUNK);

    wait_for_dry_run(&wharf, "every junk blob to be collectable", |r| {
        removed(r).len() == JUNK
    });
    let mut gc = cli_command(&wharf, &["gc", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn wharf gc");
    // Kill as soon as the sweep has removed its first files.
    let end = Instant::now() + Duration::from_secs(60);
    let mut left = before;
    while left == before {
        assert!(
            Instant::now() < end,
            "the sweep never started removing files"
        );
        std::thread::sleep(Duration::from_millis(2));
        left = regular_files(&wharf.blobs_dir()).len();
    }
    wharf.kill9();
    let _ = gc.wait();
    let left = regular_files(&wharf.blobs_dir()).len();
    eprintln!("killed the server with {left} of {before} files left");
    assert!(
        left > keep.len() + JUNK / 4,
        "the kill came too late to be mid-sweep ({left} of {before} files left): the test needs \
         more junk"
    );

    wharf.start_again();
    let api = Api::new(wharf.base());
    // The restarted server protects everything for a grace window after its start: nothing it may
    // have been using before the crash can go yet.
    let early = collect(&wharf, false);
    assert!(
        removed(&early).is_empty() && early["note"].is_string(),
        "a collection within the start protection removed {} blobs (note: {})",
        removed(&early).len(),
        early["note"]
    );
    let out = wharf.scratch("out");
    skopeo.copy(
        &format!("docker://{}/keep/img:v1", wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");
    for d in &keep {
        let kind =
            if *d == layout.index.digest || layout.images.iter().any(|i| i.manifest.digest == *d) {
                "manifests"
            } else {
                "blobs"
            };
        api.request(
            "HEAD",
            &format!("/v2/keep/img/{kind}/{d}"),
            &[("Accept", &crate::http::all_manifest_types())],
            None,
        )
        .assert_status(200);
    }
    // What the registry still lists it still has, whole (GET, which, unlike HEAD, does not count as a
    // use, so the next collection may remove them).
    let on_disk = wharf.stored_digests();
    let mut served = 0;
    for (i, d) in &junk {
        let r = api.get(&format!("/v2/junk/blobs/blobs/{d}"));
        match r.status {
            200 => {
                assert!(on_disk.contains(d), "{d} is served but not stored");
                assert_eq!(&sha256_digest(&r.body), d);
                assert_eq!(r.body, junk_blob(*i));
                served += 1;
            }
            404 => {}
            _ => panic!("{}", r.describe()),
        }
    }
    eprintln!("{served} junk blobs still served after the restart");

    // Past the start protection (and the touches of the checks above), the rest goes.
    let rest: BTreeSet<String> = on_disk.difference(&keep).cloned().collect();
    wait_for_dry_run(&wharf, "the start protection to end", |r| {
        removed(r) == rest
    });
    let report = collect(&wharf, false);
    let gone = removed(&report);
    assert!(
        gone == rest,
        "the collection after the restart should remove the {} unreachable blobs left; it removed {} \
         (of which {} were not left over), note: {}",
        rest.len(),
        gone.len(),
        gone.difference(&rest).count(),
        report["note"]
    );
    assert_eq!(wharf.stored_digests(), keep);
    for (_, d) in &junk {
        api.get(&format!("/v2/junk/blobs/blobs/{d}"))
            .assert_status(404);
    }
    let out = wharf.scratch("out-again");
    skopeo.copy(
        &format!("docker://{}/keep/img:v1", wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");
}
