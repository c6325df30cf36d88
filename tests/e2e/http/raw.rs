//! Hand-written HTTP/1.1 over a TcpStream, one request per connection (`Connection: close`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use super::Resp;

const IO_TIMEOUT: Duration = Duration::from_secs(60);

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// The request head, verbatim: `target` goes on the wire exactly as given.
pub fn head(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
    let mut h = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h += &format!("{k}: {v}\r\n");
    }
    h + "\r\n"
}

/// Sends a complete request (Content-Length set from `body` when there is one) and reads the answer.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let len = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        all.push(("Content-Length", &len));
    }
    let mut s = connect(addr);
    s.write_all(head(addr, method, target, &all).as_bytes())
        .expect("write head");
    s.write_all(body).expect("write body");
    let what = format!("raw {method} {target}");
    read_response(&mut s, &what)
        .unwrap_or_else(|| panic!("{what}: connection closed without a response"))
}

/// Declares `declared_len` bytes, sends only `partial`, then closes our side as a client that died
/// mid-upload would. Returns the answer if the server sent one (it need not).
pub fn send_truncated(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    declared_len: usize,
    partial: &[u8],
) -> Option<Resp> {
    assert!(partial.len() < declared_len);
    let len = declared_len.to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &len));
    let mut s = connect(addr);
    s.write_all(head(addr, method, target, &all).as_bytes())
        .expect("write head");
    s.write_all(partial).expect("write partial body");
    s.flush().unwrap();
    let _ = s.shutdown(Shutdown::Write);
    read_response(&mut s, &format!("raw truncated {method} {target}"))
}

/// Sends the head with `Expect: 100-continue` and the body only if the server asks for it with
/// `100 Continue`: how a careful client learns of an early refusal without sending the body.
pub fn send_expect_continue(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let len = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &len));
    all.push(("Expect", "100-continue"));
    let mut s = connect(addr);
    s.write_all(head(addr, method, target, &all).as_bytes())
        .expect("write head");
    let what = format!("raw {method} {target} (Expect: 100-continue)");
    // Read just the first response head: either `100 Continue` or the final answer.
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !first.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => first.push(byte[0]),
            Err(e) => panic!("{what}: reading first response head: {e}"),
        }
    }
    if first.starts_with(b"HTTP/1.1 100") {
        s.write_all(body).expect("write body after 100 Continue");
        return read_response(&mut s, &what)
            .unwrap_or_else(|| panic!("{what}: no final response after 100 Continue"));
    }
    let mut all = first;
    all.extend(read_all(&mut s, &what));
    parse(&all, &what)
}

/// Reads until EOF and parses; `None` if the server closed or reset without answering.
pub fn read_response(s: &mut TcpStream, what: &str) -> Option<Resp> {
    let buf = read_all(s, what);
    if buf.is_empty() {
        return None;
    }
    Some(parse(&buf, what))
}

/// Everything until EOF; a reset after (or instead of) the answer ends the read with what we got.
fn read_all(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break
            }
            Err(e) => panic!("{what}: reading response: {e}"),
        }
    }
    buf
}

fn parse(buf: &[u8], what: &str) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no complete response head in {:?}",
                String::from_utf8_lossy(buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
        request: what.to_owned(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
