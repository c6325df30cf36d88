//! `GET /v2/<name>/tags/list`, paginated with `n`, `last` and a `Link` header to the next page.

use http::header::LINK;
use http::{HeaderValue, Request, Response, StatusCode};

use super::{json_response, query_param, Registry};
use crate::body::Body;
use crate::error::{ErrorCode, RegistryError, Result};
use wharf_model::reference::RepoName;

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

/// The page a tag list request asks for: `n` (page size) and `last` (the tag to continue after).
pub(crate) fn tag_page<B>(req: &Request<B>) -> Result<(Option<usize>, Option<String>)> {
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
    Ok((n, query_param(req, "last")))
}

/// A tag list page, with a `Link` to the next one when `more` follow.
pub(crate) fn tag_list(
    name: &str,
    tags: &[String],
    more: bool,
    n: Option<usize>,
) -> Response<Body> {
    let body =
        serde_json::to_vec(&serde_json::json!({ "name": name, "tags": tags })).expect("plain JSON");
    let mut resp = json_response(StatusCode::OK, body.into());
    if let (true, Some(n), Some(last)) = (more, n, tags.last()) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(LINK, v);
        }
    }
    resp
}
