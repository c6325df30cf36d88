//! The push gateway (issue 16) against real peers: skopeo and raw HTTP (containerd's `?ns=` form) push
//! into a wharf with a `[[push]]` route, and a real `docker-registry` is the upstream the route
//! delivers to. The upstream is always checked directly over HTTP (never through wharf): what it
//! holds, by tag and digest, and every blob of every image, is the witness of a delivery.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::http::{with_query, Api, Resp};
use crate::layout::{Desc, Layout, PlatformImage};
use crate::oci::{self, sha256_digest};
use crate::skopeo::Skopeo;

// Tests.
mod credentials;
mod faults;
mod journal;
mod plugins;
mod reduced;
mod replicas;
mod routes;

/// The local repository prefix every route here maps.
pub const LOCAL: &str = "ci/app";
/// The upstream repository it maps to.
pub const REMOTE: &str = "team/app";

/// A `[[push]]` route from `LOCAL` to `REMOTE` on `upstream` (`127.0.0.1:PORT`, plain http), with
/// more route keys (`mode`, `platforms`) as TOML lines.
pub fn route_toml(upstream: &str, keys: &[&str]) -> String {
    let mut t = format!(
        "\n[[push]]\nprefix = \"{LOCAL}\"\ntarget = \"http://{upstream}/{REMOTE}\"\ninsecure = true\n"
    );
    for k in keys {
        t += &format!("{k}\n");
    }
    t
}

/// An upstream `docker-registry` and a wharf routing pushes of `ci/app[/...]` to its `team/app[/...]`.
pub struct Setup {
    pub registry: DistRegistry,
    pub wharf: Wharf,
}

/// Starts the upstream, then wharf with `options` (its `extra_toml` first: `[gc]`), the route with
/// `route_keys`, and `extra_toml(&upstream)` (plugins that need the upstream's address).
pub fn setup(
    route_keys: &[&str],
    extra_toml: impl FnOnce(&DistRegistry) -> String,
    mut options: WharfOptions,
) -> Setup {
    let registry = DistRegistry::start();
    options.extra_toml = format!(
        "{}\n{}\n{}",
        options.extra_toml,
        route_toml(&registry.host(), route_keys),
        extra_toml(&registry)
    );
    let wharf = Wharf::start(options);
    Setup { registry, wharf }
}

impl Setup {
    /// wharf's registry API.
    pub fn api(&self) -> Api {
        Api::new(self.wharf.base())
    }

    /// The upstream's registry API, asked directly.
    pub fn upstream(&self) -> Api {
        Api::new(self.registry.base())
    }

    /// `skopeo copy --all --preserve-digests` of the layout to `docker://wharf/<name_tag>`.
    pub fn skopeo_push(&self, layout: &Layout, name_tag: &str) {
        Skopeo::new().copy(
            &layout.skopeo_ref(),
            &format!("docker://{}/{name_tag}", self.wharf.host()),
        );
    }

    /// The repositories the upstream holds (`GET /v2/_catalog`).
    pub fn upstream_repositories(&self) -> Vec<String> {
        upstream_repositories(&self.upstream())
    }
}

pub fn upstream_repositories(upstream: &Api) -> Vec<String> {
    let r = upstream.get("/v2/_catalog");
    r.assert_status(200);
    r.json()["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `wharf --config <cfg> push status --json`, asked of the running server: the journal's entries.
pub fn push_status(wharf: &Wharf) -> Vec<Value> {
    let args = ["push", "status", "--json"];
    let out = crate::gc::cli(wharf, &args);
    assert!(
        out.status.success(),
        "wharf {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "wharf {} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v.as_array()
        .unwrap_or_else(|| panic!("push status --json is not an array: {v}"))
        .clone()
}

/// The journal entries for `repository:reference`.
pub fn entries_for(wharf: &Wharf, repository: &str, reference: &str) -> Vec<Value> {
    push_status(wharf)
        .into_iter()
        .filter(|e| e["repository"] == repository && e["reference"] == reference)
        .collect()
}

/// Polls `push status` until the entry for `repository:reference` is delivered, and returns it. A
/// write-through push answered after the upstream acknowledged, so this only covers the journal's own
/// write; a failed entry fails at once.
pub fn wait_delivered(wharf: &Wharf, repository: &str, reference: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = entries_for(wharf, repository, reference);
        if let Some(e) = found.iter().find(|e| e["state"] == "delivered") {
            return e.clone();
        }
        assert!(
            !found.iter().any(|e| e["state"] == "failed"),
            "the push of {repository}:{reference} failed: {found:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "the push of {repository}:{reference} is not delivered after 30 s: {found:#?}\nall: {:#?}",
            push_status(wharf)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first error message of a spec error body.
pub fn error_message(r: &Resp) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The body of `r` says each of `needles`.
pub fn assert_says(r: &Resp, needles: &[&str]) {
    let text = String::from_utf8_lossy(&r.body);
    for n in needles {
        assert!(
            text.contains(n),
            "{}: the answer should say {n:?}: {}",
            r.request,
            r.describe()
        );
    }
}

/// Config and layers of one platform's image.
pub fn image_blobs(img: &PlatformImage) -> Vec<Desc> {
    let mut v = vec![img.config.clone()];
    v.extend(img.layers.iter().cloned());
    v
}

/// Every blob is in the upstream's `repo`: `HEAD` 200 with its size, and a `GET` that hashes to its
/// digest (what a client pulling it from the upstream would check).
pub fn assert_blobs_upstream(upstream: &Api, repo: &str, blobs: &[Desc]) {
    for b in blobs {
        let h = upstream.head(&format!("/v2/{repo}/blobs/{}", b.digest));
        assert_eq!(
            h.status,
            200,
            "the upstream lacks blob {} ({} bytes) in {repo}: {}",
            b.digest,
            b.size,
            h.describe()
        );
        assert_eq!(
            h.header("Content-Length"),
            Some(b.size.to_string().as_str()),
            "{}",
            h.describe()
        );
        let (status, got, len, _) = upstream.get_blob_hashed(repo, &b.digest);
        assert_eq!(
            (status, got.as_str(), len),
            (200, b.digest.as_str(), b.size),
            "GET {repo} blob {} from the upstream",
            b.digest
        );
    }
}

/// The upstream serves the manifest `reference` of `repo` with exactly `bytes` (and their digest).
pub fn assert_manifest_upstream(upstream: &Api, repo: &str, reference: &str, bytes: &[u8]) {
    let r = upstream.get_manifest(repo, reference);
    assert_eq!(
        r.status,
        200,
        "the upstream lacks manifest {repo}:{reference}: {}",
        r.describe()
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256_digest(bytes).as_str()),
        "{}",
        r.describe()
    );
    assert!(
        r.body == bytes,
        "the upstream's {repo}:{reference} is not the bytes pushed: {}",
        r.describe()
    );
}

/// The upstream holds `layout` as `repo:tag`, whole: the identical index (by tag and by digest), every
/// child manifest by digest with identical bytes, and every config and layer.
pub fn assert_image_upstream(upstream: &Api, repo: &str, tag: &str, layout: &Layout) {
    let index = fs::read(layout.blob_path(&layout.index.digest)).unwrap();
    assert_manifest_upstream(upstream, repo, tag, &index);
    assert_manifest_upstream(upstream, repo, &layout.index.digest, &index);
    for img in &layout.images {
        let bytes = fs::read(layout.blob_path(&img.manifest.digest)).unwrap();
        assert_manifest_upstream(upstream, repo, &img.manifest.digest, &bytes);
        assert_blobs_upstream(upstream, repo, &image_blobs(img));
    }
}

/// Pushes `layout` as `name:tag` over the raw API the way containerd does: every blob, then each
/// child manifest by digest, then the index by tag (`push_blobs_raw`, `push_manifests_raw`).
pub fn push_layout_raw(api: &Api, name: &str, query: Option<&str>, layout: &Layout, tag: &str) {
    push_blobs_raw(api, name, query, layout);
    push_manifests_raw(api, name, query, layout, tag);
}

/// `path` with `query` (`ns=host`) appended, if any.
fn with_ns(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => with_query(&path, q),
        None => path,
    }
}

/// Every config and layer of `layout` (each once).
pub fn layout_blobs(layout: &Layout) -> BTreeSet<String> {
    let mut blobs = BTreeSet::new();
    for img in &layout.images {
        blobs.extend(image_blobs(img).into_iter().map(|d| d.digest));
    }
    blobs
}

/// Uploads every blob of `layout` to `name` as containerd does: POST a session (with `query`, as
/// containerd sends `?ns=` on what it names itself), then PUT to the `Location` wharf gave, as given,
/// with `?digest=`.
pub fn push_blobs_raw(api: &Api, name: &str, query: Option<&str>, layout: &Layout) {
    for digest in &layout_blobs(layout) {
        let data = fs::read(layout.blob_path(digest)).unwrap();
        let r = api.request(
            "POST",
            &with_ns(format!("/v2/{name}/blobs/uploads/"), query),
            &[],
            None,
        );
        r.assert_status(202);
        let location = r.need_header("Location").to_owned();
        let r = api.request(
            "PUT",
            &with_query(&location, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            Some(&data),
        );
        r.assert_status(201);
    }
}

/// PUTs each child manifest of `layout` by digest, then the index by tag, and checks the answer
/// carries the client's own digest.
pub fn push_manifests_raw(api: &Api, name: &str, query: Option<&str>, layout: &Layout, tag: &str) {
    for img in &layout.images {
        let body = fs::read(layout.blob_path(&img.manifest.digest)).unwrap();
        let r = api.request(
            "PUT",
            &with_ns(
                format!("/v2/{name}/manifests/{}", img.manifest.digest),
                query,
            ),
            &[("Content-Type", oci::OCI_MANIFEST)],
            Some(&body),
        );
        r.assert_status(201);
    }
    let body = fs::read(layout.blob_path(&layout.index.digest)).unwrap();
    let r = api.request(
        "PUT",
        &with_ns(format!("/v2/{name}/manifests/{tag}"), query),
        &[("Content-Type", oci::OCI_INDEX)],
        Some(&body),
    );
    r.assert_status(201);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(layout.index.digest.as_str()),
        "the client's own digest: {}",
        r.describe()
    );
}
