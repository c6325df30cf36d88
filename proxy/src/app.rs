//! One wiring for every way wharf runs: `start` builds the server's services once (storage,
//! leases, plugins, policy, mirror, push, auth, the registry, the collector and the scrub, the
//! status page's history), `offline` the same parts over the files for a command run with no server
//! (no plugins, no listener), and `housekeeping` starts the server's background tasks. Settings
//! derived from the config (`gc_settings`, `scrub_settings`) are made here and nowhere else.

use crate::admin::Admin;
use crate::admin::AdminError;
use crate::admin_socket::SOCKET;
use crate::mirror::Mirror;
use crate::push::Push;
use crate::registry::Registry;
use crate::server::purge_uploads;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use wharf_model::config::Config;
use wharf_model::config::{MetadataBackend, StorageBackend};
use wharf_policy::plugin::Plugins;
use wharf_policy::policy::Policy;
use wharf_storage::gc::Collector;
use wharf_storage::gc::Settings;
use wharf_storage::lease::Leases;
use wharf_storage::lease::Touching;
use wharf_storage::meta::Meta;
use wharf_storage::meta::MetaError;
use wharf_storage::store::StoreError;
use wharf_storage::store::{ContentStore, FsStore, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot use data directory {dir}: {source} (set storage.data_dir in the config, or WHARF_DATA_DIR)"
    )]
    DataDir { dir: String, source: StoreError },
    #[error("{}", meta_failure(path, source))]
    Meta { path: String, source: MetaError },
    #[error("{0}")]
    Upstream(wharf_protocol::upstream::UpstreamError),
    #[error("{0}")]
    Plugin(wharf_policy::plugin::PluginError),
    #[error("{0}")]
    Push(crate::push::PushError),
    #[error("{0}")]
    Auth(wharf_policy::auth::AuthError),
    #[error(
        "cannot listen on {addr}: {source} (set server.listen in the config, or WHARF_LISTEN, to a free \
         address)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Metrics(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A shared backend (object store, database) that is unreachable, refuses us, or is misconfigured.
    #[error("{0}")]
    Backend(String),
}

/// What a metadata store that would not open means, and what to do: another wharf holding it, a
/// permission problem and a damaged file each need something else.
fn meta_failure(path: &str, e: &MetaError) -> String {
    use wharf_storage::meta::OpenFailure;
    match e.open_failure() {
        OpenFailure::InUse => format!(
            "cannot open metadata {path}: another wharf is using this data directory ({e}); stop \
             it, or point this one at another storage.data_dir"
        ),
        OpenFailure::Denied => format!(
            "cannot open metadata {path}: {e}: a permission problem: {}; run wharf as the user \
             that owns the data directory, or give this user read and write access to it",
            crate::admin::whose(std::path::Path::new(path))
        ),
        OpenFailure::Damaged => format!(
            "metadata {path} is damaged ({e}): the file is corrupt (truncated or overwritten), \
             not in use by another wharf; run `wharf fsck` with no server running to check and \
             repair it"
        ),
        OpenFailure::Other => format!("cannot open metadata {path}: {e}"),
    }
}

/// Opens the data directory: the content store, and the metadata store (locked while it is open:
/// one wharf per data directory). A data directory others could read is made private first, and
/// the log says what changed. With shared backends (`[storage] backend = "s3"`, `[metadata] backend
/// = "postgres"`) each is reached once here: an unreachable one refuses the start, naming it.
pub async fn open_storage(cfg: &Config) -> Result<(Arc<dyn ContentStore>, Meta), StartError> {
    open_storage_with(cfg, false).await
}

/// As `open_storage`; with `check`, every page of the metadata is verified (and repaired where redb
/// can) before it is used (`wharf fsck`).
pub async fn open_storage_with(
    cfg: &Config,
    check: bool,
) -> Result<(Arc<dyn ContentStore>, Meta), StartError> {
    let dir = cfg.storage.data_dir.clone();
    let d = dir.clone();
    match tokio::task::spawn_blocking(move || wharf_storage::data_dir::make_private(&d)).await {
        Ok(t) => log_tightened(&dir, &t),
        Err(e) => tracing::warn!(error = %e, "could not check the data directory's permissions"),
    }
    let store = open_content(cfg).await?;
    let meta = open_meta(cfg, check).await?;
    Ok((store, meta))
}

/// The content store alone (`storage copy` opens a side's halves apart when the other side shares
/// one of them).
pub(crate) async fn open_content(cfg: &Config) -> Result<Arc<dyn ContentStore>, StartError> {
    let dir = cfg.storage.data_dir.clone();
    let data_dir_error = |source| StartError::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    match cfg.storage.backend {
        StorageBackend::Fs => Ok(Arc::new(FsStore::open(&dir).map_err(data_dir_error)?)),
        StorageBackend::S3 => {
            let settings = crate::backends::s3_settings(cfg).map_err(StartError::Backend)?;
            let endpoint = format!("{} (bucket {})", settings.endpoint, settings.bucket);
            // A directory of its own: everything under it is taken for a copy of what the bucket
            // holds, which an fs backend's blobs/ beside it are not.
            let store = S3Store::open(settings, &dir.join("s3-local"))
                .await
                .map_err(|e| match e {
                    StoreError::Io(_) => data_dir_error(e),
                    e => StartError::Backend(crate::backends::s3_refusal(&endpoint, &e)),
                })?;
            tracing::info!(endpoint = %endpoint, "content on S3");
            Ok(Arc::new(store))
        }
    }
}

/// The metadata store alone; `check` as in `open_storage_with`.
pub(crate) async fn open_meta(cfg: &Config, check: bool) -> Result<Meta, StartError> {
    if cfg.metadata.backend == MetadataBackend::Postgres {
        let url = crate::backends::postgres_url(cfg).map_err(StartError::Backend)?;
        let meta = Meta::open_postgres(&url)
            .await
            .map_err(|e| StartError::Backend(crate::backends::postgres_refusal(&e)))?;
        tracing::info!(endpoint = %meta.backend_endpoint().unwrap_or_default(), "metadata on postgres");
        return Ok(meta);
    }
    let meta_path = cfg.storage.data_dir.join("meta.redb");
    let p = meta_path.clone();
    tokio::task::spawn_blocking(move || {
        if check {
            Meta::open_checked(&p)
        } else {
            Meta::open(&p)
        }
    })
    .await
    .map_err(|e| StartError::Meta {
        path: meta_path.display().to_string(),
        source: MetaError::Task(e),
    })?
    .map_err(|source| StartError::Meta {
        path: meta_path.display().to_string(),
        source,
    })
}

/// Says what `make_private` changed in the data directory `dir`, or could not change and how to.
fn log_tightened(dir: &std::path::Path, t: &wharf_storage::data_dir::Tightened) {
    if !t.dirs.is_empty() || !t.files.is_empty() {
        tracing::warn!(
            data_dir = %dir.display(),
            "the data directory was open to other users: made it private ({}); blob files \
             written before keep their mode, but no other user can reach them now",
            t.summary()
        );
    }
    for (path, mode, e) in &t.failed {
        tracing::warn!(
            path = %path.display(), mode = format!("{mode:04o}"), error = %e,
            "cannot make this part of the data directory private: other users may read it; run \
             `chmod go= {}` as its owner, or give wharf a data directory its user owns",
            path.display()
        );
    }
}

/// Opens storage and binds the listener: everything that can fail at startup fails here, with a message
/// that says which setting to change.
pub async fn start(cfg: &Config) -> Result<(Arc<Registry>, Admin, TcpListener), StartError> {
    let dir = cfg.storage.data_dir.clone();
    let (store, meta) = open_storage(cfg).await?;
    let leases = Leases::load(meta.clone()).await.map_err(|e| {
        let wharf_storage::lease::LeaseError::Meta(m) = e;
        match meta.backend_endpoint() {
            Some(endpoint) => {
                StartError::Backend(format!("cannot read leases from {endpoint}: {m}"))
            }
            None => StartError::Meta {
                path: dir.join("meta.redb").display().to_string(),
                source: m,
            },
        }
    })?;
    leases.set_grace(cfg.gc.grace_secs);
    let store = Touching::wrap(store, leases.clone());
    let plugins = {
        let cache = (cfg.storage.plugin_cache_dir.clone()).unwrap_or_else(|| dir.join("plugins"));
        let cfgs = cfg.plugins.clone();
        let max_answer = cfg.registry.max_manifest_bytes;
        tokio::task::spawn_blocking(move || Plugins::load(&cfgs, &cache, max_answer))
            .await
            .map_err(|e| {
                StartError::Plugin(wharf_policy::plugin::PluginError::Trap {
                    plugin: "(loading)".into(),
                    reason: e.to_string(),
                })
            })?
            .map_err(StartError::Plugin)?
    };
    let policy = Policy::new(
        plugins,
        store.clone(),
        meta.clone(),
        cfg.registry.max_manifest_bytes,
    );
    let mirror =
        Mirror::new(cfg, store.clone(), meta.clone(), policy).map_err(StartError::Upstream)?;
    for u in mirror.upstreams() {
        tracing::info!(host = %u.host, prefix = %u.prefix, endpoint = %u.endpoint(), "mirroring upstream");
    }
    let push = Arc::new(
        Push::new(cfg, store.clone(), meta.clone(), mirror.policy().clone())
            .map_err(StartError::Push)?,
    );
    wharf_policy::auth::check_exposure(cfg).map_err(StartError::Auth)?;
    if let Some(why) = crate::metrics_listener::collides(cfg) {
        return Err(StartError::Metrics(why));
    }
    let auth = wharf_policy::auth::Auth::load(&cfg.auth)
        .map_err(StartError::Auth)?
        .map(|a| Arc::new(a.secure(cfg.server.tls.is_some())));
    let cluster = crate::cluster::Cluster::from_config(cfg)?.map(Arc::new);
    let registry = Arc::new(
        Registry::new(store.clone(), meta.clone(), cfg.registry.clone(), mirror)
            .with_push(push.clone())
            .with_auth(auth)
            .with_cluster(cluster),
    );
    purge_uploads(&registry).await;
    // Before the status page can be asked for them.
    registry.policy().denials().restore(&meta).await;
    let reg = registry.clone();
    let flush_usage: wharf_storage::gc::BeforeHook = Box::new(move || {
        let reg = reg.clone();
        Box::pin(async move {
            if let Err(e) = reg.mirror().flush_usage().await {
                tracing::warn!(error = %e, "could not record cache usage before a collection");
            }
        })
    });
    let admin = Admin {
        backends: crate::backends::Backends::of(cfg),
        scrub: Arc::new(wharf_storage::scrub::Scrubber::new(
            meta.clone(),
            store.clone(),
            leases.clone(),
            crate::app::scrub_settings(cfg),
        )),
        collector: Arc::new(
            Collector::new(meta, store, leases.clone(), crate::app::gc_settings(cfg))
                .with_before(flush_usage),
        ),
        leases,
        push,
        history: Arc::new(crate::history::History::new(
            registry.policy().denials().clone(),
        )),
        registry: Some(registry.clone()),
    };
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.server.listen,
            source,
        })?;
    Ok((registry, admin, listener))
}

/// The server's background tasks, until [`Housekeeping::stop`].
pub struct Housekeeping {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Ends by itself when the process is asked to stop, after its last (durable) write.
    sampler: tokio::task::JoinHandle<()>,
}

/// How long a stopping server waits for the sampler's last write.
const SAMPLER_STOP: Duration = Duration::from_secs(5);

impl Housekeeping {
    /// Lets the status sampler finish its last write (the counts and denials since its last tick),
    /// then stops the rest.
    pub async fn stop(self) {
        let mut sampler = self.sampler;
        if tokio::time::timeout(SAMPLER_STOP, &mut sampler)
            .await
            .is_err()
        {
            sampler.abort();
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// The collector every `gc.interval_secs` and the scrub every `scrub.interval_secs` (0: never on
/// their own), the push delivery worker, the admin socket in `data_dir`, the metrics listener and
/// the status sampler.
pub fn housekeeping(admin: Admin, cfg: &Config) -> Housekeeping {
    let mut tasks = vec![
        tokio::spawn(admin.clone().serve(cfg.storage.data_dir.clone())),
        tokio::spawn(admin.push.clone().run()),
    ];
    tasks.extend(crate::metrics_listener::spawn(&cfg.metrics, &admin));
    // With or without a metrics listener: `wharf status` shows the history it records.
    let sampler = tokio::spawn(crate::history::sampler(
        admin.collector.meta.clone(),
        Duration::from_secs(cfg.metrics.sample_secs),
        admin.history.clone(),
    ));
    if cfg.scrub.interval_secs > 0 {
        tasks.push(tokio::spawn(
            admin
                .scrub
                .clone()
                .run_every(Duration::from_secs(cfg.scrub.interval_secs)),
        ));
    }
    if cfg.gc.interval_secs > 0 {
        tasks.push(tokio::spawn(
            admin
                .collector
                .clone()
                .run_every(Duration::from_secs(cfg.gc.interval_secs)),
        ));
    }
    Housekeeping { tasks, sampler }
}

/// The scrub's settings from the config.
pub fn scrub_settings(cfg: &wharf_model::config::Config) -> wharf_storage::scrub::Settings {
    wharf_storage::scrub::Settings {
        max_bytes_per_sec: cfg.scrub.max_bytes_per_sec,
        mirror_hosts: gc_settings(cfg).mirror_hosts,
    }
}

/// The collector's settings from the config.
pub fn gc_settings(cfg: &wharf_model::config::Config) -> Settings {
    Settings {
        grace_secs: cfg.gc.grace_secs,
        max_cache_bytes: cfg.cache.max_bytes,
        mirror_hosts: cfg
            .upstreams
            .iter()
            .map(|u| u.host.clone())
            .chain(std::iter::once("docker.io".to_owned()))
            .collect(),
    }
}

/// The admin state over the files, for when no server runs: opening the metadata store fails if a
/// server holds it.
pub async fn offline(cfg: &wharf_model::config::Config) -> Result<Admin, AdminError> {
    offline_with(cfg, false).await
}

/// As `offline`; with `check`, the metadata's every page is verified (and repaired where redb can)
/// before it is used: for `wharf fsck`.
pub(crate) async fn offline_with(
    cfg: &wharf_model::config::Config,
    check: bool,
) -> Result<Admin, AdminError> {
    let (store, meta) = crate::app::open_storage_with(cfg, check)
        .await
        .map_err(|e| offline_failure(cfg, e))?;
    // No server runs: nothing is in flight, so there is no restart window to wait out.
    let leases = Leases::load_offline(meta.clone())
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    let store = wharf_storage::lease::Touching::wrap(store, leases.clone());
    let policy = wharf_policy::policy::Policy::new(
        wharf_policy::plugin::Plugins::none(),
        store.clone(),
        meta.clone(),
        cfg.registry.max_manifest_bytes,
    );
    let push = crate::push::Push::new(cfg, store.clone(), meta.clone(), policy)
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    let scrub = Arc::new(wharf_storage::scrub::Scrubber::new(
        meta.clone(),
        store.clone(),
        leases.clone(),
        scrub_settings(cfg),
    ));
    let collector = Arc::new(Collector::new(
        meta,
        store,
        leases.clone(),
        gc_settings(cfg),
    ));
    Ok(Admin {
        collector,
        scrub,
        leases,
        push: Arc::new(push),
        registry: None,
        history: Arc::default(),
        backends: crate::backends::Backends::of(cfg),
    })
}

/// Why the files could not be opened with no server answering: in use by a wharf that does not
/// serve the socket (yet), or something only the metadata error says (permissions, damage).
fn offline_failure(cfg: &wharf_model::config::Config, e: crate::app::StartError) -> AdminError {
    use wharf_storage::meta::OpenFailure;
    let failure = match &e {
        crate::app::StartError::Meta { source, .. } => Some(source.open_failure()),
        _ => None,
    };
    match failure {
        Some(OpenFailure::InUse) => AdminError::Failed(format!(
            "{e}; a server that runs on it answers on {}",
            cfg.storage.data_dir.join(SOCKET).display()
        )),
        Some(OpenFailure::Damaged) => AdminError::Damaged(e.to_string()),
        _ => AdminError::Failed(e.to_string()),
    }
}
