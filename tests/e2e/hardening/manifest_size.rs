//! A manifest `PUT` that announces more than `registry.max_manifest_bytes` is refused from its head
//! alone: 413 at once, `Connection: close`, no `100 Continue`, and not a byte of the body read.

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
