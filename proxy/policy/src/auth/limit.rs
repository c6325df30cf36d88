//! Failed logins per (client address, user name): past `max` within a window, that address's further
//! attempts for that user are refused until the window that holds them has passed (guessing a
//! password gets slow). Other users from the same address (a shared NAT, a CI runner with one stale
//! secret) and valid tokens are not held. Forged and expired tokens name no user: they count for the
//! address alone.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most; beyond, the oldest windows are forgotten first.
const MAX_KEYS: usize = 65_536;

/// Whose failure: an address, and the user name it tried (`None`: a token, which names no user).
/// The name is kept as a keyed hash, so a client cannot fill memory with long names.
type Key = (IpAddr, Option<u64>);

pub struct Failures {
    max: u32,
    window: Duration,
    /// Hashes user names (random keys: collisions cannot be chosen).
    names: RandomState,
    /// key → (failures, start of their window)
    seen: Mutex<HashMap<Key, (u32, Instant)>>,
}

impl Failures {
    pub fn new(max: u32, window: Duration) -> Failures {
        Failures {
            max: max.max(1),
            window,
            names: RandomState::new(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, ip: IpAddr, user: Option<&str>) -> Key {
        (ip, user.map(|u| self.names.hash_one(u)))
    }

    /// Counts a failure of `user` (`None`: a token) from `ip`; returns how many that pair has in its
    /// window now.
    pub fn record(&self, ip: IpAddr, user: Option<&str>) -> u32 {
        self.record_at(self.key(ip, user), Instant::now())
    }

    fn record_at(&self, key: Key, now: Instant) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_KEYS {
            let window = self.window;
            seen.retain(|_, (_, start)| now.duration_since(*start) < window);
        }
        let e = seen.entry(key).or_insert((0, now));
        if now.duration_since(e.1) >= self.window {
            *e = (0, now);
        }
        e.0 += 1;
        e.0
    }

    /// How long `user` (`None`: a token) from `ip` must wait, if that pair is over the limit.
    pub fn locked(&self, ip: IpAddr, user: Option<&str>) -> Option<Duration> {
        self.locked_at(self.key(ip, user), Instant::now())
    }

    fn locked_at(&self, key: Key, now: Instant) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (count, start) = seen.get(&key)?;
        let left = self.window.checked_sub(now.duration_since(*start))?;
        (*count >= self.max && !left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_over_the_limit_waits_out_its_window() {
        let f = Failures::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let alice = f.key(a, Some("alice"));
        let t0 = Instant::now();
        for _ in 0..2 {
            f.record_at(alice, t0);
        }
        assert_eq!(f.locked_at(alice, t0), None, "under the limit");
        assert_eq!(f.record_at(alice, t0), 3);
        let wait = f.locked_at(alice, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(
            f.locked_at(f.key(b, Some("alice")), t0),
            None,
            "other addresses are not held"
        );
        assert_eq!(
            f.locked_at(f.key(a, Some("bob")), t0),
            None,
            "other users from the address are not held"
        );
        assert_eq!(
            f.locked_at(f.key(a, None), t0),
            None,
            "nor tokens from the address"
        );
        assert_eq!(f.locked_at(alice, t0 + Duration::from_secs(61)), None);
        assert_eq!(
            f.record_at(alice, t0 + Duration::from_secs(61)),
            1,
            "a new window"
        );
    }

    #[test]
    fn tokens_count_for_the_address() {
        let f = Failures::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        f.record(a, None);
        f.record(a, None);
        assert!(f.locked(a, None).is_some());
        assert!(
            f.locked(a, Some("")).is_none(),
            "an empty user name is a user"
        );
    }
}
