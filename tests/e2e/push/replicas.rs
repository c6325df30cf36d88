//! Two wharfs on one Postgres and one Garage (replicas) with one store-and-forward route (issue 27):
//! every journal entry goes upstream once, whichever replica takes it, and a replica killed in the
//! middle of a delivery leaves the entry to the other.
//!
//! The upstream is a real `docker-registry`; its access log counts the manifest `PUT`s, and skopeo
//! pulls what it holds. Waits are polls on the journal (`wharf push status`) and on the replicas'
//! logs.

use std::time::{Duration, Instant};

use crate::gc::log_count;
use crate::harness::{DistRegistry, Wharf, WharfOptions};
use crate::layout::{assert_same_image, Layout};
use crate::mirror::relay::{Fault, Gate, Relay, When};
use crate::skopeo::Skopeo;

use super::journal::{
    entry, image, is_waiting, quick_delivery, skopeo_push, wait_for_journal, DELIVERY_DEADLINE,
};
use super::{assert_image_upstream, route_toml, LOCAL, REMOTE};

/// What a replica logs once it finds a due entry held by another deliverer.
const HELD: &str = "held by another deliverer";
/// What a replica logs for each delivery it made.
const DELIVERED: &str = "push delivered";

/// A store-and-forward route from `LOCAL` to `REMOTE` at `upstream`, retrying quickly.
fn replica_options(upstream: &str) -> WharfOptions {
    WharfOptions {
        extra_toml: format!(
            "{}\n{}",
            route_toml(upstream, &["mode = \"store-and-forward\""]),
            quick_delivery(1000)
        ),
        ..Default::default()
    }
}

/// How many tag `PUT`s of `REMOTE:tag` the upstream logged.
fn tag_puts(registry: &DistRegistry, tag: &str) -> usize {
    let put = format!("\"PUT /v2/{REMOTE}/manifests/{tag} ");
    registry
        .access_log()
        .iter()
        .filter(|l| l.contains(&put))
        .count()
}

/// Pulls `REMOTE:<tag>` from the upstream itself with skopeo and checks it is `layout`, whole.
fn assert_pulls_whole(registry: &DistRegistry, scratch: &Wharf, layout: &Layout) {
    let out = scratch.scratch(&format!("pulled-{}", layout.tag));
    Skopeo::new().copy(
        &format!("docker://{}/{REMOTE}:{}", registry.host(), layout.tag),
        &format!("oci:{}:{}", out.display(), layout.tag),
    );
    assert_same_image(layout, &out, &layout.tag);
}

/// Proves: six pushes journaled by one replica while the upstream is down, with a second replica on
/// the same database started meanwhile, are each delivered exactly once when the upstream comes
/// back: the upstream logs one tag `PUT` per image, the two replicas log six deliveries between
/// them, and every image pulls whole from the upstream. Without a claim per entry both replicas'
/// deliverers send each entry as it falls due.
#[test]
fn two_replicas_deliver_each_journaled_push_exactly_once() {
    let mut registry = DistRegistry::start();
    registry.stop();
    let options = replica_options(&registry.host());
    let a = Wharf::start_shared(options.clone());
    let layouts: Vec<Layout> = (0..6)
        .map(|i| image(&a, &format!("t{i}"), 2700 + i))
        .collect();
    for layout in &layouts {
        skopeo_push(&a, layout, LOCAL);
    }
    wait_for_journal(&a, "6 pushes waiting, each tried once", |l| {
        l.len() == 6
            && layouts.iter().all(|layout| {
                entry(l, LOCAL, &layout.tag, &layout.index.digest)
                    .is_some_and(|e| is_waiting(&e) && e["attempts"].as_u64() >= Some(1))
            })
    });

    let b = Wharf::start_sharing(options, &a);
    registry.start_again();
    wait_for_journal(&b, "all 6 delivered", |l| {
        l.len() == 6 && l.iter().all(|e| e["state"] == "delivered")
    });
    // The access log is written as requests end; a second delivery of an entry would have put its
    // tag by now (both replicas start an entry as soon as it falls due), so a short settle suffices.
    let end = Instant::now() + DELIVERY_DEADLINE;
    while !layouts.iter().all(|l| tag_puts(&registry, &l.tag) >= 1) {
        assert!(
            Instant::now() < end,
            "the upstream never logged every tag PUT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));

    for layout in &layouts {
        assert_eq!(
            tag_puts(&registry, &layout.tag),
            1,
            "{REMOTE}:{} was put upstream more than once:\n{}",
            layout.tag,
            registry.access_log().join("\n")
        );
    }
    let (by_a, by_b) = (log_count(&a, DELIVERED), log_count(&b, DELIVERED));
    assert_eq!(
        by_a + by_b,
        6,
        "six deliveries between the replicas, not {by_a} by the first and {by_b} by the second"
    );
    eprintln!("deliveries: {by_a} by the first replica, {by_b} by the second");
    for layout in &layouts {
        assert_image_upstream(
            &crate::http::Api::new(registry.base()),
            REMOTE,
            &layout.tag,
            layout,
        );
        assert_pulls_whole(&registry, &a, layout);
    }
}

/// Proves: the replica delivering an entry holds it, and when it is killed (`kill -9`) in the
/// middle of the delivery the other replica takes the entry over and delivers it, whole. A relay
/// holds the first replica's tag `PUT`, so it is mid-delivery for as long as the test wants; the
/// second replica, started then, leaves the entry alone (it says so in its log, and puts nothing
/// upstream) until the first is gone. Without the claim the second delivers at once, beside the
/// first.
#[test]
fn a_replica_killed_mid_delivery_leaves_the_entry_to_the_other() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let gate = Gate::new();
    relay.add_rule_when(
        Some("PUT"),
        &format!("/v2/{REMOTE}/manifests/v1"),
        When::nth(1),
        Fault::HoldRequest(gate.clone()),
    );
    let options = replica_options(&relay.addr().to_string());
    let mut a = Wharf::start_shared(options.clone());
    let layout = image(&a, "v1", 2720);
    skopeo_push(&a, &layout, LOCAL);
    crate::mirror::wait_until(
        || {
            format!(
                "the first replica's tag PUT never reached the relay:\n{}",
                relay.describe()
            )
        },
        || gate.waiting() == 1,
    );

    let b = Wharf::start_sharing(options, &a);
    crate::mirror::wait_until(
        || {
            format!(
                "the second replica never left the entry to the first (its log never said {HELD:?}); \
                 the relay saw:\n{}",
                relay.describe()
            )
        },
        || log_count(&b, HELD) > 0,
    );
    assert_eq!(
        relay.count("PUT", &format!("/v2/{REMOTE}/manifests/v1")),
        1,
        "the second replica put the tag while the first was delivering it:\n{}",
        relay.describe()
    );
    assert_eq!(log_count(&b, DELIVERED), 0);

    a.kill9();
    let list = wait_for_journal(&b, "the entry delivered by the second replica", |l| {
        entry(l, LOCAL, "v1", &layout.index.digest).is_some_and(|e| e["state"] == "delivered")
    });
    // The journal says so first; the log line follows it.
    crate::mirror::wait_until(
        || "the second replica never logged its delivery".into(),
        || log_count(&b, DELIVERED) >= 1,
    );
    assert_eq!(
        log_count(&b, DELIVERED),
        1,
        "the second replica delivered it"
    );
    let e = entry(&list, LOCAL, "v1", &layout.index.digest).unwrap();
    assert_eq!(e["upstream_digest"], layout.index.digest, "{e:#}");
    assert!(e["lease"].is_null(), "delivered, it names no lease: {e:#}");
    // The held request, whose client is long gone, goes through only now; let it land first.
    gate.open();
    crate::mirror::wait_until(
        || "the upstream never logged the held tag PUT".into(),
        || tag_puts(&registry, "v1") >= 2,
    );
    assert_image_upstream(
        &crate::http::Api::new(registry.base()),
        REMOTE,
        "v1",
        &layout,
    );
    assert_pulls_whole(&registry, &b, &layout);
}

/// Proves: a write-through push is delivered by the replica it reached, and by no other. Its journal
/// entry reads `delivering` from the start, as one a crash cut short would: the other replica's
/// worker, listing the journal while the push is under way (a relay holds its tag `PUT`), must leave
/// it to the request that holds it, or the image goes upstream twice.
#[test]
fn a_write_through_push_is_delivered_only_by_the_replica_it_reached() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let gate = Gate::new();
    relay.add_rule_when(
        Some("PUT"),
        &format!("/v2/{REMOTE}/manifests/v1"),
        When::nth(1),
        Fault::HoldRequest(gate.clone()),
    );
    let options = WharfOptions {
        extra_toml: format!(
            "{}\n{}",
            route_toml(&relay.addr().to_string(), &[]),
            quick_delivery(1000)
        ),
        ..Default::default()
    };
    let a = Wharf::start_shared(options.clone());
    let layout = image(&a, "v1", 2730);
    let push = {
        let (layout, host) = (layout.clone(), a.host());
        std::thread::spawn(move || {
            Skopeo::new().copy(
                &layout.skopeo_ref(),
                &format!("docker://{host}/{LOCAL}:{}", layout.tag),
            )
        })
    };
    crate::mirror::wait_until(
        || {
            format!(
                "the push's tag PUT never reached the relay:\n{}",
                relay.describe()
            )
        },
        || gate.waiting() == 1,
    );

    // Started now, its worker lists the journal at once and finds the entry under way.
    let b = Wharf::start_sharing(options, &a);
    crate::mirror::wait_until(
        || {
            format!(
                "the second replica never left the write-through entry to the first (its log \
                 never said {HELD:?}); the relay saw:\n{}",
                relay.describe()
            )
        },
        || log_count(&b, HELD) > 0,
    );
    gate.open();
    push.join()
        .expect("the write-through push through the first replica succeeds");
    let list = wait_for_journal(&a, "the write-through entry delivered", |l| {
        entry(l, LOCAL, "v1", &layout.index.digest).is_some_and(|e| e["state"] == "delivered")
    });
    assert_eq!(list.len(), 1, "{list:#?}");
    crate::mirror::wait_until(
        || "the upstream never logged the tag PUT".into(),
        || tag_puts(&registry, "v1") >= 1,
    );
    assert_eq!(
        relay.count("PUT", &format!("/v2/{REMOTE}/manifests/v1")),
        1,
        "the image was put upstream by both replicas:\n{}",
        relay.describe()
    );
    assert_eq!(
        log_count(&b, DELIVERED),
        0,
        "the second replica delivered it"
    );
    assert_pulls_whole(&registry, &b, &layout);
}
