//! Placeholder until the S3 store lands (branch s3): the signature the app wires to.
#![allow(dead_code)]

use std::path::Path;

use super::fs::FsStore;
use super::roles::StoreError;

pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub cache_max_bytes: u64,
}

pub type S3Store = FsStore;

pub async fn open_placeholder(_s: S3Settings, _dir: &Path) -> Result<FsStore, StoreError> {
    Err(StoreError::InvalidArgument(
        "the s3 backend is not built yet".into(),
    ))
}

pub trait ProbePlaceholder {
    #[allow(async_fn_in_trait)]
    async fn probe(_s: &S3Settings) -> Result<(), StoreError> {
        Err(StoreError::InvalidArgument(
            "the s3 backend is not built yet".into(),
        ))
    }
}
impl ProbePlaceholder for FsStore {}
