//! Hostile, stalled and careless peers, and the bounds that keep them from taking wharf down (issue 13):
//! abandoned upload sessions, request bodies that stop arriving, clients that stop reading, the upload
//! purge racing transfers in flight, and the request log for all of them.
//!
//! Slow and stalled peers are raw sockets (`Peer`), so a test decides exactly which bytes go out when.
//! Timeouts are configured to a few seconds, and every wait is bounded with a message saying what did
//! not happen.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;

mod logging;
mod manifest_size;
mod purge;
mod sessions;
mod stalls;

/// Starts wharf with extra `[server]` / `[registry]` keys (`key = value` lines).
pub fn start(server: &[&str], registry: &[&str]) -> (Wharf, Api) {
    start_with(WharfOptions::default(), server, registry)
}

pub fn start_with(mut options: WharfOptions, server: &[&str], registry: &[&str]) -> (Wharf, Api) {
    options.server_keys = server.iter().map(|s| s.to_string()).collect();
    options.registry_keys = registry.iter().map(|s| s.to_string()).collect();
    let wharf = Wharf::start(options);
    let api = Api::new(wharf.base());
    (wharf, api)
}

/// File descriptors the wharf process has open now.
pub fn open_fds(wharf: &Wharf) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", wharf.pid()))
        .expect("read /proc/PID/fd of wharf")
        .count()
}

pub fn log_text(wharf: &Wharf) -> String {
    std::fs::read_to_string(wharf.log_path()).unwrap_or_default()
}

/// The request log lines (`"request"` events) whose path contains `path`.
pub fn request_lines(wharf: &Wharf, path: &str) -> Vec<String> {
    log_text(wharf)
        .lines()
        .filter(|l| l.contains(" request ") && l.contains(path))
        .map(str::to_owned)
        .collect()
}

/// Polls `cond` every 50 ms for up to `within`; fails with `what` when it never holds.
pub fn wait_for(within: Duration, what: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        if Instant::now() >= end {
            panic!("not within {within:?}: {}", what());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Files under `dir` (the ingest directory: partial writes).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An answer read off a raw socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A client on a raw socket that sends what the test says, when it says.
pub struct Peer {
    pub stream: TcpStream,
    addr: SocketAddr,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Peer { stream, addr }
    }

    /// Sends a request head (with `Connection: close`); the body, if any, is up to the test.
    pub fn head(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) {
        let mut h = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            h += &format!("{k}: {v}\r\n");
        }
        h += "\r\n";
        self.stream.write_all(h.as_bytes()).expect("send head");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send body bytes");
    }

    /// Reads the answer until the server closes, for at most `within`; `Err` says what arrived.
    pub fn answer(&mut self, within: Duration) -> Result<Answer, String> {
        let end = Instant::now() + within;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no complete answer within {within:?}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => return Err(format!("reading the answer: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return Err(format!("connection closed without an answer: {text:?}"));
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok(Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        })
    }
}

/// Runs `f` on its own thread and waits at most `within` for its result: a request that blocks fails
/// the test with `what` instead of hanging it.
pub fn within<T: Send + 'static>(
    within: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what}: no answer within {within:?}"))
}
