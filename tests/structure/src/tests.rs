//! The checks themselves, over the checkout `root()` names.

use super::*;

fn workspace() -> (PathBuf, Workspace) {
    let root = root();
    match Workspace::load(&root) {
        Ok(ws) => (root, ws),
        Err(e) => panic!("cannot read the crates of {}: {e}", root.display()),
    }
}

#[test]
fn no_import_cycle_inside_any_crate() {
    let (root, ws) = workspace();
    let (report, cycles) = cycle_report(&ws);
    println!("{}:\n{report}", root.display());
    assert!(
        cycles == 0,
        "files of a crate import each other in a cycle ({}):\n{report}",
        root.display()
    );
}

#[test]
fn layers_import_downward() {
    let (root, ws) = workspace();
    let file = layers_file(&root);
    let markdown =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let block_at = format!("the ```layers block of {}", file.display());
    let (report, upward) = match layer_report(&ws, &markdown, &block_at) {
        Ok(found) => found,
        Err(problems) => panic!("the layer map does not cover the crates:\n{problems}"),
    };
    println!("{}:\n{report}", root.display());
    assert!(
        upward <= MAX_UPWARD_IMPORTS,
        "too many imports from a lower layer to a higher ({}):\n{report}",
        root.display()
    );
}
