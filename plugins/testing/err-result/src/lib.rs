//! TEST ONLY: `check` returns `err`, a plugin failure that is not a decision: the host must fail
//! the access check closed and log this message.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "access-policy",
});

use exports::wharf::policy::{access, lifecycle};
use wharf::policy::types::{Decision, Request};

struct Plugin;

impl lifecycle::Guest for Plugin {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl access::Guest for Plugin {
    fn check(_request: Request) -> Result<Decision, String> {
        Err("err-result plugin: deliberate error from check".to_owned())
    }
}

export!(Plugin);
