//! A TCP relay in front of a real server, for the faults a real server will not make on cue: a
//! connection that stalls for good in the middle of a request, and an outage that resets every
//! connection and refuses new ones for a while. Everything else passes through untouched, so the
//! server behind it still answers every byte for real.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often a blocked copy looks up to see whether it should stop.
const TICK: Duration = Duration::from_millis(50);

struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// Set: neither direction copies another byte, and both sockets stay open.
    frozen: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Conn>>,
    /// Client-to-server bytes forwarded, over every connection.
    forwarded: AtomicU64,
    down: AtomicBool,
    closing: AtomicBool,
}

pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Relay {
    /// Relays a free loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay: no free loopback port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let acceptor = thread::spawn(move || {
            for client in listener.incoming() {
                if s.closing.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if s.down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                for (from, to, count) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (s, frozen) = (s.clone(), frozen.clone());
                    thread::spawn(move || copy(from, to, &s, &frozen, count));
                }
                s.conns.lock().unwrap().push(Conn {
                    client,
                    server,
                    frozen,
                });
            }
        });
        Relay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes sent towards the server so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Every connection open now stops moving bytes, for good, without closing: what a peer that
    /// hangs mid-request looks like. Connections made later pass.
    pub fn stall_open_connections(&self) -> usize {
        let conns = self.shared.conns.lock().unwrap();
        for c in conns.iter() {
            c.frozen.store(true, Ordering::SeqCst);
        }
        conns.len()
    }

    /// Resets every open connection and refuses new ones until `up`: the server going away.
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.close_all();
    }

    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    fn close_all(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, s: &Shared, frozen: &AtomicBool, count: bool) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if s.closing.load(Ordering::SeqCst) {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Not reading either: the sender's buffers fill and it blocks, as on a dead path.
            thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if frozen.load(Ordering::SeqCst) {
                    // Read just as it froze: these bytes are lost with the rest of the path.
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                if count {
                    s.forwarded.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.close_all();
        // Wakes the acceptor so it sees `closing`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}
