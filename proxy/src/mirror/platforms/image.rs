//! Image manifests under a platform policy. One that an index of the cache repository lists is judged
//! by that index (its entry names the platform). Any other, a single-platform image (by tag, or by
//! digest before any index of the repository listed it), is for the platform its config says
//! (`os`, `architecture`, `variant`), judged against the same chosen set an index child would be:
//! the configured list, then the platform plugins with that one platform as `available`.
//!
//! Only the config is fetched to learn it (a fill bounded by the size its descriptor gives, verified,
//! stored and linked like any mirrored blob); a left-out image's layers never are. A config that is
//! not JSON or names no `os` and `architecture` says no platform, so, like an index entry without
//! one, no platform policy keeps it. An artifact (a signature, an SBOM, a Helm chart: an
//! `artifactType`, or a config that is not an image config) is kept: a platform policy chooses
//! among platforms' images, and an artifact is none (the signatures of kept images must stay
//! pullable through the mirror).
//!
//! The decision is remembered per cache repository, manifest and plugin set (as an index's
//! `Selection` is), so a warm tag `HEAD` reads no config.

use std::sync::{Arc, Weak};

use serde_json::Value;

use super::decisions::{Judged, LeftOutImage, PlatformFrom};
use super::state::PlatformPolicy;
use crate::fill::{Phase, Source};
use crate::mirror::target::{Failure, Target};
use wharf_model::digest::Digest;
use wharf_model::manifest;
use wharf_model::platform::Platform;
use wharf_model::platform::{platform_of, Entry};
use wharf_model::request::RequestCtx;
use wharf_policy::plugin::PluginSet;
use wharf_policy::policy::Policy;
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_storage::meta::ManifestRecord;

/// The config media types of container images (OCI, Docker schema 2).
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The platform an image config names: its `os` and `architecture` (and `variant`, `os.version`,
/// `os.features`, the same fields an index entry's platform has); `None` when it is not JSON or
/// lacks either.
pub(super) fn config_platform(config: &[u8]) -> Option<Platform> {
    let v: Value = serde_json::from_slice(config).ok()?;
    platform_of(&v)
}

impl PlatformPolicy {
    /// Judges image manifest `d`, cached for `t`: `Ok` when the policy keeps it (its config and
    /// layers may then be fetched), else the 404 that says which platform, which setting or plugin,
    /// and the fix. Remembered, so only the first request reads the manifest and its config.
    pub(super) async fn judge_image(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        d: &Digest,
        rec: &ManifestRecord,
    ) -> Result<()> {
        let plugins = Arc::downgrade(&policy.plugins().set());
        let key = (t.cache.clone(), d.clone());
        let remembered = self
            .images
            .get(&key)
            .filter(|j| Weak::ptr_eq(&j.plugins, &plugins))
            .map(|j| j.clone());
        let judged = match remembered {
            Some(j) => j,
            None => {
                let j = Arc::new(self.judge(t, ctx, policy, d, rec, plugins).await?);
                self.images.insert(key, j.clone());
                j
            }
        };
        match &judged.left_out {
            None => Ok(()),
            Some(l) => Err(self.left_out_error(t, d, &l.from, l.platform.as_ref(), &l.why, policy)),
        }
    }

    async fn judge(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        d: &Digest,
        rec: &ManifestRecord,
        plugins: Weak<PluginSet>,
    ) -> Result<Judged> {
        let bytes = self.store.read_all(d, rec.size).await?;
        let m = manifest::parse(None, &bytes).map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("cached manifest {d} of {} cannot be read: {e}", t.cache),
            )
        })?;
        let left_out = match self.listing_index(t, d).await? {
            Some((index, index_rec)) => {
                let sel = self
                    .selection(t, ctx, policy, &index, Some(&index_rec))
                    .await?;
                sel.left_out.get(d).map(|(platform, why)| LeftOutImage {
                    platform: platform.clone(),
                    why: why.clone(),
                    from: PlatformFrom::Index(index),
                })
            }
            None if !is_image(&m) => None,
            None => {
                // An image manifest names its config first.
                let Some((config, size)) = m.blobs.first().cloned() else {
                    return Err(RegistryError::new(
                        ErrorCode::ManifestInvalid,
                        format!("cached manifest {d} of {} names no config", t.cache),
                    ));
                };
                let platform = self.config_platform(t, d, &config, size).await?;
                let entry = Entry {
                    digest: d.clone(),
                    platform,
                };
                let sel = self
                    .choose(
                        t,
                        ctx,
                        policy,
                        std::slice::from_ref(&entry),
                        plugins.clone(),
                    )
                    .await;
                sel.left_out.get(d).map(|(platform, why)| LeftOutImage {
                    platform: platform.clone(),
                    why: why.clone(),
                    from: PlatformFrom::Config(config),
                })
            }
        };
        if left_out.is_none() {
            let blobs = m.blobs.into_iter().map(|(b, _)| b).collect();
            self.meta.allow_blobs(&t.cache, d, blobs).await?;
        }
        Ok(Judged { left_out, plugins })
    }

    /// The platform config `config` (of manifest `d`, `size` bytes by its descriptor) names: read from
    /// the store, fetched into it first if it is not there.
    async fn config_platform(
        &self,
        t: &Target,
        d: &Digest,
        config: &Digest,
        size: u64,
    ) -> Result<Option<Platform>> {
        if size > self.max_manifest {
            return Err(RegistryError::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {d} of {} on {} names a config of {size} bytes, more than the {} \
                     wharf reads to learn which platform an image is for (registry.max_manifest_bytes); \
                     raise that limit to mirror it under a platform policy",
                    t.remote, t.upstream.host, self.max_manifest
                ),
            ));
        }
        if self.store.stat(config).await?.is_none() {
            let fill = self.fills.get(
                config,
                Source {
                    upstream: t.upstream.clone(),
                    remote: t.remote.clone(),
                    cache_repo: t.cache.clone(),
                    size: Some(size),
                },
            );
            let why = |e: String| {
                format!(
                    "wharf's platform policy needs config {config} of manifest {d} to know which \
                     platform the image is for, and cannot have it: {e}"
                )
            };
            match fill.finished().await.phase {
                Phase::Done => {}
                Phase::Refused {
                    status,
                    retry_after,
                    ..
                } => {
                    let mut e = Failure::from_status(
                        status,
                        retry_after.as_ref(),
                        t,
                        &format!("blob {config}"),
                    )
                    .into_error(ErrorCode::ManifestUnknown);
                    e.message = why(e.message);
                    return Err(e);
                }
                Phase::Failed(e) => {
                    let mut e =
                        Failure::Unavailable(e.to_string()).into_error(ErrorCode::ManifestUnknown);
                    e.message = why(e.message);
                    return Err(e);
                }
                Phase::Connecting | Phase::Streaming | Phase::Verified => {
                    return Err(RegistryError::new(
                        ErrorCode::Unknown,
                        why("its fill ended unexpectedly".into()),
                    ))
                }
            }
        }
        let bytes = self.store.read_all(config, size).await?;
        Ok(config_platform(&bytes))
    }
}

/// Whether a parsed image manifest is a container image (for a platform), not an artifact: its
/// referrers-API artifact type is its `artifactType`, else its config's media type.
fn is_image(m: &manifest::Manifest) -> bool {
    m.artifact_type
        .as_deref()
        .is_some_and(|t| IMAGE_CONFIGS.contains(&t))
}
