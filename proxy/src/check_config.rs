//! `wharf check-config FILE`: every mistake in a config file that would stop `wharf serve`, each
//! named by its key, with the fix, in one run.
//!
//! Three stages, each finding as much as it can: TOML syntax and the schema
//! (`wharf_model::config::schema`), then what `wharf serve` refuses at start: files that are not
//! there, and the constructors the server runs (upstreams, push routes, plugins, authentication),
//! called as it calls them, never a second copy of their rules.

use std::collections::HashMap;
use std::path::Path;

use wharf_model::config::schema::{parse, Parsed, Problem};
use wharf_model::config::Config;

/// Checks the config file at `path` as `wharf serve --config path` would read it (with the `WHARF_*`
/// variables of this environment). Empty: the file is fine.
pub async fn check_file(path: &Path) -> Vec<Problem> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![Problem::new(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
                "pass the path of wharf's TOML config (see examples/wharf.toml)",
            )]
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let Parsed {
        config,
        mut problems,
        indices,
    } = parse(&text);
    let Some(mut cfg) = config else {
        return problems;
    };
    cfg.resolve_paths(dir);
    if let Err(e) = cfg.apply_env(|k| std::env::var(k).ok()) {
        problems.push(match e {
            wharf_model::config::ConfigError::Env { var, value, reason } => Problem::new(
                var,
                format!("{value:?} is invalid: {reason}"),
                "correct the environment variable or unset it",
            ),
            e => Problem::new("(environment)", e.to_string(), ""),
        });
    }
    problems.extend(Semantic::new(cfg, indices).check().await);
    problems
}

/// Stage 3: what the server would refuse at start, on a configuration that passed the schema.
struct Semantic {
    cfg: Config,
    /// The file's index of each `[[upstream]]`, `[[push]]`, `[[plugin]]` entry left in `cfg`.
    indices: HashMap<String, Vec<usize>>,
    problems: Vec<Problem>,
}

/// The field a constructor's message is about: the first word of it, when that is a key.
fn field_of(reason: &str, fields: &[&str]) -> Option<String> {
    let first = reason.split([' ', ':']).next()?;
    fields
        .contains(&first)
        .then(|| first.to_owned())
        .or_else(|| {
            fields
                .iter()
                .find(|f| reason.contains(&format!(" {f} ")) || reason.contains(&format!("{f}=")))
                .map(|f| (*f).to_owned())
        })
}

const FILE_FIX: &str = "create it, or correct the path (a relative path is relative to the \
                        directory wharf is started in)";

impl Semantic {
    fn new(cfg: Config, indices: HashMap<String, Vec<usize>>) -> Semantic {
        Semantic {
            cfg,
            indices,
            problems: Vec::new(),
        }
    }

    /// `upstream[i]` with the index the entry has in the file.
    fn entry(&self, array: &str, i: usize) -> String {
        let n = self
            .indices
            .get(array)
            .and_then(|v| v.get(i).copied())
            .unwrap_or(i);
        format!("{array}[{n}]")
    }

    /// A file the server reads at start must be there and readable.
    fn file(&mut self, key: String, path: Option<&Path>) -> bool {
        let Some(p) = path else { return true };
        match std::fs::File::open(p) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
                self.problems.push(Problem::new(
                    key,
                    format!("{} is a directory, not a file", p.display()),
                    "point it at the file itself",
                ));
                false
            }
            Ok(_) => true,
            Err(e) => {
                let what = match e.kind() {
                    std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                    std::io::ErrorKind::PermissionDenied => {
                        "cannot be read (permission denied)".to_owned()
                    }
                    _ => format!("cannot be read ({e})"),
                };
                let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    "make it readable by the user wharf runs as"
                } else {
                    FILE_FIX
                };
                self.problems
                    .push(Problem::new(key, format!("{} {what}", p.display()), fix));
                false
            }
        }
    }

    async fn check(mut self) -> Vec<Problem> {
        self.storage();
        self.backends().await;
        self.tls().await;
        let upstreams_ok = self.upstreams();
        self.auth();
        if let Some(why) = crate::metrics_listener::collides(&self.cfg) {
            let (problem, fix) = why.split_once("; ").unwrap_or((&why, ""));
            self.problems
                .push(Problem::new("metrics.listen", problem, fix.to_owned()));
        }
        if let Err(crate::cluster::ClusterError::Config(fix)) =
            crate::cluster::Cluster::from_config(&self.cfg)
        {
            self.problems.push(Problem::new(
                "cluster",
                "the replica settings are incomplete",
                fix,
            ));
        }
        self.plugins().await;
        // Push routes and the default upstream, by the same functions the server's constructors
        // call (`push::routes`, `mirror::upstreams`): nothing is opened or built.
        self.routes_and_default(upstreams_ok);
        self.problems
    }

    fn storage(&mut self) {
        let dir = &self.cfg.storage.data_dir;
        if dir.exists() && !dir.is_dir() {
            self.problems.push(Problem::new(
                "storage.data_dir",
                format!("{} exists and is not a directory", dir.display()),
                "point it at a directory (wharf creates it when it is missing)",
            ));
        }
    }

    /// Shared backends: their credentials read as the server reads them, then each reached once (the
    /// object store's bucket listed, the database connected and its schema version read); nothing is
    /// written.
    async fn backends(&mut self) {
        use wharf_model::config::{MetadataBackend, StorageBackend};
        if self.cfg.storage.backend == StorageBackend::S3 {
            match crate::backends::s3_settings(&self.cfg) {
                Err(why) => self
                    .problems
                    .push(Problem::from_reason("storage.s3".into(), &why, "")),
                Ok(settings) => {
                    let endpoint = format!("{} (bucket {})", settings.endpoint, settings.bucket);
                    if let Err(e) = wharf_storage::store::S3Store::probe(&settings).await {
                        let why = crate::backends::s3_refusal(&endpoint, &e);
                        self.problems
                            .push(Problem::from_reason("storage.s3".into(), &why, ""));
                    }
                }
            }
        }
        if self.cfg.metadata.backend == MetadataBackend::Postgres {
            match crate::backends::postgres_url(&self.cfg) {
                Err(why) => self
                    .problems
                    .push(Problem::from_reason("metadata".into(), &why, "")),
                Ok(url) => {
                    if let Err(e) = wharf_storage::meta::probe_postgres(&url).await {
                        let why = crate::backends::postgres_refusal(&e);
                        self.problems
                            .push(Problem::from_reason("metadata".into(), &why, ""));
                    }
                }
            }
        }
    }

    /// `[server.tls]`: both files there, then loaded as the listener loads them (PEM, key matches).
    async fn tls(&mut self) {
        let Some(t) = self.cfg.server.tls.clone() else {
            return;
        };
        let files_ok = self.file("server.tls.cert_file".into(), Some(&t.cert_file))
            & self.file("server.tls.key_file".into(), Some(&t.key_file));
        if !files_ok {
            return;
        }
        if let Err(e) = crate::tls::Tls::load(&t).await {
            use crate::tls::TlsError as E;
            let key = match &e {
                E::NoCertificate { .. } => "server.tls.cert_file",
                E::NoKey { .. } => "server.tls.key_file",
                _ => "server.tls",
            };
            self.problems.push(Problem::new(key, e.to_string(), ""));
        }
    }

    /// Each `[[upstream]]` (and the built-in docker.io) through `Upstream::new`; the hosts that fail.
    fn upstreams(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for (i, u) in self.cfg.upstreams.clone().iter().enumerate() {
            let key = self.entry("upstream", i);
            let files_ok = self.file(format!("{key}.ca_file"), u.ca_file.as_deref())
                & (u.password_env.is_some()
                    || self.file(format!("{key}.password_file"), u.password_file.as_deref()));
            if !files_ok {
                failed.push(u.host.clone());
                continue;
            }
            if let Err(e) = wharf_protocol::upstream::Upstream::new(u) {
                failed.push(u.host.clone());
                let reason = match e {
                    wharf_protocol::upstream::UpstreamError::Config { reason, .. } => reason,
                    e => e.to_string(),
                };
                let field = field_of(
                    &reason,
                    &[
                        "endpoint",
                        "ca_file",
                        "password_env",
                        "password_file",
                        "username",
                    ],
                );
                let key = field.map_or(key.clone(), |f| format!("{key}.{f}"));
                self.problems.push(Problem::from_reason(
                    key,
                    &reason,
                    "see [[upstream]] in examples/wharf.toml",
                ));
            }
        }
        failed
    }

    fn auth(&mut self) {
        let a = self.cfg.auth.clone();
        let files_ok = self.file("auth.htpasswd_file".into(), a.htpasswd_file.as_deref())
            & self.file("auth.tokens_file".into(), a.tokens_file.as_deref());
        if files_ok {
            if let Err(e) = wharf_policy::auth::Auth::load(&a) {
                self.problems.push(match e {
                    wharf_policy::auth::AuthError::File { key, path, reason } => {
                        Problem::from_reason(
                            format!("auth.{key}"),
                            &format!("{path}: {reason}"),
                            "see [auth] in examples/wharf.toml",
                        )
                    }
                    e => Problem::new("auth", e.to_string(), ""),
                });
            }
        }
        for e in wharf_policy::auth::exposures(&self.cfg) {
            let wharf_policy::auth::AuthError::Exposed { key, listen, could } = &e else {
                continue;
            };
            let text = e.to_string();
            let fix = text.split_once("; ").map_or("", |(_, f)| f).to_owned();
            self.problems.push(Problem::new(
                *key,
                format!(
                    "{listen} is reachable from other machines and no client authentication is \
                     configured: anyone could {could}"
                ),
                fix,
            ));
        }
    }

    /// Each `[[plugin]]`: its file, then loaded (compiled, `init` called) as the server loads it.
    async fn plugins(&mut self) {
        let scratch = std::env::temp_dir().join(format!(
            "wharf-check-config-plugins-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        for (i, p) in self.cfg.plugins.clone().into_iter().enumerate() {
            let key = self.entry("plugin", i);
            if !self.file(format!("{key}.path"), Some(&p.path)) {
                continue;
            }
            let cache = scratch.clone();
            let one = vec![p.clone()];
            let max_answer = self.cfg.registry.max_manifest_bytes;
            let loaded = tokio::task::spawn_blocking(move || {
                wharf_policy::plugin::Plugins::load(&one, &cache, max_answer).map(|_| ())
            })
            .await;
            use wharf_policy::plugin::PluginError as E;
            match loaded {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let field = match &e {
                        E::Read { .. } | E::Load { .. } | E::NoCapability { .. } => ".path",
                        E::Init { .. } => ".config",
                        E::Timeout { .. } => ".timeout_ms",
                        _ => "",
                    };
                    self.problems
                        .push(Problem::new(format!("{key}{field}"), e.to_string(), ""));
                }
                Err(e) => self.problems.push(Problem::new(
                    key,
                    format!("loading it failed: {e}"),
                    "check it with `wharf plugins check`",
                )),
            }
        }
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(scratch)).await;
    }

    fn routes_and_default(&mut self, failed_upstreams: Vec<String>) {
        let mut tmp = self.cfg.clone();
        // The default upstream must name a configured one (the upstreams that failed above are
        // left out: they were reported).
        tmp.upstreams
            .retain(|u| !failed_upstreams.iter().any(|h| h == &u.host));
        let default = tmp.mirror.default_upstream.clone();
        if !default.is_empty() && !failed_upstreams.contains(&default) {
            if let Err(e) = crate::mirror::upstreams(&tmp) {
                let reason = match e {
                    wharf_protocol::upstream::UpstreamError::Config { reason, .. } => reason,
                    e => e.to_string(),
                };
                self.problems.push(Problem::new(
                    "mirror.default_upstream",
                    format!("{default:?}: {reason}"),
                    "add an [[upstream]] with that host, or set it to \"\" (names without a \
                     host are then local only)",
                ));
            }
        }

        // Each route alone, then all of them together (routes that overlap).
        let base = self.cfg.clone();
        let push = |pushes: Vec<wharf_model::config::PushConfig>| {
            let cfg = Config {
                pushes,
                ..base.clone()
            };
            crate::push::routes(&cfg).map(|_| ())
        };
        let routes = self.cfg.pushes.clone();
        let mut all_ok = true;
        let mut found = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let key = self.entry("push", i);
            let files_ok = self.file(format!("{key}.ca_file"), r.ca_file.as_deref())
                & (r.password_env.is_some()
                    || self.file(format!("{key}.password_file"), r.password_file.as_deref()));
            if !files_ok {
                all_ok = false;
                continue;
            }
            if let Err(e) = push(vec![r.clone()]) {
                all_ok = false;
                found.push(push_problem(key, e));
            }
        }
        if all_ok && routes.len() > 1 {
            if let Err(e) = push(routes.clone()) {
                let i = match &e {
                    crate::push::PushError::Config { prefix, .. } => {
                        routes.iter().position(|r| &r.prefix == prefix)
                    }
                    _ => None,
                };
                let key = i.map_or("push".to_owned(), |i| self.entry("push", i));
                found.push(push_problem(key, e));
            }
        }
        self.problems.extend(found);
    }
}

fn push_problem(key: String, e: crate::push::PushError) -> Problem {
    let reason = match e {
        crate::push::PushError::Config { reason, .. } => reason,
        e => e.to_string(),
    };
    let field = field_of(
        &reason,
        &[
            "prefix",
            "target",
            "endpoint",
            "ca_file",
            "password_env",
            "password_file",
            "username",
            "overlaps",
        ],
    )
    .map(|f| match f.as_str() {
        "overlaps" => "prefix".to_owned(),
        "endpoint" => "target".to_owned(),
        _ => f,
    });
    let key = field.map_or(key.clone(), |f| format!("{key}.{f}"));
    Problem::from_reason(key, &reason, "see [[push]] in examples/wharf.toml")
}

#[cfg(test)]
mod tests;
