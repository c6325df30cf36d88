//! `wharf check-config FILE`: every mistake in a config file that would stop `wharf serve`, each
//! named by its key, with the fix, in one run.
//!
//! Three stages, each finding as much as it can:
//! 1. TOML syntax. A syntax error ends the check: what follows it cannot be read reliably.
//! 2. The schema. serde stops at the first error, so each error is located in the document by its
//!    span, reported, its entry taken out, and the document read again (up to [`MAX_PROBLEMS`]).
//! 3. What `wharf serve` refuses at start: files that are not there, and the constructors the server
//!    runs (upstreams, push routes, plugins, authentication), called as it calls them, never a
//!    second copy of their rules.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize as _;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::Config;

/// Beyond this many, the rest of the file is not looked at: such a file is better rewritten from
/// `examples/wharf.toml`.
pub const MAX_PROBLEMS: usize = 100;

/// One mistake: the key it is at (`server.listen`, `upstream[1].ca_file`), what is wrong, and what to
/// do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

impl Problem {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// From a constructor's message, which often carries its own fix after a `"; "`.
    fn from_reason(key: String, reason: &str, fix: &str) -> Problem {
        match reason.split_once("; ") {
            Some((problem, own_fix)) => Problem::new(key, problem, own_fix),
            None => Problem::new(key, reason, fix),
        }
    }
}

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
            super::ConfigError::Env { var, value, reason } => Problem::new(
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

/// The schema stage's result: the configuration with the faulty entries taken out, and where the
/// surviving `[[…]]` entries were in the file.
pub struct Parsed {
    pub config: Option<Config>,
    pub problems: Vec<Problem>,
    /// For `upstream`, `push`, `plugin`: the file's index of each entry left in `config`.
    pub indices: HashMap<String, Vec<usize>>,
}

/// Stages 1 and 2: syntax, then every schema error (unknown keys, values of the wrong type or form,
/// missing required keys).
pub fn parse(text: &str) -> Parsed {
    let original = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            return Parsed {
                config: None,
                problems: vec![Problem::new(
                    line.map_or("(file)".to_owned(), |l| format!("line {l}")),
                    format!("not valid TOML: {}", e.message().trim_end()),
                    "fix the syntax (strings in quotes, one key = value per line, [table] headers)",
                )],
                indices: HashMap::new(),
            };
        }
    };
    let mut doc = original.clone();
    let mut problems = Vec::new();
    let config = loop {
        let err = match Config::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(cfg) => break Some(cfg),
            Err(e) => e,
        };
        let Some(span) = err.span() else {
            problems.push(Problem::new("(file)", err.message().to_owned(), ""));
            break None;
        };
        let all = nodes_of(&original);
        let Some(at) = locate(&all, &span) else {
            problems.push(Problem::new(
                format!("line {}", line_of(text, span.start)),
                err.message().to_owned(),
                "",
            ));
            break None;
        };
        problems.push(describe(text, at, &span, err.message()));
        let removed = nodes_of(&doc)
            .iter()
            .find(|n| n.key_span == at.key_span && n.span == at.span)
            .map(|n| n.path.clone())
            .is_some_and(|p| remove(doc.get_mut(), &p));
        if !removed || problems.len() >= MAX_PROBLEMS {
            break None;
        }
    };
    let mut indices = HashMap::new();
    if config.is_some() {
        let (all, left) = (nodes_of(&original), nodes_of(&doc));
        for key in ["upstream", "push", "plugin"] {
            let of = |ns: &[Node]| -> Vec<Range<usize>> {
                ns.iter()
                    .filter(|n| {
                        n.path.len() == 2
                            && n.path[0] == Seg::Key(key.into())
                            && matches!(n.path[1], Seg::Index(_))
                    })
                    .map(|n| n.span.clone())
                    .collect()
            };
            let before = of(&all);
            let kept = of(&left)
                .iter()
                .filter_map(|s| before.iter().position(|b| b == s))
                .collect();
            indices.insert(key.to_owned(), kept);
        }
    }
    Parsed {
        config,
        problems,
        indices,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// One key (or array element) of the document, with where it is in the text.
#[derive(Debug, Clone)]
struct Node {
    path: Vec<Seg>,
    key_span: Option<Range<usize>>,
    span: Range<usize>,
}

fn nodes_of(doc: &Spanned<DeTable<'_>>) -> Vec<Node> {
    fn table(t: &DeTable<'_>, path: &mut Vec<Seg>, out: &mut Vec<Node>) {
        for (k, v) in t.iter() {
            path.push(Seg::Key(k.get_ref().to_string()));
            out.push(Node {
                path: path.clone(),
                key_span: Some(k.span()),
                span: v.span(),
            });
            value(v, path, out);
            path.pop();
        }
    }
    fn value(v: &Spanned<DeValue<'_>>, path: &mut Vec<Seg>, out: &mut Vec<Node>) {
        match v.get_ref() {
            DeValue::Table(t) => table(t, path, out),
            DeValue::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    out.push(Node {
                        path: path.clone(),
                        key_span: None,
                        span: e.span(),
                    });
                    value(e, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    table(doc.get_ref(), &mut Vec::new(), &mut out);
    out
}

/// The entry an error's span points at: the key itself (an unknown key), else the value the span
/// is (a bad value; a table missing a key), else the smallest value that holds it.
fn locate<'a>(nodes: &'a [Node], span: &Range<usize>) -> Option<&'a Node> {
    if let Some(n) = nodes.iter().find(|n| n.key_span.as_ref() == Some(span)) {
        return Some(n);
    }
    if let Some(n) = nodes
        .iter()
        .filter(|n| &n.span == span)
        .max_by_key(|n| n.path.len())
    {
        return Some(n);
    }
    nodes
        .iter()
        .filter(|n| n.span.start <= span.start && span.end <= n.span.end)
        .min_by_key(|n| (n.span.len(), usize::MAX - n.path.len()))
}

/// Takes the entry at `path` out of the document.
fn remove(t: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let Seg::Key(k) = first else {
        return false;
    };
    if rest.is_empty() {
        return t.remove(k.as_str()).is_some();
    }
    match t.get_mut(k.as_str()).map(|v| v.get_mut()) {
        Some(v) => remove_in(v, rest),
        None => false,
    }
}

fn remove_in(v: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (v, path.first()) {
        (DeValue::Table(t), Some(Seg::Key(_))) => remove(t, path),
        (DeValue::Array(a), Some(Seg::Index(i))) => {
            let i = *i;
            if path.len() == 1 {
                if i >= a.len() {
                    return false;
                }
                *a = a
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, e)| e.clone())
                    .collect();
                true
            } else {
                match a.get_mut(i) {
                    Some(e) => remove_in(e.get_mut(), &path[1..]),
                    None => false,
                }
            }
        }
        _ => false,
    }
}

/// The words serde lists after "expected" (`one of `a`, `b``, `` `a` or `b` ``).
fn expected_words(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once("expected") else {
        return Vec::new();
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The first backquoted word of a message (the field or variant serde names).
fn quoted(message: &str) -> Option<&str> {
    message.split('`').nth(1)
}

/// Edit distance (Levenshtein), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known word closest to `word`, if it is close enough to be a typo of it.
pub fn closest<'a>(word: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (distance(&lower, k), k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// `"90s"`, `"5m"`, `"1h"`, `"2d"` → seconds, to suggest the number a `*_secs` key wants.
fn seconds_of(text: &str) -> Option<u64> {
    let t = text.trim().trim_matches(['"', '\'']).trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        _ => return None,
    };
    Some(n * mult)
}

/// What a schema error means for the user, and the fix.
fn describe(text: &str, at: &Node, span: &Range<usize>, message: &str) -> Problem {
    let line = line_of(text, span.start);
    let key = key_text(&at.path);
    let leaf = match at.path.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    let section = {
        let parent = key_text(&at.path[..at.path.len().saturating_sub(1)]);
        if parent.is_empty() {
            "the top level".to_owned()
        } else {
            format!("[{parent}]")
        }
    };
    let value = text.get(at.span.clone()).unwrap_or("").trim();
    if message.starts_with("unknown field") {
        let known = expected_words(message);
        let fix = match closest(leaf, &known) {
            Some(k) => format!("did you mean `{k}`?"),
            None if known.is_empty() => format!("remove it: {section} takes no keys"),
            None => format!("remove it; {section} takes: {}", known.join(", ")),
        };
        return Problem::new(key, format!("unknown key (line {line})"), fix);
    }
    if message.starts_with("missing field") {
        let field = quoted(message).unwrap_or("?");
        return Problem::new(
            key,
            format!("required key `{field}` is missing (line {line})"),
            format!("add {field} = … to it (see examples/wharf.toml)"),
        );
    }
    if message.starts_with("unknown variant") {
        let known = expected_words(message);
        let given = quoted(message).unwrap_or(value);
        let fix = match closest(given, &known) {
            Some(k) => format!("did you mean \"{k}\"?"),
            None => format!("use one of: {}", known.join(", ")),
        };
        return Problem::new(
            key,
            format!("{given:?} is not a value it takes (line {line})"),
            fix,
        );
    }
    // A custom deserializer's message may start with the key and carry its own fix.
    let own = message
        .strip_prefix(&format!("{}: ", key_text(&strip_indices(&at.path))))
        .unwrap_or(message);
    if let Some((problem, fix)) = own.split_once("; ") {
        return Problem::new(key, format!("{problem} (line {line})"), fix);
    }
    let fix = if leaf == "listen" {
        "write an IP address and a port in quotes, e.g. \"127.0.0.1:5000\" or \"0.0.0.0:5000\" \
         (host names are not accepted)"
            .to_owned()
    } else if leaf.ends_with("_secs") {
        match seconds_of(value) {
            Some(s) => format!("write a whole number of seconds without quotes: {leaf} = {s}"),
            None => "write a whole number of seconds without quotes, e.g. 300".to_owned(),
        }
    } else if leaf.ends_with("_ms") {
        match seconds_of(value) {
            Some(s) => format!(
                "write a whole number of milliseconds without quotes: {leaf} = {}",
                s * 1000
            ),
            None => "write a whole number of milliseconds without quotes, e.g. 1000".to_owned(),
        }
    } else if leaf.ends_with("_bytes") || leaf.ends_with("_mb") {
        format!("write a whole number without quotes (the unit is in the name: {leaf})")
    } else {
        "see examples/wharf.toml for the form this key takes".to_owned()
    };
    Problem::new(key, format!("{message} (line {line})"), fix)
}

fn strip_indices(path: &[Seg]) -> Vec<Seg> {
    path.iter()
        .filter(|s| matches!(s, Seg::Key(_)))
        .cloned()
        .collect()
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
        self.tls().await;
        let upstreams_ok = self.upstreams();
        self.auth();
        if let Some(why) = crate::metrics::collides(&self.cfg) {
            let (problem, fix) = why.split_once("; ").unwrap_or((&why, ""));
            self.problems
                .push(Problem::new("metrics.listen", problem, fix.to_owned()));
        }
        self.plugins().await;
        // Push routes and the default upstream are checked by the constructors the server runs,
        // which want a store and metadata: a scratch data directory, removed afterwards.
        let scratch = std::env::temp_dir().join(format!(
            "wharf-check-config-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        self.with_storage(&scratch, upstreams_ok).await;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(scratch)).await;
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
            if let Err(e) = crate::upstream::Upstream::new(u) {
                failed.push(u.host.clone());
                let reason = match e {
                    crate::upstream::UpstreamError::Config { reason, .. } => reason,
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
            if let Err(e) = crate::auth::Auth::load(&a) {
                self.problems.push(match e {
                    crate::auth::AuthError::File { key, path, reason } => Problem::from_reason(
                        format!("auth.{key}"),
                        &format!("{path}: {reason}"),
                        "see [auth] in examples/wharf.toml",
                    ),
                    e => Problem::new("auth", e.to_string(), ""),
                });
            }
        }
        for e in crate::auth::exposures(&self.cfg) {
            let crate::auth::AuthError::Exposed { key, listen, could } = &e else {
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
                crate::plugin::Plugins::load(&one, &cache, max_answer).map(|_| ())
            })
            .await;
            use crate::plugin::PluginError as E;
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

    async fn with_storage(&mut self, scratch: &Path, failed_upstreams: Vec<String>) {
        let mut tmp = self.cfg.clone();
        tmp.storage.data_dir = scratch.to_owned();
        tmp.storage.plugin_cache_dir = None;
        let (store, meta) = match crate::server::open_storage(&tmp).await {
            Ok(s) => s,
            Err(e) => {
                self.problems.push(Problem::new(
                    "(check-config)",
                    format!("cannot make a scratch data directory to check push routes: {e}"),
                    "set TMPDIR to a writable directory",
                ));
                return;
            }
        };
        let leases = match crate::lease::Leases::load_offline(meta.clone()).await {
            Ok(l) => l,
            Err(e) => {
                self.problems.push(Problem::new(
                    "(check-config)",
                    format!("cannot open scratch metadata: {e}"),
                    "",
                ));
                return;
            }
        };
        let store: Arc<dyn crate::store::ContentStore> = Arc::new(store);
        // Routes do not depend on the plugins (loaded and checked above).
        let policy = crate::policy::Policy::new(
            crate::plugin::Plugins::none(),
            store.clone(),
            meta.clone(),
            self.cfg.registry.max_manifest_bytes,
        );

        // The default upstream must name a configured one (the upstreams that failed above are
        // left out: they were reported).
        tmp.upstreams
            .retain(|u| !failed_upstreams.iter().any(|h| h == &u.host));
        let default = tmp.mirror.default_upstream.clone();
        if !default.is_empty() && !failed_upstreams.contains(&default) {
            if let Err(e) = crate::mirror::Mirror::new(&tmp, store.clone(), meta.clone()) {
                let reason = match e {
                    crate::upstream::UpstreamError::Config { reason, .. } => reason,
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
        let push = |pushes: Vec<crate::config::PushConfig>| {
            let cfg = Config {
                pushes,
                ..base.clone()
            };
            crate::push::Push::new(
                &cfg,
                store.clone(),
                meta.clone(),
                leases.clone(),
                policy.clone(),
            )
            .map(|_| ())
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
