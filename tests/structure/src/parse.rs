//! What one source file declares and names: its `mod` declarations (the module tree), its `use`
//! trees (edges, and the names they bind for paths further down), and every other path with at
//! least two segments (`crate::metrics::joined(…)`, `super::Foo`, `fs::open`). Which of those paths
//! lead into the crate is decided later, when every file's modules and imports are known.
//!
//! Test-only code is not part of the house: an item under `#[cfg(test)]` (a `mod tests { … }` block,
//! a `mod tests;` declaration, a helper fn) is skipped whole, and a file under `#![cfg(test)]` is empty.

use crate::lex::{lex, Token};

/// A module path relative to the file being parsed: the inline `mod x { … }` blocks around a record
/// (empty at the file's top level).
pub type Scope = Vec<String>;

#[derive(Debug, Default)]
pub struct Parsed {
    pub mods: Vec<ModDecl>,
    pub inline_mods: Vec<Scope>,
    pub uses: Vec<Use>,
    pub paths: Vec<PathRef>,
}

/// `mod name;`: a child module whose source is another file.
#[derive(Debug, PartialEq, Eq)]
pub struct ModDecl {
    pub scope: Scope,
    pub name: String,
    /// `#[path = "…"]`, as written.
    pub path_attr: Option<String>,
}

/// One leaf of a use tree: `use crate::{a::X, b::{self, Y as Z}, c::*}` is four of them.
#[derive(Debug, PartialEq, Eq)]
pub struct Use {
    pub scope: Scope,
    /// The full path, `self` leaves folded into their parent (`b::{self}` is `b`); a path from the
    /// crates' root (`::std::…`) starts with `::`.
    pub path: Vec<String>,
    /// The name the leaf binds in its scope; None for a glob and for `as _`.
    pub bound: Option<String>,
    pub glob: bool,
    /// `pub use` / `pub(crate) use`: a re-export, an edge even when it names a whole module.
    pub public: bool,
}

/// A path in code: a type, a call, a pattern, a serde attribute's function.
#[derive(Debug, PartialEq, Eq)]
pub struct PathRef {
    pub scope: Scope,
    pub segs: Vec<String>,
}

pub fn parse(src: &str) -> Parsed {
    Parser::new(lex(src)).run()
}

/// An outer attribute's effect on the item after it.
#[derive(Default)]
struct Pending {
    any: bool,
    cfg_test: bool,
    path: Option<String>,
    serde_paths: Vec<Vec<String>>,
}

struct Parser {
    t: Vec<Token>,
    out: Parsed,
    /// Inline modules open around the current token, with the brace depth of their bodies.
    inline: Vec<(String, usize)>,
    depth: usize,
}

impl Parser {
    fn new(tokens: Vec<Token>) -> Parser {
        // `$crate` in a macro body is the crate that defines the macro: the same as `crate` here.
        let mut t = Vec::with_capacity(tokens.len());
        for token in tokens {
            if token == ident("crate") && t.last() == Some(&Token::Punct('$')) {
                t.pop();
            }
            t.push(token);
        }
        Parser {
            t,
            out: Parsed::default(),
            inline: Vec::new(),
            depth: 0,
        }
    }

    fn at(&self, i: usize) -> Option<&Token> {
        self.t.get(i)
    }

    fn ident_at(&self, i: usize) -> Option<&str> {
        match self.t.get(i) {
            Some(Token::Ident(name)) => Some(name),
            _ => None,
        }
    }

    fn is(&self, i: usize, c: char) -> bool {
        self.at(i) == Some(&Token::Punct(c))
    }

    fn scope(&self) -> Scope {
        self.inline.iter().map(|(name, _)| name.clone()).collect()
    }

    fn run(mut self) -> Parsed {
        let mut i = 0;
        let mut pending = Pending::default();
        while i < self.t.len() {
            if self.is(i, '#') {
                let inner = self.is(i + 1, '!');
                let open = i + 1 + usize::from(inner);
                if self.is(open, '[') {
                    let close = self.matching(open);
                    let attr = &self.t[open + 1..close.min(self.t.len())];
                    if inner {
                        if is_cfg_test(attr) && self.inline.is_empty() && self.depth == 0 {
                            return Parsed::default();
                        }
                    } else {
                        read_attr(attr, &mut pending);
                    }
                    i = close + 1;
                    continue;
                }
            }
            let mut path_attr = None;
            if pending.any {
                let attrs = std::mem::take(&mut pending);
                let kw = self.after_visibility(i);
                if attrs.cfg_test && self.ident_at(kw).is_some_and(is_item_keyword) {
                    i = self.skip_item(i);
                    continue;
                }
                let scope = self.scope();
                for segs in attrs.serde_paths {
                    self.out.paths.push(PathRef {
                        scope: scope.clone(),
                        segs,
                    });
                }
                path_attr = attrs.path;
                // A visibility carries no import (`pub(in crate::a)` is not one), and a `#[path]`
                // belongs to the `mod` after it.
                i = kw;
            }
            if i >= self.t.len() {
                break;
            }
            i = self.step(i, path_attr);
        }
        self.out
    }

    /// Reads the token at `i` (not an attribute) and returns where to go on.
    fn step(&mut self, i: usize, path_attr: Option<String>) -> usize {
        match &self.t[i] {
            Token::Ident(word) if word == "mod" => {
                let Some(name) = self.ident_at(i + 1).map(str::to_owned) else {
                    return i + 1;
                };
                if self.is(i + 2, ';') {
                    let scope = self.scope();
                    self.out.mods.push(ModDecl {
                        scope,
                        name,
                        path_attr,
                    });
                    return i + 3;
                }
                if self.is(i + 2, '{') {
                    self.depth += 1;
                    self.inline.push((name, self.depth));
                    self.out.inline_mods.push(self.scope());
                    return i + 3;
                }
                i + 1
            }
            Token::Ident(word) if word == "use" => self.use_decl(i),
            Token::Punct('{') => {
                self.depth += 1;
                i + 1
            }
            Token::Punct('}') => {
                if self.inline.last().is_some_and(|(_, d)| *d == self.depth) {
                    self.inline.pop();
                }
                self.depth = self.depth.saturating_sub(1);
                i + 1
            }
            Token::Ident(_) if self.at(i + 1) == Some(&Token::PathSep) => self.path(i),
            _ => i + 1,
        }
    }

    /// A path in code, from its first segment: `a::b::C` (a turbofish or anything else ends it).
    fn path(&mut self, start: usize) -> usize {
        let mut segs = Vec::new();
        let mut i = start;
        while let Some(name) = self.ident_at(i) {
            segs.push(name.to_owned());
            if self.at(i + 1) == Some(&Token::PathSep) && self.ident_at(i + 2).is_some() {
                i += 2;
            } else {
                break;
            }
        }
        let end = i + 1;
        let before = start.checked_sub(1).and_then(|b| self.at(b));
        // `x.collect::<…>`, `::std::…` (a crate, never a module here), `pub(in crate::a)`.
        let not_a_path = matches!(before, Some(Token::Punct('.') | Token::PathSep))
            || (self.ident_at(start.wrapping_sub(1)) == Some("in")
                && start >= 2
                && self.is(start - 2, '('));
        if segs.len() >= 2 && !not_a_path {
            self.out.paths.push(PathRef {
                scope: self.scope(),
                segs,
            });
        }
        end
    }

    fn use_decl(&mut self, at: usize) -> usize {
        let public = self.is_public(at);
        let mut leaves = Vec::new();
        let end = self.use_tree(at + 1, Vec::new(), &mut leaves);
        let scope = self.scope();
        for (path, bound, glob) in leaves {
            self.out.uses.push(Use {
                scope: scope.clone(),
                path,
                bound,
                glob,
                public,
            });
        }
        let end = end.max(at + 1);
        if self.is(end, ';') {
            end + 1
        } else {
            end
        }
    }

    /// `pub use`, `pub(crate) use`, `pub(super) use`.
    fn is_public(&self, at: usize) -> bool {
        let Some(mut before) = at.checked_sub(1) else {
            return false;
        };
        if self.is(before, ')') {
            let mut depth = 0;
            loop {
                if self.is(before, ')') {
                    depth += 1;
                } else if self.is(before, '(') {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                let Some(b) = before.checked_sub(1) else {
                    return false;
                };
                before = b;
            }
            let Some(b) = before.checked_sub(1) else {
                return false;
            };
            before = b;
        }
        self.ident_at(before) == Some("pub")
    }

    /// One use tree from `i`, under `prefix`; pushes its leaves and returns the index after it.
    fn use_tree(
        &self,
        mut i: usize,
        mut path: Vec<String>,
        leaves: &mut Vec<(Vec<String>, Option<String>, bool)>,
    ) -> usize {
        if path.is_empty() && self.at(i) == Some(&Token::PathSep) {
            path.push("::".to_owned());
            i += 1;
        }
        loop {
            match self.at(i) {
                Some(Token::Punct('{')) => {
                    i += 1;
                    loop {
                        if self.is(i, '}') {
                            return i + 1;
                        }
                        let next = self.use_tree(i, path.clone(), leaves);
                        if next == i {
                            return i; // not a use tree after all (a macro fragment): give up here
                        }
                        i = next;
                        if self.is(i, ',') {
                            i += 1;
                        }
                    }
                }
                Some(Token::Punct('*')) => {
                    leaves.push((path, None, true));
                    return i + 1;
                }
                Some(Token::Ident(name)) => {
                    i += 1;
                    if self.at(i) == Some(&Token::PathSep) {
                        path.push(name.clone());
                        i += 1;
                        continue;
                    }
                    let folds_into_parent = name == "self" && !path.is_empty();
                    if !folds_into_parent {
                        path.push(name.clone());
                    }
                    let mut bound = path.last().cloned();
                    if self.ident_at(i) == Some("as") {
                        bound = self
                            .ident_at(i + 1)
                            .filter(|alias| *alias != "_")
                            .map(str::to_owned);
                        i += 2;
                    }
                    leaves.push((path, bound, false));
                    return i;
                }
                _ => return i,
            }
        }
    }

    /// The index of the `]`, `)` or `}` closing the group opened at `open` (or the end).
    fn matching(&self, open: usize) -> usize {
        let mut depth = 0usize;
        for (i, token) in self.t.iter().enumerate().skip(open) {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(')' | ']' | '}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i;
                    }
                }
                _ => {}
            }
        }
        self.t.len()
    }

    /// Past `pub`, `pub(crate)`, `pub(in a::b)`.
    fn after_visibility(&self, i: usize) -> usize {
        if self.ident_at(i) != Some("pub") {
            return i;
        }
        if self.is(i + 1, '(') {
            self.matching(i + 1) + 1
        } else {
            i + 1
        }
    }

    /// The index after the item starting at `start`: its `;`, or the `}` closing its body. Stops
    /// before a closer that belongs to the enclosing block.
    fn skip_item(&self, start: usize) -> usize {
        let mut depth = 0usize;
        for (i, token) in self.t.iter().enumerate().skip(start) {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(c @ (')' | ']' | '}')) => {
                    if depth == 0 {
                        return i;
                    }
                    depth -= 1;
                    if depth == 0 && *c == '}' {
                        return i + 1;
                    }
                }
                Token::Punct(';') if depth == 0 => return i + 1,
                _ => {}
            }
        }
        self.t.len()
    }
}

fn ident(name: &str) -> Token {
    Token::Ident(name.to_owned())
}

/// Keywords that start an item a `#[cfg(test)]` can remove. A test-only statement or field is
/// kept (its edges count), which can only over-count.
fn is_item_keyword(word: &str) -> bool {
    matches!(
        word,
        "mod"
            | "fn"
            | "use"
            | "impl"
            | "struct"
            | "enum"
            | "union"
            | "const"
            | "static"
            | "type"
            | "trait"
            | "extern"
            | "unsafe"
            | "async"
            | "macro_rules"
    )
}

/// `cfg(test)`, `cfg(all(test, …))`: never compiled into wharf itself. `cfg(any(test, …))` and
/// `cfg(not(test))` may be.
fn is_cfg_test(attr: &[Token]) -> bool {
    attr.first() == Some(&ident("cfg"))
        && attr.contains(&ident("test"))
        && !attr.contains(&ident("not"))
        && !attr.contains(&ident("any"))
}

fn read_attr(attr: &[Token], pending: &mut Pending) {
    pending.any = true;
    if is_cfg_test(attr) {
        pending.cfg_test = true;
    }
    if let [Token::Ident(key), Token::Punct('='), Token::Str(path)] = attr {
        if key == "path" {
            pending.path = Some(path.clone());
        }
    }
    // serde names functions in strings: `deserialize_with = "crate::mirror::platforms::de_…"` is an
    // import as much as a `use` is.
    if attr.first() == Some(&ident("serde")) {
        for window in attr.windows(3) {
            if let [Token::Ident(key), Token::Punct('='), Token::Str(value)] = window {
                let names_code = matches!(
                    key.as_str(),
                    "with" | "serialize_with" | "deserialize_with" | "default" | "getter"
                );
                let segs: Vec<String> = value.split("::").map(str::to_owned).collect();
                let well_formed = segs
                    .iter()
                    .all(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'));
                if names_code && segs.len() >= 2 && well_formed {
                    pending.serde_paths.push(segs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
