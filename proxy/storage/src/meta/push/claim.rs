//! A claim on one journal entry for the length of one delivery attempt: while it is held, no other
//! task of this process and no other wharf on the same database delivers that entry.
//!
//! On Postgres the claim is a session advisory lock on a connection the claim keeps out of the pool
//! (`pg/push.rs`), so Postgres itself lets go of it when the holder dies, however it dies. On redb one
//! process owns the file, so the claim only has to keep two tasks of this process apart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The entries this process has claimed on a redb database.
pub(in crate::meta) type Claimed = Arc<Mutex<HashSet<u64>>>;

/// Held while entry `id` is being delivered; released on `release` or drop.
#[must_use = "a claim is let go of as soon as it is dropped"]
pub struct Claim {
    id: u64,
    hold: Option<Hold>,
}

enum Hold {
    Redb(Claimed),
    /// The connection that holds the advisory lock.
    Pg(Box<deadpool_postgres::Object>),
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("id", &self.id).finish()
    }
}

impl Claim {
    pub(in crate::meta) fn redb(id: u64, claimed: &Claimed) -> Option<Claim> {
        claimed.lock().unwrap().insert(id).then(|| Claim {
            id,
            hold: Some(Hold::Redb(claimed.clone())),
        })
    }

    pub(in crate::meta) fn pg(id: u64, conn: deadpool_postgres::Object) -> Claim {
        Claim {
            id,
            hold: Some(Hold::Pg(Box::new(conn))),
        }
    }

    /// The journal entry claimed.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Lets go of the entry now (dropping the claim does it too, from a task of its own).
    pub async fn release(mut self) {
        if let Some(hold) = self.hold.take() {
            hold.release(self.id).await;
        }
    }

    /// The holder's connection breaks without unlocking, as when its process is killed: for tests of
    /// the takeover.
    #[cfg(test)]
    pub(crate) fn lose_connection(mut self) {
        if let Some(Hold::Pg(conn)) = self.hold.take() {
            drop(deadpool_postgres::Object::take(*conn));
        }
    }
}

impl Hold {
    async fn release(self, id: u64) {
        match self {
            Hold::Redb(claimed) => {
                claimed.lock().unwrap().remove(&id);
            }
            Hold::Pg(conn) => crate::meta::pg::claim::unlock_delivery(*conn, id).await,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(hold) = self.hold.take() else { return };
        let id = self.id;
        match hold {
            Hold::Redb(claimed) => {
                claimed.lock().unwrap().remove(&id);
            }
            Hold::Pg(conn) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(crate::meta::pg::claim::unlock_delivery(*conn, id));
                }
                // No runtime to unlock on: closing the connection lets go of the lock instead, and it
                // must never go back to the pool still holding it.
                Err(_) => drop(deadpool_postgres::Object::take(*conn)),
            },
        }
    }
}
