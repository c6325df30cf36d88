//! The pull-through mirror: answers reads for upstream registries from the one content store, fetching
//! what is missing.
//!
//! Which upstream a request means (all three forms work at once):
//! 1. containerd's `?ns=<registry host>` on every request;
//! 2. a path prefix, `/v2/<host or prefix>/<repo>/...` (podman/skopeo `registries.conf` mirrors);
//! 3. no host at all (Docker's `registry-mirrors`): `mirror.default_upstream`, but only for names that
//!    are not repositories pushed to wharf; official images map `alpine` → `library/alpine`.
//!
//! Content is cached under `<host>/<repo>` in the metadata (which records where it came from) and stored
//! once by digest in the content store, shared with everything else. Manifests by digest are immutable
//! and cached for good; tags are revalidated with an upstream `HEAD` after `tag_ttl_secs`, and served
//! stale (with a `Warning`) when the upstream fails. Concurrent misses make one upstream request:
//! manifests through `Flights`, blobs through `Fills` (streamed to every client as they arrive).

use std::sync::Arc;

use http::header::{ACCEPT, LINK};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use wharf_metrics::Lookup;
use wharf_model::clock::unix_now;
use wharf_model::digest::Digest;
use wharf_model::reference::Reference;
use wharf_model::request::{Operation, RequestCtx};
use wharf_policy::policy::{Policy, Repo};
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, Result};
use wharf_protocol::respond::{accepts, not_acceptable, tag_list, tag_page};
use wharf_protocol::respond::{json_response, manifest_response};
use wharf_protocol::upstream::Upstream;
use wharf_storage::meta::ManifestRecord;

mod blobs;
mod fetch;
pub mod platforms;
mod referrers;
mod state;
mod target;

use fetch::{read_limited, Fetched};
pub use referrers::MirroredReferrers;
pub use state::{upstreams, Mirror};
pub use target::Target;
use target::{stale, Failure};

/// What clients accept when they do not say: every manifest type, so the upstream never converts.
const DEFAULT_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const MAX_TAG_LIST: usize = 4 * 1024 * 1024;

/// How many unconfigured hosts are remembered (and logged): clients choose `ns=`, so the set is bounded.
const MAX_UNCONFIGURED_SEEN: usize = 256;

impl Mirror {
    fn target(up: &Arc<Upstream>, remote: &str) -> Target {
        // Docker Hub's official images live under library/; clients often leave it out.
        let remote = if up.host == "docker.io" && !remote.contains('/') {
            format!("library/{remote}")
        } else {
            remote.to_owned()
        };
        Target {
            upstream: up.clone(),
            cache: format!("{}/{remote}", up.host),
            remote,
        }
    }

    /// The upstream a request names explicitly, by `ns=` or by path prefix. An `ns` that names no
    /// configured upstream (wharf's own address, say) means a local request.
    pub fn explicit(&self, name: &str, ns: Option<&str>) -> Option<Target> {
        if let Some(ns) = ns {
            let u = self.upstreams.iter().find(|u| u.host == ns)?;
            // containerd with a `hosts.toml` server path (`http://wharf/v2/<prefix>`,
            // `override_path = true`) sends the prefix and `ns=` both: the prefix is not part of the
            // upstream's repository name.
            let name = match name.split_once('/') {
                Some((first, rest)) if first == u.prefix || first == u.host => rest,
                _ => name,
            };
            return Some(Self::target(u, name));
        }
        let (first, rest) = name.split_once('/')?;
        self.upstreams
            .iter()
            .find(|u| u.prefix == first || u.host == first)
            .map(|u| Self::target(u, rest))
    }

    /// Whether `ns` names wharf itself (containerd pushing to `localhost:<wharf's port>`).
    pub fn names_self(&self, ns: &str) -> bool {
        ns.rsplit_once(':').is_some_and(|(name, port)| {
            port.parse() == Ok(self.own_port)
                && matches!(name, "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0")
        })
    }

    /// The registry host a request names (containerd's `ns=`, or a path prefix that looks like a host)
    /// when no `[[upstream]]` configures it. Such requests are served from wharf's own repositories
    /// (containerd pushes carry `ns=` too); the host is logged once, and a 404 names the fix.
    pub fn unconfigured(&self, name: &str, ns: Option<&str>) -> Option<String> {
        let host = match ns {
            Some(h) => {
                if self.names_self(h) || self.upstreams.iter().any(|u| u.host == h) {
                    return None;
                }
                h
            }
            None => {
                let (first, _) = wharf_model::reference::split_registry_host(name)?;
                if self.explicit(name, None).is_some() {
                    return None;
                }
                first
            }
        };
        if self.unconfigured_seen.len() < MAX_UNCONFIGURED_SEEN
            && self.unconfigured_seen.insert(host.to_owned(), ()).is_none()
        {
            tracing::info!(
                host,
                "requests name {host}, which is not a configured upstream: serving them from wharf's \
                 own repositories only (add an [[upstream]] with host = \"{host}\" to mirror it)"
            );
        }
        Some(host.to_owned())
    }

    /// Whether host-less names may be the default upstream's (`mirror.default_upstream` is set).
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The default upstream's target for a name without a host (Docker's `registry-mirrors`).
    pub fn default_target(&self, name: &str) -> Option<Target> {
        self.default.as_ref().map(|u| Self::target(u, name))
    }

    /// Whether the cache holds anything of `t` (a blob request without a host is only mirrored then:
    /// clients fetch the manifest first, and pushes probing for blobs must stay local).
    pub async fn has_cached(&self, t: &Target) -> Result<bool> {
        Ok(self.fetcher.meta.repo_exists(&t.cache).await?)
    }

    /// A manifest of `t` served by `reference` (a tag, or a digest): a use of the tags it names, as
    /// `wharf images`, `wharf status`, the status page and the cache quota count it (`meta::LastUse`).
    fn pulled(&self, t: &Target, reference: &str) {
        self.fetcher.meta.pulled(&t.cache, reference);
    }

    /// Writes the last uses noted since the previous flush (local pulls included: they are noted in
    /// the same place).
    pub async fn flush_usage(&self) -> Result<()> {
        self.fetcher.meta.flush_uses().await?;
        Ok(())
    }

    pub async fn manifest<B>(
        &self,
        t: &Target,
        r: &Reference,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let head = req.method() == Method::HEAD;
        let accept = forward_accept(req.headers());
        let meta = &self.fetcher.meta;
        let store = &*self.fetcher.store;
        match r {
            Reference::Digest(d) => {
                // The platform policy judges a manifest before the upstream is asked for it, and
                // before it is served: a hit may be one a tag of its repository left out.
                let judged = self.platforms.active(t, &self.policy).then(|| {
                    Policy::context(
                        Operation::Pull,
                        Some(&t.upstream.host),
                        &t.remote,
                        Some(d.to_string()),
                        req,
                    )
                });
                let f = match meta.manifest(&t.cache, d).await? {
                    Some(rec) => {
                        wharf_metrics::cache_hit(Lookup::Manifest, req.method(), rec.size);
                        Fetched {
                            digest: d.clone(),
                            record: rec,
                        }
                    }
                    None => {
                        wharf_metrics::cache_miss(Lookup::Manifest);
                        if let Some(ctx) = &judged {
                            self.platforms
                                .check_child(t, ctx.clone(), &self.policy, d)
                                .await?;
                        }
                        let key = format!("{}|{}|{d}", t.upstream.host, t.remote);
                        let (fetcher, t2, d2) = (self.fetcher.clone(), t.clone(), d.clone());
                        let f = self
                            .flights
                            .run(key, move || async move {
                                fetcher.by_digest(&t2, &d2, &accept).await
                            })
                            .await
                            .unwrap_or_else(|| {
                                Err(Failure::Unavailable("fetch task failed".into()))
                            })
                            .map_err(|f| f.into_error(ErrorCode::ManifestUnknown))?;
                        f
                    }
                };
                if let Some(ctx) = judged {
                    self.platforms
                        .check_manifest(t, ctx, &self.policy, &f.digest, &f.record)
                        .await?;
                }
                if !accepts(req.headers(), &f.record.media_type) {
                    return Err(not_acceptable(&t.cache, r, &f.record.media_type));
                }
                self.pulled(t, &d.to_string());
                manifest_response(store, &f.digest, &f.record, head).await
            }
            Reference::Tag(tag) => {
                let cached = match meta.tag(&t.cache, tag.as_str()).await? {
                    Some(d) => meta.manifest(&t.cache, &d).await?.map(|rec| Fetched {
                        digest: d,
                        record: rec,
                    }),
                    None => None,
                };
                let usable = cached
                    .as_ref()
                    .filter(|c| accepts(req.headers(), &c.record.media_type));
                let ctx = Policy::context(
                    Operation::Pull,
                    Some(&t.upstream.host),
                    &t.remote,
                    Some(tag.to_string()),
                    req,
                );
                if let Some(c) = usable {
                    let checked = meta.tag_checked(&t.cache, tag.as_str()).await?.unwrap_or(0);
                    if unix_now().saturating_sub(checked) < self.cfg.tag_ttl_secs {
                        self.pulled(t, tag.as_str());
                        wharf_metrics::cache_hit(Lookup::Manifest, req.method(), c.record.size);
                        if !self.policy.rewrites() && !self.platforms.active(t, &self.policy) {
                            return manifest_response(store, &c.digest, &c.record, head).await;
                        }
                        let (d, rec) = self
                            .tag_serves(t, ctx, c.digest.clone(), c.record.clone())
                            .await?;
                        return manifest_response(store, &d, &rec, head).await;
                    }
                }
                let accept_key = accept
                    .get_all(ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(",");
                let key = format!("{}|{}|{tag}|{accept_key}", t.upstream.host, t.remote);
                wharf_metrics::cache_miss(Lookup::Manifest);
                let (fetcher, t2, tag2) = (self.fetcher.clone(), t.clone(), tag.to_string());
                let res = self
                    .flights
                    .run(key, move || async move {
                        fetcher.refresh_tag(&t2, &tag2, &accept).await
                    })
                    .await
                    .unwrap_or_else(|| Err(Failure::Unavailable("fetch task failed".into())));
                match (res, usable) {
                    (Ok(f), _) => {
                        if !accepts(req.headers(), &f.record.media_type) {
                            return Err(not_acceptable(&t.cache, r, &f.record.media_type));
                        }
                        self.pulled(t, tag.as_str());
                        let (d, rec) = self.tag_serves(t, ctx, f.digest, f.record).await?;
                        manifest_response(store, &d, &rec, head).await
                    }
                    (Err(f), Some(c)) if f.allows_stale() && self.cfg.stale_if_error => {
                        tracing::warn!(
                            upstream = %t.upstream.host, repo = %t.remote, %tag, error = ?f,
                            "upstream failed; serving the cached tag (mirror.stale_if_error)"
                        );
                        self.pulled(t, tag.as_str());
                        let (d, rec) = self
                            .tag_serves(t, ctx, c.digest.clone(), c.record.clone())
                            .await?;
                        let resp = manifest_response(store, &d, &rec, head).await?;
                        Ok(stale(resp, t))
                    }
                    (Err(f), _) => Err(f.into_error(ErrorCode::ManifestUnknown)),
                }
            }
        }
    }

    /// What a tag naming manifest `d` serves: the platform policy's choice (the original, or the
    /// reduced index), then the rewriting plugins'.
    async fn tag_serves(
        &self,
        t: &Target,
        ctx: RequestCtx,
        d: Digest,
        rec: ManifestRecord,
    ) -> Result<(Digest, ManifestRecord)> {
        let (d, rec) = if self.platforms.active(t, &self.policy) {
            self.platforms
                .tag_manifest(t, ctx.clone(), &self.policy, d, rec)
                .await?
        } else {
            (d, rec)
        };
        self.policy
            .tag_manifest(Repo::Mirror(&t.cache), ctx, d, rec)
            .await
    }

    /// The upstream's tag list, passed through (tags are the upstream's to know), with its `Link`
    /// rewritten to the name the client used. When the upstream fails, the tags the cache holds for
    /// the repository (`mirror.stale_if_error`): `skopeo inspect` of a cached image keeps working.
    pub async fn tags<B>(
        &self,
        t: &Target,
        client_name: &str,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        match self.upstream_tags(t, client_name, req).await {
            Ok(resp) => Ok(resp),
            Err(f) if f.allows_stale() && self.cfg.stale_if_error => {
                let (n, last) = tag_page(req)?;
                let meta = &self.fetcher.meta;
                let (tags, more) = meta
                    .tags(&t.cache, last.as_deref(), n.unwrap_or(usize::MAX))
                    .await?;
                if tags.is_empty() && last.is_none() {
                    return Err(f.into_error(ErrorCode::NameUnknown));
                }
                tracing::warn!(
                    upstream = %t.upstream.host, repo = %t.remote, error = ?f,
                    "upstream failed; serving the cached tags (mirror.stale_if_error)"
                );
                Ok(stale(tag_list(client_name, &tags, more, n), t))
            }
            Err(f) => Err(f.into_error(ErrorCode::NameUnknown)),
        }
    }

    async fn upstream_tags<B>(
        &self,
        t: &Target,
        client_name: &str,
        req: &Request<B>,
    ) -> std::result::Result<Response<Body>, Failure> {
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let query = strip_ns(&query);
        let path = format!("/v2/{}/tags/list{query}", t.remote);
        let resp = t
            .upstream
            .send(Method::GET, &path, &HeaderMap::new(), &t.scope())
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(Failure::from_response(&resp, t, "tag list"));
        }
        let link = resp
            .headers()
            .get(LINK)
            .and_then(|l| l.to_str().ok())
            .map(|l| {
                l.replace(
                    &format!("/v2/{}/", t.remote),
                    &format!("/v2/{client_name}/"),
                )
            });
        let body = read_limited(resp.into_body(), MAX_TAG_LIST, t.upstream.timeout)
            .await
            .map_err(|e| {
                Failure::Unavailable(format!("upstream {} tag list: {e}", t.upstream.host))
            })?;
        let mut out = json_response(StatusCode::OK, body);
        if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
            out.headers_mut().insert(LINK, v);
        }
        Ok(out)
    }
}

/// The client's `Accept` values, all of them, unchanged; the manifest types if it sent none.
fn forward_accept(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for v in h.get_all(ACCEPT) {
        out.append(ACCEPT, v.clone());
    }
    if out.is_empty() {
        out.insert(ACCEPT, HeaderValue::from_static(DEFAULT_ACCEPT));
    }
    out
}

fn strip_ns(query: &str) -> String {
    let kept: Vec<&str> = query
        .trim_start_matches('?')
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("ns="))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_model::config::Config;
    use wharf_storage::lease::Touching;
    use wharf_storage::meta::Meta;

    #[test]
    fn ns_is_not_forwarded() {
        assert_eq!(strip_ns("?n=2&ns=docker.io&last=a"), "?n=2&last=a");
        assert_eq!(strip_ns("?ns=docker.io"), "");
        assert_eq!(strip_ns(""), "");
    }

    #[test]
    fn addressing() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("m.redb")).unwrap();
        let store = Touching::wrap(
            Arc::new(wharf_storage::store::FsStore::open(dir.path().join("s")).unwrap()),
            wharf_storage::lease::Leases::new(meta.clone()),
        );
        let policy = Policy::new(
            wharf_policy::plugin::Plugins::none(),
            store.clone(),
            meta.clone(),
            1 << 20,
        );
        let mut cfg = Config::default();
        let mut up = wharf_model::config::UpstreamConfig::docker_hub();
        up.host = "127.0.0.1:5001".into();
        up.endpoint = "http://127.0.0.1:5001".into();
        up.insecure = true;
        up.prefix = Some("local".into());
        cfg.upstreams.push(up);
        let m = Mirror::new(&cfg, store, meta, policy).unwrap();
        let t = m.explicit("alpine", Some("docker.io")).unwrap();
        assert_eq!(
            (t.remote.as_str(), t.cache.as_str()),
            ("library/alpine", "docker.io/library/alpine")
        );
        let t = m.explicit("docker.io/bitnami/redis", None).unwrap();
        assert_eq!(t.remote, "bitnami/redis");
        let t = m.explicit("local/team/app", None).unwrap();
        assert_eq!(
            (t.upstream.host.as_str(), t.remote.as_str()),
            ("127.0.0.1:5001", "team/app")
        );
        let t = m.explicit("team/app", Some("127.0.0.1:5001")).unwrap();
        assert_eq!(t.cache, "127.0.0.1:5001/team/app");
        // containerd with a server path in hosts.toml sends the prefix and ns= both.
        let t = m
            .explicit("local/team/app", Some("127.0.0.1:5001"))
            .unwrap();
        assert_eq!(t.remote, "team/app");
        assert!(
            m.explicit("team/app", None).is_none(),
            "no host: local or default"
        );
        assert!(
            m.explicit("team/app", Some("localhost:5000")).is_none(),
            "unknown ns: local"
        );
        assert_eq!(
            m.default_target("alpine").unwrap().cache,
            "docker.io/library/alpine"
        );
    }
}
