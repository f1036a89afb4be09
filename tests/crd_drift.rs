//! The checked-in CRDs are exactly what the Rust types generate.

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
