//! wharf's configuration: one TOML file, every key optional with a documented default
//! (`examples/wharf.toml` lists them all), and `WHARF_*` environment variables over both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub registry: RegistryConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: wharf has no client authentication yet.
    pub listen: SocketAddr,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before they are cut.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where blobs (`blobs/`), uploads in progress (`ingest/`) and metadata (`meta.redb`) live.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: default_data_dir(),
        }
    }
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Whether DELETE of manifests, tags and blobs is allowed (off by default, as in distribution).
    pub delete_enabled: bool,
    /// Largest manifest accepted on push; larger ones get 413.
    pub max_manifest_bytes: u64,
    /// Upload sessions older than this (seconds since they began) are dropped with what they hold.
    pub upload_ttl_secs: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: false,
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_ttl_secs: 24 * 3600,
        }
    }
}

impl Config {
    /// The config file if given (else the defaults), then environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => Config::parse_file(p)?,
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// `WHARF_LISTEN`, `WHARF_DATA_DIR`, `WHARF_DELETE_ENABLED`, `WHARF_MAX_MANIFEST_BYTES`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                var,
                reason: e.to_string(),
                value,
            })
        }
        if let Some(v) = get("WHARF_LISTEN") {
            self.server.listen = parse("WHARF_LISTEN", v)?;
        }
        if let Some(v) = get("WHARF_DATA_DIR") {
            self.storage.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("WHARF_DELETE_ENABLED") {
            self.registry.delete_enabled = parse("WHARF_DELETE_ENABLED", v)?;
        }
        if let Some(v) = get("WHARF_MAX_MANIFEST_BYTES") {
            self.registry.max_manifest_bytes = parse("WHARF_MAX_MANIFEST_BYTES", v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wharf.toml");
        let mut cfg = Config::parse_file(&path).unwrap();
        // The example names a data dir so it is copy-paste ready; everything else must equal the defaults.
        cfg.storage = StorageConfig::default();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn env_overrides_and_errors() {
        let mut cfg = Config::default();
        cfg.apply_env(|k| match k {
            "WHARF_LISTEN" => Some("127.0.0.1:6000".into()),
            "WHARF_DELETE_ENABLED" => Some("true".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 6000);
        assert!(cfg.registry.delete_enabled);
        let err = cfg
            .apply_env(|k| (k == "WHARF_LISTEN").then(|| "nonsense".into()))
            .unwrap_err();
        assert!(err.to_string().contains("WHARF_LISTEN"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[registry]\ndelete_enabeld = true\n").unwrap_err();
        assert!(err.to_string().contains("delete_enabeld"), "{err}");
    }
}
