//! `wharf plugins …`: the plugin author's tools. `check` says whether wharf can load a component and
//! what it exports; `run` evaluates one call offline; `new` writes a ready-to-build project.

mod templates;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wharf_model::config::PluginConfig;
use wharf_model::platform::Platform;
use wharf_model::request::{Operation, RequestCtx};
use wharf_policy::plugin::block_on;
use wharf_policy::plugin::{Host, PluginError, WIT_PACKAGE, WIT_TEXT};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn host() -> Result<Host, CliError> {
    // Compiled components are kept in the user's cache (never in a server's data directory), so
    // running a large Python or JS component again does not compile it again.
    let dir = cache_dir();
    // Offline there is no server's config: its default bounds what a plugin may hand back.
    let max_answer = wharf_model::config::RegistryConfig::default().max_manifest_bytes;
    Host::new(&dir, max_answer).map_err(CliError::Usage)
}

/// `$XDG_CACHE_HOME/wharf/plugins`, else `~/.cache/wharf/plugins`, else a temporary directory.
fn cache_dir() -> PathBuf {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("wharf/plugins")
}

/// `wharf plugins check FILE`: what wharf sees in the component, or why it cannot load it.
pub fn check(path: &Path) -> Result<String, CliError> {
    let host = host()?;
    let name = plugin_name(path);
    let started = Instant::now();
    let i = host.inspect(&name, path)?;
    let mut out = String::new();
    let _ = writeln!(out, "{}: a {WIT_PACKAGE} plugin", path.display());
    let _ = writeln!(out, "  capabilities: {}", i.caps);
    let _ = writeln!(out, "  digest:       {}", i.digest);
    let _ = writeln!(out, "  exports:      {}", i.exports.join(", "));
    let _ = writeln!(out, "  imports:      {}", i.imports.join(", "));
    let _ = writeln!(
        out,
        "  compiled in {} ms; WASI is linked deny-by-default (no files, network, environment or \
         clock)",
        started.elapsed().as_millis()
    );
    Ok(out)
}

/// What `wharf plugins run` evaluates.
pub struct RunArgs {
    pub path: PathBuf,
    pub config: String,
    pub ctx: RequestCtx,
    /// A JSON list of platform objects, or an OCI image index whose `manifests[].platform` are used.
    pub platforms: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub media_type: Option<String>,
    pub timeout_ms: u64,
}

/// `wharf plugins run FILE …`: one call of each capability the component exports, offline.
pub fn run(args: &RunArgs) -> Result<String, CliError> {
    let host = host()?;
    let cfg = PluginConfig {
        name: plugin_name(&args.path),
        path: args.path.clone(),
        config: args.config.clone(),
        on: None,
        timeout_ms: args.timeout_ms,
        max_memory_mb: 256,
        fail: None,
    };
    let started = Instant::now();
    let loaded = host.load(&cfg)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loaded {} ({}) in {} ms (compile, instantiate, init)",
        args.path.display(),
        loaded.capabilities(),
        started.elapsed().as_millis()
    );
    let caps = loaded.capabilities();
    if caps.access {
        let t = Instant::now();
        let d = block_on(loaded.check(&args.ctx))?;
        let us = t.elapsed().as_micros();
        match d {
            None => {
                let _ = writeln!(out, "access: allow ({us} µs)");
            }
            Some(reason) => {
                let _ = writeln!(out, "access: deny: {reason} ({us} µs)");
            }
        }
    }
    if caps.platforms {
        let available = match &args.platforms {
            Some(p) => read_platforms(p)?,
            None => {
                let _ = writeln!(
                    out,
                    "platforms: not called (give --platforms FILE: a JSON list of platforms or an \
                     image index)"
                );
                Vec::new()
            }
        };
        if args.platforms.is_some() {
            let t = Instant::now();
            let kept = block_on(loaded.select(&args.ctx, &available))?;
            let us = t.elapsed().as_micros();
            let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "platforms: keeps {} of {}: [{}] ({us} µs)",
                kept.len(),
                available.len(),
                names.join(", ")
            );
        }
    }
    if caps.manifests {
        match &args.manifest {
            None => {
                let _ = writeln!(out, "manifests: not called (give --manifest FILE)");
            }
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|source| CliError::Io {
                    what: "read",
                    path: p.clone(),
                    source,
                })?;
                let media_type = match &args.media_type {
                    Some(m) => m.clone(),
                    None => wharf_model::manifest::parse(None, &bytes)
                        .map(|m| m.media_type)
                        .map_err(|e| {
                            CliError::Usage(format!(
                                "{} is not a manifest wharf can read ({e}); give --media-type",
                                p.display()
                            ))
                        })?,
                };
                let t = Instant::now();
                let rewritten = block_on(loaded.rewrite(&args.ctx, &media_type, &bytes))?;
                let us = t.elapsed().as_micros();
                match rewritten {
                    None => {
                        let _ = writeln!(out, "manifests: unchanged ({us} µs)");
                    }
                    Some(b) => {
                        let d = wharf_model::digest::Digest::sha256_of(&b);
                        let _ = writeln!(out, "manifests: rewritten to {d} ({us} µs):");
                        out.push_str(&String::from_utf8_lossy(&b));
                        out.push('\n');
                    }
                }
            }
        }
    }
    Ok(out)
}

fn read_platforms(path: &Path) -> Result<Vec<Platform>, CliError> {
    let text = std::fs::read(path).map_err(|source| CliError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", path.display())))?;
    let list = match &v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => o
            .get("manifests")
            .and_then(|m| m.as_array())
            .map(|m| {
                m.iter()
                    .filter_map(|e| e.get("platform").cloned())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let s = |p: &serde_json::Value, k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(list
        .iter()
        .map(|p| Platform {
            os: s(p, "os").unwrap_or_default(),
            architecture: s(p, "architecture").unwrap_or_default(),
            variant: s(p, "variant"),
            os_version: s(p, "os.version"),
            os_features: p
                .get("os.features")
                .and_then(|f| f.as_array())
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned())
}

/// The request `run` evaluates, from its flags.
pub fn context(
    op: &str,
    registry: Option<String>,
    repository: String,
    reference: Option<String>,
    identity: Option<String>,
) -> Result<RequestCtx, CliError> {
    Ok(RequestCtx {
        operation: op.parse::<Operation>().map_err(CliError::Usage)?,
        registry,
        repository,
        reference,
        client_address: "127.0.0.1:0".into(),
        identity,
        user_agent: Some("wharf plugins run".into()),
    })
}

/// Plugin project templates: (path in the project, contents with `{{name}}`).
fn template(lang: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match lang {
        "rust" => Some(templates::RUST),
        "python" => Some(templates::PYTHON),
        "js" => Some(templates::JS),
        _ => None,
    }
}

/// `wharf plugins new NAME --lang …`: a ready-to-build project in `dir/NAME`.
pub fn new_project(name: &str, lang: &str, dir: &Path) -> Result<String, CliError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        return Err(CliError::Usage(format!(
            "{name:?} is not a plugin name: use lowercase letters, digits and '-', starting with a \
             letter (it becomes a package name)"
        )));
    }
    let files = template(lang).ok_or_else(|| {
        CliError::Usage(format!(
            "no template for language {lang:?}: use rust, python or js"
        ))
    })?;
    let root = dir.join(name);
    if root.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; choose another name or directory",
            root.display()
        )));
    }
    let mut written = Vec::new();
    let all = files
        .iter()
        .map(|(p, c)| (*p, c.replace("{{name}}", name)))
        .chain(std::iter::once(("wit/policy.wit", WIT_TEXT.to_owned())));
    for (rel, contents) in all {
        let path = root.join(rel);
        let io = |what, source| CliError::Io {
            what,
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create the directory for", e))?;
        }
        std::fs::write(&path, contents).map_err(|e| io("write", e))?;
        written.push(rel);
    }
    Ok(format!(
        "wrote {} ({lang}): {}\nnext: see {}/README.md for the build command, then `wharf plugins \
         check` the .wasm it builds\n",
        root.display(),
        written.join(", "),
        root.display()
    ))
}
