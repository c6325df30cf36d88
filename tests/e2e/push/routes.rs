//! Routes: what a push through a `[[push]]` route delivers (skopeo, and containerd's `?ns=` form),
//! what a write no route covers gets, and how refusals (the upstream's, a plugin's) reach the client
//! with nothing left behind.

use std::fs;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::fixtures::image_manifest;
use crate::harness::{free_port, log_tail, require_tool, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, Desc, LayoutSpec};
use crate::oci::{self, regular_files, sha256_digest, Noise};
use crate::plugins::{component, Entry, PluginFiles};
use crate::skopeo::Skopeo;

use super::{
    assert_image_upstream, assert_says, entries_for, error_message, push_layout_raw, push_status,
    route_toml, setup, upstream_repositories, wait_delivered, LOCAL, REMOTE,
};

/// Proves: skopeo pushes a 3-platform image (`--all`, digests preserved) to `ci/app:v1` on a
/// write-through route, and by the time skopeo returns the upstream (asked directly) holds
/// `team/app:v1` with the identical index digest and bytes, every child manifest and every blob; wharf
/// still serves the image itself, byte for byte; `push status` lists the delivery with the same
/// digest on both sides and no platform reduction.
#[test]
fn skopeo_push_through_a_write_through_route_arrives_upstream_with_identical_digests() {
    let s = setup(&[], |_| String::new(), WharfOptions::default());
    let layout = write_layout(&s.wharf.scratch("src"), &LayoutSpec::small("v1", 1600));

    s.skopeo_push(&layout, &format!("{LOCAL}:v1"));
    // No waiting: a write-through push answers only once the upstream has accepted all of it.
    assert_image_upstream(&s.upstream(), REMOTE, "v1", &layout);

    let out = s.wharf.scratch("out");
    Skopeo::new().copy(
        &format!("docker://{}/{LOCAL}:v1", s.wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    let e = wait_delivered(&s.wharf, LOCAL, "v1");
    assert_eq!(e["mode"], "write-through", "{e:#}");
    assert_eq!(e["digest"], layout.index.digest, "{e:#}");
    assert_eq!(e["upstream_digest"], layout.index.digest, "{e:#}");
    assert_eq!(e["upstream_repository"], REMOTE, "{e:#}");
    assert_eq!(e["target"], s.registry.base(), "{e:#}");
    assert!(e["platforms"].is_null(), "nothing was reduced: {e:#}");
    assert!(e["last_error"].is_null(), "{e:#}");
}

/// Proves: containerd's form of the same push (`/v2/team/app/...?ns=<upstream host:port>` on every
/// request it names itself, the upload's `Location` used as wharf gave it) is the same push: the
/// upstream holds `team/app:v1` whole with identical digests, and wharf holds it as `ci/app:v1`.
#[test]
fn a_containerd_style_ns_push_is_delivered_like_a_push_to_the_local_prefix() {
    let s = setup(&[], |_| String::new(), WharfOptions::default());
    let layout = write_layout(&s.wharf.scratch("src"), &LayoutSpec::small("v1", 1610));
    let ns = format!("ns={}", s.registry.host());

    push_layout_raw(&s.api(), REMOTE, Some(&ns), &layout, "v1");
    assert_image_upstream(&s.upstream(), REMOTE, "v1", &layout);

    let r = s.api().get_manifest(LOCAL, "v1");
    r.assert_status(200);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(layout.index.digest.as_str()),
        "wharf holds the ns= push under the route's local prefix: {}",
        r.describe()
    );
    let e = wait_delivered(&s.wharf, LOCAL, "v1");
    assert_eq!(e["upstream_digest"], layout.index.digest, "{e:#}");
}

/// Proves: a write naming a foreign host no route covers (an upload `POST`, monolithic or a session,
/// and a manifest `PUT`, with `?ns=other.example:5000`; and with the route's own host but a
/// repository outside the route) is refused with `403 DENIED` and a message naming `[[push]]`; nothing
/// is stored in wharf and nothing reaches the upstream.
#[test]
fn a_write_naming_a_host_no_route_covers_is_refused_naming_the_push_config() {
    let s = setup(&[], |_| String::new(), WharfOptions::default());
    let api = s.api();
    let blobs_before = regular_files(&s.wharf.blobs_dir());
    let data = Noise::bytes(1620, 4096);
    let digest = sha256_digest(&data);
    let config = Desc {
        media_type: oci::OCI_CONFIG.into(),
        digest: digest.clone(),
        size: data.len() as u64,
    };
    let manifest = image_manifest(&config, &[], None);

    for (ns, name) in [
        ("other.example:5000".to_owned(), REMOTE),
        (s.registry.host(), "other/app"),
    ] {
        let r = api.request(
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={digest}&ns={ns}"),
            &[("Content-Type", "application/octet-stream")],
            Some(&data),
        );
        r.assert_error(403, "DENIED");
        assert_says(&r, &["[[push]]"]);
        let r = api.request(
            "POST",
            &format!("/v2/{name}/blobs/uploads/?ns={ns}"),
            &[],
            None,
        );
        r.assert_error(403, "DENIED");
        assert_says(&r, &["[[push]]"]);
        let r = api.request(
            "PUT",
            &format!("/v2/{name}/manifests/v1?ns={ns}"),
            &[("Content-Type", oci::OCI_MANIFEST)],
            Some(&manifest),
        );
        r.assert_error(403, "DENIED");
        assert_says(&r, &["[[push]]"]);
        eprintln!("{ns}/{name}: {}", error_message(&r));
    }

    assert_eq!(
        regular_files(&s.wharf.blobs_dir()),
        blobs_before,
        "a refused write stored something"
    );
    assert!(
        regular_files(&s.wharf.ingest_dir()).is_empty(),
        "a refused write left an ingest: {:?}",
        regular_files(&s.wharf.ingest_dir())
    );
    assert!(
        upstream_repositories(&s.upstream()).is_empty(),
        "a refused write reached the upstream: {:?}",
        s.upstream_repositories()
    );
    assert!(
        push_status(&s.wharf).is_empty(),
        "{:#?}",
        push_status(&s.wharf)
    );
}

/// A `docker-registry` in read-only maintenance mode (`storage.maintenance.readonly`): it serves
/// reads and answers every write `405 Method Not Allowed`, a refusal no retry will change.
struct ReadOnlyRegistry {
    child: Child,
    addr: SocketAddr,
    /// Config, storage and log; removed on drop.
    _home: TempDir,
}

impl ReadOnlyRegistry {
    fn start() -> ReadOnlyRegistry {
        let bin = require_tool("docker-registry", "apt-get install docker-registry");
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-dist-ro-")
            .tempdir()
            .expect("tempdir");
        let log_path = home.path().join("registry.log");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        // A free port can be taken between our probe and the registry's bind: try another.
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = home.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                     maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: {addr}\n",
                    home.path().join("storage").display()
                ),
            )
            .unwrap();
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let end = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if agent.get(&format!("http://{addr}/v2/")).call().is_ok() {
                    return ReadOnlyRegistry {
                        child,
                        addr,
                        _home: home,
                    };
                }
                if Instant::now() > end {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "read-only docker-registry did not answer on {addr}:\n{}",
                        log_tail(&log_path, 20)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "read-only docker-registry would not start:\n{}",
            log_tail(&log_path, 20)
        );
    }
}

impl Drop for ReadOnlyRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proves: when the upstream refuses a write-through push (a `docker-registry` in read-only mode
/// answers `405` to the first upload), the client's manifest `PUT` fails with the upstream's status
/// and a message naming the upstream and its answer; the upstream holds nothing, and `push status`
/// lists the delivery as failed with that reason. skopeo's error shows the same reason.
#[test]
fn an_upstream_refusal_of_a_write_through_push_reaches_the_client() {
    let upstream = ReadOnlyRegistry::start();
    let up_host = upstream.addr.to_string();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: route_toml(&up_host, &[]),
        ..Default::default()
    });
    let api = Api::new(wharf.base());

    // Blobs first (uploads are wharf's own: stored locally), then the manifest by tag, which delivers.
    let layer_bytes = crate::gc::layer(1630, 8192);
    let layer = Desc {
        media_type: oci::OCI_LAYER_TAR.into(),
        digest: api.push_blob(LOCAL, &layer_bytes),
        size: layer_bytes.len() as u64,
    };
    let config_bytes = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    }))
    .unwrap();
    let config = Desc {
        media_type: oci::OCI_CONFIG.into(),
        digest: api.push_blob(LOCAL, &config_bytes),
        size: config_bytes.len() as u64,
    };
    let bytes = image_manifest(&config, std::slice::from_ref(&layer), None);
    let r = api.put_manifest(LOCAL, "v1", oci::OCI_MANIFEST, &bytes);
    eprintln!("refused: {}", r.describe());
    assert_eq!(
        r.status,
        405,
        "the client gets the upstream's status: {}",
        r.describe()
    );
    assert_says(&r, &[&format!("upstream {up_host} refused"), "405"]);

    let catalog = Api::new(format!("http://{up_host}")).get("/v2/_catalog");
    assert!(
        catalog.status == 200
            && catalog.json()["repositories"]
                .as_array()
                .is_none_or(|a| a.is_empty()),
        "{}",
        catalog.describe()
    );
    let entries = entries_for(&wharf, LOCAL, "v1");
    assert!(
        entries.iter().any(|e| e["state"] == "failed"
            && e["last_error"].as_str().is_some_and(|m| m.contains("405"))),
        "push status should list the refused delivery as failed, with the upstream's answer: {entries:#?}"
    );

    // skopeo shows the client what the upstream said.
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v2", 1631));
    let out = Skopeo::new().output(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--retry-times=0",
        &layout.skopeo_ref(),
        &format!("docker://{}/{LOCAL}:v2", wharf.host()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("upstream {up_host} refused")),
        "skopeo should fail with the upstream's refusal:\n{stderr}"
    );
}

/// Proves: an `access` plugin judges a routed push by the one name wharf keeps it under, the route's
/// local repository, however the client spelled it: a monolithic upload, an upload session and a
/// manifest `PUT` to `ci/app`, the same to the target's name by `?ns=`, and skopeo's push all get
/// `403 DENIED` with the plugin's reason naming `ci/app`; no blob is added to wharf's store, no
/// delivery is journaled, and the upstream has no repository at all.
#[test]
fn a_push_an_access_plugin_denies_is_refused_with_nothing_stored_or_delivered() {
    let files = PluginFiles::new();
    let path = files.add("allow_list.wasm", &component("allow_list"));
    let s = setup(
        &[],
        |registry| {
            let _ = registry;
            let mut e = Entry::new("writers", &path, &format!(r#"{{"deny": ["{LOCAL}"]}}"#));
            e.on = Some(vec!["push"]);
            e.toml()
        },
        WharfOptions::default(),
    );
    let api = s.api();
    let judged = format!("push of {LOCAL} ");
    let reason = "denied by plugin writers";
    let blobs_before = regular_files(&s.wharf.blobs_dir());

    let data = Noise::bytes(1640, 4096);
    let digest = sha256_digest(&data);
    let ns = format!("ns={}", s.registry.host());
    for (name, query) in [(LOCAL, String::new()), (REMOTE, format!("&{ns}"))] {
        let r = api.request(
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={digest}{query}"),
            &[("Content-Type", "application/octet-stream")],
            Some(&data),
        );
        r.assert_error(403, "DENIED");
        assert_says(&r, &[reason, &judged]);
        let q = query.replacen('&', "?", 1);
        let r = api.request("POST", &format!("/v2/{name}/blobs/uploads/{q}"), &[], None);
        r.assert_error(403, "DENIED");
        assert_says(&r, &[reason, &judged]);
        let config = Desc {
            media_type: oci::OCI_CONFIG.into(),
            digest: digest.clone(),
            size: data.len() as u64,
        };
        let r = api.request(
            "PUT",
            &format!("/v2/{name}/manifests/v1{q}"),
            &[("Content-Type", oci::OCI_MANIFEST)],
            Some(&image_manifest(&config, &[], None)),
        );
        r.assert_error(403, "DENIED");
        assert_says(&r, &[reason, &judged]);
    }

    let layout = write_layout(&s.wharf.scratch("src"), &LayoutSpec::small("v1", 1641));
    let out = Skopeo::new().output(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--retry-times=0",
        &layout.skopeo_ref(),
        &format!("docker://{}/{LOCAL}:v1", s.wharf.host()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(reason) && stderr.contains(&judged),
        "skopeo's push should be refused with the plugin's reason:\n{stderr}"
    );

    assert_eq!(
        regular_files(&s.wharf.blobs_dir()),
        blobs_before,
        "a denied push stored something in wharf"
    );
    assert!(
        push_status(&s.wharf).is_empty(),
        "a denied push was journaled: {:#?}",
        push_status(&s.wharf)
    );
    assert!(
        s.upstream_repositories().is_empty(),
        "a denied push reached the upstream: {:?}",
        s.upstream_repositories()
    );
    s.upstream()
        .get(&format!("/v2/{REMOTE}/tags/list"))
        .assert_status(404);
    assert!(
        !s.registry
            .storage_dir()
            .join("docker/registry/v2/blobs")
            .exists(),
        "the upstream stored blobs of a denied push"
    );
}
