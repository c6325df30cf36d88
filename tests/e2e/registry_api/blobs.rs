//! Blob reads: HEAD/GET headers and Range requests.

use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;
use crate::oci::{sha256_digest, Noise};

/// Proves: HEAD and GET carry Content-Length and Docker-Content-Digest; `Range` answers 206 with the
/// right Content-Range and bytes for a closed range, an open range and a suffix (`bytes=-N`); a range
/// past the end is 416; an unknown blob is 404 BLOB_UNKNOWN.
#[test]
fn blob_reads_and_ranges() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let data = Noise::bytes(11, 1000);
    let digest = api.push_blob("proto/range", &data);
    let path = format!("/v2/proto/range/blobs/{digest}");

    let head = api.head(&path);
    head.assert_status(200);
    assert_eq!(
        head.header("Content-Length"),
        Some("1000"),
        "{}",
        head.describe()
    );
    assert_eq!(
        head.header("Docker-Content-Digest"),
        Some(digest.as_str()),
        "{}",
        head.describe()
    );

    let full = api.get(&path);
    full.assert_status(200);
    assert_eq!(
        full.header("Docker-Content-Digest"),
        Some(digest.as_str()),
        "{}",
        full.describe()
    );
    assert!(full.body == data, "GET returned other bytes");

    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-100", 900, 999),
        ("bytes=0-0", 0, 0),
    ] {
        let r = api.request("GET", &path, &[("Range", range)], None);
        r.assert_status(206);
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {start}-{end}/1000").as_str()),
            "{range}: {}",
            r.describe()
        );
        assert_eq!(
            r.header("Content-Length"),
            Some((end - start + 1).to_string().as_str()),
            "{range}: {}",
            r.describe()
        );
        assert!(r.body == data[start..=end], "{range}: wrong bytes");
    }
    for range in ["bytes=1000-", "bytes=2000-3000"] {
        api.request("GET", &path, &[("Range", range)], None)
            .assert_status(416);
    }

    let unknown = sha256_digest(b"unknown");
    api.head(&format!("/v2/proto/range/blobs/{unknown}"))
        .assert_status(404);
    api.get(&format!("/v2/proto/range/blobs/{unknown}"))
        .assert_error(404, "BLOB_UNKNOWN");
}
