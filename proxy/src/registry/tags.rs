//! `GET /v2/<name>/tags/list`, paginated with `n`, `last` and a `Link` header to the next page.

use http::header::LINK;
use http::{HeaderValue, Request, Response, StatusCode};

use super::{json_response, query_param, Registry};
use crate::body::Body;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::reference::RepoName;

impl Registry {
    pub(super) async fn list_tags<B>(
        &self,
        repo: &RepoName,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let n = match query_param(req, "n") {
            None => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                RegistryError::new(
                    ErrorCode::Unsupported,
                    format!("n={v:?} is not a page size; use a non-negative integer"),
                )
                .with_status(StatusCode::BAD_REQUEST)
            })?),
        };
        let last = query_param(req, "last");
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
        let body = serde_json::to_vec(&serde_json::json!({ "name": repo.as_str(), "tags": tags }))
            .expect("plain JSON");
        let mut resp = json_response(StatusCode::OK, body.into());
        if let (true, Some(n), Some(last)) = (more, n, tags.last()) {
            let link = format!("</v2/{repo}/tags/list?n={n}&last={last}>; rel=\"next\"");
            if let Ok(v) = HeaderValue::from_str(&link) {
                resp.headers_mut().insert(LINK, v);
            }
        }
        Ok(resp)
    }
}
