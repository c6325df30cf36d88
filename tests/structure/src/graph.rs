//! The file-level import graph of the workspace's crates.
//!
//! Modules are found as the compiler finds them: from each root file (lib.rs, main.rs, a `[[bin]]`)
//! through its `mod x;` declarations (`x.rs`, `x/mod.rs`, or a `#[path]`), so a file no module
//! declares (a template the CLI embeds) is not part of a crate, and a test module (`tests.rs`, a
//! `tests/` directory, anything under `#[cfg(test)]`) is not part of the house.
//!
//! A path names an item of the module file it reaches: `crate::a::b::C` is an edge to `a/b.rs` when
//! that file exists, else to `a.rs`. On the way, a name that a module imports with `use` is followed to
//! where it comes from: `crate::Digest` through lib.rs's `pub use wharf_model::digest::Digest` is an
//! edge to the model crate's digest.rs, not to lib.rs (the re-exporting file has its own edge). A `use`
//! that names a whole module (`use crate::meta;`) is an edge only where that name is then used
//! (`meta::push::Delivery` is an edge to meta/push.rs) or when it is a re-export (`pub use`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use crate::cargo::{discover, Manifest};
use crate::parse::{parse, Parsed};

pub type FileId = usize;
type ModPath = Vec<String>;

pub struct Crate {
    pub package: String,
    pub lib_name: String,
    /// Relative to the workspace root.
    pub dir: PathBuf,
    pub files: Vec<FileId>,
    lib_tree: Option<usize>,
}

pub struct File {
    pub krate: usize,
    /// Relative to the workspace root, `/`-separated: how reports name it.
    pub path: String,
    /// The module it holds (empty for a root file).
    pub module: Vec<String>,
    tree: usize,
    parsed: Parsed,
}

/// One compilation root's modules: a library, or one binary.
struct Tree {
    krate: usize,
    /// Every module, inline ones included, to the file that holds it.
    modules: HashMap<ModPath, FileId>,
    /// What each module's `use` declarations bind: name → (the importing module, the path).
    imports: HashMap<ModPath, HashMap<String, (ModPath, Vec<String>)>>,
}

pub struct Workspace {
    pub crates: Vec<Crate>,
    pub files: Vec<File>,
    trees: Vec<Tree>,
    /// (from, to) → the names `from` takes from `to`.
    pub edges: BTreeMap<(FileId, FileId), BTreeSet<String>>,
    /// Declarations that lead to no file (the compiler would refuse them; reported, not fatal here).
    pub missing: Vec<String>,
}

/// What a path reaches: the file, and the name it takes there.
struct Reached {
    file: FileId,
    name: String,
    whole_module: bool,
}

/// Aliases re-exporting aliases: a chain longer than this is a loop the compiler would refuse.
const MAX_HOPS: usize = 16;

impl Workspace {
    pub fn load(root: &Path) -> Result<Workspace, String> {
        let manifests = discover(root)?;
        let mut ws = Workspace {
            crates: Vec::new(),
            files: Vec::new(),
            trees: Vec::new(),
            edges: BTreeMap::new(),
            missing: Vec::new(),
        };
        for manifest in manifests {
            ws.add_crate(root, manifest)?;
        }
        ws.collect_imports();
        ws.link();
        Ok(ws)
    }

    fn add_crate(&mut self, root: &Path, m: Manifest) -> Result<(), String> {
        let krate = self.crates.len();
        self.crates.push(Crate {
            package: m.package,
            lib_name: m.lib_name,
            dir: m.dir.clone(),
            files: Vec::new(),
            lib_tree: None,
        });
        let roots = m
            .lib
            .iter()
            .map(|p| (p, true))
            .chain(m.bins.iter().map(|p| (p, false)));
        for (root_file, is_lib) in roots {
            let tree = self.trees.len();
            self.trees.push(Tree {
                krate,
                modules: HashMap::new(),
                imports: HashMap::new(),
            });
            if is_lib {
                self.crates[krate].lib_tree = Some(tree);
            }
            let abs = root.join(&m.dir).join(root_file);
            // A root file's children live beside it, as a mod.rs's do.
            let child_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            self.add_file(root, tree, abs, Vec::new(), child_dir)?;
        }
        Ok(())
    }

    /// Adds the file holding `module`, then the files its `mod` declarations name.
    fn add_file(
        &mut self,
        root: &Path,
        tree: usize,
        abs: PathBuf,
        module: ModPath,
        child_dir: PathBuf,
    ) -> Result<(), String> {
        let src = fs::read_to_string(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
        let parsed = parse(&src);
        let id = self.files.len();
        let krate = self.trees[tree].krate;
        let path = abs
            .strip_prefix(root)
            .unwrap_or(&abs)
            .to_string_lossy()
            .replace('\\', "/");
        self.trees[tree].modules.insert(module.clone(), id);
        for inline in &parsed.inline_mods {
            self.trees[tree].modules.insert(join(&module, inline), id);
        }
        let decls: Vec<_> = parsed
            .mods
            .iter()
            .map(|d| (d.scope.clone(), d.name.clone(), d.path_attr.clone()))
            .collect();
        self.files.push(File {
            krate,
            path,
            module: module.clone(),
            tree,
            parsed,
        });
        self.crates[krate].files.push(id);
        let file_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        for (scope, name, path_attr) in decls {
            let mut dir = child_dir.clone();
            dir.extend(&scope);
            let (file, grandchildren) = match path_attr {
                // Relative to the declaring file's own directory when written at its top level.
                Some(p) => {
                    let base = if scope.is_empty() {
                        file_dir.clone()
                    } else {
                        dir.clone()
                    };
                    let file = base.join(p);
                    let children = file.parent().map(Path::to_path_buf).unwrap_or_default();
                    (file, children)
                }
                None => {
                    let flat = dir.join(format!("{name}.rs"));
                    let nested = dir.join(&name).join("mod.rs");
                    if nested.is_file() && !flat.is_file() {
                        (nested, dir.join(&name))
                    } else {
                        (flat, dir.join(&name))
                    }
                }
            };
            let under_src_tests = file
                .strip_prefix(&file_dir)
                .ok()
                .is_some_and(|p| p.components().any(|c| c.as_os_str() == "tests"));
            if name == "tests"
                || file.file_name().is_some_and(|n| n == "tests.rs")
                || under_src_tests
            {
                continue;
            }
            if !file.is_file() {
                self.missing.push(format!(
                    "{}: `mod {name};` has no file ({})",
                    self.files[id].path,
                    file.display()
                ));
                continue;
            }
            let child = join(&join(&module, &scope), &[name]);
            self.add_file(root, tree, file, child, grandchildren)?;
        }
        Ok(())
    }

    fn collect_imports(&mut self) {
        for file in &self.files {
            let imports = &mut self.trees[file.tree].imports;
            for u in &file.parsed.uses {
                if let Some(bound) = &u.bound {
                    let scope = join(&file.module, &u.scope);
                    imports
                        .entry(scope.clone())
                        .or_default()
                        .insert(bound.clone(), (scope, u.path.clone()));
                }
            }
        }
    }

    fn link(&mut self) {
        let mut edges: BTreeMap<(FileId, FileId), BTreeSet<String>> = BTreeMap::new();
        for (id, file) in self.files.iter().enumerate() {
            let mut add = |reached: Option<Reached>, name: Option<String>| {
                if let Some(r) = reached.filter(|r| r.file != id) {
                    edges
                        .entry((id, r.file))
                        .or_default()
                        .insert(name.unwrap_or(r.name));
                }
            };
            for u in &file.parsed.uses {
                let scope = join(&file.module, &u.scope);
                let reached = self.resolve(file.tree, &scope, &u.path, 0);
                if u.glob {
                    let name = reached.as_ref().map(|r| {
                        if r.whole_module {
                            "*".to_owned()
                        } else {
                            format!("{}::*", r.name)
                        }
                    });
                    add(reached, name);
                } else if reached
                    .as_ref()
                    .is_some_and(|r| !r.whole_module || u.public)
                {
                    add(reached, None);
                }
            }
            for p in &file.parsed.paths {
                let scope = join(&file.module, &p.scope);
                add(self.resolve(file.tree, &scope, &p.segs, 0), None);
            }
        }
        self.edges = edges;
    }

    /// Where `segs`, written in module `scope` of `tree`, leads; None outside the workspace.
    fn resolve(
        &self,
        tree: usize,
        scope: &[String],
        segs: &[String],
        hops: usize,
    ) -> Option<Reached> {
        let first = segs.first()?;
        if hops > MAX_HOPS {
            return None;
        }
        match first.as_str() {
            "::" => None,
            "crate" => self.walk(tree, Vec::new(), &segs[1..], hops),
            "self" => self.walk(tree, scope.to_vec(), &segs[1..], hops),
            "super" => {
                let mut base = scope.to_vec();
                let supers = segs.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    base.pop()?;
                }
                self.walk(tree, base, &segs[supers..], hops)
            }
            name => {
                if let Some((from, path)) = self.trees[tree]
                    .imports
                    .get(scope)
                    .and_then(|m| m.get(name))
                {
                    if path.len() > 1 || path.first().is_some_and(|p| p != name) {
                        let mut full = path.clone();
                        full.extend_from_slice(&segs[1..]);
                        return self.resolve(tree, from, &full, hops + 1);
                    }
                }
                if self.trees[tree]
                    .modules
                    .contains_key(&join(scope, &[name.to_owned()]))
                {
                    return self.walk(tree, scope.to_vec(), segs, hops);
                }
                let other = self.crates.iter().find(|c| c.lib_name == name)?;
                self.walk(other.lib_tree?, Vec::new(), &segs[1..], hops)
            }
        }
    }

    fn walk(
        &self,
        tree: usize,
        mut module: ModPath,
        rest: &[String],
        hops: usize,
    ) -> Option<Reached> {
        let modules = &self.trees[tree].modules;
        for (k, seg) in rest.iter().enumerate() {
            let deeper = join(&module, std::slice::from_ref(seg));
            if modules.contains_key(&deeper) {
                module = deeper;
                continue;
            }
            if let Some((from, path)) = self.trees[tree]
                .imports
                .get(&module)
                .and_then(|m| m.get(seg))
            {
                let mut full = path.clone();
                full.extend_from_slice(&rest[k + 1..]);
                // Followed to where it comes from; from outside the workspace (`use std::…`), nowhere.
                return self.resolve(tree, from, &full, hops + 1);
            }
            return Some(Reached {
                file: *modules.get(&module)?,
                name: seg.clone(),
                whole_module: false,
            });
        }
        let name = module.last().cloned().unwrap_or_else(|| "crate".to_owned());
        Some(Reached {
            file: *modules.get(&module)?,
            name,
            whole_module: true,
        })
    }

    /// Strongly connected components of more than one file inside each crate (Tarjan), each sorted,
    /// in file order.
    pub fn cycles(&self, krate: usize) -> Vec<Vec<FileId>> {
        let nodes = &self.crates[krate].files;
        let mut out: Vec<Vec<FileId>> = Vec::new();
        let mut tarjan = Tarjan {
            index: HashMap::new(),
            low: HashMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            next: 0,
        };
        let mut succ: HashMap<FileId, Vec<FileId>> = HashMap::new();
        for &(from, to) in self.edges.keys() {
            if self.files[from].krate == krate && self.files[to].krate == krate {
                succ.entry(from).or_default().push(to);
            }
        }
        for &n in nodes {
            if !tarjan.index.contains_key(&n) {
                tarjan.visit(n, &succ, &mut out);
            }
        }
        out.retain(|c| c.len() > 1);
        for c in &mut out {
            c.sort();
        }
        out.sort();
        out
    }
}

struct Tarjan {
    index: HashMap<FileId, usize>,
    low: HashMap<FileId, usize>,
    stack: Vec<FileId>,
    on_stack: BTreeSet<FileId>,
    next: usize,
}

impl Tarjan {
    fn visit(
        &mut self,
        v: FileId,
        succ: &HashMap<FileId, Vec<FileId>>,
        out: &mut Vec<Vec<FileId>>,
    ) {
        self.index.insert(v, self.next);
        self.low.insert(v, self.next);
        self.next += 1;
        self.stack.push(v);
        self.on_stack.insert(v);
        for &w in succ.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            if !self.index.contains_key(&w) {
                self.visit(w, succ, out);
                let low = self.low[&v].min(self.low[&w]);
                self.low.insert(v, low);
            } else if self.on_stack.contains(&w) {
                let low = self.low[&v].min(self.index[&w]);
                self.low.insert(v, low);
            }
        }
        if self.low[&v] == self.index[&v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(&w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            out.push(component);
        }
    }
}

fn join(a: &[String], b: &[String]) -> ModPath {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    v
}

#[cfg(test)]
pub(crate) mod tests;
