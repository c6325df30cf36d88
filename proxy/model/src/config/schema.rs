//! The schema stages of `wharf check-config FILE` (syntax, then every key and value the schema
//! refuses, each named by its key with the fix, in one run); `wharf serve` reads a file through them
//! too, so both say the same. The third stage, what the server refuses at start, is the CLI's.
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

use serde::Deserialize as _;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::settings::Config;

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
    pub fn new(
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// From a constructor's message, which often carries its own fix after a `"; "`.
    pub fn from_reason(key: String, reason: &str, fix: &str) -> Problem {
        match reason.split_once("; ") {
            Some((problem, own_fix)) => Problem::new(key, problem, own_fix),
            None => Problem::new(key, reason, fix),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known: Vec<String> = ["listen", "data_dir", "upstream", "delete_enabled"]
            .map(String::from)
            .to_vec();
        assert_eq!(closest("lsiten", &known), Some("listen"));
        assert_eq!(closest("Data-Dir", &known), Some("data_dir"));
        assert_eq!(closest("delete", &known), None);
        assert_eq!(closest("zzz", &known), None);
        assert_eq!(seconds_of("\"90s\""), Some(90));
        assert_eq!(seconds_of("\"5 min\""), Some(300));
        assert_eq!(seconds_of("\"2d\""), Some(172800));
        assert_eq!(seconds_of("\"soon\""), None);
    }
}
