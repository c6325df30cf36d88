//! A log writer that batches lines: each request's log line costs a memcpy instead of a write
//! syscall. A background thread writes the batch every few milliseconds; warnings and errors, and any
//! batch over a size bound, are written at once, and `flush` empties it (at shutdown).

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const MAX_BATCH: usize = 64 * 1024;

pub struct BatchedWriter<W: Write + Send + 'static> {
    inner: Arc<Shared<W>>,
}

struct Shared<W> {
    buf: Mutex<Vec<u8>>,
    out: Mutex<W>,
}

impl<W: Write + Send + 'static> Shared<W> {
    fn flush(&self) {
        let batch = match self.buf.lock() {
            Ok(mut b) if !b.is_empty() => std::mem::take(&mut *b),
            _ => return,
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

impl<W: Write + Send + 'static> BatchedWriter<W> {
    /// Wraps `out` and starts the thread that writes batches.
    pub fn new(out: W) -> Self {
        let inner = Arc::new(Shared {
            buf: Mutex::new(Vec::with_capacity(MAX_BATCH)),
            out: Mutex::new(out),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("wharf-log".into())
            .spawn(move || {
                while let Some(shared) = weak.upgrade() {
                    shared.flush();
                    drop(shared);
                    std::thread::sleep(FLUSH_EVERY);
                }
            })
            .expect("spawn the log thread");
        BatchedWriter { inner }
    }

    /// A handle that empties the batch when asked (keep one to flush at exit).
    pub fn flusher(&self) -> Flusher<W> {
        Flusher(self.inner.clone())
    }
}

pub struct Flusher<W: Write + Send + 'static>(Arc<Shared<W>>);

impl<W: Write + Send + 'static> Flusher<W> {
    pub fn flush(&self) {
        self.0.flush();
    }
}

/// One log event being written.
pub struct Line<'a, W: Write + Send + 'static> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write + Send + 'static> Write for Line<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let full = {
            let mut b = self
                .shared
                .buf
                .lock()
                .map_err(|_| io::Error::other("log buffer poisoned"))?;
            b.extend_from_slice(data);
            b.len() >= MAX_BATCH
        };
        if full {
            self.shared.flush();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if self.urgent {
            self.shared.flush();
        }
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BatchedWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.inner,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            shared: &self.inner,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batches_until_flushed_and_writes_warnings_through() {
        let sink = Sink::default();
        let w = BatchedWriter::new(sink.clone());
        // The background thread may flush at any time; what matters is that flush() empties it all
        // and that an urgent line is out when its writer is dropped.
        w.make_writer().write_all(b"info line\n").unwrap();
        w.flusher().flush();
        assert_eq!(&*sink.0.lock().unwrap(), b"info line\n");
        let meta = tracing::Level::ERROR;
        {
            let mut l = Line {
                shared: &w.inner,
                urgent: meta <= tracing::Level::WARN,
            };
            l.write_all(b"error line\n").unwrap();
        }
        assert!(sink.0.lock().unwrap().ends_with(b"error line\n"));
    }
}
