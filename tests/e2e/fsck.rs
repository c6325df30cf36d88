//! Rot at rest (issue 24, 10): `wharf fsck` and the scheduled scrub against a running wharf and on
//! its files. Bytes are changed in place in wharf's store, as a failing disk or a stray write would;
//! skopeo pulls and pushes, a real `docker-registry` is the mirror's upstream.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::gc::{cli, cli_command, wait_for_log};
use crate::harness::{free_port, output_text, DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::mirror::{push_to_upstream, upstream, wait_until};
use crate::oci::{sha256_digest, wharf_blob_path, Noise};
use crate::skopeo::Skopeo;

/// Inverts 64 bytes in the middle of the file, in place: same inode, same size, other bytes.
pub fn flip_64_bytes(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    assert!(len >= 128, "{} is too small to flip", path.display());
    let at = len / 2 - 32;
    let mut buf = [0u8; 64];
    f.read_exact_at(&mut buf, at).unwrap();
    for b in &mut buf {
        *b = !*b;
    }
    f.write_all_at(&buf, at).unwrap();
}

/// No collection on its own: what leaves the store is the scrub's doing.
fn no_gc() -> String {
    "\n[gc]\ninterval_secs = 0\n".to_owned()
}

/// `wharf fsck --json [args]`: the report and whether the command succeeded.
fn fsck_json(wharf: &Wharf, args: &[&str]) -> (Value, std::process::Output) {
    let mut all = vec!["fsck", "--json"];
    all.extend_from_slice(args);
    let out = cli(wharf, &all);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("wharf fsck printed no JSON ({e}):\n{}", output_text(&out)));
    (report, out)
}

fn wait_stored(wharf: &Wharf, digest: &str) {
    let path = wharf_blob_path(&wharf.blobs_dir(), digest);
    wait_until(|| format!("{digest} to be committed"), || path.exists());
}

/// Proves: 64 bytes flipped in a stored layer of a mirrored image and of an image pushed here are
/// served as they are (the bug), until `wharf fsck`, through the running server, names both digests
/// and the repositories that use them, exits non-zero and moves both files to quarantine/. Then
/// skopeo pulls the mirrored image whole, wharf fetching the layer from its upstream again; the
/// pushed image's layer answers 404 BLOB_UNKNOWN (not the rotten bytes) until skopeo pushes the
/// image again, which uploads it; a second fsck finds nothing.
#[test]
fn fsck_quarantines_rotten_blobs_so_the_mirror_refetches_and_a_push_reuploads() {
    let registry = DistRegistry::start();
    let up = registry.host();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&up, registry.addr(), "up")],
            ..Default::default()
        },
        extra_toml: no_gc(),
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let skopeo = Skopeo::new();
    let w = wharf.host();

    let mirrored = write_layout(&wharf.scratch("mirrored"), &LayoutSpec::small("v1", 2401));
    push_to_upstream(&registry, &mirrored, "lib/app");
    skopeo.copy(
        &format!("docker://{w}/up/lib/app:v1"),
        &format!("oci:{}:v1", wharf.scratch("cold").display()),
    );
    let pushed = write_layout(&wharf.scratch("pushed"), &LayoutSpec::small("v1", 2402));
    skopeo.copy(&pushed.skopeo_ref(), &format!("docker://{w}/team/app:v1"));

    let m_layer = mirrored.images[0].layers.last().unwrap().clone();
    let p_layer = pushed.images[0].layers.last().unwrap().clone();
    for d in [&m_layer.digest, &p_layer.digest] {
        wait_stored(&wharf, d);
        flip_64_bytes(&wharf_blob_path(&wharf.blobs_dir(), d));
    }
    // The bug: rotten bytes go out as they are.
    let r = api.get(&format!("/v2/team/app/blobs/{}", p_layer.digest));
    r.assert_status(200);
    assert_ne!(sha256_digest(&r.body), p_layer.digest, "the flip took");

    let done_before = crate::gc::log_count(&wharf, "scrub done");
    let out = cli(&wharf, &["fsck"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "fsck must fail:\n{text}");
    // The server holds the metadata: only its admin socket could have run this pass.
    wait_for_log(&wharf, "scrub done", done_before);
    let mirror_repo = format!("{up}/lib/app");
    for (d, repo) in [
        (&m_layer.digest, &mirror_repo),
        (&p_layer.digest, &"team/app".to_owned()),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("damaged {d}")))
            .unwrap_or_else(|| panic!("fsck does not name {d}:\n{text}"));
        assert!(
            line.contains(repo.as_str()) && line.contains("quarantined"),
            "{d} should be named with {repo}, and quarantined: {line}"
        );
        assert!(
            !wharf_blob_path(&wharf.blobs_dir(), d).exists(),
            "{d} is still in the store"
        );
        let hex = d.trim_start_matches("sha256:");
        assert!(
            wharf
                .data_dir()
                .join(format!("quarantine/sha256-{hex}"))
                .exists(),
            "{d} is not in quarantine/"
        );
    }
    assert!(text.contains("2 damaged"), "{text}");

    // The mirror fetches the layer again from its upstream, and skopeo verifies every digest.
    let fetched = |log: &[String]| {
        log.iter()
            .filter(|l| l.contains(&format!("GET /v2/lib/app/blobs/{}", m_layer.digest)))
            .count()
    };
    let before = fetched(&registry.access_log());
    let again = wharf.scratch("again");
    skopeo.copy(
        &format!("docker://{w}/up/lib/app:v1"),
        &format!("oci:{}:v1", again.display()),
    );
    assert_same_image(&mirrored, &again, "v1");
    assert!(
        fetched(&registry.access_log()) > before,
        "the quarantined layer was not fetched from the upstream again"
    );

    // Pushed here: not there any more, and said so, where the rotten bytes were served before.
    api.get(&format!("/v2/team/app/blobs/{}", p_layer.digest))
        .assert_error(404, "BLOB_UNKNOWN");
    api.head(&format!("/v2/team/app/blobs/{}", p_layer.digest))
        .assert_status(404);
    let failed = skopeo.output(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--retry-times=0",
        &format!("docker://{w}/team/app:v1"),
        &format!("oci:{}:v1", wharf.scratch("broken").display()),
    ]);
    assert!(
        !failed.status.success(),
        "a pull of the broken image worked"
    );
    // A push of the image uploads the layer again (its HEAD says 404), and it pulls whole.
    skopeo.copy(&pushed.skopeo_ref(), &format!("docker://{w}/team/app:v1"));
    let repaired = wharf.scratch("repaired");
    skopeo.copy(
        &format!("docker://{w}/team/app:v1"),
        &format!("oci:{}:v1", repaired.display()),
    );
    assert_same_image(&pushed, &repaired, "v1");

    let (report, out) = fsck_json(&wharf, &[]);
    assert!(out.status.success(), "nothing is wrong now: {report}");
    assert_eq!(report["damaged"], serde_json::json!([]), "{report}");
}

/// Proves: a blob link whose file is gone and an index whose child manifest is gone (skopeo pushed
/// them; the files were then removed behind wharf's back) are reported by `wharf fsck`, naming the
/// repository, the index and the child, and it exits non-zero.
#[test]
fn fsck_reports_records_whose_content_is_gone() {
    let wharf = Wharf::start(WharfOptions {
        extra_toml: no_gc(),
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 2403));
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/team/multi:v1", wharf.host()),
    );
    let child = layout.images[1].manifest.digest.clone();
    let layer = layout.images[0].layers.last().unwrap().digest.clone();
    for d in [&child, &layer] {
        std::fs::remove_file(wharf_blob_path(&wharf.blobs_dir(), d)).unwrap();
    }

    let (report, out) = fsck_json(&wharf, &[]);
    assert!(!out.status.success(), "fsck must fail: {report}");
    let problems = report["problems"].as_array().expect("problems");
    let has = |want: Value| {
        assert!(
            problems.contains(&want),
            "fsck should report {want}; it reported {report}"
        )
    };
    let repo = "team/multi";
    has(serde_json::json!({"kind": "manifest_missing", "repository": repo, "digest": child}));
    has(
        serde_json::json!({"kind": "child_missing", "repository": repo,
        "manifest": layout.index.digest, "child": child}),
    );
    has(serde_json::json!({"kind": "blob_missing", "repository": repo, "digest": layer}));
    has(
        serde_json::json!({"kind": "child_missing", "repository": repo,
        "manifest": layout.images[0].manifest.digest, "child": layer}),
    );
    assert_eq!(problems.len(), 4, "{report}");

    let text = output_text(&cli(&wharf, &["fsck"]));
    assert!(
        text.contains(&format!(
            "manifest {} in {repo} refers to {child}, which is not stored",
            layout.index.digest
        )),
        "the text names the index and its missing child: {text}"
    );
}

/// Proves: `wharf fsck` on the files, stopped (SIGKILL) after it recorded progress, goes on from
/// the digest it recorded the next time, and its report covers the whole pass.
#[test]
fn an_interrupted_fsck_goes_on_from_where_it_stopped() {
    let mut wharf = Wharf::start(WharfOptions {
        extra_toml: no_gc(),
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let mut blobs = Vec::new();
    for seed in 0..8 {
        blobs.push(api.push_blob("fsck/slow", &Noise::bytes(2410 + seed, 64 << 10)));
    }
    assert!(wharf.stop().success());

    // 64 KiB/s: one blob a second, progress recorded every two.
    let mut child = cli_command(&wharf, &["fsck", "--max-bytes-per-sec", "65536"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wharf fsck");
    let mut after = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("scrub progress") {
            after = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("after="))
                .map(str::to_owned);
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let after = after.expect("fsck logged no progress before it ended");
    assert!(
        blobs.contains(&after),
        "progress names a stored digest: {after}"
    );

    let out = cli(&wharf, &["fsck", "--json", "--max-bytes-per-sec", "0"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["resumed_after"], after, "{report}");
    assert_eq!(report["verified"], 8, "the whole pass is counted: {report}");
    assert!(
        text.contains("going on from where the last pass stopped"),
        "{text}"
    );
    // Done: the next pass starts from the beginning.
    let (next, _) = fsck_json(&wharf, &["--max-bytes-per-sec", "0"]);
    assert!(next.get("resumed_after").is_none(), "{next}");
}

/// Proves: with `[scrub] interval_secs`, the server scrubs on its own: a layer rotted in place is
/// found and quarantined with no command run, `/metrics` shows the pass and what it found, and
/// `wharf status` has the last pass's line.
#[test]
fn the_scheduled_scrub_shows_on_metrics_and_in_status() {
    let metrics_port = free_port();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: format!(
            "{}\n[scrub]\ninterval_secs = 1\nmax_bytes_per_sec = 0\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            no_gc()
        ),
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 2404));
    Skopeo::new().copy(
        &layout.skopeo_ref(),
        &format!("docker://{}/team/app:v1", wharf.host()),
    );
    let layer = layout.images[0].layers.last().unwrap().digest.clone();
    flip_64_bytes(&wharf_blob_path(&wharf.blobs_dir(), &layer));

    let metrics = Api::new(format!("http://127.0.0.1:{metrics_port}"));
    let series = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let scrape = || String::from_utf8(metrics.get("/metrics").body).unwrap();
    wait_until(
        || format!("a scheduled pass to find the rotten layer:\n{}", scrape()),
        || {
            let m = scrape();
            series(&m, "wharf_scrub_damaged_total") == Some(1.0)
                && series(&m, "wharf_scrub_last_run_timestamp_seconds").is_some_and(|t| t > 0.0)
        },
    );
    assert!(!wharf_blob_path(&wharf.blobs_dir(), &layer).exists());
    let m = scrape();
    assert!(
        series(&m, "wharf_scrub_runs_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    // The pass that found it, or a later one that finds the image missing that layer.
    let found = series(&m, "wharf_scrub_last_found{kind=\"damaged\"}").unwrap_or(0.0)
        + series(&m, "wharf_scrub_last_found{kind=\"missing_child\"}").unwrap_or(0.0);
    assert!(found >= 1.0, "{m}");

    let out = cli(&wharf, &["status"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("last fsck: "))
        .unwrap_or_else(|| panic!("wharf status has no fsck line:\n{text}"));
    assert!(
        line.contains("1 damaged") || line.contains("1 manifests missing children"),
        "{line}"
    );
    let out = cli(&wharf, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["last_scrub"]["started"].as_u64() > Some(0),
        "{status}"
    );
}
