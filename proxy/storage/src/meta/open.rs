//! Opening the metadata store: the file made private before redb sees it, every table created up
//! front, older layouts upgraded.

use std::path::Path;
use std::sync::Arc;

use super::db::{
    Backend, Meta, MetaError, BLOBS, MANIFESTS, MIRROR_REFERRERS, REFERRERS, REWRITES, TAGS,
    TAG_CHECKED, UPLOADS,
};
use super::{collect, platforms, push, sent, stats, usage};

impl Meta {
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Meta::open_with(path, false)
    }

    /// As `open`, verifying the checksum of every page first (`wharf fsck`): reads the whole file,
    /// and refuses a damaged one rather than trusting it (a plain open may panic on one).
    pub fn open_checked(path: &Path) -> Result<Self, MetaError> {
        Meta::open_with(path, true)
    }

    fn open_with(path: &Path, check: bool) -> Result<Self, MetaError> {
        // Made 0600 before redb initialises it (redb creates a missing file with the umask's mode,
        // and takes an empty one as new): it names every repository, tag and push.
        crate::data_dir::file_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| MetaError::Db(e.into()))?;
        let db = redb::Builder::new()
            .set_check_integrity_on_open(check)
            .create(path)?;
        // Create every table up front so read transactions never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(TAGS)?;
        tx.open_table(MANIFESTS)?;
        tx.open_table(BLOBS)?;
        tx.open_table(REFERRERS)?;
        tx.open_table(UPLOADS)?;
        tx.open_table(TAG_CHECKED)?;
        tx.open_table(usage::LAST_USE)?;
        usage::upgrade(&tx)?;
        tx.open_table(MIRROR_REFERRERS)?;
        tx.open_table(REWRITES)?;
        tx.open_table(platforms::INDEX_CHILDREN)?;
        tx.open_table(platforms::KEPT_BLOBS)?;
        tx.open_table(collect::LEASES)?;
        tx.open_table(push::JOURNAL)?;
        tx.open_table(push::DELIVERED_BLOBS)?;
        tx.open_table(stats::CACHE_SAMPLES)?;
        tx.open_table(stats::STATUS_RECORDS)?;
        tx.open_table(sent::UPSTREAM_SENT)?;
        tx.commit()?;
        Ok(Meta {
            backend: Backend::Redb(Arc::new(db)),
            cache: Arc::default(),
            uses: Arc::default(),
            claimed: Arc::default(),
        })
    }
}
