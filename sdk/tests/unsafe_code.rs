//! The workspace denies `unsafe` code (`[workspace.lints]`), and one
//! function allows it: the snapshot mapping in `sdk/src/snapshot/mapped.rs`
//! (`docs/adr/0005-restore-without-building-the-heap.md`, point 6). `deny`
//! can be lifted by an `allow` anywhere; this test fails when another file
//! does, or when that file holds more than its one `unsafe` block, so a new
//! use comes with its own review (and an ADR).

use std::fs;
use std::path::{Path, PathBuf};

/// The only file allowed to allow `unsafe` code, from the workspace root.
const MAPPED: &str = "sdk/src/snapshot/mapped.rs";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_snapshot_mapping_allows_unsafe_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 100, "the walk found the workspace's sources");
    // Spelled in two pieces so that this file does not match itself.
    let allow = format!("allow({}_code)", "unsafe");
    let block = format!("{} {{", "unsafe");
    let mut allowing = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_default();
        if text.contains(&allow) || text.contains(&block) {
            let relative = file.strip_prefix(&root).unwrap_or(file);
            allowing.push(relative.to_string_lossy().into_owned());
        }
    }
    assert_eq!(allowing, [MAPPED], "files with unsafe code");
    let mapped = fs::read_to_string(root.join(MAPPED)).unwrap_or_default();
    assert_eq!(
        mapped.matches(&block).count(),
        1,
        "unsafe blocks in {MAPPED}"
    );
    assert_eq!(mapped.matches(&allow).count(), 1, "allows in {MAPPED}");
}
