//! App Store Connect's own webhook notifications as a second source, on the real API server:
//! a route with `source: appStoreConnect` accepts Apple-signed notifications sent the way
//! `statused-operator send --app-store-connect` (and Apple) sends them, answers the ping
//! without a delivery, matches Apple's states with Statused's labels, and calls its target
//! once per notification however often Apple delivers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use statused_operator::cli::send::{Sender, dated_now, send};
use support::{SIGNING_SECRET, Sink, TestEnv};

fn notification(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/app-store-connect/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    dated_now(&std::fs::read(path).unwrap(), Sender::AppStoreConnect).unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn apple_notifications_are_verified_answered_and_delivered_once() {
    let sink = Sink::start(204).await;
    let env = TestEnv::new("app-store-connect").await;
    env.apply_secret("apple-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env
        .operator_with_route(
            "apple",
            json!({"source": "appStoreConnect",
                "signingSecrets": [{"name": "apple-webhook"}],
                "rules": [{"name": "released",
                    "match": {"types": ["appStoreVersionAppVersionStateUpdated"],
                              "statuses": ["Ready for Sale"]},
                    "targets": [{"webhook": {"url": sink.url()}}]}]}),
        )
        .await;
    let url = format!("http://{}/hooks/{}/apple", op.webhook_addr, env.ns);
    let post = |name: &str| {
        let (url, body) = (url.clone(), notification(name));
        async move {
            let (code, text) = send(&url, SIGNING_SECRET, body, Sender::AppStoreConnect)
                .await
                .unwrap();
            (code, serde_json::from_str::<Value>(&text).unwrap())
        }
    };

    // "Test" in App Store Connect: answered, nothing recorded.
    assert_eq!(post("ping.json").await, (200, json!({"ping": true})));
    // A state no rule wants: answered 200, nothing recorded.
    let (code, answer) = post("app-version-in-review.json").await;
    assert_eq!((code, answer.get("delivery")), (200, None), "{answer}");
    assert_eq!(env.delivery_count().await, 0);

    // READY_FOR_DISTRIBUTION is Statused's "Ready for Sale": one delivery, one call.
    let (code, answer) = post("app-version-ready-for-distribution.json").await;
    assert_eq!(code, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_string();
    let delivery = env.wait_delivery_finished(&name).await;
    let event = &delivery.spec.event;
    assert_eq!(event.id, "5e2b7c1d-9a4f-4f0b-8c3e-7d1a2b3c4d02");
    assert_eq!(event.data["status"], "READY_FOR_DISTRIBUTION");
    assert_eq!(event.data["old_status"], "PENDING_DEVELOPER_RELEASE");
    assert_eq!(delivery.status.unwrap().phase.as_str(), "Succeeded");
    // Apple delivering it again is the same event.
    let (code, answer) = post("app-version-ready-for-distribution.json").await;
    assert_eq!(
        (code, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
    let calls = sink.requests();
    assert_eq!(calls.len(), 1);
    let sent: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(sent["type"], "appStoreVersionAppVersionStateUpdated");
    assert_eq!(
        sent["data"]["instance_id"],
        "ad7e6298-7b4a-4c4e-a3a1-0f1a5c2d9b11"
    );

    // A notification signed with another secret is refused.
    let (code, _) = send(
        &url,
        "not the secret",
        notification("build-upload-complete.json"),
        Sender::AppStoreConnect,
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_signature_format_on_an_apple_route_makes_it_not_ready_saying_how_to_fix_it() {
    let env = TestEnv::new("app-store-connect-bad").await;
    env.apply_secret("apple-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.start_operator().await;
    env.apply_route(
        "apple",
        json!({"source": "appStoreConnect", "signatureFormat": "standardWebhooks",
            "signingSecrets": [{"name": "apple-webhook"}],
            "rules": [{"name": "all", "targets": [{"webhook": {"url": "http://127.0.0.1:9/"}}]}]}),
    )
    .await;
    let (reason, message) = env.wait_ready("apple", "False").await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("remove signatureFormat"), "{message}");
    op.shutdown().await;
}
