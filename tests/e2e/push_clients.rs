//! The push gateway (issue 16) with the clients CI jobs really push with: containerd 1.6 (`ctr images
//! push` with a `hosts.toml` that gives wharf the `push` capability) and dockerd 20.10 (`docker
//! push` to wharf as an insecure registry). Each pushes through a write-through `[[push]]` route, and
//! the upstream, a real `docker-registry`, must then hold the image under the route's target with
//! the digest the client pushed.
//!
//! containerd 1.6 adds `?ns=<registry>` to the requests of a pull from a `hosts.toml` host, but not
//! to those of a push (its pusher never calls `addNamespace`; seen here with 1.6.20): a push to
//! `[host."http://wharf"]` arrives as plain `/v2/team/app/...`, a local name. What names the
//! registry in a push is the host's path: `[host."http://wharf/v2/up"]` with `override_path = true`
//! sends `/v2/up/team/app/...`, wharf's path-prefix form for the `[[upstream]]` whose `prefix` is
//! `up`, and the route whose target is on that host delivers it. Pulls go to a host entry without
//! the path (they carry `ns=`, and a prefix as well would name the repository `up/team/...` there).
//! docker pushes to wharf by its own address (`127.0.0.1:W/ci/app`), the route's local prefix.
//!
//! With the upstream down, the write-through push fails within `write_through_timeout_secs`, and
//! what docker and podman print must say why. Both parse an error body only for a 4xx (docker
//! 20.10's distribution client `HandleErrorResponse`, containers/image 5.23's `handleErrorResponse`
//! in podman 4.3: "received unexpected HTTP status: 502 Bad Gateway" for any 5xx), so wharf answers
//! `424 UNAVAILABLE`; docker prints `unavailable: <message>`, podman `... uploading manifest v1 to
//! ...: unavailable: <message>`, and podman (containers/common's retry: `UNAVAILABLE` is not among
//! the codes it gives up on) tries the whole push 4 times, 1 s apart.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{log_tail, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{write_layout, LayoutSpec};
use crate::mirror::ctr::Containerd;
use crate::mirror::docker_daemon::{in_private_network, pushed_digest, DockerTools, Dockerd};
use crate::mirror::relay::Relay;
use crate::oci::sha256_digest;
use crate::skopeo::Skopeo;

/// A write-through route: pushes to local `prefix[/...]` are delivered to `target_repo[/...]` on
/// `upstream`.
fn route(prefix: &str, upstream: &DistRegistry, target_repo: &str) -> String {
    format!(
        "\n[[push]]\nprefix = \"{prefix}\"\ntarget = \"{}/{target_repo}\"\nmode = \"write-through\"\n\
         insecure = true\n",
        upstream.base()
    )
}

/// `DIR/<registry>/hosts.toml`, as examples/ci/README.md has it: containerd resolves and pulls
/// through wharf (pulls carry `?ns=<registry>`), and pushes through wharf under the registry's
/// `[[upstream]]` prefix (pushes carry no `ns=`, so the path names the registry); `server` is the
/// registry itself, as a real setup has it (the test checks containerd never went there directly).
fn write_push_hosts(dir: &Path, registry: &str, wharf: &str, prefix: &str) {
    let d = dir.join(registry);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\n\
             [host.\"http://{wharf}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://{wharf}/v2/{prefix}\"]\n  capabilities = [\"push\"]\n  override_path = true\n"
        ),
    )
    .unwrap();
}

/// The upstream serves `repo:tag` with exactly the bytes of `digest`.
fn assert_upstream_tag(up: &Api, repo: &str, tag: &str, digest: &str, wharf: &Wharf) -> Vec<u8> {
    let r = up.get_manifest(repo, tag);
    assert_eq!(
        r.status,
        200,
        "the upstream has no {repo}:{tag} after the push returned: {}\n--- wharf log tail ---\n{}",
        r.describe(),
        log_tail(&wharf.log_path(), 40)
    );
    assert_eq!(
        sha256_digest(&r.body),
        digest,
        "the upstream's {repo}:{tag} is not the manifest the client pushed"
    );
    r.body
}

/// Lines of the upstream's access log from a client other than wharf (containerd's or docker's user
/// agent): a client that went around wharf.
fn direct_requests(registry: &DistRegistry, from: usize, agent: &str) -> Vec<String> {
    registry.access_log()[from..]
        .iter()
        .filter(|l| l.contains(agent))
        .cloned()
        .collect()
}

/// Proves: with one `hosts.toml` that sends pulls to wharf (`?ns=`) and pushes to wharf under the
/// upstream's path prefix, containerd pulls `127.0.0.1:UP/team/base:v1` through wharf's mirror,
/// and pushes `127.0.0.1:UP/team/app:v1` (a 3-platform OCI index) through the route: wharf receives
/// `/v2/up/team/app/...`, stores the push under the route's local prefix `ci/app`, and delivers it
/// before containerd's manifest `PUT` is answered: the upstream then holds `team/app:v1` with the
/// index digest containerd pushed, every child manifest and every blob, byte for byte, and
/// containerd never talked to it directly. Then a push to a mirrored registry that no route covers
/// is refused (405 or 403), containerd does not fall back to that registry, and it receives no write.
#[test]
fn containerd_pushes_through_a_route_with_hosts_toml() {
    let upstream = DistRegistry::start();
    let source = DistRegistry::start();
    let unrouted = DistRegistry::start();
    let up = upstream.host();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![
                UpstreamSpec::http(&up, upstream.addr()).with_prefix("up"),
                UpstreamSpec::http(unrouted.host(), unrouted.addr()).with_prefix("other"),
            ],
            ..Default::default()
        },
        extra_toml: route("ci/app", &upstream, "team/app"),
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1610));
    let base = write_layout(&wharf.scratch("base"), &LayoutSpec::small("v1", 1611));
    Skopeo::new().copy(&base.skopeo_ref(), &format!("docker://{up}/team/base:v1"));
    // containerd gets the image from a registry of its own, so every platform's content is in its
    // store (`ctr images push` pushes every platform of an index).
    let src_ref = format!("{}/team/app:v1", source.host());
    Skopeo::new().copy(&layout.skopeo_ref(), &format!("docker://{src_ref}"));
    let ctrd = Containerd::start();
    ctrd.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--all-platforms",
        "--plain-http",
        &src_ref,
    ]);
    assert_eq!(ctrd.image_digest(&src_ref), layout.index.digest);

    // A relay in front of wharf records what containerd sent.
    let front = Relay::start(wharf.addr());
    let f = front.addr().to_string();
    let hosts = wharf.scratch("certs.d");
    write_push_hosts(&hosts, &up, &f, "up");
    write_push_hosts(&hosts, &unrouted.host(), &f, "other");
    let hosts_arg = hosts.to_str().unwrap();
    let before = upstream.access_log().len();

    // 1. A pull of what the registry has, through wharf's mirror (containerd adds ?ns= to these).
    let base_ref = format!("{up}/team/base:v1");
    ctrd.pull(&hosts, &base_ref, "linux/amd64");
    assert_eq!(ctrd.image_digest(&base_ref), base.index.digest);

    // 2. A push through the route.
    let target = format!("{up}/team/app:v1");
    ctrd.ctr(&[
        "images",
        "push",
        "--hosts-dir",
        hosts_arg,
        &target,
        &src_ref,
    ]);
    let put = "/v2/up/team/app/manifests/v1";
    assert!(
        front
            .seen()
            .iter()
            .any(|s| s.method == "PUT" && s.target == put),
        "containerd should PUT the manifest to wharf as {put}:\n{}",
        front.describe()
    );
    let api_up = Api::new(upstream.base());
    assert_upstream_tag(&api_up, "team/app", "v1", &layout.index.digest, &wharf);
    for img in &layout.images {
        let r = api_up.get_manifest("team/app", &img.manifest.digest);
        r.assert_status(200);
        assert_eq!(sha256_digest(&r.body), img.manifest.digest);
        for b in std::iter::once(&img.config).chain(&img.layers) {
            api_up.assert_blob_intact("team/app", &b.digest, b.size);
        }
    }
    // Stored in wharf as well, under the route's local prefix.
    let local = Api::new(wharf.base()).get_manifest("ci/app", "v1");
    local.assert_status(200);
    assert_eq!(sha256_digest(&local.body), layout.index.digest);
    let direct = direct_requests(&upstream, before, "containerd/");
    assert!(
        direct.is_empty(),
        "containerd went to the upstream itself, around wharf:\n{}",
        direct.join("\n")
    );

    // 3. A mirrored registry no route covers: refused, and it receives no write.
    let unrouted_before = unrouted.access_log().len();
    let refused = ctrd.output(&[
        "images",
        "push",
        "--hosts-dir",
        hosts_arg,
        &format!("{}/team/app:v1", unrouted.host()),
        &src_ref,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success(),
        "a push to {} (no [[push]] route) should have been refused:\n{text}",
        unrouted.host()
    );
    // containerd prints the status, not the body (whose message names `[[push]]`).
    assert!(
        text.contains("405") || text.contains("403"),
        "containerd should report wharf's refusal (405 UNSUPPORTED for a mirrored upstream):\n{text}"
    );
    let leaked: Vec<String> = unrouted.access_log()[unrouted_before..]
        .iter()
        .filter(|l| !l.contains("\"GET ") && !l.contains("\"HEAD "))
        .cloned()
        .collect();
    assert!(
        leaked.is_empty(),
        "a refused push reached the registry it named:\n{}",
        leaked.join("\n")
    );
}

/// Proves: dockerd pushes `127.0.0.1:W/ci/app:v1` to wharf (an insecure registry, plain http); the
/// write-through route `ci/app` → `team/app` delivers it before docker's manifest `PUT` is answered,
/// so when `docker push` returns the upstream holds `team/app:v1` with exactly the digest docker
/// reported, its config and layers intact, and wharf holds `ci/app:v1` with that digest too.
#[test]
fn docker_pushes_through_a_route() {
    in_private_network("docker-push-netns", docker_push_through_route);
}

fn docker_push_through_route() {
    let tools = DockerTools::find();
    let upstream = DistRegistry::start();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: route("ci/app", &upstream, "team/app"),
        ..Default::default()
    });
    let w = wharf.host();
    let reference = format!("{w}/ci/app:v1");
    // dockerd gets the image from an archive (`docker load`): this machine's platform of the index.
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1620));
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    let docker = Dockerd::start(tools, wharf.addr());
    docker.docker(&["load", "-i", archive.to_str().unwrap()]);
    let before = upstream.access_log().len();

    let printed = docker.docker(&["push", &reference]);
    // `v1: digest: sha256:<hex> size: <n>`
    let digest = pushed_digest(&printed, "v1");
    let api_up = Api::new(upstream.base());
    let manifest = assert_upstream_tag(&api_up, "team/app", "v1", &digest, &wharf);
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    let mut blobs = vec![m["config"].clone()];
    blobs.extend(m["layers"].as_array().cloned().unwrap_or_default());
    assert!(blobs.len() >= 2, "a config and layers: {m}");
    for b in &blobs {
        let d = b["digest"].as_str().expect("descriptor digest");
        api_up.assert_blob_intact("team/app", d, b["size"].as_u64().expect("descriptor size"));
    }
    let local = Api::new(wharf.base()).get_manifest("ci/app", "v1");
    local.assert_status(200);
    assert_eq!(
        sha256_digest(&local.body),
        digest,
        "wharf's ci/app:v1 is not what docker pushed"
    );
    let direct = direct_requests(&upstream, before, "docker/");
    assert!(
        direct.is_empty(),
        "docker pushed to the upstream itself, around wharf:\n{}",
        direct.join("\n")
    );
}

/// `[delivery] write_through_timeout_secs` for the down-upstream tests.
const WRITE_THROUGH_SECS: u64 = 3;
/// How much later than that a client may get its answer: the try under way, a busy machine.
const SLACK: Duration = Duration::from_secs(20);

/// A write-through route `ci/app` → `team/app` on `upstream`, with the write-through bound and
/// retries quick and many enough that only the bound ends a delivery.
fn bounded_route(upstream: &DistRegistry) -> String {
    format!(
        "{}\n[delivery]\nretry_initial_ms = 200\nretry_max_secs = 2\nmax_attempts = 30\n\
         write_through_timeout_secs = {WRITE_THROUGH_SECS}\n",
        route("ci/app", upstream, "team/app")
    )
}

/// What a client printed about a push to a down upstream says why, and nothing of the mirror's.
fn assert_says_why(client: &str, printed: &str, upstream: &str) {
    for needle in [
        "unavailable",
        upstream,
        "could not be reached",
        "write_through_timeout_secs",
        "store-and-forward",
    ] {
        assert!(
            printed.contains(needle),
            "{client} should show wharf's reason ({needle:?}):\n{printed}"
        );
    }
    assert!(
        !printed.contains("cached already"),
        "a push failure is not a mirror's:\n{printed}"
    );
}

/// Proves: `docker push` through a write-through route whose upstream is down (its port closed)
/// fails within `write_through_timeout_secs` (+ slack), and docker prints wharf's reason:
/// "unavailable: ..." naming the upstream, that it could not be reached, the bound and the
/// store-and-forward alternative; wharf has no `ci/app:v1`. With the upstream back, the same
/// `docker push` again succeeds and the upstream holds the image.
#[test]
fn docker_push_to_a_down_upstream_fails_in_time_with_the_reason() {
    in_private_network("docker-push-down-netns", docker_push_to_a_down_upstream);
}

fn docker_push_to_a_down_upstream() {
    let tools = DockerTools::find();
    let mut upstream = DistRegistry::start();
    let up = upstream.host();
    upstream.stop();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: bounded_route(&upstream),
        ..Default::default()
    });
    let reference = format!("{}/ci/app:v1", wharf.host());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1630));
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    let docker = Dockerd::start(tools, wharf.addr());
    docker.docker(&["load", "-i", archive.to_str().unwrap()]);

    let started = Instant::now();
    let ran = docker.try_docker(&["push", &reference]);
    let took = started.elapsed();
    let printed = format!("{}{}", ran.stdout, ran.stderr);
    eprintln!("docker push took {took:?} and printed:\n{printed}");
    assert!(
        !ran.status.success(),
        "docker push to a down upstream succeeded:\n{printed}"
    );
    assert!(
        took < Duration::from_secs(WRITE_THROUGH_SECS) + SLACK,
        "docker push took {took:?} with write_through_timeout_secs = {WRITE_THROUGH_SECS}"
    );
    assert_says_why("docker", &printed, &up);
    Api::new(wharf.base())
        .get_manifest("ci/app", "v1")
        .assert_status(404);

    upstream.start_again();
    let printed = docker.docker(&["push", &reference]);
    let digest = pushed_digest(&printed, "v1");
    assert_upstream_tag(
        &Api::new(upstream.base()),
        "team/app",
        "v1",
        &digest,
        &wharf,
    );
}

/// Proves: `podman push` through a write-through route whose upstream is down fails, each of its 4
/// tries within `write_through_timeout_secs` (+ slack), and podman prints wharf's reason
/// ("unavailable: ..." naming the upstream, that it could not be reached, the bound and the
/// store-and-forward alternative); each try superseded the one before, so the journal holds one failed
/// entry. With the upstream back, the same `podman push` again succeeds and the upstream holds the
/// image.
#[test]
fn podman_push_to_a_down_upstream_fails_in_time_with_the_reason() {
    let mut upstream = DistRegistry::start();
    let up = upstream.host();
    upstream.stop();
    let wharf = Wharf::start(WharfOptions {
        extra_toml: bounded_route(&upstream),
        ..Default::default()
    });
    let reference = format!("{}/ci/app:v1", wharf.host());
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("v1", 1640));
    let archive = wharf.scratch("archive").join("app.tar");
    crate::mirror::docker_daemon::docker_archive(&layout, &reference, &archive);
    let home = wharf.scratch("podman");
    let podman = |args: &[&str]| {
        let out = crate::tls_listener::podman(&home)
            .args(args)
            .output()
            .expect("run podman");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), printed)
    };
    let (ok, printed) = podman(&["load", "-i", archive.to_str().unwrap()]);
    assert!(ok, "podman load:\n{printed}");

    let started = Instant::now();
    let (ok, printed) = podman(&["push", "--tls-verify=false", &reference]);
    let took = started.elapsed();
    eprintln!("podman push took {took:?} and printed:\n{printed}");
    assert!(!ok, "podman push to a down upstream succeeded:\n{printed}");
    // 4 tries, 1 + 1 + 1 s apart.
    let tries = 4;
    assert!(
        took < (Duration::from_secs(WRITE_THROUGH_SECS) + SLACK) * tries,
        "podman push took {took:?} for {tries} tries with write_through_timeout_secs = \
         {WRITE_THROUGH_SECS}"
    );
    assert_says_why("podman", &printed, &up);
    Api::new(wharf.base())
        .get_manifest("ci/app", "v1")
        .assert_status(404);
    // Each try made a journal entry and superseded the one before: one failed entry is left.
    let entries = crate::push::entries_for(&wharf, "ci/app", "v1");
    assert!(
        entries.len() == 1 && entries[0]["state"] == "failed",
        "podman's {tries} tries should leave one failed entry: {entries:#?}"
    );

    upstream.start_again();
    let (ok, printed) = podman(&["push", "--tls-verify=false", &reference]);
    assert!(ok, "podman push with the upstream back:\n{printed}");
    let local = Api::new(wharf.base()).get_manifest("ci/app", "v1");
    local.assert_status(200);
    let digest = local
        .header("Docker-Content-Digest")
        .expect("Docker-Content-Digest")
        .to_owned();
    assert_upstream_tag(
        &Api::new(upstream.base()),
        "team/app",
        "v1",
        &digest,
        &wharf,
    );
}
