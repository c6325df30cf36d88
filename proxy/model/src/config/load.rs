//! Reading the configuration (the file through the schema checker, then `WHARF_*` overrides) and
//! printing it back as TOML, with the errors of both.

use std::path::{Path, PathBuf};

use super::schema;
use super::settings::Config;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file's mistakes as `wharf check-config` names them (the schema stage: syntax, unknown
    /// keys, bad values), one per line, each with its fix.
    #[error(
        "config file {path} has {}:\n{}",
        problem_count(problems),
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<schema::Problem>,
    },
    /// What the TOML parser said, if the checker found nothing to say (it finds what the parser does).
    #[error("config file {path} is invalid: {reason}")]
    Parse {
        path: PathBuf,
        reason: Box<toml::de::Error>,
    },
    #[error("cannot print the configuration as TOML: {0}")]
    Print(#[from] toml::ser::Error),
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// "1 problem", "3 problems": as `wharf check-config` counts them.
pub fn problem_count(problems: &[schema::Problem]) -> String {
    match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    }
}

impl Config {
    /// `wharf config`: the effective configuration as TOML that `wharf serve --config` accepts.
    ///
    /// It holds no secret: an upstream's password is never in the configuration, only where to find it
    /// (`password_env`, `password_file`). The one place a password could be written inline is an
    /// endpoint URL's userinfo (`https://user:secret@host`); that is printed as `<elided>`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let mut cfg = self.effective();
        for u in &mut cfg.upstreams {
            u.endpoint = elide_userinfo_password(&u.endpoint);
        }
        let body = toml::to_string(&cfg)?;
        Ok(format!(
            "# wharf's effective configuration: file, defaults and WHARF_* overrides.\n\
             # `wharf serve --config <this file>` runs with the same settings.\n\n{body}"
        ))
    }

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
        let mut cfg: Config = toml::from_str(&text).map_err(|reason| {
            // The checker's words (every mistake, each with its fix; "did you mean") rather than the
            // parser's first error: `wharf serve` and `wharf check-config` say the same.
            let problems = schema::parse(&text).problems;
            if problems.is_empty() {
                ConfigError::Parse {
                    path: path.to_owned(),
                    reason: Box::new(reason),
                }
            } else {
                ConfigError::Invalid {
                    path: path.to_owned(),
                    problems,
                }
            }
        })?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
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
        if let Some(v) = get("WHARF_DEFAULT_UPSTREAM") {
            self.mirror.default_upstream = v;
        }
        if let Some(v) = get("WHARF_MAX_MANIFEST_BYTES") {
            self.registry.max_manifest_bytes = parse("WHARF_MAX_MANIFEST_BYTES", v)?;
        }
        Ok(())
    }
}

/// `scheme://user:secret@host…` → `scheme://user:<elided>@host…`; anything else unchanged.
fn elide_userinfo_password(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:<elided>@{host}{path}"),
            None => endpoint.to_owned(),
        },
        None => endpoint.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StorageConfig, UpstreamConfig};

    #[test]
    fn example_config_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wharf.toml");
        let mut cfg = Config::parse_file(&path).unwrap();
        // The example names a data dir so it is copy-paste ready, and shows an upstream entry;
        // everything else must equal the defaults.
        cfg.storage = StorageConfig::default();
        assert_eq!(cfg.upstreams.len(), 1);
        assert_eq!(cfg.effective_upstreams().len(), 2, "docker.io is added");
        cfg.upstreams.clear();
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

    /// Proves: a file `wharf serve` cannot read is refused with the checker's lines (every mistake,
    /// each once, with its fix), not the parser's first error.
    #[test]
    fn a_bad_file_is_refused_in_the_checkers_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        std::fs::write(
            &path,
            "[registry]\ndelete_enabeld = true\n[gc]\ngrace_secs = \"2h\"\n",
        )
        .unwrap();
        let err = Config::parse_file(&path).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err:?}");
        };
        let text = err.to_string();
        assert_eq!(problems.len(), 2, "{text}");
        for p in problems {
            assert_eq!(text.matches(&p.to_string()).count(), 1, "{text}");
        }
        assert!(text.contains("did you mean `delete_enabled`?"), "{text}");
        assert!(text.contains("grace_secs = 7200"), "{text}");
    }

    /// Proves: `wharf config` prints TOML that parses back (as `wharf serve --config` reads it) to the
    /// same effective configuration, env overrides and the built-in docker.io upstream included, and
    /// printing that again gives the same text.
    #[test]
    fn printed_config_round_trips() {
        let mut cfg: Config = toml::from_str(
            r#"
[server]
listen = "127.0.0.1:6123"
[storage]
data_dir = "/srv/wharf data"
[registry]
delete_enabled = true
[mirror]
default_upstream = "ghcr.io"
tag_ttl_secs = 7
stale_if_error = false
[[upstream]]
host = "ghcr.io"
endpoint = "https://ghcr.io"
username = "bot"
password_env = "GHCR_TOKEN"
[[upstream]]
host = "127.0.0.1:5001"
prefix = "local"
endpoint = "http://127.0.0.1:5001"
insecure = true
ca_file = "/etc/ca.pem"
username = "u"
password_file = "/run/secrets/local"
timeout_secs = 9
"#,
        )
        .unwrap();
        cfg.apply_env(|k| (k == "WHARF_MAX_MANIFEST_BYTES").then(|| "12345".into()))
            .unwrap();
        let printed = cfg.to_toml().unwrap();
        assert!(printed.contains("host = \"docker.io\""), "{printed}");
        assert!(printed.contains("max_manifest_bytes = 12345"), "{printed}");
        let back: Config = toml::from_str(&printed).unwrap();
        assert_eq!(back, cfg.effective(), "{printed}");
        assert_eq!(back.effective_upstreams(), cfg.effective_upstreams());
        assert_eq!(
            back.to_toml().unwrap(),
            printed,
            "printing again changes it"
        );

        let defaults = Config::default();
        let printed = defaults.to_toml().unwrap();
        let back: Config = toml::from_str(&printed).unwrap();
        assert_eq!(back, defaults.effective(), "{printed}");
        assert_eq!(back.upstreams, vec![UpstreamConfig::docker_hub()]);
    }

    /// Proves: a password written into an endpoint URL is not printed; the rest of the URL is.
    #[test]
    fn printed_config_holds_no_password() {
        let mut cfg = Config::default();
        cfg.upstreams.push(UpstreamConfig {
            host: "reg.example".into(),
            endpoint: "https://bot:hunter2@reg.example:8443/base".into(),
            ..UpstreamConfig::docker_hub()
        });
        let printed = cfg.to_toml().unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("\"https://bot:<elided>@reg.example:8443/base\""),
            "{printed}"
        );
        assert_eq!(
            elide_userinfo_password("https://reg.example/a@b"),
            "https://reg.example/a@b"
        );
    }
}
