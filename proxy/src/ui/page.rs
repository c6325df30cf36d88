//! What one rendering of the status page shows, and for whom: gathered before any HTML is written.

use std::time::Duration;

use crate::push::DeliveryStatus;
use wharf_policy::denials::DeniedRequest;
use wharf_storage::images::Image;
use wharf_storage::meta::{Retention, Sample};

/// Everything one rendering shows, gathered before any HTML is written.
pub struct Page {
    /// Unix seconds.
    pub now: u64,
    /// Tagged images, or why they could not be listed.
    pub images: Result<Vec<Image>, String>,
    /// The push journal, or why it could not be read.
    pub pushes: Result<Vec<DeliveryStatus>, String>,
    /// Oldest first (the recorded history, thinned as `keep` says); the last one is taken for this
    /// rendering.
    pub samples: Vec<Sample>,
    /// Oldest first.
    pub denials: Vec<DeniedRequest>,
    pub sample_every: Duration,
    pub keep: Retention,
    /// Whom the lists were kept for (`Viewer::filter`).
    pub audience: Audience,
}

/// Whom the page was rendered for, as its header says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Audience {
    /// No client authentication: the whole page.
    #[default]
    Everyone,
    /// A caller without a credential: what anonymous callers may pull.
    Anonymous,
    /// What this identity may pull.
    Identity(String),
}
