//! The workspace's Rust crates: every `Cargo.toml` with a `[package]` under `proxy/`, found by
//! walking the tree, so that a crate split out of wharf is checked from the commit that creates it.
//!
//! Cargo.toml is read line by line for the few keys that locate a crate's roots (`[package] name`,
//! `[lib] name`/`path`, `[[bin]] name`/`path`): a TOML parser would be the only dependency.

use std::fs;
use std::path::{Path, PathBuf};

/// Where crates are looked for, under the workspace root.
pub const CRATES_DIR: &str = "proxy";

#[derive(Debug)]
pub struct Manifest {
    /// The crate's directory, relative to the workspace root (`proxy`, `proxy/model`).
    pub dir: PathBuf,
    pub package: String,
    /// The name other crates import it by (`wharf_model`).
    pub lib_name: String,
    /// Root files, relative to `dir`: the library's first, when there is one.
    pub lib: Option<PathBuf>,
    pub bins: Vec<PathBuf>,
}

pub fn discover(root: &Path) -> Result<Vec<Manifest>, String> {
    let top = root.join(CRATES_DIR);
    if !top.is_dir() {
        return Err(format!(
            "{} is not a directory: WHARF_STRUCTURE_ROOT (or the default, this workspace's root) must be a wharf checkout",
            top.display()
        ));
    }
    let mut found = Vec::new();
    walk(root, &top, &mut found)?;
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(found)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<Manifest>) -> Result<(), String> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        let text =
            fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
        let rel = dir.strip_prefix(root).unwrap_or(dir).to_path_buf();
        if let Some(m) = read_manifest(&text, rel, dir) {
            found.push(m);
        }
    }
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        let name = sub.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // A Cargo.toml inside a crate's sources is data (the plugin templates), not a crate.
        if name == "src" || name == "target" || name.starts_with('.') {
            continue;
        }
        walk(root, &sub, found)?;
    }
    Ok(())
}

/// The crate a Cargo.toml describes, or None for a workspace-only manifest.
pub fn read_manifest(text: &str, rel: PathBuf, abs: &Path) -> Option<Manifest> {
    let mut section = String::new();
    let mut package = None;
    let mut lib_name = None;
    let mut lib_path = None;
    // (name, path) per [[bin]]
    let mut bins: Vec<(Option<String>, Option<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            if line.starts_with("[[") && section == "bin" {
                bins.push((None, None));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Some(value) = quoted(value) else {
            continue;
        };
        match (section.as_str(), key.trim()) {
            ("package", "name") => package = Some(value),
            ("lib", "name") => lib_name = Some(value),
            ("lib", "path") => lib_path = Some(value),
            ("bin", "name") => {
                if let Some(bin) = bins.last_mut() {
                    bin.0 = Some(value);
                }
            }
            ("bin", "path") => {
                if let Some(bin) = bins.last_mut() {
                    bin.1 = Some(value);
                }
            }
            _ => {}
        }
    }
    let package = package?;
    let lib = match lib_path {
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from("src/lib.rs")).filter(|p| abs.join(p).is_file()),
    };
    let mut bin_paths: Vec<PathBuf> = Vec::new();
    for (name, path) in bins {
        let path = match (path, name) {
            (Some(path), _) => PathBuf::from(path),
            (None, Some(name)) if name == package => PathBuf::from("src/main.rs"),
            (None, Some(name)) => PathBuf::from(format!("src/bin/{name}.rs")),
            (None, None) => continue,
        };
        bin_paths.push(path);
    }
    // Cargo finds these itself unless told not to; a [[bin]] naming the same file is one target.
    let mut auto = vec![PathBuf::from("src/main.rs")];
    if let Ok(entries) = fs::read_dir(abs.join("src/bin")) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .filter_map(|p| p.strip_prefix(abs).ok().map(Path::to_path_buf))
            .collect();
        found.sort();
        auto.extend(found);
    }
    for path in auto {
        if abs.join(&path).is_file() && !bin_paths.contains(&path) {
            bin_paths.push(path);
        }
    }
    bin_paths.retain(|p| abs.join(p).is_file() && Some(p) != lib.as_ref());
    let lib_name = lib_name.unwrap_or_else(|| package.replace('-', "_"));
    Some(Manifest {
        dir: rel,
        package,
        lib_name,
        lib,
        bins: bin_paths,
    })
}

/// `"value"` at the start of a TOML value; None for anything else (tables, numbers, `.workspace`).
fn quoted(value: &str) -> Option<String> {
    let rest = value.trim().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}
