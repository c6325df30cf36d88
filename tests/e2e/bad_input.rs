//! Test 4: bad input is refused with the spec's status and error code, stores nothing under `blobs/`
//! and leaves committed content intact. Every case ends with `Guard::check`.

mod manifests;
mod names;
mod uploads;

use crate::fixtures::Guard;
use crate::harness::{Wharf, WharfOptions};
use crate::http::{Api, Resp};

pub const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

pub fn setup(options: WharfOptions) -> (Wharf, Api, Guard) {
    let wharf = Wharf::start(options);
    let api = Api::new(wharf.base());
    let guard = Guard::new(&wharf, &api);
    (wharf, api, guard)
}

pub fn assert_blob_absent(api: &Api, repo: &str, digest: &str) {
    api.head(&format!("/v2/{repo}/blobs/{digest}"))
        .assert_status(404);
}

/// A request the client abandoned must not look accepted: no answer at all is fine, a 2xx is not.
pub fn assert_not_accepted(resp: Option<Resp>, what: &str) {
    if let Some(r) = resp {
        assert!(
            !(200..300).contains(&r.status),
            "{what}: a truncated body was answered {}",
            r.describe()
        );
    }
}
