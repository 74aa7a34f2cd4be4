#![no_main]

//! Artifact globs: the walk prunes directories it believes no pattern can reach; a
//! reference that walks everything and matches every file must select the same files.
//! Selected paths never climb out of the base directory.

#[allow(dead_code)]
#[path = "../../agent/src/build/artifacts.rs"]
mod artifacts;

use std::collections::BTreeSet;
use std::path::Path;

use globset::GlobBuilder;
use libfuzzer_sys::arbitrary::{self, Arbitrary};

#[derive(Debug, Arbitrary)]
struct Input {
    files: Vec<String>,
    excludes: Vec<String>,
    /// Indexes into a small set of names, so that paths share directories.
    tree: Vec<Vec<u8>>,
}

const NAMES: &[&str] = &["a", "b", ".c", "d.txt", "e f", "[x]", "a.b"];

libfuzzer_sys::fuzz_target!(|input: Input| {
    let files: Vec<String> = input.files.into_iter().take(4).collect();
    let excludes: Vec<String> = input.excludes.into_iter().take(3).collect();
    if files.is_empty() || files.iter().chain(&excludes).any(|p| p.len() > 40) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut all = BTreeSet::new();
    for path in input.tree.iter().take(10) {
        let parts: Vec<&str> = path
            .iter()
            .take(4)
            .map(|&i| NAMES[usize::from(i) % NAMES.len()])
            .collect();
        if parts.is_empty() {
            continue;
        }
        let rel = parts.join("/");
        let full = root.join(&rel);
        // A name already used as a directory (or a file) cannot be both.
        if std::fs::create_dir_all(full.parent().unwrap()).is_err() || full.is_dir() {
            continue;
        }
        if std::fs::write(&full, b"x").is_ok() {
            all.insert(rel);
        }
    }
    // A file may have been turned into nothing by a later directory of the same name.
    all.retain(|rel| root.join(rel).is_file());

    let spec = artifacts::ArtifactSpec {
        files: &files,
        base_directory: None,
        discard_paths: false,
        exclude_paths: &excludes,
        enable_symlinks: false,
    };
    let Some(want) = reference(&files, &excludes, &all) else {
        return;
    };
    match artifacts::select(root, &[root.to_path_buf()], &spec) {
        Ok(selected) => {
            let got: BTreeSet<String> = selected.iter().map(|s| s.relative.clone()).collect();
            for rel in &got {
                assert!(
                    !rel.starts_with('/') && !rel.split('/').any(|c| c == ".." || c == "."),
                    "{rel}"
                );
            }
            assert!(
                !want.1,
                "every pattern matched, but the reference left one unmatched: {files:?}"
            );
            assert_eq!(
                got, want.0,
                "files {files:?} excludes {excludes:?} tree {all:?}"
            );
        }
        Err(artifacts::ArtifactError::NoMatch { patterns }) => {
            assert!(!patterns.is_empty());
            assert!(
                want.1,
                "selection found no match for {patterns:?} but the reference did: {:?}",
                want.0
            );
        }
        Err(_) => {}
    }
});

/// Every file matched by a pattern and not excluded; `None` when a pattern is refused
/// (absolute, `..`, invalid glob), which `select` reports itself. The flag: some pattern
/// matched nothing.
fn reference(
    files: &[String],
    excludes: &[String],
    all: &BTreeSet<String>,
) -> Option<(BTreeSet<String>, bool)> {
    let compile = |raw: &str| -> Option<Vec<globset::GlobMatcher>> {
        if raw.trim().is_empty() || raw.starts_with('/') {
            return None;
        }
        let parts: Vec<&str> = raw
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return None;
        }
        let norm = parts.join("/");
        let globs = if norm.is_empty() {
            vec!["**".to_string()]
        } else if norm.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            vec![norm]
        } else {
            vec![format!("{norm}/**"), norm]
        };
        globs
            .iter()
            .map(|g| {
                GlobBuilder::new(g)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .ok()
                    .map(|g| g.compile_matcher())
            })
            .collect()
    };
    let files: Vec<Vec<_>> = files.iter().map(|p| compile(p)).collect::<Option<_>>()?;
    let excludes: Vec<_> = excludes
        .iter()
        .map(|p| compile(p))
        .collect::<Option<Vec<_>>>()?;
    let mut matched = vec![false; files.len()];
    let mut out = BTreeSet::new();
    for rel in all {
        let path = Path::new(rel);
        // An excluded file counts for no pattern, as the walk never looks at it.
        if excludes.iter().flatten().any(|g| g.is_match(path)) {
            continue;
        }
        for (i, globs) in files.iter().enumerate() {
            if globs.iter().any(|g| g.is_match(path)) {
                matched[i] = true;
                out.insert(rel.clone());
            }
        }
    }
    Some((out, matched.contains(&false)))
}
