//! Why a push route cannot be built.

use wharf_protocol::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("[[push]] with prefix = {prefix:?}: {reason}")]
    Config { prefix: String, reason: String },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}
