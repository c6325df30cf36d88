use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// The workspace of `(path, contents)` pairs, written to a fresh directory (removed once read).
pub(crate) fn load(files: &[(&str, &str)]) -> Workspace {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wharf-structure-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let ws = Workspace::load(&dir);
    let _ = fs::remove_dir_all(&dir);
    ws.unwrap()
}

const WHARF: (&str, &str) = ("proxy/Cargo.toml", "[package]\nname = \"wharf\"\n");

/// Edges as `from -> to: names`, paths under `proxy/src/` shortened.
fn edges(ws: &Workspace) -> Vec<String> {
    let short = |id: FileId| {
        ws.files[id]
            .path
            .trim_start_matches("proxy/src/")
            .to_owned()
    };
    ws.edges
        .iter()
        .map(|((a, b), names)| {
            format!(
                "{} -> {}: {}",
                short(*a),
                short(*b),
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

#[test]
fn a_parent_and_a_child_that_import_each_other_are_a_cycle() {
    let ws = load(&[
        WHARF,
        ("proxy/src/lib.rs", "pub mod store;\n"),
        (
            "proxy/src/store.rs",
            "mod fs;\npub use fs::FsStore;\npub trait Provider {}\n",
        ),
        (
            "proxy/src/store/fs.rs",
            "use super::Provider;\npub struct FsStore;\nimpl Provider for FsStore {}\n",
        ),
    ]);
    assert_eq!(
        edges(&ws),
        [
            "store.rs -> store/fs.rs: FsStore",
            "store/fs.rs -> store.rs: Provider"
        ]
    );
    let cycles = ws.cycles(0);
    assert_eq!(cycles.len(), 1);
    assert_eq!(
        cycles[0]
            .iter()
            .map(|&f| ws.files[f].path.as_str())
            .collect::<Vec<_>>(),
        ["proxy/src/store.rs", "proxy/src/store/fs.rs"]
    );
}

#[test]
fn a_sibling_for_the_shared_items_breaks_it() {
    let ws = load(&[
        WHARF,
        ("proxy/src/lib.rs", "pub mod store;\n"),
        (
            "proxy/src/store.rs",
            "mod fs;\nmod roles;\npub use fs::FsStore;\npub use roles::Provider;\n",
        ),
        ("proxy/src/store/roles.rs", "pub trait Provider {}\n"),
        (
            "proxy/src/store/fs.rs",
            "use super::Provider;\npub struct FsStore;\nimpl Provider for FsStore {}\n",
        ),
    ]);
    // fs.rs names `super::Provider`, which store.rs only re-exports: the edge goes where it is defined.
    assert_eq!(
        edges(&ws),
        [
            "store.rs -> store/fs.rs: FsStore",
            "store.rs -> store/roles.rs: Provider",
            "store/fs.rs -> store/roles.rs: Provider"
        ]
    );
    assert!(ws.cycles(0).is_empty());
}

#[test]
fn paths_resolve_to_the_deepest_module_file() {
    let ws = load(&[
        WHARF,
        ("proxy/src/lib.rs", "pub mod meta;\npub mod gc;\npub mod metrics;\n"),
        ("proxy/src/meta.rs", "pub mod push;\npub struct Meta;\n"),
        ("proxy/src/meta/push.rs", "pub struct Delivery;\n"),
        ("proxy/src/metrics/mod.rs", "pub fn joined() {}\n"),
        (
            "proxy/src/gc.rs",
            "use crate::meta;\nuse crate::metrics as m;\nfn f(d: meta::push::Delivery) { crate::metrics::joined(); m::joined(); }\n",
        ),
    ]);
    // `use crate::meta;` alone is no edge to meta.rs: only meta/push.rs is used through it.
    assert_eq!(
        edges(&ws),
        [
            "gc.rs -> meta/push.rs: Delivery",
            "gc.rs -> metrics/mod.rs: joined"
        ]
    );
}

#[test]
fn test_modules_and_embedded_templates_are_not_part_of_the_crate() {
    let ws = load(&[
        WHARF,
        ("proxy/src/lib.rs", "pub mod a;\npub mod b;\n"),
        ("proxy/src/a.rs", "#[cfg(test)]\nmod tests;\npub fn f() {}\n#[cfg(test)]\nmod more { use crate::b::G; }\n"),
        ("proxy/src/a/tests.rs", "use crate::b::G;\n"),
        ("proxy/src/b.rs", "pub struct G;\nfn g() { crate::a::f(); }\n"),
        ("proxy/src/b/templates/rust/Cargo.toml", "[package]\nname = \"template\"\n"),
        ("proxy/src/b/templates/rust/src/lib.rs", "use crate::x::Y;\n"),
    ]);
    assert_eq!(ws.crates.len(), 1, "a Cargo.toml under src/ is data");
    assert_eq!(edges(&ws), ["b.rs -> a.rs: f"]);
    assert_eq!(ws.files.len(), 3);
}

#[test]
fn other_crates_of_the_workspace_are_reached_through_re_exports() {
    let ws = load(&[
        WHARF,
        ("proxy/src/lib.rs", "pub mod registry;\npub use wharf_model::digest;\npub use wharf_model::digest::Digest;\n"),
        ("proxy/src/registry.rs", "use crate::Digest;\nfn f() { crate::digest::parse(); }\n"),
        ("proxy/src/main.rs", "use wharf::registry;\nfn main() { registry::serve(); }\n"),
        ("proxy/model/Cargo.toml", "[package]\nname = \"wharf-model\"\n"),
        ("proxy/model/src/lib.rs", "pub mod digest;\n"),
        ("proxy/model/src/digest.rs", "pub struct Digest;\n"),
    ]);
    let packages: Vec<&str> = ws.crates.iter().map(|c| c.package.as_str()).collect();
    assert_eq!(packages, ["wharf", "wharf-model"]);
    assert_eq!(
        edges(&ws),
        [
            "lib.rs -> proxy/model/src/digest.rs: Digest, digest",
            "registry.rs -> proxy/model/src/digest.rs: Digest, parse",
            "main.rs -> registry.rs: serve",
        ]
    );
}

#[test]
fn inline_modules_and_path_attributes() {
    let ws = load(&[
        WHARF,
        ("proxy/src/lib.rs", "pub mod zerocopy;\n#[path = \"platform/linux.rs\"]\nmod sys;\n"),
        ("proxy/src/zerocopy.rs", "mod sys_inner {\n    pub fn send() { super::super::sys::raw(); }\n}\npub fn go() { sys_inner::send(); }\n"),
        ("proxy/src/platform/linux.rs", "pub fn raw() {}\n"),
    ]);
    assert_eq!(edges(&ws), ["zerocopy.rs -> platform/linux.rs: raw"]);
    assert!(ws.missing.is_empty(), "{:?}", ws.missing);
}
