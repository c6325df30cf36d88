//! wharf's configuration: one TOML file, every key optional with a documented default
//! (`examples/wharf.toml` lists them all), and `WHARF_*` environment variables over both.

mod load;
pub mod schema;
mod settings;

pub use load::{problem_count, ConfigError};
pub use settings::{
    default_data_dir, AuthConfig, AuthRule, CacheConfig, ClusterConfig, Config, DeliveryConfig,
    FailPolicy, GcConfig, MetadataBackend, MetadataConfig, MetricsConfig, MirrorConfig,
    PluginConfig, PushConfig, PushMode, RegistryConfig, S3Config, ScrubConfig, ServerConfig,
    StorageBackend, StorageConfig, TlsConfig, UpstreamConfig,
};
