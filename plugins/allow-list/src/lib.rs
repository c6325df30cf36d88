//! `allow-list`: a wharf access policy that allows and denies repositories by glob.
//! Config and semantics: plugins/README.md.

mod glob;
mod rules;

use std::sync::Mutex;

use rules::{Op, Rules, Verdict};

wit_bindgen::generate!({
    path: "../../wit",
    world: "access-policy",
});

use exports::wharf::policy::{access, lifecycle};
use wharf::policy::log::{log, Level};
use wharf::policy::types::{Decision, Operation, Request};

/// Set by `init`, which the host calls once per instance before any check.
static RULES: Mutex<Option<Rules>> = Mutex::new(None);

struct AllowList;

impl lifecycle::Guest for AllowList {
    fn init(config: String) -> Result<(), String> {
        let rules = Rules::parse(&config)?;
        let ops = match &rules.ops {
            Some(ops) => ops
                .iter()
                .map(|op| format!("{op:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(","),
            None => "all".to_owned(),
        };
        log(
            Level::Info,
            "allow-list ready",
            &[
                ("allow_rules".to_owned(), rules.allow.len().to_string()),
                ("deny_rules".to_owned(), rules.deny.len().to_string()),
                ("ops".to_owned(), ops),
                (
                    "identities".to_owned(),
                    rules
                        .identities
                        .as_ref()
                        .map_or("all".to_owned(), |ids| ids.len().to_string()),
                ),
                (
                    "except_identities".to_owned(),
                    rules.except_identities.len().to_string(),
                ),
            ],
        );
        *RULES
            .lock()
            .map_err(|_| "allow-list: state poisoned".to_owned())? = Some(rules);
        Ok(())
    }
}

impl access::Guest for AllowList {
    fn check(request: Request) -> Result<Decision, String> {
        let guard = RULES
            .lock()
            .map_err(|_| "allow-list: state poisoned".to_owned())?;
        let rules = guard
            .as_ref()
            .ok_or("allow-list: check called before init")?;
        let op = match request.operation {
            Operation::Pull => Op::Pull,
            Operation::Push => Op::Push,
            Operation::Delete => Op::Delete,
            Operation::List => Op::List,
        };
        let name = rules::checked_name(request.registry.as_deref(), &request.repository);
        Ok(match rules.decide(op, &name, request.identity.as_deref()) {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny(reason) => Decision::Deny(reason),
        })
    }
}

export!(AllowList);
