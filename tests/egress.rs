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
use statused_operator::egress::{EgressProfile, EgressProxy, parse_cidrs};
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
#[ignore = "needs the local cluster: hack/just test"]
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
    // The operator's own metrics port (as the operator itself, before its class), a name
    // resolving to loopback, IPv6 loopback and an IPv4-mapped loopback address are refused.
    let metrics_port = metrics.port().to_string();
    assert_refused(
        target(targets, 1),
        "operator itself",
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
#[ignore = "needs the local cluster: hack/just test"]
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
#[ignore = "needs the local cluster: hack/just test"]
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

/// A stand-in for an HTTP proxy: a sink that records what reaches it. A request sent through
/// it arrives in absolute form (`GET http://host:port/path`), an HTTPS one as `CONNECT
/// host:port`; either way its URI names the destination. It answers 204 and forwards nothing.
async fn proxy_stand_in() -> Sink {
    Sink::start(204).await
}

/// Where the requests a proxy stand-in received were going.
fn proxied_to(proxy: &Sink) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn proxy_from_environment_is_not_used() {
    let (target_sink, proxy) = (
        Sink::start_on("127.0.0.2".parse().unwrap(), 204).await,
        proxy_stand_in().await,
    );
    let env = TestEnv::new("egress-envproxy").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_route(
        "guard",
        spec(vec![webhook(&format!("{}/direct", target_sink.url()))]),
    )
    .await;
    // The variables a proxy injector sets that reqwest reads for an http:// URL. (Not
    // HTTPS_PROXY: the Kubernetes client would then need its `http-proxy` feature to start.)
    let op = support::OperatorProcess::spawn(&env.ns, |c| {
        for var in ["HTTP_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"] {
            c.env(var, proxy.url());
        }
        c.env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env("STATUSED_EGRESS_ALLOW", "127.0.0.2/32");
    });
    env.wait_ready("guard", "True").await;
    let (code, answer) = op
        .post_signed(&env.ns, "guard", &sample("build-valid.json"))
        .await;
    assert_eq!(code, 202, "{answer}");
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(
        target(&status.targets, 0).phase,
        DeliveryPhase::Succeeded,
        "{status:?}"
    );
    assert!(
        proxy.requests().is_empty(),
        "the proxy from the environment was used: {:?}",
        proxied_to(&proxy)
    );
    assert_eq!(target_sink.requests_to("/direct").len(), 1);
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn the_operator_itself_is_refused_even_on_an_allowed_address() {
    let reachable = Sink::start(204).await;
    // Stands for another port of the operator's pod, whose address is given as 127.0.0.3.
    let pod = Sink::start_on("127.0.0.3".parse().unwrap(), 204).await;
    let env = TestEnv::new("egress-self").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    // All of loopback opened, where the operator's own listeners are.
    let op = env
        .start_operator_with(|c| {
            c.egress_allow = parse_cidrs("127.0.0.0/8").unwrap();
            c.pod_ips = vec![pod.addr.ip()];
        })
        .await;
    let (hooks, metrics) = (op.webhook_addr.port(), op.metrics_addr.port());
    env.apply_route(
        "guard",
        spec(vec![
            webhook(&format!("{}/ok", reachable.url())),
            webhook(&format!("http://127.0.0.1:{hooks}/hooks/{}/guard", env.ns)),
            kind(json!({"webhook": {"method": "GET",
                "url": format!("http://127.0.0.2:{metrics}/metrics")}})),
            kind(json!({"webhook": {"method": "GET",
                "url": format!("http://localhost:{metrics}/metrics")}})),
            webhook(&format!("http://[::ffff:127.0.0.1]:{hooks}/")),
            webhook(&format!("{}/pod", pod.url())),
        ]),
    )
    .await;
    env.wait_ready("guard", "True").await;
    let delivery = env.deliver(&op, "guard", &sample("build-valid.json")).await;
    let status = delivery.status.unwrap();
    let targets = &status.targets;
    assert_eq!(target(targets, 0).phase, DeliveryPhase::Succeeded);
    let (hooks, metrics) = (hooks.to_string(), metrics.to_string());
    assert_refused(
        target(targets, 1),
        "operator itself",
        &["127.0.0.1", &hooks],
    );
    assert_refused(
        target(targets, 2),
        "operator itself",
        &["127.0.0.2", &metrics],
    );
    assert_refused(
        target(targets, 3),
        "operator itself",
        &["localhost", &metrics],
    );
    assert_refused(target(targets, 4), "operator itself", &["ffff", &hooks]);
    let pod_port = pod.addr.port().to_string();
    assert_refused(
        target(targets, 5),
        "operator itself",
        &["127.0.0.3", &pod_port],
    );
    assert!(pod.requests().is_empty());
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn egress_proxy_flag_still_guards_the_final_destination() {
    let (allowed, hidden, proxy) = (
        Sink::start_on("127.0.0.2".parse().unwrap(), 204).await,
        Sink::start(204).await,
        proxy_stand_in().await,
    );
    let env = TestEnv::new("egress-proxy").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    // Only 127.0.0.2 allowed. The proxy is named, and its name resolves to loopback: the
    // admin's proxy is reached, while a target with that name would not be.
    let proxy_url = format!("http://localhost:{}", proxy.addr.port());
    let op = env
        .start_operator_with(|c| {
            c.egress_allow = parse_cidrs("127.0.0.2/32").unwrap();
            c.egress_proxy = Some(EgressProxy::parse(&proxy_url).unwrap());
        })
        .await;
    let hidden_port = hidden.addr.port().to_string();
    env.apply_route(
        "guard",
        spec(vec![
            webhook(&format!("{}/via-proxy", allowed.url())),
            // A name that resolves to a refused address: the proxy would reach it.
            webhook(&format!("http://localhost:{hidden_port}/by-name")),
            webhook(&format!("http://127.0.0.1:{hidden_port}/by-address")),
            webhook(&format!("https://localhost:{hidden_port}/tunnel")),
        ]),
    )
    .await;
    env.wait_ready("guard", "True").await;
    let delivery = env.deliver(&op, "guard", &sample("build-valid.json")).await;
    let status = delivery.status.unwrap();
    let targets = &status.targets;
    // The allowed target went through the proxy (which answered for it).
    assert_eq!(target(targets, 0).phase, DeliveryPhase::Succeeded);
    assert_eq!(
        proxied_to(&proxy),
        vec![format!("POST {}/via-proxy", allowed.url())],
        "the proxy saw only the allowed target"
    );
    assert!(allowed.requests().is_empty(), "not sent around the proxy");
    for i in 1..=3 {
        assert_refused(target(targets, i), "loopback", &["localhost", &hidden_port]);
    }
    assert!(hidden.requests().is_empty());
    op.shutdown().await;
}

/// No packet may leave loopback even if the guard failed here: targets on private addresses
/// go through a proxy stand-in on 127.0.0.1, which records them and forwards nothing.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn the_strict_profile_refuses_private_ranges_unless_allowed() {
    let proxy = proxy_stand_in().await;
    let env = TestEnv::new("egress-strict").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env
        .start_operator_with(|c| {
            c.egress_profile = EgressProfile::Strict;
            c.egress_allow = parse_cidrs("127.0.0.1/32, 10.1.2.3/32").unwrap();
            c.egress_proxy = Some(EgressProxy::parse(&proxy.url()).unwrap());
        })
        .await;
    env.apply_route(
        "guard",
        spec(vec![
            webhook("http://10.1.2.3/opened"),
            webhook("http://10.9.8.7/rfc1918"),
            webhook("http://100.64.1.1/cgnat"),
            webhook("http://[fd12:3456::1]/unique-local"),
        ]),
    )
    .await;
    env.wait_ready("guard", "True").await;
    let delivery = env.deliver(&op, "guard", &sample("build-valid.json")).await;
    let status = delivery.status.unwrap();
    let targets = &status.targets;
    assert_eq!(target(targets, 0).phase, DeliveryPhase::Succeeded);
    assert_refused(target(targets, 1), "private", &["10.9.8.7"]);
    assert_refused(target(targets, 2), "private", &["100.64"]);
    assert_refused(target(targets, 3), "private", &["fd12"]);
    assert_eq!(
        proxied_to(&proxy),
        vec!["POST http://10.1.2.3/opened".to_string()],
        "only the allowed private address was called"
    );
    op.shutdown().await;
}
