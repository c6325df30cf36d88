//! `[[push]]` routes: a local repository prefix and the upstream repository it is delivered to, both
//! ways (a local name → the upstream's; the name a client gave for the upstream → the local one).

use super::error::PushError;
use std::sync::Arc;
use wharf_model::config::{PushConfig, PushMode, UpstreamConfig};
use wharf_model::platform::PlatformSpec;
use wharf_model::reference::RepoName;
use wharf_protocol::upstream::{Upstream, UpstreamError};

/// One `[[push]]` route.
pub struct PushRoute {
    /// The local repository prefix.
    pub prefix: String,
    /// `scheme://host:port` of the target.
    pub endpoint: String,
    /// The upstream repository prefix.
    pub repo: String,
    pub mode: PushMode,
    pub platforms: Vec<PlatformSpec>,
    pub upstream: Arc<Upstream>,
    /// What clients call the target's registry (`ns=`, a path prefix): its `host:port`, and the
    /// `host` and `prefix` of an `[[upstream]]` entry for the same endpoint.
    pub(super) names: Vec<String>,
}

pub(super) fn config_err(prefix: &str, reason: impl Into<String>) -> PushError {
    PushError::Config {
        prefix: prefix.to_owned(),
        reason: reason.into(),
    }
}

fn authority_of(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find('/').unwrap_or(rest.len());
    Some((scheme, &rest[..end]))
}

impl PushRoute {
    pub(super) fn new(
        cfg: &PushConfig,
        upstreams: &[UpstreamConfig],
    ) -> Result<PushRoute, PushError> {
        let p = &cfg.prefix;
        p.parse::<RepoName>().map_err(|e| {
            config_err(
                p,
                format!("prefix is not a repository name ({e}); use e.g. \"ci/app\""),
            )
        })?;
        let (scheme, authority) = authority_of(&cfg.target)
            .filter(|(s, a)| matches!(*s, "http" | "https") && !a.is_empty())
            .ok_or_else(|| {
                config_err(
                    p,
                    format!(
                        "target {:?} must be http(s)://host[:port]/repository, e.g. \
                         \"https://registry.example.com/team/app\"",
                        cfg.target
                    ),
                )
            })?;
        if authority.contains('@') {
            return Err(config_err(
                p,
                "target carries credentials in its URL; put them in username and \
                 password_env/password_file instead (they are never logged there)",
            ));
        }
        let endpoint = format!("{scheme}://{authority}");
        let repo = cfg.target[endpoint.len()..].trim_matches('/').to_owned();
        repo.parse::<RepoName>().map_err(|e| {
            config_err(
                p,
                format!(
                    "target {:?} names no valid upstream repository ({e})",
                    cfg.target
                ),
            )
        })?;
        // The [[upstream]] entry for the same registry lends its credentials, CA and names.
        let same = upstreams.iter().find(|u| {
            authority_of(&u.endpoint).is_some_and(|(_, a)| a.eq_ignore_ascii_case(authority))
        });
        let own_credentials = cfg.username.is_some();
        let up = UpstreamConfig {
            host: authority.to_owned(),
            endpoint: endpoint.clone(),
            prefix: None,
            insecure: cfg.insecure || same.is_some_and(|u| u.insecure),
            ca_file: cfg
                .ca_file
                .clone()
                .or_else(|| same.and_then(|u| u.ca_file.clone())),
            username: if own_credentials {
                cfg.username.clone()
            } else {
                same.and_then(|u| u.username.clone())
            },
            password_env: if own_credentials {
                cfg.password_env.clone()
            } else {
                same.and_then(|u| u.password_env.clone())
            },
            password_file: if own_credentials {
                cfg.password_file.clone()
            } else {
                same.and_then(|u| u.password_file.clone())
            },
            connect_timeout_secs: cfg.connect_timeout_secs,
            timeout_secs: cfg.timeout_secs,
            platforms: None,
        };
        let upstream = Upstream::new(&up).map_err(|e| match e {
            UpstreamError::Config { reason, .. } => config_err(p, reason),
            e => e.into(),
        })?;
        let mut names = vec![authority.to_owned()];
        if let Some(u) = same {
            names.push(u.host.clone());
            names.extend(u.prefix.clone());
        }
        Ok(PushRoute {
            prefix: p.clone(),
            endpoint,
            repo,
            mode: cfg.mode,
            platforms: cfg.platforms.clone(),
            upstream: Arc::new(upstream),
            names,
        })
    }

    /// The upstream repository for local repository `local`, if this route covers it.
    pub(super) fn remote_of(&self, local: &str) -> Option<String> {
        let rest = under(local, &self.prefix)?;
        Some(format!("{}{rest}", self.repo))
    }

    /// The local repository for `remote` on registry `host`, if this route covers it.
    pub(super) fn local_of(&self, host: &str, remote: &str) -> Option<String> {
        if !self.names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return None;
        }
        let rest = under(remote, &self.repo)?;
        Some(format!("{}{rest}", self.prefix))
    }

    /// The route as written, for messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "[[push]] prefix = \"{}\", target = \"{}/{}\"",
            self.prefix, self.endpoint, self.repo
        )
    }
}

/// `name` relative to `prefix` (`""` or `"/rest"`) when `prefix` is `name` or a parent of it.
pub(super) fn under<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}
