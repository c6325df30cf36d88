//! Blob uploads: chunked sessions, monolithic POST, cancel, cross-repo mount.

use crate::harness::{Wharf, WharfOptions};
use crate::http::{with_query, Api};
use crate::oci::{digests_on_disk, sha256_digest, Noise};

const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

/// Proves: POST opens a session (202, Location, Docker-Upload-UUID); each PATCH answers 202 with the
/// new Range; GET reports 204 with that Range; PUT ?digest= with the last piece commits (201,
/// Location, Docker-Content-Digest); the bytes read back right and the session is then gone.
#[test]
fn chunked_upload_with_status() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/chunked";
    let data = Noise::bytes(12, 300_123);
    let digest = sha256_digest(&data);

    let r = api.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], None);
    r.assert_status(202);
    let uuid = r.need_header("Docker-Upload-UUID").to_owned();
    let first = r.need_header("Location").to_owned();
    let mut loc = first.clone();

    for (start, end) in [
        (0usize, 100_000usize),
        (100_000, 250_000),
        (250_000, 300_000),
    ] {
        let range = format!("{start}-{}", end - 1);
        let r = api.request(
            "PATCH",
            &loc,
            &[OCTETS, ("Content-Range", &range)],
            Some(&data[start..end]),
        );
        r.assert_status(202);
        assert_eq!(
            r.header("Range"),
            Some(format!("0-{}", end - 1).as_str()),
            "{}",
            r.describe()
        );
        assert_eq!(
            r.header("Docker-Upload-UUID"),
            Some(uuid.as_str()),
            "{}",
            r.describe()
        );
        loc = r.need_header("Location").to_owned();

        let status = api.get(&loc);
        status.assert_status(204);
        assert_eq!(
            status.header("Range"),
            Some(format!("0-{}", end - 1).as_str()),
            "{}",
            status.describe()
        );
    }

    let r = api.request(
        "PUT",
        &with_query(&loc, &format!("digest={digest}")),
        &[OCTETS],
        Some(&data[300_000..]),
    );
    r.assert_status(201);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest.as_str()),
        "{}",
        r.describe()
    );
    r.need_header("Location");
    api.assert_blob_intact(repo, &digest, data.len() as u64);
    api.get(&loc).assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    api.get(&first).assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// Proves: a monolithic `POST ?digest=` with the body is 201 in one request (also for an empty
/// blob), and `DELETE` on a session cancels it (204, then 404 BLOB_UPLOAD_UNKNOWN).
#[test]
fn monolithic_upload_and_cancel() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/mono";
    for data in [Noise::bytes(13, 70_000), Vec::new()] {
        let digest = sha256_digest(&data);
        let r = api.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[OCTETS],
            Some(&data),
        );
        r.assert_status(201);
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(digest.as_str()),
            "{}",
            r.describe()
        );
        r.need_header("Location");
        api.assert_blob_intact(repo, &digest, data.len() as u64);
    }

    let loc = api.start_upload(repo);
    let r = api.request(
        "PATCH",
        &loc,
        &[OCTETS, ("Content-Range", "0-99")],
        Some(&Noise::bytes(14, 100)),
    );
    r.assert_status(202);
    let loc = r.need_header("Location").to_owned();
    api.delete(&loc).assert_status(204);
    api.get(&loc).assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// Proves: `POST ?mount=&from=` links a blob the `from` repo has (201, no upload, no new file), and
/// opens an ordinary session (202) when `from` lacks it, even though the blob is stored for another
/// repo: mounting must not leak content across repositories.
#[test]
fn cross_repo_mount() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let data = Noise::bytes(15, 50_000);
    let digest = api.push_blob("mount/src", &data);
    api.push_blob("mount/lacks", b"some other blob");
    let files = digests_on_disk(&wharf.blobs_dir());

    let r = api.request(
        "POST",
        &format!("/v2/mount/dst/blobs/uploads/?mount={digest}&from=mount/src"),
        &[],
        None,
    );
    r.assert_status(201);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(digest.as_str()),
        "{}",
        r.describe()
    );
    r.need_header("Location");
    api.assert_blob_intact("mount/dst", &digest, data.len() as u64);
    assert_eq!(
        digests_on_disk(&wharf.blobs_dir()),
        files,
        "a mount must not copy the blob"
    );

    for from in ["mount/lacks", "mount/does-not-exist"] {
        let repo = format!("mount/via-{}", from.rsplit('/').next().unwrap());
        let r = api.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            &[],
            None,
        );
        r.assert_status(202);
        let loc = r.need_header("Location").to_owned();
        api.head(&format!("/v2/{repo}/blobs/{digest}"))
            .assert_status(404);
        // The 202 is a real session: uploading the bytes completes it.
        api.request(
            "PUT",
            &with_query(&loc, &format!("digest={digest}")),
            &[OCTETS],
            Some(&data),
        )
        .assert_status(201);
        api.assert_blob_intact(&repo, &digest, data.len() as u64);
    }
    assert_eq!(
        digests_on_disk(&wharf.blobs_dir()),
        files,
        "the same bytes uploaded again are stored once"
    );
}
