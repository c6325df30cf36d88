//! The registry in process, without a socket: flows whose state spans requests or restarts.
//! The protocol as real clients see it is tested end to end in `tests/`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::*;
use wharf_model::config::RegistryConfig;
use wharf_model::digest::Digest;
use wharf_storage::meta::Meta;
use wharf_storage::store::FsStore;

fn open(dir: &std::path::Path, cfg: RegistryConfig) -> Registry {
    open_on(dir, cfg, Arc::new(FsStore::open(dir).unwrap()))
}

/// A registry over `store`, its metadata in `dir`.
fn open_on(
    dir: &std::path::Path,
    cfg: RegistryConfig,
    store: Arc<dyn wharf_storage::store::ContentStore>,
) -> Registry {
    let meta = Meta::open(&dir.join("meta.redb")).unwrap();
    let leases = wharf_storage::lease::Leases::new(meta.clone());
    let store = wharf_storage::lease::Touching::wrap(store, leases);
    // No default upstream: these tests are about the local registry alone.
    let mut full = wharf_model::config::Config::default();
    full.mirror.default_upstream = String::new();
    let policy = Policy::new(
        wharf_policy::plugin::Plugins::none(),
        store.clone(),
        meta.clone(),
        full.registry.max_manifest_bytes,
    );
    let mirror = crate::mirror::Mirror::new(&full, store.clone(), meta.clone(), policy).unwrap();
    Registry::new(store, meta, cfg, mirror)
}

async fn call(
    r: &Registry,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = r
        .handle(b.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn code(body: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

async fn push_blob(r: &Registry, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let (s, ..) = call(
        r,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[],
        data,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    d
}

#[tokio::test]
async fn an_upload_session_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"0123456789abcdef";
    let location = {
        let r = open(dir.path(), RegistryConfig::default());
        let (s, h, _) = call(&r, Method::POST, "/v2/a/blobs/uploads/", &[], b"").await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let loc = h["location"].to_str().unwrap().to_owned();
        let (s, h, _) = call(
            &r,
            Method::PATCH,
            &loc,
            &[("content-range", "0-7")],
            &data[..8],
        )
        .await;
        assert_eq!(
            (s, h["range"].to_str().unwrap()),
            (StatusCode::ACCEPTED, "0-7")
        );
        loc
    };
    let r = open(dir.path(), RegistryConfig::default());
    let (s, h, _) = call(&r, Method::GET, &location, &[], b"").await;
    assert_eq!(
        (s, h["range"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "0-7")
    );
    // Out of order is refused with where to continue from.
    let (s, h, _) = call(
        &r,
        Method::PATCH,
        &location,
        &[("content-range", "9-15")],
        &data[9..],
    )
    .await;
    assert_eq!(
        (s, h["range"].to_str().unwrap()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "0-7")
    );
    let d = Digest::sha256_of(data);
    let (s, ..) = call(
        &r,
        Method::PUT,
        &format!("{location}?digest={d}"),
        &[("content-range", "8-15")],
        &data[8..],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, body) = call(&r, Method::GET, &format!("/v2/a/blobs/{d}"), &[], b"").await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &data[..]));
    // The session is gone once committed.
    let (s, _, body) = call(&r, Method::GET, &location, &[], b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
}

#[tokio::test]
async fn orphaned_ingests_are_purged_and_sessions_kept() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), RegistryConfig::default());
    let (_, h, _) = call(&r, Method::POST, "/v2/a/blobs/uploads/", &[], b"").await;
    let loc = h["location"].to_str().unwrap().to_owned();
    call(&r, Method::PATCH, &loc, &[], b"abc").await;
    std::fs::write(dir.path().join("ingest/mono-deadbeef"), b"partial").unwrap();
    drop(r);
    let r = open(dir.path(), RegistryConfig::default());
    assert_eq!(r.purge_uploads().await.unwrap(), 1);
    let (s, h, _) = call(&r, Method::GET, &loc, &[], b"").await;
    assert_eq!(
        (s, h["range"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "0-2")
    );
    let expired = RegistryConfig {
        upload_ttl_secs: 0,
        ..RegistryConfig::default()
    };
    drop(r);
    let r = open(dir.path(), expired);
    assert_eq!(r.purge_uploads().await.unwrap(), 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn mount_links_without_copying_and_falls_back_to_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), RegistryConfig::default());
    let d = push_blob(&r, "src", b"layer").await;
    let (s, ..) = call(
        &r,
        Method::POST,
        &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, ..) = call(&r, Method::HEAD, &format!("/v2/dst/blobs/{d}"), &[], b"").await;
    assert_eq!(s, StatusCode::OK);
    let (s, ..) = call(
        &r,
        Method::POST,
        &format!("/v2/x/blobs/uploads/?mount={d}&from=nowhere"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, ..) = call(&r, Method::HEAD, &format!("/v2/x/blobs/{d}"), &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn image_manifest(config: &Digest, clen: usize, layer: &Digest, llen: usize) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{clen}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{llen}}}]}}"#,
        wharf_model::manifest::OCI_MANIFEST
    )
}

#[tokio::test]
async fn manifests_round_trip_and_honour_accept() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(
        dir.path(),
        RegistryConfig {
            delete_enabled: true,
            ..RegistryConfig::default()
        },
    );
    let c = push_blob(&r, "app", b"{}").await;
    let l = push_blob(&r, "app", b"layer").await;
    let m = image_manifest(&c, 2, &l, 5);
    let oci = wharf_model::manifest::OCI_MANIFEST;
    let (s, h, _) = call(
        &r,
        Method::PUT,
        "/v2/app/manifests/v1",
        &[("content-type", oci)],
        m.as_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let md = Digest::sha256_of(m.as_bytes());
    assert_eq!(h["docker-content-digest"].to_str().unwrap(), md.to_string());
    let (s, h, body) = call(
        &r,
        Method::GET,
        "/v2/app/manifests/v1",
        &[("accept", oci)],
        b"",
    )
    .await;
    assert_eq!((s, &body[..]), (StatusCode::OK, m.as_bytes()));
    assert_eq!(h["content-type"], oci);
    let docker_only = [("accept", wharf_model::manifest::DOCKER_MANIFEST)];
    let (s, _, body) = call(&r, Method::GET, "/v2/app/manifests/v1", &docker_only, b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
    let (s, ..) = call(
        &r,
        Method::GET,
        "/v2/app/manifests/v1",
        &[("accept", "*/*")],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A digest reference must match the body.
    let (s, _, body) = call(
        &r,
        Method::PUT,
        &format!("/v2/app/manifests/{c}"),
        &[],
        m.as_bytes(),
    )
    .await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    // The blobs must be in this repository, not just somewhere in the store.
    let (s, _, body) = call(&r, Method::PUT, "/v2/other/manifests/v1", &[], m.as_bytes()).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_BLOB_UNKNOWN")
    );
    let (s, ..) = call(
        &r,
        Method::DELETE,
        &format!("/v2/app/manifests/{md}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, ..) = call(&r, Method::GET, "/v2/app/manifests/v1", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deletes_are_refused_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), RegistryConfig::default());
    let d = push_blob(&r, "a", b"x").await;
    let (s, _, body) = call(&r, Method::DELETE, &format!("/v2/a/blobs/{d}"), &[], b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
    );
    let msg = String::from_utf8_lossy(&body).into_owned();
    assert!(msg.contains("delete_enabled"), "{msg}");
}

#[tokio::test]
async fn refusing_a_request_with_a_body_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), RegistryConfig::default());
    // An unknown upload refused before its body is read: hyper will close the connection, so the
    // answer must say so, or a client reuses a connection that is going away.
    let (s, h, _) = call(
        &r,
        Method::PATCH,
        "/v2/a/blobs/uploads/0123456789abcdef0123456789abcdef",
        &[("content-length", "3")],
        b"abc",
    )
    .await;
    assert_eq!(
        (s, h.get("connection").map(|v| v.to_str().unwrap())),
        (StatusCode::NOT_FOUND, Some("close"))
    );
    // Bodiless refusals keep the connection.
    let (s, h, _) = call(&r, Method::GET, "/v2/a/manifests/nope", &[], b"").await;
    assert_eq!((s, h.get("connection")), (StatusCode::NOT_FOUND, None));
}

/// Proves (issue 26): over the S3 store with no local cache, a blob is served as a ranged GET
/// streams in; and when the object store is out of reach at an upload's last PUT, the answer is
/// 503 with a Retry-After, nothing is linked, and the session stays, so the client's retried PUT
/// commits it once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_object_store_missed_commits_on_retry_and_is_served_streamed() {
    let mut garage = tokio::task::spawn_blocking(wharf_test_servers::Garage::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = wharf_storage::store::S3Settings {
        endpoint: garage.endpoint(),
        bucket: garage.bucket().into(),
        region: garage.region().into(),
        prefix: String::new(),
        access_key_id: garage.access_key_id().into(),
        secret_access_key: garage.secret_access_key().into(),
        cache_max_bytes: 0,
    };
    let store = wharf_storage::store::S3Store::open(settings, &dir.path().join("local"))
        .await
        .unwrap();
    let r = open_on(dir.path(), RegistryConfig::default(), Arc::new(store));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = Digest::sha256_of(&data);
    let (s, h, _) = call(&r, Method::POST, "/v2/a/blobs/uploads/", &[], b"").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let loc = h["location"].to_str().unwrap().to_owned();
    let (s, ..) = call(&r, Method::PATCH, &loc, &[], &data).await;
    assert_eq!(s, StatusCode::ACCEPTED);

    tokio::task::block_in_place(|| garage.stop());
    let put = format!("{loc}?digest={d}");
    let (s, h, body) = call(&r, Method::PUT, &put, &[], b"").await;
    assert_eq!(
        (s, code(&body).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );
    assert!(h.contains_key("retry-after"), "{h:?}");
    let (s, ..) = call(&r, Method::HEAD, &format!("/v2/a/blobs/{d}"), &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "linked without its object");

    tokio::task::block_in_place(|| garage.start_again());
    let (s, ..) = call(&r, Method::PUT, &put, &[], b"").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, body) = call(&r, Method::GET, &format!("/v2/a/blobs/{d}"), &[], b"").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == data[..], "served whole");
    let (s, _, body) = call(
        &r,
        Method::GET,
        &format!("/v2/a/blobs/{d}"),
        &[("range", "bytes=100-199999")],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert!(body == data[100..200_000], "served by range");
}
