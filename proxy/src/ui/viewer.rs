//! Who is looking at the status page, and what of it they may see. With `[auth]`, a repository (its
//! tags, digests, sizes and platforms, its pushes, the plugin denials that name it) is shown only to
//! a caller the rules let pull it, identified by the registry's own credentials; the totals and
//! charts name no repository and are shown to everyone. Without `[auth]` everyone sees everything:
//! wharf then refuses a metrics listener others can reach, unless `allow_anonymous_remote` says so.
//!
//! The access plugins are not asked. They judge registry requests (an operation on a reference, from
//! an address, with a user agent) and are mostly a supply-chain policy (a deny-list of images):
//! asking them about every repository on every view (the page reloads every 30 s) would count and
//! log page views as requests, and hide from an operator what the cache holds. Who may read which
//! repository is what `[[auth.rule]]` says, and that is what the page follows.

use std::sync::Arc;

use super::page::{Audience, Page};
use wharf_policy::auth::Auth;

/// The caller a page is rendered for.
pub enum Viewer {
    /// No client authentication is configured.
    Anyone,
    /// A caller of a wharf with `[auth]`; `identity` is `None` for an anonymous one.
    Caller {
        auth: Arc<Auth>,
        identity: Option<String>,
    },
}

impl Viewer {
    pub fn audience(&self) -> Audience {
        match self {
            Viewer::Anyone => Audience::Everyone,
            Viewer::Caller { identity: None, .. } => Audience::Anonymous,
            Viewer::Caller {
                identity: Some(id), ..
            } => Audience::Identity(id.clone()),
        }
    }

    /// Whether the page may show `repository` (the name the rules judge) to this caller. A name
    /// not known (an old denial record that lost it) is shown to no one but `Anyone`.
    pub fn may_see(&self, repository: &str) -> bool {
        match self {
            Viewer::Anyone => true,
            Viewer::Caller { auth, identity } => {
                !repository.is_empty() && auth.may_pull(identity.as_deref(), repository)
            }
        }
    }

    /// Keeps of `page` what this caller may see.
    pub fn filter(&self, page: &mut Page) {
        page.audience = self.audience();
        if matches!(self, Viewer::Anyone) {
            return;
        }
        if let Ok(images) = &mut page.images {
            images.retain(|i| self.may_see(&i.repository));
        }
        if let Ok(pushes) = &mut page.pushes {
            pushes.retain(|p| self.may_see(&p.repository));
        }
        page.denials.retain(|d| self.may_see(d.repository()));
    }
}
