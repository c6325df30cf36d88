//! containerd 1.6 (`ctr images pull --hosts-dir`) pulls a 3-platform image through wharf, then pulls it
//! again into a fresh containerd while the upstream is gone. See `ctr.rs` for what containerd needs to
//! run here.

use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::oci::sha256_digest;

use super::ctr::{write_hosts_dir, Containerd};
use super::{assert_cached_intact, push_to_upstream, upstream};

/// The story both variants share; `tag_ttl_secs = Some(0)` makes every tag request revalidate, so the
/// second pull exercises stale-if-error instead of a fresh cache hit.
fn pull_through_then_from_cache_alone(tag_ttl_secs: Option<u64>, seed: u64) {
    let mut registry = DistRegistry::start();
    let up = registry.host();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            tag_ttl_secs,
            upstreams: vec![upstream(&up, registry.addr(), "up")],
            ..Default::default()
        },
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", seed));
    push_to_upstream(&registry, &layout, "team/multi");
    let pushed_lines = registry.access_log().len();

    let hosts = wharf.scratch("certs.d");
    write_hosts_dir(&hosts, &up, &wharf.host());
    let reference = format!("{up}/team/multi:v1");
    let amd64 = layout
        .images
        .iter()
        .find(|i| i.platform.architecture == "amd64")
        .expect("an amd64 image");
    let mut wanted = vec![
        layout.index.digest.clone(),
        amd64.manifest.digest.clone(),
        amd64.config.digest.clone(),
    ];
    wanted.extend(amd64.layers.iter().map(|l| l.digest.clone()));

    // 1. Through wharf: containerd resolves the tag (HEAD with ?ns=), fetches and unpacks linux/amd64.
    let mut first = Containerd::start();
    first.pull(&hosts, &reference, "linux/amd64");
    assert_eq!(
        first.image_digest(&reference),
        layout.index.digest,
        "containerd recorded another digest for {reference}"
    );
    for d in &wanted[1..] {
        assert_eq!(
            sha256_digest(&first.content(d)),
            *d,
            "containerd's copy of {d} is wrong"
        );
    }
    // wharf served it: everything containerd needed for linux/amd64 is in wharf's store, intact...
    for d in &wanted {
        assert_cached_intact(&wharf, d);
    }
    // ...and containerd never fell back to the upstream itself (its user agent is containerd/...).
    let direct: Vec<String> = registry.access_log()[pushed_lines..]
        .iter()
        .filter(|l| l.contains("containerd/"))
        .cloned()
        .collect();
    assert!(
        direct.is_empty(),
        "containerd went to the upstream directly, so the mirror failed it:\n{}\n--- wharf log ---\n{}",
        direct.join("\n"),
        crate::harness::log_tail(&wharf.log_path(), 40)
    );
    first.stop();

    // 2. The upstream is gone; a fresh containerd (empty content store) pulls from wharf alone. If wharf
    //    failed, containerd would fall back to the `server` in hosts.toml, which is down: the pull fails.
    registry.stop();
    let second = Containerd::start();
    second.pull(&hosts, &reference, "linux/amd64");
    assert_eq!(second.image_digest(&reference), layout.index.digest);
    for d in &wanted[1..] {
        assert_eq!(sha256_digest(&second.content(d)), *d);
    }

    if tag_ttl_secs == Some(0) {
        // The tag was revalidated and the upstream was down: served stale, and said so.
        let api = Api::new(wharf.base());
        let ns = up.replace(':', "%3A");
        let h = super::assert_manifest_head(
            &api,
            &format!("/v2/team/multi/manifests/v1?ns={ns}"),
            &layout.index.digest,
            layout.index.size,
        );
        let warning = h.header("Warning").unwrap_or_default();
        assert!(
            warning.starts_with("110"),
            "a stale tag must carry `Warning: 110 ...`: {}",
            h.describe()
        );
    }
}

/// Proves: containerd with a `hosts.toml` mirror entry pulls a multi-platform image's linux/amd64
/// content through wharf (`?ns=` addressing, HEAD resolve with digest and length, blobs), unpacks it
/// (so every layer matched its diff_id), never needing the upstream itself; then a fresh containerd
/// pulls the same image with the upstream stopped, from wharf's cache alone.
#[test]
fn containerd_pulls_through_wharf_then_from_its_cache_alone() {
    pull_through_then_from_cache_alone(None, 410);
}

/// Proves: the same with `tag_ttl_secs = 0`: every tag lookup revalidates upstream; with the upstream
/// down, wharf serves the cached tag (stale-if-error) with a `Warning: 110` header, and containerd
/// pulls from that.
#[test]
fn containerd_pulls_stale_tag_when_upstream_is_down_and_ttl_is_0() {
    pull_through_then_from_cache_alone(Some(0), 420);
}
