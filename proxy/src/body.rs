//! Response bodies: nothing, a buffer, or a stream of file chunks read off the runtime's threads.
//!
//! A blob is never read whole into memory: a `FileStream` holds one chunk in flight at a time, so memory
//! per download is bounded by `CHUNK` whatever the blob's size.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::store::{Blob, BlobSource};

/// Read size per chunk: large reads amortise the syscall and the blocking-pool hop (measured: 1 MiB
/// halves the wake-ups of 512 KiB; with one read in flight, 16 streams stay near 33 MiB RSS).
pub const CHUNK: u64 = 1024 * 1024;

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

    pub fn blob(blob: Blob) -> Body {
        let remaining = if blob.size == 0 { 0 } else { blob.range.len() };
        match blob.source {
            BlobSource::File(file) => Body::File(FileStream {
                file,
                pos: blob.range.start,
                unscheduled: remaining,
                remaining,
                pending: VecDeque::new(),
            }),
        }
    }
}

pub struct FileStream {
    file: Arc<File>,
    /// Next offset to schedule a read at.
    pos: u64,
    /// Bytes not yet scheduled for reading.
    unscheduled: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    /// Reads in flight, in order: while hyper writes one chunk to the socket the next is being read.
    pending: VecDeque<JoinHandle<io::Result<Bytes>>>,
}

/// Reads kept in flight per stream.
const READ_AHEAD: usize = 1;

/// Chunk buffers are reused: a fresh 512 KiB allocation costs an mmap, page faults, zeroing and an
/// munmap (with a TLB shootdown) per chunk, more than the read itself.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Buffers kept for reuse: enough for many concurrent streams, bounded so idle memory stays small.
const POOL_MAX: usize = 40;

struct PooledBuf {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < POOL_MAX {
                pool.push(buf);
            }
        }
    }
}

fn pooled_buffer() -> Vec<u8> {
    POOL.lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_else(|| vec![0u8; CHUNK as usize])
}

/// Reads up to `len` (at most CHUNK) bytes at `pos`; fewer only at end of file.
pub fn read_chunk(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = pooled_buffer();
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..len], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Bytes::from_owner(PooledBuf { buf, len: filled }))
}

/// Maps `len` bytes of committed content at `pos`, with its pages faulted in now (MAP_POPULATE, on
/// the blocking pool) so that hyper's `writev` later copies straight from the page cache, with no
/// read into a buffer of ours and no page fault on the runtime's threads. Only for committed content:
/// it never shrinks, and deleting it does not truncate a mapped inode.
pub fn map_chunk(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if file.metadata()?.len() < pos + len as u64 {
        // Someone shortened a committed file behind wharf's back: report it rather than map past the
        // end (touching such pages would kill the process with SIGBUS).
        return Ok(Bytes::new());
    }
    // SAFETY: the file is committed content, immutable for as long as it exists, and never
    // truncated; the mapping is read-only.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(pos)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

impl FileStream {
    fn schedule(&mut self) {
        while self.pending.len() < READ_AHEAD && self.unscheduled > 0 {
            let (file, pos) = (self.file.clone(), self.pos);
            let len = self.unscheduled.min(CHUNK);
            self.pos += len;
            self.unscheduled -= len;
            self.pending.push_back(tokio::task::spawn_blocking(move || {
                map_chunk(&file, pos, len as usize)
            }));
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        self.schedule();
        let Some(handle) = self.pending.front_mut() else {
            return Poll::Ready(None);
        };
        let res = ready!(Pin::new(handle).poll(cx));
        self.pending.pop_front();
        let chunk = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        if (chunk.len() as u64) < self.remaining.min(CHUNK) {
            // Committed content never shrinks; if it did, stop rather than send a short body that a
            // client could mistake for the whole blob.
            self.remaining = 0;
            self.pending.clear();
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob file is shorter than its recorded size",
            ))));
        }
        self.remaining -= chunk.len() as u64;
        self.schedule();
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
            range: crate::range::ByteRange { start, end },
            source: BlobSource::File(Arc::new(file)),
        })
    }

    #[tokio::test]
    async fn streams_mapped_chunks_and_ranges() {
        let data: Vec<u8> = (0..(3 * CHUNK as usize + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let n = data.len() as u64;
        let all = blob(File::open(f.path()).unwrap(), n, 0, n - 1);
        assert_eq!(all.collect().await.unwrap().to_bytes(), &data[..]);
        let part = blob(File::open(f.path()).unwrap(), n, 5000, CHUNK + 7);
        let got = part.collect().await.unwrap().to_bytes();
        assert_eq!(got, &data[5000..=(CHUNK as usize + 7)]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_recorded_is_an_error_not_a_crash() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![1u8; 1000]).unwrap();
        // Recorded as 2 MiB, but only 1000 bytes on disk.
        let b = blob(File::open(f.path()).unwrap(), 2 * CHUNK, 0, 2 * CHUNK - 1);
        assert!(b.collect().await.is_err());
        assert!(map_chunk(&File::open(f.path()).unwrap(), 0, 4096)
            .unwrap()
            .is_empty());
    }
}
