//! wharf's structure, held by a test: no file-level import cycle inside any crate, and few imports
//! from a lower layer to a higher one (issue 25: the modules had come to import each other in one loop
//! of 36 files). `cargo test -p wharf-structure` checks this workspace; `tests/run.sh` runs it with
//! every other test. To check another checkout and see the reports even when they pass:
//!
//! ```text
//! WHARF_STRUCTURE_ROOT=/path/to/wharf cargo test -p wharf-structure -- --nocapture
//! ```
//!
//! `WHARF_STRUCTURE_LAYERS=<file>` reads the layer block from that file instead of the root's
//! ARCHITECTURE.md.
//!
//! # The graph
//! Every crate with a `[package]` under `proxy/` is checked (found by walking it, so a new crate is
//! checked from the commit that creates it). A crate's files are its modules, found as the compiler
//! finds them from lib.rs, main.rs and any `[[bin]]`; test modules (`tests.rs`, a `tests/` directory,
//! anything under `#[cfg(test)]`) are left out. File A has an edge to file B when A names an item of
//! B's module: in a `use` (grouped, `self`, `super::super`, renamed, globs), in a path in code
//! (`crate::metrics::joined(…)`, `super::Foo`, `fs::open` for a child module), or in a serde attribute
//! (`deserialize_with = "crate::…"`); comments and string literals name nothing, and `mod x;` is no
//! edge. A path reaches the deepest module that has a file; a name a module only imports is followed
//! to where it is defined. So a parent that re-exports a child (`pub use fs::FsStore`) while the child
//! takes an item defined in the parent (`use super::Provider`) is a cycle: move the shared items into
//! a sibling file. See graph.rs for the details.
//!
//! # The layer map
//! ARCHITECTURE.md holds one fenced block tagged `layers`, one line per layer, **bottom up**: a file
//! may import its own layer and the layers on the lines before it. Each line is a layer's name, a
//! colon, and what it holds, comma-separated: a whole crate by its package name (`wharf-model`), or
//! top-level modules of a crate (`wharf::registry`, or several as `wharf::{registry, server, tls}`).
//! `#` starts a comment.
//!
//! ````text
//! ```layers
//! # bottom up: each line may import the lines above it
//! model:    wharf-model
//! storage:  wharf-storage
//! features: wharf::{mirror, fill, push}
//! front:    wharf::{registry, server, tls}
//! ```
//! ````
//!
//! Every crate is listed either whole or module by module (then every top-level module, and a
//! crate's root files stand on the highest layer its modules use). A crate or module in no layer, or an
//! entry that names nothing, fails the test with a message naming it and where to add it, so the map
//! cannot rot. Imports from a lower layer to a higher one are listed; more than
//! [`MAX_UPWARD_IMPORTS`] fail the test.

mod cargo;
pub mod graph;
pub mod layers;
mod lex;
mod parse;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use graph::Workspace;

/// Issue 25's bound: "at most 5 imports anywhere run from a lower layer to a higher".
pub const MAX_UPWARD_IMPORTS: usize = 5;

/// The checkout to check: `$WHARF_STRUCTURE_ROOT`, else this workspace.
pub fn root() -> PathBuf {
    let root = match std::env::var_os("WHARF_STRUCTURE_ROOT") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// Where the layer block is read: `$WHARF_STRUCTURE_LAYERS`, else the root's ARCHITECTURE.md.
pub fn layers_file(root: &Path) -> PathBuf {
    match std::env::var_os("WHARF_STRUCTURE_LAYERS") {
        Some(file) => PathBuf::from(file),
        None => root.join("ARCHITECTURE.md"),
    }
}

/// Every crate's import cycles, each with the edges inside it and the names that tie them; and how many.
pub fn cycle_report(ws: &Workspace) -> (String, usize) {
    let mut out = String::new();
    let mut count = 0;
    for (k, c) in ws.crates.iter().enumerate() {
        let cycles = ws.cycles(k);
        count += cycles.len();
        let _ = writeln!(
            out,
            "crate {} ({}): {} files, {} import cycle{}",
            c.package,
            c.dir.display(),
            c.files.len(),
            cycles.len(),
            if cycles.len() == 1 { "" } else { "s" }
        );
        for cycle in cycles {
            let _ = writeln!(out, "  cycle of {} files:", cycle.len());
            for (&(a, b), names) in &ws.edges {
                if cycle.binary_search(&a).is_ok() && cycle.binary_search(&b).is_ok() {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let _ = writeln!(
                        out,
                        "    {} -> {}: {}",
                        ws.files[a].path,
                        ws.files[b].path,
                        names.join(", ")
                    );
                }
            }
        }
    }
    for missing in &ws.missing {
        let _ = writeln!(out, "note: {missing}");
    }
    if count > 0 {
        out.push_str(
            "Turn one edge of each cycle: move what both sides share into a file of its own (a sibling), \
             or down into the layer below (ARCHITECTURE.md's layers).\n",
        );
    }
    (out, count)
}

/// The imports that run from a lower layer to a higher one, and how many; Err when the map is missing,
/// malformed, or does not cover the workspace.
pub fn layer_report(
    ws: &Workspace,
    markdown: &str,
    block_at: &str,
) -> Result<(String, usize), String> {
    let map = layers::parse_map(markdown).map_err(|e| format!("{block_at}: {e}"))?;
    let layer_of = layers::assign(ws, &map, block_at).map_err(|problems| problems.join("\n"))?;
    let up = layers::upward(ws, &layer_of);
    let mut out = format!(
        "layers (bottom up): {}\n{} import{} from a lower layer to a higher (at most {MAX_UPWARD_IMPORTS}):\n",
        map.names.join(" < "),
        up.len(),
        if up.len() == 1 { "" } else { "s" }
    );
    for (a, b, names) in &up {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  {} ({}) -> {} ({}): {}",
            ws.files[*a].path,
            map.names[layer_of[*a]],
            ws.files[*b].path,
            map.names[layer_of[*b]],
            names.join(", ")
        );
    }
    Ok((out, up.len()))
}

#[cfg(test)]
mod tests;
