//! The OCI distribution API (v1.1) over the content store and the metadata store.
//!
//! `Registry::handle` is the whole HTTP surface: it routes, checks, and answers. Endpoint groups live in
//! submodules (`blobs`, `uploads`, `manifests`, `tags`, `referrers`); errors from all of them become
//! responses in one place (`error_response`), through the mapping in `wharf_protocol::error`.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode};

use crate::mirror::Target;
use wharf_model::reference::RepoName;
use wharf_model::request::ClientAddr;
use wharf_model::request::Operation;
use wharf_model::request::Operator;
use wharf_policy::auth::Auth;
use wharf_policy::policy::Policy;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_protocol::respond::blob_head;
use wharf_protocol::respond::error_response;
use wharf_protocol::respond::header_str;
use wharf_protocol::respond::json_response;
use wharf_protocol::respond::query_param;
use wharf_protocol::respond::API_VERSION;

mod blobs;
mod grant;
mod manifests;
mod place;
mod referrers;
mod services;
mod session;
mod tags;
mod uploads;

#[cfg(test)]
mod tests;

use place::{Place, Routed};
use wharf_protocol::referrers::referrers_response;
use wharf_protocol::respond::RequestBody;
use wharf_protocol::route::{self, Route};

pub use services::Registry;
pub use uploads::Purged;

impl Registry {
    /// Answers one request. Never fails: errors become spec-shaped error responses.
    pub async fn handle<B: RequestBody>(&self, req: Request<B>) -> Response<Body> {
        let head_only = req.method() == Method::HEAD;
        let carries_body = req.headers().contains_key(TRANSFER_ENCODING)
            || header_str(&req, CONTENT_LENGTH).is_some_and(|l| l != "0");
        let mut resp = match self.dispatch(req).await {
            Ok(r) => r,
            Err(e) => {
                let mut resp = error_response(e, head_only);
                // A refused request's body may be unread, and then hyper closes the connection after
                // the answer; saying so keeps clients from reusing it for their next request.
                if carries_body {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
        };
        resp.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        resp
    }

    /// The phases of a request, in order: the token endpoint (when `[auth]` is on), route (where
    /// its repository lives: `place.rs`), identify (who is calling), access (the rules, then the
    /// plugins, on the one name the routing phase chose), serve (wharf's own repositories, or the
    /// mirror). A phase with nothing configured (no `[auth]`, no plugin) costs a branch.
    async fn dispatch<B: RequestBody>(&self, mut req: Request<B>) -> Result<Response<Body>> {
        if let Some(auth) = &self.auth {
            if req.uri().path() == "/token" {
                return self.token_endpoint(auth, req).await;
            }
        }
        let route = route::route(req.method(), req.uri().path())?;
        let client_name = route.repo().cloned();
        let ns = query_param(&req, "ns");
        let mut routed = self.place(route, ns.as_deref(), req.method()).await?;
        self.identify(&mut req).await?;
        // What the plugins see of the sender, read once for every check of this request.
        if !self.policy.plugins().is_empty() {
            let sender = Policy::sender(&req);
            req.extensions_mut().insert(sender);
        }
        match self.access(&routed, client_name.as_ref(), &req).await {
            Ok(()) => {}
            // A push probing for a blob under a name that is not yet a repository here, which its
            // caller may not read from the default upstream: the answer is this registry's own ("not
            // here"), so the client uploads it rather than fail on a 403 it cannot act on.
            Err(e) if e.code == ErrorCode::Denied && routed.is_fallback_blob() => {
                if let Some(name) = client_name {
                    routed.place = Some(Place::Local(name));
                }
            }
            Err(e) => return Err(e),
        }
        self.serve(routed, req).await
    }

    /// `/token`: the identity the request proves, granted what the rules allow of the scopes it asks.
    async fn token_endpoint<B: RequestBody>(
        &self,
        auth: &Auth,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        let asked = auth.token_request(req, client).await?;
        let access = self
            .grant(auth, asked.identity.as_deref(), &asked.scopes)
            .await;
        Ok(auth.issue(asked.identity.as_deref(), &access))
    }

    /// The identify phase: before anything is read or written. Every later phase sees who is
    /// calling (the request's `Caller`); with auth off, no one is. The admin socket's requests are
    /// the operator's.
    async fn identify<B>(&self, req: &mut Request<B>) -> Result<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let caller = if req.extensions().get::<Operator>().is_some() {
            wharf_model::request::Caller::operator()
        } else {
            let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
            auth.identify(req.headers(), client).await?
        };
        req.extensions_mut().insert(caller);
        Ok(())
    }

    /// The serve phase: the mirror for a mirrored repository, else wharf's own; a 404 for a name
    /// whose host is no configured upstream says how to mirror it.
    async fn serve<B: RequestBody>(
        &self,
        routed: Routed,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let Routed {
            route,
            place,
            unconfigured,
        } = routed;
        if let Some(Place::Mirror { target, fallback }) = place {
            return self.dispatch_mirror(route, target, fallback, req).await;
        }
        let result = self.dispatch_local(route, req).await;
        match (result, unconfigured) {
            (Err(mut e), Some(host)) if e.status == StatusCode::NOT_FOUND => {
                e.message = format!(
                    "{}; the request names {host}, which is not a configured upstream, so only \
                     wharf's own repositories were searched: to mirror {host}, add an [[upstream]] \
                     entry with host = \"{host}\" to wharf's config (see examples/wharf.toml)",
                    e.message
                );
                Err(e)
            }
            (result, _) => result,
        }
    }

    /// The access phase: `[auth]`'s rules, then the plugins' `access`, both on the routing phase's
    /// name. `client_name` is the name as the client wrote it, for the challenge it is sent back with.
    async fn access<B>(
        &self,
        routed: &Routed,
        client_name: Option<&RepoName>,
        req: &Request<B>,
    ) -> Result<()> {
        let op = operation(&routed.route, req.method());
        let name = routed.place.as_ref().map(Place::name);
        if let (Some(auth), Some(caller)) = (
            &self.auth,
            req.extensions().get::<wharf_model::request::Caller>(),
        ) {
            if req.extensions().get::<Operator>().is_none() {
                let scope = client_name.map(RepoName::as_str).or(name);
                auth.authorize(caller, op.as_ref().map(|o| o.0), name, scope, req)?;
            }
        }
        if let (Some((op, reference)), Some(place)) = (op, &routed.place) {
            if !self.policy.plugins().is_empty() {
                let (registry, repository) = place.plugin_view();
                let ctx = Policy::context(op, registry, repository, reference, req);
                self.policy.allow(ctx).await?;
            }
        }
        Ok(())
    }

    /// The repository a cross-repository mount (`?mount=<digest>&from=<name>`) may link the blob
    /// from: `from` placed as a read of it would be, when the caller may pull it there. Otherwise
    /// none, and the request is an ordinary upload (the spec's `202` for a mount that cannot be
    /// done): a caller never links content it could not read, and never fails a push for asking.
    async fn mount_source<B>(&self, route: &Route, req: &Request<B>) -> Option<String> {
        if !matches!(route, Route::UploadStart(_)) {
            return None;
        }
        let digest = query_param(req, "mount")?.parse().ok()?;
        let from: RepoName = query_param(req, "from")?.parse().ok()?;
        let routed = self
            .place(Route::Blob(from.clone(), digest), None, &Method::GET)
            .await
            .ok()?;
        let name = routed.place.as_ref()?.name().to_owned();
        match self.access_as(&routed, Some(&from), Method::GET, req).await {
            Ok(()) => Some(name),
            Err(e) => {
                tracing::debug!(from = %name, error = %e, "mount source not readable by the caller; uploading instead");
                None
            }
        }
    }

    /// The access phase for another request of the same caller (a mount's source, the repository a
    /// pushed manifest's blobs came from).
    async fn access_as<B>(
        &self,
        routed: &Routed,
        client_name: Option<&RepoName>,
        method: Method,
        req: &Request<B>,
    ) -> Result<()> {
        let mut probe = Request::new(());
        *probe.method_mut() = method;
        *probe.headers_mut() = req.headers().clone();
        *probe.extensions_mut() = req.extensions().clone();
        self.access(routed, client_name, &probe).await
    }

    /// Requests for wharf's own repositories.
    async fn dispatch_local<B: RequestBody>(
        &self,
        route: Route,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let method = req.method().clone();
        let from_peer = req.extensions().get::<crate::cluster::FromPeer>().is_some();
        if let (Route::Upload(repo, id), Some(cluster), false) = (&route, &self.cluster, from_peer)
        {
            if let Some(owner) = self.session_owner(repo, id).await? {
                tracing::debug!(upload = %id, peer = %owner, "forwarding to the replica that holds the session");
                return cluster.forward(&owner, req).await;
            }
        }
        match (route, method) {
            (Route::Base, Method::GET | Method::HEAD) => {
                Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
            }
            (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
                self.get_blob(&repo, &d, &req).await
            }
            (Route::Blob(repo, d), Method::DELETE) => self.delete_blob(&repo, &d).await,
            (route @ Route::UploadStart(_), Method::POST) => {
                let mount = self.mount_source(&route, &req).await;
                let Route::UploadStart(repo) = route else {
                    unreachable!("matched above")
                };
                self.start_upload(&repo, mount, req).await
            }
            (Route::Upload(repo, id), Method::GET) => self.upload_status(&repo, &id).await,
            (Route::Upload(repo, id), Method::PATCH) => self.patch_upload(&repo, &id, req).await,
            (Route::Upload(repo, id), Method::PUT) => self.finish_upload(&repo, &id, req).await,
            (Route::Upload(repo, id), Method::DELETE) => self.cancel_upload(&repo, &id).await,
            (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
                self.get_manifest(&repo, &r, &req).await
            }
            (Route::Manifest(repo, r), Method::PUT) => self.put_manifest(&repo, &r, req).await,
            (Route::Manifest(repo, r), Method::DELETE) => self.delete_manifest(&repo, &r).await,
            (Route::Tags(repo), Method::GET) => self.list_tags(&repo, &req).await,
            (Route::Referrers(repo, d), Method::GET) => {
                self.list_referrers(repo.as_str(), &d, &req).await
            }
            (_, m) => Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("method {m} is not supported on {}", req.uri().path()),
            )),
        }
    }

    /// Requests for an upstream's repository (named by `ns=`, a path prefix, or, `fallback`, the
    /// default upstream's for a host-less name) are the mirror's.
    async fn dispatch_mirror<B: RequestBody>(
        &self,
        route: Route,
        t: Target,
        fallback: bool,
        req: Request<B>,
    ) -> Result<Response<Body>> {
        let method = req.method().clone();
        match (route, method) {
            (Route::Manifest(_, r), Method::GET | Method::HEAD) => {
                self.mirror.manifest(&t, &r, &req).await
            }
            // Under a host-less name a `HEAD` is what a push asks before uploading (`docker push` of
            // an image pulled through the mirror and re-tagged): it answers only for blobs the mirror
            // holds for that repository, which the manifest push then links (`adopt_pulled`), never
            // for one the upstream merely has.
            (Route::Blob(repo, d), Method::HEAD) if fallback => {
                match self.mirror.cached_blob(&t, &d).await? {
                    Some(size) => Ok(blob_head(&d, size, &req)?.0),
                    None => Err(blobs::blob_unknown(&repo, &d)),
                }
            }
            (Route::Blob(_, d), Method::GET | Method::HEAD) => self.mirror.blob(&t, &d, &req).await,
            (Route::Tags(repo), Method::GET) => self.mirror.tags(&t, repo.as_str(), &req).await,
            (Route::Referrers(_, d), Method::GET) => {
                let found = self.mirror.referrers(&t, &d).await?;
                let mut resp = referrers_response(found.list, &req)?;
                if let Some(w) = found.warning {
                    resp.headers_mut().insert(http::header::WARNING, w);
                }
                Ok(resp)
            }
            (_, m) => Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!(
                    "{m} {} addresses {}, which wharf mirrors read-only; to push through wharf to \
                     it, add a [[push]] route with target = \"{}/{}\" (see examples/ci/), or push \
                     to a repository name without an upstream's host or prefix",
                    req.uri().path(),
                    t.upstream.host,
                    t.upstream.endpoint(),
                    t.remote
                ),
            )),
        }
    }

    /// The registry a request names, other than wharf itself, and the repository there: containerd's
    /// `ns=`, or a first name component that is a host.
    /// (Names of a mirrored upstream are the mirror's `Target`s; this is for the others.)
    fn named_registry(&self, name: &str, ns: Option<&str>) -> Option<(String, String)> {
        if let Some(ns) = ns {
            return (!self.mirror.names_self(ns)).then(|| (ns.to_owned(), name.to_owned()));
        }
        let (first, rest) = wharf_model::reference::split_registry_host(name)?;
        Some((first.to_owned(), rest.to_owned()))
    }

    /// A write naming registry `host` that no push route covers.
    fn unrouted(&self, host: &str, remote: &str) -> RegistryError {
        match &self.push {
            Some(p) => p.unrouted(host, remote),
            None => RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "a push to {remote} on {host} through wharf needs a [[push]] route for it in \
                     wharf's config (see examples/ci/), or push to a local repository name"
                ),
            ),
        }
    }

    /// A blob now in `repo`: a push route starts sending it upstream.
    fn blob_linked(&self, repo: &RepoName, d: &wharf_model::digest::Digest, size: u64) {
        if let Some(p) = &self.push {
            p.blob_committed(repo.as_str(), d, size);
        }
    }

    fn require_delete(&self) -> Result<()> {
        if self.cfg.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::new(
                ErrorCode::Unsupported,
                "deletes are disabled on this registry; set registry.delete_enabled = true (or \
                 WHARF_DELETE_ENABLED=true) to allow them",
            ))
        }
    }

    /// Drops expired upload sessions and partial writes nothing owns, never a transfer in progress
    /// (see `uploads::purge`); returns how many it removed, and logs each.
    pub async fn purge_uploads(&self) -> Result<usize> {
        let p = self.purge().await?;
        Ok(p.sessions + p.ingests)
    }

    /// `purge_uploads` with the whole account.
    pub async fn purge_uploads_report(&self) -> Result<Purged> {
        self.purge().await
    }

    /// How often the server runs `purge_uploads`.
    pub fn upload_purge_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cfg.upload_purge_secs.max(1))
    }
}

/// What a request does, for the access phase: the operation and the tag or digest it names.
fn operation(route: &Route, method: &Method) -> Option<(Operation, Option<String>)> {
    Some(match (route, method) {
        (Route::Base, _) => return None,
        (Route::Blob(_, d), &Method::DELETE) => (Operation::Delete, Some(d.to_string())),
        (Route::Blob(_, d), _) => (Operation::Pull, Some(d.to_string())),
        (Route::UploadStart(_) | Route::Upload(..), _) => (Operation::Push, None),
        (Route::Manifest(_, r), &Method::PUT) => (Operation::Push, Some(r.to_string())),
        (Route::Manifest(_, r), &Method::DELETE) => (Operation::Delete, Some(r.to_string())),
        (Route::Manifest(_, r), _) => (Operation::Pull, Some(r.to_string())),
        (Route::Tags(_), _) => (Operation::List, None),
        (Route::Referrers(_, d), _) => (Operation::Pull, Some(d.to_string())),
    })
}
