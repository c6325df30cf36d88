//! `GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is that digest, as an OCI index.
//! Always 200, with an empty list for a digest nothing refers to (the spec; clients treat 404 as "this
//! registry has no referrers API" and fall back to tag schemas).

use http::{HeaderValue, Request, Response, StatusCode};

use super::{json_response, query_param, Registry, OCI_FILTERS_APPLIED};
use crate::body::Body;
use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::OCI_INDEX;

impl Registry {
    pub(super) async fn list_referrers<B>(
        &self,
        repo: &str,
        subject: &Digest,
        req: &Request<B>,
    ) -> Result<Response<Body>> {
        let mut list = self.meta.referrers(repo, subject).await?;
        let filter = query_param(req, "artifactType");
        if let Some(t) = &filter {
            list.retain(|d| d.artifact_type.as_deref() == Some(t.as_str()));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": list,
        }))
        .expect("plain JSON");
        let mut resp = json_response(StatusCode::OK, body.into());
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(OCI_INDEX),
        );
        if filter.is_some() {
            h.insert(
                OCI_FILTERS_APPLIED,
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(resp)
    }
}
