//! TEST ONLY: `check` allocates until allocation fails. The host must cap the memory (StoreLimits)
//! and treat the resulting trap as a plugin error.

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
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page, so no lazily committed memory makes the bomb look smaller than it is.
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(Plugin);
