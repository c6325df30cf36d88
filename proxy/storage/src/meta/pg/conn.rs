//! The Postgres handle every part of the metadata's Postgres side shares: the pool, how driver errors
//! are sorted (unavailable or an answer), TLS, and the notifications that keep other processes'
//! caches right.

use deadpool_postgres::Pool;

use crate::meta::error::MetaError;

/// The channel cache invalidations travel on.
pub(in crate::meta) const CHANNEL: &str = "wharf_cache";

/// Which cached lookup another process's write touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::meta) enum Invalidate {
    Tag,
    Manifest,
    Blob,
    Checked,
}

pub struct Pg {
    pub(in crate::meta) pool: Pool,
    /// `user@host:port/db`, never the password: what messages name.
    pub(in crate::meta) endpoint: String,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Pg {
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A pooled connection.
    pub(in crate::meta) async fn client(&self) -> Result<deadpool_postgres::Object, MetaError> {
        self.pool.get().await.map_err(|e| self.pool_error(e))
    }

    fn pool_error(&self, e: deadpool_postgres::PoolError) -> MetaError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => self.error(e),
            other => MetaError::Unavailable {
                endpoint: self.endpoint.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// Sorts a driver error: the connection's (the database is unreachable, restarting, out of
    /// connections) make the backend unavailable; the rest are the database's answers.
    pub(in crate::meta) fn error(&self, e: tokio_postgres::Error) -> MetaError {
        classify(&self.endpoint, e)
    }
}

/// Tells the other processes (and this one's listener) that `repo`'s `key` changed, when `tx` commits.
pub(in crate::meta) async fn notify(
    tx: &tokio_postgres::Transaction<'_>,
    kind: Invalidate,
    repo: &str,
    key: &str,
) -> Result<(), tokio_postgres::Error> {
    let k = match kind {
        Invalidate::Tag => "t",
        Invalidate::Manifest => "m",
        Invalidate::Blob => "b",
        Invalidate::Checked => "c",
    };
    let payload = format!("{k}\t{repo}\t{key}");
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await?;
    Ok(())
}

pub(in crate::meta) fn classify(endpoint: &str, e: tokio_postgres::Error) -> MetaError {
    if let Some(detail) = super::tls::tls_failure(&e) {
        return MetaError::Tls {
            endpoint: endpoint.to_owned(),
            detail,
        };
    }
    let unavailable = match e.as_db_error() {
        // No answer from the database at all: connecting failed, or the connection broke.
        None => e.code().is_none(),
        // Connection exceptions, an administrator's shutdown, "the database system is starting up",
        // too many connections.
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }
    };
    if unavailable {
        MetaError::Unavailable {
            endpoint: endpoint.to_owned(),
            detail: e.to_string(),
        }
    } else {
        MetaError::Pg(e)
    }
}
