//! Several wharf processes serving one cache (issue 27): replicas on the same Garage and Postgres.

use serde_json::Value;

use crate::fixtures::{empty_config, image_manifest};
use crate::gc::{collect, options, wait_for_dry_run};
use crate::harness::Wharf;
use crate::http::Api;
use crate::layout::Desc;
use crate::oci::{sha256_digest, Noise, OCI_LAYER_TAR, OCI_MANIFEST};

fn removed(report: &Value) -> Vec<String> {
    report["removed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["digest"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Proves (issue 27, point 4): replica A collects while a client pushes through replica B and takes
/// its time between the blobs and the manifest (distribution's race: blobs up, manifest a while
/// later). A's snapshot cannot see the blobs referenced yet; B's touches, in the shared metadata,
/// keep them. Every acked push is whole on both replicas.
#[test]
fn a_collection_on_one_replica_spares_what_a_push_through_another_is_about_to_reference() {
    let grace = 8;
    let a = Wharf::start_shared(options(grace));
    let b = Wharf::start_sharing(options(grace), &a);
    let (api_a, api_b) = (Api::new(a.base()), Api::new(b.base()));
    // A's own start protects everything for a grace window: past it, only touches and leases do.
    wait_for_dry_run(&a, "A's start protection to pass", |r| r["note"].is_null());
    let (config, config_bytes) = empty_config();
    for round in 0..3u64 {
        let layer = Noise::bytes(round + 40, 150_000);
        let layer_digest = sha256_digest(&layer);
        api_b.push_blob("replicas/app", config_bytes);
        api_b.push_blob("replicas/app", &layer);
        // Blobs up through B, no manifest yet: A collects now.
        let r = collect(&a, false);
        let gone = removed(&r);
        assert!(
            !gone.contains(&layer_digest) && !gone.contains(&config.digest),
            "round {round}: A collected what B's client had just uploaded: {r}"
        );
        let desc = Desc {
            media_type: OCI_LAYER_TAR.into(),
            digest: layer_digest.clone(),
            size: layer.len() as u64,
        };
        let manifest = image_manifest(&config, &[desc], None);
        let tag = format!("v{round}");
        api_b
            .put_manifest("replicas/app", &tag, OCI_MANIFEST, &manifest)
            .assert_status(201);
        for api in [&api_a, &api_b] {
            api.get_manifest("replicas/app", &tag).assert_status(200);
            let r = api.request(
                "GET",
                &format!("/v2/replicas/app/blobs/{layer_digest}"),
                &[],
                None,
            );
            r.assert_status(200);
            assert_eq!(sha256_digest(&r.body), layer_digest, "round {round}");
        }
    }
}

/// Polls `f` every 20 ms for up to 2 s: what "at once" allows for a notification between processes.
fn soon(what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !f() {
        assert!(std::time::Instant::now() < until, "{what}: not within 2 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Proves (issue 27, point 1): what replica A acknowledges, replica B serves at once, as skopeo pulls
/// it, and a deletion on A is a 404 on B at once, though B had the tag and manifest cached.
#[test]
fn a_push_and_a_delete_on_one_replica_are_seen_on_another_at_once() {
    let opts = || crate::harness::WharfOptions {
        delete_enabled: Some(true),
        ..Default::default()
    };
    let a = Wharf::start_shared(opts());
    let b = Wharf::start_sharing(opts(), &a);
    let (api_a, api_b) = (Api::new(a.base()), Api::new(b.base()));
    let img = crate::fixtures::SmallImage::push(&api_a, "replicas/rw", "v1", 91);
    img.assert_intact(&api_b);
    let dir = b.scratch("pulled");
    crate::skopeo::Skopeo::new().copy(
        &format!("docker://{}/replicas/rw:v1", b.host()),
        &format!("oci:{}:v1", dir.display()),
    );

    // B has the tag and the manifest cached now; A deletes the tag, then the manifest.
    api_a
        .delete("/v2/replicas/rw/manifests/v1")
        .assert_status(202);
    soon("B forgets the deleted tag", || {
        api_b.get_manifest("replicas/rw", "v1").status == 404
    });
    api_b
        .get_manifest("replicas/rw", &img.manifest_digest)
        .assert_status(200);
    api_a
        .delete(&format!(
            "/v2/replicas/rw/manifests/{}",
            img.manifest_digest
        ))
        .assert_status(202);
    soon("B forgets the deleted manifest", || {
        api_b
            .get_manifest("replicas/rw", &img.manifest_digest)
            .status
            == 404
    });
}

/// The secret the replicas of a test cluster share (the environment, as README tells users).
const CLUSTER_SECRET: &str = "0123456789abcdef0123456789abcdef-test-cluster";

/// `[cluster]` for a replica whose peer listener is on `port`.
fn cluster_options(port: u16) -> crate::harness::WharfOptions {
    crate::harness::WharfOptions {
        extra_toml: format!(
            "[cluster]\nadvertise = \"127.0.0.1:{port}\"\npeer_listen = \"127.0.0.1:{port}\"\n\
             secret_env = \"E2E_CLUSTER_SECRET\"\n"
        ),
        env: vec![("E2E_CLUSTER_SECRET".into(), CLUSTER_SECRET.into())],
        ..Default::default()
    }
}

/// Three replicas on one Garage and Postgres, each with its peer listener.
fn three_replicas() -> (Vec<Wharf>, Vec<u16>) {
    let ports: Vec<u16> = (0..3).map(|_| crate::harness::free_port()).collect();
    let first = Wharf::start_shared(cluster_options(ports[0]));
    let second = Wharf::start_sharing(cluster_options(ports[1]), &first);
    let third = Wharf::start_sharing(cluster_options(ports[2]), &first);
    (vec![first, second, third], ports)
}

/// nginx (Debian `nginx-light`) balancing round-robin over `backends`, no stickiness, bodies
/// streamed both ways; stopped when dropped.
struct Balancer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(backends: &[String]) -> Balancer {
        let sbin = std::path::Path::new("/usr/sbin/nginx");
        let nginx = if sbin.exists() {
            sbin.to_owned()
        } else {
            crate::harness::require_tool(
                "nginx",
                "apt-get install nginx-light (tests/setup.sh installs it)",
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let port = crate::harness::free_port();
        let servers: String = backends
            .iter()
            .map(|b| format!("    server {b};\n"))
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n  upstream wharfs {{\n{servers}  }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
                 location / {{\n      proxy_pass http://wharfs;\n      proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n      proxy_set_header Host $http_host;\n\
                   proxy_request_buffering off;\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Balancer {
            child,
            port,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn base(&self) -> String {
        format!("http://{}", self.host())
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proves (issue 27, point 2): an upload whose POST, PATCHes and PUT land on different replicas
/// (nginx round-robin over three) still uploads: each replica forwards a request for a session
/// another holds to its owner over the peer listener. skopeo pushes and pulls a whole image through
/// the balancer; a chunked upload by hand goes through it too, and every replica serves the blob.
#[test]
fn uploads_spread_over_three_replicas_by_a_balancer_arrive_whole() {
    let (replicas, _) = three_replicas();
    let lb = Balancer::start(&replicas.iter().map(|w| w.host()).collect::<Vec<_>>());
    let api = Api::new(lb.base());

    // By hand: POST, three PATCHes, PUT: five requests, so round-robin puts them on every replica.
    let data = Noise::bytes(2701, 3 * 400_000 + 123);
    let digest = sha256_digest(&data);
    for _ in 0..3 {
        let r = api.request("POST", "/v2/lb/chunked/blobs/uploads/", &[], None);
        r.assert_status(202);
        let mut location = r.header("Location").unwrap().to_owned();
        let mut offset = 0;
        for chunk in data.chunks(400_000) {
            let range = format!("{}-{}", offset, offset + chunk.len() - 1);
            let r = api.request(
                "PATCH",
                &location,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", range.as_str()),
                ],
                Some(chunk),
            );
            r.assert_status(202);
            location = r.header("Location").unwrap().to_owned();
            offset += chunk.len();
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        api.request("PUT", &format!("{location}{sep}digest={digest}"), &[], None)
            .assert_status(201);
    }
    for w in &replicas {
        let r =
            Api::new(w.base()).request("GET", &format!("/v2/lb/chunked/blobs/{digest}"), &[], None);
        r.assert_status(200);
        assert_eq!(sha256_digest(&r.body), digest);
    }

    // A real client: skopeo pushes an image through the balancer and pulls it back whole.
    let layout = crate::layout::write_layout(
        &replicas[0].scratch("src"),
        &crate::layout::LayoutSpec::small("v1", 2701),
    );
    let skopeo = crate::skopeo::Skopeo::new();
    let target = format!("docker://{}/lb/app:v1", lb.host());
    skopeo.copy(&layout.skopeo_ref(), &target);
    let back = replicas[1].scratch("back");
    skopeo.copy(&target, &format!("oci:{}:v1", back.display()));
    crate::layout::assert_same_image(&layout, &back, "v1");
}

/// Proves (issue 27, point 6): the peer listener serves nothing to a caller that is not a replica:
/// unsigned, badly signed or stale requests are refused, and a signed one for anything but an upload
/// session finds nothing.
#[test]
fn the_peer_listener_refuses_whoever_is_not_a_replica() {
    let (replicas, ports) = three_replicas();
    let api = Api::new(replicas[0].base());
    let img = crate::fixtures::SmallImage::push(&api, "peer/app", "v1", 5);
    let peer = Api::new(format!("http://127.0.0.1:{}", ports[0]));
    for path in [
        "/v2/".to_owned(),
        format!("/v2/peer/app/blobs/{}", img.layer.digest),
        "/v2/peer/app/manifests/v1".to_owned(),
        "/v2/peer/app/blobs/uploads/0123456789abcdef0123456789abcdef".to_owned(),
    ] {
        for signature in [None, Some("1.00"), Some("nonsense")] {
            let headers: Vec<(&str, &str)> = signature.iter().map(|s| ("Wharf-Peer", *s)).collect();
            let r = peer.request("GET", &path, &headers, None);
            assert_eq!(r.status, 401, "{path} {signature:?}: {}", r.describe());
            assert!(
                !r.body
                    .windows(16)
                    .any(|w| img.layer.digest.as_bytes().starts_with(w)),
                "nothing of the content"
            );
        }
    }
}

/// `[cluster]` set halfway, or on the files + redb backends, is refused by check-config and at
/// start, naming the key to set.
#[test]
fn an_incomplete_cluster_section_is_refused_naming_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[cluster]\nadvertise = \"127.0.0.1:5001\"\n",
            "cluster.peer_listen",
        ),
        (
            "[cluster]\nadvertise = \"127.0.0.1:5001\"\npeer_listen = \"127.0.0.1:5001\"\nsecret_env = \"E2E_NO_SUCH_SECRET\"\n",
            "shared backends",
        ),
    ];
    for (i, (toml, words)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("c{i}.toml"));
        std::fs::write(
            &file,
            format!(
                "[storage]\ndata_dir = \"{}\"\n{toml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(crate::harness::wharf_bin())
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let text = crate::harness::output_text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(words), "{words}: {text}");
    }
}

/// A push that takes its time: config and layer up, `pause`, then the manifest (what a client that
/// uploads its layers in parallel and writes the manifest last looks like to the collector).
fn slow_push(
    api: &Api,
    repo: &str,
    tag: &str,
    seed: u64,
    pause: std::time::Duration,
) -> crate::fixtures::SmallImage {
    let config_bytes =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let layer_bytes = Noise::bytes(seed, 3000 + seed as usize % 500);
    let config = Desc {
        media_type: crate::oci::OCI_CONFIG.into(),
        digest: api.push_blob(repo, &config_bytes),
        size: config_bytes.len() as u64,
    };
    let layer = Desc {
        media_type: OCI_LAYER_TAR.into(),
        digest: api.push_blob(repo, &layer_bytes),
        size: layer_bytes.len() as u64,
    };
    std::thread::sleep(pause);
    let manifest = image_manifest(&config, std::slice::from_ref(&layer), None);
    let manifest_digest = api.push_manifest(repo, tag, OCI_MANIFEST, &manifest);
    crate::fixtures::SmallImage {
        repo: repo.into(),
        tag: tag.into(),
        config,
        layer,
        manifest,
        manifest_digest,
    }
}

/// Proves (issue 27, point 7): replica A collects every second while four clients push through
/// replicas B and C, each pausing up to half the grace window between its blobs and its manifest.
/// Every push is acknowledged and whole on all three replicas afterwards, and the collections did
/// run: a blob nobody names, pushed through C, is gone.
#[test]
fn collections_in_a_loop_on_one_replica_lose_nothing_pushed_through_the_others() {
    let grace = 4;
    let collecting = crate::harness::WharfOptions {
        extra_toml: format!("[gc]\ngrace_secs = {grace}\ninterval_secs = 1\n"),
        ..Default::default()
    };
    let a = Wharf::start_shared(collecting);
    let b = Wharf::start_sharing(options(grace), &a);
    let c = Wharf::start_sharing(options(grace), &a);
    let apis = [Api::new(a.base()), Api::new(b.base()), Api::new(c.base())];
    wait_for_dry_run(&a, "A's start protection to pass", |r| r["note"].is_null());
    let junk = apis[2].push_blob("soak/junk", &Noise::bytes(4242, 2000));

    let pushed: Vec<crate::fixtures::SmallImage> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let api = &apis[1 + (t as usize % 2)];
                s.spawn(move || {
                    (0..6u64)
                        .map(|i| {
                            let pause = std::time::Duration::from_millis(i % 3 * 900);
                            slow_push(
                                api,
                                &format!("soak/w{t}"),
                                &format!("v{i}"),
                                t * 100 + i,
                                pause,
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(pushed.len(), 24);
    for img in &pushed {
        for api in &apis {
            img.assert_intact(api);
        }
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while apis[0].head(&format!("/v2/soak/junk/blobs/{junk}")).status != 404 {
        assert!(
            std::time::Instant::now() < until,
            "A's collections never removed the unreferenced blob"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Proves (issue 27, point 7): containerd's `ctr` and a real dockerd push and pull through nginx
/// round-robin over three replicas, as skopeo does: each pulls the image skopeo pushed through the
/// balancer, re-tags it, pushes it back through the balancer, and every replica then serves what
/// the client said it pushed.
#[test]
fn ctr_and_dockerd_push_and_pull_through_the_balancer() {
    crate::mirror::docker_daemon::in_private_network("replicas-clients-netns", || {
        use crate::mirror::ctr::Containerd;
        use crate::mirror::docker_daemon::{pushed_digest, DockerTools, Dockerd};
        let (replicas, _) = three_replicas();
        let lb = Balancer::start(&replicas.iter().map(|w| w.host()).collect::<Vec<_>>());
        let layout = crate::layout::write_layout(
            &replicas[0].scratch("src"),
            &crate::layout::LayoutSpec::small("v1", 2711),
        );
        let seed = format!("{}/lb/seed:v1", lb.host());
        crate::skopeo::Skopeo::new().copy(&layout.skopeo_ref(), &format!("docker://{seed}"));

        let ctrd = Containerd::start();
        ctrd.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--all-platforms",
            "--plain-http",
            &seed,
        ]);
        let by_ctr = format!("{}/lb/ctr:mine", lb.host());
        ctrd.ctr(&["images", "tag", &seed, &by_ctr]);
        ctrd.ctr(&["images", "push", "--plain-http", &by_ctr]);
        let puller = Containerd::start();
        puller.ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--plain-http",
            "--platform",
            "linux/amd64",
            &by_ctr,
        ]);

        let lb_addr: std::net::SocketAddr = lb.host().parse().unwrap();
        let docker = Dockerd::start(DockerTools::find(), lb_addr);
        docker.docker(&["pull", &seed]);
        let by_docker = format!("{}/lb/docker:mine", lb.host());
        docker.docker(&["tag", &seed, &by_docker]);
        let printed = docker.docker(&["push", &by_docker]);
        let digest = pushed_digest(&printed, "mine");
        for w in &replicas {
            let api = Api::new(w.base());
            let r = api.get_manifest("lb/docker", &digest);
            r.assert_status(200);
            assert_eq!(sha256_digest(&r.body), digest, "{}", w.host());
            api.get_manifest("lb/ctr", "mine").assert_status(200);
        }
    });
}
