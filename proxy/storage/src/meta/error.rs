//! What metadata operations fail with, on either backend, and how an open failure reads to an
//! operator.

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store failed: {0}")]
    Db(#[from] redb::Error),
    #[error("metadata record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("metadata task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("postgres metadata failed: {}", said(.0))]
    Pg(#[source] tokio_postgres::Error),
    /// The shared database cannot be reached now (down, restarting, out of connections): the
    /// registry answers 503 with a `Retry-After`.
    #[error("the metadata database {endpoint} is unavailable: {detail}")]
    Unavailable { endpoint: String, detail: String },
    /// The TLS handshake failed (an untrusted or misnamed certificate, no TLS where the URL
    /// requires it): no retry fixes it, but to a client it is the backend failing, so a 503 too.
    #[error("the TLS handshake with the metadata database {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },
    #[error("the metadata database {endpoint} has schema version {found}, newer than this wharf knows ({known}): run the wharf release that upgraded it, or a newer one")]
    Schema {
        endpoint: String,
        found: i32,
        known: i32,
    },
    #[error("{detail}")]
    Config { detail: String },
}

/// What Postgres said: its own message for a server error (tokio-postgres's `Display` of one is
/// only "db error"), the client's words otherwise.
pub fn said(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

/// Why the metadata store would not open, as an operator acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Another process holds it: a wharf serving this data directory.
    InUse,
    /// This user may not read or write it.
    Denied,
    /// It is not a sound database (truncated, overwritten, corrupted).
    Damaged,
    Other,
}

impl MetaError {
    /// The backend is out of reach for now (a shared database down or restarting): worth a retry,
    /// and nothing was written.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, MetaError::Unavailable { .. })
    }

    /// What kind of failure opening the store met (redb's error kinds, and its panics on files it
    /// cannot make sense of).
    pub fn open_failure(&self) -> OpenFailure {
        use std::io::ErrorKind;
        match self {
            MetaError::Db(redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch) => {
                OpenFailure::InUse
            }
            MetaError::Db(redb::Error::Corrupted(_)) | MetaError::Corrupt(_) => {
                OpenFailure::Damaged
            }
            MetaError::Db(redb::Error::Io(e)) => match e.kind() {
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => OpenFailure::Denied,
                // redb's "not a database", and a file shorter than its own header says.
                ErrorKind::InvalidData | ErrorKind::UnexpectedEof => OpenFailure::Damaged,
                _ => OpenFailure::Other,
            },
            MetaError::Task(e) if e.is_panic() => OpenFailure::Damaged,
            _ => OpenFailure::Other,
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Db(e.into())
            }
        }
    )*};
}
db_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
