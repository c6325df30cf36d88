//! Peers that stall: request bodies that stop arriving, clients that stop reading, connections that
//! never send a request head. Each must end within its configured timeout, free what it held, and
//! leave an upload session resumable.

use std::io::Read;
use std::time::Duration;

use crate::harness::WharfOptions;
use crate::http::raw;
use crate::oci::{sha256_digest, Noise};

use super::{files_in, log_text, open_fds, start, start_with, wait_for, Peer};

/// `server.body_idle_secs` in these tests; answers are awaited for a few times as long.
const BODY_IDLE: u64 = 2;
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Proves: a `PATCH`, a monolithic `POST` and a manifest `PUT` that declare a length and then stop
/// sending each get an answer within the body idle timeout (408 for the uploads, naming
/// `server.body_idle_secs`); the session keeps the bytes it received, so the client resumes from
/// the `Range` it is told and completes the blob; the failed monolithic upload leaves no partial file.
#[test]
fn stalled_request_bodies_end_in_time_and_sessions_resume() {
    let (wharf, api) = start(&[&format!("body_idle_secs = {BODY_IDLE}")], &[]);
    let data = Noise::bytes(13, 1000);
    let digest = sha256_digest(&data);

    // A PATCH that sends 300 of its 1000 bytes, then nothing.
    let loc = api.start_upload("stall/patch");
    let mut patch = Peer::connect(wharf.addr());
    patch.head(
        "PATCH",
        &crate::http::path_of(&loc),
        &[
            ("Content-Length", "1000"),
            ("Content-Type", "application/octet-stream"),
        ],
    );
    patch.send(&data[..300]);
    // A monolithic POST that sends 10 of 1000 bytes.
    let mut post = Peer::connect(wharf.addr());
    post.head(
        "POST",
        &format!("/v2/stall/mono/blobs/uploads/?digest={digest}"),
        &[("Content-Length", "1000")],
    );
    post.send(&data[..10]);
    // A manifest PUT that declares 500 bytes and sends none.
    let mut put = Peer::connect(wharf.addr());
    put.head(
        "PUT",
        "/v2/stall/manifest/manifests/v1",
        &[
            ("Content-Length", "500"),
            ("Content-Type", crate::oci::OCI_MANIFEST),
        ],
    );

    let a = patch
        .answer(ANSWER_WITHIN)
        .unwrap_or_else(|e| panic!("stalled PATCH (body_idle_secs = {BODY_IDLE}): {e}"));
    assert_eq!(a.status, 408, "stalled PATCH: {a:?}");
    assert!(
        a.body.contains("server.body_idle_secs"),
        "stalled PATCH: {a:?}"
    );
    assert_eq!(a.header("Range"), Some("0-299"), "stalled PATCH: {a:?}");
    let a = post
        .answer(ANSWER_WITHIN)
        .unwrap_or_else(|e| panic!("stalled monolithic POST: {e}"));
    assert_eq!(a.status, 408, "stalled monolithic POST: {a:?}");
    assert!(a.body.contains("server.body_idle_secs"), "{a:?}");
    let a = put
        .answer(ANSWER_WITHIN)
        .unwrap_or_else(|e| panic!("manifest PUT that sends no body: {e}"));
    assert_eq!(
        a.status, 408,
        "a manifest PUT whose body stopped arriving: {a:?}"
    );
    assert!(a.body.contains("server.body_idle_secs"), "{a:?}");

    // The session resumes where it stopped.
    let status = api.get(&loc);
    status.assert_status(204);
    assert_eq!(
        status.header("Range"),
        Some("0-299"),
        "{}",
        status.describe()
    );
    api.request(
        "PATCH",
        &loc,
        &[
            ("Content-Range", "300-999"),
            ("Content-Type", "application/octet-stream"),
        ],
        Some(&data[300..]),
    )
    .assert_status(202);
    api.request(
        "PUT",
        &crate::http::with_query(&loc, &format!("digest={digest}")),
        &[],
        None,
    )
    .assert_status(201);
    api.assert_blob_intact("stall/patch", &digest, 1000);
    let left = files_in(&wharf.ingest_dir());
    assert!(left.is_empty(), "partial writes left behind: {left:?}");
}

/// Proves: clients that stop reading a large blob are dropped after `server.write_idle_secs`, their
/// connections and descriptors freed (counted in /proc/PID/fd), with a log line naming the key; a
/// client that reads meanwhile gets the whole blob.
#[test]
fn clients_that_stop_reading_are_dropped_and_their_descriptors_freed() {
    const CLIENTS: usize = 20;
    const SIZE: usize = 32 << 20;
    let (wharf, api) = start(&["write_idle_secs = 2"], &[]);
    let data = Noise::bytes(21, SIZE);
    let digest = api.push_blob("stall/big", &data);
    let before = open_fds(&wharf);
    let target = format!("/v2/stall/big/blobs/{digest}");
    let mut idle: Vec<Peer> = (0..CLIENTS)
        .map(|_| {
            let mut p = Peer::connect(wharf.addr());
            p.head("GET", &target, &[]);
            p
        })
        .collect();
    // Each reads the start of its answer, then stops reading.
    for p in &mut idle {
        let mut first = [0u8; 4096];
        p.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        p.stream
            .read_exact(&mut first)
            .expect("the start of the blob");
    }
    let busy = open_fds(&wharf);
    assert!(
        busy >= before + CLIENTS,
        "{CLIENTS} stalled downloads should hold at least a socket each: {before} fds before, {busy} now"
    );
    // Meanwhile a client that reads gets everything.
    api.assert_blob_intact("stall/big", &digest, SIZE as u64);
    wait_for(
        Duration::from_secs(20),
        || {
            format!(
                "wharf still has {} fds open ({before} before {CLIENTS} clients stopped reading); \
                 clients that read nothing for server.write_idle_secs = 2 must be dropped",
                open_fds(&wharf)
            )
        },
        || open_fds(&wharf) <= before + 2,
    );
    // Log lines are written in batches: give the line a moment to land.
    wait_for(
        Duration::from_secs(10),
        || {
            format!(
                "dropping a client that stopped reading must say which key to raise:\n{}",
                log_text(&wharf)
            )
        },
        || log_text(&wharf).contains("server.write_idle_secs"),
    );
    drop(idle);
}

/// Proves: a connection that never completes its request head is closed after
/// `server.header_timeout_secs`, and that is logged at debug level.
#[test]
fn connections_without_a_request_head_are_closed_and_logged_at_debug() {
    let options = WharfOptions {
        env: vec![("WHARF_LOG".into(), "info,wharf=debug".into())],
        ..Default::default()
    };
    let (wharf, _api) = start_with(options, &["header_timeout_secs = 1"], &[]);
    let mut p = raw::connect(wharf.addr());
    std::io::Write::write_all(&mut p, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let closed = p.read_to_end(&mut buf);
    assert!(
        closed.is_ok(),
        "a connection with half a request head was not closed within 10 s (header_timeout_secs = 1): \
         {closed:?}"
    );
    wait_for(
        Duration::from_secs(5),
        || {
            format!(
                "no debug line naming server.header_timeout_secs:\n{}",
                log_text(&wharf)
            )
        },
        || {
            log_text(&wharf)
                .lines()
                .any(|l| l.contains("DEBUG") && l.contains("server.header_timeout_secs"))
        },
    );
}
