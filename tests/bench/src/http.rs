//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Why not a client crate: the blob cases measure servers at several GB/s on two cores that the client
//! shares, so the client must cost as little as possible and the same for every server. This one reads
//! bodies with 1 MiB `read` calls straight into one buffer and hands the slices to a sink (usually a
//! byte counter): no per-chunk allocation, no decompression, no copies beyond the kernel's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Size of the read buffer, and so of each `read` on a body.
const BUF: usize = 1 << 20;
/// Longest silence tolerated on a socket: every loop in the harness must end by itself.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Response heads larger than this are refused (ours are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// Status and headers of a response.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.trim().parse().context("bad Content-Length"))
            .transpose()
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// One connection; requests on it are sequential (keep-alive, no pipelining).
pub struct Conn {
    stream: TcpStream,
    host: String,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host: addr.to_string(),
            buf: vec![0u8; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// Writes the request line and headers; a body of `body_len` bytes must follow through
    /// [`Conn::write_body`].
    pub fn send_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: Option<u64>,
    ) -> Result<()> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = body_len {
            req.push_str(&format!("Content-Length: {n}\r\n"));
        }
        req.push_str("\r\n");
        self.stream
            .write_all(req.as_bytes())
            .with_context(|| format!("send {method} {path}"))
    }

    pub fn write_body(&mut self, data: &[u8]) -> Result<()> {
        self.stream.write_all(data).context("send request body")
    }

    /// Reads more bytes into the buffer after `end`; 0 means the peer closed.
    fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            bail!("response line or head larger than the buffer");
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .context("read response")?;
        self.end += n;
        Ok(n)
    }

    /// Reads one line (without CRLF) from the buffer, filling as needed.
    fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let s = String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(s);
            }
            if self.end - self.start > MAX_HEAD {
                bail!("response line too long");
            }
            if self.fill()? == 0 {
                bail!("connection closed in the middle of a response head");
            }
        }
    }

    pub fn read_head(&mut self) -> Result<Head> {
        loop {
            let status_line = self.line()?;
            let mut parts = status_line.splitn(3, ' ');
            let (_, code) = (parts.next(), parts.next());
            let status: u16 = code
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("bad status line {status_line:?}"))?;
            let mut headers = Vec::new();
            loop {
                let l = self.line()?;
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            // 1xx (100 Continue) comes before the real answer.
            if status >= 200 {
                return Ok(Head { status, headers });
            }
        }
    }

    /// Reads exactly `n` body bytes into `sink`, with reads of up to the buffer's size.
    fn read_exact_into(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        while n > 0 {
            if self.start == self.end {
                // Straight into the whole buffer, but never past this body (keep-alive).
                self.start = 0;
                let want = (self.buf.len() as u64).min(n) as usize;
                let got = self
                    .stream
                    .read(&mut self.buf[..want])
                    .context("read response body")?;
                if got == 0 {
                    bail!("connection closed with {n} body bytes missing");
                }
                self.end = got;
            }
            let take = ((self.end - self.start) as u64).min(n) as usize;
            sink(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads the body of a response to `method`, handing it to `sink`; returns its length.
    pub fn read_body(
        &mut self,
        method: &str,
        head: &Head,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<u64> {
        if method == "HEAD" || head.status == 204 || head.status == 304 {
            return Ok(0);
        }
        if head.chunked() {
            let mut total = 0;
            loop {
                let line = self.line()?;
                let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .with_context(|| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.line()?.is_empty() {}
                    return Ok(total);
                }
                self.read_exact_into(size, sink)?;
                total += size;
                if !self.line()?.is_empty() {
                    bail!("chunk not followed by CRLF");
                }
            }
        }
        if let Some(n) = head.content_length()? {
            self.read_exact_into(n, sink)?;
            return Ok(n);
        }
        // No length: the body runs to the end of the connection.
        let mut total = 0;
        loop {
            if self.start < self.end {
                sink(&self.buf[self.start..self.end]);
                total += (self.end - self.start) as u64;
                self.start = self.end;
            }
            if self.fill()? == 0 {
                return Ok(total);
            }
        }
    }

    /// One request with an in-memory body (or none); the response body is collected.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(Head, Vec<u8>)> {
        self.send_head(method, path, headers, body.map(|b| b.len() as u64))?;
        if let Some(b) = body {
            self.write_body(b)?;
        }
        let head = self.read_head()?;
        let mut out = Vec::new();
        self.read_body(method, &head, &mut |c| out.extend_from_slice(c))?;
        Ok((head, out))
    }
}

/// A request on a fresh connection, body collected (for small bodies: manifests, errors).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(Head, Vec<u8>)> {
    Conn::connect(addr)?.call(method, path, headers, body)
}

/// GET on a fresh connection, body counted and dropped: the blob client.
pub fn get_discard(addr: SocketAddr, path: &str) -> Result<(Head, u64)> {
    let mut c = Conn::connect(addr)?;
    c.send_head("GET", path, &[], None)?;
    let head = c.read_head()?;
    let n = c.read_body("GET", &head, &mut |_| {})?;
    Ok((head, n))
}
