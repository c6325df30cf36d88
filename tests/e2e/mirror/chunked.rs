//! An upstream that answers blob GETs with `Transfer-Encoding: chunked` and no `Content-Length`
//! (issue 13 A): the relay re-frames the real registry's answers that way. wharf then learns a blob's
//! length only at the end of the fill, so clients that join while it streams must get a chunked body
//! that ends properly (the last chunk) once the digest verifies, not a body cut off with no end.
//!
//! The client here reads the HTTP framing itself, strictly: a chunked body counts as whole only with
//! its terminating zero-size chunk, a sized one only with every announced byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;

use sha2::Digest as _;

use crate::harness::{DistRegistry, MirrorOptions, Wharf, WharfOptions};
use crate::http::{raw, Api};

use super::relay::{Fault, Gate, Relay};
use super::{assert_cached_intact, push_noise_blob, upstream, DEADLINE};

const CLIENTS: usize = 6;
/// The upstream's answer is held after this much of its body, so that every client joins the fill
/// while it streams.
const HOLD_AFTER: u64 = 64 << 10;

/// A GET as a strict client saw it.
#[derive(Debug)]
struct Framed {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    len: u64,
    digest: String,
    /// The body ended as its framing says a whole body ends (last chunk, or every announced byte).
    ended: bool,
    /// Why reading stopped early, if it did.
    error: Option<String>,
}

impl Framed {
    fn is_whole(&self, digest: &str, size: u64) -> bool {
        self.status == 200 && self.ended && self.len == size && self.digest == digest
    }
}

/// Reads a chunked body; `Err` says where the framing broke or the connection ended.
fn read_chunks(r: &mut impl BufRead, sink: &mut impl FnMut(&[u8])) -> Result<(), String> {
    let mut line = String::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection ended before the last chunk".into());
        }
        let size_text = line.trim_end().split(';').next().unwrap_or_default();
        let mut left = u64::from_str_radix(size_text.trim(), 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        if left == 0 {
            // Trailers (none expected), then the empty line that ends the message.
            loop {
                line.clear();
                if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    return Err("connection ended inside the last chunk".into());
                }
                if line == "\r\n" {
                    return Ok(());
                }
            }
        }
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = r.read(&mut buf[..want]).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection ended inside a chunk".into());
            }
            sink(&buf[..n]);
            left -= n as u64;
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|e| e.to_string())?;
        if &crlf != b"\r\n" {
            return Err("no CRLF after a chunk".into());
        }
    }
}

/// Sends `GET target` (`Connection: close`); `on_head` is called with the status once the response
/// head is in, then the body is read to its end.
fn get_framed(addr: SocketAddr, target: &str, on_head: impl FnOnce(u16)) -> Framed {
    let mut s = raw::connect(addr);
    s.write_all(raw::head(addr, "GET", target, &[]).as_bytes())
        .expect("send request");
    let mut r = BufReader::with_capacity(256 << 10, s);
    let mut head = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).expect("read response head");
        assert!(n > 0, "GET {target}: no response head");
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    let status: u16 = head[0]
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {:?}", head[0]));
    on_head(status);
    let header = |name: &str| {
        head[1..].iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let content_length = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    let mut sink = |b: &[u8]| {
        hasher.update(b);
        len += b.len() as u64;
    };
    let (ended, error) = if chunked {
        match read_chunks(&mut r, &mut sink) {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e)),
        }
    } else {
        let mut buf = vec![0u8; 256 << 10];
        let mut error = None;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink(&buf[..n]),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        (content_length == Some(len) && error.is_none(), error)
    };
    Framed {
        status,
        content_length,
        chunked,
        len,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        ended,
        error,
    }
}

/// Proves, for a 1 MB and a 20 MiB blob whose upstream answers chunked without a length: the relay
/// really re-frames them (checked without wharf); 6 concurrent cold GETs through wharf all get their
/// `200` while the single upstream GET is held mid-body, then every one of them gets every byte, a
/// proper end of body and the right digest; one upstream GET in all; the blob is cached intact; and a
/// GET after the fill is served from the cache with its length.
#[test]
fn chunked_upstream_blobs_reach_every_concurrent_client_whole() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let up = registry.host();
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![upstream(&up, relay.addr(), "up")],
            ..Default::default()
        },
        ..Default::default()
    });
    let upstream_api = Api::new(registry.base());
    for (seed, size) in [(51u64, 1_000_000u64), (52, 20 << 20)] {
        let digest = push_noise_blob(&upstream_api, "team/app", seed, size);
        let blob_path = format!("/blobs/{digest}");

        // The tooling: through the relay alone, the registry's answer arrives chunked, whole.
        relay.clear_rules();
        relay.add_rule(Some("GET"), &blob_path, Fault::Chunked(None));
        let direct = get_framed(
            relay.addr(),
            &format!("/v2/team/app/blobs/{digest}"),
            |_| {},
        );
        assert!(
            direct.chunked && direct.content_length.is_none() && direct.is_whole(&digest, size),
            "the relay should re-send the blob chunked: {direct:?}"
        );

        relay.clear_rules();
        let gate = Gate::new();
        relay.add_rule(
            Some("GET"),
            &blob_path,
            Fault::Chunked(Some((HOLD_AFTER, gate.clone()))),
        );
        let before = relay.count("GET", &blob_path);
        let target = format!("/v2/up/team/app/blobs/{digest}");
        let (heads_tx, heads_rx) = mpsc::channel();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (target, tx, addr) = (target.clone(), heads_tx.clone(), wharf.addr());
                thread::spawn(move || get_framed(addr, &target, |status| tx.send(status).unwrap()))
            })
            .collect();
        for n in 0..CLIENTS {
            let status = heads_rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!(
                    "{size} bytes: only {n} of {CLIENTS} clients got a response head while the \
                     chunked upstream body was held after {HOLD_AFTER} bytes"
                )
            });
            assert_eq!(
                status, 200,
                "{size} bytes: a concurrent client got {status}"
            );
        }
        gate.open();
        for c in clients {
            let f = c.join().expect("client thread");
            assert!(
                f.is_whole(&digest, size),
                "{size} bytes from a chunked upstream: a client got {} bytes, ended properly: {}, \
                 error {:?} ({f:?})",
                f.len,
                f.ended,
                f.error
            );
        }
        assert_eq!(
            relay.count("GET", &blob_path) - before,
            1,
            "{CLIENTS} concurrent misses must share one upstream GET:\n{}",
            relay.describe()
        );
        assert_cached_intact(&wharf, &digest);

        // Served from the cache now: with its length, and no upstream request.
        let late = get_framed(wharf.addr(), &target, |_| {});
        assert!(
            late.is_whole(&digest, size) && late.content_length == Some(size),
            "{late:?}"
        );
        assert_eq!(relay.count("GET", &blob_path) - before, 1);
    }
}
