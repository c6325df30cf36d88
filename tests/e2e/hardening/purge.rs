//! The upload purge against transfers in flight: with sessions expiring after 2 s and a purge every
//! second, a slow monolithic upload, a slow final `PUT` and a mirror fill held by its upstream must all
//! finish intact, while an abandoned session and a partial file nobody owns are removed, and logged.

use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{DistRegistry, MirrorOptions, WharfOptions};
use crate::http::{path_of, with_query, Api};
use crate::mirror::relay::{Fault, Gate, Relay};
use crate::mirror::{assert_cached_intact, get_head, push_noise_blob, upstream};
use crate::oci::{sha256_digest, Noise};

use super::{log_text, start_with, wait_for, Peer};

const SLOW_SIZE: usize = 64 * 1024;
const SLOW_PIECE: usize = 4 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(400);

/// Sends `body` in pieces with pauses (about 6 s for 64 KiB): a slow client, alive all along.
fn send_slowly(p: &mut Peer, body: &[u8]) {
    for piece in body.chunks(SLOW_PIECE) {
        p.send(piece);
        thread::sleep(SLOW_PAUSE);
    }
}

/// Proves the purge removes only what no transfer holds (issue 13, point 3), and says what it removed.
#[test]
fn the_purge_never_removes_a_transfer_in_progress() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let options = WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&registry.host(), relay.addr(), "up")],
            ..Default::default()
        },
        ..Default::default()
    };
    let (wharf, api) = start_with(
        options,
        &[],
        &[
            "upload_purge_secs = 1",
            "upload_ttl_secs = 2",
            "upload_idle_secs = 2",
        ],
    );
    let started = Instant::now();

    // A mirror fill whose upstream holds the body after 2 MiB.
    let fill_size = 8u64 << 20;
    let fill_digest = push_noise_blob(&Api::new(registry.base()), "team/held", 31, fill_size);
    let gate = Gate::new();
    relay.add_rule(
        Some("GET"),
        &format!("/blobs/{fill_digest}"),
        Fault::Hold(2 << 20, gate.clone()),
    );
    let url = format!("{}/v2/up/team/held/blobs/{fill_digest}", wharf.base());
    let fill = thread::spawn(move || get_head(&url, &[]).finish());

    // A slow monolithic upload.
    let mono = Noise::bytes(41, SLOW_SIZE);
    let mono_digest = sha256_digest(&mono);
    let addr = wharf.addr();
    let (body, d) = (mono.clone(), mono_digest.clone());
    let slow_post = thread::spawn(move || {
        let mut p = Peer::connect(addr);
        p.head(
            "POST",
            &format!("/v2/slow/mono/blobs/uploads/?digest={d}"),
            &[("Content-Length", &SLOW_SIZE.to_string())],
        );
        send_slowly(&mut p, &body);
        p.answer(Duration::from_secs(30))
    });

    // A session whose final PUT carries the whole blob, slowly.
    let last = Noise::bytes(42, SLOW_SIZE);
    let last_digest = sha256_digest(&last);
    let loc = api.start_upload("slow/session");
    let target = path_of(&with_query(&loc, &format!("digest={last_digest}")));
    let body = last.clone();
    let slow_put = thread::spawn(move || {
        let mut p = Peer::connect(addr);
        p.head(
            "PUT",
            &target,
            &[("Content-Length", &SLOW_SIZE.to_string())],
        );
        send_slowly(&mut p, &body);
        p.answer(Duration::from_secs(30))
    });

    // An abandoned session and a partial file nobody owns: these must go.
    let abandoned = api.start_upload("slow/abandoned");
    api.request(
        "PATCH",
        &abandoned,
        &[("Content-Type", "application/octet-stream")],
        Some(b"never finished"),
    )
    .assert_status(202);
    let abandoned_id = abandoned
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(wharf.ingest_dir().join("mono-orphan0"), b"left by a crash").unwrap();

    wait_for(
        Duration::from_secs(30),
        || "the fill never reached the upstream's held response".into(),
        || gate.waiting() >= 1,
    );
    let post = slow_post
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("slow monolithic upload: {e}"));
    let put = slow_put
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("slow final PUT: {e}"));
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "the transfers must outlive the TTL (2 s) by several purges"
    );
    gate.open();
    let fetched = fill.join().unwrap();

    assert_eq!(
        post.status, 201,
        "slow monolithic upload across purges: {post:?}"
    );
    assert_eq!(put.status, 201, "slow final PUT across purges: {put:?}");
    api.assert_blob_intact("slow/mono", &mono_digest, SLOW_SIZE as u64);
    api.assert_blob_intact("slow/session", &last_digest, SLOW_SIZE as u64);
    assert_eq!(
        (
            fetched.status,
            fetched.len,
            fetched.digest.as_str(),
            &fetched.error
        ),
        (200, fill_size, fill_digest.as_str(), &None),
        "client of a fill held across purges"
    );
    assert_cached_intact(&wharf, &fill_digest);

    wait_for(
        Duration::from_secs(10),
        || {
            format!(
                "the abandoned session and the orphan are still there: {:?}",
                super::files_in(&wharf.ingest_dir())
            )
        },
        || {
            let log = log_text(&wharf);
            log.contains("removed upload session")
                && log.contains(&abandoned_id)
                && log.contains("mono-orphan0")
        },
    );
    api.get(&abandoned).assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    let left = super::files_in(&wharf.ingest_dir());
    assert!(left.is_empty(), "partial files left: {left:?}");
    let log = log_text(&wharf);
    assert!(
        !log.contains("bad content"),
        "a fill was blamed on its upstream:\n{log}"
    );
    assert!(
        log.contains("upload purge removed"),
        "no purge summary:\n{log}"
    );
}
