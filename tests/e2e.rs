//! End to end against a real kube-apiserver + etcd (started by `hack/cluster.sh`), with the
//! operator running as the chart's service account and HTTP sinks standing in for GitHub and
//! a chat service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample, sample_with_id};

/// The route from the foundation issue, pointed at local stand-ins.
fn issue_route(github: &Sink) -> serde_json::Value {
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [
            {"name": "submit-valid-build",
             "match": {"types": ["com.statused.build.status.updated"], "statuses": ["Valid"]},
             "targets": [{"githubDispatch": {
                 "repository": "acme/ios-app", "eventType": "submit-for-review",
                 "clientPayload": {"app_name": "$(data.app_name)", "build_version": "$(data.build_version)"},
                 "tokenSecretRef": {"name": "github-token", "key": "token"},
                 "apiURL": github.url()}}]},
            {"name": "announce-release",
             "match": {"types": ["com.statused.app.status.updated"], "statuses": ["Ready for Sale"]},
             "targets": [{"webhook": {"urlSecretRef": {"name": "chat-hook", "key": "url"},
                                      "body": {"text": "$(data.app_name) v$(data.version) is live"}}}]}
        ]
    })
}

async fn env_with_secrets(prefix: &str, chat: &Sink) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("github-token", &[("token", "ghp_t0k3n")])
        .await;
    env.apply_secret(
        "chat-hook",
        &[("url", &format!("{}/services/T0K3N", chat.url()))],
    )
    .await;
    env
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn route_becomes_ready_and_reports_its_webhook_path() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("ready", &chat).await;
    let op = env.start_operator().await;
    env.apply_route("releases", issue_route(&github)).await;
    let (reason, message) = env.wait_ready("releases", "True").await;
    assert_eq!(reason, "Accepted");
    assert!(
        message.contains(&format!("/hooks/{}/releases", env.ns)),
        "{message}"
    );
    let route = env.routes().get("releases").await.unwrap();
    let status = route.status.unwrap();
    assert_eq!(
        status.webhook_path.as_deref(),
        Some(format!("/hooks/{}/releases", env.ns).as_str())
    );
    let condition = &status.conditions[0];
    assert_eq!(condition.observed_generation, route.metadata.generation);
    for c in &status.conditions {
        assert!(!c.message.contains("ghp_t0k3n") && !c.message.contains("T0K3N"));
    }
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn missing_secret_makes_route_not_ready_until_it_is_created() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = TestEnv::new("secret").await;
    env.apply_secret("github-token", &[("token", "ghp_t0k3n")])
        .await;
    env.apply_secret("chat-hook", &[("url", &chat.url())]).await;
    let op = env.start_operator().await;
    env.apply_route("releases", issue_route(&github)).await;

    let (reason, message) = env.wait_ready("releases", "False").await;
    assert_eq!(reason, "SecretNotFound");
    assert_eq!(
        message,
        format!("Secret {}/statused-webhook not found", env.ns)
    );
    // A not-ready route tells the sender to retry later rather than dropping the event.
    let (code, _) = env
        .post_signed(&op, "releases", &sample("build-valid.json"), SIGNING_SECRET)
        .await;
    assert_eq!(code, 503);

    // The Secret appears with the wrong key first, then the right one; the route is never touched.
    env.apply_secret("statused-webhook", &[("wrong", SIGNING_SECRET)])
        .await;
    let (reason, message) = eventually("SecretKeyMissing", || async {
        let r = env.routes().get("releases").await.ok()?;
        let c = r
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.reason == "SecretKeyMissing").then_some((c.reason, c.message))
    })
    .await;
    assert_eq!(reason, "SecretKeyMissing");
    assert_eq!(
        message,
        format!("Secret {}/statused-webhook has no key secret", env.ns)
    );

    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let (reason, _) = env.wait_ready("releases", "True").await;
    assert_eq!(reason, "Accepted");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn invalid_routes_say_what_to_fix() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("invalid", &chat).await;
    let op = env.start_operator().await;

    let mut spec = issue_route(&github);
    spec["rules"][0]["match"]["expression"] = json!("data.version.startsWith(");
    env.apply_route("bad-expression", spec).await;
    let (reason, message) = env.wait_ready("bad-expression", "False").await;
    assert_eq!(reason, "InvalidExpression");
    assert!(
        message.starts_with("spec.rules[0].match.expression"),
        "{message}"
    );

    let mut spec = issue_route(&github);
    spec["rules"][1]["targets"][0]["webhook"]["body"]["text"] = json!("$(data.app_name");
    env.apply_route("bad-template", spec).await;
    let (reason, message) = env.wait_ready("bad-template", "False").await;
    assert_eq!(reason, "InvalidTemplate");
    assert!(
        message.contains("spec.rules[1].targets[0].webhook.body"),
        "{message}"
    );

    let mut spec = issue_route(&github);
    spec["rules"][0]["targets"][0]["githubDispatch"]["repository"] = json!("acme");
    env.apply_route("bad-target", spec).await;
    let (reason, message) = env.wait_ready("bad-target", "False").await;
    assert_eq!(reason, "InvalidTarget");
    assert!(message.contains("repository"), "{message}");

    let mut spec = issue_route(&github);
    spec["rules"][0]["targets"][0]["githubDispatch"]["tokenSecretRef"]["key"] = json!("nope");
    env.apply_route("bad-key", spec).await;
    let (reason, message) = env.wait_ready("bad-key", "False").await;
    assert_eq!(reason, "SecretKeyMissing");
    assert_eq!(
        message,
        format!("Secret {}/github-token has no key nope", env.ns)
    );

    // A target entry must set exactly one kind: the CRD's schema refuses two, or none, when
    // the route is applied.
    let two = json!({"webhook": {"url": "http://127.0.0.1:1/"}, "slack": {"urlSecretRef": {"name": "chat-hook"}}});
    for (entry, found) in [(two, "2"), (json!({"timeoutSeconds": 5}), "0")] {
        let mut spec = issue_route(&github);
        spec["rules"][0]["targets"][0] = entry;
        match env.try_apply_route("bad-kinds", spec).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(
                    status.message.contains("spec.rules.targets")
                        && status.message.contains("one and only one schema (oneOf)"),
                    "{found} kinds: {}",
                    status.message
                );
            }
            other => panic!("an entry with {found} kinds was not refused: {other:?}"),
        }
    }

    // Fixing the route makes it Ready again, with a new observedGeneration.
    env.apply_route("bad-key", issue_route(&github)).await;
    env.wait_ready("bad-key", "True").await;
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn signed_event_triggers_github_dispatch_exactly_once() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("dispatch", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;

    let body = sample("build-valid.json");
    let (code, answer) = env
        .post_signed(&op, "releases", &body, SIGNING_SECRET)
        .await;
    assert_eq!(code, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_string();
    assert_eq!(
        answer["matched"],
        json!([{"rule": "submit-valid-build", "target": 0, "kind": "githubDispatch"}])
    );

    let delivery = env.wait_delivery_finished(&name).await;
    assert_eq!(
        delivery.spec.event.id,
        "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
    );
    assert_eq!(delivery.spec.event.data["build_version"], "456");
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Succeeded");
    assert_eq!(status.attempts, 1);
    assert_eq!(status.targets[0].last_response_code, Some(204));

    let requests = github.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.uri.path(), "/repos/acme/ios-app/dispatches");
    assert_eq!(req.header("authorization"), "Bearer ghp_t0k3n");
    assert_eq!(req.header("accept"), "application/vnd.github+json");
    assert_eq!(req.header("x-github-api-version"), "2022-11-28");
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(
        req.json(),
        json!({"event_type": "submit-for-review",
        "client_payload": {"app_name": "Markdown Email", "build_version": "456"}})
    );

    // Statused redelivers: 200, the same record, no second dispatch.
    let (code, answer) = env
        .post_signed(&op, "releases", &body, SIGNING_SECRET)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["delivery"], name.as_str());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(github.requests().len(), 1);
    assert_eq!(env.delivery_count().await, 1);

    // The route shows what happened last.
    let route = eventually("route lastDelivery", || async {
        let r = env.routes().get("releases").await.ok()?;
        (r.status.as_ref()?.last_delivery.as_ref()?.phase == "Succeeded").then_some(r)
    })
    .await;
    let status = route.status.unwrap();
    assert_eq!(
        status.last_event.unwrap().matched_rules,
        ["submit-valid-build"]
    );
    assert_eq!(status.last_delivery.unwrap().name, name);
    assert_eq!(
        status.conditions[0].status, "True",
        "the executor's writes keep the reconciler's fields"
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn webhook_target_posts_the_templated_body_to_the_url_from_the_secret() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("webhook", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;

    // Apple's newer label matches the rule written with the old one.
    let (code, answer) = env
        .post_signed(
            &op,
            "releases",
            &sample("app-ready-for-distribution.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    env.wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let requests = chat.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].uri.path(), "/services/T0K3N");
    assert_eq!(
        requests[0].json(),
        json!({"text": "Pocket Ledger v4.0.0 is live"})
    );
    assert_eq!(
        requests[0].header("x-statused-event-id"),
        "9b2c7d4e-1f3a-4e5b-8c6d-7e8f9a0b1c2d"
    );
    assert!(github.requests().is_empty());

    // No rule matches an account event: 200, nothing recorded.
    let (code, answer) = env
        .post_signed(
            &op,
            "releases",
            &sample("account-agreement.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!((code, answer["matched"].clone()), (200, json!([])));
    assert_eq!(env.delivery_count().await, 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn bad_requests_get_the_right_status_and_record_nothing() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("refuse", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;
    let body = sample("build-valid.json");

    let (code, answer) = env
        .post_signed(&op, "releases", &body, "wrong-secret")
        .await;
    assert_eq!(code, 401);
    assert_eq!(answer, json!({"error": "invalid signature"}));
    assert_eq!(env.post(&op, "releases", body.clone(), None).await.0, 401);
    assert_eq!(
        env.post(&op, "releases", body.clone(), Some("sha256=zz".into()))
            .await
            .0,
        401
    );

    assert_eq!(
        env.post_signed(&op, "no-such-route", &body, SIGNING_SECRET)
            .await
            .0,
        404
    );

    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        env.post_signed(&op, "releases", &huge, SIGNING_SECRET)
            .await
            .0,
        413
    );
    // Chunked: no Content-Length to refuse up front; the limit is enforced while reading.
    let path = format!("/hooks/{}/releases", env.ns);
    assert_eq!(
        post_chunked(op.webhook_addr, &path, 2 * 1024 * 1024).await,
        413
    );

    let (code, answer) = env
        .post_signed(&op, "releases", b"{not json", SIGNING_SECRET)
        .await;
    assert_eq!(code, 400, "{answer}");
    let (code, _) = env
        .post_signed(
            &op,
            "releases",
            br#"{"specversion":"1.0","type":"t","source":"s"}"#,
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 400);

    let url = format!("http://{}/hooks/{}/releases", op.webhook_addr, env.ns);
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 405);

    assert!(
        env.deliveries()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(github.requests().is_empty());
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn failing_target_is_retried_until_it_succeeds() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    github.answer_with(&[500, 500]);
    let env = env_with_secrets("retry", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;

    let (code, answer) = env
        .post_signed(&op, "releases", &sample("build-valid.json"), SIGNING_SECRET)
        .await;
    assert_eq!(code, 202);
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Succeeded");
    assert_eq!(status.attempts, 3);
    assert_eq!(status.targets[0].attempts, 3);
    assert_eq!(status.targets[0].last_response_code, Some(204));
    assert_eq!(github.requests().len(), 3);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn permanent_failure_is_recorded_without_retry_and_without_secrets() {
    let (github, chat) = (Sink::start(404).await, Sink::start(200).await);
    let env = env_with_secrets("fail", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;

    let (_, answer) = env
        .post_signed(&op, "releases", &sample("build-valid.json"), SIGNING_SECRET)
        .await;
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Failed");
    assert_eq!(status.targets[0].attempts, 1);
    assert_eq!(status.targets[0].last_response_code, Some(404));
    // The stand-in echoes the Authorization header it got, as some servers do in errors.
    let error = status.targets[0].last_error.as_deref().unwrap();
    assert_eq!(
        error,
        "HTTP 404: answer 404 for /repos/acme/ios-app/dispatches with Bearer [redacted]"
    );
    let serialized = serde_json::to_string(&status).unwrap();
    assert!(!serialized.contains("ghp_t0k3n"));
    assert_eq!(github.requests().len(), 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn deleted_route_stops_accepting_events_at_once() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("delete", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;
    env.delete_route("releases").await;
    eventually("404 after delete", || async {
        let (code, _) = env
            .post_signed(&op, "releases", &sample("build-valid.json"), SIGNING_SECRET)
            .await;
        (code == 404).then_some(())
    })
    .await;
    assert!(github.requests().is_empty());
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn accepted_event_is_delivered_by_an_operator_started_later() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("restart", &chat).await;
    github.answer_with(&[503]);
    // Accepted and recorded by a replica that does not deliver, which then goes away.
    let receiver = env.start_receiver_only().await;
    env.apply_route("releases", issue_route(&github)).await;
    env.wait_ready("releases", "True").await;
    let (code, answer) = env
        .post_signed(
            &receiver,
            "releases",
            &sample("build-valid.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_string();
    receiver.shutdown().await;
    assert!(github.requests().is_empty());
    assert!(
        env.deliveries().get(&name).await.unwrap().status.is_none(),
        "nothing was attempted yet"
    );

    // A new operator finds the pending record and delivers it, retrying the 503.
    let op = env.start_operator().await;
    let delivery = env.wait_delivery_finished(&name).await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Succeeded");
    assert_eq!(status.attempts, 2);
    assert_eq!(github.requests().len(), 2);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn probes_and_metrics_are_served() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("probes", &chat).await;
    let op = env
        .operator_with_route("releases", issue_route(&github))
        .await;
    let base = format!("http://{}", op.metrics_addr);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    eventually("readyz", || async {
        (reqwest::get(format!("{base}/readyz"))
            .await
            .ok()?
            .status()
            .as_u16()
            == 200)
            .then_some(())
    })
    .await;
    env.post_signed(&op, "releases", &sample("build-valid.json"), "wrong")
        .await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("statused_webhook_requests_total{code=\"401\"} 1"),
        "{metrics}"
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn finished_deliveries_beyond_the_history_limit_are_pruned_once_out_of_the_dedup_window() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("history", &chat).await;
    let op = env
        .start_operator_with(|c| {
            // Records are kept while their event could be replayed: no window, no keeping.
            c.dedup_window = std::time::Duration::ZERO;
            c.replay_window = std::time::Duration::ZERO;
        })
        .await;
    let mut spec = issue_route(&github);
    spec["history"] = json!({"succeeded": 1});
    env.apply_route("releases", spec).await;
    env.wait_ready("releases", "True").await;
    let mut last = String::new();
    for i in 0..3 {
        let event = sample_with_id("build-valid.json", &format!("build-event-{i}"));
        let (code, answer) = env
            .post_signed(&op, "releases", &event, SIGNING_SECRET)
            .await;
        assert_eq!(code, 202, "{answer}");
        last = answer["delivery"].as_str().unwrap().to_string();
        env.wait_delivery_finished(&last).await;
    }
    let kept = eventually("pruning", || async {
        let items = env.deliveries().list(&Default::default()).await.ok()?.items;
        (items.len() == 1).then_some(items)
    })
    .await;
    assert_eq!(
        kept[0].metadata.name.as_deref(),
        Some(last.as_str()),
        "the newest is kept"
    );
    assert_eq!(github.requests().len(), 3);
    op.shutdown().await;
}

/// POSTs `size` bytes with chunked transfer encoding (no Content-Length) and returns the
/// status code.
async fn post_chunked(addr: std::net::SocketAddr, path: &str, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let signature = format!("sha256={}", "0".repeat(64));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nX-Statused-Signature: {signature}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        // The server may answer and close before everything is sent.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 64];
    let n = stream.read(&mut answer).await.unwrap();
    let line = String::from_utf8_lossy(&answer[..n]).to_string();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn two_replicas_deliver_each_event_once_and_the_follower_takes_over() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("replicas", &chat).await;
    let lease = format!("lease-{}", env.ns);
    let a = env.start_replica(&lease, "replica-a").await;
    let b = env.start_replica(&lease, "replica-b").await;
    env.apply_route("releases", issue_route(&github)).await;
    env.wait_ready("releases", "True").await;
    let (leader, follower) = if support::a_leads(&a, &b).await {
        (&a, &b)
    } else {
        (&b, &a)
    };

    // The follower receives once its own routing table has caught up (until then it answers
    // 503, which Statused retries; route compiling runs on the blocking pool); the leader
    // delivers; exactly one dispatch.
    eventually("the follower ready", || async {
        follower.context.is_ready().then_some(())
    })
    .await;
    let (code, answer) = env
        .post_signed(
            follower,
            "releases",
            &sample("build-valid.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    env.wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(github.requests().len(), 1);

    // The leader goes away (releasing its Lease); the follower takes over and delivers.
    let follower_ctx = follower.context.clone();
    let (leader, follower) = if std::ptr::eq(leader, &a) {
        (a, b)
    } else {
        (b, a)
    };
    leader.shutdown().await;
    eventually("takeover", || async {
        follower_ctx.is_leader().then_some(())
    })
    .await;
    let event = sample_with_id("build-valid.json", "after-takeover");
    let (code, answer) = env
        .post_signed(&follower, "releases", &event, SIGNING_SECRET)
        .await;
    assert_eq!(code, 202);
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    assert_eq!(delivery.status.unwrap().phase.as_str(), "Succeeded");
    assert_eq!(github.requests().len(), 2);
    follower.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn events_over_the_routes_rate_limit_get_429_with_retry_after() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("ratelimit", &chat).await;
    let mut spec = issue_route(&github);
    spec["rateLimit"] = json!({"requestsPerMinute": 2, "burst": 2});
    let op = env.operator_with_route("releases", spec).await;
    let url = format!("http://{}/hooks/{}/releases", op.webhook_addr, env.ns);
    let send = |i: u32, secret: &'static str| {
        let url = url.clone();
        async move {
            let event = sample_with_id("build-valid.json", &format!("limited-{i}"));
            let body = event;
            let signature = statused_operator::signature::sign(secret.as_bytes(), &body);
            let response = reqwest::Client::new()
                .post(&url)
                .header("X-Statused-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (response.status().as_u16(), retry_after)
        }
    };
    // A bad signature between two good events does not spend the budget of two.
    assert_eq!(send(0, SIGNING_SECRET).await.0, 202);
    assert_eq!(send(1, "wrong").await.0, 401);
    assert_eq!(send(2, SIGNING_SECRET).await.0, 202);
    let (code, retry_after) = send(3, SIGNING_SECRET).await;
    assert_eq!(code, 429);
    // Two per minute: the next token is at most 30 s away.
    let retry_after = retry_after.expect("Retry-After on 429");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(env.delivery_count().await, 2);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn when_the_leader_dies_without_releasing_its_lease_a_follower_takes_over_after_it_expires() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("expiry", &chat).await;
    let lease = format!("lease-{}", env.ns);
    let a = env.start_replica(&lease, "replica-a").await;
    eventually("a leads", || async { a.context.is_leader().then_some(()) }).await;
    let b = env.start_replica(&lease, "replica-b").await;
    env.apply_route("releases", issue_route(&github)).await;
    env.wait_ready("releases", "True").await;
    assert!(!b.context.is_leader());

    // a crashes: its Lease stays held until it expires (3 s in these tests).
    let died = std::time::Instant::now();
    a.kill().await;
    eventually("b takes over", || async {
        b.context.is_leader().then_some(())
    })
    .await;
    assert!(
        died.elapsed() >= std::time::Duration::from_secs(2),
        "took over before the Lease could expire"
    );
    let delivery = env
        .deliver(&b, "releases", &sample("build-valid.json"))
        .await;
    assert_eq!(delivery.status.unwrap().phase.as_str(), "Succeeded");
    assert_eq!(github.requests().len(), 1);
    b.shutdown().await;
}

/// A followed workflow_dispatch: GitHub (a stand-in checking the documented paths and auth)
/// names the run it started (`return_run_details`), the operator reads
/// `GET /repos/{owner}/{repo}/actions/runs/{id}` with the token until the run completes,
/// and the target ends with its conclusion, the run's page as its link.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_followed_github_workflow_run_ends_its_target_with_its_conclusion() {
    let (github, chat) = (Sink::start(204).await, Sink::start(200).await);
    let env = env_with_secrets("follow-github", &chat).await;
    let page = "https://github.com/acme/ios-app/actions/runs/22446688";
    github.route(
        "/repos/acme/ios-app/actions/workflows/release.yml/dispatches",
        200,
        json!({"workflow_run_id": 22446688, "run_url": "https://api.github.com/repos/acme/ios-app/actions/runs/22446688", "html_url": page}),
    );
    let runs = "/repos/acme/ios-app/actions/runs/22446688";
    github.route(
        runs,
        200,
        json!({"id": 22446688, "status": "in_progress", "conclusion": null, "html_url": page}),
    );
    let op = env
        .operator_with_route(
            "releases",
            json!({
                "signingSecrets": [{"name": "statused-webhook"}],
                "rules": [{"name": "release", "match": {"statuses": ["Valid"]},
                    "targets": [{"follow": {}, "githubDispatch": {
                        "repository": "acme/ios-app", "workflow": "release.yml", "ref": "main",
                        "returnRunDetails": true, "inputs": {"build": "$(data.build_version)"},
                        "tokenSecretRef": {"name": "github-token", "key": "token"},
                        "apiURL": github.url()}}]}]
            }),
        )
        .await;
    let name = env
        .accept(&op, "releases", &sample("build-valid.json"))
        .await;
    let deliveries = env.deliveries();
    eventually("the run read while it runs", || async {
        let d = deliveries.get(&name).await.ok()?;
        let run = d.status?.targets.first()?.run.clone()?;
        (run.reads >= 1).then_some(())
    })
    .await;
    let running = deliveries.get(&name).await.unwrap().status.unwrap();
    assert_eq!(running.phase.as_str(), "Running");
    let run = running.targets[0].run.clone().unwrap();
    assert_eq!(run.url.as_deref(), Some(page), "{:?}", running.targets[0]);
    let reads = github.requests_to(runs);
    assert!(!reads.is_empty());
    for read in &reads {
        assert_eq!(read.method, "GET");
        assert_eq!(read.headers["authorization"], "Bearer ghp_t0k3n");
        assert_eq!(read.headers["accept"], "application/vnd.github+json");
        assert_eq!(read.headers["x-github-api-version"], "2022-11-28");
    }

    github.route(
        runs,
        200,
        json!({"id": 22446688, "status": "completed", "conclusion": "failure", "html_url": page,
               "run_started_at": "2027-01-15T08:00:00Z", "updated_at": "2027-01-15T08:09:00Z"}),
    );
    let done = env.wait_delivery_finished(&name).await.status.unwrap();
    let t = &done.targets[0];
    assert_eq!(t.phase.as_str(), "Failed");
    let run = t.run.clone().unwrap();
    assert_eq!(run.phase.as_str(), "Failed");
    assert_eq!(run.message.as_deref(), Some("failure"));
    assert_eq!(
        run.completed_at.map(|t| t.0.to_string()).as_deref(),
        Some("2027-01-15T08:09:00Z")
    );
    assert_eq!(
        github
            .requests_to("/repos/acme/ios-app/actions/workflows/release.yml/dispatches")
            .len(),
        1,
        "dispatched once"
    );
    op.shutdown().await;
}

/// A followed GitLab pipeline: the trigger API (a stand-in) names the pipeline it created,
/// the operator reads `GET /api/v4/projects/:id/pipelines/:pipeline_id` with the read token
/// in `PRIVATE-TOKEN` (a trigger token cannot read) until it ends, and the target ends with
/// it, the pipeline's page as its link.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_followed_gitlab_pipeline_ends_its_target_with_its_status() {
    let (gitlab, chat) = (Sink::start(201).await, Sink::start(200).await);
    let env = env_with_secrets("follow-gitlab", &chat).await;
    env.apply_secret("gitlab-trigger", &[("token", "glptt-trigger")])
        .await;
    env.apply_secret("gitlab-read", &[("token", "glpat-read")])
        .await;
    let page = "https://gitlab.example.com/mobile/ios-app/-/pipelines/287";
    gitlab.route(
        "/api/v4/projects/mobile%2Fios-app/trigger/pipeline",
        201,
        json!({"id": 287, "iid": 12, "status": "created", "web_url": page}),
    );
    let pipeline = "/api/v4/projects/mobile%2Fios-app/pipelines/287";
    gitlab.route(
        pipeline,
        200,
        json!({"id": 287, "status": "running", "web_url": page}),
    );
    let op = env
        .operator_with_route(
            "releases",
            json!({
                "signingSecrets": [{"name": "statused-webhook"}],
                "rules": [{"name": "release", "match": {"statuses": ["Valid"]},
                    "targets": [{"follow": {}, "gitlabPipeline": {
                        "project": "mobile/ios-app", "ref": "main",
                        "tokenSecretRef": {"name": "gitlab-trigger"},
                        "readTokenSecretRef": {"name": "gitlab-read"},
                        "baseURL": gitlab.url()}}]}]
            }),
        )
        .await;
    let name = env
        .accept(&op, "releases", &sample("build-valid.json"))
        .await;
    let deliveries = env.deliveries();
    let run = eventually("the pipeline read while it runs", || async {
        let d = deliveries.get(&name).await.ok()?;
        let run = d.status?.targets.first()?.run.clone()?;
        (run.reads >= 1).then_some(run)
    })
    .await;
    assert_eq!(run.phase.as_str(), "Running");
    assert_eq!(run.url.as_deref(), Some(page));
    let reads = gitlab.requests_to(pipeline);
    assert!(!reads.is_empty());
    for read in &reads {
        assert_eq!(read.method, "GET");
        assert_eq!(read.headers["private-token"], "glpat-read");
    }

    gitlab.route(
        pipeline,
        200,
        json!({"id": 287, "status": "success", "web_url": page,
               "started_at": "2027-01-15T08:00:00.000Z", "finished_at": "2027-01-15T08:09:00.000Z"}),
    );
    let done = env.wait_delivery_finished(&name).await.status.unwrap();
    let t = &done.targets[0];
    assert_eq!(t.phase.as_str(), "Succeeded", "{t:?}");
    assert_eq!(t.run.as_ref().unwrap().phase.as_str(), "Succeeded");
    assert_eq!(
        gitlab
            .requests_to("/api/v4/projects/mobile%2Fios-app/trigger/pipeline")
            .len(),
        1,
        "triggered once"
    );
    op.shutdown().await;
}
