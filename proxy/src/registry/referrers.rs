//! `GET /v2/<name>/referrers/<digest>` for a local repository: the descriptors recorded in the
//! metadata, answered the protocol's way (`wharf_protocol::referrers`: filters, pages).

use http::{Request, Response};

use super::services::Registry;
use wharf_model::digest::Digest;
use wharf_protocol::body::Body;
use wharf_protocol::error::Result;
use wharf_protocol::referrers::referrers_response;

impl Registry {
    pub(super) async fn list_referrers<B>(
        &self,
        repo: &str,
        subject: &Digest,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let list = self.meta.referrers(repo, subject).await?;
        referrers_response(list, req)
    }
}
