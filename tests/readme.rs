//! The README's reference tables match the code: the metrics table lists exactly the families
//! the operator exports, with their types, and the layout table names every module, so a
//! metric or a file added later cannot go undocumented silently; the target kinds table has a
//! row per kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::collections::BTreeMap;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap()
}

/// The lines of the README section that starts with `heading`, up to the next heading.
fn section(readme: &str, heading: &str) -> Vec<String> {
    readme
        .lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .take_while(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_metrics_table_lists_every_exported_family_with_its_type() {
    let documented: BTreeMap<String, String> = section(&readme(), "### Metrics")
        .iter()
        .filter_map(|row| row.strip_prefix("| `statused_"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = format!("statused_{}", cells[0].trim_end_matches('`'));
            (name, cells[1].to_string())
        })
        .collect();
    assert!(!documented.is_empty(), "no metrics table under ### Metrics");

    let exposition = support::every_metric_family();
    let exported: BTreeMap<String, String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            // A counter's samples, and so its name in queries, end in `_total`.
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            (name, kind.to_string())
        })
        .collect();
    let differ = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| -> Vec<String> {
        a.iter()
            .filter(|(name, kind)| b.get(*name) != Some(*kind))
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect()
    };
    let undocumented = differ(&exported, &documented);
    let not_exported = differ(&documented, &exported);
    assert!(
        undocumented.is_empty() && not_exported.is_empty(),
        "README's metrics table lacks {undocumented:?} and lists {not_exported:?}, which \
         /metrics does not export so"
    );
}

/// Whether `name` is written in `lines` as code: `` `name` ``.
fn named(lines: &[String], name: &str) -> bool {
    let quoted = format!("`{name}`");
    lines.iter().any(|l| l.contains(&quoted))
}

#[test]
fn the_layout_table_names_every_module() {
    let layout = section(&readme(), "### Layout");
    assert!(!layout.is_empty(), "no ### Layout section");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !named(&layout, &format!("src/{name}/")) {
                missing.push(format!("src/{name}/"));
            }
            // In the directories with one concern per file, each file has its word there,
            // except target kinds (a file per kind: the kinds table lists them) and the
            // shared target files, which ARCHITECTURE.md lists.
            if name == "targets" {
                continue;
            }
            // And one level deeper (the executor's folder in `controller/`).
            let files = std::fs::read_dir(&path).unwrap().flat_map(|f| {
                let f = f.unwrap().path();
                match f.is_dir() {
                    true => std::fs::read_dir(&f)
                        .unwrap()
                        .map(|g| g.unwrap().path())
                        .chain([f])
                        .collect(),
                    false => vec![f],
                }
            });
            for file in files {
                let mut file_name = file.file_name().unwrap().to_string_lossy().to_string();
                if file.is_dir() {
                    file_name.push('/');
                }
                if file_name != "mod.rs" && !named(&layout, &file_name) {
                    let rel = file.strip_prefix(Path::new(ROOT).join("src")).unwrap();
                    missing.push(format!("src/{}", rel.display()));
                }
            }
        } else if !named(&layout, &format!("src/{name}")) {
            missing.push(format!("src/{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "README's layout table does not name: {missing:?}"
    );
}

#[test]
fn the_kinds_table_has_a_row_per_target_kind() {
    let rows: Vec<String> = section(&readme(), "### Target kinds")
        .iter()
        .filter_map(|row| row.strip_prefix("| `"))
        .filter_map(|row| row.split_once('`'))
        .map(|(kind, _)| kind.to_string())
        .collect();
    let names = statused_operator::api::route::TargetKind::names();
    let missing: Vec<_> = names
        .iter()
        .filter(|k| !rows.contains(&k.to_string()))
        .collect();
    let unknown: Vec<_> = rows
        .iter()
        .filter(|k| !names.contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README's target kinds table lacks {missing:?} and lists {unknown:?}, which is no kind"
    );
}
