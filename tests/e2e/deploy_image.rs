//! examples/deploy/Containerfile: wharf's image FROM scratch around a static binary, built with buildah
//! (no base image, no network), run with podman, and pulled through with skopeo.
//!
//! The static binary is the tests' own build of wharf relinked with glibc linked in (`+crt-static`:
//! no musl target can be installed on these machines), which tests/run.sh writes, stripped, to
//! `target/deploy-static/wharf` in seconds. A separate static release build would compile wasmtime a
//! second time: most of CI's time on 2 CPUs. `WHARF_STATIC_BIN` names one built elsewhere, e.g. the
//! release build examples/deploy/README.md describes.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::SmallImage;
use crate::harness::{free_port, require_tool, DistRegistry};
use crate::http::Api;
use crate::oci::hex_part;
use crate::skopeo::Skopeo;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `$WHARF_STATIC_BIN`, else the one tests/run.sh relinks.
fn static_wharf() -> PathBuf {
    if let Some(p) = std::env::var_os("WHARF_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let bin = workspace().join("target/deploy-static/wharf");
    assert!(
        bin.exists(),
        "{} is missing: tests/run.sh makes it (it relinks target/debug/wharf with \
         `cargo rustc -p wharf --bin wharf -- -C target-feature=+crt-static`); run the tests \
         through tests/run.sh, or set WHARF_STATIC_BIN to a static wharf",
        bin.display()
    );
    bin
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// This process's hard limit of `resource`, at most 16384 (runc failed to set an nproc of 65535
/// under a hard limit of 96364 on the development machine; 32768 worked).
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    let ok = unsafe { libc::getrlimit(resource, &mut r) } == 0;
    assert!(ok, "getrlimit: {}", std::io::Error::last_os_error());
    r.rlim_max.min(16384)
}

/// buildah and podman on a container store of the test's own (vfs: works on any file system, needs
/// no overlay mounts), removed with the test; nothing from the machine's store is seen or changed.
struct Containers {
    buildah: PathBuf,
    podman: PathBuf,
    runc: PathBuf,
    home: tempfile::TempDir,
    running: Option<String>,
}

impl Containers {
    fn new() -> Containers {
        Containers {
            buildah: require_tool("buildah", "apt-get install buildah (or run tests/setup.sh)"),
            podman: require_tool("podman", "apt-get install podman (or run tests/setup.sh)"),
            runc: require_tool("runc", "apt-get install runc (or run tests/setup.sh)"),
            home: tempfile::Builder::new()
                .prefix("wharf-e2e-containers-")
                .tempdir()
                .expect("tempdir"),
            running: None,
        }
    }

    fn store_args(&self) -> Vec<String> {
        let h = self.home.path();
        vec![
            format!("--root={}", h.join("root").display()),
            format!("--runroot={}", h.join("runroot").display()),
            "--storage-driver=vfs".into(),
        ]
    }

    fn env(&self, cmd: &mut Command) {
        let h = self.home.path();
        // No registries.conf, policy or auth of the machine's: the build pulls nothing anyway.
        fs::write(h.join("registries.conf"), "").unwrap();
        fs::write(h.join("auth.json"), "{\"auths\":{}}").unwrap();
        cmd.env("CONTAINERS_REGISTRIES_CONF", h.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", h.join("auth.json"))
            .env("TMPDIR", h)
            .env("XDG_RUNTIME_DIR", h.join("runroot"));
    }

    fn buildah(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.buildah);
        self.env(&mut cmd);
        run(cmd.args(self.store_args()).args(args))
    }

    fn podman_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.podman);
        self.env(&mut cmd);
        cmd.args(self.store_args())
            // No systemd on every machine: cgroups by hand, events to a file.
            .args(["--cgroup-manager=cgroupfs", "--events-backend=file"])
            // crun refuses hybrid cgroup hierarchies (cgroup v1 controllers beside v2), which
            // some machines have; runc (which podman's Debian package brings) runs on both.
            .arg(format!("--runtime={}", self.runc.display()))
            .arg(format!(
                "--tmpdir={}",
                self.home.path().join("libpod-tmp").display()
            ))
            .args(args);
        cmd
    }

    fn podman(&self, args: &[&str]) -> Output {
        run(&mut self.podman_cmd(args))
    }

    fn logs(&self) -> String {
        let Some(name) = &self.running else {
            return String::new();
        };
        match self.podman_cmd(&["logs", name]).output() {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("<podman logs: {e}>"),
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if let Some(name) = self.running.take() {
            let _ = self
                .podman_cmd(&["rm", "--force", "--time=5", &name])
                .output();
        }
        let _ = self.podman_cmd(&["system", "reset", "--force"]).output();
    }
}

/// Proves: the binary is static (no interpreter, no
/// shared library), the Containerfile builds an image from it with nothing else (FROM scratch, no
/// network), and that image, run by podman with no file of its own but the binary, serves as a
/// mirror: skopeo pulls an image of a local distribution registry through it (the upstream named
/// `localhost`, so names resolve with no /etc of the image's), bytes and digests unchanged, and the
/// blobs land in the data volume.
#[test]
fn containerfile_image_mirrors_a_registry() {
    let mut containers = Containers::new();
    let file = require_tool("file", "apt-get install file");
    let strip = require_tool("strip", "apt-get install binutils");
    let bin = static_wharf();

    let described = String::from_utf8_lossy(&run(Command::new(file).arg(&bin)).stdout).to_string();
    assert!(
        described.contains("statically linked") || described.contains("static-pie linked"),
        "not a static binary: {described}"
    );
    let ldd = Command::new("ldd").arg(&bin).output().expect("run ldd");
    let ldd_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked"),
        "ldd finds shared libraries: {ldd_text}"
    );

    // The build context: the Containerfile as committed, and the binary.
    let context = containers.home.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::copy(
        workspace().join("examples/deploy/Containerfile"),
        context.join("Containerfile"),
    )
    .unwrap();
    // Stripped, as README.md says: the release profile keeps line tables (170 MB; 30 MB without).
    run(Command::new(&strip)
        .arg("-o")
        .arg(context.join("wharf"))
        .arg(&bin));
    let tag = format!("localhost/wharf-e2e:{}", std::process::id());
    containers.buildah(&[
        "build",
        "--network=none",
        "--pull=never",
        "-f",
        &context.join("Containerfile").display().to_string(),
        "-t",
        &tag,
        &context.display().to_string(),
    ]);
    let inspect = containers.buildah(&["inspect", "--type=image", &tag]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let layers = inspect["OCIv1"]["rootfs"]["diff_ids"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(layers, 1, "FROM scratch + one COPY is one layer: {inspect}");

    // The upstream, and an image in it.
    let dist = DistRegistry::start();
    let dist_api = Api::new(dist.base());
    let image = SmallImage::push(&dist_api, "team/app", "v1", 1701);

    // wharf's config, mounted read-only; its data in a volume of the test's.
    let port = free_port();
    let etc = containers.home.path().join("etc");
    let data = containers.home.path().join("data");
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&data).unwrap();
    fs::write(
        etc.join("wharf.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[mirror]\ndefault_upstream = \"\"\n\n\
             [[upstream]]\nhost = \"dist.test\"\nendpoint = \"http://localhost:{}\"\ninsecure = true\n\n\
             # Hermetic: the built-in docker.io upstream pointed at a closed port.\n\
             [[upstream]]\nhost = \"docker.io\"\nendpoint = \"http://127.0.0.1:9\"\ninsecure = true\n",
            dist.addr().port()
        ),
    )
    .unwrap();
    let name = format!("wharf-e2e-{}", std::process::id());
    // podman gives a container run by root limits above this machine's (1048576 descriptors), and
    // without CAP_SYS_RESOURCE (as in a sandbox) the runtime cannot set them: ask for what we have.
    let (nofile, nproc) = (
        hard_limit(libc::RLIMIT_NOFILE),
        hard_limit(libc::RLIMIT_NPROC),
    );
    containers.podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network=host",
        "--read-only",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        &format!("--ulimit=nofile={nofile}:{nofile}"),
        &format!("--ulimit=nproc={nproc}:{nproc}"),
        "-v",
        &format!("{}:/etc/wharf:ro", etc.display()),
        "-v",
        &format!("{}:/data", data.display()),
        &tag,
        "serve",
        "--config",
        "/etc/wharf/wharf.toml",
    ]);
    containers.running = Some(name);

    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the container's wharf did not listen on 127.0.0.1:{port}:\n{}",
            containers.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let skopeo = Skopeo::new();
    let through = format!("docker://127.0.0.1:{port}/dist.test/team/app:v1");
    let raw = skopeo.inspect_raw(&through);
    assert!(
        raw == image.manifest,
        "the manifest through the container differs from the upstream's:\n{}",
        containers.logs()
    );
    let out = containers.home.path().join("pulled");
    skopeo.copy(&through, &format!("oci:{}:v1", out.display()));
    for d in [&image.config.digest, &image.layer.digest] {
        let hex = hex_part(d);
        assert!(
            out.join("blobs/sha256").join(hex).exists(),
            "skopeo did not get {d}"
        );
        assert!(
            data.join("blobs/sha256").join(&hex[..2]).join(hex).exists(),
            "{d} is not in the container's data volume:\n{}",
            containers.logs()
        );
    }
}
