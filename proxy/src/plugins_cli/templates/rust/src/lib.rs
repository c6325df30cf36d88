//! {{name}}: a wharf access policy. It allows everything and logs each request; put your rules in
//! `check`. The interface is `wit/policy.wit` (what each call means: wharf's wit/README.md).

use std::sync::Mutex;

wit_bindgen::generate!({
    path: "wit",
    world: "access-policy",
});

use exports::wharf::policy::{access, lifecycle};
use wharf::policy::log::{log, Level};
use wharf::policy::types::{Decision, Request};

/// The `config` string of the plugin's `[[plugin]]` entry, kept by `init`, which wharf calls once per
/// instance before any other call.
static CONFIG: Mutex<String> = Mutex::new(String::new());

struct Policy;

impl lifecycle::Guest for Policy {
    fn init(config: String) -> Result<(), String> {
        // Parse and check the config here; an `Err` stops wharf from starting and shows the message.
        log(Level::Info, "{{name}} ready", &[("config".to_owned(), config.clone())]);
        *CONFIG.lock().map_err(|_| "state poisoned".to_owned())? = config;
        Ok(())
    }
}

impl access::Guest for Policy {
    fn check(request: Request) -> Result<Decision, String> {
        let name = match &request.registry {
            Some(registry) => format!("{registry}/{}", request.repository),
            None => request.repository.clone(),
        };
        log(
            Level::Debug,
            "checked",
            &[("operation".to_owned(), format!("{:?}", request.operation)), ("name".to_owned(), name)],
        );
        // `Decision::Deny(reason)` refuses the request (the client sees the reason); `Err(..)` is a
        // failure of the plugin, not a decision.
        Ok(Decision::Allow)
    }
}

export!(Policy);
