//! wharf's storage floor: what is kept, and what keeps it safe. The content store (`store`: roles
//! and the filesystem backend), the metadata store (`meta`: every persisted record, leases and push
//! deliveries included), leases that hold content a client is about to reference (`lease`), the
//! collector that removes what nothing holds (`gc`), the scrub that finds rot (`scrub`), the data
//! directory's layout and modes (`data_dir`), and single-flight maps (`inflight`).
//!
//! Stands on `wharf-model` and `wharf-metrics` only.

pub mod data_dir;
pub mod gc;
pub mod images;
pub mod inflight;
pub mod lease;
pub mod meta;
pub mod scrub;
pub mod store;
