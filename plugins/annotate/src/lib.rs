//! `annotate`: a wharf manifest policy that adds fixed annotations to OCI image manifests and
//! indexes. Config and semantics: plugins/README.md.

mod annotations;

use std::sync::Mutex;

use annotations::Annotations;

wit_bindgen::generate!({
    path: "../../wit",
    world: "manifest-policy",
});

use exports::wharf::policy::{lifecycle, manifests};
use wharf::policy::log::{log, Level};
use wharf::policy::types::Request;

/// Set by `init`, which the host calls once per instance before any other call.
static ANNOTATIONS: Mutex<Option<Annotations>> = Mutex::new(None);

struct Annotate;

impl lifecycle::Guest for Annotate {
    fn init(config: String) -> Result<(), String> {
        let annotations = Annotations::parse(&config)?;
        log(
            Level::Info,
            "annotate ready",
            &[("keys".to_owned(), annotations.keys().join(","))],
        );
        *ANNOTATIONS
            .lock()
            .map_err(|_| "annotate: state poisoned".to_owned())? = Some(annotations);
        Ok(())
    }
}

impl manifests::Guest for Annotate {
    fn rewrite(
        _request: Request,
        media_type: String,
        manifest: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, String> {
        let guard = ANNOTATIONS
            .lock()
            .map_err(|_| "annotate: state poisoned".to_owned())?;
        let annotations = guard
            .as_ref()
            .ok_or("annotate: rewrite called before init")?;
        annotations.apply(&media_type, &manifest)
    }
}

export!(Annotate);
