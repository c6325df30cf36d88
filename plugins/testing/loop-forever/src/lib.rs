//! TEST ONLY: `check` never returns. The host must stop it (epoch deadline or fuel) and fail the
//! access check closed.

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
        let mut spins: u64 = 0;
        loop {
            // black_box: keep the loop observable so the optimiser cannot reason about it.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

export!(Plugin);
