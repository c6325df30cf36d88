//! The routing phase's answer to "whose repository is this?": one of wharf's own, or an upstream's
//! that the mirror serves. Decided once per request, before any policy, so that the auth rules, the
//! plugins and the denial log all judge one name however the client spelled it: containerd's
//! `?ns=docker.io` on `library/alpine`, podman's path prefix `docker.io/library/alpine`, and Docker's
//! host-less `alpine` are all `docker.io/library/alpine`.

use http::Method;

use super::services::Registry;
use crate::mirror::Target;
use wharf_model::reference::RepoName;
use wharf_protocol::error::Result;
use wharf_protocol::route::Route;

/// Where a request's repository lives.
pub(crate) enum Place {
    /// One of wharf's own repositories: pushed here, a push route's local repository, or a name
    /// that no upstream claims.
    Local(RepoName),
    /// An upstream's repository, served by the mirror.
    Mirror {
        target: Target,
        /// Named without a host (Docker's `registry-mirrors`, a registries.conf mirror without a
        /// prefix) and not a repository of wharf's own: the default upstream's.
        fallback: bool,
    },
}

impl Place {
    /// The name every policy judges: the repository wharf keeps the content under, which for the
    /// mirror is its cache repository (`<registry>/<repository>`).
    pub(crate) fn name(&self) -> &str {
        match self {
            Place::Local(r) => r.as_str(),
            Place::Mirror { target, .. } => &target.cache,
        }
    }

    /// The same name as plugins see it (`wit/policy.wit`): the upstream's host and the repository
    /// there, or no registry and the local name.
    pub(crate) fn plugin_view(&self) -> (Option<&str>, &str) {
        match self {
            Place::Local(r) => (None, r.as_str()),
            Place::Mirror { target, .. } => (Some(&target.upstream.host), &target.remote),
        }
    }
}

/// A request after the routing phase.
pub(crate) struct Routed {
    /// The endpoint, on the local repository's name when a push route renamed it.
    pub route: Route,
    /// `None` for the API root.
    pub place: Option<Place>,
    /// A registry host the request names that no `[[upstream]]` configures: served from wharf's own
    /// repositories, and a 404 says which config entry would mirror it.
    pub unconfigured: Option<String>,
}

impl Routed {
    /// A blob read that went to the default upstream because the name is not wharf's own.
    pub(crate) fn is_fallback_blob(&self) -> bool {
        matches!(
            (&self.route, &self.place),
            (Route::Blob(..), Some(Place::Mirror { fallback: true, .. }))
        )
    }
}

impl Registry {
    /// The routing phase: which repository `route` (as `method` uses it, with containerd's `ns`)
    /// addresses. Reads only metadata that the read cache holds; never asks an upstream.
    pub(crate) async fn place(
        &self,
        mut route: Route,
        ns: Option<&str>,
        method: &Method,
    ) -> Result<Routed> {
        let Some(name) = route.repo().cloned() else {
            return Ok(Routed {
                route,
                place: None,
                unconfigured: None,
            });
        };
        let writes = route.writes(method);
        let target = self.mirror.explicit(name.as_str(), ns);
        // A name given for a push route's registry (containerd's `ns=`, a path prefix) is the route's
        // local repository; a write naming any other registry is refused, never stored under a name
        // that says it is there. (Only looked at when it can matter: a warm pull pays nothing.)
        let routes = self.push.as_ref().filter(|p| !p.is_empty());
        if routes.is_some() || writes {
            let named = match &target {
                Some(t) => Some((t.upstream.host.clone(), t.remote.clone())),
                None => self.named_registry(name.as_str(), ns),
            };
            if let Some((host, remote)) = named {
                match routes.and_then(|p| p.local_name(&host, &remote)) {
                    Some(local) => {
                        let local: RepoName = local.parse()?;
                        route = route.with_repo(local.clone());
                        return Ok(Routed {
                            route,
                            place: Some(Place::Local(local)),
                            unconfigured: None,
                        });
                    }
                    // A mirrored upstream's own refusal, in `dispatch_mirror`, says the same.
                    None if target.is_none() && writes => {
                        return Err(self.unrouted(&host, &remote));
                    }
                    None => {}
                }
            }
        }
        if let Some(target) = target {
            return Ok(Routed {
                route,
                place: Some(Place::Mirror {
                    target,
                    fallback: false,
                }),
                unconfigured: None,
            });
        }
        // A request that names a registry wharf does not mirror is never sent to the default
        // upstream: that would serve another registry's image under the name the client asked for.
        let unconfigured = self.mirror.unconfigured(name.as_str(), ns);
        if unconfigured.is_none() && !writes {
            if let Some(target) = self.fallback(&route, &name).await? {
                return Ok(Routed {
                    route,
                    place: Some(Place::Mirror {
                        target,
                        fallback: true,
                    }),
                    unconfigured: None,
                });
            }
        }
        Ok(Routed {
            route,
            place: Some(Place::Local(name)),
            unconfigured,
        })
    }

    /// For a host-less name that is not a repository of wharf's own: the default upstream's
    /// repository, for the reads it serves. A blob is only looked for there once the mirror holds
    /// something of that repository: clients fetch the manifest first, and a push probing for blobs
    /// of a new repository must get the local "not here".
    async fn fallback(&self, route: &Route, name: &RepoName) -> Result<Option<Target>> {
        if !matches!(
            route,
            Route::Manifest(..) | Route::Tags(_) | Route::Blob(..)
        ) {
            return Ok(None);
        }
        // Asked first: a pull of a local repository (the warm path) builds no mirror target.
        if !self.mirror.has_default() || self.meta.repo_exists(name.as_str()).await? {
            return Ok(None);
        }
        let Some(t) = self.mirror.default_target(name.as_str()) else {
            return Ok(None);
        };
        if matches!(route, Route::Blob(..)) && !self.mirror.has_cached(&t).await? {
            return Ok(None);
        }
        Ok(Some(t))
    }
}
