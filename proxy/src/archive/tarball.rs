//! OCI image layout archives as tar files: written as a stream (each blob's bytes go from the
//! registry's response to the file, hashed on the way), read by position (a blob is pushed straight
//! from its place in the archive, never extracted or held whole).
//!
//! Headers are built by the `tar` crate (ustar, checksums); the bytes are written here, on tokio's
//! file API, so no blocking write runs on the runtime.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use wharf_model::digest::Digest;

use super::error::ArchiveError;

const BLOCK: u64 = 512;

/// `blobs/<algorithm>/<hex>`: where an OCI image layout keeps a blob.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::File {
        path: path.display().to_string(),
        source,
    }
}

/// An archive being written to `path`.
pub struct TarWriter {
    path: PathBuf,
    out: BufWriter<tokio::fs::File>,
    dirs: HashSet<String>,
    written: HashSet<Digest>,
    /// Bytes of blob content written (for the report).
    pub blob_bytes: u64,
}

impl TarWriter {
    pub async fn create(path: &Path) -> Result<TarWriter, ArchiveError> {
        let file = tokio::fs::File::create(path).await.map_err(io_err(path))?;
        Ok(TarWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            dirs: HashSet::new(),
            written: HashSet::new(),
            blob_bytes: 0,
        })
    }

    async fn header(
        &mut self,
        name: &str,
        size: u64,
        kind: tar::EntryType,
    ) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)
            .map_err(|e| ArchiveError::Invalid(format!("cannot name {name} in a tar: {e}")))?;
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        // A fixed time: the same image gives the same archive.
        h.set_mtime(0);
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .await
            .map_err(io_err(&self.path))
    }

    async fn pad(&mut self, size: u64) -> Result<(), ArchiveError> {
        let rem = (BLOCK - size % BLOCK) % BLOCK;
        self.out
            .write_all(&[0u8; BLOCK as usize][..rem as usize])
            .await
            .map_err(io_err(&self.path))
    }

    async fn dirs_for(&mut self, d: &Digest) -> Result<(), ArchiveError> {
        for dir in [
            "blobs/".to_owned(),
            format!("blobs/{}/", d.algorithm().as_str()),
        ] {
            if self.dirs.insert(dir.clone()) {
                self.header(&dir, 0, tar::EntryType::Directory).await?;
            }
        }
        Ok(())
    }

    /// A small file (`oci-layout`, `index.json`).
    pub async fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.header(name, bytes.len() as u64, tar::EntryType::Regular)
            .await?;
        self.out
            .write_all(bytes)
            .await
            .map_err(io_err(&self.path))?;
        self.pad(bytes.len() as u64).await
    }

    /// Whether blob `d` is in the archive already.
    pub fn has(&self, d: &Digest) -> bool {
        self.written.contains(d)
    }

    /// A blob held in memory (a manifest), checked against its digest first.
    pub async fn blob_bytes(&mut self, d: &Digest, bytes: &[u8]) -> Result<(), ArchiveError> {
        if self.has(d) {
            return Ok(());
        }
        let actual = Digest::of(d.algorithm(), bytes);
        if &actual != d {
            return Err(ArchiveError::DigestMismatch {
                what: format!("manifest {d}"),
                expected: d.clone(),
                actual,
            });
        }
        self.dirs_for(d).await?;
        self.file(&blob_path(d), bytes).await?;
        self.written.insert(d.clone());
        Ok(())
    }

    /// A blob of `size` bytes streamed from `body`, hashed as it is written: a body that is longer,
    /// shorter or hashes to anything but `d` fails the archive.
    pub async fn blob_stream<B>(
        &mut self,
        d: &Digest,
        size: u64,
        mut body: B,
    ) -> Result<(), ArchiveError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        if self.has(d) {
            return Ok(());
        }
        self.dirs_for(d).await?;
        self.header(&blob_path(d), size, tar::EntryType::Regular)
            .await?;
        let mut hasher = d.algorithm().hasher();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ArchiveError::Http(format!("blob {d}: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            got += data.len() as u64;
            if got > size {
                return Err(ArchiveError::SizeMismatch {
                    what: format!("blob {d}"),
                    expected: size,
                    actual: got,
                });
            }
            hasher.update(&data);
            self.out
                .write_all(&data)
                .await
                .map_err(io_err(&self.path))?;
        }
        if got != size {
            return Err(ArchiveError::SizeMismatch {
                what: format!("blob {d}"),
                expected: size,
                actual: got,
            });
        }
        let actual = hasher.finish();
        if &actual != d {
            return Err(ArchiveError::DigestMismatch {
                what: format!("blob {d}"),
                expected: d.clone(),
                actual,
            });
        }
        self.pad(size).await?;
        self.written.insert(d.clone());
        self.blob_bytes += size;
        Ok(())
    }

    /// Ends the archive (two zero blocks) and makes it durable.
    pub async fn finish(mut self) -> Result<(), ArchiveError> {
        self.out
            .write_all(&[0u8; 2 * BLOCK as usize])
            .await
            .map_err(io_err(&self.path))?;
        self.out.flush().await.map_err(io_err(&self.path))?;
        self.out
            .get_ref()
            .sync_all()
            .await
            .map_err(io_err(&self.path))
    }
}

/// Where a regular file's bytes are in an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub size: u64,
}

/// The regular files of the tar at `path`, by name (`./` prefixes dropped). Blocking: run it on the
/// blocking pool. Only uncompressed tars: an OCI archive's blobs are compressed already.
pub fn scan(path: &Path) -> Result<HashMap<String, Region>, ArchiveError> {
    use std::io::Read as _;
    let err = io_err(path);
    let mut file = std::fs::File::open(path).map_err(&err)?;
    let mut magic = [0u8; 2];
    if file.read(&mut magic).map_err(&err)? == 2 && magic == [0x1f, 0x8b] {
        return Err(ArchiveError::Invalid(format!(
            "{} is gzip-compressed; wharf imports plain tar archives (run `gunzip` on it first)",
            path.display()
        )));
    }
    let file = std::fs::File::open(path).map_err(&err)?;
    let mut archive = tar::Archive::new(file);
    let mut out = HashMap::new();
    for entry in archive.entries().map_err(&err)? {
        let entry = entry.map_err(|e| {
            ArchiveError::Invalid(format!("{} is not a readable tar: {e}", path.display()))
        })?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(&err)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        out.insert(
            name.to_owned(),
            Region {
                offset: entry.raw_file_position(),
                size: entry.size(),
            },
        );
    }
    Ok(out)
}

/// The bytes of a small entry (at most `limit`).
pub async fn read_region(path: &Path, r: Region, limit: u64) -> Result<Bytes, ArchiveError> {
    if r.size > limit {
        return Err(ArchiveError::Invalid(format!(
            "an entry of {} is {} bytes, more than the {limit} a manifest may have \
             (registry.max_manifest_bytes)",
            path.display(),
            r.size
        )));
    }
    let mut f = open_region(path, r).await?;
    let mut buf = Vec::with_capacity(r.size as usize);
    f.read_to_end(&mut buf).await.map_err(io_err(path))?;
    if buf.len() as u64 != r.size {
        return Err(ArchiveError::Invalid(format!(
            "{} ends inside an entry",
            path.display()
        )));
    }
    Ok(Bytes::from(buf))
}

/// A reader of one entry's bytes.
pub async fn open_region(
    path: &Path,
    r: Region,
) -> Result<tokio::io::Take<tokio::fs::File>, ArchiveError> {
    let mut f = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    f.seek(std::io::SeekFrom::Start(r.offset))
        .await
        .map_err(io_err(path))?;
    Ok(f.take(r.size))
}
