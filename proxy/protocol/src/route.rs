//! Maps a `/v2/...` path to an endpoint. Repository names contain slashes, so a path is read from its
//! end: the last segments say which endpoint, everything before them is the name.

use http::Method;

use crate::error::{ErrorCode, RegistryError};
use wharf_model::digest::Digest;
use wharf_model::reference::{Reference, ReferenceError, RepoName};

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Manifest(RepoName, Reference),
    Tags(RepoName),
    Referrers(RepoName, Digest),
}

impl Route {
    /// The repository the endpoint is about, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base => None,
            Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _)
            | Route::Manifest(r, _)
            | Route::Tags(r)
            | Route::Referrers(r, _) => Some(r),
        }
    }
}

impl Route {
    /// The same endpoint on another repository (a push route's local name for the one the client gave).
    pub fn with_repo(self, name: RepoName) -> Route {
        match self {
            Route::Base => Route::Base,
            Route::Blob(_, d) => Route::Blob(name, d),
            Route::UploadStart(_) => Route::UploadStart(name),
            Route::Upload(_, id) => Route::Upload(name, id),
            Route::Manifest(_, r) => Route::Manifest(name, r),
            Route::Tags(_) => Route::Tags(name),
            Route::Referrers(_, d) => Route::Referrers(name, d),
        }
    }

    /// Whether the endpoint writes (uploads, manifest pushes, deletes) for `method`.
    pub fn writes(&self, method: &http::Method) -> bool {
        match self {
            Route::UploadStart(_) | Route::Upload(..) => true,
            Route::Blob(..) | Route::Manifest(..) => {
                matches!(*method, http::Method::PUT | http::Method::DELETE)
            }
            _ => false,
        }
    }
}

/// Decodes `%XX` escapes; some clients escape the `:` of a digest.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && b[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unknown_endpoint(path: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{path} is not an OCI distribution endpoint"),
    )
    .with_status(http::StatusCode::NOT_FOUND)
}

/// A manifest reference that is neither a valid tag nor a digest. A `GET`/`HEAD` with it asks for
/// something that cannot exist, and the spec lists only 404 as that endpoint's failure (end-3; the
/// conformance suite pulls `.INVALID_MANIFEST_NAME` and expects 404): MANIFEST_UNKNOWN, saying why.
/// A push or delete with it is a request to fix, so it stays a 400 naming the grammar.
fn invalid_reference(
    method: &Method,
    repo: &RepoName,
    raw: &str,
    e: ReferenceError,
) -> RegistryError {
    if method == Method::GET || method == Method::HEAD {
        RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {raw:?} is not in repository {repo}, and cannot be: {e}"),
        )
    } else {
        e.into()
    }
}

/// The endpoint `method path` addresses. The method only decides how an invalid manifest reference
/// is refused (`invalid_reference`); which endpoint it is comes from the path alone.
pub fn route(method: &Method, path: &str) -> Result<Route, RegistryError> {
    let Some(rest) = path.strip_prefix("/v2/").or((path == "/v2").then_some("")) else {
        return Err(unknown_endpoint(path));
    };
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| -> Result<RepoName, RegistryError> {
        if k == 0 {
            return Err(unknown_endpoint(path));
        }
        Ok(segs[..k].join("/").parse::<RepoName>()?)
    };
    let last = |i: usize| percent_decode(segs[i]);
    match segs.as_slice() {
        [.., "tags", "list"] => Ok(Route::Tags(name(n - 2)?)),
        [.., "blobs", "uploads", _] if n >= 3 => {
            let repo = name(n - 3)?;
            let id = last(n - 1);
            if id.is_empty() {
                Ok(Route::UploadStart(repo))
            } else {
                Ok(Route::Upload(repo, id))
            }
        }
        [.., "blobs", "uploads"] => Ok(Route::UploadStart(name(n - 2)?)),
        [.., "blobs", _] => {
            let repo = name(n - 2)?;
            Ok(Route::Blob(repo, last(n - 1).parse()?))
        }
        [.., "manifests", _] => {
            let repo = name(n - 2)?;
            let raw = last(n - 1);
            match raw.parse() {
                Ok(r) => Ok(Route::Manifest(repo, r)),
                Err(e) => Err(invalid_reference(method, &repo, &raw, e)),
            }
        }
        [.., "referrers", _] => {
            let repo = name(n - 2)?;
            Ok(Route::Referrers(repo, last(n - 1).parse()?))
        }
        _ => Err(unknown_endpoint(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn get(path: &str) -> Result<Route, RegistryError> {
        route(&Method::GET, path)
    }

    #[test]
    fn endpoints() {
        assert_eq!(get("/v2/").unwrap(), Route::Base);
        assert_eq!(get("/v2").unwrap(), Route::Base);
        assert_eq!(get("/v2/a/b/tags/list").unwrap(), Route::Tags(r("a/b")));
        assert_eq!(
            get("/v2/a/blobs/uploads/").unwrap(),
            Route::UploadStart(r("a"))
        );
        assert_eq!(
            get("/v2/a/blobs/uploads").unwrap(),
            Route::UploadStart(r("a"))
        );
        assert_eq!(
            get("/v2/a/blobs/uploads/abc").unwrap(),
            Route::Upload(r("a"), "abc".into())
        );
        assert_eq!(
            get(&format!("/v2/ghcr.io/o/app/blobs/{D}")).unwrap(),
            Route::Blob(r("ghcr.io/o/app"), D.parse().unwrap())
        );
        assert_eq!(
            get(&format!("/v2/a/manifests/{}", D.replace(':', "%3A"))).unwrap(),
            Route::Manifest(r("a"), Reference::Digest(D.parse().unwrap()))
        );
        // A repository may itself be called "manifests" or "blobs".
        assert_eq!(
            get("/v2/manifests/manifests/latest").unwrap(),
            Route::Manifest(r("manifests"), "latest".parse().unwrap())
        );
        assert_eq!(
            get(&format!("/v2/a/referrers/{D}")).unwrap(),
            Route::Referrers(r("a"), D.parse().unwrap())
        );
    }

    #[test]
    fn refusals() {
        let code = |p: &str| get(p).unwrap_err().code;
        assert_eq!(code("/v2/../etc/manifests/x"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2//a/manifests/x"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/A/manifests/x"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/blobs/sha256:zz"), ErrorCode::DigestInvalid);
        assert_eq!(code("/v2/manifests/x"), ErrorCode::Unsupported);
        assert_eq!(code("/v3/"), ErrorCode::Unsupported);
        assert_eq!(code("/v2/a/other"), ErrorCode::Unsupported);
    }

    /// Proves: GET/HEAD of a manifest reference that is neither tag nor digest is 404 MANIFEST_UNKNOWN
    /// (with the reason), while PUT and DELETE with it stay 400 naming the grammar.
    #[test]
    fn invalid_manifest_references() {
        for raw in [".INVALID_MANIFEST_NAME", "bad:tag", "-x"] {
            let path = format!("/v2/a/manifests/{raw}");
            for m in [Method::GET, Method::HEAD] {
                let e = route(&m, &path).unwrap_err();
                assert_eq!(
                    (e.code, e.status),
                    (ErrorCode::ManifestUnknown, http::StatusCode::NOT_FOUND),
                    "{m} {path}: {e}"
                );
                let why = raw.parse::<Reference>().unwrap_err().to_string();
                assert!(e.message.contains(&why), "{m} {path}: {e}");
            }
            for m in [Method::PUT, Method::DELETE] {
                let e = route(&m, &path).unwrap_err();
                assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{m} {path}: {e}");
            }
        }
        let e = route(&Method::GET, "/v2/a/manifests/.INVALID_MANIFEST_NAME").unwrap_err();
        assert!(
            e.message
                .contains("tag \".INVALID_MANIFEST_NAME\" is invalid: a tag is"),
            "{e}"
        );
        assert_eq!(
            route(&Method::PUT, "/v2/a/manifests/bad:tag")
                .unwrap_err()
                .code,
            ErrorCode::DigestInvalid
        );
    }
}
