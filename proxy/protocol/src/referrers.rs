//! `GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is that digest, as an OCI index.
//! Always 200, with an empty list for a digest nothing refers to (the spec; clients treat 404 as "this
//! registry has no referrers API" and fall back to tag schemas).
//!
//! A large set comes in pages, as the spec requires when "the descriptor list cannot be returned in a
//! single manifest": each page is an index of at most `PAGE_BYTES`, and `Link: <…?last=<digest>>;
//! rel="next"` names the next one. Descriptors are listed in digest order and a page starts after the
//! digest in `last`, so the cursor stays valid while referrers come and go between pages: none is
//! listed twice, and none that was there throughout is skipped.

use http::header::{CONTENT_TYPE, LINK};
use http::{HeaderValue, Request, Response, StatusCode};

use crate::body::Body;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::respond::{json_response, query_param, OCI_FILTERS_APPLIED};
use wharf_model::digest::Digest;
use wharf_model::manifest::Descriptor;
use wharf_model::manifest::OCI_INDEX;

/// Largest referrers page, as encoded JSON. Clients read a referrers response with the cap they use
/// for manifests and tag lists (oras-go's `MaxMetadataBytes`: 4 MiB); a quarter of that keeps every
/// page well inside it and still lists a few thousand typical descriptors (~300 bytes each) at once.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// The query parameter that carries the page cursor: the last digest of the previous page.
const CURSOR: &str = "last";

/// The referrers API's answer to `req`, from every descriptor whose subject is the requested digest
/// (in any order, duplicates allowed: a list gathered from an upstream's pages works as well as one
/// from meta): filtered by the request's `artifactType` (then `OCI-Filters-Applied: artifactType`),
/// and the page after the request's `last` cursor, with a `Link` to the next page when one follows.
/// The `Link` repeats the request's path and its other query parameters (`ns=`, `artifactType=`).
pub fn referrers_response<B>(
    referrers: Vec<Descriptor>,
    req: &Request<B>,
) -> Result<Response<Body>> {
    respond(referrers, req, PAGE_BYTES)
}

fn respond<B>(
    mut list: Vec<Descriptor>,
    req: &Request<B>,
    budget: usize,
) -> Result<Response<Body>> {
    let after = match query_param(req, CURSOR) {
        None => None,
        Some(v) => Some(v.parse::<Digest>().map_err(|e| {
            RegistryError::new(
                ErrorCode::Unsupported,
                format!(
                    "{CURSOR}={v:?} is not a referrers page cursor ({e}); follow the Link header \
                     of the previous page, or leave {CURSOR} out for the first page"
                ),
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    let filter = query_param(req, "artifactType");
    if let Some(t) = &filter {
        list.retain(|d| d.artifact_type.as_deref() == Some(t.as_str()));
    }
    list.sort_by(|a, b| a.digest.cmp(&b.digest));
    list.dedup_by(|a, b| a.digest == b.digest);
    let start = after.map_or(0, |a| list.partition_point(|d| d.digest <= a));
    let page = page(&list[start..], budget);

    let mut resp = json_response(StatusCode::OK, page.body.into());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        h.insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    if let Some(last) = page.next_after {
        let link = next_link(req, last);
        let v = HeaderValue::from_str(&link).map_err(|_| {
            RegistryError::new(
                ErrorCode::Unknown,
                format!("cannot write the referrers Link header {link:?}"),
            )
        })?;
        h.insert(LINK, v);
    }
    Ok(resp)
}

/// One page of a referrers index.
struct Page<'a> {
    body: Vec<u8>,
    /// When more descriptors follow: the last digest on this page, where the next one starts after.
    next_after: Option<&'a Digest>,
}

/// As many of `list` as fit in `budget` bytes of encoded index, at least one (a descriptor larger
/// than a page is still listed, alone, rather than never).
fn page(list: &[Descriptor], budget: usize) -> Page<'_> {
    let head = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":["#);
    const TAIL: &[u8] = b"]}";
    let mut body = head.into_bytes();
    for (i, d) in list.iter().enumerate() {
        let entry = serde_json::to_vec(d).expect("a descriptor is plain JSON");
        let comma = usize::from(i > 0);
        if i > 0 && body.len() + comma + entry.len() + TAIL.len() > budget {
            body.extend_from_slice(TAIL);
            return Page {
                body,
                next_after: Some(&list[i - 1].digest),
            };
        }
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&entry);
    }
    body.extend_from_slice(TAIL);
    Page {
        body,
        next_after: None,
    }
}

/// `<path?query>; rel="next"`: the request's own path and query, with the cursor set to `after`.
fn next_link<B>(req: &Request<B>, after: &Digest) -> String {
    let cursor = format!("{CURSOR}={after}");
    let query: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(CURSOR))
        .chain([cursor.as_str()])
        .collect();
    format!("<{}?{}>; rel=\"next\"", req.uri().path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    const SUBJECT: &str = "/v2/team/app/referrers/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn desc(i: u32, artifact_type: &str) -> Descriptor {
        Descriptor {
            media_type: wharf_model::manifest::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(&i.to_be_bytes()),
            size: 500 + u64::from(i),
            artifact_type: Some(artifact_type.into()),
            annotations: Some(
                [("n".to_owned(), Value::String(format!("entry {i}")))]
                    .into_iter()
                    .collect(),
            ),
        }
    }

    async fn get(list: &[Descriptor], uri: &str, budget: usize) -> (http::HeaderMap, Value, usize) {
        let req = Request::get(uri).body(()).unwrap();
        let (parts, body) = respond(list.to_vec(), &req, budget).unwrap().into_parts();
        assert_eq!(parts.status, StatusCode::OK);
        let bytes = body.collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        (parts.headers, v, bytes.len())
    }

    /// Follows `Link` from `uri` to the end; returns every page's digests and headers.
    async fn walk(
        list: &[Descriptor],
        uri: &str,
        budget: usize,
    ) -> Vec<(Vec<String>, http::HeaderMap)> {
        let mut pages = Vec::new();
        let mut next = Some(uri.to_owned());
        while let Some(uri) = next.take() {
            let (h, v, len) = get(list, &uri, budget).await;
            assert_eq!(v["schemaVersion"], 2);
            assert_eq!(v["mediaType"], OCI_INDEX);
            let digests: Vec<String> = v["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["digest"].as_str().unwrap().to_owned())
                .collect();
            assert!(
                len <= budget || digests.len() == 1,
                "page of {len} bytes over the {budget}-byte budget"
            );
            if let Some(link) = h.get(LINK) {
                let link = link.to_str().unwrap();
                let target = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("malformed Link {link:?}"));
                next = Some(target.to_owned());
            }
            pages.push((digests, h));
            assert!(pages.len() <= 1000, "Link never ends");
        }
        pages
    }

    /// Proves: a set larger than a page comes in pages, each within the byte budget, linked with
    /// `rel="next"` on the request's own path; together they list every referrer once, in digest
    /// order; the last page has no Link.
    #[tokio::test]
    async fn pages_cover_the_set_once() {
        let list: Vec<_> = (0..200).rev().map(|i| desc(i, "a/x")).collect();
        let mut want: Vec<String> = list.iter().map(|d| d.digest.to_string()).collect();
        want.sort();
        let pages = walk(&list, SUBJECT, 4096).await;
        assert!(pages.len() > 5, "{} pages", pages.len());
        let got: Vec<String> = pages.iter().flat_map(|p| p.0.clone()).collect();
        assert_eq!(got, want);
        for (_, h) in &pages[..pages.len() - 1] {
            let link = h[LINK].to_str().unwrap();
            assert!(
                link.starts_with(&format!("<{SUBJECT}?last=sha256:")),
                "{link}"
            );
        }
        assert!(pages.last().unwrap().1.get(LINK).is_none());
        // The whole set in one page when it fits: no Link.
        let one = walk(&list, SUBJECT, PAGE_BYTES).await;
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, want);
    }

    /// Proves: the filter applies to every page (each says `OCI-Filters-Applied`), the Link keeps the
    /// request's other parameters (`ns=`, `artifactType=`), and duplicates (an upstream's list) count once.
    #[tokio::test]
    async fn filter_and_parameters_carry_over_pages() {
        let mut list: Vec<_> = (0..120)
            .map(|i| desc(i, if i % 3 == 0 { "a/sbom" } else { "a/sig" }))
            .collect();
        list.extend(list.clone());
        let uri = format!("{SUBJECT}?ns=ghcr.io&artifactType=a%2Fsbom");
        let pages = walk(&list, &uri, 2048).await;
        assert!(pages.len() > 2, "{} pages", pages.len());
        let got: Vec<String> = pages.iter().flat_map(|p| p.0.clone()).collect();
        let mut want: Vec<String> = (0..120)
            .filter(|i| i % 3 == 0)
            .map(|i| desc(i, "").digest.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want);
        for (i, (_, h)) in pages.iter().enumerate() {
            assert_eq!(h[OCI_FILTERS_APPLIED], "artifactType", "page {i}");
            if let Some(link) = h.get(LINK) {
                let link = link.to_str().unwrap();
                assert!(
                    link.contains("?ns=ghcr.io&artifactType=a%2Fsbom&last=sha256:"),
                    "{link}"
                );
            }
        }
    }

    /// Proves: the cursor is a digest, not a position: a page asked for after a digest that has since
    /// gone (or never was) starts at the next one in order; a referrer larger than a page is listed
    /// alone rather than never; a cursor that is no digest is a 400 naming the fix.
    #[tokio::test]
    async fn cursor_is_a_digest() {
        let mut list: Vec<_> = (0..10).map(|i| desc(i, "a/x")).collect();
        list.sort_by(|a, b| a.digest.cmp(&b.digest));
        let gone = list.remove(4);
        let (_, v, _) = get(
            &list,
            &format!("{SUBJECT}?last={}", gone.digest),
            PAGE_BYTES,
        )
        .await;
        let first = v["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(first, list[4].digest.to_string());
        assert_eq!(v["manifests"].as_array().unwrap().len(), 5);

        let pages = walk(&list, SUBJECT, 10).await;
        assert_eq!(pages.len(), list.len(), "one oversized referrer per page");

        let req = Request::get(format!("{SUBJECT}?last=page2"))
            .body(())
            .unwrap();
        let Err(e) = respond(list, &req, PAGE_BYTES) else {
            panic!("a cursor that is no digest was accepted");
        };
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("follow the Link header"), "{e}");
    }

    #[tokio::test]
    async fn empty_set_is_an_empty_index() {
        let (h, v, _) = get(&[], SUBJECT, PAGE_BYTES).await;
        assert_eq!(v["manifests"], serde_json::json!([]));
        assert_eq!(h[CONTENT_TYPE], OCI_INDEX);
        assert!(h.get(LINK).is_none() && h.get(OCI_FILTERS_APPLIED).is_none());
    }
}
