//! Incidents and feature flags end to end: PagerDuty, Opsgenie, LaunchDarkly and Unleash
//! stand-ins on loopback check the method, path, headers and body each service documents,
//! for a rejection (incident, alert), an app in review (flags off) and one going live
//! (incident resolved, alert closed, flags on).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use statused_operator::api::DeliveryPhase;
use support::{SIGNING_SECRET, Sink, TestEnv, sample};

struct Services {
    pagerduty: Sink,
    opsgenie: Sink,
    launchdarkly: Sink,
    unleash: Sink,
}

fn route(s: &Services) -> Value {
    let incident = |action: &str| {
        json!([
            {"pagerduty": {"routingKeySecretRef": {"name": "pagerduty"}, "action": action,
                           "baseURL": s.pagerduty.url()}},
            {"opsgenie": {"apiKeySecretRef": {"name": "opsgenie"},
                          "action": if action == "trigger" { "create" } else { "close" },
                          "priority": "P2", "baseURL": s.opsgenie.url()}}
        ])
    };
    let flags = |action: &str| {
        json!([
            {"launchdarkly": {"accessTokenSecretRef": {"name": "launchdarkly"}, "project": "mobile",
                              "flag": "new-onboarding", "environment": "production", "action": action,
                              "baseURL": s.launchdarkly.url()}},
            {"unleash": {"url": s.unleash.url(), "tokenSecretRef": {"name": "unleash"}, "project": "mobile",
                         "feature": "new-onboarding", "environment": "production", "action": action}}
        ])
    };
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [
            {"name": "rejected", "match": {"statuses": ["Rejected"]}, "targets": incident("trigger")},
            {"name": "in-review", "match": {"statuses": ["In Review"]}, "targets": flags("off")},
            {"name": "live-resolves", "match": {"statuses": ["Ready for Sale"]}, "targets": incident("resolve")},
            {"name": "live-flags", "match": {"statuses": ["Ready for Sale"]}, "targets": flags("on")}
        ]
    })
}

async fn deliver(env: &TestEnv, op: &statused_operator::operator::Running, name: &str) {
    let delivery = env.deliver(op, "handlers", &sample(name)).await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase, DeliveryPhase::Succeeded, "{name}: {status:?}");
}

fn body(r: &support::Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn incidents_open_and_resolve_and_flags_follow_the_review() {
    let s = Services {
        pagerduty: Sink::start(202).await,
        opsgenie: Sink::start(202).await,
        launchdarkly: Sink::start(200).await,
        unleash: Sink::start(200).await,
    };
    let env = TestEnv::new("handlers").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret(
        "pagerduty",
        &[("routing-key", "R0UT1NGKEY0000000000000000000000")],
    )
    .await;
    env.apply_secret("opsgenie", &[("api-key", "og-1234-key")])
        .await;
    env.apply_secret("launchdarkly", &[("access-token", "api-ld-t0ken")])
        .await;
    env.apply_secret("unleash", &[("token", "user:unleash-t0ken")])
        .await;
    let op = env.operator_with_route("handlers", route(&s)).await;
    let dedup = format!("statused/{}/handlers/Markdown Email/1.2.3", env.ns);

    // Rejected: one PagerDuty incident and one Opsgenie alert, keyed alike.
    deliver(&env, &op, "app-rejected.json").await;
    let pd = s.pagerduty.requests_to("/v2/enqueue");
    assert_eq!(pd.len(), 1);
    assert_eq!(pd[0].method.as_str(), "POST");
    assert_eq!(pd[0].header("content-type"), "application/json");
    assert!(
        pd[0].headers.get("authorization").is_none(),
        "the key is in the body"
    );
    let trigger = body(&pd[0]);
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY0000000000000000000000");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], dedup.as_str());
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], "Markdown Email");
    assert_eq!(trigger["payload"]["custom_details"]["status"], "Rejected");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("rejected")
    );
    let og = s.opsgenie.requests_to("/v2/alerts");
    assert_eq!(og.len(), 1);
    assert_eq!(og[0].method.as_str(), "POST");
    assert_eq!(og[0].header("authorization"), "GenieKey og-1234-key");
    let alert = body(&og[0]);
    assert_eq!(alert["alias"], dedup.as_str());
    assert_eq!(alert["priority"], "P2");
    assert_eq!(alert["entity"], "Markdown Email");
    assert!(alert["message"].as_str().unwrap().chars().count() <= 130);

    // In review: both flags off.
    deliver(&env, &op, "app-in-review.json").await;
    let ld = s
        .launchdarkly
        .requests_to("/api/v2/flags/mobile/new-onboarding");
    assert_eq!(ld.len(), 1);
    assert_eq!(ld[0].method.as_str(), "PATCH");
    assert_eq!(ld[0].header("authorization"), "api-ld-t0ken");
    assert_eq!(
        ld[0].header("content-type"),
        "application/json; domain-model=launchdarkly.semanticpatch"
    );
    assert_eq!(ld[0].header("ld-api-version"), "20240415");
    let patch = body(&ld[0]);
    assert_eq!(patch["environmentKey"], "production");
    assert_eq!(patch["instructions"], json!([{"kind": "turnFlagOff"}]));
    assert!(patch["comment"].as_str().unwrap().contains("In Review"));
    let off = "/api/admin/projects/mobile/features/new-onboarding/environments/production/off";
    let un = s.unleash.requests_to(off);
    assert_eq!(un.len(), 1);
    assert_eq!(un[0].method.as_str(), "POST");
    assert_eq!(un[0].header("authorization"), "user:unleash-t0ken");
    assert!(un[0].body.is_empty());

    // Live: the incident resolves and the alert closes (same key), the flags go on.
    deliver(&env, &op, "app-ready-for-sale.json").await;
    let pd = s.pagerduty.requests_to("/v2/enqueue");
    assert_eq!(pd.len(), 2);
    assert_eq!(
        body(&pd[1]),
        json!({"routing_key": "R0UT1NGKEY0000000000000000000000", "event_action": "resolve",
               "dedup_key": dedup})
    );
    let closed = s.opsgenie.requests();
    let close = closed.last().unwrap();
    assert_eq!(
        close.uri.path(),
        format!(
            "/v2/alerts/{}/close",
            dedup.replace('/', "%2F").replace(' ', "%20")
        )
    );
    assert_eq!(close.uri.query(), Some("identifierType=alias"));
    assert_eq!(close.header("authorization"), "GenieKey og-1234-key");
    let ld = s
        .launchdarkly
        .requests_to("/api/v2/flags/mobile/new-onboarding");
    assert_eq!(
        body(&ld[1])["instructions"],
        json!([{"kind": "turnFlagOn"}])
    );
    let on = "/api/admin/projects/mobile/features/new-onboarding/environments/production/on";
    assert_eq!(s.unleash.requests_to(on).len(), 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_launchdarkly_conflict_is_retried_and_a_bad_request_is_not() {
    let (ld, pd) = (Sink::start(200).await, Sink::start(202).await);
    ld.answer_with(&[409]);
    // PagerDuty's 400 names what it did not like, here the routing key it was sent.
    pd.route(
        "/v2/enqueue",
        400,
        json!({"status": "invalid event", "message": "Event object is invalid",
               "errors": ["routing_key R0UT1NGKEY0000000000000000000000 is not active"]}),
    );
    let env = TestEnv::new("handlers-retry").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("launchdarkly", &[("access-token", "api-ld-t0ken")])
        .await;
    env.apply_secret(
        "pagerduty",
        &[("routing-key", "R0UT1NGKEY0000000000000000000000")],
    )
    .await;
    let op = env
        .operator_with_route(
            "handlers",
            json!({"signingSecrets": [{"name": "statused-webhook"}],
                   "rules": [{"name": "r", "match": {"statuses": ["In Review"]}, "targets": [
                       {"launchdarkly": {"accessTokenSecretRef": {"name": "launchdarkly"}, "project": "p",
                                         "flag": "f", "environment": "e", "baseURL": ld.url()}},
                       {"pagerduty": {"routingKeySecretRef": {"name": "pagerduty"}, "baseURL": pd.url()}}]}]}),
        )
        .await;
    let delivery = env
        .deliver(&op, "handlers", &sample("app-in-review.json"))
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(status.targets[0].phase, DeliveryPhase::Succeeded);
    assert_eq!(status.targets[0].attempts, 2, "409 retried");
    assert_eq!(status.targets[1].phase, DeliveryPhase::Failed);
    assert_eq!(status.targets[1].attempts, 1, "400 not retried");
    let error = status.targets[1].last_error.clone().unwrap();
    assert!(!error.contains("R0UT1NGKEY"), "{error}");
    assert!(
        error.contains("routing_key [redacted] is not active"),
        "{error}"
    );
    op.shutdown().await;
}
