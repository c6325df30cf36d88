//! The files `wharf plugins new` writes, per language (`{{name}}` is the plugin's name). The WIT is
//! added from `wit/policy.wit` itself.

pub const RUST: &[(&str, &str)] = &[
    (".gitignore", include_str!("templates/rust/.gitignore")),
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("README.md", include_str!("templates/rust/README.md")),
    ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
];

pub const PYTHON: &[(&str, &str)] = &[
    (".gitignore", include_str!("templates/python/.gitignore")),
    ("README.md", include_str!("templates/python/README.md")),
    ("app.py", include_str!("templates/python/app.py")),
];

pub const JS: &[(&str, &str)] = &[
    (".gitignore", include_str!("templates/js/.gitignore")),
    ("README.md", include_str!("templates/js/README.md")),
    ("build.mjs", include_str!("templates/js/build.mjs")),
    ("package.json", include_str!("templates/js/package.json")),
    ("policy.js", include_str!("templates/js/policy.js")),
];
