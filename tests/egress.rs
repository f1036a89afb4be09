//! The outbound guard, against the real API server under the chart's RBAC, with real
//! listeners on loopback addresses only: no test here sends a packet anywhere else.
//!
//! Before the guard, a `webhook` target `GET http://127.0.0.1:<metrics port>/metrics` was
//! called and its delivery said Succeeded: a route author could read the operator's metrics,
//! or reach anything else the operator's network position allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use statused_operator::api::fixtures::{kind, route, rule, webhook};
use statused_operator::api::{DeliveryPhase, TargetStatus};
use statused_operator::egress::parse_cidrs;
use support::{SIGNING_SECRET, Sink, TestEnv, sample};

fn spec(targets: Vec<statused_operator::api::route::TargetKind>) -> serde_json::Value {
    let rule = targets.into_iter().fold(
        rule("all").types(&["com.statused.build.status.updated"]),
        |r, t| r.target(t),
    );
    serde_json::to_value(route("unused", "guard").rule(rule).build().spec).unwrap()
}

fn target(statuses: &[TargetStatus], index: u32) -> &TargetStatus {
    statuses.iter().find(|t| t.target == index).unwrap()
}

/// Failed at once (one attempt, no retry) with the guard's error, which names the class.
fn assert_refused(t: &TargetStatus, class: &str, tried: &[&str]) {
    assert_eq!(t.phase, DeliveryPhase::Failed, "{t:?}");
    assert_eq!(t.attempts, 1, "a refused destination is not retried: {t:?}");
    let error = t.last_error.clone().unwrap_or_default();
    assert!(error.starts_with("DestinationNotAllowed"), "{error}");
    assert!(error.contains(class), "{error}");
    for part in tried {
        assert!(
            !error.contains(part),
            "the error names the address: {error}"
        );
    }
    assert_eq!(t.last_response_code, None, "{t:?}");
}

#[tokio::test]
async fn targets_reach_allowed_addresses_only() {
    let allowed_ip = "127.0.0.2".parse().unwrap();
    let (stand_in, redirecting) = (
        Sink::start_on(allowed_ip, 204).await,
        Sink::start_on(allowed_ip, 204).await,
    );
    // On 127.0.0.1, not allowed: nothing may reach it.
    let hidden = Sink::start(200).await;
    redirecting.answer_with_header(307, "location", &format!("{}/", hidden.url()));

    let env = TestEnv::new("egress").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env
        .start_operator_with(|c| c.egress_allow = parse_cidrs("127.0.0.2/32").unwrap())
        .await;
    let metrics = op.metrics_addr;
    let hidden_port = hidden.addr.port().to_string();
    env.apply_route(
        "guard",
        spec(vec![
            webhook(&format!("{}/ok", stand_in.url())),
            kind(json!({"webhook": {"method": "GET",
                "url": format!("http://127.0.0.1:{}/metrics", metrics.port())}})),
            webhook(&format!("http://localhost:{hidden_port}/")),
            webhook(&format!("http://[::1]:{hidden_port}/")),
            webhook(&format!("http://[::ffff:127.0.0.1]:{hidden_port}/")),
            webhook(&format!("{}/redirect", redirecting.url())),
        ]),
    )
    .await;
    env.wait_ready("guard", "True").await;

    let delivery = env.deliver(&op, "guard", &sample("build-valid.json")).await;
    let status = delivery.status.unwrap();
    let targets = &status.targets;

    // An allow-listed loopback address is reached.
    assert_eq!(target(targets, 0).phase, DeliveryPhase::Succeeded);
    assert_eq!(stand_in.requests_to("/ok").len(), 1);
    // The operator's own metrics port, a name resolving to loopback, IPv6 loopback and an
    // IPv4-mapped loopback address are refused.
    let metrics_port = metrics.port().to_string();
    assert_refused(
        target(targets, 1),
        "loopback",
        &["127.0.0.1", &metrics_port],
    );
    assert_refused(target(targets, 2), "loopback", &["localhost", &hidden_port]);
    assert_refused(target(targets, 3), "loopback", &["::1", &hidden_port]);
    assert_refused(target(targets, 4), "loopback", &["ffff", &hidden_port]);
    // A redirect is not followed: the allowed host answered, where it pointed was not called.
    let redirect = target(targets, 5);
    assert_eq!(redirect.phase, DeliveryPhase::Failed, "{redirect:?}");
    assert_eq!(redirect.last_response_code, Some(307));
    assert!(
        redirect
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("redirects are not followed"),
        "{redirect:?}"
    );
    assert!(
        hidden.requests().is_empty(),
        "a refused address was called: {:?}",
        hidden.requests().len()
    );
    op.shutdown().await;
}

#[tokio::test]
async fn the_api_server_is_refused_even_on_an_allowed_address() {
    let env = TestEnv::new("egress-api").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    // The usual test setting: all of 127.0.0.1 allowed, where the API server listens too.
    let op = env.start_operator().await;
    let api = env.api_server;
    env.apply_route(
        "guard",
        spec(vec![webhook(&format!("https://{api}/api/v1/namespaces"))]),
    )
    .await;
    env.wait_ready("guard", "True").await;
    let delivery = env.deliver(&op, "guard", &sample("build-valid.json")).await;
    let status = delivery.status.unwrap();
    assert_refused(
        target(&status.targets, 0),
        "API server",
        &[&api.ip().to_string(), &api.port().to_string()],
    );
    op.shutdown().await;
}

#[tokio::test]
async fn denied_ranges_win_over_the_allow_list() {
    let stand_in = Sink::start(204).await;
    let env = TestEnv::new("egress-deny").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env
        .start_operator_with(|c| c.egress_deny = parse_cidrs("127.0.0.0/8").unwrap())
        .await;
    env.apply_route("guard", spec(vec![webhook(&stand_in.url())]))
        .await;
    env.wait_ready("guard", "True").await;
    let delivery = env.deliver(&op, "guard", &sample("build-valid.json")).await;
    let status = delivery.status.unwrap();
    assert_refused(target(&status.targets, 0), "--egress-deny", &["127.0.0.1"]);
    assert!(stand_in.requests().is_empty());
    op.shutdown().await;
}
