//! Test 5: `kill -9` in the middle of a large upload leaves no trace in `blobs/` and breaks nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Wharf, WharfOptions};
use crate::http::{path_of, raw, Api};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{digests_on_disk, sha256_reader, total_size, wharf_blob_path, Noise};
use crate::skopeo::Skopeo;

/// The body we start streaming; never held in memory (generated, hashed and sent in 1 MiB pieces).
const BODY_BYTES: u64 = 512 << 20;
/// Kill once wharf has this much of it on disk: well into the upload, far from its end.
const KILL_AT_BYTES: u64 = 64 << 20;
const SEED: u64 = 0xC0FFEE;
/// How long to wait for the ingest file to catch up once every byte is sent (server still writing).
const CATCH_UP: Duration = Duration::from_secs(20);

/// Proves: a blob whose upload was cut by a crash (SIGKILL while the PATCH body streams, no commit) does
/// not exist after restart (HEAD 404, no file under `blobs/`, `blobs/` exactly as before), committed
/// images still round-trip with skopeo, and the same content then uploads monolithically and reads back
/// with the right digest.
#[test]
fn kill9_during_large_upload_leaves_no_partial_blob() {
    let mut wharf = Wharf::start(WharfOptions::default());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 500));
    let skopeo = Skopeo::new();
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/crash/base:v1", wharf.host()),
    );
    let committed = digests_on_disk(&wharf.blobs_dir());

    let (digest, _) = sha256_reader(Noise::new(SEED).take(BODY_BYTES)).unwrap();

    let api = Api::new(wharf.base());
    let location = api.start_upload("crash/big");
    let (stream, sent) = stream_until_ingested(&wharf, &location);
    wharf.kill9();
    drop(stream);
    eprintln!("killed wharf after sending {} MiB", sent >> 20);

    wharf.start_again();
    let api = Api::new(wharf.base());
    api.head(&format!("/v2/crash/big/blobs/{digest}"))
        .assert_status(404);
    let path = wharf_blob_path(&wharf.blobs_dir(), &digest);
    assert!(
        !path.exists(),
        "a never-committed blob is under blobs/: {}",
        path.display()
    );
    assert_eq!(
        digests_on_disk(&wharf.blobs_dir()),
        committed,
        "blobs/ must be exactly what was committed before the crash"
    );

    let out = wharf.scratch("out");
    skopeo.copy(
        &format!("docker://{}/crash/base:v1", wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    let r = api.send_stream(
        "POST",
        &format!("/v2/crash/big/blobs/uploads/?digest={digest}"),
        BODY_BYTES,
        Noise::new(SEED).take(BODY_BYTES),
    );
    r.assert_status(201);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest.as_str()),
        "{}",
        r.describe()
    );
    let (status, got, len, _) = api.get_blob_hashed("crash/big", &digest);
    assert_eq!(
        (status, got.as_str(), len),
        (200, digest.as_str(), BODY_BYTES),
        "GET of the re-uploaded blob"
    );
    assert_eq!(
        std::fs::metadata(&path).map(|m| m.len()).ok(),
        Some(BODY_BYTES),
        "{}",
        path.display()
    );
}

/// Sends a PATCH declaring the whole body and streams it until `ingest/` holds `KILL_AT_BYTES`.
/// Returns the still-open connection (the kill must hit a live upload) and how many bytes went out.
fn stream_until_ingested(wharf: &Wharf, location: &str) -> (TcpStream, u64) {
    let path = path_of(location);
    let len = BODY_BYTES.to_string();
    let range = format!("0-{}", BODY_BYTES - 1);
    let mut stream = raw::connect(wharf.addr());
    let head = raw::head(
        wharf.addr(),
        "PATCH",
        &path,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", &len),
            ("Content-Range", &range),
        ],
    );
    stream.write_all(head.as_bytes()).expect("write PATCH head");

    let ingest = wharf.ingest_dir();
    let mut noise = Noise::new(SEED);
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    while sent < BODY_BYTES {
        if total_size(&ingest) >= KILL_AT_BYTES {
            return (stream, sent);
        }
        noise.fill(&mut buf);
        stream.write_all(&buf).unwrap_or_else(|e| {
            panic!(
                "PATCH body: connection failed after {} MiB sent: {e}",
                sent >> 20
            )
        });
        sent += buf.len() as u64;
    }
    // Everything is sent; the server may still be writing. Wait for the file to reach the mark.
    let end = Instant::now() + CATCH_UP;
    while total_size(&ingest) < KILL_AT_BYTES {
        assert!(
            Instant::now() < end,
            "sent all {} MiB but ingest/ ({}) holds only {} bytes: partial uploads must be written to ingest/ as they arrive",
            BODY_BYTES >> 20,
            ingest.display(),
            total_size(&ingest)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (stream, sent)
}
