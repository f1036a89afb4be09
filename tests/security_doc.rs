//! SECURITY.md names, for each claim, the test that proves it. This keeps those names true:
//! every `path.rs::test_name` (or `` `path.rs`: `test_name` ``) it cites must be a test
//! function in that file, so a renamed or deleted test fails here instead of leaving a claim
//! without proof.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// (file, test name) pairs cited in `text`.
fn citations(text: &str) -> Vec<(String, String)> {
    let text = text.replace('\n', " ");
    let mut found = Vec::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let is_path = |c: char| is_name(c) || c == '/' || c == '.';
    let mut rest = text.as_str();
    while let Some(at) = rest.find(".rs") {
        let start = rest[..at].rfind(|c: char| !is_path(c)).map_or(0, |i| i + 1);
        let path = format!("{}.rs", &rest[start..at]);
        let after = &rest[at + 3..];
        rest = after;
        if !(path.starts_with("tests/") || path.starts_with("src/") || path.starts_with("benches/"))
        {
            continue;
        }
        // `path.rs::tests::name` or `path.rs::name`.
        if let Some(tail) = after.strip_prefix("::") {
            let tail = tail.strip_prefix("tests::").unwrap_or(tail);
            let name: String = tail.chars().take_while(|c| is_name(*c)).collect();
            found.push((path, name));
            continue;
        }
        // `` `path.rs`: `name`, `name` ``
        if let Some(tail) = after.strip_prefix("`: ") {
            let mut names = tail;
            while let Some(inner) = names.strip_prefix('`') {
                let name: String = inner.chars().take_while(|c| is_name(*c)).collect();
                if name.is_empty() || !inner[name.len()..].starts_with('`') {
                    break;
                }
                found.push((path.clone(), name.clone()));
                names = inner[name.len() + 1..].trim_start_matches([',', ' ']);
            }
        }
    }
    found
}

#[test]
fn every_test_security_md_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("SECURITY.md")).unwrap();
    let cited = citations(&doc);
    assert!(cited.len() >= 30, "too few citations found: {cited:?}");
    let mut missing = Vec::new();
    for (path, name) in &cited {
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|_| panic!("SECURITY.md cites {path}, which does not exist"));
        if !source.contains(&format!("fn {name}(")) {
            missing.push(format!("{path}::{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "SECURITY.md cites tests that do not exist: {missing:?}"
    );
}

#[test]
fn citations_are_read_in_both_forms() {
    let text = "proved (tests/a.rs::one, src/b.rs::tests::two) and (`tests/c.rs`: `three`, `four`)";
    assert_eq!(
        citations(text),
        [
            ("tests/a.rs".to_string(), "one".to_string()),
            ("src/b.rs".to_string(), "two".to_string()),
            ("tests/c.rs".to_string(), "three".to_string()),
            ("tests/c.rs".to_string(), "four".to_string()),
        ]
    );
}
