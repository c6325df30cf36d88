//! Tag listing and pagination.

use serde_json::Value;

use crate::fixtures::SmallImage;
use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;
use crate::oci;

/// The `next` target of a `Link: <...>; rel="next"` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_owned())
        })
}

fn tags_of(v: &Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Proves: tags/list returns every tag in lexical order; with `n=2` each page holds at most 2 tags and
/// a `Link: <...>; rel="next"` header leads through all of them, in order, with none after the last;
/// `last=` starts after the given tag.
#[test]
fn tags_list_paginates_in_lexical_order() {
    let wharf = Wharf::start(WharfOptions::default());
    let api = Api::new(wharf.base());
    let repo = "proto/tags";
    let img = SmallImage::push(&api, repo, "v3", 21);
    for tag in ["latest", "a1", "v10", "b2"] {
        api.push_manifest(repo, tag, oci::OCI_MANIFEST, &img.manifest);
    }
    let sorted = ["a1", "b2", "latest", "v10", "v3"]
        .map(String::from)
        .to_vec();

    let all = api.get(&format!("/v2/{repo}/tags/list"));
    all.assert_status(200);
    assert_eq!(all.json()["name"], repo, "{}", all.describe());
    assert_eq!(tags_of(&all.json()), sorted, "{}", all.describe());

    let mut walked = Vec::new();
    let mut next = Some(format!("/v2/{repo}/tags/list?n=2"));
    let mut pages = 0;
    while let Some(url) = next {
        pages += 1;
        assert!(pages <= 5, "pagination does not end: {walked:?}");
        let r = api.get(&url);
        r.assert_status(200);
        let page = tags_of(&r.json());
        assert!(
            !page.is_empty() && page.len() <= 2,
            "page {pages} from {url}: {}",
            r.describe()
        );
        walked.extend(page);
        next = r.header("Link").and_then(next_link);
        if walked.len() < sorted.len() {
            assert!(
                next.is_some(),
                "page {pages} ({url}) has no Link to the rest: {}",
                r.describe()
            );
        }
    }
    assert_eq!(walked, sorted);
    assert_eq!(pages, 3);

    let r = api.get(&format!("/v2/{repo}/tags/list?n=2&last=b2"));
    r.assert_status(200);
    assert_eq!(tags_of(&r.json()), ["latest", "v10"], "{}", r.describe());
}
