//! What a token wharf issued may be used for: the Docker token spec's `scope` parameter (what a
//! client asks for: `repository:<name>:<actions>`) and `access` claim (what it was granted: what it
//! asked for that the rules allow its identity, as distribution's token server grants). A token
//! covers a request when it grants the request's action on the repository as the client named it
//! or on the routing phase's name. Pure: parsing and matching only.
//! <https://distribution.github.io/distribution/spec/auth/scope/>

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::operation::Operation;

/// Scopes read from one token request, at most; clients ask for one or two (a push with a mount
/// source). More would only make a token too large to send back.
pub const MAX_SCOPES: usize = 16;

/// What a request does to a repository, as scopes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    /// Reads (and tag lists) are `pull`, uploads and manifest pushes `push`, deletes `delete`: the
    /// actions distribution's registry asks its token server for.
    pub fn of(op: Operation) -> Action {
        match op {
            Operation::Pull | Operation::List => Action::Pull,
            Operation::Push => Action::Push,
            Operation::Delete => Action::Delete,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    /// `pull,push`; `*` is every action (skopeo asks `*` to delete, as distribution and quay
    /// understand it); names wharf does not know are left out.
    pub fn parse(list: &str) -> Actions {
        let mut set = Actions::default();
        for a in list.split(',').map(str::trim) {
            match a {
                "*" => Action::ALL.iter().for_each(|a| set.insert(*a)),
                "pull" => set.insert(Action::Pull),
                "push" => set.insert(Action::Push),
                "delete" => set.insert(Action::Delete),
                _ => {}
            }
        }
        set
    }

    pub fn insert(&mut self, a: Action) {
        self.0 |= a.bit();
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// One scope a client asked for: a repository, as the client names it, and actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub actions: Actions,
}

/// The `repository` scopes in the `scope` values of a token request (each may hold several,
/// space-separated, as an OAuth2 form does). Other resource types (`registry:catalog:*`) grant
/// nothing here; `repository(plugin)` is a repository.
pub fn parse_scopes<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
    let mut out = Vec::new();
    for entry in values.into_iter().flat_map(str::split_whitespace) {
        // The name may hold a `:` (a registry's port): the type ends at the first, the actions
        // begin after the last.
        let Some((kind, rest)) = entry.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind != "repository" || name.is_empty() {
            continue;
        }
        if out.len() == MAX_SCOPES {
            tracing::debug!(
                max = MAX_SCOPES,
                "token request asks for more scopes than wharf grants at once; the rest are left out"
            );
            break;
        }
        out.push(Scope {
            name: name.to_owned(),
            actions: Actions::parse(actions),
        });
    }
    out
}

/// What a token was granted: repositories (as the client named them in its scopes) and actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    grants: Vec<Scope>,
}

/// The `access` claim's entry, as the token spec writes it.
#[derive(Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

impl Access {
    /// Adds `actions` on `name`, merged with what the token already grants there.
    pub fn grant(&mut self, name: &str, actions: Actions) {
        if actions.is_empty() {
            return;
        }
        match self.grants.iter_mut().find(|g| g.name == name) {
            Some(g) => actions.iter().for_each(|a| g.actions.insert(a)),
            None => self.grants.push(Scope {
                name: name.to_owned(),
                actions,
            }),
        }
    }

    /// Whether the token grants `action` on any of `names` (the repository as the client wrote it,
    /// and the routing phase's name for it).
    pub fn covers(&self, names: &[&str], action: Action) -> bool {
        self.grants
            .iter()
            .any(|g| names.contains(&g.name.as_str()) && g.actions.contains(action))
    }

    /// What the token grants on `names`, as scopes (`repository:ci/app:pull`), for a refusal.
    pub fn describe(&self, names: &[&str]) -> String {
        let on: Vec<String> = self
            .grants
            .iter()
            .filter(|g| names.contains(&g.name.as_str()))
            .map(|g| format!("repository:{}:{}", g.name, g.actions))
            .collect();
        if on.is_empty() {
            format!("nothing on {}", names[0])
        } else {
            on.join(" ")
        }
    }

    pub fn to_entries(&self) -> Vec<Entry> {
        self.grants
            .iter()
            .map(|g| Entry {
                kind: "repository".into(),
                name: g.name.clone(),
                actions: g.actions.iter().map(|a| a.as_str().to_owned()).collect(),
            })
            .collect()
    }

    pub fn from_entries(entries: Vec<Entry>) -> Access {
        let mut access = Access::default();
        for e in entries.into_iter().filter(|e| e.kind == "repository") {
            access.grant(&e.name, Actions::parse(&e.actions.join(",")));
        }
        access
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_as_clients_send_them() {
        let s = parse_scopes([
            "repository:library/alpine:pull",
            "repository:ci/app:pull,push repository:ci/base:pull",
            "repository:localhost:5000/team/app:*",
            "registry:catalog:*",
            "repository(plugin):vieux/sshfs:pull",
            "nonsense",
        ]);
        let shown: Vec<String> = s
            .iter()
            .map(|s| format!("{}={}", s.name, s.actions))
            .collect();
        assert_eq!(
            shown,
            [
                "library/alpine=pull",
                "ci/app=pull,push",
                "ci/base=pull",
                "localhost:5000/team/app=pull,push,delete",
                "vieux/sshfs=pull",
            ]
        );
        let many: Vec<String> = (0..40).map(|i| format!("repository:r{i}:pull")).collect();
        assert_eq!(
            parse_scopes(many.iter().map(String::as_str)).len(),
            MAX_SCOPES
        );
    }

    #[test]
    fn a_token_covers_only_what_it_grants() {
        let mut a = Access::default();
        a.grant("ci/bob", Actions::parse("pull"));
        a.grant("ci/bob", Actions::parse("bogus"));
        a.grant("team/app", Actions::parse("pull,push"));
        assert!(a.covers(&["ci/bob"], Action::Pull));
        assert!(
            !a.covers(&["ci/bob"], Action::Push),
            "a pull token cannot push"
        );
        assert!(!a.covers(&["ci/bob"], Action::Delete));
        assert!(a.covers(&["docker.io/team/app", "team/app"], Action::Push));
        assert!(!a.covers(&["other"], Action::Pull));
        assert_eq!(a.describe(&["ci/bob"]), "repository:ci/bob:pull");
        assert_eq!(a.describe(&["x/y"]), "nothing on x/y");
        let back = Access::from_entries(a.to_entries());
        assert_eq!(back, a);
    }
}
