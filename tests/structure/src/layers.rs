//! The layer map (a fenced ```` ```layers ```` block in ARCHITECTURE.md) and the imports that run
//! against it. The block's format is described in the crate's documentation (lib.rs).

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{FileId, Workspace};

pub const FENCE: &str = "```layers";

#[derive(Debug, PartialEq, Eq)]
pub struct LayerMap {
    /// Bottom up: index 0 is the ground floor.
    pub names: Vec<String>,
    pub items: Vec<Item>,
}

/// `wharf-model` (a whole crate) or `wharf::registry` (a top-level module of a crate).
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    /// The crate as code names it (`wharf_model`), whichever way the block spelled it.
    pub krate: String,
    pub module: Option<String>,
    pub layer: usize,
    /// The block's line, for messages.
    pub line: usize,
}

/// Reads the first ```` ```layers ```` block of `markdown`.
pub fn parse_map(markdown: &str) -> Result<LayerMap, String> {
    let mut lines = markdown
        .lines()
        .enumerate()
        .skip_while(|(_, l)| l.trim() != FENCE);
    if lines.next().is_none() {
        return Err(format!(
            "no {FENCE} block: add one (the format is in tests/structure/src/lib.rs)"
        ));
    }
    let mut map = LayerMap {
        names: Vec::new(),
        items: Vec::new(),
    };
    let mut closed = false;
    for (n, raw) in lines {
        let line_no = n + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if raw.trim() == "```" {
            closed = true;
            break;
        }
        if line.is_empty() {
            continue;
        }
        let Some((name, rest)) = line
            .split_once(':')
            .filter(|(name, _)| is_name(name.trim()))
        else {
            return Err(format!(
                "line {line_no} `{line}`: expected `<layer>: <crate or crate::module>, …`"
            ));
        };
        let name = name.trim().to_owned();
        if map.names.contains(&name) {
            return Err(format!("line {line_no}: layer `{name}` is listed twice"));
        }
        let layer = map.names.len();
        map.names.push(name);
        for item in split_top_level(rest) {
            for (krate, module) in
                expand(item).map_err(|e| format!("line {line_no} `{item}`: {e}"))?
            {
                map.items.push(Item {
                    krate,
                    module,
                    layer,
                    line: line_no,
                });
            }
        }
    }
    if !closed {
        return Err(format!("the {FENCE} block has no closing ```"));
    }
    if map.names.is_empty() {
        return Err(format!("the {FENCE} block lists no layer"));
    }
    Ok(map)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// Splits on the commas that are not inside `{…}`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// `wharf-model` → one whole crate; `wharf::a` → one module; `wharf::{a, b}` → two.
fn expand(item: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let (krate, module) = match item.split_once("::") {
        None => (item, None),
        Some((krate, module)) => (krate.trim(), Some(module.trim())),
    };
    if !is_name(krate) {
        return Err("not a crate name".into());
    }
    let krate = krate.replace('-', "_");
    let Some(module) = module else {
        return Ok(vec![(krate, None)]);
    };
    let modules: Vec<&str> = match module.strip_prefix('{').and_then(|m| m.strip_suffix('}')) {
        Some(group) => group
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect(),
        None => vec![module],
    };
    if modules.is_empty() || !modules.iter().all(|m| is_name(m) && !m.contains('-')) {
        return Err("expected top-level module names: `crate::module` or `crate::{a, b}`".into());
    }
    Ok(modules
        .into_iter()
        .map(|m| (krate.clone(), Some(m.to_owned())))
        .collect())
}

/// Each file's layer, or every reason the map does not cover the workspace (a crate or module in no
/// layer, an entry naming nothing, one named twice).
pub fn assign(ws: &Workspace, map: &LayerMap, block_at: &str) -> Result<Vec<usize>, Vec<String>> {
    let mut problems = Vec::new();
    let mut layer_of = vec![usize::MAX; ws.files.len()];
    let mut used = vec![false; map.items.len()];
    for c in &ws.crates {
        let key = c.lib_name.as_str();
        let alt = c.package.replace('-', "_");
        let mine: Vec<usize> = (0..map.items.len())
            .filter(|&i| map.items[i].krate == key || map.items[i].krate == alt)
            .collect();
        let whole: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| map.items[i].module.is_none())
            .collect();
        let by_module: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| map.items[i].module.is_some())
            .collect();
        let mut top_level: BTreeMap<&str, Vec<FileId>> = BTreeMap::new();
        for &f in &c.files {
            if let Some(first) = ws.files[f].module.first() {
                top_level.entry(first).or_default().push(f);
            }
        }
        for &i in &whole {
            used[i] = true;
        }
        for &i in &by_module {
            used[i] = map.items[i]
                .module
                .as_deref()
                .is_some_and(|m| top_level.contains_key(m));
        }
        let dir = c.dir.display();
        match (whole.as_slice(), by_module.is_empty()) {
            ([], true) => {
                let modules: Vec<&str> = top_level.keys().copied().collect();
                let or_by_module = if modules.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", or list each of its top-level modules (`{}::{{{}}}`)",
                        c.lib_name,
                        modules.join(", ")
                    )
                };
                problems.push(format!(
                    "crate `{}` ({dir}) is in no layer: in {block_at}, add `{}` to the line of its layer{or_by_module}",
                    c.package, c.package
                ));
            }
            ([only], true) => {
                for &f in &c.files {
                    layer_of[f] = map.items[*only].layer;
                }
            }
            (_, true) => problems.push(format!(
                "crate `{}` is listed more than once in {block_at}",
                c.package
            )),
            (_, false) if !whole.is_empty() => problems.push(format!(
                "crate `{}` is listed both whole and module by module in {block_at}: keep one",
                c.package
            )),
            (_, false) => {
                let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
                for &i in &by_module {
                    let module = map.items[i].module.as_deref().unwrap_or_default();
                    if let Some(first) = seen.insert(module, i) {
                        problems.push(format!(
                            "`{}::{module}` is listed twice in {block_at} (lines {} and {})",
                            c.lib_name, map.items[first].line, map.items[i].line
                        ));
                    }
                }
                for (module, files) in &top_level {
                    match seen.get(module) {
                        Some(&i) => files.iter().for_each(|&f| layer_of[f] = map.items[i].layer),
                        None => problems.push(format!(
                            "module `{}::{module}` ({}) is in no layer: in {block_at}, add it to the line of its layer, e.g. `<layer>: {}::{{…, {module}}}`",
                            c.lib_name,
                            ws.files[files[0]].path,
                            c.lib_name
                        )),
                    }
                }
                // Root files declare, wire and re-export: they stand on the crate's top layer.
                let top = by_module
                    .iter()
                    .map(|&i| map.items[i].layer)
                    .max()
                    .unwrap_or(0);
                for &f in &c.files {
                    if ws.files[f].module.is_empty() {
                        layer_of[f] = top;
                    }
                }
            }
        }
    }
    for (i, item) in map.items.iter().enumerate() {
        if !used[i] {
            let what = match &item.module {
                Some(m) => format!(
                    "`{}::{m}` names no top-level module of that crate",
                    item.krate
                ),
                None => format!("`{}` names no crate under proxy/", item.krate),
            };
            problems.push(format!(
                "{block_at} line {}: {what}: remove or rename it",
                item.line
            ));
        }
    }
    if problems.is_empty() {
        Ok(layer_of)
    } else {
        Err(problems)
    }
}

/// Edges from a lower layer to a higher one: (from, to) → the names.
pub fn upward<'a>(
    ws: &'a Workspace,
    layer_of: &[usize],
) -> Vec<(FileId, FileId, &'a BTreeSet<String>)> {
    ws.edges
        .iter()
        .filter(|((a, b), _)| layer_of[*a] < layer_of[*b])
        .map(|((a, b), names)| (*a, *b, names))
        .collect()
}

#[cfg(test)]
mod tests;
