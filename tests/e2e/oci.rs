//! OCI vocabulary for the tests: media types, digests, wharf's on-disk blob paths, and a cheap
//! deterministic byte source for large bodies.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Digest and length of a stream, without holding it in memory.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total))
}

/// The 64 hex characters of a `sha256:` digest.
pub fn hex_part(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

/// Where the contract says wharf keeps a blob or manifest: `<blobs>/sha256/<first 2 hex>/<64 hex>`.
pub fn wharf_blob_path(blobs_dir: &Path, digest: &str) -> PathBuf {
    let hex = hex_part(digest);
    blobs_dir.join("sha256").join(&hex[..2]).join(hex)
}

/// Regular files under `dir`, recursively, as paths relative to it (empty if `dir` does not exist).
pub fn regular_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut |rel, _| {
        out.insert(rel.to_path_buf());
    });
    out
}

/// Total bytes of the regular files under `dir` (0 if it does not exist).
pub fn total_size(dir: &Path) -> u64 {
    let mut total = 0;
    walk(dir, dir, &mut |_, meta| total += meta.len());
    total
}

fn walk(root: &Path, dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // A file may vanish between read_dir and stat while the server renames it: not an error here.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, f);
        } else if meta.is_file() {
            f(path.strip_prefix(root).unwrap(), &meta);
        }
    }
}

/// The digests that wharf's `blobs/` holds, read back from the file names (`sha256/ab/abcd...`).
pub fn digests_on_disk(blobs_dir: &Path) -> BTreeSet<String> {
    regular_files(blobs_dir)
        .iter()
        .map(|rel| {
            let algo = rel.iter().next().unwrap().to_string_lossy().into_owned();
            let name = rel.file_name().unwrap().to_string_lossy().into_owned();
            format!("{algo}:{name}")
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible enough that nothing can cheat, cheap
/// to regenerate, so large bodies can be streamed and hashed twice without ever being held in memory.
pub struct Noise {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Noise {
    pub fn new(seed: u64) -> Noise {
        // splitmix64 of the seed, so nearby seeds give unrelated streams (and never the zero state).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Noise {
            state: z | 1,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        Noise::new(seed).fill(&mut v);
        v
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        // Drain a partial word first so the stream does not depend on how callers split their reads.
        while self.used < 8 && i < buf.len() {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut chunks = buf[i..].chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_word());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word();
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill(buf);
        Ok(buf.len())
    }
}

#[test]
fn noise_does_not_depend_on_read_sizes() {
    let whole = Noise::bytes(7, 1000);
    let mut n = Noise::new(7);
    let mut parts = Vec::new();
    for size in [3, 1, 8, 13, 100, 875] {
        let mut b = vec![0; size];
        n.fill(&mut b);
        parts.extend_from_slice(&b);
    }
    assert_eq!(whole, parts);
    assert_ne!(Noise::bytes(7, 64), Noise::bytes(8, 64));
}
