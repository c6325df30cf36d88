//! Several wharf processes serving one cache (issue 27): replicas on the same Garage and Postgres.

use serde_json::Value;

use crate::fixtures::{empty_config, image_manifest};
use crate::gc::{collect, options, wait_for_dry_run};
use crate::harness::Wharf;
use crate::http::Api;
use crate::layout::Desc;
use crate::oci::{sha256_digest, Noise, OCI_LAYER_TAR, OCI_MANIFEST};

fn removed(report: &Value) -> Vec<String> {
    report["removed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["digest"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Proves (issue 27, point 4): replica A collects while a client pushes through replica B and takes
/// its time between the blobs and the manifest (distribution's race: blobs up, manifest a while
/// later). A's snapshot cannot see the blobs referenced yet; B's touches, in the shared metadata,
/// keep them. Every acked push is whole on both replicas.
#[test]
fn a_collection_on_one_replica_spares_what_a_push_through_another_is_about_to_reference() {
    let grace = 8;
    let a = Wharf::start_shared(options(grace));
    let b = Wharf::start_sharing(options(grace), &a);
    let (api_a, api_b) = (Api::new(a.base()), Api::new(b.base()));
    // A's own start protects everything for a grace window: past it, only touches and leases do.
    wait_for_dry_run(&a, "A's start protection to pass", |r| r["note"].is_null());
    let (config, config_bytes) = empty_config();
    for round in 0..3u64 {
        let layer = Noise::bytes(round + 40, 150_000);
        let layer_digest = sha256_digest(&layer);
        api_b.push_blob("replicas/app", config_bytes);
        api_b.push_blob("replicas/app", &layer);
        // Blobs up through B, no manifest yet: A collects now.
        let r = collect(&a, false);
        let gone = removed(&r);
        assert!(
            !gone.contains(&layer_digest) && !gone.contains(&config.digest),
            "round {round}: A collected what B's client had just uploaded: {r}"
        );
        let desc = Desc {
            media_type: OCI_LAYER_TAR.into(),
            digest: layer_digest.clone(),
            size: layer.len() as u64,
        };
        let manifest = image_manifest(&config, &[desc], None);
        let tag = format!("v{round}");
        api_b
            .put_manifest("replicas/app", &tag, OCI_MANIFEST, &manifest)
            .assert_status(201);
        for api in [&api_a, &api_b] {
            api.get_manifest("replicas/app", &tag).assert_status(200);
            let r = api.request(
                "GET",
                &format!("/v2/replicas/app/blobs/{layer_digest}"),
                &[],
                None,
            );
            r.assert_status(200);
            assert_eq!(sha256_digest(&r.body), layer_digest, "round {round}");
        }
    }
}

/// Polls `f` every 20 ms for up to 2 s: what "at once" allows for a notification between processes.
fn soon(what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !f() {
        assert!(std::time::Instant::now() < until, "{what}: not within 2 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Proves (issue 27, point 1): what replica A acknowledges, replica B serves at once, as skopeo pulls
/// it, and a deletion on A is a 404 on B at once, though B had the tag and manifest cached.
#[test]
fn a_push_and_a_delete_on_one_replica_are_seen_on_another_at_once() {
    let opts = || crate::harness::WharfOptions {
        delete_enabled: Some(true),
        ..Default::default()
    };
    let a = Wharf::start_shared(opts());
    let b = Wharf::start_sharing(opts(), &a);
    let (api_a, api_b) = (Api::new(a.base()), Api::new(b.base()));
    let img = crate::fixtures::SmallImage::push(&api_a, "replicas/rw", "v1", 91);
    img.assert_intact(&api_b);
    let dir = b.scratch("pulled");
    crate::skopeo::Skopeo::new().copy(
        &format!("docker://{}/replicas/rw:v1", b.host()),
        &format!("oci:{}:v1", dir.display()),
    );

    // B has the tag and the manifest cached now; A deletes the tag, then the manifest.
    api_a
        .delete("/v2/replicas/rw/manifests/v1")
        .assert_status(202);
    soon("B forgets the deleted tag", || {
        api_b.get_manifest("replicas/rw", "v1").status == 404
    });
    api_b
        .get_manifest("replicas/rw", &img.manifest_digest)
        .assert_status(200);
    api_a
        .delete(&format!(
            "/v2/replicas/rw/manifests/{}",
            img.manifest_digest
        ))
        .assert_status(202);
    soon("B forgets the deleted manifest", || {
        api_b
            .get_manifest("replicas/rw", &img.manifest_digest)
            .status
            == 404
    });
}
