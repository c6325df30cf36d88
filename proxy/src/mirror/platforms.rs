//! Platform selection: which platforms of a mirrored image wharf fetches, and what a tag then serves.
//!
//! The chosen set of an index is the config's (`platforms` on the `[[upstream]]`, else `[mirror]`)
//! intersected with the platform plugins' choice. The other platforms' child manifests are never
//! requested upstream (404 `MANIFEST_UNKNOWN`, naming the policy), and a blob is fetched only when a
//! kept manifest of the same cache repository references it (404 `BLOB_UNKNOWN` otherwise): blobs
//! carry no platform, so the only way to know one belongs to a kept platform is a manifest that names it.
//!
//! `platform_mode = "sparse"` serves the original index (its digest verifies; the left-out children
//! answer 404); `"rewritten"` serves a reduced index listing only the kept platforms, stored as content
//! of its own (through `Policy::derived`, as plugin rewrites are) with the mapping original → reduced
//! in the metadata and as the annotation `dev.wharf.reduced-from`.
//!
//! An image manifest no index of the cache repository lists (a single-platform image, by tag or by
//! digest) is judged by its config's platform against the same chosen set (`image.rs`): kept, its
//! blobs may be fetched; left out, the manifest request itself is refused with the same 404 as an
//! unchosen child, by tag (`GET` and `HEAD`) and by digest alike, and none of its layers is fetched.
//! Without a `platforms` setting and without a platform plugin none of this runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use bytes::Bytes;

use wharf_model::digest::Digest;
use wharf_model::manifest::{self, Kind};
use wharf_model::platform::Platform;
use wharf_model::request::RequestCtx;
use wharf_policy::plugin::{PluginSet, Rewritten};
use wharf_policy::policy::{Policy, Repo};
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_storage::meta::ManifestRecord;

use super::target::Target;
use wharf_model::platform::chosen_key;
use wharf_model::platform::entries;
use wharf_model::platform::reduce;
use wharf_model::platform::Entry;
use wharf_model::platform::PlatformMode;

mod decisions;
mod image;
mod state;

use decisions::{LeftOut, PlatformFrom, Selection};
use state::Configured;
pub use state::PlatformPolicy;

/// How long the lease over building a reduced index lasts unless released: building takes a store
/// write and two metadata commits, so this only matters when a crash leaves the lease behind.
const REDUCE_LEASE: std::time::Duration = std::time::Duration::from_secs(600);

impl PlatformPolicy {
    fn configured(&self, t: &Target) -> Option<&Configured> {
        match self.per_upstream.get(&t.upstream.host) {
            Some(own) => own.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// Whether any platform policy applies to `t`: a `platforms` setting, or a platform plugin. When
    /// not, the mirror works as if this module did not exist.
    pub fn active(&self, t: &Target, policy: &Policy) -> bool {
        self.configured(t).is_some() || policy.plugins().selects_platforms()
    }

    /// What a tag naming manifest `d` serves: `d` itself, unless it is an index and the mode is
    /// `rewritten`, then the index reduced to the chosen platforms. Records the index's children on
    /// the way, so later requests for them are judged. An image manifest is judged itself: a tag must
    /// not answer 200 for a manifest its digest then refuses (containerd loops on that).
    pub async fn tag_manifest(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        d: Digest,
        rec: ManifestRecord,
    ) -> Result<(Digest, ManifestRecord)> {
        match manifest::kind_of(&rec.media_type) {
            Some(Kind::Index) => {}
            Some(Kind::Image) => {
                self.judge_image(t, ctx, policy, &d, &rec).await?;
                return Ok((d, rec));
            }
            None => return Ok((d, rec)),
        }
        let mut sel = self
            .selection(t, ctx.clone(), policy, &d, Some(&rec))
            .await?;
        if let Some((served, _)) = &sel.served {
            // Collected since it was built (the original lost every tag for longer than the grace
            // window): build it again rather than serve a digest that is gone.
            if self.meta.manifest(&t.cache, served).await?.is_none() {
                self.known.remove(&(t.cache.clone(), d.clone()));
                sel = self.selection(t, ctx, policy, &d, Some(&rec)).await?;
            }
        }
        match (&sel.served, self.mode) {
            (Some(served), _) => Ok(served.clone()),
            (None, PlatformMode::Rewritten) if sel.kept.is_empty() => {
                Err(self.nothing_kept(t, &d, &sel, policy))
            }
            (None, _) => Ok((d, rec)),
        }
    }

    /// Before a child manifest `d` the cache does not hold is fetched: 404 when an index of the cache
    /// repository lists it for a platform the policy leaves out.
    pub async fn check_child(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        d: &Digest,
    ) -> Result<()> {
        let Some((index, rec)) = self.listing_index(t, d).await? else {
            return Ok(());
        };
        let sel = self.selection(t, ctx, policy, &index, Some(&rec)).await?;
        match sel.left_out.get(d) {
            None => Ok(()),
            Some((platform, why)) => Err(self.left_out_error(
                t,
                d,
                &PlatformFrom::Index(index),
                platform.as_ref(),
                why,
                policy,
            )),
        }
    }

    /// An index cached for `t`'s repository that lists manifest `d`, with its record. One whose
    /// record is gone (collected) no longer speaks for its children: they are judged as if unlisted.
    async fn listing_index(
        &self,
        t: &Target,
        d: &Digest,
    ) -> Result<Option<(Digest, ManifestRecord)>> {
        let Some(index) = self.meta.index_listing(&t.cache, d).await? else {
            return Ok(None);
        };
        Ok(self
            .meta
            .manifest(&t.cache, &index)
            .await?
            .map(|rec| (index, rec)))
    }

    /// Before manifest `d`, cached for `t`, is served by digest under an active policy: an index's
    /// children are recorded (so they are judged when asked for); an image manifest is judged (by the
    /// index that lists it, else by its config), and its blobs may be fetched once kept.
    pub async fn check_manifest(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        d: &Digest,
        rec: &ManifestRecord,
    ) -> Result<()> {
        match manifest::kind_of(&rec.media_type) {
            Some(Kind::Index) => {
                self.selection(t, ctx, policy, d, Some(rec)).await?;
            }
            Some(Kind::Image) => self.judge_image(t, ctx, policy, d, rec).await?,
            None => {}
        }
        Ok(())
    }

    /// Before blob `d`, which the cache repository does not link, is asked of the upstream: a kept
    /// manifest of the repository must reference it.
    pub async fn check_blob(&self, t: &Target, policy: &Policy, d: &Digest) -> Result<()> {
        if self.meta.blob_allowed(&t.cache, d).await? {
            return Ok(());
        }
        Err(RegistryError::new(
            ErrorCode::BlobUnknown,
            format!(
                "blob {d} of {} on {} belongs to no platform wharf's platform policy keeps ({}): no \
                 manifest of a kept platform that wharf has cached for this repository references it, \
                 so wharf does not fetch it upstream; pull a kept platform's manifest first, or add \
                 the platform to that policy",
                t.remote,
                t.upstream.host,
                self.describe(t, policy)
            ),
        ))
    }

    /// The selection for index `d` in `t`'s cache repository: remembered, else made (and the children
    /// recorded, the kept ones' blobs allowed, the reduced index built in rewritten mode).
    async fn selection(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        d: &Digest,
        rec: Option<&ManifestRecord>,
    ) -> Result<Arc<Selection>> {
        let plugins = Arc::downgrade(&policy.plugins().set());
        let key = (t.cache.clone(), d.clone());
        if let Some(sel) = self.known.get(&key) {
            if Weak::ptr_eq(&sel.plugins, &plugins) {
                return Ok(sel.clone());
            }
        }
        let limit = rec.map_or(self.max_manifest, |r| r.size);
        let bytes = self.store.read_all(d, limit).await?;
        let listed = entries(&bytes).map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("cached index {d} of {} cannot be read: {e}", t.cache),
            )
        })?;
        self.meta
            .record_index_children(
                &t.cache,
                d,
                listed.iter().map(|e| e.digest.clone()).collect(),
            )
            .await?;
        // A child judged before its index was known (by its config) is judged by the index from now on.
        for e in &listed {
            self.images.remove(&(t.cache.clone(), e.digest.clone()));
        }
        let mut sel = self.choose(t, ctx, policy, &listed, plugins).await;
        for child in &sel.kept {
            if let Some(r) = self.meta.manifest(&t.cache, child).await? {
                if manifest::kind_of(&r.media_type) == Some(Kind::Image) {
                    self.allow_blobs_of(&t.cache, child, r.size).await?;
                }
            }
        }
        if self.mode == PlatformMode::Rewritten && !sel.left_out.is_empty() && !sel.kept.is_empty()
        {
            sel.served = Some(self.reduced(t, policy, d, rec, &bytes, &sel).await?);
        }
        let sel = Arc::new(sel);
        self.known.insert(key, sel.clone());
        Ok(sel)
    }

    /// Config first, then the plugins, over what the config kept.
    async fn choose(
        &self,
        t: &Target,
        ctx: RequestCtx,
        policy: &Policy,
        listed: &[Entry],
        plugins: Weak<PluginSet>,
    ) -> Selection {
        let configured = self.configured(t);
        let by_config =
            |p: &Platform| configured.is_none_or(|c| c.specs.iter().any(|s| s.matches(p)));
        let mut available: Vec<Platform> = Vec::new();
        for p in listed.iter().filter_map(|e| e.platform.as_ref()) {
            if by_config(p) && !available.contains(p) {
                available.push(p.clone());
            }
        }
        let chosen = if policy.plugins().selects_platforms() {
            policy.plugins().platforms(ctx, available).await
        } else {
            available
        };
        let mut kept = Vec::new();
        let mut left_out = HashMap::new();
        for e in listed {
            let why = match &e.platform {
                None => Some(LeftOut::NoPlatform),
                Some(p) if !by_config(p) => Some(LeftOut::Config),
                Some(p) if !chosen.contains(p) => Some(LeftOut::Plugins),
                Some(_) => None,
            };
            match why {
                None => kept.push(e.digest.clone()),
                Some(why) => {
                    left_out.insert(e.digest.clone(), (e.platform.clone(), why));
                }
            }
        }
        // An index may list one child twice (for two platforms): kept once kept at all.
        let kept_set: HashSet<&Digest> = kept.iter().collect();
        left_out.retain(|d, _| !kept_set.contains(d));
        Selection {
            chosen,
            kept,
            left_out,
            served: None,
            plugins,
        }
    }

    /// The reduced index of `d`, stored and recorded for the cache repository (once per original and
    /// chosen set, through `Policy::derived`, which keeps the mapping for the collector).
    async fn reduced(
        &self,
        t: &Target,
        policy: &Policy,
        d: &Digest,
        rec: Option<&ManifestRecord>,
        bytes: &Bytes,
        sel: &Selection,
    ) -> Result<(Digest, ManifestRecord)> {
        let rec = match rec {
            Some(r) => r.clone(),
            None => match self.meta.manifest(&t.cache, d).await? {
                Some(r) => r,
                None => {
                    return Err(RegistryError::new(
                        ErrorCode::ManifestUnknown,
                        format!("index {d} is not recorded for {}", t.cache),
                    ))
                }
            },
        };
        let reduced = reduce(d, bytes, &sel.chosen).map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!(
                    "cannot reduce index {d} of {} to its kept platforms: {e}",
                    t.cache
                ),
            )
        })?;
        let key = chosen_key(&sel.chosen);
        let out = Bytes::from(reduced);
        // Until the mapping original → reduced is recorded, no tag reaches the reduced index (nor,
        // through it, the kept children): one lease holds them all from before its first byte is
        // written until then. The nerdctl push bug was a reduced image collected in that gap.
        let lease = self
            .leases
            .acquire(&format!("reduce {}@{d}", t.cache), REDUCE_LEASE)
            .await?;
        let mut held = vec![d.clone(), Digest::sha256_of(&out)];
        held.extend(sel.kept.iter().cloned());
        lease.protect(&held).await?;
        let served = policy
            .derived(
                Repo::Mirror(&t.cache),
                d.clone(),
                rec,
                key,
                "index reduced to the platforms the policy keeps",
                move |_, _, _| async move { Ok(Rewritten::made(out)) },
            )
            .await
            .map_err(RegistryError::from);
        if let Err(e) = lease.release().await {
            tracing::warn!(repo = %t.cache, original = %d, error = %e, "cannot release the lease over a reduced index; it expires on its own");
        }
        served
    }

    /// Records the config and layers of image manifest `d` (cached for `repo`) as fetchable.
    async fn allow_blobs_of(&self, repo: &str, d: &Digest, size: u64) -> Result<()> {
        let bytes = self.store.read_all(d, size).await?;
        let Ok(m) = manifest::parse(None, &bytes) else {
            return Ok(());
        };
        let blobs = m.blobs.into_iter().map(|(b, _)| b).collect();
        self.meta.allow_blobs(repo, d, blobs).await?;
        Ok(())
    }

    /// The policy for `t` in words: the setting and the plugins.
    fn describe(&self, t: &Target, policy: &Policy) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.configured(t) {
            parts.push(c.setting.clone());
        }
        let plugins = policy.plugins().platform_plugins();
        if !plugins.is_empty() {
            parts.push(format!("platform plugin {}", plugins.join(", ")));
        }
        parts.join(" and ")
    }

    fn left_out_error(
        &self,
        t: &Target,
        d: &Digest,
        from: &PlatformFrom,
        platform: Option<&Platform>,
        why: &LeftOut,
        policy: &Policy,
    ) -> RegistryError {
        let what = match (from, platform) {
            (PlatformFrom::Index(index), Some(p)) => format!("the {p} manifest of index {index}"),
            (PlatformFrom::Index(index), None) => {
                format!("a manifest without a platform in index {index}")
            }
            (PlatformFrom::Config(config), Some(p)) => {
                format!("a single-platform image for {p} (so its config {config} says)")
            }
            (PlatformFrom::Config(config), None) => format!(
                "an image whose config {config} names no platform (it is not JSON, or has no os \
                 and architecture)"
            ),
        };
        let (by, fix) = match (why, self.configured(t)) {
            (LeftOut::Config, Some(c)) => (
                c.setting.clone(),
                match platform {
                    Some(p) => format!("add \"{p}\" to {} to mirror it", c.key),
                    None => format!("change {}", c.key),
                },
            ),
            (LeftOut::Plugins, _) | (LeftOut::Config, None) => (
                format!(
                    "platform plugin {}",
                    policy.plugins().platform_plugins().join(", ")
                ),
                "change that plugin's config to keep it".to_owned(),
            ),
            (LeftOut::NoPlatform, _) => (
                self.describe(t, policy),
                match from {
                    PlatformFrom::Index(_) => {
                        "only entries that name a platform can be kept".into()
                    }
                    PlatformFrom::Config(_) => "only images whose config names a platform can \
                        be kept; pull it from the upstream directly, or mirror that upstream \
                        without a platform policy"
                        .into(),
                },
            ),
        };
        let fetched = match from {
            PlatformFrom::Index(_) => "it",
            PlatformFrom::Config(_) => "its layers",
        };
        RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {d} is {what} in {} on {}, a platform left out by {by}; wharf does not \
                 fetch {fetched} ({fix})",
                t.remote, t.upstream.host
            ),
        )
    }

    fn nothing_kept(
        &self,
        t: &Target,
        d: &Digest,
        sel: &Selection,
        policy: &Policy,
    ) -> RegistryError {
        let offered: Vec<String> = sel
            .left_out
            .values()
            .filter_map(|(p, _)| p.as_ref().map(ToString::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "index {d} of {} on {} offers {}, none of which wharf's platform policy ({}) keeps, \
                 so platform_mode = \"rewritten\" has nothing to serve; add one of them to that policy",
                t.remote,
                t.upstream.host,
                offered.join(", "),
                self.describe(t, policy)
            ),
        )
    }
}

#[cfg(test)]
mod tests;
