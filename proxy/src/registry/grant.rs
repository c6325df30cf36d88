//! What a token from `/token` is granted: of the scopes a client asked for, the actions the rules
//! allow its identity, as distribution's token server grants the intersection. The rules judge the
//! routing phase's name, and a scope names a repository as the client writes it, without the
//! request's `ns=`: so a scope's actions are granted when the rules allow them on any name the
//! routing phase could give it (as written, with no `ns=`, or with the `ns=` of a registry wharf
//! mirrors, for reads, or routes pushes to, for writes). Each request is then judged by the rules on its own name as well:
//! a grant never lets an identity do what the rules refuse it, and never more than it asked for.

use http::Method;

use super::place::Routed;
use super::services::Registry;
use wharf_model::reference::RepoName;
use wharf_model::scope::{Access, Action, Actions, Scope};
use wharf_policy::auth::Auth;
use wharf_protocol::route::Route;

impl Registry {
    pub(super) async fn grant(
        &self,
        auth: &Auth,
        identity: Option<&str>,
        scopes: &[Scope],
    ) -> Access {
        let mut access = Access::default();
        for scope in scopes {
            // A name no request could carry grants nothing.
            let Ok(name) = scope.name.parse::<RepoName>() else {
                continue;
            };
            let mut granted = Actions::default();
            for action in scope.actions.iter() {
                let names = self.names_of(&name, action).await;
                if names.iter().any(|n| auth.allows(identity, n, action)) {
                    granted.insert(action);
                }
            }
            access.grant(&scope.name, granted);
        }
        access
    }

    /// The names the routing phase may give a request doing `action` on `name`, and `name` itself.
    async fn names_of(&self, name: &RepoName, action: Action) -> Vec<String> {
        let ask = || match action {
            Action::Pull => (Route::Tags(name.clone()), Method::GET),
            Action::Push | Action::Delete => (Route::UploadStart(name.clone()), Method::POST),
        };
        let mut registries: Vec<Option<String>> = vec![None];
        // A mirrored registry is only read through wharf (a write naming it is refused unless a
        // push route covers it), a push route's only written to.
        match action {
            Action::Pull => {
                registries.extend(self.mirror.upstreams().iter().map(|u| Some(u.host.clone())))
            }
            Action::Push | Action::Delete => {
                if let Some(p) = &self.push {
                    registries.extend(p.registry_names().map(|n| Some(n.to_owned())));
                }
            }
        }
        let mut names = vec![name.to_string()];
        for ns in &registries {
            let (route, method) = ask();
            // A write naming a registry no route covers is refused there: nothing to grant.
            if let Ok(Routed {
                place: Some(place), ..
            }) = self.place(route, ns.as_deref(), &method).await
            {
                names.push(place.name().to_owned());
            }
        }
        names.sort();
        names.dedup();
        names
    }
}
