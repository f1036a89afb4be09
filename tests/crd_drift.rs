//! The checked-in CRDs are exactly what the Rust types generate.

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = statused_operator::cli::crd::crds_yaml().unwrap();
    for path in [
        "crds/statused.dev.yaml",
        "charts/statused-operator/crds/statused.dev.yaml",
    ] {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        let checked_in = std::fs::read_to_string(&full).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{path} is out of date with src/api: regenerate with `just crds`"
        );
    }
}
