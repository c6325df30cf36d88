//! The metadata on Postgres: for several wharf processes sharing one cache (`[metadata] backend =
//! "postgres"`). The same records as the embedded redb backend, one table each
//! (`migrations/*.sql`), written in the same transactions.
//!
//! What differs from redb, and why:
//! - Other processes write too. Every write to something the read cache holds (tags, manifests,
//!   blob links, tag checks) sends a notification in its transaction (`pg_notify`, delivered at
//!   commit, in commit order); a listener connection here removes what it names from the cache. While
//!   the listener is not connected, nothing is cached: a stale tag is never served.
//! - The database may go away while wharf runs: such failures are `MetaError::Unavailable`, which the
//!   registry answers with 503 and a `Retry-After`, never with a half-written record (each write is
//!   one transaction).
//! - The schema is versioned; migrations run at start under an advisory lock, so replicas starting
//!   together apply each once. A database newer than this wharf is refused.

pub(super) mod claim;
mod collect;
pub(super) mod conn;
mod dump;
mod platforms;
mod push;
mod repos;
mod scrub;
mod sent;
mod stats;
pub mod tls;
mod touches;
mod usage;

pub(super) use repos::PutRows;
pub(super) use usage::recorded as recorded_uses;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use super::db::{Backend, Meta, MetaError, ReadCache};
use conn::{classify, Invalidate, Pg, CHANNEL};
use tls::Target;

/// The migrations, in order: the schema's version is how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_touches.sql"),
];

/// Any fixed number: the advisory lock replicas take to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7768_6172_665f_6d31; // "wharf_m1"

/// `user@host:port/db` of a connection string, for messages.
pub fn endpoint_of(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("?");
    let db = cfg.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// Whether a connection string carries a password (the config file must not).
pub fn url_has_password(url: &str) -> Result<bool, String> {
    Ok(tls::parse(url)?.cfg.get_password().is_some())
}

/// Checks that the database at `url` answers, takes these credentials, and holds a schema this wharf
/// can use (none yet, or not newer): for `wharf check-config`, which changes nothing.
pub async fn probe(url: &str) -> Result<(), MetaError> {
    let Target { mut cfg, tls, .. } = target(url)?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    let endpoint = endpoint_of(&cfg);
    let (client, conn) = cfg.connect(tls).await.map_err(|e| classify(&endpoint, e))?;
    let driver = tokio::spawn(conn);
    let row = client
        .query_one("SELECT to_regclass('wharf_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| classify(&endpoint, e))?;
    if row.get::<_, bool>(0) {
        let found: i32 = client
            .query_one("SELECT version FROM wharf_schema", &[])
            .await
            .map_err(|e| classify(&endpoint, e))?
            .get(0);
        let known = MIGRATIONS.len() as i32;
        if found > known {
            return Err(MetaError::Schema {
                endpoint,
                found,
                known,
            });
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

fn target(url: &str) -> Result<Target, MetaError> {
    tls::parse(url).map_err(|e| MetaError::Config {
        detail: format!("metadata.url: {e}"),
    })
}

impl Meta {
    /// Opens the metadata on the Postgres database `url` (a libpq connection string or
    /// `postgres://` URL, password included if one is needed): checks it is reachable, brings its
    /// schema up to date and starts listening for other processes' writes.
    pub async fn open_postgres(url: &str) -> Result<Meta, MetaError> {
        let Target { mut cfg, tls, .. } = target(url)?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(5));
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("wharf");
        }
        let endpoint = endpoint_of(&cfg);
        let mgr = Manager::from_config(
            cfg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(32)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| MetaError::Config {
                detail: format!("cannot build the postgres pool: {e}"),
            })?;
        let pg = Arc::new(Pg { pool, endpoint });
        pg.migrate().await?;
        let cache = Arc::new(ReadCache::default());
        // Nothing is cached until the listener is connected (`listen` sets it live).
        cache.clear(false);
        tokio::spawn(listen(
            cfg,
            tls,
            pg.endpoint.clone(),
            Arc::downgrade(&cache),
        ));
        Ok(Meta {
            backend: Backend::Pg(pg),
            cache,
            uses: Arc::default(),
            claimed: Arc::default(),
        })
    }
}

impl Pg {
    async fn migrate(&self) -> Result<(), MetaError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.error(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.error(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS wharf_schema (version integer NOT NULL);
             INSERT INTO wharf_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM wharf_schema)",
        )
        .await
        .map_err(|e| self.error(e))?;
        let found: i32 = tx
            .query_one("SELECT version FROM wharf_schema", &[])
            .await
            .map_err(|e| self.error(e))?
            .get(0);
        let known = MIGRATIONS.len() as i32;
        if found > known {
            return Err(MetaError::Schema {
                endpoint: self.endpoint.clone(),
                found,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await.map_err(|e| self.error(e))?;
            tx.execute("UPDATE wharf_schema SET version = $1", &[&(i as i32 + 1)])
                .await
                .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        if found < known {
            tracing::info!(endpoint = %self.endpoint, from = found, to = known, "postgres metadata schema migrated");
        }
        Ok(())
    }
}

fn parse_payload(p: &str) -> Option<(Invalidate, &str, &str)> {
    let mut it = p.splitn(3, '\t');
    let kind = match it.next()? {
        "t" => Invalidate::Tag,
        "m" => Invalidate::Manifest,
        "b" => Invalidate::Blob,
        "c" => Invalidate::Checked,
        _ => return None,
    };
    Some((kind, it.next()?, it.next()?))
}

/// Keeps a connection listening for invalidations, reconnecting after a loss. Ends when the
/// metadata handle is dropped.
async fn listen(
    cfg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    endpoint: String,
    cache: std::sync::Weak<ReadCache>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(c) = cache.upgrade() else { return };
        match listen_once(&cfg, &tls, &c).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(endpoint = %endpoint, error = %e, "postgres: the cache invalidation listener lost its connection; not caching metadata until it is back");
            }
        }
        // Whatever was missed while disconnected could be stale.
        c.clear(false);
        drop(c);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    cfg: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    cache: &Arc<ReadCache>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = cfg.connect(tls.clone()).await?;
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    let handle = |m: AsyncMessage| {
        if let AsyncMessage::Notification(n) = m {
            if let Some((kind, repo, key)) = parse_payload(n.payload()) {
                cache.invalidate(kind, repo, key);
            }
        }
    };
    {
        let sql = format!("LISTEN {CHANNEL}");
        let listening = client.batch_execute(&sql);
        tokio::pin!(listening);
        loop {
            tokio::select! {
                r = &mut listening => { r?; break; }
                m = messages.next() => match m {
                    Some(Ok(m)) => handle(m),
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
            }
        }
    }
    // Listening from now on: what was cached before may have missed a write, so start afresh.
    cache.clear(true);
    loop {
        tokio::select! {
            m = messages.next() => match m {
                Some(Ok(m)) => handle(m),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            // The handle was dropped: stop listening.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if Arc::strong_count(cache) <= 1 {
                    drop(client);
                    return Ok(());
                }
            }
        }
    }
}

impl Meta {
    /// Waits until the invalidation listener is connected (at most ten seconds), so that what is read
    /// next is cached: for tests, and for a start that wants a warm cache at once.
    pub async fn wait_listening(&self) {
        for _ in 0..400 {
            if self.cache.stamp().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs a Postgres write as its own task, handing it the read cache to update after its commit:
    /// once started it finishes, cache included, even if the request that asked for it is dropped
    /// (as `run_write` does for redb).
    pub(super) async fn pg_write<T, F, Fut>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pg>, Arc<ReadCache>) -> Fut,
        Fut: std::future::Future<Output = Result<T, MetaError>> + Send + 'static,
    {
        let pg = self.pg().expect("pg_write on the postgres backend").clone();
        tokio::spawn(f(pg, self.cache.clone())).await?
    }
}
