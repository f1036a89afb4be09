//! No circles between the crate's modules, and the layers ARCHITECTURE.md states are kept.
//!
//! Each file under `src/` is a node. A file depends on another when it names a path into it:
//! a `use` tree or any path in the code (`crate::x::y`, `super::z`, `self::w`, also inside
//! attribute strings such as `schema_with = "crate::schema::any_json"`). A path resolves
//! to the deepest file it reaches; naming an item of a `mod.rs` is a dependency on that
//! `mod.rs`, while declaring a child module (`pub mod argo;`) is not. One test fails on any
//! group of files that reach each other, and names them; another on any file that names a
//! path into a layer above its own ([`LAYERS`]), and names the edge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["targets", "github", "app"]`) of every file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let mut parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            // `main.rs` is the binary: a client of the library, not part of its graph.
            if rel == Path::new("main.rs") {
                continue;
            }
            out.insert(parts, rel.to_path_buf());
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into flat paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{prefix}{}", p.trim())))
        .collect()
}

/// Every path the file names that starts at `crate`, `super` or `self`.
fn paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    // `use` trees, which may span lines and hold braces.
    while let Some(at) = rest.find("use ") {
        // A `use` item starts its line (after indentation and a visibility); the word in a
        // comment or a string does not.
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        let lead = rest[line_start..at].trim();
        rest = &rest[at + 4..];
        if !matches!(lead, "" | "pub" | "pub(crate)" | "pub(super)") {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree: String = rest[..end].split_whitespace().collect();
        if tree.starts_with("crate::") || tree.starts_with("super::") || tree.starts_with("self::")
        {
            out.extend(expand(&tree));
        } else {
            // `pub use route::X` in a `mod.rs`: a child module, named without `self::`.
            out.extend(expand(&format!("self::{tree}")));
        }
    }
    // Paths written in place.
    let bytes = text.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| start + e);
            out.push(text[start..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// The file a path leads into, from the file at module path `here`.
fn resolve(
    here: &[String],
    path: &str,
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    // `self` is the file's module (a `mod.rs` is its directory's), `super` its parent.
    let mut module: Vec<String> = here.to_vec();
    match segments.next()? {
        "crate" => module.clear(),
        "self" => {}
        "super" => {
            module.pop();
        }
        _ => return None,
    }
    let mut deepest = files.contains_key(&module).then(|| module.clone());
    for segment in segments {
        if segment == "super" {
            module.pop();
            deepest = files.contains_key(&module).then(|| module.clone());
            continue;
        }
        module.push(segment.to_string());
        if files.contains_key(&module) {
            deepest = Some(module.clone());
        } else {
            break;
        }
    }
    deepest
}

/// The layers, from the bottom: each module (a file, or a directory's files) and the name
/// ARCHITECTURE.md gives its layer. A file may depend on its own layer and those below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &[
            "event",
            "app_store_connect",
            "traces",
            "signature",
            "expr",
            "cost",
            "naming",
            "duration",
            "token_bucket",
            "adaptive_limit",
            "secrets",
            "egress",
            "replay",
            "fair_share",
            "health",
            "backoff",
            "admission",
            "leader",
            "conditions",
            "schema",
            "test_support",
        ],
    ),
    ("target kinds", &["targets"]),
    ("API types", &["api"]),
    ("compiled route", &["route", "matching"]),
    (
        "tables and settings",
        &[
            "routing",
            "route_cache",
            "stored",
            "rate_limit",
            "metrics",
            "config",
        ],
    ),
    ("shared context", &["context"]),
    ("receiver and controllers", &["server", "controller"]),
    ("wiring and commands", &["operator", "cli"]),
];

/// The layer of module `m` (its index in [`LAYERS`]), by its first path segment.
fn layer(m: &[String]) -> Option<usize> {
    let top = m.first()?;
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&top.as_str()))
}

/// Every file's module path, and the files it depends on.
type Graph = (
    BTreeMap<Vec<String>, PathBuf>,
    BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
);

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, rel) in &files {
        let text = std::fs::read_to_string(src.join(rel)).unwrap();
        // Inside the file's inline `mod tests`, `super` is the file itself.
        let text = match text.find("#[cfg(test)]\nmod ") {
            Some(at) => format!("{}{}", &text[..at], text[at..].replace("super::", "self::")),
            None => text,
        };
        let out = edges.entry(module.clone()).or_default();
        for path in paths(&text) {
            if let Some(to) = resolve(module, &path, &files).filter(|to| to != module) {
                out.insert(to);
            }
        }
    }
    (files, edges)
}

#[test]
fn no_module_cycles() {
    let (files, edges) = graph();
    let cycles = strongly_connected(&edges);
    let named: Vec<String> = cycles
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|m| files[m].display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(
        named.is_empty(),
        "modules that depend on each other:\n{}",
        named.join("\n")
    );
    // The check sees the graph at all: the receiver depends on the compiled route.
    let route = vec!["route".to_string()];
    let receiver = vec!["server".to_string(), "webhook".to_string()];
    assert!(
        edges.get(&receiver).is_some_and(|e| e.contains(&route)),
        "server/webhook.rs should depend on route/mod.rs: {:?}",
        edges.get(&receiver)
    );
}

#[test]
fn no_file_depends_on_a_layer_above_its_own() {
    let (files, edges) = graph();
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for (from, tos) in &edges {
        if from.is_empty() {
            continue; // lib.rs: the module list
        }
        let Some(here) = layer(from) else {
            unplaced.push(files[from].display().to_string());
            continue;
        };
        for to in tos {
            let Some(there) = layer(to) else { continue };
            if there > here {
                upward.push(format!(
                    "src/{} ({}) -> src/{} ({})",
                    files[from].display(),
                    LAYERS[here].0,
                    files[to].display(),
                    LAYERS[there].0
                ));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "files in no layer (add them to LAYERS and ARCHITECTURE.md): {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "files that depend on a layer above their own (ARCHITECTURE.md, Layers):\n{}",
        upward.join("\n")
    );
    // The receiver and the controllers are one layer, and neither names the other.
    let side = |m: &Vec<String>| m.first().cloned().unwrap_or_default();
    let across: Vec<String> = edges
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| {
            matches!(
                (side(from).as_str(), side(to).as_str()),
                ("server", "controller") | ("controller", "server")
            )
        })
        .map(|(from, to)| {
            format!(
                "src/{} -> src/{}",
                files[from].display(),
                files[to].display()
            )
        })
        .collect();
    assert!(
        across.is_empty(),
        "receiver and controllers depend on each other: {across:?}"
    );
}

#[test]
fn architecture_md_states_the_same_layers() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let layers = doc
        .split("## Layers")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a Layers section");
    // Each layer is a numbered item, in order, naming each of its modules.
    let mut missing = Vec::new();
    for (i, (name, modules)) in LAYERS.iter().enumerate() {
        let item = layers
            .split(&format!("\n{}. ", i + 1))
            .nth(1)
            .map(|rest| rest.split(&format!("\n{}. ", i + 2)).next().unwrap_or(rest))
            .unwrap_or("");
        for m in *modules {
            if !item.contains(&format!("`{m}")) {
                missing.push(format!("{m} in item {} ({name})", i + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's Layers do not name: {missing:?}"
    );
}

#[test]
fn the_layer_check_sees_an_upward_edge() {
    // The check is not vacuous: the receiver is above the compiled route, and the
    // compiled route's dependency on the receiver would be upward.
    let at = |m: &[&str]| layer(&m.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(at(&["route", "compile"]) < at(&["server", "webhook"]));
    assert!(at(&["event"]) < at(&["api", "route"]));
    assert_eq!(at(&["nowhere"]), None);
}

/// Tarjan's algorithm: the groups of more than one file that reach each other.
fn strongly_connected(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        groups: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.groups.push(group);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.groups
}

#[test]
fn use_trees_expand_and_paths_resolve() {
    assert_eq!(
        expand("super::{ApiRef,send::{Outcome,Class},webhook}"),
        [
            "super::ApiRef",
            "super::send::Outcome",
            "super::send::Class",
            "super::webhook"
        ]
    );
    let files: BTreeMap<Vec<String>, PathBuf> = [
        (vec![], "lib.rs"),
        (vec!["targets"], "targets/mod.rs"),
        (vec!["targets", "send"], "targets/send.rs"),
    ]
    .into_iter()
    .map(|(m, p)| (m.into_iter().map(String::from).collect(), PathBuf::from(p)))
    .collect();
    let argo = ["targets".to_string(), "argo".to_string()];
    let r = |p: &str| resolve(&argo, p, &files);
    assert_eq!(
        r("super::send::Outcome"),
        Some(vec!["targets".into(), "send".into()])
    );
    assert_eq!(r("super::ApiRef"), Some(vec!["targets".into()]));
    assert_eq!(
        r("crate::targets::send"),
        Some(vec!["targets".into(), "send".into()])
    );
    assert_eq!(r("std::fmt"), None);
}
