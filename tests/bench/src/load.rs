//! Request-rate load: `wrk` for GET, and a small keep-alive load generator of our own for HEAD,
//! because wrk 4.1 stalls on HEAD responses that carry a Content-Length (it waits for a body).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Outcome of one load run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests: u64,
    pub secs: f64,
    /// Responses that were not 2xx, and socket errors.
    pub errors: u64,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// `wrk -t2 -c<conns> -d<secs>s` on one URL; counts from its summary.
pub fn wrk(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    conns: u32,
    secs: u32,
) -> Result<Load> {
    wrk_url(&format!("http://{addr}{path}"), headers, conns, secs)
}

/// `wrk` on a full URL: `https://` makes each connection one TLS session (OpenSSL, no ALPN, so
/// HTTP/1.1; the certificate is not verified), kept alive for the whole run.
pub fn wrk_url(url: &str, headers: &[(&str, &str)], conns: u32, secs: u32) -> Result<Load> {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t2")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s");
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(url);
    let out = cmd.output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text)
}

/// Request count, duration and errors from wrk's summary.
fn parse_wrk(text: &str) -> Result<Load> {
    // "  123456 requests in 3.00s, 12.34MB read"
    let line = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .with_context(|| format!("no request count in wrk output:\n{text}"))?;
    let mut words = line.split_whitespace();
    let requests: u64 = words.next().unwrap_or("").parse()?;
    let secs = words
        .nth(2)
        .and_then(|s| parse_wrk_duration(s.trim_end_matches(',')))
        .context("wrk duration")?;
    let count_after = |label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    };
    let errors = count_after("Non-2xx or 3xx responses:") + count_after("Socket errors:");
    Ok(Load {
        requests,
        secs,
        errors,
    })
}

fn parse_wrk_duration(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mul)
}

/// Keep-alive `HEAD` load from `conns` connections on two threads (like `wrk -t2`), for `secs`.
pub fn head_load(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    conns: u32,
    secs: f64,
) -> Result<Load> {
    let mut req = format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let req: Arc<[u8]> = req.into_bytes().into();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let (req, done, errors) = (req.clone(), done.clone(), errors.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        // A fresh connection after an error or a close by the server.
                        let r = tokio::time::timeout_at(
                            deadline.into(),
                            head_conn(addr, &req, &done, &errors),
                        )
                        .await;
                        if let Ok(Err(_)) = r {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(Load {
        requests: done.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Sends HEAD requests on one connection until it closes (or the caller's timeout cancels it).
async fn head_conn(
    addr: SocketAddr,
    req: &[u8],
    done: &AtomicU64,
    errors: &AtomicU64,
) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 8192];
    loop {
        s.write_all(req).await?;
        // A HEAD response is a head only: read until the blank line.
        let mut filled = 0;
        let end = loop {
            if filled == buf.len() {
                return Err(std::io::Error::other("response head too large"));
            }
            let n = s.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            let from = filled.saturating_sub(3);
            filled += n;
            if let Some(i) = buf[from..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break from + i + 4;
            }
        };
        if end != filled {
            return Err(std::io::Error::other("bytes after a HEAD response"));
        }
        if buf.starts_with(b"HTTP/1.1 2") || buf.starts_with(b"HTTP/1.0 2") {
            done.fetch_add(1, Ordering::Relaxed);
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_summary() {
        let out = "Running 3s test @ http://127.0.0.1:1/v2/x/manifests/latest\n  2 threads and 64 connections\n\
            \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            \x20 171234 requests in 3.00s, 150.12MB read\n\
            \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
            \x20 Non-2xx or 3xx responses: 5\n\
            Requests/sec:  57077.93\n";
        let l = parse_wrk(out).unwrap();
        assert_eq!(l.requests, 171234);
        assert!((l.secs - 3.0).abs() < 1e-9);
        assert_eq!(l.errors, 8);
        assert_eq!(parse_wrk_duration("1.50m"), Some(90.0));
        assert_eq!(parse_wrk_duration("250ms"), Some(0.25));
    }
}
