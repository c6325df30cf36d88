//! Small images pushed over the raw API, and a guard that proves a bad request changed nothing.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::harness::Wharf;
use crate::http::{raw, Api, Resp};
use crate::layout::Desc;
use crate::oci::{self, regular_files, sha256_digest, Noise};

/// A single-platform OCI image in one repo: config + one layer + manifest, tagged.
pub struct SmallImage {
    pub repo: String,
    pub tag: String,
    pub config: Desc,
    pub layer: Desc,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl SmallImage {
    /// Pushes config, layer and manifest (by tag); `seed` makes its content unique.
    pub fn push(api: &Api, repo: &str, tag: &str, seed: u64) -> SmallImage {
        let config_bytes = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Labels": { "seed": seed.to_string() } },
        }))
        .unwrap();
        let layer_bytes = Noise::bytes(seed, 4096 + seed as usize % 1000);
        let config = Desc {
            media_type: oci::OCI_CONFIG.into(),
            digest: api.push_blob(repo, &config_bytes),
            size: config_bytes.len() as u64,
        };
        let layer = Desc {
            media_type: oci::OCI_LAYER_TAR.into(),
            digest: api.push_blob(repo, &layer_bytes),
            size: layer_bytes.len() as u64,
        };
        let manifest = image_manifest(&config, std::slice::from_ref(&layer), None);
        let manifest_digest = api.push_manifest(repo, tag, oci::OCI_MANIFEST, &manifest);
        SmallImage {
            repo: repo.into(),
            tag: tag.into(),
            config,
            layer,
            manifest,
            manifest_digest,
        }
    }

    pub fn manifest_desc(&self) -> Desc {
        Desc {
            media_type: oci::OCI_MANIFEST.into(),
            digest: self.manifest_digest.clone(),
            size: self.manifest.len() as u64,
        }
    }

    /// Blobs served with the right bytes, manifest served by tag and digest with identical bytes.
    pub fn assert_intact(&self, api: &Api) {
        api.assert_blob_intact(&self.repo, &self.config.digest, self.config.size);
        api.assert_blob_intact(&self.repo, &self.layer.digest, self.layer.size);
        for reference in [&self.tag, &self.manifest_digest] {
            let r = api.get_manifest(&self.repo, reference);
            r.assert_status(200);
            assert!(
                r.body == self.manifest,
                "manifest {}:{reference} bytes changed: {}",
                self.repo,
                r.describe()
            );
        }
    }
}

/// An OCI image manifest; `extra` fields (annotations, subject, artifactType...) are merged in.
pub fn image_manifest(config: &Desc, layers: &[Desc], extra: Option<Value>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": config.to_json(),
        "layers": layers.iter().map(Desc::to_json).collect::<Vec<_>>(),
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec(&m).unwrap()
}

/// An OCI index over `manifests`.
pub fn index_manifest(manifests: &[Desc]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": manifests.iter().map(|d| {
            let mut v = d.to_json();
            v["platform"] = json!({ "architecture": "amd64", "os": "linux" });
            v
        }).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An image manifest of exactly `size` bytes, padded with an annotation.
pub fn manifest_of_size(config: &Desc, layer: &Desc, size: usize) -> Vec<u8> {
    let with_pad = |n: usize| {
        image_manifest(
            config,
            std::slice::from_ref(layer),
            Some(json!({ "annotations": { "pad": "p".repeat(n) } })),
        )
    };
    let base = with_pad(0).len();
    assert!(size >= base, "manifest cannot be smaller than {base} bytes");
    let m = with_pad(size - base);
    assert_eq!(m.len(), size);
    m
}

/// The digest of `{}` with the OCI empty media type: the config of artifacts that have none.
pub fn empty_config() -> (Desc, &'static [u8]) {
    let data: &'static [u8] = b"{}";
    (
        Desc {
            media_type: oci::OCI_EMPTY.into(),
            digest: sha256_digest(data),
            size: 2,
        },
        data,
    )
}

/// Snapshot of wharf's `blobs/` plus one committed image: `check` proves that whatever happened since
/// left no new file under `blobs/` and did not damage committed content.
pub struct Guard {
    blobs_dir: PathBuf,
    files: BTreeSet<PathBuf>,
    pub image: SmallImage,
}

impl Guard {
    /// Pushes a baseline image into `good/app:keep` and snapshots `blobs/`.
    pub fn new(wharf: &Wharf, api: &Api) -> Guard {
        let image = SmallImage::push(api, "good/app", "keep", 4242);
        let mut g = Guard {
            blobs_dir: wharf.blobs_dir(),
            files: BTreeSet::new(),
            image,
        };
        g.rebase();
        g
    }

    /// Takes a new snapshot after a step that was expected to store something.
    pub fn rebase(&mut self) {
        self.files = regular_files(&self.blobs_dir);
    }

    pub fn check(&self, api: &Api, after: &str) {
        let now = regular_files(&self.blobs_dir);
        let added: Vec<_> = now.difference(&self.files).collect();
        let removed: Vec<_> = self.files.difference(&now).collect();
        assert!(
            added.is_empty() && removed.is_empty(),
            "after {after}: blobs/ changed: added {added:?}, removed {removed:?}"
        );
        self.image.assert_intact(api);
    }
}

/// A manifest over the limit must be refused with 413 and a spec error body, however the client sends
/// it: with `Expect: 100-continue` (only the head goes out, the body only on `100 Continue`), and plainly
/// with the whole body, as Go clients (containerd, skopeo) do. `plain` is for bodies just over the limit,
/// which a server reading up to limit+1 bytes consumes whole before it answers.
pub fn assert_manifest_too_large(
    wharf: &Wharf,
    api: &Api,
    repo: &str,
    tag: &str,
    body: &[u8],
    plain: bool,
) {
    let target = format!("/v2/{repo}/manifests/{tag}");
    let ct = ("Content-Type", oci::OCI_MANIFEST);
    assert_too_large(&raw::send_expect_continue(
        wharf.addr(),
        "PUT",
        &target,
        &[ct],
        body,
    ));
    if plain {
        match api.try_request("PUT", &target, &[ct], Some(body)) {
            Ok(r) => assert_too_large(&r),
            Err(e) => panic!(
                "PUT {target} of a {}-byte manifest (no Expect): the client never saw a 413 ({e}). \
                 wharf answered before reading the body and closed the connection while the client was \
                 still sending, so the answer was lost to a reset; it should read the body up to the \
                 limit (+1 byte) before answering, or drain it before closing",
                body.len()
            ),
        }
    }
}

fn assert_too_large(r: &Resp) {
    r.assert_status(413);
    // The spec names no code for 413; the two that describe it are accepted.
    assert!(
        r.error_codes()
            .iter()
            .any(|c| c == "MANIFEST_INVALID" || c == "SIZE_INVALID"),
        "413 needs a spec error body (MANIFEST_INVALID or SIZE_INVALID): {}",
        r.describe()
    );
}
