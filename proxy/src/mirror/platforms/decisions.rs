//! What the platform policy decides: of an index, the `Selection` (kept and left-out children); of an
//! image manifest, the `Judged` decision; and why something is left out and what said its platform.

use std::collections::HashMap;
use std::sync::Weak;

use wharf_model::digest::Digest;
use wharf_model::platform::Platform;
use wharf_policy::plugin::PluginSet;
use wharf_storage::meta::ManifestRecord;

/// Why an entry was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LeftOut {
    /// Not in the configured list.
    Config,
    /// The platform plugins did not keep it.
    Plugins,
    /// The entry says no platform, so no platform policy can keep it.
    NoPlatform,
}

/// What the policy keeps of one index.
#[derive(Debug)]
pub(super) struct Selection {
    /// The kept platforms.
    pub(super) chosen: Vec<Platform>,
    /// The kept children, in index order.
    pub(super) kept: Vec<Digest>,
    pub(super) left_out: HashMap<Digest, (Option<Platform>, LeftOut)>,
    /// What a tag of this index serves (rewritten mode); `None` in sparse mode.
    pub(super) served: Option<(Digest, ManifestRecord)>,
    /// The plugin set the choice was made with: a reload chooses again.
    pub(super) plugins: Weak<PluginSet>,
}

/// What told the policy which platform a manifest is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PlatformFrom {
    /// The entry of this index (cached for the same repository) that lists it.
    Index(Digest),
    /// Its own config blob.
    Config(Digest),
}

/// Why an image manifest is left out, for the refusal.
#[derive(Debug, Clone)]
pub(super) struct LeftOutImage {
    pub(super) platform: Option<Platform>,
    pub(super) why: LeftOut,
    pub(super) from: PlatformFrom,
}

/// The policy's decision about one image manifest of a cache repository.
#[derive(Debug)]
pub(super) struct Judged {
    /// `None`: kept (its blobs are recorded as fetchable).
    pub(super) left_out: Option<LeftOutImage>,
    /// The plugin set the decision was made with: a reload decides again.
    pub(super) plugins: Weak<PluginSet>,
}
