//! `platform-filter`: a wharf platform policy that keeps only the configured platforms of
//! multi-platform images. Config and semantics: plugins/README.md.

mod spec;

use std::sync::Mutex;

use spec::PlatformSpec;

wit_bindgen::generate!({
    path: "../../wit",
    world: "platform-policy",
});

use exports::wharf::policy::{lifecycle, platforms};
use wharf::policy::log::{log, Level};
use wharf::policy::types::{Platform, Request};

/// Set by `init`, which the host calls once per instance before any other call.
static KEEP: Mutex<Option<Vec<PlatformSpec>>> = Mutex::new(None);

struct PlatformFilter;

impl lifecycle::Guest for PlatformFilter {
    fn init(config: String) -> Result<(), String> {
        let keep = spec::parse_config(&config)?;
        let listed = keep
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        log(
            Level::Info,
            "platform-filter ready",
            &[("platforms".to_owned(), listed)],
        );
        *KEEP
            .lock()
            .map_err(|_| "platform-filter: state poisoned".to_owned())? = Some(keep);
        Ok(())
    }
}

impl platforms::Guest for PlatformFilter {
    fn select(_request: Request, available: Vec<Platform>) -> Result<Vec<Platform>, String> {
        let guard = KEEP
            .lock()
            .map_err(|_| "platform-filter: state poisoned".to_owned())?;
        let keep = guard
            .as_ref()
            .ok_or("platform-filter: select called before init")?;
        Ok(available
            .into_iter()
            .filter(|p| {
                keep.iter()
                    .any(|k| k.matches(&p.os, &p.architecture, p.variant.as_deref()))
            })
            .collect())
    }
}

export!(PlatformFilter);
