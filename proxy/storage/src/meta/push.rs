//! What the push gateway records (`push.rs` in wharf): the journal of deliveries (the record and its
//! state are defined here, with the table that holds them), and which upstream repository
//! wharf delivered each blob to (so the next repository of that upstream mounts it instead of
//! uploading it again).

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::db::{Meta, MetaError};
use wharf_model::config::PushMode;
use wharf_model::digest::Digest;

pub(super) mod claim;
pub use claim::Claim;

/// A delivery's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for its next try (or its first).
    Pending,
    /// Being sent now (after a crash: pending again).
    Delivering,
    Delivered,
    /// Refused, or failed `max_attempts` times: kept with its lease until retried or dropped.
    Failed,
}

impl State {
    /// The journal's word for it, as `wharf push status`, the status page and metrics print it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivering => "delivering",
            State::Delivered => "delivered",
            State::Failed => "failed",
        }
    }
}

/// One routed push to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub state: State,
    pub mode: PushMode,
    /// The route's local prefix.
    pub route: String,
    /// The local repository and the reference pushed (a tag, or the digest).
    pub repository: String,
    pub reference: String,
    /// Whether `reference` is a tag.
    pub tagged: bool,
    /// The manifest the client pushed.
    pub digest: Digest,
    /// The upstream endpoint and repository.
    pub target: String,
    pub upstream_repository: String,
    /// What was delivered as the top manifest (the reduced or rewritten one, if so).
    pub upstream_digest: Option<Digest>,
    /// The kept platforms, when the index was reduced.
    pub platforms: Option<Vec<String>>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix milliseconds of the next try.
    pub next_try_ms: Option<u64>,
    /// Unix seconds.
    pub created: u64,
    pub delivered_at: Option<u64>,
    /// The lease over everything the delivery sends, until it is delivered or dropped.
    pub lease: Option<String>,
    /// Whether the local tag names the pushed manifest yet (write-through commits it after the
    /// upstream accepted the image).
    pub committed: bool,
}

impl Delivery {
    /// Deliveries of one upstream tag go one at a time, in push order.
    pub fn tag_key(&self) -> (String, String, String) {
        (
            self.target.clone(),
            self.upstream_repository.clone(),
            self.reference.clone(),
        )
    }
}

/// delivery id (increasing, in push order) → Delivery (JSON)
pub(super) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("push_journal");
/// (upstream endpoint, blob digest) → an upstream repository that has it
pub(super) const DELIVERED_BLOBS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("push_delivered_blobs");

impl Meta {
    /// Adds a delivery to the journal, durably, and returns its id (the next in push order).
    pub async fn create_delivery(&self, rec: &Delivery) -> Result<u64, MetaError> {
        if self.pg().is_some() {
            let rec = rec.clone();
            return self
                .pg_write(move |pg, _| async move { pg.create_delivery(&rec).await })
                .await;
        }
        let v = serde_json::to_vec(rec)?;
        self.run(move |db| {
            let tx = db.begin_write()?;
            let id = {
                let mut t = tx.open_table(JOURNAL)?;
                let id = t.last()?.map_or(1, |(k, _)| k.value() + 1);
                t.insert(id, v.as_slice())?;
                id
            };
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// `create_delivery`, the new entry claimed by the caller (`claim_delivery`) from before any other
    /// process can see it: whoever adds an entry finishes setting it up (or delivers it, for
    /// write-through) before a deliverer elsewhere can take it.
    pub async fn create_claimed_delivery(&self, rec: &Delivery) -> Result<(u64, Claim), MetaError> {
        if self.pg().is_some() {
            let rec = rec.clone();
            let (id, conn) = self
                .pg_write(move |pg, _| async move { pg.create_claimed_delivery(&rec).await })
                .await?;
            return Ok((id, Claim::pg(id, conn)));
        }
        let id = self.create_delivery(rec).await?;
        // Only a claim on a deleted entry whose id was given out again could be in the way; drop
        // refuses a claimed entry, so none is.
        let claim = Claim::redb(id, &self.claimed).ok_or_else(|| MetaError::Config {
            detail: format!("push journal entry {id} is claimed already, as it is added"),
        })?;
        Ok((id, claim))
    }

    /// Claims delivery `id` for one attempt: `None` while someone else holds it (another task here,
    /// or another wharf on the same Postgres database). Held until released or dropped, or until
    /// the holder's connection to the database is gone (a killed process holds nothing).
    ///
    /// The claim says nothing of the record: another process may have delivered the entry (or tried
    /// it and put off the next try) between reading the journal and claiming; read it again.
    pub async fn claim_delivery(&self, id: u64) -> Result<Option<Claim>, MetaError> {
        if let Some(pg) = self.pg() {
            return Ok(pg.claim_delivery(id).await?.map(|conn| Claim::pg(id, conn)));
        }
        Ok(Claim::redb(id, &self.claimed))
    }

    /// Replaces a delivery's record, durably.
    pub async fn put_delivery(&self, id: u64, rec: &Delivery) -> Result<(), MetaError> {
        if self.pg().is_some() {
            let rec = rec.clone();
            return self
                .pg_write(move |pg, _| async move { pg.put_delivery(id, &rec).await })
                .await;
        }
        let v = serde_json::to_vec(rec)?;
        self.run(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(JOURNAL)?.insert(id, v.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn delete_delivery(&self, id: u64) -> Result<bool, MetaError> {
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move { pg.delete_delivery(id).await })
                .await;
        }
        self.run(move |db| {
            let tx = db.begin_write()?;
            let gone = tx.open_table(JOURNAL)?.remove(id)?.is_some();
            tx.commit()?;
            Ok(gone)
        })
        .await
    }

    /// Every delivery, in push order.
    pub async fn deliveries(&self) -> Result<Vec<(u64, Delivery)>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.deliveries().await;
        }
        self.run(|db| {
            let t = db.begin_read()?.open_table(JOURNAL)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value(), serde_json::from_slice(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    pub async fn delivery(&self, id: u64) -> Result<Option<Delivery>, MetaError> {
        if let Some(pg) = self.pg() {
            return pg.delivery(id).await;
        }
        self.run(move |db| {
            let t = db.begin_read()?.open_table(JOURNAL)?;
            let v = t.get(id)?;
            Ok(match v {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            })
        })
        .await
    }

    /// Remembers that `repo` on `endpoint` has blob `d`. Not forced to disk: losing it costs an
    /// upload instead of a mount.
    pub async fn record_delivered_blob(
        &self,
        endpoint: &str,
        d: &Digest,
        repo: &str,
    ) -> Result<(), MetaError> {
        let (e, d, r) = (endpoint.to_owned(), d.to_string(), repo.to_owned());
        if self.pg().is_some() {
            return self
                .pg_write(move |pg, _| async move { pg.record_delivered_blob(&e, &d, &r).await })
                .await;
        }
        self.run(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::None)?;
            tx.open_table(DELIVERED_BLOBS)?
                .insert((e.as_str(), d.as_str()), r.as_str())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// An upstream repository on `endpoint` that wharf delivered blob `d` to.
    pub async fn delivered_blob(
        &self,
        endpoint: &str,
        d: &Digest,
    ) -> Result<Option<String>, MetaError> {
        let (e, d) = (endpoint.to_owned(), d.to_string());
        if let Some(pg) = self.pg() {
            return pg.delivered_blob(&e, &d).await;
        }
        self.run(move |db| {
            let t = db.begin_read()?.open_table(DELIVERED_BLOBS)?;
            let v = t.get((e.as_str(), d.as_str()))?;
            Ok(v.map(|v| v.value().to_owned()))
        })
        .await
    }
}
