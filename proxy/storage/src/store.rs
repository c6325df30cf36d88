//! The content store: bytes by digest, each stored once, whatever repository or tag refers to them.
//!
//! Two small roles, after containerd's content store: a [`Provider`] reads committed content, an
//! [`Ingester`] writes new content through a [`BlobWriter`] that verifies the digest and publishes
//! atomically on commit. Nothing else about storage leaks out of this module, so an object-store backend
//! (S3-compatible, shared by several replicas) is one more implementation of these traits.
//!
//! Invariants every backend keeps:
//! - committed content is immutable and its bytes hash to its digest;
//! - partially written content is never visible through a `Provider`, not even after a crash;
//! - committing content that already exists is a no-op that succeeds (that is the deduplication).

mod copy;
pub mod fs;
mod hashing;
mod pace;
mod read;
mod roles;
pub mod s3;

pub use copy::copy_blob;
pub use fs::FsStore;
pub use pace::Pace;
pub use read::chunks;
pub use roles::{
    Blob, BlobSource, BlobWriter, ContentStore, IngestInfo, IngestRef, Ingester, Provider,
    Rehashed, StoreError, StoredCopy, Sweeper, Verifier,
};
pub use s3::{S3Settings, S3Store};

#[cfg(test)]
pub(crate) mod tests;
