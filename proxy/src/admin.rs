//! What the operator's views and commands act on: `Admin`, the running server's (or an offline
//! command's) collector, scrub, leases, push journal, registry and status history, with the few
//! reads every view shares. The socket that serves it is `admin_socket.rs`; the CLI's side is
//! `admin_client.rs`; `app.rs` builds it.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use wharf_storage::gc::Collector;
use wharf_storage::lease::Leases;
use wharf_storage::meta::LeaseRecord;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Failed(String),
    /// The metadata store is damaged (what `open_storage` said).
    #[error("{0}")]
    Damaged(String),
    #[error(
        "the wharf server using {dir} did not answer on {socket}: {reason} (is it still starting? \
         try again; if no server runs, remove the stale socket)"
    )]
    Unreachable {
        dir: String,
        socket: String,
        reason: String,
    },
    #[error(
        "permission denied on {socket}: {whose}; this is a permission problem, not a stale socket: \
         run this command as the user that runs the server (e.g. `sudo -u <that user> wharf …`)"
    )]
    Denied { socket: String, whose: String },
}

/// Who may use `path` (its owner and mode, or those of the first directory above it this user can
/// see), for a permission error: the fix is to become that user.
pub(crate) fn whose(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut p = Some(path);
    while let Some(at) = p {
        if let Ok(m) = std::fs::symlink_metadata(at) {
            let what = if at == path { "it" } else { "the directory" };
            let at_text = if at == path {
                String::new()
            } else {
                format!(" {}", at.display())
            };
            return format!(
                "{what}{at_text} belongs to {} with mode {:o}, and this command runs as {}",
                user_name(m.uid()),
                m.mode() & 0o7777,
                // SAFETY: getuid(2) cannot fail.
                user_name(unsafe { libc::getuid() })
            );
        }
        p = at.parent();
    }
    "this user cannot reach it".to_owned()
}

/// `name (uid N)`, or `uid N` when the user database has no name for it.
fn user_name(uid: u32) -> String {
    // SAFETY: `passwd` is plain data (integers and pointers); all zeroes is a valid value of it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, which outlive the call, and sets `out` to
    // `&pw` or null; `pw_name` points into `buf`.
    let found = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if found == 0 && !out.is_null() && !pw.pw_name.is_null() {
        // SAFETY: as above: a NUL-terminated string in `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return format!("{} (uid {uid})", name.to_string_lossy());
    }
    format!("uid {uid}")
}

/// A lease as the admin interface lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    pub id: String,
    #[serde(flatten)]
    pub record: LeaseRecord,
}

/// What the admin interface acts on.
#[derive(Clone)]
pub struct Admin {
    pub collector: Arc<Collector>,
    pub scrub: Arc<wharf_storage::scrub::Scrubber>,
    pub leases: Leases,
    pub push: Arc<crate::push::Push>,
    /// The registry a server serves; `None` for the offline admin state.
    pub registry: Option<Arc<crate::registry::Registry>>,
    /// The status page's memory: the sampler's base and the policy's denials.
    pub history: Arc<crate::history::History>,
    /// Where content and metadata live, as `wharf status` names them.
    pub backends: crate::backends::Backends,
}

impl Admin {
    /// Writes the batched last uses of tags now (`meta::LastUse`), before a view shows them (`wharf
    /// images`, `wharf status`, the status page). The views would read the batch all the same (the
    /// metadata merges it in); this keeps the files as current as the server. A no-op offline.
    pub async fn flush_usage(&self) {
        if let Some(registry) = &self.registry {
            if let Err(e) = registry.mirror().flush_usage().await {
                tracing::warn!(error = %e, "could not record cache usage");
            }
        }
    }

    pub(crate) fn lease_entries(&self) -> Vec<LeaseEntry> {
        self.leases
            .list()
            .into_iter()
            .map(|(id, record)| LeaseEntry { id, record })
            .collect()
    }
}
