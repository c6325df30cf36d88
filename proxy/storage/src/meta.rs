//! Registry metadata: which repository links which blob and manifest, tags, referrers, upload sessions.
//!
//! Bytes live in the content store; this module only holds names and edges. It is the one place that
//! knows how metadata is stored (redb, an embedded transactional B-tree), so a shared backend (Postgres,
//! for several replicas) replaces this module's internals, not its callers.
//!
//! Crash consistency with the content store comes from ordering: content is published (fsynced, renamed)
//! before any transaction here refers to it, and redb commits are durable when they return. A crash can
//! leave content that nothing refers to (for the collector), never a reference to missing content.

mod collect;
mod db;
mod dump;
mod error;
mod open;
mod pending;
mod pg;
mod platforms;
pub mod push;
mod repos;
mod scrub;
mod sent;
mod stats;
mod touches;
mod usage;

pub use collect::{Forgotten, LeaseRecord, Snapshot};
pub use db::{ManifestRecord, Meta, MetaError, OpenFailure, UploadRecord};
pub use dump::{Dump, Imported, TableCount};
pub use error::said as postgres_said;
pub use pg::conn::Pg;
pub use pg::{endpoint_of as postgres_endpoint, probe as probe_postgres, url_has_password};
pub use repos::ManifestPut;
pub use scrub::Inventory;
pub use stats::{CacheTotals, LastGc, Retention, Sample};
pub use touches::{CollectorLock, DOOM_MAX_SECS};
pub use usage::LastUse;

#[cfg(test)]
pub(crate) mod tests;
