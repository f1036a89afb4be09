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

/// Every list in the CRDs has a `maxItems` and every map a `maxProperties`, so that no route,
/// delivery or request can grow without bound on the API server (the route compiler checks
/// a route's bounds again, for an API server whose CRD predates one). Free-form values
/// (`x-kubernetes-preserve-unknown-fields`) are what their field's own check bounds.
#[test]
fn every_list_and_map_in_the_crds_is_bounded() {
    fn walk(schema: &serde_json::Value, path: &str, unbounded: &mut Vec<String>) {
        let Some(map) = schema.as_object() else {
            return;
        };
        let free_form = map.get("x-kubernetes-preserve-unknown-fields")
            == Some(&serde_json::Value::Bool(true))
            && !map.contains_key("properties")
            && !map.contains_key("items");
        if free_form {
            return;
        }
        if map.get("type").and_then(|t| t.as_str()) == Some("array")
            && !map.contains_key("maxItems")
        {
            unbounded.push(format!("{path} (array without maxItems)"));
        }
        let additional = map.get("additionalProperties");
        if additional.is_some_and(|a| *a != serde_json::Value::Bool(false))
            && !map.contains_key("maxProperties")
        {
            unbounded.push(format!("{path} (map without maxProperties)"));
        }
        for (name, child) in map
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            walk(child, &format!("{path}.{name}"), unbounded);
        }
        if let Some(items) = map.get("items") {
            walk(items, &format!("{path}[]"), unbounded);
        }
        if let Some(values) = additional {
            walk(values, &format!("{path}{{}}"), unbounded);
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            for child in map
                .get(key)
                .and_then(|c| c.as_array())
                .into_iter()
                .flatten()
            {
                walk(child, path, unbounded);
            }
        }
    }
    let yaml = statused_operator::cli::crd::crds_yaml().unwrap();
    let mut unbounded = Vec::new();
    let mut walked = 0;
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            walked += 1;
            walk(
                &version["schema"]["openAPIV3Schema"],
                &format!("{kind} {}", version["name"].as_str().unwrap_or_default()),
                &mut unbounded,
            );
        }
    }
    assert!(walked >= 3, "walked {walked} CRD versions");
    assert!(
        unbounded.is_empty(),
        "unbounded in the CRDs:\n{}",
        unbounded.join("\n")
    );
}

/// `status.recentRedeliveryRequests` holds what the redelivery controller keeps.
#[test]
fn the_recent_redelivery_requests_bound_is_what_the_controller_keeps() {
    assert_eq!(
        statused_operator::api::delivery::MAX_RECENT_REDELIVERY_REQUESTS,
        statused_operator::controller::redeliver::RECENT_REQUESTS
    );
}
