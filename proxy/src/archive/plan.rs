//! What an export writes or a warm-up fetches: the manifests and blobs of the platforms chosen.

use wharf_model::digest::Digest;
use wharf_model::platform::Platform;

use super::client::Fetched;

/// What an export writes or a warm-up fetches.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest `index.json` names.
    pub top: Fetched,
    /// Every manifest to include, the top one first, each once.
    pub manifests: Vec<Fetched>,
    /// The configs and layers of the chosen platforms' manifests, each once, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// The platforms taken.
    pub platforms: Vec<Platform>,
    /// Entries left out, and why.
    pub left_out: Vec<String>,
    /// When `top` is a reduced index: the original's digest.
    pub reduced_from: Option<Digest>,
}

impl Plan {
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum()
    }
}
