//! The one clock: wall time as unix seconds and milliseconds. Records, leases, tokens and samples all
//! read it here, so they agree on what "now" is (and a test seam, should one be needed, has one
//! place to go).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch; 0 on a clock set before it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the unix epoch; 0 on a clock set before it.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
