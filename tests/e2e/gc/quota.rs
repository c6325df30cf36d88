//! `[cache] max_bytes`: the least recently used mirrored images go first, pushed ones never.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{DistRegistry, MirrorOptions, UpstreamSpec, Wharf};
use crate::layout::{assert_same_image, write_layout, Layout, LayoutSpec};
use crate::skopeo::Skopeo;

use super::{collect, on_disk, options, removed, wait_for_dry_run};

const GRACE: u64 = 2;

fn bytes_of(l: &Layout) -> u64 {
    l.all_digests()
        .iter()
        .map(|d| std::fs::metadata(l.blob_path(d)).unwrap().len())
        .sum()
}

/// Proves: with mirrored content over `[cache] max_bytes`, a collection drops the least recently used
/// mirrored tags (by last pull, not by first fetch: `a`, fetched first and pulled again last, stays),
/// as many as it takes to fit and no more, and removes their content; the most recently used mirrored
/// image and a pushed image (larger than the whole quota) stay whole. The names are chosen so that
/// ordering by name instead of by use would evict a different pair.
///
/// Last-use times reach the metadata store in batches (every minute, and at a graceful stop): the test
/// stops and restarts wharf to flush them rather than wait a minute.
#[test]
fn the_cache_quota_evicts_least_recently_used_mirrored_images_and_keeps_pushed_ones() {
    let upstream = DistRegistry::start();
    let src = tempfile::Builder::new()
        .prefix("wharf-e2e-quota-")
        .tempdir()
        .unwrap();
    let names = ["a", "b", "c"];
    let mirrored: Vec<Layout> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            write_layout(
                &src.path().join(n),
                &LayoutSpec::small("v1", 1500 + i as u64),
            )
        })
        .collect();
    let pushed = write_layout(
        &src.path().join("pushed"),
        &LayoutSpec::small("v1", 1600).with_large_layer(1 << 20),
    );
    let sizes: Vec<u64> = mirrored.iter().map(bytes_of).collect();
    // a alone fits; a with either of the others does not.
    let max_bytes = sizes[0] + sizes[1].min(sizes[2]) / 2;
    assert!(bytes_of(&pushed) > max_bytes);

    let mut opts = options(GRACE);
    opts.extra_toml += &format!("\n[cache]\nmax_bytes = {max_bytes}\n");
    opts.mirror = MirrorOptions {
        upstreams: vec![UpstreamSpec::http(upstream.host(), upstream.addr()).with_prefix("up")],
        ..Default::default()
    };
    let mut wharf = Wharf::start(opts);
    let skopeo = Skopeo::new();
    for (n, l) in names.iter().zip(&mirrored) {
        skopeo.copy(
            &l.skopeo_ref(),
            &format!("docker://{}/mirror/{n}:v1", upstream.host()),
        );
    }
    skopeo.copy(
        &pushed.skopeo_ref(),
        &format!("docker://{}/local/pushed:v1", wharf.host()),
    );

    // Pulls a, b, c, then a again, at least a second apart (last use is kept in seconds).
    let pull = |wharf: &Wharf, n: &str, out: &str| {
        let dir = wharf.scratch(out);
        skopeo.copy(
            &format!("docker://{}/up/mirror/{n}:v1", wharf.host()),
            &format!("oci:{}:v1", dir.display()),
        );
        dir
    };
    for (i, n) in ["a", "b", "c", "a"].iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let dir = pull(&wharf, n, &format!("pull{i}"));
        let l = &mirrored[names.iter().position(|x| x == n).unwrap()];
        assert_same_image(l, &dir, "v1");
    }
    for l in mirrored.iter().chain([&pushed]) {
        for d in l.all_digests() {
            assert!(on_disk(&wharf, &d), "{d} was pulled or pushed");
        }
    }

    wharf.stop();
    wharf.start_again();
    wait_for_dry_run(&wharf, "the start protection to end", |r| {
        r["note"].is_null()
    });
    let upstream_requests = upstream.access_log().len();
    let report = collect(&wharf, false);
    let evicted: Vec<(String, String, String)> = report["evicted"]
        .as_array()
        .unwrap_or_else(|| panic!("no `evicted` in {report}"))
        .iter()
        .map(|e: &Value| {
            (
                e["repository"].as_str().unwrap().to_owned(),
                e["tag"].as_str().unwrap().to_owned(),
                e["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let cache = |n: &str| format!("{}/mirror/{n}", upstream.host());
    assert_eq!(
        evicted,
        vec![
            (cache("b"), "v1".into(), mirrored[1].index.digest.clone()),
            (cache("c"), "v1".into(), mirrored[2].index.digest.clone()),
        ],
        "least recently used first, until the rest fits in {max_bytes} bytes (sizes {sizes:?}): \
         {report}"
    );
    let gone: BTreeSet<String> = mirrored[1]
        .all_digests()
        .union(&mirrored[2].all_digests())
        .cloned()
        .collect();
    assert_eq!(removed(&report), gone, "{report}");
    for d in &gone {
        assert!(
            !on_disk(&wharf, d),
            "{d} of an evicted image is still stored"
        );
    }

    // a and the pushed image are whole, and a comes from the cache: no blob is fetched again.
    let dir = pull(&wharf, "a", "after-a");
    assert_same_image(&mirrored[0], &dir, "v1");
    let dir = wharf.scratch("after-pushed");
    skopeo.copy(
        &format!("docker://{}/local/pushed:v1", wharf.host()),
        &format!("oci:{}:v1", dir.display()),
    );
    assert_same_image(&pushed, &dir, "v1");
    let fetched: Vec<String> = upstream.access_log()[upstream_requests..]
        .iter()
        .filter(|l| l.contains("/blobs/"))
        .cloned()
        .collect();
    assert!(
        fetched.is_empty(),
        "a's blobs were fetched again: {fetched:?}"
    );

    // An evicted image is only a cache miss: it comes back from the upstream.
    let dir = pull(&wharf, "b", "after-b");
    assert_same_image(&mirrored[1], &dir, "v1");
}
