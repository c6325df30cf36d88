//! A manifest `PUT` that announces more than `registry.max_manifest_bytes` is refused from its head
//! alone: 413 at once, `Connection: close`, no `100 Continue`, and not a byte of the body read. One
//! that announces no length (chunked) is refused as soon as it passes the limit.

use std::io::Write as _;
use std::time::Duration;

use crate::harness::WharfOptions;

use super::{start_with, Peer};

const LIMIT: u64 = 1000;
const ANNOUNCED: &str = "5000000";

#[test]
fn an_oversized_manifest_put_is_refused_before_its_body() {
    let options = WharfOptions {
        max_manifest_bytes: Some(LIMIT),
        ..Default::default()
    };
    let (wharf, _api) = start_with(options, &[], &[]);
    let ct = ("Content-Type", crate::oci::OCI_MANIFEST);
    for expect in [true, false] {
        let mut p = Peer::connect(wharf.addr());
        let mut headers = vec![ct, ("Content-Length", ANNOUNCED)];
        if expect {
            headers.push(("Expect", "100-continue"));
        }
        p.head("PUT", "/v2/big/app/manifests/v1", &headers);
        // Not a byte of the body is sent: the answer must come from the head alone.
        let a = p.answer(Duration::from_secs(5)).unwrap_or_else(|e| {
            panic!(
                "PUT of a manifest announced as {ANNOUNCED} bytes (limit {LIMIT}, Expect: \
                 100-continue {expect}): {e}"
            )
        });
        assert_eq!(a.status, 413, "expect={expect}: {a:?}");
        assert!(
            !a.head.contains("100 Continue"),
            "an oversized manifest must not be invited with 100 Continue: {a:?}"
        );
        assert_eq!(
            a.header("Connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close"),
            "{a:?}"
        );
        assert!(
            a.body.contains("registry.max_manifest_bytes"),
            "the refusal names the key: {a:?}"
        );
    }
}

/// The limit of the chunked tests: a manifest as large as clients push.
const CHUNKED_LIMIT: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;

/// Whether an answer is waiting to be read, without taking it.
fn answer_waiting(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).expect("set_nonblocking");
    let mut byte = [0u8; 1];
    let waiting = matches!(stream.peek(&mut byte), Ok(n) if n > 0);
    stream.set_nonblocking(false).expect("set_nonblocking");
    waiting
}

/// Sends one chunk of `len` spaces; false once the server no longer takes them.
fn send_chunk(p: &mut Peer, len: usize) -> bool {
    let mut bytes = format!("{len:x}\r\n").into_bytes();
    bytes.resize(bytes.len() + len, b' ');
    bytes.extend_from_slice(b"\r\n");
    p.stream.write_all(&bytes).is_ok()
}

/// Proves: a chunked manifest `PUT` (no length announced) over the limit is answered 413 as soon as
/// it passes the limit, not after wharf read on (it used to read 64 MiB more): a client sending
/// limit + 1 MiB sees the 413, with `Connection: close`, after about the limit's bytes, while it is
/// still sending; and the connection ends.
#[test]
fn a_chunked_manifest_over_the_limit_is_refused_as_it_passes_it() {
    let options = WharfOptions {
        max_manifest_bytes: Some(CHUNKED_LIMIT as u64),
        ..Default::default()
    };
    let (wharf, _api) = start_with(options, &[], &[]);
    let total = CHUNKED_LIMIT + (1 << 20);
    let mut p = Peer::connect(wharf.addr());
    p.head(
        "PUT",
        "/v2/big/app/manifests/v1",
        &[
            ("Content-Type", crate::oci::OCI_MANIFEST),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    let mut sent = 0;
    let answered_after = loop {
        if answer_waiting(&p.stream) {
            break Some(sent);
        }
        if sent >= total || !send_chunk(&mut p, CHUNK) {
            break None;
        }
        sent += CHUNK;
        // Past the limit, slowly: wharf has time to answer before the body would end.
        std::thread::sleep(Duration::from_millis(if sent > CHUNKED_LIMIT {
            100
        } else {
            2
        }));
    };
    let Some(answered_after) = answered_after else {
        let _ = p.stream.write_all(b"0\r\n\r\n");
        let a = p.answer(Duration::from_secs(10));
        panic!(
            "a chunked manifest PUT of {total} bytes (limit {CHUNKED_LIMIT}) was answered only \
             after the client had sent {sent} bytes, all of it: wharf reads past the limit before \
             answering; the answer: {a:?}"
        );
    };
    assert!(
        answered_after <= CHUNKED_LIMIT + 512 * 1024,
        "the 413 came after the client had sent {answered_after} bytes, far past the limit of \
         {CHUNKED_LIMIT}"
    );
    let a = p
        .answer(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the answer to a chunked manifest over the limit: {e}"));
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(
        a.header("Connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "{a:?}"
    );
    assert!(a.body.contains("registry.max_manifest_bytes"), "{a:?}");
}

/// Proves: a chunked manifest `PUT` that passes the limit and then goes quiet (no more chunks, no
/// last chunk) gets 413 at once, not 408 once `body_idle_secs` ran out.
#[test]
fn a_chunked_manifest_that_goes_quiet_past_the_limit_gets_413_not_408() {
    const IDLE_SECS: u64 = 3;
    let options = WharfOptions {
        max_manifest_bytes: Some(CHUNKED_LIMIT as u64),
        ..Default::default()
    };
    let idle = format!("body_idle_secs = {IDLE_SECS}");
    let (wharf, _api) = start_with(options, &[&idle], &[]);
    let mut p = Peer::connect(wharf.addr());
    p.head(
        "PUT",
        "/v2/big/app/manifests/v1",
        &[
            ("Content-Type", crate::oci::OCI_MANIFEST),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    let mut sent = 0;
    while sent <= CHUNKED_LIMIT {
        assert!(
            send_chunk(&mut p, CHUNK),
            "wharf stopped taking the body after {sent} bytes, before the limit"
        );
        sent += CHUNK;
    }
    let began = std::time::Instant::now();
    let a = p
        .answer(Duration::from_secs(IDLE_SECS * 3))
        .unwrap_or_else(|e| panic!("a chunked manifest that went quiet past the limit: {e}"));
    assert_eq!(
        a.status, 413,
        "a client that sent {sent} bytes (limit {CHUNKED_LIMIT}) and went quiet must hear that the \
         manifest is too large, not that it timed out: {a:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(IDLE_SECS),
        "the 413 waited {:?}, as long as body_idle_secs",
        began.elapsed()
    );
}
