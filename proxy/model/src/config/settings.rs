//! The configuration as values: `Config` and its sections, each key with its default (what
//! serde reads and writes), and what follows from them without I/O.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::platform::{PlatformMode, PlatformSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub metadata: MetadataConfig,
    pub registry: RegistryConfig,
    pub mirror: MirrorConfig,
    pub gc: GcConfig,
    /// The scrub (`scrub.rs`, `wharf fsck`): re-hashing stored content, checking records.
    pub scrub: ScrubConfig,
    pub cache: CacheConfig,
    /// Upstream registries to mirror; `docker.io` is always there (the embedded default) unless the
    /// file configures it differently.
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Policy plugins (WebAssembly components, `wit/`), run in the order listed.
    #[serde(rename = "plugin", skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginConfig>,
    /// Push routes (the CI push gateway): local repository prefix → upstream repository.
    #[serde(rename = "push", skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<PushConfig>,
    /// How routed pushes are delivered upstream: retries and concurrency.
    pub delivery: DeliveryConfig,
    /// Client authentication and authorization (`auth.rs`).
    pub auth: AuthConfig,
    /// The metrics listener (`metrics.rs`): Prometheus `/metrics` and the status page.
    pub metrics: MetricsConfig,
    /// Several wharf processes on shared backends serving one cache (`cluster.rs`); off unless set.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: how the replicas of one cache reach each other. All three keys, or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `host:port` other replicas reach this one's peer listener at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Where the peer listener listens (requests other replicas forward here); `""`: none.
    #[serde(
        serialize_with = "ser_optional_addr",
        deserialize_with = "de_optional_addr"
    )]
    pub peer_listen: Option<SocketAddr>,
    /// A file holding the secret every replica shares (at least 32 bytes); peers sign each request
    /// with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<std::path::PathBuf>,
    /// Or an environment variable holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

impl ClusterConfig {
    pub fn is_on(&self) -> bool {
        self.advertise.is_some()
            || self.peer_listen.is_some()
            || self.secret_file.is_some()
            || self.secret_env.is_some()
    }
}

/// Who may call wharf, and what each caller may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Users and bcrypt hashes, one `user:$2y$…` per line (as `htpasswd -B` writes them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd_file: Option<PathBuf>,
    /// Static bearer tokens, one `<token> <identity>` per line (`#` comments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// Whether pulls without a credential are allowed (when no rule says otherwise). Pushes and
    /// deletes always need one once authentication is on.
    pub anonymous_pull: bool,
    /// Listen on a non-loopback address with no authentication configured.
    pub allow_anonymous_remote: bool,
    /// Lifetime of the tokens wharf's token endpoint (`/token`) issues.
    pub token_ttl_secs: u64,
    /// Failed logins from one client address within `failed_login_window_secs` before its
    /// further attempts are refused (429) until the window passes.
    pub max_failed_logins: u32,
    pub failed_login_window_secs: u64,
    /// Per-repository rules; the longest matching prefix decides.
    #[serde(rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthRule>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd_file: None,
            tokens_file: None,
            anonymous_pull: true,
            allow_anonymous_remote: false,
            token_ttl_secs: 300,
            max_failed_logins: 10,
            failed_login_window_secs: 60,
            rules: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Whether any credential source is configured (authentication is on).
    pub fn enabled(&self) -> bool {
        self.htpasswd_file.is_some() || self.tokens_file.is_some()
    }
}

/// `[[auth.rule]]`: who may pull and push repositories under `prefix`. Identities are names from the
/// htpasswd or tokens file; `"*"` is any authenticated caller, `"anonymous"` a caller with none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRule {
    pub prefix: String,
    #[serde(default)]
    pub pull: Vec<String>,
    #[serde(default)]
    pub push: Vec<String>,
}

/// One `[[plugin]]`: a WebAssembly component implementing some of `wharf:policy`'s interfaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Names the plugin in logs, errors and denials.
    pub name: String,
    /// The component (`.wasm`); relative paths are relative to the config file's directory.
    pub path: PathBuf,
    /// Passed to the plugin's `init` (often JSON).
    #[serde(default)]
    pub config: String,
    /// Operations the plugin sees (`pull`, `push`, `delete`, `list`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// How long one call may run (epoch deadline).
    #[serde(default = "PluginConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear memory a plugin instance may grow to.
    #[serde(default = "PluginConfig::default_max_memory_mb")]
    pub max_memory_mb: u64,
    /// What a failure (trap, timeout, `err`) means: `closed` (deny) or `open` (as if the plugin
    /// were not there). Default: `closed` for access checks, `open` for platforms and rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<FailPolicy>,
}

impl PluginConfig {
    fn default_timeout_ms() -> u64 {
        // The deadline counts wall time (epochs): on a busy machine a call that needs 0.3 ms can
        // wait several ms for a CPU, and a deadline of a few ms then denies good requests under
        // load (seen in the bench at 64 connections on 2 CPUs). A runaway plugin still costs one
        // call this long, and nothing more.
        25
    }
    fn default_max_memory_mb() -> u64 {
        64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    Closed,
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default; another address needs `[auth]` (or
    /// `auth.allow_anonymous_remote = true`).
    pub listen: SocketAddr,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before they are cut.
    pub shutdown_grace_secs: u64,
    /// A connection that has not sent a complete request head within this many seconds is closed.
    pub header_timeout_secs: u64,
    /// A request body from which no bytes arrive for this long ends in an error (an upload session
    /// keeps what it received, so the client can resume).
    pub body_idle_secs: u64,
    /// A connection whose client takes none of the response for this long is closed.
    pub write_idle_secs: u64,
    /// Serve `listen` over TLS (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: the listener's certificate, read at start and again on `SIGHUP`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server certificate first, then any intermediates. Relative paths are relative to
    /// the config file's directory.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            shutdown_grace_secs: 30,
            header_timeout_secs: 30,
            body_idle_secs: 60,
            write_idle_secs: 60,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where content lives: `fs` (files under `data_dir`, the default) or `s3` (an S3-compatible
    /// object store, `[storage.s3]`, shared by every wharf that points at it).
    pub backend: StorageBackend,
    /// Where blobs (`blobs/`), uploads in progress (`ingest/`) and metadata (`meta.redb`) live. With
    /// the `s3` backend: the ingest spool and the hot-blob cache (still local).
    pub data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// Where compiled plugins are kept, by the digest of the component (default: `<data_dir>/plugins`).
    /// Several wharfs may share one: entries are written atomically and never change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_cache_dir: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Fs,
            data_dir: default_data_dir(),
            s3: None,
            plugin_cache_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Fs,
    S3,
}

/// `[storage.s3]`: the bucket content lives in. Credentials only from the environment or a file,
/// never in the config file itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `http(s)://host:port` of the S3 API (Garage's is port 3900; MinIO's 9000).
    pub endpoint: String,
    pub bucket: String,
    /// The region the store signs requests for (Garage: its `s3_region`, often `garage`).
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Put before every key (`prod/` → `prod/blobs/sha256/…`): several wharf deployments in one bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Hot blobs kept on local disk (under `data_dir`) so a warm GET leaves by `sendfile`, least
    /// recently used out first; 0 keeps none.
    #[serde(default = "default_s3_cache_max_bytes")]
    pub cache_max_bytes: u64,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

fn default_s3_cache_max_bytes() -> u64 {
    20 << 30
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    #[default]
    Redb,
    Postgres,
}

/// `[metadata]`: where tags, links, leases and the rest of the records live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `redb` (a file in the data directory, the default) or `postgres` (shared by every wharf that
    /// points at it).
    pub backend: MetadataBackend,
    /// `postgres://user@host:port/db` (no password here: `password_env` or `password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An environment variable holding the whole URL, password included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// `$XDG_DATA_HOME/wharf`, else `~/.local/share/wharf`, else `./wharf-data`.
pub fn default_data_dir() -> PathBuf {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(x) = env("XDG_DATA_HOME") {
        return x.join("wharf");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/share/wharf");
    }
    PathBuf::from("wharf-data")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Whether DELETE of manifests, tags and blobs is allowed (off by default, as in distribution).
    pub delete_enabled: bool,
    /// Largest manifest accepted on push; larger ones get 413.
    pub max_manifest_bytes: u64,
    /// Upload sessions older than this (seconds since they began) are dropped with what they hold,
    /// unless a request is writing to them at that moment.
    pub upload_ttl_secs: u64,
    /// Upload sessions no request has touched for this long are dropped with what they hold.
    pub upload_idle_secs: u64,
    /// Upload sessions open at once, at most; beyond it starting one is refused with 429.
    pub max_upload_sessions: usize,
    /// Upload sessions one client (the identity it logs in as, else its address) holds at once, at
    /// most; beyond it that client's next one is refused with 429, and the others go on.
    pub max_upload_sessions_per_client: usize,
    /// How often expired upload sessions and orphaned partial writes are looked for and removed.
    pub upload_purge_secs: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: false,
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_ttl_secs: 24 * 3600,
            upload_idle_secs: 15 * 60,
            max_upload_sessions: 1000,
            max_upload_sessions_per_client: 100,
            upload_purge_secs: 60,
        }
    }
}

/// The garbage collector (`gc.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Content touched (a `HEAD`, a mount, a commit, a manifest push) this recently is never
    /// collected, referenced or not: a client that checked a blob exists and pushes a manifest
    /// naming it later finds it there. Also how long after a start nothing is collected.
    pub grace_secs: u64,
    /// A collection runs this often (0: only on demand, `wharf gc`).
    pub interval_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            grace_secs: 3600,
            interval_secs: 3600,
        }
    }
}

/// `[scrub]`: re-reading every stored blob to find rot at rest (`scrub.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// A pass runs this often (0, the default: only on demand, `wharf fsck`).
    pub interval_secs: u64,
    /// Bytes a pass reads per second at most, so clients served from the same disk keep their
    /// share (0: no bound). `wharf fsck --max-bytes-per-sec` overrides it for one pass.
    pub max_bytes_per_sec: u64,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            interval_secs: 0,
            max_bytes_per_sec: 50 << 20,
        }
    }
}

/// `[metrics]`: a second listener for operators, apart from the registry API's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the listener serving Prometheus `GET /metrics` (and the status page, `/ui`);
    /// `""` (the default): none.
    #[serde(
        serialize_with = "ser_optional_addr",
        deserialize_with = "de_optional_addr"
    )]
    pub listen: Option<SocketAddr>,
    /// The cache counters are recorded in the metadata this often, for `wharf status` and the status
    /// page's history (which survive restarts); at least 1.
    pub sample_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            sample_secs: 10,
        }
    }
}

fn ser_optional_addr<S: serde::Serializer>(
    a: &Option<SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_str(""),
    }
}

/// `""` is "none": TOML has no null.
fn de_optional_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not an address ({e}); write host:port, e.g. \"127.0.0.1:9090\", or \"\" for no metrics listener"
        ))
    })
}

/// One push route: pushes to `prefix[/…]` here are delivered to `target[/…]` upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Local repository prefix (whole name components): `ci/app` routes `ci/app` and `ci/app/x`.
    pub prefix: String,
    /// The upstream endpoint and repository: `https://registry.example.com/team/app`.
    pub target: String,
    #[serde(default)]
    pub mode: PushMode,
    /// Indexes are reduced to these platforms before delivery; empty: every platform.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::platform::de_push_platforms"
    )]
    pub platforms: Vec<PlatformSpec>,
    /// Allow a plain `http://` target.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Credentials for the target; without them, those of the `[[upstream]]` entry for the same host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// When the client's manifest `PUT` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushMode {
    /// Once the upstream accepted the whole image; its refusal is the client's error.
    #[default]
    WriteThrough,
    /// Once wharf holds the image and a journal entry; delivery runs in the background.
    StoreAndForward,
}

/// Delivery of routed pushes (`push.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts that fail transiently (unreachable, timeout, 408, 429, 5xx) before a delivery is
    /// marked failed. A refusal (403, an invalid manifest) fails it at once.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each one.
    pub retry_initial_ms: u64,
    /// The longest wait between attempts (a 429's `Retry-After` is honoured up to this).
    pub retry_max_secs: u64,
    /// Deliveries in flight at once (one at a time per upstream tag, in push order).
    pub concurrency: usize,
    /// How long a write-through push may wait on an upstream that makes no progress (does not answer,
    /// cannot be reached, or fails transiently) before its client is told the push failed. Time spent
    /// sending bytes the upstream takes does not count: a large image on a slow link is not cut off.
    /// Retrying longer is store-and-forward's job.
    pub write_through_timeout_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            // With the backoff below: about an hour of an upstream being down before "failed".
            max_attempts: 20,
            retry_initial_ms: 1000,
            retry_max_secs: 300,
            concurrency: 4,
            // Clients wait for a write-through push; none of docker, podman, containerd or skopeo
            // gives up on a manifest PUT this soon, and a CI job learns of an outage within it.
            write_through_timeout_secs: 30,
        }
    }
}

/// Bounds on the mirror cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// When content only mirrored tags reach exceeds this many bytes, the least recently used
    /// mirrored tags are dropped and the collector reclaims their content; pushed content is never
    /// evicted. 0: unbounded.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// The upstream for names that carry no registry host (Docker's `registry-mirrors` form), when the
    /// name is not a repository pushed to wharf. Empty: such names are only local.
    pub default_upstream: String,
    /// A tag fetched from an upstream is served from cache this long before it is revalidated with a
    /// `HEAD` upstream. Manifests and blobs by digest never expire.
    pub tag_ttl_secs: u64,
    /// When revalidating a tag fails (5xx, 429, timeout, unreachable), serve the cached manifest with a
    /// `Warning` header instead of failing.
    pub stale_if_error: bool,
    /// The platforms (`os/arch[/variant]`) of multi-platform images to mirror, for every upstream
    /// without its own list; the others are never fetched. Empty: every platform.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::platform::de_mirror_platforms"
    )]
    pub platforms: Vec<PlatformSpec>,
    /// What a tag of a platform-reduced index serves: `sparse` (the original index) or `rewritten`
    /// (an index of the kept platforms only, mapped from the original).
    pub platform_mode: PlatformMode,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            default_upstream: "docker.io".into(),
            tag_ttl_secs: 300,
            stale_if_error: true,
            platforms: Vec::new(),
            platform_mode: PlatformMode::Sparse,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host as clients name it: the `ns=` value containerd sends, and the path prefix
    /// (`/v2/<host>/<repo>/...`) unless `prefix` says otherwise.
    pub host: String,
    /// Where to reach it, e.g. `https://registry-1.docker.io`.
    pub endpoint: String,
    /// Path prefix that selects this upstream, for hosts whose name is not a valid repository path
    /// component (a `host:port`). Default: `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Allow a plain `http://` endpoint.
    #[serde(default)]
    pub insecure: bool,
    /// Extra PEM CA certificates to trust for this upstream, besides the built-in web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of an environment variable holding the password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password or token (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Longest wait for response headers, and for each piece of a body.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// This upstream's platforms, instead of `mirror.platforms`; an empty list keeps every platform.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::platform::de_upstream_platforms"
    )]
    pub platforms: Option<Vec<PlatformSpec>>,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_timeout() -> u64 {
    60
}

impl UpstreamConfig {
    pub fn docker_hub() -> Self {
        UpstreamConfig {
            host: "docker.io".into(),
            endpoint: "https://registry-1.docker.io".into(),
            prefix: None,
            insecure: false,
            ca_file: None,
            username: None,
            password_env: None,
            password_file: None,
            connect_timeout_secs: default_connect_timeout(),
            timeout_secs: default_timeout(),
            platforms: None,
        }
    }
}

impl Config {
    /// The configured upstreams plus the embedded `docker.io` default, if the file does not name it.
    pub fn effective_upstreams(&self) -> Vec<UpstreamConfig> {
        let mut ups = self.upstreams.clone();
        if !ups.iter().any(|u| u.host == "docker.io") {
            ups.push(UpstreamConfig::docker_hub());
        }
        ups
    }

    /// The configuration wharf runs with, written out: the built-in `docker.io` upstream is listed.
    /// Fed back to `wharf serve --config`, it gives the same configuration.
    pub fn effective(&self) -> Config {
        Config {
            upstreams: self.effective_upstreams(),
            ..self.clone()
        }
    }

    /// Paths the file gives relative to itself (plugins, TLS files) made relative to where wharf
    /// runs: a plugin next to its config file is found wherever wharf was started from.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for p in &mut self.plugins {
            if p.path.is_relative() {
                p.path = dir.join(&p.path);
            }
        }
        if let Some(tls) = &mut self.server.tls {
            for f in [&mut tls.cert_file, &mut tls.key_file] {
                if f.is_relative() {
                    *f = dir.join(&*f);
                }
            }
        }
    }
}
