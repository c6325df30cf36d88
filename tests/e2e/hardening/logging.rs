//! The request log: every request gets its line, refusals carry their error code (and, at debug
//! level, the message), and requests whose client left before the answer are logged too.

use std::thread;
use std::time::Duration;

use crate::harness::{DistRegistry, MirrorOptions, WharfOptions};
use crate::http::{path_of, with_query};
use crate::mirror::relay::{Fault, Gate, Relay};
use crate::mirror::upstream;
use crate::oci::{sha256_digest, Noise};

use super::{request_lines, start, start_with, wait_for, Peer};

/// Proves: a refused request's log line has its error code (`error=MANIFEST_UNKNOWN`); the message
/// is there at debug level only.
#[test]
fn refusals_are_logged_with_their_code() {
    let (wharf, api) = start(&[], &[]);
    api.get("/v2/quiet/app/manifests/missing")
        .assert_error(404, "MANIFEST_UNKNOWN");
    wait_for(
        Duration::from_secs(5),
        || "no request line for the refused GET".into(),
        || !request_lines(&wharf, "/v2/quiet/app/manifests/missing").is_empty(),
    );
    let line = &request_lines(&wharf, "/v2/quiet/app/manifests/missing")[0];
    assert!(line.contains("status=404"), "{line}");
    assert!(line.contains("error=MANIFEST_UNKNOWN"), "{line}");
    assert!(
        !line.contains("reason="),
        "the message is for debug level: {line}"
    );

    let debug = WharfOptions {
        env: vec![("WHARF_LOG".into(), "info,wharf=debug".into())],
        ..Default::default()
    };
    let (wharf, api) = start_with(debug, &[], &[]);
    api.get("/v2/loud/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000")
        .assert_error(404, "BLOB_UNKNOWN");
    wait_for(
        Duration::from_secs(5),
        || "no request line for the refused blob GET".into(),
        || !request_lines(&wharf, "/v2/loud/app/blobs/").is_empty(),
    );
    let line = &request_lines(&wharf, "/v2/loud/app/blobs/")[0];
    assert!(line.contains("error=BLOB_UNKNOWN"), "{line}");
    assert!(
        line.contains("reason="),
        "at debug level the message is logged: {line}"
    );
}

/// Proves: a read whose client gave up while it waited (a mirror GET held by its upstream) is logged
/// (as 499, client gone), and so is every final `PUT` whose client closed right after sending it — and
/// those uploads are committed whole.
#[test]
fn requests_whose_client_left_are_logged() {
    const PUTS: usize = 20;
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let options = WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&registry.host(), relay.addr(), "up")],
            ..Default::default()
        },
        ..Default::default()
    };
    let (wharf, api) = start_with(options, &[], &[]);

    // A GET that waits for a held upstream, whose client leaves.
    let gate = Gate::new();
    relay.add_rule(None, "/manifests/", Fault::HoldRequest(gate.clone()));
    let mut waiting = Peer::connect(wharf.addr());
    waiting.head("GET", "/v2/up/team/gone/manifests/v1", &[]);
    wait_for(
        Duration::from_secs(30),
        || "the manifest GET never reached the upstream".into(),
        || gate.waiting() >= 1,
    );
    drop(waiting);
    wait_for(
        Duration::from_secs(10),
        || "no request line for a GET whose client left while it waited".into(),
        || {
            request_lines(&wharf, "/v2/up/team/gone/manifests/v1")
                .iter()
                .any(|l| l.contains("status=499") && l.contains("client_gone=true"))
        },
    );
    gate.open();

    // Final PUTs whose client closes right after sending the last byte.
    let blobs: Vec<Vec<u8>> = (0..PUTS)
        .map(|i| Noise::bytes(100 + i as u64, 1 << 20))
        .collect();
    let targets: Vec<String> = blobs
        .iter()
        .map(|b| {
            let loc = api.start_upload("gone/put");
            path_of(&with_query(&loc, &format!("digest={}", sha256_digest(b))))
        })
        .collect();
    let addr = wharf.addr();
    let senders: Vec<_> = blobs
        .iter()
        .zip(&targets)
        .map(|(b, t)| {
            let (b, t) = (b.clone(), t.clone());
            thread::spawn(move || {
                let mut p = Peer::connect(addr);
                p.head("PUT", &t, &[("Content-Length", &b.len().to_string())]);
                p.send(&b);
                // Gone before the answer.
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    for (b, t) in blobs.iter().zip(&targets) {
        let path = t.split('?').next().unwrap();
        wait_for(
            Duration::from_secs(20),
            || format!("no request line for PUT {path} whose client closed"),
            || {
                request_lines(&wharf, path)
                    .iter()
                    .any(|l| l.contains("method=PUT"))
            },
        );
        api.assert_blob_intact("gone/put", &sha256_digest(b), b.len() as u64);
    }
}
