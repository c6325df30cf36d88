//! Referrers through the mirror: the upstream's referrers API (every page) or, where it has none, the
//! spec's `sha256-<hex>` tag index; cached in meta like a tag, revalidated after `tag_ttl_secs`,
//! served stale when the upstream fails.

use bytes::Bytes;
use http::header::{ACCEPT, LINK, WARNING};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::fetch::{read_limited, Fetcher};
use super::state::Mirror;
use super::target::{stale, Failure, Target};
use wharf_model::clock::unix_now;
use wharf_model::digest::Digest;
use wharf_model::manifest;
use wharf_model::manifest::Descriptor;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, Result};

/// Referrers of a subject as the mirror knows them, and the `Warning` to add when they come from the
/// cache because the upstream failed.
pub struct MirroredReferrers {
    pub list: Vec<Descriptor>,
    pub warning: Option<HeaderValue>,
}

/// At most this many pages of an upstream's paginated referrers list are followed.
const MAX_REFERRER_PAGES: usize = 64;

impl Mirror {
    /// The referrers of `subject` in the target's upstream repository (signatures, SBOMs,
    /// attestations): the upstream's referrers API, or the spec's `sha256-<hex>` tag schema when it
    /// has none. Cached like a tag: revalidated after `mirror.tag_ttl_secs`, served stale when the
    /// upstream fails. The referrer manifests and their blobs are then pulled by digest through the
    /// mirror as any other content.
    pub async fn referrers(&self, t: &Target, subject: &Digest) -> Result<MirroredReferrers> {
        let meta = &self.fetcher.meta;
        let cached = match meta.mirrored_referrers(&t.cache, subject).await? {
            Some((index, checked)) => self
                .fetcher
                .cached_referrers(&index)
                .await
                .map(|list| (list, checked)),
            None => None,
        };
        if let Some((list, checked)) = &cached {
            if unix_now().saturating_sub(*checked) < self.cfg.tag_ttl_secs {
                return Ok(MirroredReferrers {
                    list: list.clone(),
                    warning: None,
                });
            }
        }
        let key = format!("{}|{}|{subject}", t.upstream.host, t.remote);
        let (fetcher, t2, s2) = (self.fetcher.clone(), t.clone(), subject.clone());
        let res = self
            .referrer_flights
            .run(key, move || async move {
                fetcher.refresh_referrers(&t2, &s2).await
            })
            .await
            .unwrap_or_else(|| Err(Failure::Unavailable("fetch task failed".into())));
        match (res, cached) {
            (Ok(list), _) => Ok(MirroredReferrers {
                list,
                warning: None,
            }),
            (Err(f), Some((list, _))) if f.allows_stale() && self.cfg.stale_if_error => {
                tracing::warn!(
                    upstream = %t.upstream.host, repo = %t.remote, %subject, error = ?f,
                    "upstream failed; serving the cached referrers (mirror.stale_if_error)"
                );
                Ok(MirroredReferrers {
                    list,
                    warning: stale(Response::new(Body::Empty), t)
                        .headers()
                        .get(WARNING)
                        .cloned(),
                })
            }
            (Err(f), _) => Err(f.into_error(ErrorCode::ManifestUnknown)),
        }
    }
}

impl Fetcher {
    async fn cached_referrers(&self, index: &Digest) -> Option<Vec<Descriptor>> {
        let bytes = self.store.read_all(index, self.max_manifest).await.ok()?;
        index_entries(&bytes).ok()
    }

    /// Asks the upstream for the referrers of `subject`, caches the list as an OCI index in the
    /// content store, and records it for the cache repository.
    async fn refresh_referrers(
        &self,
        t: &Target,
        subject: &Digest,
    ) -> std::result::Result<Vec<Descriptor>, Failure> {
        let list = match self.referrers_api(t, subject).await? {
            Some(list) => list,
            None => self.referrers_tag(t, subject).await?,
        };
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": list,
        }))
        .expect("plain JSON");
        let digest = Digest::sha256_of(&index);
        let cache_err = |e: String| Failure::Unavailable(format!("cannot cache referrers: {e}"));
        self.store
            .put(&digest, Bytes::from(index))
            .await
            .map_err(|e| cache_err(e.to_string()))?;
        self.meta
            .mirror_referrers(&t.cache, subject, &digest, unix_now())
            .await
            .map_err(|e| cache_err(e.to_string()))?;
        Ok(list)
    }

    /// The upstream's referrers API, every page of it; `None` when the upstream has no such API
    /// (a 404: the spec's signal to fall back to the tag schema).
    async fn referrers_api(
        &self,
        t: &Target,
        subject: &Digest,
    ) -> std::result::Result<Option<Vec<Descriptor>>, Failure> {
        let mut accept = HeaderMap::new();
        accept.insert(ACCEPT, HeaderValue::from_static(manifest::OCI_INDEX));
        let mut path = format!("/v2/{}/referrers/{subject}", t.remote);
        let mut list = Vec::new();
        for page in 0..MAX_REFERRER_PAGES {
            let resp = t
                .upstream
                .send(Method::GET, &path, &accept, &t.scope())
                .await?;
            let what = format!("referrers of {subject}");
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if page == 0 => return Ok(None),
                _ => return Err(Failure::from_response(&resp, t, &what)),
            }
            let next = next_link(resp.headers());
            let body = read_limited(
                resp.into_body(),
                self.max_manifest as usize,
                t.upstream.timeout,
            )
            .await
            .map_err(|e| {
                Failure::Unavailable(format!("upstream {} {what}: {e}", t.upstream.host))
            })?;
            let entries = index_entries(&body).map_err(|e| {
                Failure::Unavailable(format!(
                    "upstream {} sent an unreadable referrers index for {subject}: {e}",
                    t.upstream.host
                ))
            })?;
            list.extend(entries);
            match next {
                Some(p) => path = p,
                None => return Ok(Some(list)),
            }
        }
        tracing::warn!(upstream = %t.upstream.host, repo = %t.remote, %subject, pages = MAX_REFERRER_PAGES, "referrers list cut at the page limit");
        Ok(Some(list))
    }

    /// The spec's fallback for registries without the referrers API: an index tagged
    /// `<alg>-<hex>` lists the referrers. No such tag means no referrers.
    async fn referrers_tag(
        &self,
        t: &Target,
        subject: &Digest,
    ) -> std::result::Result<Vec<Descriptor>, Failure> {
        let tag = format!("{}-{}", subject.algorithm().as_str(), subject.hex());
        let mut accept = HeaderMap::new();
        accept.insert(ACCEPT, HeaderValue::from_static(manifest::OCI_INDEX));
        let f = match self.get(t, &tag, None, &accept).await {
            Ok(f) => f,
            Err(Failure::NotFound(_)) => return Ok(Vec::new()),
            Err(f) => return Err(f),
        };
        let bytes = self
            .store
            .read_all(&f.digest, self.max_manifest)
            .await
            .map_err(|e| {
                Failure::Unavailable(format!("cannot read the cached referrers tag: {e}"))
            })?;
        index_entries(&bytes).map_err(|e| {
            Failure::Unavailable(format!(
                "upstream {} tag {tag} is not a readable referrers index: {e}",
                t.upstream.host
            ))
        })
    }
}

/// The `manifests` of an OCI index, as referrer descriptors.
fn index_entries(bytes: &[u8]) -> std::result::Result<Vec<Descriptor>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    serde_json::from_slice::<Index>(bytes).map(|i| i.manifests)
}

/// The path and query of a `Link: <...>; rel="next"` header (relative or absolute URL).
fn next_link(h: &HeaderMap) -> Option<String> {
    h.get_all(LINK).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (url, params) = v.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        let path = match url.find("://") {
            Some(i) => &url[i + 3..][url[i + 3..].find('/')?..],
            None => url,
        };
        path.starts_with("/v2/").then(|| path.to_owned())
    })
}
