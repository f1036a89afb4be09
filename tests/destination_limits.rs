//! Limits per destination, against the real API server with the operator under the chart's
//! RBAC and loopback stand-ins: a 429 with `Retry-After` pauses every delivery's calls to that
//! destination, not only the one that got it, while other destinations go on; the pause is
//! visible on the waiting target and in a metric; `maxConcurrent` bounds calls in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample_with_id};

async fn env(prefix: &str) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env
}

fn route(targets: serde_json::Value) -> serde_json::Value {
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{"name": "builds",
                   "match": {"types": ["com.statused.build.status.updated"]},
                   "targets": targets}],
    })
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_429_pauses_every_call_to_its_destination_and_no_other() {
    let limited = Sink::start(204).await;
    limited.answer_with_header(429, "Retry-After", "5");
    let other = Sink::start(204).await;
    let env = env("dest-pause").await;
    let targets = json!([
        {"webhook": {"url": format!("{}/a", limited.url())}},
        {"webhook": {"url": format!("{}/b", other.url())}},
    ]);
    let op = env.operator_with_route("r", route(targets)).await;

    let first = sample_with_id("build-valid.json", "ev-first");
    let (code, answer) = env.post_signed(&op, "r", &first, SIGNING_SECRET).await;
    assert_eq!(code, 202, "{answer}");
    let first_name = answer["delivery"].as_str().unwrap().to_string();
    let refused_at = eventually("the 429", || async {
        limited.requests().first().map(|r| r.at)
    })
    .await;

    // A second event, while the destination is paused: its call there waits too, and says
    // why; its other target is called at once.
    let second = sample_with_id("build-valid.json", "ev-second");
    let (code, answer) = env.post_signed(&op, "r", &second, SIGNING_SECRET).await;
    assert_eq!(code, 202, "{answer}");
    let second_name = answer["delivery"].as_str().unwrap().to_string();
    let waiting = eventually("the second delivery's paused target", || async {
        let d = env.deliveries().get(&second_name).await.ok()?;
        let t = d.status?.targets.into_iter().next()?;
        t.last_error
            .filter(|e| e.starts_with("DestinationPaused"))
            .map(|e| (e, t.attempts))
    })
    .await;
    assert_eq!(waiting.1, 0, "a deferred call is no attempt: {}", waiting.0);
    assert!(waiting.0.contains("HTTP 429"), "{}", waiting.0);
    let others = eventually("both events at the other destination", || async {
        let r = other.requests_to("/b");
        (r.len() == 2).then_some(r)
    })
    .await;
    assert!(
        others[1].at.duration_since(refused_at) < Duration::from_secs(4),
        "the other destination was not held up by the pause"
    );

    for name in [&first_name, &second_name] {
        let d = env.wait_delivery_finished(name).await;
        assert_eq!(d.status.unwrap().phase.as_str(), "Succeeded", "{name}");
    }
    let calls = limited.requests_to("/a");
    assert_eq!(calls.len(), 3, "the 429, then each event once");
    for later in &calls[1..] {
        assert!(
            later.at.duration_since(refused_at) >= Duration::from_secs(5),
            "a call {:?} after the 429, inside its Retry-After: 5",
            later.at.duration_since(refused_at)
        );
    }
    let metrics = op.context.metrics.encode();
    assert!(
        metrics.contains(r#"statused_target_calls_deferred_total{reason="paused"}"#),
        "{metrics}"
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn max_concurrent_bounds_the_calls_in_flight_to_a_destination() {
    let slow = Sink::start(204).await;
    slow.answer_slowly(Duration::from_millis(700));
    let env = env("dest-concurrent").await;
    let targets = json!([
        {"maxConcurrent": 1, "webhook": {"url": format!("{}/a", slow.url())}},
    ]);
    let op = env.operator_with_route("r", route(targets)).await;
    let mut names = Vec::new();
    for i in 0..4 {
        let event = sample_with_id("build-valid.json", &format!("ev-{i}"));
        let (code, answer) = env.post_signed(&op, "r", &event, SIGNING_SECRET).await;
        assert_eq!(code, 202, "{answer}");
        names.push(answer["delivery"].as_str().unwrap().to_string());
    }
    for name in &names {
        let d = env.wait_delivery_finished(name).await;
        assert_eq!(d.status.unwrap().phase.as_str(), "Succeeded", "{name}");
    }
    assert_eq!(slow.requests_to("/a").len(), 4);
    assert_eq!(slow.max_in_flight(), 1, "maxConcurrent: 1");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn limits_out_of_range_are_refused_at_apply_time_naming_the_field() {
    let env = env("dest-invalid").await;
    for (field, value) in [("ratePerMinute", 0), ("maxConcurrent", 65)] {
        let mut target = json!({"webhook": {"url": "http://127.0.0.1:1/"}});
        target[field] = value.into();
        let refused = env
            .try_apply_route("r", route(json!([target])))
            .await
            .expect_err("out of range");
        assert!(refused.to_string().contains(field), "{refused}");
    }
}
