//! TEST ONLY: `check` panics, which traps (`unreachable`) on wasm32-wasip2. The host must treat
//! the trap as a plugin error (access fails closed) and not reuse the instance.

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
    fn check(request: Request) -> Result<Decision, String> {
        panic!(
            "trap plugin: deliberate panic while checking {}",
            request.repository
        );
    }
}

export!(Plugin);
