//! Faults injected around one operator, against the real API server: its API traffic passes
//! a fault proxy of the tests' own (so other tests are not disturbed), its targets are
//! stand-ins that misbehave. The process-level faults (API server frozen, killed and
//! restarted; operator killed) are `just chaos`, whose smoke runs in `just test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::proxy::{FaultProxy, Mode};
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample_with_id};

async fn env_with_url(prefix: &str, url: &str) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("sink", &[("url", url)]).await;
    env
}

fn route() -> serde_json::Value {
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                   "targets": [{"webhook": {"urlSecretRef": {"name": "sink", "key": "url"}}}]}],
    })
}

#[tokio::test]
async fn a_status_write_failing_after_a_successful_call_does_not_call_the_target_again() {
    let sink = Sink::start(204).await;
    // Slow enough for the API connection to be cut while the call is under way.
    sink.answer_slowly(Duration::from_secs(1));
    let env = env_with_url("unwritten", &format!("{}/deliver", sink.url())).await;
    let proxy = FaultProxy::start(support::api_server_addr().await).await;
    let op = env.start_operator_through(&proxy, |_| {}).await;
    env.apply_route("builds", route()).await;
    env.wait_ready("builds", "True").await;

    let event = sample_with_id("build-valid.json", "unwritten-1");
    let (code, answer) = env.post_signed(&op, "builds", &event, SIGNING_SECRET).await;
    assert_eq!(code, 202, "{answer}");
    eventually("the call", || async {
        (!sink.requests().is_empty()).then_some(())
    })
    .await;
    // The call is in flight; every connection to the API server now fails, so the status
    // write after it does too, and keeps failing for a while.
    proxy.set(Mode::Cut);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set(Mode::Pass);

    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Succeeded");
    assert_eq!(status.attempts, 1, "the write was retried, not the call");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.requests().len(), 1, "the target was called once");
    op.shutdown().await;
}

/// A target that answers 500 with a body that never ends.
async fn endless_target() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::repeat(chunk).map(move |c| {
                counter.fetch_add(c.len() as u64, Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(c)
            });
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                axum::body::Body::from_stream(stream),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, sent)
}

use futures::StreamExt;

#[tokio::test]
async fn a_target_streaming_an_endless_answer_fails_the_delivery_after_a_bounded_read() {
    let (addr, streamed) = endless_target().await;
    let env = env_with_url("endless", &format!("http://{addr}/hook")).await;
    let op = env.start_operator_with(|c| c.max_attempts = 2).await;
    env.apply_route("builds", route()).await;
    env.wait_ready("builds", "True").await;

    let event = sample_with_id("build-valid.json", "endless-1");
    let delivery = env.deliver(&op, "builds", &event).await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Failed");
    let error = status.targets[0].last_error.clone().unwrap();
    assert!(error.starts_with("HTTP 500: xxx"), "{error}");
    assert!(error.contains("gave up after 2 attempts"), "{error}");
    assert!(
        error.len() < 400,
        "a short excerpt only: {} bytes",
        error.len()
    );
    // Two reads of at most 16 KiB each; what the server pushed beyond that sat in socket
    // buffers until the connection was dropped.
    let pushed = streamed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        pushed < 16 * 1024 * 1024,
        "the target pushed {pushed} bytes"
    );
    op.shutdown().await;
}
