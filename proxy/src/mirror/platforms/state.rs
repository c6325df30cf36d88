//! The platform policy's state as its parts share it: the `PlatformPolicy` struct (the platforms
//! configured per upstream, what it decided per cache repository, the store it reads) and its
//! constructor.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use super::decisions::{Judged, Selection};
use crate::fill::Fills;
use wharf_model::config::{MirrorConfig, UpstreamConfig};
use wharf_model::digest::Digest;
use wharf_model::platform::{PlatformMode, PlatformSpec};
use wharf_storage::lease::{Leases, Touching};
use wharf_storage::meta::Meta;
use wharf_storage::store::ContentStore;

/// The configured platforms of one upstream, and the setting that says so (for messages).
#[derive(Debug, Clone)]
pub(super) struct Configured {
    /// Where the list is: `mirror.platforms`, or the `[[upstream]]` entry's.
    pub(super) key: String,
    /// The setting as written: `mirror.platforms = ["linux/amd64"]`.
    pub(super) setting: String,
    pub(super) specs: Vec<PlatformSpec>,
}

/// The mirror's platform policy: the configuration, and what it decided per cache repository and index.
pub struct PlatformPolicy {
    pub(super) mode: PlatformMode,
    pub(super) default: Option<Configured>,
    /// Upstream host → its own setting (`None` inside: an empty list, every platform).
    pub(super) per_upstream: HashMap<String, Option<Configured>>,
    pub(super) store: Arc<dyn ContentStore>,
    pub(super) meta: Meta,
    pub(super) max_manifest: u64,
    /// (cache repo, index digest) → the selection, once made (its children recorded in the metadata).
    pub(super) known: DashMap<(String, Digest), Arc<Selection>>,
    /// (cache repo, image manifest digest) → the decision about it, once made.
    pub(super) images: DashMap<(String, Digest), Arc<Judged>>,
    /// The mirror's fills: a single-platform image's config is fetched through them, so a client's
    /// request for the same blob joins that one upstream GET.
    pub(super) fills: Fills,
    /// Protection from the collector while a reduced index is built.
    pub(super) leases: Leases,
}

fn configured(key: String, setting: String, specs: &[PlatformSpec]) -> Option<Configured> {
    (!specs.is_empty()).then(|| Configured {
        key,
        setting,
        specs: specs.to_vec(),
    })
}

fn list(specs: &[PlatformSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PlatformPolicy {
    pub fn new(
        cfg: &MirrorConfig,
        upstreams: &[UpstreamConfig],
        store: Arc<Touching>,
        meta: Meta,
        fills: Fills,
        max_manifest: u64,
    ) -> PlatformPolicy {
        PlatformPolicy {
            mode: cfg.platform_mode,
            default: configured(
                "mirror.platforms".into(),
                format!("mirror.platforms = [{}]", list(&cfg.platforms)),
                &cfg.platforms,
            ),
            per_upstream: upstreams
                .iter()
                .filter_map(|u| {
                    let specs = u.platforms.as_ref()?;
                    let entry = format!("the [[upstream]] with host = \"{}\"", u.host);
                    let key = format!("the platforms of {entry}");
                    let setting = format!("platforms = [{}] of {entry}", list(specs));
                    Some((u.host.clone(), configured(key, setting, specs)))
                })
                .collect(),
            leases: store.leases().clone(),
            store,
            meta,
            max_manifest,
            known: DashMap::new(),
            images: DashMap::new(),
            fills,
        }
    }
}
