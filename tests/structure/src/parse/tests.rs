use super::*;

fn s(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn use_paths(parsed: &Parsed) -> Vec<String> {
    parsed
        .uses
        .iter()
        .map(|u| {
            if u.glob {
                format!("{}::*", u.path.join("::"))
            } else {
                u.path.join("::")
            }
        })
        .collect()
}

fn code_paths(parsed: &Parsed) -> Vec<String> {
    parsed.paths.iter().map(|p| p.segs.join("::")).collect()
}

#[test]
fn grouped_uses_become_one_leaf_each() {
    let parsed = parse("use crate::{a::X, b::{self, Y as Z, c::*}, d};");
    assert_eq!(
        use_paths(&parsed),
        [
            "crate::a::X",
            "crate::b",
            "crate::b::Y",
            "crate::b::c::*",
            "crate::d"
        ]
    );
    let bound: Vec<Option<&str>> = parsed.uses.iter().map(|u| u.bound.as_deref()).collect();
    assert_eq!(bound, [Some("X"), Some("b"), Some("Z"), None, Some("d")]);
    assert!(parsed.uses.iter().all(|u| !u.public));
}

#[test]
fn super_chains_self_and_rooted_paths() {
    let parsed =
        parse("use super::super::scope::Actions;\nuse self::inner::Thing as _;\nuse ::std::fmt;");
    assert_eq!(
        parsed.uses[0].path,
        s(&["super", "super", "scope", "Actions"])
    );
    assert_eq!(parsed.uses[1].bound, None, "`as _` binds no name");
    assert_eq!(parsed.uses[1].path, s(&["self", "inner", "Thing"]));
    assert_eq!(parsed.uses[2].path, s(&["::", "std", "fmt"]));
}

#[test]
fn re_exports_are_public() {
    let parsed = parse("pub use fs::FsStore;\npub(crate) use blobs::{blob_head, blob_response};\nuse place::Place;");
    let public: Vec<bool> = parsed.uses.iter().map(|u| u.public).collect();
    assert_eq!(public, [true, true, true, false]);
}

#[test]
fn paths_in_bodies() {
    let src = "
        fn f(x: &super::Foo) -> crate::meta::Meta {
            crate::metrics::joined(1);
            let v = x.iter().collect::<Vec<_>>();
            let m = Vec::<u8>::new();
            let s = <T as crate::store::Provider>::open;
            super::super::gc::mark(&v)
        }
        pub(in crate::registry) fn g() {}
    ";
    let parsed = parse(src);
    assert_eq!(
        code_paths(&parsed),
        [
            "super::Foo",
            "crate::meta::Meta",
            "crate::metrics::joined",
            "crate::store::Provider",
            "super::super::gc::mark"
        ]
    );
}

#[test]
fn macro_crate_is_the_defining_crate() {
    let parsed = parse("macro_rules! m { () => { $crate::metrics::count() }; }");
    assert_eq!(code_paths(&parsed), ["crate::metrics::count"]);
}

#[test]
fn comments_and_strings_name_nothing() {
    let src = r#"
        // use crate::commented::Out;
        /* crate::block::Out */
        /// See [`crate::doc::Link`].
        const HELP: &str = "set crate::config::Key in wharf.toml";
        use crate::real::Kept;
    "#;
    let parsed = parse(src);
    assert_eq!(use_paths(&parsed), ["crate::real::Kept"]);
    assert!(parsed.paths.is_empty(), "{:?}", parsed.paths);
}

#[test]
fn test_only_items_are_skipped() {
    let src = "
        use crate::kept::A;
        #[cfg(test)]
        mod tests {
            use super::*;
            use crate::test_only::B;
            fn t() { crate::test_only::c(); }
        }
        #[cfg(test)]
        mod more_tests;
        #[cfg(test)]
        pub(super) fn helper() -> crate::test_only::D { todo!() }
        #[cfg(all(test, unix))]
        use crate::test_only::E;
        #[cfg(not(test))]
        use crate::kept::F;
        fn after() { crate::kept::g(); }
    ";
    let parsed = parse(src);
    assert_eq!(use_paths(&parsed), ["crate::kept::A", "crate::kept::F"]);
    assert_eq!(code_paths(&parsed), ["crate::kept::g"]);
    assert!(parsed.mods.is_empty(), "{:?}", parsed.mods);
}

#[test]
fn a_test_only_file_is_empty() {
    let parsed = parse("//! tests\n#![cfg(test)]\nuse crate::x::Y;\nmod z;");
    assert!(parsed.uses.is_empty() && parsed.mods.is_empty());
}

#[test]
fn module_declarations_and_inline_scopes() {
    let src = r#"
        mod a;
        pub mod b;
        #[path = "sys_linux.rs"]
        pub(crate) mod sys;
        mod inline {
            use super::a::X;
            mod deeper;
            fn f() { self::deeper::g(); }
        }
        use b::Y;
    "#;
    let parsed = parse(src);
    let mods: Vec<(Scope, &str, Option<&str>)> = parsed
        .mods
        .iter()
        .map(|m| (m.scope.clone(), m.name.as_str(), m.path_attr.as_deref()))
        .collect();
    assert_eq!(
        mods,
        [
            (vec![], "a", None),
            (vec![], "b", None),
            (vec![], "sys", Some("sys_linux.rs")),
            (s(&["inline"]), "deeper", None)
        ]
    );
    assert_eq!(parsed.inline_mods, [s(&["inline"])]);
    let scopes: Vec<&Scope> = parsed.uses.iter().map(|u| &u.scope).collect();
    assert_eq!(scopes, [&s(&["inline"]), &vec![]]);
    assert_eq!(parsed.paths[0].scope, s(&["inline"]));
}

#[test]
fn serde_attributes_name_functions() {
    let src = r#"
        #[derive(Deserialize)]
        struct C {
            #[serde(default, deserialize_with = "crate::mirror::platforms::de_mirror_platforms")]
            platforms: Vec<String>,
            #[serde(default = "default_timeout", rename = "a::b")]
            timeout: u64,
        }
    "#;
    let parsed = parse(src);
    assert_eq!(
        code_paths(&parsed),
        ["crate::mirror::platforms::de_mirror_platforms"]
    );
}
