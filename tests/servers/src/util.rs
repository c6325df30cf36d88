use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A port nothing listens on now (the OS picks it; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts connections on `port`, or panics naming `what` and its log.
pub(crate) fn wait_for_port(port: u16, what: &str, log: &std::path::Path, within: Duration) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not listen on 127.0.0.1:{port} within {within:?}; its log:\n{tail}");
}

/// Kills a child on drop (its process group, so helpers it started go too).
pub(crate) struct Child(pub(crate) std::process::Child);

impl Child {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the tools this crate starts are installed by `tests/setup.sh`.
pub(crate) fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WHARF_TOOLS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/wharf-tools")
}
