//! The journal of deliveries: what is to be sent where, how it went, and when to try again. Records
//! live in the metadata store (`meta/push.rs`), so a delivery survives a crash and resumes; this file
//! holds the record and the pure decisions (backoff, which entries may go now).

use std::collections::HashSet;
use std::time::Duration;

use wharf_model::config::DeliveryConfig;
pub use wharf_storage::meta::push::{Delivery, State};

/// How long to wait after `attempts` failed tries: `retry_initial_ms` doubling, at most
/// `retry_max_secs`, and no less than the upstream's `Retry-After` (itself capped).
pub fn backoff(cfg: &DeliveryConfig, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let cap = Duration::from_secs(cfg.retry_max_secs.max(1));
    let doubled = cfg
        .retry_initial_ms
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
    let wait = Duration::from_millis(doubled).max(retry_after.unwrap_or_default());
    wait.min(cap)
}

/// Which pending deliveries may start now: the first not-done entry of each upstream tag (in push
/// order), if it is due and not running, up to `free` of them. Also returns the earliest time (unix
/// ms) a held-back entry becomes due.
pub fn due(
    entries: &[(u64, Delivery)],
    running: &HashSet<u64>,
    now_ms: u64,
    free: usize,
) -> (Vec<u64>, Option<u64>) {
    let mut busy = HashSet::new();
    let mut start = Vec::new();
    let mut wake: Option<u64> = None;
    for (id, d) in entries {
        if !waiting(d) {
            continue;
        }
        if !busy.insert(d.tag_key()) || running.contains(id) {
            continue;
        }
        let at = d.next_try_ms.unwrap_or(0);
        if is_due(d, now_ms) {
            if start.len() < free {
                start.push(*id);
            }
        } else {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    (start, wake)
}

/// Whether an entry is still to deliver: neither delivered nor failed.
fn waiting(d: &Delivery) -> bool {
    matches!(d.state, State::Pending | State::Delivering)
}

/// Whether an entry may be tried now (its tag's order aside): the test a deliverer makes again
/// once it holds the entry's claim, on the record as it is then, since another replica may have
/// delivered it, or tried it and put off the next try, after the journal was listed.
pub fn is_due(d: &Delivery, now_ms: u64) -> bool {
    waiting(d) && d.next_try_ms.unwrap_or(0) <= now_ms
}

/// Failed entries that delivery `id` (just pushed) makes moot: older ones of the same upstream tag.
/// Retrying one would only put the older push back over the newer; a push run again after a failure
/// replaces its failed entry instead of adding to them.
pub fn superseded(entries: &[(u64, Delivery)], id: u64, new: &Delivery) -> Vec<u64> {
    entries
        .iter()
        .filter(|(i, d)| *i < id && d.state == State::Failed && d.tag_key() == new.tag_key())
        .map(|(i, _)| *i)
        .collect()
}

/// Delivered entries beyond the newest `keep`, oldest first: the journal keeps recent history for
/// `wharf push status`, not all of it.
pub fn surplus_delivered(entries: &[(u64, Delivery)], keep: usize) -> Vec<u64> {
    let delivered: Vec<u64> = entries
        .iter()
        .filter(|(_, d)| d.state == State::Delivered)
        .map(|(id, _)| *id)
        .collect();
    let extra = delivered.len().saturating_sub(keep);
    delivered[..extra].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_model::config::PushMode;
    use wharf_model::digest::Digest;

    fn entry(reference: &str, state: State, next: Option<u64>) -> Delivery {
        Delivery {
            state,
            mode: PushMode::StoreAndForward,
            route: "ci/app".into(),
            repository: "ci/app".into(),
            reference: reference.into(),
            tagged: true,
            digest: Digest::sha256_of(reference.as_bytes()),
            target: "http://up".into(),
            upstream_repository: "team/app".into(),
            upstream_digest: None,
            platforms: None,
            attempts: 0,
            last_error: None,
            next_try_ms: next,
            created: 0,
            delivered_at: None,
            lease: None,
            committed: true,
        }
    }

    #[test]
    fn one_tag_goes_in_push_order() {
        let entries = vec![
            (1, entry("v1", State::Pending, Some(50))),
            (2, entry("v1", State::Pending, None)),
            (3, entry("v2", State::Pending, None)),
            (4, entry("v3", State::Failed, None)),
            (5, entry("v3", State::Delivering, None)),
        ];
        let (start, wake) = due(&entries, &HashSet::new(), 10, 10);
        // v1's second push waits for its first, which is not due until 50.
        assert_eq!(start, vec![3, 5]);
        assert_eq!(wake, Some(50));
        let (start, _) = due(&entries, &HashSet::new(), 60, 10);
        assert_eq!(start, vec![1, 3, 5]);
        // A running entry holds its tag; the limit holds the rest.
        let (start, _) = due(&entries, &HashSet::from([1]), 60, 1);
        assert_eq!(start, vec![3]);
    }

    #[test]
    fn an_entry_read_again_is_due_only_if_still_waiting_and_its_time_has_come() {
        assert!(is_due(&entry("v1", State::Pending, None), 10));
        assert!(is_due(&entry("v1", State::Delivering, Some(10)), 10));
        assert!(!is_due(&entry("v1", State::Pending, Some(11)), 10));
        assert!(!is_due(&entry("v1", State::Delivered, None), 10));
        assert!(!is_due(&entry("v1", State::Failed, None), 10));
    }

    #[test]
    fn only_old_delivered_entries_are_pruned() {
        let entries = vec![
            (1, entry("v1", State::Delivered, None)),
            (2, entry("v2", State::Failed, None)),
            (3, entry("v3", State::Delivered, None)),
            (4, entry("v4", State::Pending, None)),
            (5, entry("v5", State::Delivered, None)),
        ];
        assert_eq!(surplus_delivered(&entries, 1), vec![1, 3]);
        assert!(surplus_delivered(&entries, 3).is_empty());
    }

    #[test]
    fn a_new_push_supersedes_only_older_failed_entries_of_its_tag() {
        let mut other_target = entry("v1", State::Failed, None);
        other_target.target = "http://elsewhere".into();
        let entries = vec![
            (1, entry("v1", State::Failed, None)),
            (2, entry("v1", State::Delivered, None)),
            (3, entry("v2", State::Failed, None)),
            (4, entry("v1", State::Pending, None)),
            (5, other_target),
            (6, entry("v1", State::Failed, None)),
            (7, entry("v1", State::Pending, None)),
            (8, entry("v1", State::Failed, None)),
        ];
        let new = entries[6].1.clone();
        assert_eq!(superseded(&entries, 7, &new), vec![1, 6]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let cfg = DeliveryConfig {
            max_attempts: 8,
            retry_initial_ms: 500,
            retry_max_secs: 4,
            concurrency: 4,
            write_through_timeout_secs: 30,
        };
        assert_eq!(backoff(&cfg, 1, None), Duration::from_millis(500));
        assert_eq!(backoff(&cfg, 3, None), Duration::from_secs(2));
        assert_eq!(backoff(&cfg, 9, None), Duration::from_secs(4));
        assert_eq!(
            backoff(&cfg, 1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff(&cfg, 1, Some(Duration::from_secs(30))),
            Duration::from_secs(4)
        );
    }
}
