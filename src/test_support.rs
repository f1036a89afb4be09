//! What the crate's unit tests share.

/// The body of a sample event from `tests/fixtures/samples/`.
pub fn sample(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
