//! `GET /v2/<name>/tags/list`, paginated with `n`, `last` and a `Link` header to the next page.

use http::{Request, Response};

use super::services::Registry;
use wharf_model::reference::RepoName;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_protocol::respond::tag_list;
use wharf_protocol::respond::tag_page;

impl Registry {
    pub(super) async fn list_tags<B>(
        &self,
        repo: &RepoName,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let (n, last) = tag_page(req)?;
        if !self.meta.repo_exists(repo.as_str()).await? {
            return Err(RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {repo} is not known to this registry"),
            ));
        }
        let (tags, more) = self
            .meta
            .tags(repo.as_str(), last.as_deref(), n.unwrap_or(usize::MAX))
            .await?;
        Ok(tag_list(repo.as_str(), &tags, more, n))
    }
}
