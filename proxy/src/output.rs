//! What the CLI prints: every line a command writes to stdout or stderr goes through here.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader has gone (`wharf images | head -1`) fails
//! with EPIPE, and `println!` turns that into a panic with a backtrace. Here it is an error,
//! [`OutputError::Closed`], which `main` turns into a quiet exit with status 141, what a shell reports
//! for a process that SIGPIPE killed: `set -o pipefail` scripts see that the output was cut, as they
//! would for `cat` or `ls`. SIGPIPE's default disposition is not restored instead: `export` and
//! `import` may run a whole wharf in the process, whose sendfile() to a client that left must fail
//! that one response, not kill the process.

use std::fmt;
use std::io::{self, Write};

/// The exit status of a command whose reader went away: 128 + SIGPIPE, as a shell reports a process
/// SIGPIPE killed.
pub const CLOSED_EXIT_STATUS: u8 = 128 + libc::SIGPIPE as u8;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader of stdout (or stderr) went away: nobody is left to tell anything.
    #[error("the reader of the output went away")]
    Closed,
    #[error("cannot write to standard {stream}: {source}")]
    Failed {
        stream: &'static str,
        source: io::Error,
    },
}

fn write_to(
    mut w: impl Write,
    stream: &'static str,
    args: fmt::Arguments<'_>,
) -> Result<(), OutputError> {
    match w.write_fmt(args).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(OutputError::Closed),
        Err(source) => Err(OutputError::Failed { stream, source }),
    }
}

/// Writes to stdout (use `format_args!`).
pub fn stdout(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    write_to(io::stdout().lock(), "output", args)
}

/// Writes to stderr (use `format_args!`).
pub fn stderr(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    write_to(io::stderr().lock(), "error", args)
}

/// Whether `e` (anywhere in its chain) is a reader that went away.
pub fn is_closed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if matches!(e.downcast_ref::<OutputError>(), Some(OutputError::Closed)) {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose read end is closed: writes fail with EPIPE (SIGPIPE is ignored in Rust programs,
    /// test binaries included).
    fn closed_pipe() -> std::fs::File {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two descriptors, which are then owned here.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fds[0] is ours and used nowhere else.
        unsafe { libc::close(fds[0]) };
        // SAFETY: fds[1] is ours; the File closes it.
        unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) }
    }

    #[test]
    fn a_reader_that_went_away_is_closed_not_a_failure() {
        let e = write_to(closed_pipe(), "output", format_args!("{}\n", "line")).unwrap_err();
        assert!(matches!(e, OutputError::Closed), "{e:?}");
        assert!(is_closed(&e));
        let wrapped = anyhow::Error::from(e).context("printing the report");
        assert!(is_closed(wrapped.as_ref()));

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let e = write_to(full, "output", format_args!("x")).unwrap_err();
        assert!(matches!(e, OutputError::Failed { .. }), "{e:?}");
        assert!(!is_closed(&e));
    }
}
