//! Holding a burst, against the real API server: the dedup window outlives the history
//! limits, a slow or frozen API server gets senders a quick 503 with `Retry-After` and
//! leaves nothing half-recorded, and the executor's concurrency is bounded without holding
//! up the receiver. (The burst itself is `just bench-load`; its smoke runs in `just test`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::proxy::{FaultProxy, Mode};
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample_with_id};

/// A route sending every build event to `sink` (the URL in a Secret).
async fn env_with_sink_route(prefix: &str, sink: &Sink) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("sink", &[("url", &format!("{}/deliver", sink.url()))])
        .await;
    env
}

fn sink_route(history: Option<serde_json::Value>) -> serde_json::Value {
    let mut spec = json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                   "targets": [{"webhook": {"urlSecretRef": {"name": "sink", "key": "url"}}}]}],
    });
    if let Some(h) = history {
        spec["history"] = h;
    }
    spec
}

fn deliveries_of(sink: &Sink, event_id: &str) -> usize {
    sink.requests()
        .iter()
        .filter(|r| r.header("x-statused-event-id") == event_id)
        .count()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_redelivered_event_stays_a_duplicate_after_the_history_limit_is_reached() {
    let sink = Sink::start(204).await;
    let env = env_with_sink_route("dedup", &sink).await;
    // Default dedup window (72 h), pruning every 200 ms.
    let op = env.start_operator().await;
    env.apply_route("builds", sink_route(Some(json!({"succeeded": 1}))))
        .await;
    env.wait_ready("builds", "True").await;

    let a = sample_with_id("build-valid.json", "event-a");
    let b = sample_with_id("build-valid.json", "event-b");
    let first = env.deliver(&op, "builds", &a).await;
    env.deliver(&op, "builds", &b).await;
    // Several pruning rounds pass; history says keep one, the window says keep both.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.delivery_count().await, 2);

    let (code, answer) = env.post_signed(&op, "builds", &a, SIGNING_SECRET).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["delivery"], first.metadata.name.unwrap().as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deliveries_of(&sink, "event-a"), 1, "not called again");
    assert_eq!(deliveries_of(&sink, "event-b"), 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_frozen_api_server_gets_a_quick_503_with_retry_after_and_nothing_half_recorded() {
    let sink = Sink::start(204).await;
    let env = env_with_sink_route("frozen", &sink).await;
    let proxy = FaultProxy::start(support::api_server_addr().await).await;
    let op = env
        .start_operator_through(&proxy, |c| {
            c.record_timeout = Duration::from_secs(2);
            c.max_inflight_requests = 1;
        })
        .await;
    env.apply_route("builds", sink_route(None)).await;
    env.wait_ready("builds", "True").await;
    let url = format!("http://{}/hooks/{}/builds", op.webhook_addr, env.ns);
    let post = |id: &'static str| {
        let url = url.clone();
        async move {
            let body = sample_with_id("build-valid.json", id);
            let signature = statused_operator::signature::sign(SIGNING_SECRET.as_bytes(), &body);
            let started = Instant::now();
            let response = reqwest::Client::new()
                .post(url)
                .header("X-Statused-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), retry_after, started.elapsed())
        }
    };

    proxy.set(Mode::Freeze);
    let waiting = tokio::spawn(post("frozen-1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The one request the budget allows is waiting on the API server: the next is refused
    // at once.
    let (code, retry_after, took) = post("frozen-2").await;
    assert_eq!((code, retry_after.as_deref()), (503, Some("1")));
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The waiting one gets its answer at the record timeout, not the sender's.
    let (code, retry_after, took) = waiting.await.unwrap();
    assert_eq!((code, retry_after.as_deref()), (503, Some("5")));
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(env.delivery_count().await, 0, "nothing stored while frozen");

    // Thawed, the senders retry: each event is recorded once and delivered once, whether
    // the create held in the frozen connection landed late (then the retry is a duplicate)
    // or not.
    proxy.set(Mode::Pass);
    for id in ["frozen-1", "frozen-2"] {
        let (code, _, _) = eventually(&format!("{id} accepted"), || async {
            let answer = post(id).await;
            (200..300).contains(&answer.0).then_some(answer)
        })
        .await;
        assert!(code == 200 || code == 202, "{code}");
    }
    eventually("both delivered", || async {
        (deliveries_of(&sink, "frozen-1") == 1 && deliveries_of(&sink, "frozen-2") == 1)
            .then_some(())
    })
    .await;
    assert_eq!(env.delivery_count().await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.requests().len(), 2, "each delivered once");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn the_executor_calls_at_most_its_concurrency_and_the_receiver_keeps_recording() {
    let sink = Sink::start(204).await;
    sink.answer_slowly(Duration::from_millis(700));
    let env = env_with_sink_route("bounded", &sink).await;
    let op = env
        .start_operator_with(|c| c.executor_concurrency = 2)
        .await;
    env.apply_route("builds", sink_route(None)).await;
    env.wait_ready("builds", "True").await;

    let started = Instant::now();
    for i in 0..8 {
        let event = sample_with_id("build-valid.json", &format!("bounded-{i}"));
        let (code, answer) = env.post_signed(&op, "builds", &event, SIGNING_SECRET).await;
        assert_eq!(code, 202, "{answer}");
    }
    // Eight slow deliveries two at a time take four rounds; recording them did not wait.
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "recording waited for delivering: {:?}",
        started.elapsed()
    );
    eventually("all delivered", || async {
        (sink.requests().len() >= 8).then_some(())
    })
    .await;
    assert_eq!(sink.max_in_flight(), 2);
    for i in 0..8 {
        assert_eq!(deliveries_of(&sink, &format!("bounded-{i}")), 1);
    }
    op.shutdown().await;
}
