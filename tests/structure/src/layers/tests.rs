use super::*;
use crate::graph::tests::load;

const BLOCK: &str = "
# wharf

```layers
# bottom up
model:    wharf-model
storage:  wharf::{store, gc}   # the content store and its collector
front:    wharf::registry
```
";

#[test]
fn the_block_lists_layers_bottom_up() {
    let map = parse_map(BLOCK).unwrap();
    assert_eq!(map.names, ["model", "storage", "front"]);
    let items: Vec<(&str, Option<&str>, usize)> = map
        .items
        .iter()
        .map(|i| (i.krate.as_str(), i.module.as_deref(), i.layer))
        .collect();
    assert_eq!(
        items,
        [
            ("wharf_model", None, 0),
            ("wharf", Some("store"), 1),
            ("wharf", Some("gc"), 1),
            ("wharf", Some("registry"), 2)
        ]
    );
}

#[test]
fn a_malformed_block_says_what_is_wrong() {
    assert!(parse_map("no block here")
        .unwrap_err()
        .contains("no ```layers block"));
    assert!(parse_map("```layers\nmodel wharf-model\n```")
        .unwrap_err()
        .contains("line 2"));
    assert!(parse_map("```layers\na: x\na: y\n```")
        .unwrap_err()
        .contains("listed twice"));
    assert!(parse_map("```layers\na: x::{b c}\n```")
        .unwrap_err()
        .contains("top-level module"));
    assert!(parse_map("```layers\na: x\n")
        .unwrap_err()
        .contains("no closing"));
}

fn workspace() -> Workspace {
    load(&[
        ("proxy/Cargo.toml", "[package]\nname = \"wharf\"\n"),
        (
            "proxy/src/lib.rs",
            "pub mod store;\npub mod gc;\npub mod registry;\n",
        ),
        (
            "proxy/src/store.rs",
            "use wharf_model::Digest;\npub struct Store;\n",
        ),
        (
            "proxy/src/gc.rs",
            "use crate::store::Store;\nfn f() { crate::registry::respond(); }\n",
        ),
        (
            "proxy/src/registry.rs",
            "use crate::gc;\npub fn respond() { gc::run(); }\n",
        ),
        (
            "proxy/model/Cargo.toml",
            "[package]\nname = \"wharf-model\"\n",
        ),
        ("proxy/model/src/lib.rs", "pub struct Digest;\n"),
    ])
}

#[test]
fn imports_from_a_lower_layer_to_a_higher_are_counted() {
    let ws = workspace();
    let map = parse_map(BLOCK).unwrap();
    let layer_of = assign(&ws, &map, "ARCHITECTURE.md").unwrap();
    let up: Vec<String> = upward(&ws, &layer_of)
        .into_iter()
        .map(|(a, b, names)| format!("{} -> {}: {:?}", ws.files[a].path, ws.files[b].path, names))
        .collect();
    assert_eq!(
        up,
        ["proxy/src/gc.rs -> proxy/src/registry.rs: {\"respond\"}"]
    );
}

#[test]
fn a_module_in_no_layer_fails_naming_where_to_add_it() {
    let ws = workspace();
    let map =
        parse_map("```layers\nmodel: wharf-model\nstorage: wharf::{store, gc, gone}\n```").unwrap();
    let problems = assign(&ws, &map, "ARCHITECTURE.md").unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("module `wharf::registry` (proxy/src/registry.rs) is in no layer: in ARCHITECTURE.md, add it"), "{}", problems[0]);
    assert!(
        problems[1].contains("line 3: `wharf::gone` names no top-level module"),
        "{}",
        problems[1]
    );
}

#[test]
fn a_crate_in_no_layer_fails_too() {
    let ws = workspace();
    let map =
        parse_map("```layers\nstorage: wharf::{store, gc}\nfront: wharf::registry\n```").unwrap();
    let problems = assign(&ws, &map, "ARCHITECTURE.md").unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("crate `wharf-model` (proxy/model) is in no layer"),
        "{}",
        problems[0]
    );
}
