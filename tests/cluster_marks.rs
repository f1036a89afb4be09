//! Which tests need the local cluster is written on the tests, not in the Justfile. Such a test
//! is `#[ignore = "needs ...: hack/just test"]`: a plain `cargo test` runs everything else and
//! lists it as ignored with that reason, and `hack/just test` runs it with `--ignored`, finding
//! its file with `hack/test-targets.sh`. This keeps both true for a file added later: every
//! ignored test says how to run it, and every file holding one is in exactly one of the
//! groups `just test` runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const HOW: &str = ": hack/just test\"]";

/// Integration-test targets as cargo finds them: `tests/NAME.rs` and `tests/NAME/main.rs`.
fn test_targets() -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.extension().is_some_and(|e| e == "rs") {
            found.insert(name, path);
        } else if path.join("main.rs").is_file() {
            found.insert(name, path.join("main.rs"));
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `#[ignore ...]` lines of a file, trimmed, with their line numbers.
fn ignores(source: &str) -> Vec<(usize, &str)> {
    source
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| l.starts_with("#[ignore"))
        .collect()
}

#[test]
fn every_ignored_test_says_what_it_needs_and_that_hack_just_test_runs_it() {
    let mut bad = Vec::new();
    for (_, path) in test_targets() {
        let source = std::fs::read_to_string(&path).unwrap();
        for (line, attr) in ignores(&source) {
            if !(attr.starts_with("#[ignore = \"needs ") && attr.ends_with(HOW)) {
                bad.push(format!("{}:{line}: {attr}", path.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "an ignored test must say what it needs and how to run it, in the form \
         `#[ignore = \"needs the local cluster: hack/just test\"]`, which \
         hack/test-targets.sh reads:\n{}",
        bad.join("\n")
    );

    // `just test` runs the ignored tests of tests/ only: an ignored unit test would never run.
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let in_src: Vec<String> = files
        .iter()
        .flat_map(|path| {
            let source = std::fs::read_to_string(path).unwrap();
            ignores(&source)
                .into_iter()
                .map(|(line, attr)| format!("{}:{line}: {attr}", path.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        in_src.is_empty(),
        "unit tests run without a cluster and are never ignored; a test that needs one \
         belongs in tests/:\n{}",
        in_src.join("\n")
    );
}

#[test]
fn just_test_runs_every_file_with_ignored_tests_in_exactly_one_cluster() {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for group in ["cluster", "bare", "image"] {
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("hack/test-targets.sh"))
            .arg(group)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "hack/test-targets.sh {group}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let mut words = printed.split_whitespace();
        while let Some(flag) = words.next() {
            assert_eq!(flag, "--test", "hack/test-targets.sh {group}: {printed}");
            groups
                .entry(words.next().unwrap().to_string())
                .or_default()
                .push(group);
        }
    }

    let targets = test_targets();
    for (name, path) in &targets {
        let source = std::fs::read_to_string(path).unwrap();
        let reasons = ignores(&source);
        let found = groups.remove(name).unwrap_or_default();
        if reasons.is_empty() {
            assert!(
                found.is_empty(),
                "{name}: no ignored test, yet in {found:?}"
            );
            continue;
        }
        assert_eq!(
            found.len(),
            1,
            "{name} has ignored tests, so `just test` must run it against exactly one \
             cluster; hack/test-targets.sh put it in {found:?}"
        );
        // One file, one cluster: a file's tests run in one `cargo test` invocation.
        let special = |attr: &str| {
            attr.contains(" without Tekton and Argo: ") || attr.contains("needs the operator image")
        };
        let kinds: Vec<bool> = reasons.iter().map(|(_, attr)| special(attr)).collect();
        assert!(
            kinds.iter().all(|k| *k == kinds[0]),
            "{name}: tests for a bare cluster or the image sit in a file of their own, since \
             `just test` runs a file against one cluster: {reasons:?}"
        );
    }
    assert!(
        groups.is_empty(),
        "hack/test-targets.sh names targets that do not exist: {groups:?}"
    );
}

/// The `test` recipe of the Justfile: its indented lines.
fn test_recipe() -> Vec<String> {
    let justfile = std::fs::read_to_string(Path::new(ROOT).join("Justfile")).unwrap();
    justfile
        .lines()
        .skip_while(|l| !l.starts_with("test:"))
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.starts_with('\t'))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn the_justfile_names_no_test_file_and_every_cluster_bench() {
    let recipe = test_recipe();
    assert!(!recipe.is_empty(), "no `test:` recipe in the Justfile");
    let by_hand: Vec<&String> = recipe
        .iter()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "--test" && !w[1].starts_with('$'))
        })
        .collect();
    assert!(
        by_hand.is_empty(),
        "`just test` lists test files by hand, so a new one would never run; mark the \
         tests `#[ignore = \"needs ...: hack/just test\"]` and let hack/test-targets.sh \
         find them:\n{by_hand:#?}"
    );

    // The benches that drive a cluster (they share benches/harness) have a smoke there.
    let mut benches = Vec::new();
    rust_files(&Path::new(ROOT).join("benches"), &mut benches);
    for path in benches {
        let source = std::fs::read_to_string(&path).unwrap();
        if path.parent().unwrap().ends_with("benches") && source.contains("mod harness;") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let runs = format!("cargo test --locked --bench {name}");
            assert!(
                recipe.iter().any(|l| l.contains(&runs)),
                "benches/{name}.rs needs the cluster; `just test` should run its smoke ({runs})"
            );
        }
    }
}
