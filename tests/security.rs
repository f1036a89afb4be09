//! The trust boundary, against the real API server with the operator under the chart's RBAC:
//! stricter Secret access, and the replay window. (The outbound guard is `egress.rs`; who may
//! write deliveries is `chart.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use statused_operator::api::fixtures::{route, rule, webhook};
use statused_operator::config::SecretAccess;
use support::{SIGNING_SECRET, Sink, TestEnv, sample};

fn sink_route(sink: &Sink) -> serde_json::Value {
    let r = route("unused", "releases")
        .rule(
            rule("builds")
                .types(&["com.statused.build.status.updated"])
                .target(webhook(&sink.url())),
        )
        .build();
    serde_json::to_value(r.spec).unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn with_labeled_secret_access_a_route_uses_only_labelled_secrets() {
    let sink = Sink::start(204).await;
    let env = TestEnv::new("labeled").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env
        .start_operator_with(|c| c.secret_access = SecretAccess::Labeled)
        .await;
    env.apply_route("releases", sink_route(&sink)).await;
    let (reason, message) = env.wait_ready("releases", "False").await;
    assert_eq!(reason, "SecretNotAllowed");
    assert!(
        message.contains(&format!(
            "kubectl label secret -n {} statused-webhook statused.dev/route-access=true",
            env.ns
        )),
        "{message}"
    );
    assert!(!message.contains(SIGNING_SECRET), "{message}");
    // Events for it are not accepted: the route is not Ready.
    let (code, _) = env
        .post_signed(&op, "releases", &sample("build-valid.json"), SIGNING_SECRET)
        .await;
    assert_eq!(code, 503);

    // Labelling the Secret is all it takes.
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    secrets
        .patch(
            "statused-webhook",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"statused.dev/route-access": "true"}}})),
        )
        .await
        .unwrap();
    env.wait_ready("releases", "True").await;
    let delivery = env
        .deliver(&op, "releases", &sample("build-valid.json"))
        .await;
    assert_eq!(
        delivery.status.unwrap().phase,
        statused_operator::api::DeliveryPhase::Succeeded
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn by_default_every_secret_of_the_namespace_may_be_used() {
    let sink = Sink::start(204).await;
    let env = TestEnv::new("nslabel").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.start_operator().await;
    env.apply_route("releases", sink_route(&sink)).await;
    env.wait_ready("releases", "True").await;
    op.shutdown().await;
}

/// `body` with its `time` moved `age_secs` into the past.
fn aged(body: &[u8], age_secs: i64) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_slice(body).unwrap();
    let time = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_secs);
    event["time"] = time.to_string().into();
    serde_json::to_vec(&event).unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_captured_event_is_a_duplicate_inside_the_replay_window_and_refused_outside_it() {
    let sink = Sink::start(204).await;
    let env = TestEnv::new("replay").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.start_operator().await;
    env.apply_route("releases", sink_route(&sink)).await;
    env.wait_ready("releases", "True").await;

    let fresh = sample("build-valid.json");
    let delivery = env.deliver(&op, "releases", &fresh).await;
    assert_eq!(sink.requests().len(), 1);
    // The same signed body again, inside the window: a duplicate, nothing fires.
    let (code, answer) = env
        .post_signed(&op, "releases", &fresh, SIGNING_SECRET)
        .await;
    assert_eq!(
        (code, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
    assert_eq!(answer["delivery"], delivery.metadata.name.unwrap().as_str());

    // A body signed 73 hours ago (its record may be gone by now): refused for good.
    let before = env.delivery_count().await;
    let (code, answer) = env
        .post_signed(&op, "releases", &aged(&fresh, 73 * 3600), SIGNING_SECRET)
        .await;
    assert_eq!(code, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "event time is older than the replay window"
    );
    assert_eq!(env.delivery_count().await, before, "nothing recorded");
    assert_eq!(sink.requests().len(), 1, "nothing fired");
    op.shutdown().await;
}

/// The binary, as the chart runs it (chart RBAC), logging at debug level to a file.
fn run_operator(ns: &str) -> support::OperatorProcess {
    support::OperatorProcess::spawn(ns, |_| {})
}

/// Every refusal of this issue, exercised with Secrets that hold recognisable values; none
/// of them may show up in the operator's log (at debug level), a route's or a delivery's
/// status, an Event, or an answer to a sender.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn no_secret_value_reaches_logs_status_events_or_answers() {
    const URL_TOKEN: &str = "S3CRET-URL-TOKEN-7f3a";
    const HEADER_TOKEN: &str = "S3CRET-HEADER-TOKEN-91c2";
    let echo = Sink::start(401).await;
    let env = TestEnv::new("nosecrets").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    // A URL with a token, on an address the guard refuses (the API server's, port included),
    // and one on an allowed stand-in that echoes what it got in its 401.
    let api = env.api_server;
    env.apply_secret(
        "refused-url",
        &[("url", &format!("https://{api}/hook?token={URL_TOKEN}"))],
    )
    .await;
    env.apply_secret(
        "echo-url",
        // In the path, which the stand-in echoes in its 401 as many servers do.
        &[("url", &format!("{}/hook/{URL_TOKEN}", echo.url()))],
    )
    .await;
    env.apply_secret(
        "auth",
        &[("Authorization", &format!("Bearer {HEADER_TOKEN}"))],
    )
    .await;
    let op = run_operator(&env.ns);
    env.apply_route(
        "releases",
        json!({
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                "targets": [
                    {"webhook": {"urlSecretRef": {"name": "refused-url"}, "headersSecretRef": {"name": "auth"}}},
                    {"webhook": {"urlSecretRef": {"name": "echo-url"}, "headersSecretRef": {"name": "auth"}}}
                ]}],
        }),
    )
    .await;
    // A route whose replay window is longer than the dedup window: not Ready, says why.
    env.apply_route(
        "too-long",
        json!({"signingSecrets": [{"name": "statused-webhook"}], "replayWindow": "100h",
               "rules": [{"name": "r", "targets": [{"webhook": {"urlSecretRef": {"name": "echo-url"}}}]}]}),
    )
    .await;
    env.wait_ready("releases", "True").await;
    let (reason, message) = env.wait_ready("too-long", "False").await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.starts_with("spec.replayWindow"), "{message}");

    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let signature = statused_operator::signature::sign(SIGNING_SECRET.as_bytes(), &body);
        client
            .post(format!(
                "http://127.0.0.1:{}/hooks/{}/releases",
                op.webhook, env.ns
            ))
            .header("X-Statused-Signature", signature)
            .body(body)
            .send()
    };
    let mut answers = String::new();
    let fresh = sample("build-valid.json");
    let accepted = support::eventually("the operator answers", || async {
        post(fresh.clone()).await.ok()
    })
    .await;
    assert_eq!(accepted.status().as_u16(), 202);
    let accepted: serde_json::Value = accepted.json().await.unwrap();
    answers.push_str(&accepted.to_string());
    let old = post(aged(&fresh, 100 * 3600)).await.unwrap();
    assert_eq!(old.status().as_u16(), 400);
    answers.push_str(&old.text().await.unwrap());
    let forged = client
        .post(format!(
            "http://127.0.0.1:{}/hooks/{}/releases",
            op.webhook, env.ns
        ))
        .header("X-Statused-Signature", "sha256=00")
        .body(fresh.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    answers.push_str(&forged.text().await.unwrap());

    let delivery = env
        .wait_delivery_finished(accepted["delivery"].as_str().unwrap())
        .await;
    let status = delivery.status.clone().unwrap();
    assert!(
        status.targets[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .starts_with("DestinationNotAllowed"),
        "{status:?}"
    );
    assert_eq!(echo.requests().len(), 1, "the allowed target was called");
    // Its 401 echoed the URL's token and the Authorization header: both redacted.
    let echoed = status.targets[1].last_error.clone().unwrap_or_default();
    assert_eq!(
        echoed,
        "HTTP 401: answer 401 for [redacted] with [redacted]"
    );

    let routes =
        serde_json::to_string(&env.routes().list(&Default::default()).await.unwrap().items)
            .unwrap();
    let deliveries = serde_json::to_string(&delivery).unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.admin.clone(), &env.ns);
    let events =
        serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap();
    let log_path = op.log.clone();
    drop(op);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        log.contains("event refused: outside the replay window"),
        "the log was read"
    );
    for (place, text) in [
        ("log", &log),
        ("route status", &routes),
        ("delivery", &deliveries),
        ("events", &events),
        ("answers", &answers),
    ] {
        for secret in [SIGNING_SECRET, URL_TOKEN, HEADER_TOKEN] {
            assert!(!text.contains(secret), "{secret} in the {place}");
        }
    }
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_namespace_is_served_its_most_routes_oldest_first_and_the_next_says_why() {
    let sink = Sink::start(204).await;
    let env = TestEnv::new("routes").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env
        .start_operator_with(|c| {
            c.max_routes_per_namespace = 2;
            c.api_recheck = std::time::Duration::from_secs(1);
        })
        .await;
    for name in ["first", "second"] {
        env.apply_route(name, sink_route(&sink)).await;
        env.wait_ready(name, "True").await;
    }
    // Created a second later at least, so that it is the newest.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    env.apply_route("third", sink_route(&sink)).await;
    let (reason, message) = env.wait_ready("third", "False").await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("2 older routes") && message.contains("--max-routes-per-namespace"),
        "{message}"
    );
    let (code, _) = env
        .post_signed(&op, "third", &sample("build-valid.json"), SIGNING_SECRET)
        .await;
    assert_eq!(code, 503, "not served");
    // Once an older one goes, it is served.
    env.delete_route("first").await;
    env.wait_ready("third", "True").await;
    op.shutdown().await;
}
