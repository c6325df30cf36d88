//! TEST ONLY: `init` refuses every config. The host must refuse to start (or keep the previous plugin
//! set on a reload) and show this message.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "access-policy",
});

use exports::wharf::policy::{access, lifecycle};
use wharf::policy::types::{Decision, Request};

struct Plugin;

impl lifecycle::Guest for Plugin {
    fn init(config: String) -> Result<(), String> {
        Err(format!(
            "init-fails plugin: deliberately refusing config {config:?}"
        ))
    }
}

impl access::Guest for Plugin {
    fn check(_request: Request) -> Result<Decision, String> {
        Ok(Decision::Deny(
            "init-fails plugin: check must never be called after a failed init".to_owned(),
        ))
    }
}

export!(Plugin);
