//! Failed logins per client address: past `max` within a window, that address's further attempts are
//! refused until the window that holds them has passed (guessing passwords gets slow).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::collections::HashMap;

/// Addresses remembered at most; beyond, the oldest windows are forgotten first.
const MAX_ADDRESSES: usize = 65_536;

pub struct Failures {
    max: u32,
    window: Duration,
    /// address → (failures, start of their window)
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Failures {
    pub fn new(max: u32, window: Duration) -> Failures {
        Failures {
            max: max.max(1),
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failure; returns how many `ip` has in its window now.
    pub fn record(&self, ip: IpAddr) -> u32 {
        self.record_at(ip, Instant::now())
    }

    fn record_at(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= MAX_ADDRESSES {
            let window = self.window;
            seen.retain(|_, (_, start)| now.duration_since(*start) < window);
        }
        let e = seen.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= self.window {
            *e = (0, now);
        }
        e.0 += 1;
        e.0
    }

    /// How long `ip` must wait, if it is over the limit.
    pub fn locked(&self, ip: IpAddr) -> Option<Duration> {
        self.locked_at(ip, Instant::now())
    }

    fn locked_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let seen = self.seen.lock().unwrap();
        let (count, start) = seen.get(&ip)?;
        let left = self.window.checked_sub(now.duration_since(*start))?;
        (*count >= self.max && !left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_the_limit_waits_out_its_window() {
        let f = Failures::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..2 {
            f.record_at(a, t0);
        }
        assert_eq!(f.locked_at(a, t0), None, "under the limit");
        assert_eq!(f.record_at(a, t0), 3);
        let wait = f.locked_at(a, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(f.locked_at(b, t0), None, "other addresses are not held");
        assert_eq!(f.locked_at(a, t0 + Duration::from_secs(61)), None);
        assert_eq!(
            f.record_at(a, t0 + Duration::from_secs(61)),
            1,
            "a new window"
        );
    }
}
