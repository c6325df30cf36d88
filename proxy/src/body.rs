//! Response bodies: nothing, a buffer, or a stream of file chunks read off the runtime's threads.
//!
//! A blob is never read whole into memory: a `FileStream` holds one chunk in flight at a time, so memory
//! per download is bounded by `CHUNK` whatever the blob's size.

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::store::{Blob, BlobSource};

/// Read size per chunk: large reads amortise the syscall and the blocking-pool hop.
pub const CHUNK: u64 = 512 * 1024;

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
                remaining,
                pending: None,
            }),
        }
    }
}

pub struct FileStream {
    file: Arc<File>,
    pos: u64,
    remaining: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

pub fn read_chunk(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

impl FileStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let handle = self.pending.get_or_insert_with(|| {
            let (file, pos) = (self.file.clone(), self.pos);
            let len = self.remaining.min(CHUNK) as usize;
            tokio::task::spawn_blocking(move || read_chunk(&file, pos, len))
        });
        let res = ready!(Pin::new(handle).poll(cx));
        self.pending = None;
        let chunk = match res {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        if chunk.is_empty() {
            // Committed content never shrinks; if it did, stop rather than send a short body that a client
            // could mistake for the whole blob.
            self.remaining = 0;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob file is shorter than its recorded size",
            ))));
        }
        self.pos += chunk.len() as u64;
        self.remaining -= chunk.len() as u64;
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
