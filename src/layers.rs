//! The crate's layers, checked: `policy` → `runtime`, `image` → `supervisor` → `commands` →
//! the binaries, with the small shared modules (`cli`, `logging`, files, ids) beneath all of
//! them. A module names only what lies beneath it; the binaries (src/bin) use whatever they
//! need. A test, since the layers are modules of one crate rather than crates of a workspace.

use std::path::Path;

/// The shared modules: they use nothing of the crate.
const SHARED: &[&str] = &[
    "atomic_file",
    "cli",
    "container_id",
    "locks",
    "logging",
    "private_file",
    "stop",
];

/// Each layer and the layers it may use (besides itself and [`SHARED`]).
const LAYERS: &[(&str, &[&str])] = &[
    ("policy", &[]),
    ("runtime", &["policy"]),
    ("image", &[]),
    ("supervisor", &["policy", "runtime", "image"]),
    ("commands", &["policy", "runtime"]),
];

/// Every `crate::<module>` named in the Rust files under `path`, as (file, module).
fn named_modules(path: &Path, found: &mut Vec<(String, String)>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("reading src/") {
            named_modules(&entry.expect("reading src/").path(), found);
        }
        return;
    }
    if !path.exists() || path.extension().is_none_or(|e| e != "rs") {
        return;
    }
    let text = std::fs::read_to_string(path).expect("reading a source file");
    assert!(
        !text.contains("crate::{"),
        "{}: `crate::{{...}}` hides which layers it uses: one `use` per module",
        path.display()
    );
    for (at, _) in text.match_indices("crate::") {
        // `bootstrap_runc::` and the like end in "crate::" too; only the keyword counts.
        if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let module: String = text[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        found.push((path.display().to_string(), module));
    }
}

fn uses(module: &str) -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    named_modules(&src.join(module), &mut found);
    named_modules(&src.join(format!("{module}.rs")), &mut found);
    found
}

#[test]
fn no_module_uses_one_above_it() {
    let mut wrong = Vec::new();
    for (layer, beneath) in LAYERS {
        for (file, used) in uses(layer) {
            if used != *layer
                && !beneath.contains(&used.as_str())
                && !SHARED.contains(&used.as_str())
            {
                wrong.push(format!("{file} uses crate::{used}"));
            }
        }
    }
    for shared in SHARED {
        for (file, used) in uses(shared) {
            if used != *shared {
                wrong.push(format!("{file} (shared) uses crate::{used}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways uses:\n{}",
        wrong.join("\n")
    );
}

/// The check sees a use: a test that cannot fail is no test.
#[test]
fn the_check_finds_what_a_module_uses() {
    assert!(uses("supervisor").iter().any(|(_, m)| m == "runtime"));
    assert!(uses("commands").iter().any(|(_, m)| m == "runtime"));
}
