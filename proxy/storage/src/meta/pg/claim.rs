//! The advisory locks that claim one push-journal entry each (`meta/push/claim.rs`), apart from the
//! journal's tables so the claim's holder needs nothing else of the Postgres backend.

use deadpool_postgres::Object;

/// The class key of the advisory locks that claim one delivery each (`pg_try_advisory_lock(class,
/// id)`): the two-key form, a space apart from the one-key locks above.
pub(super) const DELIVERY_CLAIM: i32 = 0x7770_6463; // "wpdc"

/// The second key of a delivery's claim. Ids past 2^31 wrap: two entries that far apart sharing a
/// lock only makes one wait for the other.
pub(super) fn claim_key(id: u64) -> i32 {
    id as u32 as i32
}

/// Lets go of delivery `id`'s claim held on `conn`. The connection goes back to the pool only once
/// unlocked; a connection that cannot say so is closed, which lets go of the lock too.
pub(in crate::meta) async fn unlock_delivery(conn: Object, id: u64) {
    let unlocked = conn
        .query_one(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&DELIVERY_CLAIM, &claim_key(id)],
        )
        .await
        .map(|r| r.get::<_, bool>(0));
    if !matches!(unlocked, Ok(true)) {
        tracing::debug!(id, result = ?unlocked, "postgres: a delivery claim's connection is closed rather than unlocked");
        drop(Object::take(conn));
    }
}
