//! The checked-in CRDs are exactly what the Rust types generate.

use serde::Deserialize;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = statused_operator::cli::crd::crds_yaml().unwrap();
    let chart = statused_operator::cli::crd::chart_crds_yaml().unwrap();
    for (path, generated) in [
        ("crds/statused.dev.yaml", &generated),
        ("charts/statused-operator/templates/crds.yaml", &chart),
    ] {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        let checked_in = std::fs::read_to_string(&full).unwrap_or_default();
        assert!(
            checked_in == *generated,
            "{path} is out of date with src/api: regenerate with `just crds`"
        );
    }
}

/// No `enum` in a CRD schema lists null: kubectl's validation of the CRD itself refuses it
/// ("unknown object type nil"), so the chart would not install. (An `Option` of a unit enum
/// makes schemars write one; such fields are plain enums with a default instead.)
#[test]
fn no_schema_enum_lists_null() {
    fn walk(v: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(values)) = map.get("enum")
                    && values.iter().any(serde_json::Value::is_null)
                {
                    found.push(path.to_string());
                }
                for (k, child) in map {
                    walk(child, &format!("{path}.{k}"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), found);
                }
            }
            _ => {}
        }
    }
    let yaml = statused_operator::cli::crd::crds_yaml().unwrap();
    let mut found = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        walk(&crd, &crd["metadata"]["name"].to_string(), &mut found);
    }
    assert!(found.is_empty(), "enums listing null: {found:?}");
}
