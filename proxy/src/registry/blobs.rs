//! Blob reads and deletes: `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use http::{Method, Request, Response, StatusCode};

use super::services::Registry;
use wharf_model::digest::Digest;
use wharf_model::reference::RepoName;
use wharf_protocol::body::Body;
use wharf_protocol::error::{ErrorCode, RegistryError, Result};
use wharf_protocol::respond::blob_response;
use wharf_protocol::respond::{empty_response, CONTENT_DIGEST};

pub(super) fn blob_unknown(repo: &RepoName, d: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {d} is not in repository {repo}"),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

impl Registry {
    pub(super) async fn get_blob<B>(
        &self,
        repo: &RepoName,
        d: &Digest,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        if req.method() == Method::HEAD {
            // A client that finds the blob here skips uploading it and refers to it later: that
            // counts as a use, which the collector spares for its grace window.
            self.leases.touch(std::slice::from_ref(d)).await;
        }
        let size = self
            .meta
            .blob(repo.as_str(), d)
            .await?
            .ok_or_else(|| blob_unknown(repo, d))?;
        blob_response(&*self.store, d, size, req, || blob_unknown(repo, d)).await
    }

    pub(super) async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> Result<Response<Body>> {
        self.require_delete()?;
        if !self.meta.unlink_blob(repo.as_str(), d).await? {
            return Err(blob_unknown(repo, d));
        }
        Ok(empty_response(
            StatusCode::ACCEPTED,
            &[(CONTENT_DIGEST, d.to_string())],
        ))
    }
}
