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

/// A sink on 127.0.0.1 and a namespace whose Secrets point the route at it.
async fn sink_and_env(prefix: &str) -> (Sink, TestEnv) {
    let sink = Sink::start(204).await;
    let env = env_with_url(prefix, &format!("{}/deliver", sink.url())).await;
    (sink, env)
}

fn route() -> serde_json::Value {
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                   "targets": [{"webhook": {"urlSecretRef": {"name": "sink", "key": "url"}}}]}],
    })
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
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
#[ignore = "needs the local cluster: hack/just test"]
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

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_client_that_writes_a_whole_oversized_body_before_reading_gets_its_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_sink, env) = sink_and_env("toolarge").await;
    let op = env.operator_with_route("builds", route()).await;
    for chunked in [false, true] {
        // As Python's urllib does: the whole request goes out, then the answer is read.
        let body = vec![b'{'; 2 * 1024 * 1024];
        let mut stream = tokio::net::TcpStream::connect(op.webhook_addr)
            .await
            .unwrap();
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", body.len())
        };
        let head = format!(
            "POST /hooks/{}/builds HTTP/1.1\r\nHost: x\r\n{framing}\r\nConnection: close\r\n\r\n",
            env.ns
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        if chunked {
            for part in body.chunks(64 * 1024) {
                let chunk = format!("{:x}\r\n", part.len());
                stream.write_all(chunk.as_bytes()).await.unwrap();
                stream.write_all(part).await.unwrap();
                stream.write_all(b"\r\n").await.unwrap();
            }
            stream.write_all(b"0\r\n\r\n").await.unwrap();
        } else {
            stream.write_all(&body).await.unwrap();
        }
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {answer}"
        );
    }
    assert_eq!(env.delivery_count().await, 0);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn an_event_whose_record_name_is_taken_by_another_event_is_recorded_under_a_second_name() {
    let (sink, env) = sink_and_env("collide").await;
    let op = env.operator_with_route("builds", route()).await;
    // Another event's record already holds the name this event hashes to (a 40-bit hash
    // collision).
    let taken = statused_operator::naming::delivery_name("builds", "collide-1");
    let squatter = json!({
        "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedDelivery",
        "metadata": {"name": taken},
        "spec": {"route": "builds", "matched": [],
                 "event": {"id": "some-other-event", "type": "t", "source": "s"}},
    });
    env.create_delivery(squatter).await;

    let event = sample_with_id("build-valid.json", "collide-1");
    let (code, answer) = env.post_signed(&op, "builds", &event, SIGNING_SECRET).await;
    assert_eq!(code, 202, "not taken for a duplicate: {answer}");
    let second = answer["delivery"].as_str().unwrap().to_string();
    assert_ne!(second, taken);
    env.wait_delivery_finished(&second).await;
    // The same event again is a duplicate of the second record.
    let (code, answer) = env.post_signed(&op, "builds", &event, SIGNING_SECRET).await;
    assert_eq!(
        (code, answer["delivery"].as_str()),
        (200, Some(second.as_str()))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.requests().len(), 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn deliveries_whose_route_is_gone_or_never_ready_fail_instead_of_waiting_forever() {
    let env = TestEnv::new("waiting").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    // No Secret "sink": the route is never Ready.
    let op = env
        .start_operator_with(|c| c.max_pending_age = Duration::from_secs(1))
        .await;
    env.apply_route("builds", route()).await;
    env.wait_ready("builds", "False").await;
    for (name, route) in [("for-unready", "builds"), ("for-missing", "no-such-route")] {
        let delivery = json!({
            "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedDelivery",
            "metadata": {"name": name},
            "spec": {"route": route,
                     "matched": [{"rule": "builds", "target": 0, "kind": "webhook"}],
                     "event": {"id": name, "type": "com.statused.build.status.updated", "source": "s"}},
        });
        env.create_delivery(delivery).await;
    }
    let error = |d: statused_operator::api::StatusedDelivery| {
        let status = d.status.unwrap();
        assert_eq!(status.phase.as_str(), "Failed");
        status.targets[0].last_error.clone().unwrap()
    };
    let gone = error(env.wait_delivery_finished("for-missing").await);
    assert!(
        gone.starts_with("RouteGone: route no-such-route no longer exists"),
        "{gone}"
    );
    let unready = error(env.wait_delivery_finished("for-unready").await);
    assert!(
        unready.starts_with("RouteNotReady: route builds was not Ready"),
        "{unready}"
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn healthz_fails_while_the_api_server_stays_unreachable_and_recovers_without_a_restart() {
    let (sink, env) = sink_and_env("health").await;
    let proxy = FaultProxy::start(support::api_server_addr().await).await;
    let op = env
        .start_operator_through(&proxy, |c| c.unhealthy_after = Duration::from_secs(1))
        .await;
    env.apply_route("builds", route()).await;
    env.wait_ready("builds", "True").await;
    let healthz = format!("http://{}/healthz", op.metrics_addr);
    let probe = || async {
        let r = reqwest::get(&healthz).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(probe().await.0, 200);

    proxy.set(Mode::Cut);
    let (code, text) = eventually("healthz failing", || async {
        let answer = probe().await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!(code, 503);
    assert!(text.starts_with("watch of "), "{text}");

    proxy.set(Mode::Pass);
    // A resumed watch says nothing until something changes: healthy again once no error
    // has come for QUIET_ENDS_STREAK.
    let deadline = std::time::Instant::now()
        + statused_operator::health::QUIET_ENDS_STREAK
        + Duration::from_secs(30);
    while probe().await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "healthz not ok again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The same process delivers again.
    let event = sample_with_id("build-valid.json", "health-1");
    env.deliver(&op, "builds", &event).await;
    assert_eq!(sink.requests().len(), 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_hostile_expression_makes_the_route_not_ready_without_stalling_the_probes() {
    let (_sink, env) = sink_and_env("hostile").await;
    let op = env.start_operator().await;
    let items = (0..100)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut spec = route();
    spec["rules"][0]["match"]["expression"] =
        format!("[{items}].all(a, [{items}].all(b, [{items}].all(c, a + b + c >= 0)))").into();
    let healthz = format!("http://{}/healthz", op.metrics_addr);
    let probing = tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        for _ in 0..30 {
            let started = std::time::Instant::now();
            assert!(reqwest::get(&healthz).await.unwrap().status().is_success());
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slowest
    });
    env.apply_route("builds", spec).await;
    let (reason, message) = env.wait_ready("builds", "False").await;
    assert_eq!(reason, "InvalidExpression");
    assert!(message.contains("too complex: 3 nested"), "{message}");
    let slowest = probing.await.unwrap();
    assert!(slowest < Duration::from_secs(1), "a probe took {slowest:?}");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn on_shutdown_readiness_fails_first_while_events_are_still_received() {
    let (_sink, env) = sink_and_env("draining").await;
    let op = env
        .start_operator_with(|c| c.shutdown_drain = Duration::from_secs(2))
        .await;
    env.apply_route("builds", route()).await;
    env.wait_ready("builds", "True").await;
    let (webhook, metrics) = (op.webhook_addr, op.metrics_addr);
    let stopping = tokio::spawn(op.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(ready.text().await.unwrap(), "stopping");
    // Still receiving: a sender routed here before the endpoint dropped gets its answer.
    let event = sample_with_id("build-valid.json", "draining-1");
    let signature = statused_operator::signature::sign(SIGNING_SECRET.as_bytes(), &event);
    let answer = reqwest::Client::new()
        .post(format!("http://{webhook}/hooks/{}/builds", env.ns))
        .header("X-Statused-Signature", signature)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    stopping.await.unwrap();
    assert_eq!(
        env.delivery_count().await,
        1,
        "recorded, to be delivered by the next leader"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_partitioned_leader_stops_calling_before_the_new_leader_starts() {
    let (sink, env) = sink_and_env("partition").await;
    sink.answer_slowly(Duration::from_millis(300));
    let lease = format!("lease-{}", env.ns);
    let api = support::api_server_addr().await;
    let (pa, pb) = (FaultProxy::start(api).await, FaultProxy::start(api).await);
    let replica = |identity: &'static str| {
        let lease = lease.clone();
        move |c: &mut statused_operator::operator::Config| {
            // One call at a time per replica: two at once at the sink means two executors.
            c.executor_concurrency = 1;
            c.leader_election = Some(statused_operator::leader::LeaseConfig {
                namespace: "statused-system".into(),
                name: lease,
                identity: identity.into(),
                lease_duration: Duration::from_secs(3),
                renew_every: Duration::from_millis(500),
            });
        }
    };
    let a = env.start_operator_through(&pa, replica("replica-a")).await;
    let b = env.start_operator_through(&pb, replica("replica-b")).await;
    env.apply_route("builds", route()).await;
    env.wait_ready("builds", "True").await;
    let a_leads = support::a_leads(&a, &b).await;
    let (leader_proxy, follower) = if a_leads { (&pa, &b) } else { (&pb, &a) };

    // A stream of events into the follower's receiver, while the leader's API traffic is
    // frozen (a partition: it cannot renew, but still reaches the target).
    let mut accepted = Vec::new();
    for i in 0..16 {
        if i == 4 {
            leader_proxy.set(Mode::Freeze);
        }
        let event = sample_with_id("build-valid.json", &format!("partition-{i}"));
        let (code, answer) = env
            .post_signed(follower, "builds", &event, SIGNING_SECRET)
            .await;
        assert_eq!(code, 202, "{answer}");
        accepted.push(answer["delivery"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the follower took over", || async {
        follower.context.is_leader().then_some(())
    })
    .await;
    for name in &accepted {
        env.wait_delivery_finished(name).await;
    }
    assert_eq!(
        sink.max_in_flight(),
        1,
        "two executors called at the same time"
    );
    for i in 0..16 {
        let calls = sink
            .requests()
            .iter()
            .filter(|r| r.header("x-statused-event-id") == format!("partition-{i}"))
            .count();
        // At most the old leader's one call in flight at the partition is repeated.
        assert!(
            (1..=2).contains(&calls),
            "partition-{i} called {calls} times"
        );
    }
    leader_proxy.set(Mode::Pass);
    a.shutdown().await;
    b.shutdown().await;
}

/// An operator with the route `spec` (a slow sink behind it) is killed while calling the
/// target for the event `<prefix>-1`; returns the sink, the namespace and the delivery.
async fn killed_during_a_call(prefix: &str, spec: serde_json::Value) -> (Sink, TestEnv, String) {
    let (sink, env) = sink_and_env(prefix).await;
    // Slow: the operator dies while the call is under way.
    sink.answer_slowly(Duration::from_secs(2));
    let op = env.operator_with_route("builds", spec).await;
    let event = sample_with_id("build-valid.json", &format!("{prefix}-1"));
    let (code, answer) = env.post_signed(&op, "builds", &event, SIGNING_SECRET).await;
    assert_eq!(code, 202, "{answer}");
    eventually("the call", || async {
        (!sink.requests().is_empty()).then_some(())
    })
    .await;
    op.kill().await;
    (sink, env, answer["delivery"].as_str().unwrap().to_string())
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_call_in_flight_at_a_crash_is_never_repeated_for_an_at_most_once_target() {
    let mut spec = route();
    spec["rules"][0]["targets"][0]["onUncertain"] = "fail".into();
    let (sink, env, name) = killed_during_a_call("uncertain", spec).await;
    let op = env.start_operator().await;
    let delivery = env.wait_delivery_finished(&name).await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Failed");
    let error = status.targets[0].last_error.clone().unwrap();
    assert!(error.starts_with("outcome unknown"), "{error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.requests().len(), 1, "called at most once");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_call_in_flight_at_a_crash_is_repeated_with_the_same_ids_by_default() {
    let mut spec = route();
    spec["rules"][0]["targets"][0]["webhook"]["idempotencyKey"] = true.into();
    let (sink, env, name) = killed_during_a_call("repeat", spec).await;
    sink.answer_slowly(Duration::ZERO);
    let op = env.start_operator().await;
    let delivery = env.wait_delivery_finished(&name).await;
    assert_eq!(delivery.status.unwrap().phase.as_str(), "Succeeded");
    let calls = sink.requests();
    assert_eq!(
        calls.len(),
        2,
        "at least once: the uncertain call is made again"
    );
    for call in &calls {
        assert_eq!(call.header("x-statused-event-id"), "repeat-1");
        assert_eq!(call.header("idempotency-key"), "repeat-1");
    }
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_stored_event_over_the_data_limits_fails_its_targets_once_and_is_never_rendered_again() {
    let (sink, env) = sink_and_env("over-limits").await;
    let op = env.operator_with_route("builds", route()).await;
    // Recorded before the limits were in force (or by hand): 3,000 items in one list.
    let delivery = json!({
        "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedDelivery",
        "metadata": {"name": "over-limits"},
        "spec": {"route": "builds",
                 "matched": [{"rule": "builds", "target": 0, "kind": "webhook"}],
                 "event": {"id": "over-limits", "type": "com.statused.build.status.updated",
                           "source": "s", "data": {"l": vec![0; 3000]}}},
    });
    env.create_delivery(delivery).await;
    let finished = env.wait_delivery_finished("over-limits").await;
    let status = finished.status.unwrap();
    assert_eq!(status.phase.as_str(), "Failed");
    let error = status.targets[0].last_error.clone().unwrap();
    assert!(
        error.starts_with("EventOverLimits:") && error.contains("data.l has more than 256 items"),
        "{error}"
    );
    // A new leader finds it finished: nothing is rendered or called again.
    op.shutdown().await;
    let op = env.start_operator().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = env.deliveries().get("over-limits").await.unwrap();
    assert_eq!(again.status.unwrap(), status);
    assert!(sink.requests().is_empty());
    op.shutdown().await;
}
