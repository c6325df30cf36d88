//! What a server costs, read from /proc: CPU seconds (utime+stime) and peak RSS (VmHWM), plus how
//! busy the rest of the machine was meanwhile, so that a noisy run says so.
//!
//! CPU time is the steadiest figure on a shared 2-core machine: a server that waits for the CPU
//! is slower but does not burn more cycles per request.

use std::fs;
use std::time::Instant;

use anyhow::{Context as _, Result};

/// Kernel ticks per second for the times in /proc/<pid>/stat (USER_HZ, 100 on Linux).
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields of /proc/<pid>/stat after the `(comm)`, which may itself hold spaces and parentheses.
fn stat_fields(pid: &str) -> Result<Vec<u64>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let after = s
        .rfind(')')
        .map(|i| &s[i + 1..])
        .context("odd /proc stat")?;
    // Field 3 (state) is a letter; parse it as 0 so that indexes stay aligned with proc(5) - 3.
    Ok(after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// utime + stime of a process (all its threads, live and exited), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let f = stat_fields(&pid.to_string())?;
    // proc(5): utime is field 14, stime 15; `f` starts at field 3.
    Ok((f[11] + f[12]) as f64 / clk_tck())
}

/// This process's CPU, including reaped children (wrk): the load generator's share.
fn self_cpu_seconds() -> Result<f64> {
    let f = stat_fields("self")?;
    // cutime and cstime are fields 16 and 17.
    Ok((f[11] + f[12] + f[13] + f[14]) as f64 / clk_tck())
}

/// Direct children of `pid` (nginx workers).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            stat_fields(&p.to_string())
                .map(|f| f.get(1) == Some(&(pid as u64)))
                .unwrap_or(false)
        })
        .collect()
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM")
}

/// Resets VmHWM to the current RSS (clear_refs "5"), so that each measurement has its own peak.
/// Returns false where the kernel refuses; the peak then counts from the process's start.
fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Machine-wide busy and steal ticks from /proc/stat (all CPUs).
fn machine_ticks() -> (u64, u64) {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0))
        .sum();
    (busy, v.get(7).copied().unwrap_or(0))
}

/// The share of the machine (in CPUs, e.g. 0.3 of one core) that something other than this process
/// and its children used over `secs`: a noise figure for the header.
pub fn background_cpus(secs: f64) -> f64 {
    let (b0, _) = machine_ticks();
    let s0 = self_cpu_seconds().unwrap_or(0.0);
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let (b1, _) = machine_ticks();
    let s1 = self_cpu_seconds().unwrap_or(0.0);
    (((b1 - b0) as f64 / clk_tck()) - (s1 - s0)).max(0.0) / secs
}

/// What one measured run cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub wall_s: f64,
    /// CPU seconds of the server under test (nginx: master + workers).
    pub cpu_s: f64,
    /// Peak RSS of the server over the run, MiB (nginx: the sum of its processes' peaks).
    pub peak_rss_mib: f64,
    /// CPU seconds the rest of the machine used (not the server, not the driver or wrk, not helper
    /// servers named at start): other work on a shared machine.
    pub background_cpu_s: f64,
    /// CPU seconds the hypervisor took away.
    pub steal_s: f64,
    /// CPU seconds the whole machine was busy (every process, the kernel's interrupt work too).
    pub machine_busy_s: f64,
    /// CPU seconds of the helper servers named at start (the mirror's upstream).
    pub helpers_cpu_s: f64,
}

/// Measures a server (its processes) over a run: start before the load, `stop` after.
pub struct Meter {
    pids: Vec<u32>,
    helpers: Vec<u32>,
    cpu0: f64,
    helpers0: f64,
    self0: f64,
    ticks0: (u64, u64),
    t0: Instant,
}

/// CPU seconds of these processes so far (those that exited meanwhile count nothing).
pub fn sum_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p).ok()).sum()
}

impl Meter {
    /// `pids`: the server under test; `helpers`: other processes of the run (an upstream registry)
    /// whose CPU is ours, not background.
    pub fn start(pids: Vec<u32>, helpers: Vec<u32>) -> Meter {
        for &p in &pids {
            reset_peak_rss(p);
        }
        Meter {
            cpu0: sum_cpu(&pids),
            helpers0: sum_cpu(&helpers),
            self0: self_cpu_seconds().unwrap_or(0.0),
            ticks0: machine_ticks(),
            t0: Instant::now(),
            pids,
            helpers,
        }
    }

    pub fn stop(self) -> Cost {
        let wall_s = self.t0.elapsed().as_secs_f64();
        let cpu_s = sum_cpu(&self.pids) - self.cpu0;
        let helpers = sum_cpu(&self.helpers) - self.helpers0;
        let own = self_cpu_seconds().unwrap_or(0.0) - self.self0;
        let (b1, st1) = machine_ticks();
        let busy = (b1 - self.ticks0.0) as f64 / clk_tck();
        let peak_kib: u64 = self.pids.iter().filter_map(|&p| peak_rss_kib(p).ok()).sum();
        Cost {
            wall_s,
            cpu_s,
            peak_rss_mib: peak_kib as f64 / 1024.0,
            background_cpu_s: (busy - cpu_s - helpers - own).max(0.0),
            steal_s: (st1 - self.ticks0.1) as f64 / clk_tck(),
            machine_busy_s: busy,
            helpers_cpu_s: helpers,
        }
    }
}
