//! What the push gateway records (`push.rs`): the journal of deliveries, and which upstream repository
//! wharf delivered each blob to (so the next repository of that upstream mounts it instead of
//! uploading it again).

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Meta, MetaError};
use crate::push::journal::Delivery;
use wharf_model::digest::Digest;

/// delivery id (increasing, in push order) → Delivery (JSON)
pub(super) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("push_journal");
/// (upstream endpoint, blob digest) → an upstream repository that has it
pub(super) const DELIVERED_BLOBS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("push_delivered_blobs");

impl Meta {
    /// Adds a delivery to the journal, durably, and returns its id (the next in push order).
    pub async fn create_delivery(&self, rec: &Delivery) -> Result<u64, MetaError> {
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

    /// Replaces a delivery's record, durably.
    pub async fn put_delivery(&self, id: u64, rec: &Delivery) -> Result<(), MetaError> {
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
        self.run(move |db| {
            let t = db.begin_read()?.open_table(DELIVERED_BLOBS)?;
            let v = t.get((e.as_str(), d.as_str()))?;
            Ok(v.map(|v| v.value().to_owned()))
        })
        .await
    }
}
