//! TEST ONLY: a manifest rewrite that does what its config says, to test what the host accepts from a
//! rewrite. Config (JSON), one of:
//!
//! - `{"child": DESCRIPTOR, "layer": DESCRIPTOR}` (either may be left out): appends `child` to an
//!   index's `manifests`, `layer` to an image manifest's `layers`, naming whatever content the test
//!   wants: content that is nowhere, another repository's private manifest or blob, or content the
//!   original names already. A manifest with nothing to add is left as it is.
//! - `{"bytes": N}`: returns N bytes, whatever the input: an allocation the component never writes
//!   (see `unwritten`), so its pages cost nothing until the host reads them. The tests measure what
//!   the host does with a large answer, not what the guest paid for it.

use std::sync::Mutex;

use serde_json::Value;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "manifest-policy",
});

use exports::wharf::policy::{lifecycle, manifests};
use wharf::policy::types::Request;

enum Action {
    Add {
        child: Option<Value>,
        layer: Option<Value>,
    },
    Bytes(usize),
}

static ACTION: Mutex<Option<Action>> = Mutex::new(None);

struct Plugin;

impl lifecycle::Guest for Plugin {
    fn init(config: String) -> Result<(), String> {
        let v: Value =
            serde_json::from_str(&config).map_err(|e| format!("config is not JSON: {e}"))?;
        let action = if let Some(n) = v.get("bytes").and_then(Value::as_u64) {
            Action::Bytes(n as usize)
        } else if v.get("child").is_some() || v.get("layer").is_some() {
            Action::Add {
                child: v.get("child").cloned(),
                layer: v.get("layer").cloned(),
            }
        } else {
            return Err(
                "config needs \"child\" or \"layer\" (descriptors) or \"bytes\" (a count)".into(),
            );
        };
        *ACTION.lock().map_err(|_| "state poisoned")? = Some(action);
        Ok(())
    }
}

impl manifests::Guest for Plugin {
    fn rewrite(
        _request: Request,
        _media_type: String,
        manifest: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, String> {
        let guard = ACTION.lock().map_err(|_| "state poisoned")?;
        match guard.as_ref().ok_or("rewrite called before init")? {
            Action::Bytes(n) => Ok(Some(unwritten(*n)?)),
            Action::Add { child, layer } => {
                let mut m: Value = serde_json::from_slice(&manifest)
                    .map_err(|e| format!("the manifest is not JSON: {e}"))?;
                let (list, added) = if m.get("manifests").is_some() {
                    ("manifests", child)
                } else {
                    ("layers", layer)
                };
                let Some(added) = added else {
                    return Ok(None);
                };
                m[list]
                    .as_array_mut()
                    .ok_or_else(|| format!("the manifest's {list} is not a list"))?
                    .push(added.clone());
                serde_json::to_vec(&m).map(Some).map_err(|e| e.to_string())
            }
        }
    }
}

/// `n` bytes of heap that this component never writes. A large allocation comes from fresh pages
/// (`memory.grow`, zeroed by WebAssembly), but `vec![0; n]` would memset them (wasi-libc's calloc
/// clears whatever sbrk gave it), making every page resident in wharf's process before the host
/// sees a byte. Nothing in this component reads the bytes; the host reads them as wasm memory, which
/// is always defined. TEST ONLY: a real plugin has no reason to do this.
fn unwritten(n: usize) -> Result<Vec<u8>, String> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(n).map_err(|e| e.to_string())?;
    // SAFETY: `layout` has a non-zero size; the pointer is checked; the Vec owns an allocation of
    // exactly `layout` from the global allocator, so dropping it (or the canonical ABI's
    // post-return, which frees it with the same size and alignment) frees it correctly.
    unsafe {
        let p = std::alloc::alloc(layout);
        if p.is_null() {
            return Err(format!("cannot allocate {n} bytes"));
        }
        Ok(Vec::from_raw_parts(p, n, n))
    }
}

export!(Plugin);
