//! A bound on how fast background reads (the scrub, `scrub.rs`) take bytes from the disk, so that
//! re-reading every blob never starves the clients being served from the same disk.
//!
//! The reader reports each chunk it took; once it is ahead of the allowed rate it sleeps (on the
//! runtime's timer, never holding a blocking thread) until the rate is met again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes per second, shared by everything one scrub reads. `0`: no bound.
pub struct Pace {
    bytes_per_sec: u64,
    state: Mutex<State>,
}

struct State {
    /// When the budget started counting (the first read).
    since: Option<Instant>,
    taken: u64,
}

/// Beyond this the budget starts over: an idle spell (between files, a slow disk) earns no burst
/// later.
const WINDOW: Duration = Duration::from_secs(2);

impl Pace {
    pub fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec,
            state: Mutex::new(State {
                since: None,
                taken: 0,
            }),
        }
    }

    pub fn unbounded() -> Pace {
        Pace::new(0)
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// How much to read at once: about a tenth of a second's worth, between 64 KiB and 1 MiB, so a
    /// slow bound still moves in small steps.
    pub fn chunk(&self) -> usize {
        match self.bytes_per_sec {
            0 => 1 << 20,
            r => (r / 10).clamp(64 << 10, 1 << 20) as usize,
        }
    }

    /// How long a reader that just took `n` more bytes must wait, as of `now`.
    fn delay(&self, n: u64, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let since = *s.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        let behind = (s.taken as f64) < self.bytes_per_sec as f64 * elapsed.as_secs_f64();
        let since = if elapsed > WINDOW && behind {
            s.taken = 0;
            *s.since.insert(now)
        } else {
            since
        };
        s.taken += n;
        let due = Duration::from_secs_f64(s.taken as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(now.saturating_duration_since(since))
    }

    /// Records that `n` bytes were read, and sleeps until that is within the bound.
    pub async fn took(&self, n: u64) {
        let wait = self.delay(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_ahead_of_the_rate_waits_for_it() {
        let p = Pace::new(1000);
        let t0 = Instant::now();
        assert_eq!(p.delay(500, t0), Duration::from_millis(500));
        // Half a second later the first 500 are paid for; 500 more are due at one second.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(p.delay(500, t1), Duration::from_millis(500));
        assert_eq!(Pace::unbounded().delay(1 << 30, t0), Duration::ZERO);
    }

    #[test]
    fn an_idle_spell_earns_no_burst() {
        let p = Pace::new(1000);
        let t0 = Instant::now();
        assert_eq!(p.delay(100, t0), Duration::from_millis(100));
        // Ten idle seconds, then a large read: paced from now, not from the start.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.delay(2000, later), Duration::from_secs(2));
    }

    #[test]
    fn chunks_follow_the_rate() {
        assert_eq!(Pace::unbounded().chunk(), 1 << 20);
        assert_eq!(Pace::new(100 << 20).chunk(), 1 << 20);
        assert_eq!(Pace::new(1 << 20).chunk(), (1 << 20) / 10);
        assert_eq!(Pace::new(1000).chunk(), 64 << 10);
    }
}
