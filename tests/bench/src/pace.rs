//! A paced upstream: the mirror cases again with the upstream's replies limited to a link rate, as
//! from a real registry 0.1–10 Gbit/s away. Unpaced, loopback hands wharf bytes faster than one core
//! can hash them, which is not how a mirror is used.
//!
//! The driver moves itself into a network namespace of its own before it starts anything (root
//! only), so that shaping loopback touches nothing else on the machine. A paced case then adds an
//! `htb` qdisc to that namespace's `lo` with one class at the rate and a `u32` filter on the
//! upstream's source port: only what the upstream sends is paced (to wharf, to distribution's proxy,
//! and to the direct GET it is compared with); wharf's replies to its clients are not. (The `prio`
//! qdisc is not available on these kernels; htb sends unclassified packets straight through.)
//! Pushes (case 10) flow the other way: there the filter is on the registry's destination port, so
//! what is uploaded to it is paced.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// Marks the driver as already inside its own network namespace (set for its servers too).
const MARK: &str = "WHARF_BENCH_NETNS";

/// Moves this process (and every server it starts after) into a new network namespace with only
/// loopback, up. `Err` says why the paced cases cannot run (not root, no `tc`/`ip`).
pub fn enter_private_netns() -> Result<()> {
    if std::env::var_os(MARK).is_some() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("shaping loopback needs root (a private network namespace and tc)");
    }
    for tool in ["tc", "ip"] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file());
        if !found {
            bail!("{tool} is not installed (Debian iproute2; tests/bench/run.sh installs it)");
        }
    }
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this process's network namespace; threads
    // started later (and children) inherit it. Called before any socket is opened.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    run("ip", &["link", "set", "lo", "up"])?;
    std::env::set_var(MARK, "1");
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Packets from (or to) a port on loopback leave at `gbit` Gbit/s while this lives.
pub struct Pacing {
    _removed_on_drop: (),
}

impl Pacing {
    /// Paces what a server on `port` sends: its replies (pulls from it).
    pub fn start(port: u16, gbit: f64) -> Result<Pacing> {
        Pacing::shape("sport", port, gbit)
    }

    /// Paces what is sent to a server on `port`: uploads to it (pushes).
    pub fn start_to(port: u16, gbit: f64) -> Result<Pacing> {
        Pacing::shape("dport", port, gbit)
    }

    /// `field`: the u32 selector's `sport` or `dport`.
    fn shape(field: &str, port: u16, gbit: f64) -> Result<Pacing> {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .output();
        let rate = format!("{}mbit", (gbit * 1000.0).round() as u64);
        // A millisecond's worth of bytes per burst (at least 256 KiB): loopback sends 64 KiB GSO
        // packets, and a burst smaller than a few of them would pace below the rate.
        let burst = format!("{}", ((gbit * 1e9 / 8.0 / 1000.0) as u64).max(256 << 10));
        run(
            "tc",
            &["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"],
        )?;
        let paced = Pacing {
            _removed_on_drop: (),
        };
        run(
            "tc",
            &[
                "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate",
                &rate, "ceil", &rate, "burst", &burst, "cburst", &burst, "quantum", "200000",
            ],
        )?;
        run(
            "tc",
            &[
                "filter",
                "add",
                "dev",
                "lo",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                "1",
                "u32",
                "match",
                "ip",
                field,
                &port.to_string(),
                "0xffff",
                "flowid",
                "1:1",
            ],
        )?;
        Ok(paced)
    }
}

impl Drop for Pacing {
    fn drop(&mut self) {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .output();
    }
}
