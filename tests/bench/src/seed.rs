//! Test content, generated on the fly (never committed), and pushed over HTTP the way clients do.
//!
//! Large blobs are a deterministic pseudo-random stream (seed → bytes), hashed in one pass and
//! generated again while uploading, so a 1 GiB blob never sits in memory or in a file of ours.

use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use crate::http::{self, Conn};

const CHUNK: usize = 1 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// What a client pulling an image sends (distribution refuses OCI manifests to clients that do not
/// accept them).
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// A blob: random bytes from a seed, or bytes we hold (configs, manifests).
#[derive(Clone)]
pub struct Blob {
    pub len: u64,
    pub digest: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Random(u64),
    Bytes(Vec<u8>),
}

/// wyrand: fast enough (several GB/s) that generating never limits an upload.
fn fill_random(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state = state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(*state).wrapping_mul(u128::from(*state ^ 0xe703_7ed1_a0b4_28db));
        let v = ((t >> 64) ^ t) as u64;
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

impl Blob {
    pub fn random(seed: u64, len: u64) -> Blob {
        let mut b = Blob {
            len,
            digest: String::new(),
            kind: Kind::Random(seed),
        };
        let mut h = Sha256::new();
        b.for_each_chunk(|c| {
            h.update(c);
            Ok(())
        })
        .expect("hashing cannot fail");
        b.digest = format!("sha256:{}", hex::encode(h.finalize()));
        b
    }

    pub fn bytes(data: Vec<u8>) -> Blob {
        Blob {
            len: data.len() as u64,
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&data))),
            kind: Kind::Bytes(data),
        }
    }

    pub fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }

    fn for_each_chunk(&self, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match &self.kind {
            Kind::Bytes(b) => f(b),
            Kind::Random(seed) => {
                let mut state = *seed;
                let mut buf = vec![0u8; CHUNK];
                let mut left = self.len;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    fill_random(&mut state, &mut buf[..n]);
                    f(&buf[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
        }
    }
}

/// An image: config, layers, and the manifest that lists them.
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Blob,
}

/// A platform of a multi-platform image (`os/arch[/variant]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
    pub variant: Option<&'static str>,
}

impl Platform {
    pub const LINUX_AMD64: Platform = Platform {
        os: "linux",
        arch: "amd64",
        variant: None,
    };
    pub const LINUX_ARM64: Platform = Platform {
        os: "linux",
        arch: "arm64",
        variant: None,
    };
    pub const LINUX_ARM_V7: Platform = Platform {
        os: "linux",
        arch: "arm",
        variant: Some("v7"),
    };

    /// `os/arch[/variant]`, as wharf's `platforms` setting writes it.
    pub fn label(&self) -> String {
        match self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.arch),
            None => format!("{}/{}", self.os, self.arch),
        }
    }

    /// The fields of an image config or an index entry's `platform` (without braces).
    fn json_fields(&self) -> String {
        let mut s = format!("\"architecture\":\"{}\",\"os\":\"{}\"", self.arch, self.os);
        if let Some(v) = self.variant {
            s.push_str(&format!(",\"variant\":\"{v}\""));
        }
        s
    }
}

fn descriptor(mt: &str, b: &Blob) -> String {
    format!(
        "{{\"mediaType\":\"{mt}\",\"digest\":\"{}\",\"size\":{}}}",
        b.digest, b.len
    )
}

impl Image {
    pub fn new(layers: Vec<Blob>) -> Image {
        Image::for_platform(Platform::LINUX_AMD64, layers)
    }

    /// An image whose config names `platform` (what a multi-platform index lists per entry).
    pub fn for_platform(platform: Platform, layers: Vec<Blob>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| format!("\"{}\"", l.digest)).collect();
        let config = Blob::bytes(
            format!(
                "{{{},\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
                platform.json_fields(),
                diff_ids.join(",")
            )
            .into_bytes(),
        );
        let layer_descs: Vec<String> = layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect();
        let manifest = Blob::bytes(
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{},\"layers\":[{}]}}",
                descriptor(OCI_CONFIG, &config),
                layer_descs.join(",")
            )
            .into_bytes(),
        );
        Image {
            config,
            layers,
            manifest,
        }
    }

    /// Config and layers, the blobs a push uploads before the manifest.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Bytes a content-addressed store needs for this image: every distinct blob and the manifest.
    pub fn unique_bytes(&self) -> u64 {
        let mut seen: Vec<&str> = Vec::new();
        let mut total = self.manifest.len;
        for b in self.blobs() {
            if !seen.contains(&b.digest.as_str()) {
                seen.push(&b.digest);
                total += b.len;
            }
        }
        total
    }
}

/// How a registry takes a blob in one go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UploadStyle {
    /// `POST /v2/<name>/blobs/uploads/?digest=` with the body (wharf).
    MonolithicPost,
    /// `POST` to open a session, then `PUT <location>&digest=` with the body: distribution 2.8
    /// ignores a body and a digest on the POST.
    PostThenPut,
}

/// Strips `http://host` from an absolute `Location`.
fn location_path(loc: &str) -> String {
    match loc.strip_prefix("http://").or(loc.strip_prefix("https://")) {
        Some(rest) => rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_default(),
        None => loc.to_owned(),
    }
}

fn send_blob(addr: SocketAddr, method: &str, path: &str, blob: &Blob) -> Result<http::Head> {
    let mut c = Conn::connect(addr)?;
    c.send_head(
        method,
        path,
        &[("Content-Type", "application/octet-stream")],
        Some(blob.len),
    )?;
    blob.for_each_chunk(|chunk| c.write_body(chunk))?;
    let head = c.read_head()?;
    let mut body = Vec::new();
    c.read_body(method, &head, &mut |b| body.extend_from_slice(b))?;
    if head.status != 201 && head.status != 202 {
        bail!(
            "{method} {path}: {} {}",
            head.status,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(head)
}

pub fn upload_blob(addr: SocketAddr, style: UploadStyle, repo: &str, blob: &Blob) -> Result<()> {
    let start = format!("/v2/{repo}/blobs/uploads/");
    let location = match style {
        UploadStyle::MonolithicPost => {
            let head = send_blob(
                addr,
                "POST",
                &format!("{start}?digest={}", blob.digest),
                blob,
            )?;
            if head.status == 201 {
                return Ok(());
            }
            // A session was opened instead: finish it with a PUT like any client would.
            head.header("location")
                .context("202 without Location")?
                .to_owned()
        }
        UploadStyle::PostThenPut => {
            let (head, body) = http::call(addr, "POST", &start, &[], Some(b""))?;
            if head.status != 202 {
                bail!(
                    "POST {start}: {} {}",
                    head.status,
                    String::from_utf8_lossy(&body)
                );
            }
            head.header("location")
                .context("202 without Location")?
                .to_owned()
        }
    };
    let mut path = location_path(&location);
    path.push(if path.contains('?') { '&' } else { '?' });
    path.push_str("digest=");
    path.push_str(&blob.digest);
    let head = send_blob(addr, "PUT", &path, blob)?;
    if head.status != 201 {
        bail!("PUT {path}: {}", head.status);
    }
    Ok(())
}

/// Cross-repository mount: `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`.
pub fn mount_blob(addr: SocketAddr, repo: &str, from: &str, blob: &Blob) -> Result<()> {
    let path = format!(
        "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
        blob.digest
    );
    let (head, body) = http::call(addr, "POST", &path, &[], Some(b""))?;
    if head.status != 201 {
        bail!(
            "POST {path}: {} {}",
            head.status,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

pub fn put_manifest(addr: SocketAddr, repo: &str, tag: &str, image: &Image) -> Result<()> {
    put_manifest_as(addr, repo, tag, OCI_MANIFEST, &image.manifest)
}

/// `PUT /v2/<repo>/manifests/<reference>` (a tag or the manifest's digest) of `manifest`'s bytes.
pub fn put_manifest_as(
    addr: SocketAddr,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &Blob,
) -> Result<()> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let Kind::Bytes(bytes) = &manifest.kind else {
        unreachable!("manifests are held in memory")
    };
    let (head, body) = http::call(
        addr,
        "PUT",
        &path,
        &[("Content-Type", media_type)],
        Some(bytes),
    )?;
    if head.status != 201 {
        bail!(
            "PUT {path}: {} {}",
            head.status,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Pushes a whole image: blobs (monolithic), then the manifest under each tag.
pub fn push_image(
    addr: SocketAddr,
    style: UploadStyle,
    repo: &str,
    tags: &[&str],
    image: &Image,
) -> Result<()> {
    for b in image.blobs() {
        upload_blob(addr, style, repo, b)
            .with_context(|| format!("push {} to {repo}", b.digest))?;
    }
    for t in tags {
        put_manifest(addr, repo, t, image)?;
    }
    Ok(())
}

/// A multi-platform image: one image per platform and the OCI index that lists them.
pub struct MultiImage {
    pub platforms: Vec<(Platform, Image)>,
    pub index: Blob,
}

impl MultiImage {
    pub fn new(platforms: Vec<(Platform, Image)>) -> MultiImage {
        let entries: Vec<String> = platforms
            .iter()
            .map(|(p, img)| {
                format!(
                    "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{}\",\"size\":{},\
                     \"platform\":{{{}}}}}",
                    img.manifest.digest,
                    img.manifest.len,
                    p.json_fields()
                )
            })
            .collect();
        let index = Blob::bytes(
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
                entries.join(",")
            )
            .into_bytes(),
        );
        MultiImage { platforms, index }
    }
}

/// Pushes each platform's image (blobs, then its manifest by digest), then the index under `tag`:
/// the order a client pushing a multi-platform image uses, children before the index naming them.
pub fn push_multi(
    addr: SocketAddr,
    style: UploadStyle,
    repo: &str,
    tag: &str,
    multi: &MultiImage,
) -> Result<()> {
    for (p, image) in &multi.platforms {
        for b in image.blobs() {
            upload_blob(addr, style, repo, b)
                .with_context(|| format!("push {} ({}) to {repo}", b.digest, p.label()))?;
        }
        put_manifest_as(
            addr,
            repo,
            &image.manifest.digest,
            OCI_MANIFEST,
            &image.manifest,
        )?;
    }
    put_manifest_as(addr, repo, tag, OCI_INDEX, &multi.index)
}
