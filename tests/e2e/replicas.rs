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
