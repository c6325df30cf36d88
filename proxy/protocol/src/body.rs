//! Response bodies: nothing, a buffer, a stream of file chunks (with any disk reads done off the
//! runtime's threads), or chunks another task produces (a fill, an object store's GET).
//!
//! A blob is never read whole into memory: a `FileStream` holds one mapped chunk at a time, whose pages
//! the socket sends from the page cache without touching them (see `zerocopy`), so memory per download
//! stays small whatever the blob's size.

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use wharf_storage::store::{Blob, BlobSource};

pub enum Body {
    Empty,
    Full(Option<Bytes>),
    File(FileStream),
    /// Chunks produced by another task (a single-flight fill reader); `remaining` is the announced
    /// length, if any, so a stream that ends early is an error rather than a short body.
    Channel {
        rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
        remaining: Option<u64>,
    },
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        let b = b.into();
        if b.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(b))
        }
    }

    pub fn channel(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>, len: Option<u64>) -> Body {
        Body::Channel { rx, remaining: len }
    }

    /// A committed blob's bytes, sent whichever way suits the load (see [`sending_for`]).
    pub fn blob(blob: Blob) -> Body {
        Body::blob_sent(blob, None)
    }

    /// A committed blob's bytes, always sent `how`.
    pub fn blob_sent(blob: Blob, how: Option<Sending>) -> Body {
        let remaining = if blob.size == 0 { 0 } else { blob.range.len() };
        match blob.source {
            BlobSource::File(file) => Body::File(FileStream {
                file,
                pos: blob.range.start,
                remaining,
                pending: None,
                how,
                _active: Active::new(),
            }),
            // Streamed from an object store as it arrives (a cold read): never buffered whole, and
            // a stream that ends early is an error, not a short body.
            BlobSource::Stream(rx) => Body::channel(rx, Some(remaining)),
        }
    }
}

/// How a chunk leaves for the client's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// With `sendfile` from the page cache: the mapping is registered and never touched.
    Zerocopy,
    /// Copied by the socket write out of a mapping whose pages are mapped in beforehand.
    Copy,
}

struct Active;

impl Active {
    fn new() -> Active {
        wharf_metrics::blob_stream_started();
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        wharf_metrics::blob_stream_ended();
    }
}

/// How to send a warm blob's next chunk while `active` blob streams run on `cpus` CPUs.
///
/// Measured on loopback, which is where wharf's clients usually are (containerd or Docker on the same
/// machine): one stream copied by `writev` runs at 1.14× nginx, the same stream sent with `sendfile`
/// at 0.89×, because the client's copy out of its socket then reads page-cache pages from memory
/// instead of socket buffers that the server's copy just left in the shared cache. But the copy costs
/// wharf a core's time per stream: with 16 streams `sendfile` needs 0.21 s of CPU per GB against 0.37.
/// So a few streams, which leave CPUs idle, are copied, and beyond half the CPUs they go zero-copy.
pub fn sending_for(active: usize, cpus: usize) -> Sending {
    if active <= (cpus / 2).max(1) {
        Sending::Copy
    } else {
        Sending::Zerocopy
    }
}

fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub struct FileStream {
    file: Arc<File>,
    /// Offset of the next chunk.
    pos: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    /// A chunk being read in from the disk on the blocking pool.
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    /// `None`: chosen per chunk by the load.
    how: Option<Sending>,
    _active: Active,
}

/// Bytes per mapped chunk. Mappings cost no memory until touched, and the socket sends them with
/// `sendfile` without touching them, so chunks can be large: fewer mappings, registry updates and
/// wake-ups per GB. `sendfile` takes what the socket buffer has room for and hyper comes back for
/// the rest.
pub const MAP_CHUNK: u64 = 8 * 1024 * 1024;

/// Maps `len` bytes of committed content at `pos`, if every page of them is in the page cache;
/// `None` if the disk would have to be read (then use [`map_chunk`] on the blocking pool). Cheap and
/// never waits on the disk, so it runs on the runtime's threads: warm blobs need no thread hop. (Pages
/// evicted between this check and the send are read back by `sendfile` itself: rare, and one chunk.)
///
/// The client's connection sends the chunk with `sendfile` straight from the page cache (see
/// `zerocopy`), so the mapping's pages are normally never touched and never faulted in: faulting
/// them in would cost page-table work and a TLB shootdown at unmap for nothing. Only for files that
/// never shrink: committed content, or the part already written of a fill's ingest (deleting either
/// does not truncate a mapped inode).
pub fn map_if_resident(
    file: &Arc<File>,
    pos: u64,
    len: usize,
    how: Sending,
) -> io::Result<Option<Bytes>> {
    let Some(opts) = mapping(file, pos, len)? else {
        return Ok(Some(Bytes::new()));
    };
    // SAFETY: the file is committed content, immutable for as long as it exists, and never
    // truncated; the mapping is read-only.
    let map = unsafe { opts.map(&**file)? };
    if !resident(&map) {
        return Ok(None);
    }
    Ok(Some(match how {
        Sending::Zerocopy => wrap(map, file, pos),
        // The pages are in memory: mapping them in costs page-table work only, no disk.
        // SAFETY: as above.
        Sending::Copy => Bytes::from_owner(unsafe { opts.clone().populate().map(&**file)? }),
    }))
}

/// Like [`map_if_resident`], but reads pages that are not in the page cache in first: blocking, for
/// the blocking pool.
pub fn map_chunk(file: &Arc<File>, pos: u64, len: usize, how: Sending) -> io::Result<Bytes> {
    let Some(opts) = mapping(file, pos, len)? else {
        return Ok(Bytes::new());
    };
    if how == Sending::Copy {
        // SAFETY: as in `map_if_resident`.
        return Ok(Bytes::from_owner(unsafe {
            opts.clone().populate().map(&**file)?
        }));
    }
    // SAFETY: as in `map_if_resident`.
    let map = unsafe { opts.map(&**file)? };
    if !resident(&map) {
        // Fault the pages in through a second, short-lived mapping: the page cache keeps them, and
        // the chunk's own mapping stays untouched (no page tables, no RSS).
        // SAFETY: as above.
        drop(unsafe { opts.clone().populate().map(&**file)? });
    }
    Ok(wrap(map, file, pos))
}

/// The mapping for `len` bytes at `pos`; `None` for an empty one, or for one past the end of the file.
fn mapping(file: &File, pos: u64, len: usize) -> io::Result<Option<memmap2::MmapOptions>> {
    if len == 0 {
        return Ok(None);
    }
    if file.metadata()?.len() < pos + len as u64 {
        // Someone shortened a committed file behind wharf's back: report it (the stream sees a short
        // chunk) rather than map past the end (touching such pages would kill the process with SIGBUS).
        return Ok(None);
    }
    let mut opts = memmap2::MmapOptions::new();
    opts.offset(pos).len(len);
    Ok(Some(opts))
}

fn wrap(map: memmap2::Mmap, file: &Arc<File>, pos: u64) -> Bytes {
    Bytes::from_owner(crate::zerocopy::Mapped::new(map, file.clone(), pos))
}

/// Whether every page under `map` is in the page cache (`mincore`; cheap, faults nothing in).
fn resident(map: &memmap2::Mmap) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let addr = map.as_ptr() as usize;
        let base = addr & !(page - 1);
        let span = addr - base + map.len();
        let mut vec = vec![0u8; span.div_ceil(page)];
        // SAFETY: `base..base + span` is inside the mapping (mmap maps from the page holding
        // `addr`), and `vec` has one byte per page of it.
        let r = unsafe { libc::mincore(base as *mut libc::c_void, span, vec.as_mut_ptr()) };
        r == 0 && vec.iter().all(|b| b & 1 == 1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = map;
        false
    }
}

impl FileStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = self.remaining.min(MAP_CHUNK);
        let how = self
            .how
            .unwrap_or_else(|| sending_for(wharf_metrics::blob_streams(), cpus()));
        let res = match &mut self.pending {
            Some(handle) => {
                let res = ready!(Pin::new(handle).poll(cx));
                self.pending = None;
                res.map_err(io::Error::other).and_then(|r| r)
            }
            None => match map_if_resident(&self.file, self.pos, want as usize, how) {
                Ok(Some(c)) => Ok(c),
                Ok(None) => {
                    let (file, pos) = (self.file.clone(), self.pos);
                    self.pending = Some(tokio::task::spawn_blocking(move || {
                        map_chunk(&file, pos, want as usize, how)
                    }));
                    return self.poll_chunk(cx);
                }
                Err(e) => Err(e),
            },
        };
        let chunk = match res {
            Ok(c) => c,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        if (chunk.len() as u64) < want {
            // Committed content never shrinks; if it did, stop rather than send a short body that a
            // client could mistake for the whole blob.
            self.remaining = 0;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob file is shorter than its recorded size",
            ))));
        }
        self.pos += want;
        self.remaining -= want;
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::File(s) => s.poll_chunk(cx).map(|o| o.map(|r| r.map(Frame::data))),
            Body::Channel { rx, remaining } => match ready!(rx.poll_recv(cx)) {
                Some(Ok(b)) => {
                    if let Some(r) = remaining {
                        *r = r.saturating_sub(b.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                None if remaining.is_some_and(|r| r > 0) => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob stream ended before its announced length",
                )))),
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::File(s) => s.remaining == 0,
            Body::Channel { remaining, .. } => *remaining == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::File(s) => SizeHint::with_exact(s.remaining),
            Body::Channel { remaining, .. } => match remaining {
                Some(r) => SizeHint::with_exact(*r),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn blob(file: File, size: u64, start: u64, end: u64) -> Body {
        Body::blob(Blob {
            size,
            range: wharf_model::range::ByteRange { start, end },
            source: BlobSource::File(Arc::new(file)),
        })
    }

    #[tokio::test]
    async fn streams_mapped_chunks_and_ranges() {
        let data: Vec<u8> = (0..(3 * MAP_CHUNK as usize + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let n = data.len() as u64;
        let all = blob(File::open(f.path()).unwrap(), n, 0, n - 1);
        assert_eq!(all.collect().await.unwrap().to_bytes(), &data[..]);
        let part = blob(File::open(f.path()).unwrap(), n, 5000, MAP_CHUNK + 7);
        let got = part.collect().await.unwrap().to_bytes();
        assert_eq!(got, &data[5000..=(MAP_CHUNK as usize + 7)]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_recorded_is_an_error_not_a_crash() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![1u8; 1000]).unwrap();
        // Recorded as 2 MiB, but only 1000 bytes on disk.
        let b = blob(
            File::open(f.path()).unwrap(),
            2 * MAP_CHUNK,
            0,
            2 * MAP_CHUNK - 1,
        );
        assert!(b.collect().await.is_err());
        assert!(map_chunk(
            &Arc::new(File::open(f.path()).unwrap()),
            0,
            4096,
            Sending::Zerocopy
        )
        .unwrap()
        .is_empty());
    }

    /// A blob whose pages are not in the page cache is read in on the blocking pool, and served whole.
    #[tokio::test]
    async fn chunks_not_in_the_page_cache_are_read_in_first() {
        use std::os::fd::AsRawFd;
        let data: Vec<u8> = (0..(MAP_CHUNK as usize + 4096 * 3 + 5))
            .map(|i| (i % 241) as u8)
            .collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let file = Arc::new(File::open(f.path()).unwrap());
        file.sync_all().unwrap();
        // SAFETY: a valid descriptor; dropping clean pages from the page cache loses nothing.
        let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
        assert!(
            map_if_resident(&file, 0, 4096, Sending::Zerocopy)
                .unwrap()
                .is_none(),
            "evicted pages read as not resident"
        );
        let n = data.len() as u64;
        let all = blob(File::open(f.path()).unwrap(), n, 0, n - 1);
        assert_eq!(all.collect().await.unwrap().to_bytes(), &data[..]);
        assert!(map_if_resident(&file, 0, 4096, Sending::Zerocopy)
            .unwrap()
            .is_some());
    }

    /// A blob streamed from an object store (a cold read) is sent as its chunks arrive, with its
    /// length announced; a stream that ends short of it is an error, never a short body.
    #[tokio::test]
    async fn a_streamed_blob_is_sent_as_it_arrives_and_a_short_one_fails() {
        let streamed = |chunks: &'static [&'static [u8]]| {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tokio::spawn(async move {
                for c in chunks {
                    let _ = tx.send(Ok(Bytes::from_static(c))).await;
                }
            });
            Body::blob(Blob {
                size: 10,
                range: wharf_model::range::ByteRange { start: 2, end: 7 },
                source: BlobSource::Stream(rx),
            })
        };
        let b = streamed(&[b"abc", b"def"]);
        assert_eq!(http_body::Body::size_hint(&b).exact(), Some(6));
        assert_eq!(b.collect().await.unwrap().to_bytes(), &b"abcdef"[..]);
        assert!(streamed(&[b"abc"]).collect().await.is_err());
    }

    #[test]
    fn few_streams_are_copied_and_many_go_zero_copy() {
        assert_eq!(sending_for(1, 2), Sending::Copy);
        assert_eq!(sending_for(2, 2), Sending::Zerocopy);
        assert_eq!(sending_for(16, 2), Sending::Zerocopy);
        assert_eq!(sending_for(1, 1), Sending::Copy);
        assert_eq!(sending_for(4, 8), Sending::Copy);
        assert_eq!(sending_for(5, 8), Sending::Zerocopy);
    }

    /// Both ways of sending give the same bytes, ranges included.
    #[tokio::test]
    async fn copied_and_zero_copy_chunks_hold_the_same_bytes() {
        let data: Vec<u8> = (0..(MAP_CHUNK as usize + 5000))
            .map(|i| (i % 239) as u8)
            .collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let n = data.len() as u64;
        for how in [Sending::Copy, Sending::Zerocopy] {
            let b = Body::blob_sent(
                Blob {
                    size: n,
                    range: wharf_model::range::ByteRange {
                        start: 3,
                        end: n - 4,
                    },
                    source: BlobSource::File(Arc::new(File::open(f.path()).unwrap())),
                },
                Some(how),
            );
            let got = b.collect().await.unwrap().to_bytes();
            assert!(got == data[3..data.len() - 3], "{how:?}");
        }
    }
}
