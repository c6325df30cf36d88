//! wharf on the shared backends (content on Garage, metadata on Postgres) when they fail under it,
//! and two wharfs on one database. The rest of the suite runs on these backends too
//! (`WHARF_E2E_BACKENDS=shared`, the second pass of `tests/run.sh`); these tests are about the
//! backends themselves, so they always start them.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::fixtures::SmallImage;
use crate::harness::{output_text, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::http::{path_of, raw, Api};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::{sha256_reader, total_size, Noise};
use crate::skopeo::Skopeo;

/// The content keys in the bucket (`blobs/sha256/<hex>` → `sha256:<hex>`).
fn bucket_digests(wharf: &Wharf) -> BTreeSet<String> {
    assert!(wharf.shared().is_some(), "shared backends");
    wharf.stored_digests()
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {within:?}");
}

/// Garage stops in the middle of a push: the push fails with 503 and a `Retry-After` naming the object
/// store, nothing of the new image is visible (no tag, no manifest, no blob link), the image pushed
/// before still reads back, and once Garage is back the same push succeeds and verifies.
#[test]
fn garage_stopped_mid_push_answers_503_and_the_retry_succeeds() {
    let mut wharf = Wharf::start_shared(WharfOptions::default());
    let api = Api::new(wharf.base());
    let before = SmallImage::push(&api, "shared/app", "v1", 1);

    // The next image's blobs go up while the store is down.
    wharf.shared_mut().unwrap().garage.stop();
    let layer = Noise::bytes(77, 300_000);
    let digest = crate::oci::sha256_digest(&layer);
    let r = api.request(
        "POST",
        &format!("/v2/shared/app/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(&layer),
    );
    r.assert_status(503);
    assert!(
        r.header("Retry-After").is_some(),
        "a 503 for an unreachable store carries Retry-After: {}",
        r.describe()
    );
    let text = r.describe();
    assert!(
        text.contains("object store") && text.contains("retry"),
        "the 503 says the object store is unavailable and to retry: {text}"
    );
    api.head(&format!("/v2/shared/app/blobs/{digest}"))
        .assert_status(404);
    // A manifest naming the blob that did not make it is refused: no tag points at missing content.
    let (config, _) = crate::fixtures::empty_config();
    let layer_desc = crate::layout::Desc {
        media_type: crate::oci::OCI_LAYER_TAR.into(),
        digest: digest.clone(),
        size: layer.len() as u64,
    };
    let manifest = crate::fixtures::image_manifest(&config, &[layer_desc], None);
    let r = api.put_manifest("shared/app", "v2", crate::oci::OCI_MANIFEST, &manifest);
    assert!(
        r.status == 400 || r.status == 404 || r.status == 503,
        "a manifest over a blob that never arrived is refused: {}",
        r.describe()
    );
    api.get_manifest("shared/app", "v2").assert_status(404);

    wharf.shared_mut().unwrap().garage.start_again();
    wait_until("the store answers again", Duration::from_secs(30), || {
        api.request(
            "POST",
            &format!("/v2/shared/app/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            Some(&layer),
        )
        .status
            == 201
    });
    let after = SmallImage::push(&api, "shared/app", "v3", 3);
    before.assert_intact(&api);
    after.assert_intact(&api);
    assert!(bucket_digests(&wharf).contains(&digest));
}

/// Postgres restarts while clients pull: requests during the outage answer 503 (never 500, never a
/// wrong answer), and every one succeeds again once it is back, without restarting wharf.
#[test]
fn postgres_restarted_under_load_answers_503_then_serves_again() {
    let mut wharf = Wharf::start_shared(WharfOptions::default());
    let api = Api::new(wharf.base());
    let images: Vec<SmallImage> = (0..4)
        .map(|i| SmallImage::push(&api, "shared/load", &format!("t{i}"), 10 + i))
        .collect();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (base, stop) = (wharf.base(), stop.clone());
            let tags: Vec<(String, String)> = images
                .iter()
                .map(|i| (i.tag.clone(), i.manifest_digest.clone()))
                .collect();
            std::thread::spawn(move || {
                let api = Api::new(base);
                let mut seen = std::collections::BTreeMap::<u16, usize>::new();
                let mut n = w;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (tag, digest) = &tags[n % tags.len()];
                    n += 1;
                    let r = api.get_manifest("shared/load", tag);
                    if r.status == 200 {
                        assert_eq!(
                            r.header("Docker-Content-Digest"),
                            Some(digest.as_str()),
                            "a tag answered with another image during the restart"
                        );
                    } else {
                        assert_eq!(
                            r.status,
                            503,
                            "only 503 while the database is away: {}",
                            r.describe()
                        );
                        assert!(r.header("Retry-After").is_some(), "{}", r.describe());
                    }
                    *seen.entry(r.status).or_default() += 1;
                }
                seen
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    wharf.shared_mut().unwrap().postgres.stop();
    std::thread::sleep(Duration::from_secs(2));
    wharf.shared_mut().unwrap().postgres.start_again();
    // Back: every image reads whole again, a push works, and nothing in between was a 500.
    wait_until("pulls succeed again", Duration::from_secs(30), || {
        api.get_manifest("shared/load", "t0").status == 200
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = std::collections::BTreeMap::<u16, usize>::new();
    for w in workers {
        for (s, n) in w.join().expect("a puller failed") {
            *total.entry(s).or_default() += n;
        }
    }
    eprintln!("answers during the restart: {total:?}");
    assert!(total.get(&200).copied().unwrap_or(0) > 0);
    for i in &images {
        i.assert_intact(&api);
    }
    SmallImage::push(&api, "shared/load", "after", 99).assert_intact(&api);
}

/// `kill -9` in the middle of a large upload with the content on S3: after the restart the blob is
/// neither in the bucket nor linked, the images pushed before read back whole, and the same content
/// then uploads and reads back.
#[test]
fn kill9_during_upload_leaves_nothing_in_the_bucket() {
    const BODY: u64 = 96 << 20;
    const KILL_AT: u64 = 16 << 20;
    let mut wharf = Wharf::start_shared(WharfOptions::default());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 501));
    let skopeo = Skopeo::new();
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/crash/base:v1", wharf.host()),
    );
    let committed = bucket_digests(&wharf);
    let (digest, _) = sha256_reader(Noise::new(5).take(BODY)).unwrap();

    let api = Api::new(wharf.base());
    let location = api.start_upload("crash/big");
    let mut stream = raw::connect(wharf.addr());
    let len = BODY.to_string();
    let range = format!("0-{}", BODY - 1);
    let head = raw::head(
        wharf.addr(),
        "PATCH",
        &path_of(&location),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", &len),
            ("Content-Range", &range),
        ],
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut noise = Noise::new(5);
    let mut buf = vec![0u8; 1 << 20];
    while total_size(&wharf.ingest_dir()) < KILL_AT {
        noise.fill(&mut buf);
        stream.write_all(&buf).expect("PATCH body");
    }
    wharf.kill9();
    drop(stream);

    wharf.start_again();
    let api = Api::new(wharf.base());
    api.head(&format!("/v2/crash/big/blobs/{digest}"))
        .assert_status(404);
    assert_eq!(
        bucket_digests(&wharf),
        committed,
        "the bucket holds exactly what was committed before the crash"
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
        BODY,
        Noise::new(5).take(BODY),
    );
    r.assert_status(201);
    let (status, got, n, _) = api.get_blob_hashed("crash/big", &digest);
    assert_eq!((status, got.as_str(), n), (200, digest.as_str(), BODY));
    assert!(bucket_digests(&wharf).contains(&digest));
}

/// `kill -9` while the mirror fills a large blob from its upstream, with the content on S3: after
/// the restart the blob is not in the bucket and not linked; the next pull fetches it whole.
#[test]
fn kill9_during_fill_leaves_nothing_in_the_bucket_and_the_next_pull_works() {
    let upstream = DistRegistry::start();
    let layout = write_layout(
        &tempfile::tempdir().unwrap().keep(),
        &LayoutSpec::small("v1", 502).with_large_layer(64 << 20),
    );
    let skopeo = Skopeo::new();
    skopeo.copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/lib/big:v1", upstream.host()),
    );
    let mut wharf = Wharf::start_shared(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![UpstreamSpec::http("upstream.test", upstream.addr())],
            ..Default::default()
        },
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let manifest = api.get_manifest("upstream.test/lib/big", "v1");
    manifest.assert_status(200);
    let big = layout
        .all_digests()
        .into_iter()
        .max_by_key(|d| {
            std::fs::metadata(layout.blob_path(d))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .unwrap();
    // Start pulling the large layer, read a little, then kill wharf mid-fill.
    let mut stream = raw::connect(wharf.addr());
    let head = raw::head(
        wharf.addr(),
        "GET",
        &format!("/v2/upstream.test/lib/big/blobs/{big}"),
        &[],
    );
    stream.write_all(head.as_bytes()).unwrap();
    wait_until("the fill to be under way", Duration::from_secs(30), || {
        total_size(&wharf.ingest_dir()) > 1 << 20
    });
    wharf.kill9();
    drop(stream);
    wharf.start_again();
    assert!(
        !bucket_digests(&wharf).contains(&big),
        "a fill cut by a crash must not be in the bucket"
    );
    let api = Api::new(wharf.base());
    let (status, got, _, _) = api.get_blob_hashed("upstream.test/lib/big", &big);
    assert_eq!((status, got.as_str()), (200, big.as_str()));
    wait_until(
        "the filled blob reaches the bucket",
        Duration::from_secs(30),
        || bucket_digests(&wharf).contains(&big),
    );
}

/// Two wharfs on one Postgres and one bucket: an image pushed through one is pulled through the
/// other, and re-pointing the tag through the first is seen by the second at once (its tag cache is
/// invalidated by the database's notification), never the stale image.
#[test]
fn a_second_wharf_on_the_same_database_sees_a_moved_tag_at_once() {
    let a = Wharf::start_shared(WharfOptions::default());
    let b = Wharf::start_sharing(WharfOptions::default(), &a);
    let (api_a, api_b) = (Api::new(a.base()), Api::new(b.base()));
    let v1 = SmallImage::push(&api_a, "shared/twice", "latest", 21);
    v1.assert_intact(&api_b);
    // B has the tag cached now; A moves it.
    let v2 = SmallImage::push(&api_a, "shared/twice", "latest", 22);
    wait_until("B serves the moved tag", Duration::from_secs(2), || {
        api_b
            .get_manifest("shared/twice", "latest")
            .header("Docker-Content-Digest")
            == Some(v2.manifest_digest.as_str())
    });
    v2.assert_intact(&api_b);
}

/// Runs `wharf serve` and `wharf check-config` on `wharf`'s config as `edit` changes it, with `env`
/// over the backends' secrets: both must refuse, naming every one of `words`.
fn assert_refused(
    wharf: &Wharf,
    what: &str,
    edit: &dyn Fn(String) -> String,
    env: &[(&str, &str)],
    words: &[&str],
) {
    let text = std::fs::read_to_string(wharf.config_path()).unwrap();
    let config = wharf
        .scratch("refusals")
        .join(format!("{}.toml", what.replace(' ', "-")));
    std::fs::write(&config, edit(text)).unwrap();
    for cmd in ["serve", "check-config"] {
        let mut c = std::process::Command::new(crate::harness::wharf_bin());
        c.arg(cmd).arg("--config").arg(&config);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WHARF_") && key != "WHARF_LOG" {
                c.env_remove(key);
            }
        }
        c.envs(wharf.backend_env());
        c.envs(env.iter().map(|(k, v)| (*k, *v)));
        let child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = crate::harness::wait_output_within(child, Duration::from_secs(60))
            .unwrap_or_else(|| {
                panic!("{what}: wharf {cmd} neither started nor refused within 60 s")
            });
        let text = output_text(&out);
        assert!(
            !out.status.success(),
            "{what}: wharf {cmd} succeeded:\n{text}"
        );
        for w in words {
            assert!(text.contains(w), "{what}: wharf {cmd} names {w:?}:\n{text}");
        }
    }
}

/// Backends that cannot be used stop wharf at start (and fail `check-config`) with one line naming
/// them and what to change: down, wrong credentials, no bucket, a schema newer than this wharf.
#[test]
fn start_refuses_unreachable_or_wrong_backends_naming_them() {
    let mut wharf = Wharf::start_shared(WharfOptions::default());
    wharf.stop();
    let same = |t: String| t;
    assert_refused(
        &wharf,
        "wrong s3 secret",
        &same,
        &[(
            "E2E_S3_SECRET",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )],
        &["refused", "secret_access_key"],
    );
    assert_refused(
        &wharf,
        "no such bucket",
        &|t: String| t.replace("bucket = \"wharf\"", "bucket = \"no-such-bucket\""),
        &[],
        &["no-such-bucket", "storage.s3.bucket"],
    );
    assert_refused(
        &wharf,
        "wrong pg password",
        &same,
        &[("E2E_PG_PASSWORD", "not-the-password")],
        &[
            "refused the login (password authentication failed for user \"wharf\")",
            "metadata.password_env",
        ],
    );
    // The database's certificate is from a private CA: verify-full without it is a TLS refusal
    // saying where to name the CA.
    assert_refused(
        &wharf,
        "verify-full without the CA",
        &|t: String| t.replace("/wharf\"", "/wharf?sslmode=verify-full\""),
        &[],
        &["TLS handshake", "UnknownIssuer", "sslrootcert"],
    );
    // Naming the CA makes the same check pass.
    let ca = wharf
        .shared()
        .unwrap()
        .postgres
        .ca_path()
        .unwrap()
        .to_owned();
    let text = std::fs::read_to_string(wharf.config_path()).unwrap();
    let verified = wharf.scratch("refusals").join("verify-full.toml");
    std::fs::write(
        &verified,
        text.replace(
            "/wharf\"",
            &format!("/wharf?sslmode=verify-full&sslrootcert={}\"", ca.display()),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::harness::wharf_bin())
        .arg("check-config")
        .arg(&verified)
        .envs(wharf.backend_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let version = wharf
        .shared()
        .unwrap()
        .postgres
        .psql("SELECT version FROM wharf_schema");
    wharf
        .shared()
        .unwrap()
        .postgres
        .psql("UPDATE wharf_schema SET version = 99");
    assert_refused(
        &wharf,
        "newer schema",
        &same,
        &[],
        &["schema version 99", "newer"],
    );
    wharf
        .shared()
        .unwrap()
        .postgres
        .psql(&format!("UPDATE wharf_schema SET version = {version}"));
    wharf.shared_mut().unwrap().garage.stop();
    assert_refused(
        &wharf,
        "garage down",
        &same,
        &[],
        &["cannot reach the object store", "storage.s3.endpoint"],
    );
    wharf.shared_mut().unwrap().garage.start_again();
    wharf.shared_mut().unwrap().postgres.stop();
    assert_refused(
        &wharf,
        "postgres down",
        &same,
        &[],
        &["cannot reach the metadata database", "metadata.url"],
    );
    wharf.shared_mut().unwrap().postgres.start_again();
    wharf.start_again();
}

/// `wharf status` says where content and metadata live (through the running server, and on the
/// files when none runs), never a password.
#[test]
fn status_names_the_backends_in_use() {
    let mut wharf = Wharf::start_shared(WharfOptions::default());
    let endpoint = wharf.shared().unwrap().garage.endpoint();
    let port = wharf.shared().unwrap().postgres.port();
    for serving in [true, false] {
        if !serving {
            wharf.stop();
        }
        let out = crate::gc::cli(&wharf, &["status"]);
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(&format!("backends: content: s3 {endpoint} bucket wharf"))
                && text.contains(&format!(
                    "metadata: postgres postgres://wharf@127.0.0.1:{port}/wharf"
                )),
            "serving={serving}: {text}"
        );
        assert!(
            !text.contains(wharf_test_servers::postgres::PASSWORD),
            "{text}"
        );
    }
}
