//! Test 3: everything committed survives a graceful restart.

use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::digests_on_disk;
use crate::skopeo::Skopeo;

/// Proves: SIGTERM stops wharf cleanly (exit status 0), and a new process on the same data dir serves
/// the same images (including a multi-MiB layer), tags and blobs as before.
#[test]
fn content_and_tags_survive_a_graceful_restart() {
    let mut wharf = Wharf::start(WharfOptions::default());
    // One large layer (24 MiB) so the restart covers big blobs too, not only small ones.
    let layout = write_layout(
        &wharf.scratch("src"),
        &LayoutSpec::small("v1", 300).with_large_layer(24 << 20),
    );
    let skopeo = Skopeo::new();
    for tag in ["v1", "v2", "stable"] {
        skopeo.copy(
            &layout.skopeo_ref(),
            &format!("docker://{}/restart/app:{tag}", wharf.host()),
        );
    }
    let tags_before = Api::new(wharf.base()).get("/v2/restart/app/tags/list");
    tags_before.assert_status(200);
    let on_disk_before = digests_on_disk(&wharf.blobs_dir());

    let status = wharf.stop();
    assert!(
        status.success(),
        "wharf must exit 0 on SIGTERM, got {status}"
    );
    wharf.start_again();

    let api = Api::new(wharf.base());
    let tags_after = api.get("/v2/restart/app/tags/list");
    tags_after.assert_status(200);
    assert_eq!(
        tags_after.json()["tags"],
        serde_json::json!(["stable", "v1", "v2"]),
        "{}",
        tags_after.describe()
    );
    assert_eq!(tags_after.json(), tags_before.json());
    assert_eq!(digests_on_disk(&wharf.blobs_dir()), on_disk_before);

    for tag in ["v1", "stable"] {
        let out = wharf.scratch(&format!("out-{tag}"));
        skopeo.copy(
            &format!("docker://{}/restart/app:{tag}", wharf.host()),
            &format!("oci:{}:{tag}", out.display()),
        );
        assert_same_image(&layout, &out, tag);
    }
    // By digest as well as by tag: the digest index must have been rebuilt/reloaded, not only the tags.
    let by_digest = api.get_manifest("restart/app", &layout.index.digest);
    by_digest.assert_status(200);
    assert_eq!(
        crate::oci::sha256_digest(&by_digest.body),
        layout.index.digest
    );
}

/// Proves: a graceful stop waits for requests, not for idle keep-alive connections. A client that
/// made one request and keeps its connection open (as docker and containerd do) does not hold the stop
/// for `server.shutdown_grace_secs` (60 here): wharf exits well before, with status 0.
#[test]
fn an_idle_keep_alive_connection_does_not_hold_a_graceful_stop() {
    use std::io::{Read, Write};
    let mut wharf = Wharf::start(WharfOptions {
        server_keys: vec!["shutdown_grace_secs = 60".into()],
        ..Default::default()
    });
    let mut conn = std::net::TcpStream::connect(wharf.addr()).unwrap();
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    conn.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let started = std::time::Instant::now();
    let status = wharf.stop();
    let took = started.elapsed();
    assert!(status.success(), "graceful stop: {status}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "an idle keep-alive connection held the stop for {took:?} (grace is 60 s)"
    );
    drop(conn);
}
