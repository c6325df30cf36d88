//! The limits on peers that stall: a request body that stops arriving, a client that stops reading
//! its response (`[server] body_idle_secs`, `write_idle_secs`), and the lingering close.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use wharf_protocol::error::BodyIdle;
use wharf_protocol::respond::BoxError;

/// A request body that fails once nothing arrives for `idle`: a peer that stops sending (a stalled
/// `PATCH`, a `PUT` that declared a length and sent nothing) would otherwise hold its request, its
/// connection and an upload session forever. The handler decides what it keeps (a session keeps
/// what it received).
pub struct IdleBody<B> {
    inner: B,
    timer: IdleTimer,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            timer: IdleTimer::new(idle),
        }
    }
}

/// A deadline armed when a wait begins and disarmed by progress. Its timer is allocated at the first
/// wait and reset after that, so a request whose body is never waited on (most reads) pays nothing.
struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    fn new(idle: Duration) -> IdleTimer {
        IdleTimer {
            idle,
            sleep: None,
            armed: false,
        }
    }

    fn progress(&mut self) {
        self.armed = false;
    }

    /// Arms the timer to expire `after` from now.
    fn arm(&mut self, after: Duration) {
        let deadline = tokio::time::Instant::now() + after;
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
    }

    /// Ready once `idle` has passed since the current wait began (arming it if none had).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            self.arm(self.idle);
        }
        match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.timer.progress();
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        ready!(this.timer.poll_expired(cx));
        Poll::Ready(Some(Err(Box::new(BodyIdle {
            secs: this.timer.idle.as_secs(),
        }))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client that took none of a response for `server.write_idle_secs`: its connection is closed.
#[derive(Debug, thiserror::Error)]
#[error(
    "closed a connection whose client took none of its response for {secs} s (server.write_idle_secs: \
     raise it for clients that pause this long)"
)]
pub struct WriteIdle {
    secs: u64,
}

/// How long a closing connection goes on reading (and dropping) what its client still sends.
const LINGER: Duration = Duration::from_secs(5);
/// How much it reads so at most.
const LINGER_BYTES: u64 = 64 << 20;

/// The connection's stream as the server uses it:
/// - a write that makes no progress for `idle` fails: a client that stops reading would otherwise
///   hold its connection, the response's file and a task forever;
/// - closing lingers (as nginx's `lingering_close`): after the answer, what the client still sends
///   is read and dropped for a while. A request refused before its body was read (a manifest over
///   the limit, a refused upload) leaves that body in flight, and closing a socket with unread
///   bytes sends a reset, which can destroy the answer before the client reads it.
pub struct ClientStream<S> {
    inner: S,
    timer: IdleTimer,
    /// Bytes dropped while lingering, once the write side is shut.
    lingered: Option<u64>,
}

impl<S> ClientStream<S> {
    pub fn new(inner: S, idle: Duration) -> ClientStream<S> {
        ClientStream {
            inner,
            timer: IdleTimer::new(idle),
            lingered: None,
        }
    }

    /// Passes on a finished write; for one still waiting, fails it once `idle` has passed since it
    /// began waiting.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.timer.progress();
            return r;
        }
        ready!(self.timer.poll_expired(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            WriteIdle {
                secs: self.timer.idle.as_secs(),
            },
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.lingered.is_none() {
            let r = Pin::new(&mut this.inner).poll_shutdown(cx);
            ready!(this.watch(cx, r))?;
            this.lingered = Some(0);
            this.timer.arm(LINGER);
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                // The client is done sending (or gone): closing now resets nothing.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let n = this.lingered.get_or_insert(0);
                    *n += buf.filled().len() as u64;
                    if *n > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending => {
                    ready!(this.timer.poll_expired(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
