//! A real Docker daemon (dockerd 20.10, Debian `docker.io`) pulls through wharf as its
//! `registry-mirrors` mirror: the Docker host-less form (see `docker_form.rs`) as dockerd really sends
//! it, not as we think it does.
//!
//! When its mirror fails, dockerd falls back to Docker Hub. So the test runs, with wharf, the upstream
//! and dockerd, in a private network namespace that has only loopback: it enters one on a thread of its
//! own (`unshare(CLONE_NEWNET)` changes only the calling thread; every process and socket that thread
//! then creates lives in it), and whatever dockerd tries, nothing leaves the machine. That needs root.
//!
//! What dockerd needs to run here (worked out against dockerd 20.10.24 with containerd 1.6):
//! - `storage-driver: vfs` (plain copies, no overlay mounts), `bridge: none` and no iptables, ip
//!   forwarding or masquerading (nothing touches the host's network setup), its own `data-root`,
//!   `exec-root`, `pidfile`, socket and trust key (`deprecated-key-path`, else it writes
//!   /etc/docker/key.json) in a temp dir;
//! - it bind-mounts `data-root` onto itself (to make it a shared mount) and undoes that on a graceful
//!   stop; after a SIGKILL the mount would stay, so Drop unmounts whatever is left under the temp dir;
//! - it starts its own containerd (new session, pid in `<exec-root>/containerd/containerd.pid`), unless
//!   a system containerd listens on /run/containerd/containerd.sock, which it then uses instead;
//! - outside its dirs, dockerd creates /run/docker/plugins (plugin sockets, a fixed path) and its
//!   containerd's `opt` plugin /opt/containerd (empty `bin/` and `lib/`): Drop removes those again
//!   when the test created them (empty directories only).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::{
    log_tail, require_tool, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions,
};
use crate::layout::{write_layout, LayoutSpec, PlatformImage};

use super::relay::Relay;
use super::{assert_cached_intact, push_to_upstream};

const DAEMON_READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(50);

/// Proves: dockerd with wharf as its `registry-mirrors` mirror pulls `alpine:3` (a 3-platform OCI
/// index upstream as `library/alpine:3`) through wharf: it asks for `HEAD
/// /v2/library/alpine/manifests/3` with no `ns=`, wharf serves it from the upstream configured for
/// docker.io, and the image dockerd records is the native platform's (its ID is that platform's config
/// digest, its repo digest the index's), with everything it needed now in wharf's store; then, with the
/// upstream stopped and the image removed from dockerd, it pulls `alpine:3` again from wharf's cache.
#[test]
fn docker_daemon_pulls_through_wharf_as_its_registry_mirror() {
    in_private_network("docker-netns", pull_through_wharf_then_from_its_cache);
}

fn pull_through_wharf_then_from_its_cache() {
    // Before anything else starts: a missing dockerd fails here, not after a minute of setup.
    let tools = DockerTools::find();
    let mut registry = DistRegistry::start();
    // docker.io is the local registry: the `library/` mapping applies, and nothing leaves the machine.
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            default_upstream: Some("docker.io".into()),
            upstreams: vec![UpstreamSpec::http("docker.io", registry.addr())],
            ..Default::default()
        },
        ..Default::default()
    });
    let layout = write_layout(&wharf.scratch("src"), &LayoutSpec::small("3", 930));
    push_to_upstream(&registry, &layout, "library/alpine");
    let native = native_image(&layout.images);
    // wharf does not log query strings, so a relay in front of it records what dockerd really sent.
    let front = Relay::start(wharf.addr());
    let docker = Dockerd::start(tools, front.addr());

    // 1. Through wharf, from the upstream.
    docker.pull("alpine:3");
    assert_eq!(
        docker.image_id("alpine:3").as_deref(),
        Some(native.config.digest.as_str()),
        "dockerd's image ID for alpine:3 must be the config digest of the {} image",
        native_platform()
    );
    let repo_digests = docker.inspect("alpine:3", "{{json .RepoDigests}}");
    assert!(
        repo_digests.contains(&format!("alpine@{}", layout.index.digest)),
        "dockerd should record the index digest as alpine's repo digest: {repo_digests}"
    );
    let sent = front.seen();
    assert!(
        sent.iter()
            .any(|s| s.method == "HEAD" && s.target == "/v2/library/alpine/manifests/3"),
        "dockerd should resolve the tag with HEAD /v2/library/alpine/manifests/3:\n{}",
        front.describe()
    );
    let with_ns: Vec<_> = sent
        .iter()
        .filter(|s| {
            s.target
                .split_once('?')
                .is_some_and(|(_, q)| q.contains("ns="))
        })
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(
        with_ns.is_empty(),
        "dockerd sends no ns= to a registry mirror: {with_ns:?}"
    );
    for s in &sent {
        let agent = s.header_values("User-Agent").join(" ");
        assert!(
            agent.starts_with("docker/"),
            "{} {} did not come from dockerd (User-Agent {agent:?})",
            s.method,
            s.target
        );
    }
    // wharf served it (its log has the tag lookup) and now holds all of it.
    let tag_lookups = || {
        fs::read_to_string(wharf.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("method=HEAD path=/v2/library/alpine/manifests/3 status=200"))
            .count()
    };
    // wharf writes its log in batches (every 50 ms): wait for the line rather than read once.
    let lookups_at_least = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = tag_lookups();
            if got >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let first_lookups = lookups_at_least(1);
    assert!(
        first_lookups >= 1,
        "wharf's log has no HEAD /v2/library/alpine/manifests/3 answered 200:\n{}",
        log_tail(&wharf.log_path(), 30)
    );
    let mut wanted = vec![
        layout.index.digest.clone(),
        native.manifest.digest.clone(),
        native.config.digest.clone(),
    ];
    wanted.extend(native.layers.iter().map(|l| l.digest.clone()));
    for d in &wanted {
        assert_cached_intact(&wharf, d);
    }

    // 2. The upstream is gone, and so is dockerd's copy: the pull can only come from wharf's cache (the
    //    fallback to Docker Hub has no network to go to).
    registry.stop();
    docker.rmi("alpine:3");
    assert_eq!(
        docker.image_id("alpine:3"),
        None,
        "alpine:3 is still there after rmi"
    );
    let layer_gets = |f: &Relay| {
        native
            .layers
            .iter()
            .map(|l| f.count("GET", &format!("/v2/library/alpine/blobs/{}", l.digest)))
            .collect::<Vec<_>>()
    };
    let layers_before = layer_gets(&front);
    docker.pull("alpine:3");
    assert_eq!(
        docker.image_id("alpine:3").as_deref(),
        Some(native.config.digest.as_str()),
        "the second pull gave another image"
    );
    assert!(
        lookups_at_least(first_lookups + 1) > first_lookups,
        "the second pull did not resolve the tag at wharf:\n{}",
        log_tail(&wharf.log_path(), 30)
    );
    let layers_after = layer_gets(&front);
    assert!(
        layers_after.iter().zip(&layers_before).all(|(a, b)| a > b),
        "dockerd should have fetched every layer again from wharf (GETs per layer before {layers_before:?}, \
         after {layers_after:?}):\n{}",
        front.describe()
    );
}

/// Writes `layout` as a `docker load` archive naming it `reference` (skopeo's `docker-archive:`).
pub(crate) fn docker_archive(layout: &crate::layout::Layout, reference: &str, path: &Path) {
    let out = crate::skopeo::Skopeo::new().output(&[
        "copy",
        &layout.skopeo_ref(),
        &format!("docker-archive:{}:{reference}", path.display()),
    ]);
    assert!(
        out.status.success(),
        "skopeo to docker-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `test` on a thread of its own in a private network namespace (see [`enter_private_network`]):
/// the namespace ends with that thread, whatever libtest does with its own threads; a panic in
/// `test` fails the caller.
pub(crate) fn in_private_network(name: &str, test: impl FnOnce() + Send + 'static) {
    let t = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            enter_private_network();
            test();
        })
        .expect("spawn the test thread");
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Moves the calling thread (and every process and socket it creates from now on) into a new network
/// namespace with only loopback, up. Fails the test if that is refused: it needs root.
pub(crate) fn enter_private_network() {
    // SAFETY: unshare(2) with a flag constant; it changes only this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "unshare(CLONE_NEWNET) failed ({}): this test needs root, to run dockerd, wharf and its \
             upstream in a private network namespace where dockerd's fallback to Docker Hub cannot \
             leave the machine; run it as root, e.g. `sudo -E cargo test -p wharf-e2e docker_daemon`",
            std::io::Error::last_os_error()
        );
    }
    let ns = |p: &str| fs::read_link(p).unwrap_or_else(|e| panic!("readlink {p}: {e}"));
    let ours = ns("/proc/thread-self/ns/net");
    let process = ns("/proc/self/ns/net");
    assert_ne!(
        ours, process,
        "this thread is still in the process's network namespace"
    );
    let ip = require_tool("ip", "apt-get install iproute2");
    let out = Command::new(&ip)
        .args(["link", "set", "lo", "up"])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip link set lo up failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // /proc/thread-self/net is this thread's namespace (unlike /sys/class/net, the mounter's).
    let dev =
        fs::read_to_string("/proc/thread-self/net/dev").expect("read /proc/thread-self/net/dev");
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "the private network namespace should have only loopback"
    );
}

fn native_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => panic!("no test image for this machine's architecture ({other})"),
    }
}

/// The platform image dockerd picks from the index on this machine.
pub(crate) fn native_image(images: &[PlatformImage]) -> &PlatformImage {
    images
        .iter()
        .find(|i| i.platform.os == "linux" && i.platform.architecture == native_platform())
        .unwrap_or_else(|| panic!("the test image has no linux/{}", native_platform()))
}

#[derive(Clone, Debug)]
pub(crate) struct DockerTools {
    dockerd: PathBuf,
    docker: PathBuf,
}

impl DockerTools {
    pub(crate) fn find() -> DockerTools {
        // dockerd lives in /usr/sbin, which a non-root PATH may lack.
        let find = |name: &str, what: &str| {
            let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            dirs.extend(["/usr/sbin", "/usr/bin"].map(PathBuf::from));
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| is_executable(p))
                .unwrap_or_else(|| {
                    panic!(
                        "{what} not found: install Debian package docker.io (tests/setup.sh does)"
                    )
                })
        };
        DockerTools {
            dockerd: find("dockerd", "dockerd"),
            docker: find("docker", "docker (the client)"),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a finished client command printed.
pub(crate) struct Ran {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// A private dockerd for one test, in a temp dir, with `mirror` as its only registry mirror.
pub(crate) struct Dockerd {
    child: Option<Child>,
    tools: DockerTools,
    /// The directories of `OUTSIDE_DIRS` that did not exist before dockerd started.
    created_outside: Vec<&'static str>,
    home: TempDir,
}

/// Directories dockerd and its containerd create outside their own dirs, children before parents.
const OUTSIDE_DIRS: [&str; 5] = [
    "/run/docker/plugins",
    "/run/docker",
    "/opt/containerd/bin",
    "/opt/containerd/lib",
    "/opt/containerd",
];

/// The digest `docker push` printed for `tag` (its `<tag>: digest: sha256:... size: N` line).
pub(crate) fn pushed_digest(printed: &str, tag: &str) -> String {
    let prefix = format!("{tag}: digest: ");
    printed
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("docker push printed no digest for {tag}:\n{printed}"))
        .to_owned()
}

impl Dockerd {
    pub(crate) fn start(tools: DockerTools, mirror: SocketAddr) -> Dockerd {
        let home = tempfile::Builder::new()
            .prefix("wharf-e2e-docker-")
            .tempdir()
            .expect("tempdir");
        let h = home.path();
        let config = serde_json::json!({
            "storage-driver": "vfs",
            "bridge": "none",
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "data-root": h.join("root"),
            "exec-root": h.join("exec"),
            "pidfile": h.join("docker.pid"),
            "deprecated-key-path": h.join("key.json"),
            "hosts": [format!("unix://{}", h.join("docker.sock").display())],
            "registry-mirrors": [format!("http://{mirror}")],
            "insecure-registries": [mirror.to_string()],
        });
        fs::write(
            h.join("daemon.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        fs::create_dir_all(h.join("client")).unwrap();
        let created_outside = OUTSIDE_DIRS
            .into_iter()
            .filter(|d| !Path::new(d).exists())
            .collect();
        let log = fs::File::create(h.join("dockerd.log")).expect("create dockerd.log");
        let mut cmd = Command::new(&tools.dockerd);
        cmd.arg("--config-file").arg(h.join("daemon.json"));
        clean_env(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", tools.dockerd.display()));
        let mut d = Dockerd {
            child: Some(child),
            tools,
            created_outside,
            home,
        };
        d.wait_ready();
        d
    }

    fn log_path(&self) -> PathBuf {
        self.home.path().join("dockerd.log")
    }

    fn exec_root(&self) -> PathBuf {
        self.home.path().join("exec")
    }

    /// Polls `docker version` until the daemon answers.
    fn wait_ready(&mut self) {
        let end = Instant::now() + DAEMON_READY_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "dockerd exited with {status} on start\n--- dockerd log tail ---\n{}",
                    log_tail(&self.log_path(), 40)
                );
            }
            let r = self.try_docker(&["version", "--format", "{{.Server.Version}}"]);
            if r.status.success() {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "dockerd did not answer `docker version` within {DAEMON_READY_DEADLINE:?}: {}\n\
                     --- dockerd log tail ---\n{}",
                    r.stderr,
                    log_tail(&self.log_path(), 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs the docker client against this daemon, with a config dir of its own; fails the test if the
    /// command does not finish in time.
    pub(crate) fn try_docker(&self, args: &[&str]) -> Ran {
        let h = self.home.path();
        let (out_path, err_path) = (h.join("client.out"), h.join("client.err"));
        let mut cmd = Command::new(&self.tools.docker);
        clean_env(&mut cmd);
        cmd.env("DOCKER_CONFIG", h.join("client"))
            .env("HOME", h.join("client"))
            .arg("-H")
            .arg(format!("unix://{}", h.join("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.tools.docker.display()));
        let status = match wait_with_deadline(&mut child, COMMAND_DEADLINE) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "docker {} did not finish within {COMMAND_DEADLINE:?}\n--- dockerd log tail ---\n{}",
                    args.join(" "),
                    log_tail(&self.log_path(), 40)
                );
            }
        };
        Ran {
            status,
            stdout: fs::read_to_string(out_path).unwrap_or_default(),
            stderr: fs::read_to_string(err_path).unwrap_or_default(),
        }
    }

    /// Runs the docker client; fails the test, with its output and dockerd's log, if it fails.
    pub(crate) fn docker(&self, args: &[&str]) -> String {
        let r = self.try_docker(args);
        if !r.status.success() {
            panic!(
                "docker {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- dockerd log tail ---\n{}",
                args.join(" "),
                r.status,
                r.stdout,
                r.stderr,
                log_tail(&self.log_path(), 40)
            );
        }
        r.stdout
    }

    fn pull(&self, reference: &str) {
        self.docker(&["pull", reference]);
    }

    pub(crate) fn rmi(&self, reference: &str) {
        self.docker(&["rmi", reference]);
    }

    fn inspect(&self, reference: &str, format: &str) -> String {
        self.docker(&["image", "inspect", "--format", format, reference])
            .trim()
            .to_owned()
    }

    /// The image ID dockerd has for `reference`, or `None` if it has no such image.
    pub(crate) fn image_id(&self, reference: &str) -> Option<String> {
        let r = self.try_docker(&["image", "inspect", "--format", "{{.Id}}", reference]);
        if r.status.success() {
            return Some(r.stdout.trim().to_owned());
        }
        assert!(
            r.stderr.to_lowercase().contains("no such image"),
            "docker image inspect {reference} failed ({}): {}",
            r.status,
            r.stderr
        );
        None
    }

    /// containerd's pid, if this dockerd started one and it still runs as ours (the pid file names
    /// our exec-root in its command line, so a reused pid is never signalled).
    fn containerd_pid(&self) -> Option<libc::pid_t> {
        let pid_file = self.exec_root().join("containerd/containerd.pid");
        let pid: libc::pid_t = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = self.exec_root().display().to_string();
        (alive(pid) && String::from_utf8_lossy(&cmdline).contains(&ours)).then_some(pid)
    }

    /// SIGTERM dockerd (which stops its containerd), SIGKILL what does not stop in time; then undo
    /// what a killed daemon leaves (its containerd, mounts under the temp dir) and the directories it
    /// created outside it.
    fn stop(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on a child we have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            if wait_with_deadline(&mut child, STOP_DEADLINE).is_none() {
                eprintln!("dockerd did not stop within {STOP_DEADLINE:?} of SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A containerd whose dockerd was killed (or restarted it) keeps running in its own session.
        for pid in containerd.into_iter().chain(self.containerd_pid()) {
            if !alive(pid) {
                continue;
            }
            // SAFETY: kill(2) on a pid checked just now to be our containerd.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let end = Instant::now() + STOP_DEADLINE;
            while alive(pid) && Instant::now() < end {
                std::thread::sleep(POLL);
            }
            if alive(pid) {
                eprintln!(
                    "containerd {pid} did not stop within {STOP_DEADLINE:?} of SIGTERM; killing it"
                );
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        unmount_under(self.home.path());
        // Only empty directories: anything with content there is not ours to remove.
        for d in &self.created_outside {
            let _ = fs::remove_dir(d);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- dockerd log tail ({}) ---\n{}\n--- end ---",
                self.log_path().display(),
                log_tail(&self.log_path(), 40)
            );
        }
        self.stop();
    }
}

/// The caller's Docker settings (DOCKER_HOST, DOCKER_CONFIG, ...) and proxies must not change what the
/// test talks to.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy().to_ascii_uppercase();
        if k.starts_with("DOCKER_") || k.ends_with("_PROXY") {
            cmd.env_remove(&key);
        }
    }
}

/// Whether `pid` is running (a zombie waiting for its new parent counts as gone).
fn alive(pid: libc::pid_t) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Detaches every mount at or under `dir` (deepest first), e.g. the data-root bind mount a killed
/// dockerd leaves, so that the temp dir can be removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|p| {
            p.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\")
        })
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let c = std::ffi::CString::new(p.clone()).expect("mount point without NUL");
        // SAFETY: umount2(2) on a path we own, with a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!("umount {p}: {}", std::io::Error::last_os_error());
        }
    }
}
