//! Zero-copy blob sends: the page cache goes to the socket with `sendfile`, as nginx does, with no
//! copy through wharf's memory.
//!
//! hyper only ever sees ordinary `Bytes`: a blob chunk is a read-only mapping of the blob file (see
//! `body::map_chunk`), registered here with the file and offset it maps. The connection's stream
//! ([`Stream`]) looks up each buffer hyper asks it to write; a buffer inside a registered mapping is
//! sent with `sendfile` from the file instead of being copied out of the mapping. Anything else
//! (headers, manifests, bytes arriving from an upstream) is written as usual. Were the lookup to miss,
//! the mapping holds the same bytes, so a plain write would still send the right content.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A live mapping: its length, and the file and offset it maps from.
struct Region {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live mappings by start address. Process-wide by necessity, and the one mutable static outside
/// the metrics crate: a mapped chunk leaves the body as plain `Bytes`, passes through hyper, and
/// reaches the connection's stream with nothing but its pointer, so the stream looks it up here.
static MAPPINGS: RwLock<BTreeMap<usize, Region>> = RwLock::new(BTreeMap::new());

/// Owner of a mapped chunk: registered while alive, so a socket can send it from the file.
pub struct Mapped {
    map: memmap2::Mmap,
}

impl Mapped {
    /// Registers `map`, which maps `file` from `offset`.
    pub fn new(map: memmap2::Mmap, file: Arc<File>, offset: u64) -> Mapped {
        if !map.is_empty() {
            if let Ok(mut m) = MAPPINGS.write() {
                m.insert(
                    map.as_ptr() as usize,
                    Region {
                        len: map.len(),
                        file,
                        offset,
                    },
                );
            }
        }
        Mapped { map }
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Unregistered before the unmap: the address range may be reused by the next mapping.
        if let Ok(mut m) = MAPPINGS.write() {
            m.remove(&(self.map.as_ptr() as usize));
        }
    }
}

/// The file and offset behind `buf`, if it lies inside one registered mapping.
fn lookup(buf: &[u8]) -> Option<(Arc<File>, u64)> {
    if buf.is_empty() {
        return None;
    }
    let addr = buf.as_ptr() as usize;
    let m = MAPPINGS.read().ok()?;
    let (&start, r) = m.range(..=addr).next_back()?;
    (addr + buf.len() <= start + r.len).then(|| (r.file.clone(), r.offset + (addr - start) as u64))
}

/// A client connection that sends registered mappings with `sendfile`.
pub struct Stream {
    inner: TcpStream,
}

impl Stream {
    pub fn new(inner: TcpStream) -> Stream {
        Stream { inner }
    }

    /// Runs `op` on the socket once it is writable, until it stops saying "would block".
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::AsRawFd;

    pub fn sendfile(
        sock: &impl AsRawFd,
        file: &impl AsRawFd,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let mut off = offset as libc::off_t;
        // SAFETY: both descriptors are open for the duration of the call; `off` is a valid pointer.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes `bufs` saying more follows at once, so the kernel packs the response head together with
    /// the first piece of the body that `sendfile` sends next.
    pub fn send_more(sock: &impl AsRawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: a zeroed msghdr is valid; iov points at `bufs`, which outlive the call, and IoSlice
        // is guaranteed ABI-compatible with iovec.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        {
            let this = self.get_mut();
            let mapped = bufs
                .iter()
                .enumerate()
                .find_map(|(i, b)| lookup(b).map(|hit| (i, hit)));
            match mapped {
                Some((0, (file, offset))) => {
                    let len = bufs[0].len();
                    let n = ready!(this.poll_io(cx, || sys::sendfile(
                        &this.inner,
                        &*file,
                        offset,
                        len
                    )))?;
                    wharf_metrics::sendfile_sent(n as u64);
                    Poll::Ready(Ok(n))
                }
                Some((k, _)) => this.poll_io(cx, || sys::send_more(&this.inner, &bufs[..k])),
                None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        #[cfg(not(target_os = "linux"))]
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests;
