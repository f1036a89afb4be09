//! `just bench`: the receiver's per-event work (verify the signature, parse the envelope,
//! match every rule of a realistic route, CEL included) measured against a baseline taken in
//! the same run: computing the HMAC alone. Reported as a ratio, so the number means the same
//! on any machine: how many HMACs one event costs.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use statused_operator::api::StatusedRoute;
use statused_operator::event::Envelope;
use statused_operator::route::compile::compile_route;
use statused_operator::secrets::SecretSet;
use statused_operator::signature;

fn time(iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/samples/build-valid.json"
    ))
    .expect("sample present");
    let secret = b"statused-test-secret";
    let header = signature::sign(secret, &body);
    let route: StatusedRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedRoute",
        "metadata": {"name": "mobile", "namespace": "ci"},
        "spec": {"signingSecrets": [{"name": "hook"}], "rules": [
            {"name": "a", "match": {"types": ["com.statused.app.status.updated"], "statuses": ["Ready for Sale"]},
             "targets": [{"webhook": {"url": "http://127.0.0.1:1/"}}]},
            {"name": "b", "match": {"statuses": ["Rejected"], "apps": ["Markdown*"]},
             "targets": [{"webhook": {"url": "http://127.0.0.1:1/"}}]},
            {"name": "c", "match": {"types": ["com.statused.build.status.updated"], "statuses": ["Valid"],
                                    "expression": "data.build_version != '' && data.version.startsWith('1.')"},
             "targets": [{"webhook": {"url": "http://127.0.0.1:1/"}}]},
            {"name": "d", "match": {"expression": "type.endsWith('.account.status.updated')"},
             "targets": [{"webhook": {"url": "http://127.0.0.1:1/"}}]}
        ]}
    }))
    .expect("valid route");
    let secrets = SecretSet::new("ci").with("hook", &[("secret", "statused-test-secret")]);
    let compiled = compile_route(&route, &secrets, &BTreeSet::new()).expect("route compiles");

    let iterations = 20_000;
    let baseline = time(iterations, || {
        black_box(signature::hmac_sha256_hex(
            black_box(secret),
            black_box(&body),
        ));
    });
    let event = time(iterations, || {
        signature::verify(Some(header.as_bytes()), &body, &compiled.signing_keys)
            .expect("verifies");
        let envelope = Envelope::parse(black_box(&body)).expect("parses");
        let (matched, _) = compiled.match_event(&envelope);
        assert_eq!(matched.len(), 1);
        black_box(matched);
    });
    println!(
        "baseline: HMAC-SHA256 of a {}-byte event: {baseline:?}",
        body.len()
    );
    println!("receiver: verify + parse + match 4 rules (2 CEL): {event:?}");
    println!(
        "ratio: {:.1} HMACs per event",
        event.as_secs_f64() / baseline.as_secs_f64()
    );
}
