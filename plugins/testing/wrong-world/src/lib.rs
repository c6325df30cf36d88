//! TEST ONLY: a component that exports `wharf-test:other/thing` and none of wharf's interfaces.

wit_bindgen::generate!({
    path: "wit",
    world: "other",
});

struct Plugin;

impl exports::wharf_test::other::thing::Guest for Plugin {
    fn hello() -> String {
        "not a wharf plugin".to_owned()
    }
}

export!(Plugin);
