//! Leases and the online garbage collector (issue 15) against a running wharf: `wharf gc` and `wharf
//! leases` reach the server through its admin socket, pushes and pulls come from skopeo and the raw
//! API, mirrored content from a real `docker-registry`.
//!
//! Every wharf here runs with a short `[gc] grace_secs` and no periodic collection, so that what a
//! collection removes is decided by the test: it waits past the grace window (which also covers the
//! server's start, during which nothing is collected) and then runs `wharf gc` itself.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{wharf_bin, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{layout_blob_path, Desc};
use crate::oci::{self, sha256_digest, wharf_blob_path, Noise};
use crate::skopeo::Skopeo;

// Tests.
mod crash;
mod quota;
mod stress;

/// A wharf whose collector spares only what was touched in the last `grace_secs`, runs only when asked,
/// and accepts deletes.
pub fn options(grace_secs: u64) -> WharfOptions {
    WharfOptions {
        delete_enabled: Some(true),
        extra_toml: format!("[gc]\ngrace_secs = {grace_secs}\ninterval_secs = 0\n"),
        ..Default::default()
    }
}

/// Polls dry runs (which remove and touch nothing) until `cond` holds of one, and returns it. The
/// grace window is counted on the server's clock, in whole seconds: this is how a test knows it has
/// passed for what it cares about, instead of sleeping for a guess.
pub fn wait_for_dry_run(wharf: &Wharf, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = collect(wharf, true);
        if cond(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "waited 60 s for {what}; the last dry run: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Until a collection would remove every one of `digests` (unreferenced, and untouched for the grace
/// window).
pub fn wait_until_collectable<'a>(wharf: &Wharf, digests: impl IntoIterator<Item = &'a String>) {
    let want: BTreeSet<String> = digests.into_iter().cloned().collect();
    wait_for_dry_run(
        wharf,
        &format!("{} digests to be collectable", want.len()),
        |r| removed(r).is_superset(&want),
    );
}

/// Runs `wharf <args> --config <wharf's config>` with no `WHARF_*` of the caller's environment.
pub fn cli(wharf: &Wharf, args: &[&str]) -> Output {
    cli_command(wharf, args).output().expect("run wharf")
}

pub fn cli_command(wharf: &Wharf, args: &[&str]) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(args).arg("--config").arg(wharf.config_path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") && key != "WHARF_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(wharf.backend_env());
    cmd
}

/// `wharf gc --json [--dry-run]`: the report, or a failure with what the command said.
pub fn collect(wharf: &Wharf, dry_run: bool) -> Value {
    let mut args = vec!["gc", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    let out = cli(wharf, &args);
    parse_json_output(&args, &out)
}

fn parse_json_output(args: &[&str], out: &Output) -> Value {
    assert!(
        out.status.success(),
        "wharf {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wharf {} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The digests a report says were removed (or, in a dry run, would be).
pub fn removed(report: &Value) -> BTreeSet<String> {
    report["removed"]
        .as_array()
        .unwrap_or_else(|| panic!("report without `removed`: {report}"))
        .iter()
        .map(|r| r["digest"].as_str().expect("digest").to_owned())
        .collect()
}

pub fn on_disk(wharf: &Wharf, digest: &str) -> bool {
    wharf_blob_path(&wharf.blobs_dir(), digest).exists()
}

/// How many lines of the server's log contain `needle`.
pub fn log_count(wharf: &Wharf, needle: &str) -> usize {
    fs::read_to_string(wharf.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until the server's log holds more than `before` lines with `needle` (the log is written in
/// batches every few milliseconds).
pub fn wait_for_log(wharf: &Wharf, needle: &str, before: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while log_count(wharf, needle) <= before {
        assert!(
            Instant::now() < end,
            "the server's log never said {needle:?}: the command did not run in the server\n{}",
            crate::harness::log_tail(&wharf.log_path(), 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tar with `dir/file` holding `content`, fixed owner and mtime: a real layer, deterministic.
pub fn tar_layer(dir: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::with_capacity(content.len() + 2048));
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(format!("{dir}/file.bin")).unwrap();
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    h.set_mtime(1_704_067_200);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, content).unwrap();
    b.into_inner().unwrap()
}

/// A layer of `len` random bytes from `seed`, as a tar.
pub fn layer(seed: u64, len: usize) -> Vec<u8> {
    tar_layer(&format!("l{seed}"), &Noise::bytes(seed, len))
}

/// A single-platform image pushed over the raw API.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Desc,
    pub config: Desc,
    pub layers: Vec<Desc>,
}

impl Image {
    /// Manifest, config and layers.
    pub fn digests(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::from([self.manifest.digest.clone(), self.config.digest.clone()]);
        all.extend(self.layers.iter().map(|l| l.digest.clone()));
        all
    }
}

/// An OCI image config over `layers` (uncompressed: diff_ids are the layer digests).
fn config_for(layers: &[Desc], label: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "org.example.wharf-e2e.image": label } },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
    }))
    .unwrap()
}

/// Pushes `layers` (blobs a repository already has are pushed again: uploads are idempotent), a config
/// and the manifest tagged `repo:tag`.
pub fn push_image(api: &Api, repo: &str, tag: &str, layers: &[&[u8]]) -> Image {
    let layers: Vec<Desc> = layers
        .iter()
        .map(|data| Desc {
            media_type: oci::OCI_LAYER_TAR.into(),
            digest: api.push_blob(repo, data),
            size: data.len() as u64,
        })
        .collect();
    let config_bytes = config_for(&layers, &format!("{repo}:{tag}"));
    let config = Desc {
        media_type: oci::OCI_CONFIG.into(),
        digest: api.push_blob(repo, &config_bytes),
        size: config_bytes.len() as u64,
    };
    let body = crate::fixtures::image_manifest(&config, &layers, None);
    let digest = api.push_manifest(repo, tag, oci::OCI_MANIFEST, &body);
    Image {
        manifest: Desc {
            media_type: oci::OCI_MANIFEST.into(),
            digest,
            size: body.len() as u64,
        },
        config,
        layers,
    }
}

/// `skopeo copy --all` of `docker://wharf/name:tag` into a fresh OCI layout (skopeo verifies every
/// digest it reads), then checks the layout holds exactly `want` under `top`, each file hashing to
/// its name.
pub fn pull_and_verify(
    skopeo: &Skopeo,
    wharf_host: &str,
    name: &str,
    tag: &str,
    out: &Path,
    top: &str,
    want: &BTreeSet<String>,
) {
    skopeo.copy(
        &format!("docker://{wharf_host}/{name}:{tag}"),
        &format!("oci:{}:{tag}", out.display()),
    );
    assert_layout_holds(out, tag, top, want);
}

/// The OCI layout at `dir` names `top` for `tag` and holds exactly `want`, intact.
pub fn assert_layout_holds(dir: &Path, tag: &str, top: &str, want: &BTreeSet<String>) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap())
        .unwrap_or_else(|e| panic!("{}/index.json: {e}", dir.display()));
    let named: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert!(
        named.len() == 1 && named[0]["digest"] == top,
        "{}: tag {tag} should name {top}: {index}",
        dir.display()
    );
    let got: BTreeSet<String> = fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(&got, want, "blobs pulled into {}", dir.display());
    for d in want {
        let bytes = fs::read(layout_blob_path(dir, d)).unwrap();
        assert_eq!(
            &sha256_digest(&bytes),
            d,
            "pulled blob does not hash to its name"
        );
    }
}

/// Proves: untagging one of two images that share layers and collecting (through the running server)
/// removes exactly the untagged image's own content: its manifest, config and the layers only it
/// used, each file gone, while the layers the other image shares stay and the other image pulls whole
/// with skopeo. A dry run first names the same set and removes nothing.
#[test]
fn untagging_an_image_reclaims_exactly_its_unique_blobs() {
    const GRACE: u64 = 2;
    let wharf = Wharf::start(options(GRACE));
    let api = Api::new(wharf.base());
    let (shared, a_own, b_own, both) = (
        layer(1, 64 << 10),
        layer(2, 20 << 10),
        layer(3, 20 << 10),
        layer(4, 8 << 10),
    );
    // Two repositories: content is stored once whichever repository it was pushed to.
    let a = push_image(&api, "gc/a", "v1", &[&shared, &both, &a_own]);
    let b = push_image(&api, "gc/b", "v1", &[&shared, &both, &b_own]);
    let unique: BTreeSet<String> = a.digests().difference(&b.digests()).cloned().collect();
    assert_eq!(unique.len(), 3, "manifest, config, own layer: {unique:?}");
    for d in a.digests().union(&b.digests()) {
        assert!(on_disk(&wharf, d), "{d} was pushed");
    }

    api.delete("/v2/gc/a/manifests/v1").assert_status(202);
    wait_until_collectable(&wharf, &unique);

    let dry = collect(&wharf, true);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(
        removed(&dry),
        unique,
        "a dry run names what a collection would remove: {dry}"
    );
    for d in &unique {
        assert!(on_disk(&wharf, d), "a dry run removed {d}");
    }

    let done_before = log_count(&wharf, "garbage collection done");
    let report = collect(&wharf, false);
    // The server holds the metadata store: only its admin socket could have run this collection.
    wait_for_log(&wharf, "garbage collection done", done_before);
    assert_eq!(removed(&report), unique, "{report}");
    let bytes: u64 = [&a.manifest, &a.config, &a.layers[2]]
        .iter()
        .map(|d| d.size)
        .sum();
    assert_eq!(report["removed_bytes"], bytes, "{report}");
    for d in &unique {
        assert!(
            !on_disk(&wharf, d),
            "{d} only the untagged image used is still stored"
        );
    }
    for d in b.digests() {
        assert!(on_disk(&wharf, &d), "{d}, which gc/b:v1 uses, was removed");
    }
    api.get_manifest("gc/a", &a.manifest.digest)
        .assert_error(404, "MANIFEST_UNKNOWN");
    api.head(&format!("/v2/gc/a/blobs/{}", a.layers[2].digest))
        .assert_status(404);

    let out = wharf.scratch("b");
    pull_and_verify(
        &Skopeo::new(),
        &wharf.host(),
        "gc/b",
        "v1",
        &out,
        &b.manifest.digest,
        &b.digests(),
    );

    // Nothing else is unreachable now: a second collection removes nothing.
    let again = collect(&wharf, false);
    assert!(removed(&again).is_empty(), "{again}");
}

/// Proves (distribution's race, made deterministic): a blob pushed long ago and referenced by nothing
/// survives a collection when a client `HEAD`s it just before, and a manifest referring to it
/// afterwards is accepted and the blob served; the grace window counts from the last `HEAD`, not
/// from the upload. The control: a blob of the same age that nobody `HEAD`ed is removed by the same
/// collection, and a manifest naming it is refused with `MANIFEST_BLOB_UNKNOWN`, naming it.
#[test]
fn a_blob_headed_before_its_manifest_push_survives_a_collection() {
    const GRACE: u64 = 3;
    let wharf = Wharf::start(options(GRACE));
    let api = Api::new(wharf.base());
    let repo = "race/app";
    let (b_bytes, c_bytes) = (layer(11, 16 << 10), layer(12, 16 << 10));
    let b = api.push_blob(repo, &b_bytes);
    let c = api.push_blob(repo, &c_bytes);
    let (config, config_bytes) = crate::fixtures::empty_config();
    assert_eq!(api.push_blob(repo, config_bytes), config.digest);
    let desc = |digest: &str, len: usize| Desc {
        media_type: oci::OCI_LAYER_TAR.into(),
        digest: digest.into(),
        size: len as u64,
    };

    wait_until_collectable(&wharf, [&b, &c, &config.digest]);
    // The client checks what it has to upload: the config and B are there, so it uploads neither.
    for d in [&config.digest, &b] {
        api.head(&format!("/v2/{repo}/blobs/{d}"))
            .assert_status(200);
    }
    let report = collect(&wharf, false);
    let gone = removed(&report);
    assert!(
        gone.contains(&c),
        "C, untouched since its upload, must be collected: {report}"
    );
    assert!(
        !gone.contains(&b) && !gone.contains(&config.digest),
        "B and the config were HEADed just before: {report}"
    );

    let manifest = crate::fixtures::image_manifest(&config, &[desc(&b, b_bytes.len())], None);
    api.push_manifest(repo, "v1", oci::OCI_MANIFEST, &manifest);
    // Touched after the push touched B: once it is collectable, B's touch is past the window too.
    let canary = api.push_blob(repo, &layer(13, 1024));
    api.assert_blob_intact(repo, &b, b_bytes.len() as u64);

    // The control: C is gone, and a manifest naming it is refused rather than stored dangling.
    assert!(!on_disk(&wharf, &c), "C's file is still stored");
    let r = api.put_manifest(
        repo,
        "v2",
        oci::OCI_MANIFEST,
        &crate::fixtures::image_manifest(&config, &[desc(&c, c_bytes.len())], None),
    );
    // 404, as for every manifest naming content the repository lacks (bad_input/manifests.rs).
    r.assert_error(404, "MANIFEST_BLOB_UNKNOWN");
    assert!(
        String::from_utf8_lossy(&r.body).contains(&c),
        "the refusal should name the missing blob: {}",
        r.describe()
    );
    api.head(&format!("/v2/{repo}/blobs/{c}"))
        .assert_status(404);

    // The manifest just pushed is a root now: the next collection, past every grace window, keeps B.
    wait_until_collectable(&wharf, [&canary]);
    let report = collect(&wharf, false);
    assert_eq!(removed(&report), BTreeSet::from([canary]), "{report}");
    api.assert_blob_intact(repo, &b, b_bytes.len() as u64);
}

/// Proves: an open upload session holds a lease that `wharf leases --json` lists (through the running
/// server), with a purpose naming the upload and its repository; completing the upload releases it.
#[test]
fn wharf_leases_lists_an_open_upload_session() {
    let wharf = Wharf::start(options(3600));
    let api = Api::new(wharf.base());
    let leases = |wharf: &Wharf| -> Vec<Value> {
        let args = ["leases", "--json"];
        let v = parse_json_output(&args, &cli(wharf, &args));
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .clone()
    };
    let uploads = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .filter(|l| {
                l["purpose"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("upload"))
            })
            .cloned()
            .collect()
    };
    assert!(uploads(&leases(&wharf)).is_empty(), "no upload yet");

    let location = api.start_upload("lease/app");
    let data = layer(21, 4096);
    let listed = uploads(&leases(&wharf));
    assert_eq!(listed.len(), 1, "one open session, one lease: {listed:?}");
    let purpose = listed[0]["purpose"].as_str().unwrap();
    assert!(
        purpose.contains("lease/app"),
        "the purpose should name the repository: {purpose}"
    );
    assert!(
        listed[0]["id"].as_str().is_some_and(|id| !id.is_empty())
            && listed[0]["expires"].as_u64() > listed[0]["created"].as_u64(),
        "a lease has an id and an expiry after its creation: {listed:?}"
    );

    let digest = sha256_digest(&data);
    api.request(
        "PUT",
        &crate::http::with_query(&location, &format!("digest={digest}")),
        &[("Content-Type", "application/octet-stream")],
        Some(&data),
    )
    .assert_status(201);
    let after = leases(&wharf);
    assert!(
        uploads(&after).is_empty(),
        "the completed upload's lease is still listed: {after:?}"
    );

    // A monolithic upload (POST ?digest=) holds one while its body arrives, and lets go at the end.
    use std::io::Write as _;
    let body = layer(22, 4096);
    let d = sha256_digest(&body);
    let mut sock = std::net::TcpStream::connect(wharf.addr()).unwrap();
    write!(
        sock,
        "POST /v2/lease/mono/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    sock.write_all(&body[..100]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let during = loop {
        let l = uploads(&leases(&wharf));
        if !l.is_empty() || std::time::Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        during.len(),
        1,
        "a monolithic upload in progress holds a lease: {during:?}"
    );
    assert!(during[0]["purpose"]
        .as_str()
        .unwrap()
        .contains("lease/mono"));
    assert_eq!(during[0]["digests"], serde_json::json!([d]), "{during:?}");
    sock.write_all(&body[100..]).unwrap();
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut sock, &mut answer).unwrap();
    assert_eq!(
        &answer[9..12],
        b"201",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let after = uploads(&leases(&wharf));
    assert!(after.is_empty(), "released after the upload: {after:?}");
}
