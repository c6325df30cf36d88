//! Single-flight fills: concurrent misses for one blob or one tag make exactly one upstream request,
//! counted by a relay in front of the real registry (it records each request before forwarding it).

use std::io::{Read, Seek, SeekFrom};
use std::sync::mpsc;
use std::thread;

use crate::fixtures::SmallImage;
use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::{raw, Api};
use crate::oci::{sha256_digest, wharf_blob_path};

use super::relay::{Fault, Gate, Relay};
use super::{assert_cached_intact, get_head, push_noise_blob, upstream, DEADLINE};

const CLIENTS: usize = 8;
const BIG: u64 = 256 << 20;
/// The upstream response is held after this much of its body.
const HOLD_AFTER: u64 = 4 << 20;

fn mirror_via(relay: &Relay, host: &str) -> WharfOptions {
    WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(host, relay.addr(), "up")],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Proves: 8 concurrent cold GETs of one 256 MiB blob make exactly one upstream GET; all 8 clients get
/// their `200` head and start streaming while that one upstream response is still held mid-body (so
/// they really were concurrent, and wharf streams from the growing fill instead of waiting for it);
/// all 8 bodies hash right; the blob is cached intact; a Range GET on the cached blob is a 206 with the
/// right bytes and costs no upstream request.
#[test]
fn eight_cold_gets_of_a_large_blob_make_one_upstream_get() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = Wharf::start(mirror_via(&relay, &up));
    let digest = push_noise_blob(&Api::new(registry.base()), "team/big", 77, BIG);
    let blob_path = format!("/blobs/{digest}");

    let gate = Gate::new();
    relay.add_rule(
        Some("GET"),
        &blob_path,
        Fault::Hold(HOLD_AFTER, gate.clone()),
    );
    let url = format!("{}/v2/up/team/big/blobs/{digest}", wharf.base());
    let (heads_tx, heads_rx) = mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, tx) = (url.clone(), heads_tx.clone());
            thread::spawn(move || {
                let pending = get_head(&url, &[]);
                tx.send(pending.status()).unwrap();
                pending.finish()
            })
        })
        .collect();
    for n in 0..CLIENTS {
        let status = heads_rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "only {n} of {CLIENTS} clients got a response head within {DEADLINE:?} while the \
                 upstream body was held after {HOLD_AFTER} bytes: wharf does not stream a blob to \
                 concurrent clients while it fills (upstream requests so far:\n{})",
                relay.describe()
            )
        });
        assert_eq!(status, 200, "a concurrent client got {status}");
    }
    assert_eq!(
        relay.count("GET", &blob_path),
        1,
        "{CLIENTS} concurrent misses while the fill is held must share one upstream GET:\n{}",
        relay.describe()
    );
    gate.open();
    for c in clients {
        let f = c.join().expect("client thread");
        assert!(f.is_complete(&digest, BIG), "{}", f.describe());
        assert_eq!(
            f.header("Docker-Content-Digest"),
            Some(digest.as_str()),
            "{}",
            f.describe()
        );
    }
    assert_eq!(
        relay.count("GET", &blob_path),
        1,
        "the upstream saw more than one GET for the blob:\n{}",
        relay.describe()
    );
    assert_cached_intact(&wharf, &digest);

    // Range on the cached blob: the last 1000 bytes (expected bytes from the verified cache file).
    let (start, end) = (BIG - 1000, BIG - 1);
    let mut want = vec![0u8; 1000];
    let mut file = std::fs::File::open(wharf_blob_path(&wharf.blobs_dir(), &digest)).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    file.read_exact(&mut want).unwrap();
    let api = Api::new(wharf.base());
    let r = api.request(
        "GET",
        &format!("/v2/up/team/big/blobs/{digest}"),
        &[("Range", &format!("bytes={start}-{end}"))],
        None,
    );
    r.assert_status(206);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes {start}-{end}/{BIG}").as_str()),
        "{}",
        r.describe()
    );
    assert!(r.body == want, "the 206 body is not bytes {start}-{end}");
    assert_eq!(relay.count("GET", &blob_path), 1, "{}", relay.describe());
}

/// Proves: 8 concurrent GETs of a tag that is not cached make one upstream GET for the manifest (and
/// at most one HEAD), while the first upstream request is held until all 8 requests were sent to
/// wharf; every client gets the same bytes.
#[test]
fn eight_concurrent_misses_of_a_tag_make_one_upstream_get() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = Wharf::start(mirror_via(&relay, &up));
    let image = SmallImage::push(&Api::new(registry.base()), "team/app", "v1", 91);

    let gate = Gate::new();
    relay.add_rule(None, "/manifests/", Fault::HoldRequest(gate.clone()));
    let target = "/v2/up/team/app/manifests/v1";
    let accept = crate::http::all_manifest_types();
    let (sent_tx, sent_rx) = mpsc::channel();
    let addr = wharf.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (tx, accept) = (sent_tx.clone(), accept.clone());
            thread::spawn(move || {
                use std::io::Write;
                let mut s = raw::connect(addr);
                s.write_all(raw::head(addr, "GET", target, &[("Accept", &accept)]).as_bytes())
                    .unwrap();
                s.flush().unwrap();
                tx.send(()).unwrap();
                raw::read_response(&mut s, &format!("GET {target}"))
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        sent_rx
            .recv_timeout(DEADLINE)
            .expect("a client could not send");
    }
    super::wait_until(
        || format!("wharf never asked the upstream:\n{}", relay.describe()),
        || gate.waiting() >= 1,
    );
    gate.open();
    for c in clients {
        let r = c
            .join()
            .expect("client thread")
            .expect("wharf closed without answering");
        r.assert_status(200);
        assert!(r.body == image.manifest, "{}", r.describe());
    }
    assert_eq!(
        relay.count("GET", "/team/app/manifests/"),
        1,
        "{CLIENTS} concurrent misses of a tag must share one upstream GET:\n{}",
        relay.describe()
    );
    assert!(
        relay.count("HEAD", "/team/app/manifests/") <= 1,
        "{}",
        relay.describe()
    );
    assert_cached_intact(&wharf, &image.manifest_digest);
    assert_eq!(sha256_digest(&image.manifest), image.manifest_digest);
}
