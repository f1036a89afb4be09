//! Ordering per key, on the real API server, with a LaunchDarkly stand-in on loopback that
//! keeps its flag's state and checks the semantic patch LaunchDarkly documents. "In Review"
//! (flag off) fails twice (503, `Retry-After: 2`) then succeeds; "Ready for Sale" for the same
//! app (flag on) is sent meanwhile:
//! - `latestWins`: the flag ends on; the old event is Superseded, naming the newer one, and a
//!   redelivery of it says so and sends only when asked to ignore the ordering;
//! - `inOrder`: the stand-in sees the calls in event order, and the flag ends on;
//! - no `ordering`: as before, each delivery on its own, and the flag ends off;
//! - the same with the operator killed mid-way: the order comes from the stored deliveries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use statused_operator::api::{DeliveryPhase, StatusedDelivery, StatusedRedelivery};
use statused_operator::operator::Running;
use support::{SIGNING_SECRET, TestEnv, eventually, sample};

const TOKEN: &str = "api-ld-t0ken";
const FLAG_PATH: &str = "/api/v2/flags/mobile/new-onboarding";

/// What the stand-in saw and holds.
#[derive(Debug, Default)]
struct Flag {
    on: Option<bool>,
    /// Each call: the instruction (`true`: on) and the answer's code.
    calls: Vec<(bool, u16)>,
    /// Calls turning the flag off still to refuse.
    offs_to_fail: usize,
    /// Requests that were not what LaunchDarkly documents.
    malformed: Vec<String>,
}

/// A LaunchDarkly stand-in: `PATCH /api/v2/flags/{project}/{flag}` with a semantic patch.
struct LaunchDarkly {
    url: String,
    flag: Arc<Mutex<Flag>>,
}

impl LaunchDarkly {
    /// Refuses the first `offs_to_fail` calls turning the flag off with 503 and
    /// `Retry-After: 2`.
    async fn start(offs_to_fail: usize) -> Self {
        let flag = Arc::new(Mutex::new(Flag {
            offs_to_fail,
            ..Flag::default()
        }));
        let state = flag.clone();
        let app = axum::Router::new().route(
            FLAG_PATH,
            axum::routing::patch(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move { answer(&state, &headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, flag }
    }

    fn calls(&self) -> Vec<(bool, u16)> {
        self.flag.lock().unwrap().calls.clone()
    }

    fn on(&self) -> Option<bool> {
        let flag = self.flag.lock().unwrap();
        assert!(flag.malformed.is_empty(), "{:?}", flag.malformed);
        flag.on
    }
}

fn answer(
    state: &Mutex<Flag>,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, HeaderMap, String) {
    let mut flag = state.lock().unwrap();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let turn_on = match body["instructions"][0]["kind"].as_str() {
        Some("turnFlagOn") => Some(true),
        Some("turnFlagOff") => Some(false),
        _ => None,
    };
    let wire_ok = header("authorization") == TOKEN
        && header("content-type") == "application/json; domain-model=launchdarkly.semanticpatch"
        && header("ld-api-version") == "20240415"
        && body["environmentKey"] == "production";
    let Some(on) = turn_on.filter(|_| wire_ok) else {
        flag.malformed.push(format!("{headers:?} {body}"));
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), String::new());
    };
    if !on && flag.offs_to_fail > 0 {
        flag.offs_to_fail -= 1;
        flag.calls.push((on, 503));
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", "2".parse().unwrap());
        return (StatusCode::SERVICE_UNAVAILABLE, retry, String::new());
    }
    flag.calls.push((on, 200));
    flag.on = Some(on);
    (
        StatusCode::OK,
        HeaderMap::new(),
        json!({"key": "new-onboarding"}).to_string(),
    )
}

/// One rule: the flag follows the review, off in review and on once live, ordered per app
/// as `policy` says (none: no `ordering`).
fn route(ld: &LaunchDarkly, policy: Option<&str>) -> Value {
    let mut rule = json!({
        "name": "flag-follows-review",
        "match": {"types": ["com.statused.app.status.updated"],
                  "statuses": ["In Review", "Ready for Sale"]},
        "targets": [{"launchdarkly": {
            "accessTokenSecretRef": {"name": "launchdarkly"}, "project": "mobile",
            "flag": "new-onboarding", "environment": "production", "baseURL": ld.url,
            "action": "$(data.status == 'In Review' ? 'off' : 'on')"}}],
    });
    if let Some(policy) = policy {
        rule["ordering"] = json!({"key": "$(data.app_name)", "policy": policy});
    }
    json!({"signingSecrets": [{"name": "statused-webhook"}], "rules": [rule]})
}

async fn env(prefix: &str) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("launchdarkly", &[("access-token", TOKEN)])
        .await;
    env
}

/// Sends `file`'s event (with id `id`, its time now) to `route`; the delivery's name.
async fn send(env: &TestEnv, op: &Running, route: &str, file: &str, id: &str) -> String {
    let mut event: Value = serde_json::from_slice(&sample(file)).unwrap();
    event["id"] = id.into();
    let body = serde_json::to_vec(&event).unwrap();
    let (code, answer) = env.post_signed(op, route, &body, SIGNING_SECRET).await;
    assert_eq!(code, 202, "{answer}");
    answer["delivery"].as_str().unwrap().to_string()
}

/// The stand-in's first (refused) call, then "Ready for Sale" for the same app: the names of
/// the "In Review" and "Ready for Sale" deliveries.
async fn review_then_live(
    env: &TestEnv,
    op: &Running,
    route: &str,
    ld: &LaunchDarkly,
) -> (String, String) {
    let review = send(
        env,
        op,
        route,
        "app-in-review.json",
        &format!("{route}-review"),
    )
    .await;
    eventually("the first, refused call", || async {
        (!ld.calls().is_empty()).then_some(())
    })
    .await;
    let live = send(
        env,
        op,
        route,
        "app-ready-for-sale.json",
        &format!("{route}-live"),
    )
    .await;
    (review, live)
}

fn target_of(d: &StatusedDelivery) -> statused_operator::api::TargetStatus {
    d.status.clone().unwrap().targets[0].clone()
}

/// `latestWins`: the flag ends on, the old event is Superseded naming the newer one.
async fn assert_latest_wins(env: &TestEnv, ld: &LaunchDarkly, review: &str, live: &str) {
    let live_d = env.wait_delivery_finished(live).await;
    assert_eq!(target_of(&live_d).phase, DeliveryPhase::Succeeded);
    let review_d = env.wait_delivery_finished(review).await;
    let t = target_of(&review_d);
    assert_eq!(t.phase, DeliveryPhase::Superseded, "{t:?}");
    assert_eq!(t.superseded_by.as_deref(), Some(live));
    assert_eq!(review_d.status.unwrap().phase, DeliveryPhase::Superseded);
    assert_eq!(
        ld.on(),
        Some(true),
        "the flag ends on while the app is live"
    );
    assert_eq!(
        ld.calls(),
        [(false, 503), (true, 200)],
        "the old event is not sent again"
    );
}

/// `inOrder`: the calls in event order (off refused twice, off, on); the flag ends on.
async fn assert_in_order(env: &TestEnv, ld: &LaunchDarkly, review: &str, live: &str) {
    for name in [review, live] {
        let d = env.wait_delivery_finished(name).await;
        assert_eq!(target_of(&d).phase, DeliveryPhase::Succeeded, "{name}");
    }
    assert_eq!(
        ld.calls(),
        [(false, 503), (false, 503), (false, 200), (true, 200)],
        "Ready for Sale waits until In Review has finished"
    );
    assert_eq!(ld.on(), Some(true));
}

/// Ready for Sale's target shows that it waits for In Review.
async fn assert_waiting(env: &TestEnv, review: &str, live: &str) {
    let waiting = eventually("Ready for Sale waiting for In Review", || async {
        let d = env.deliveries().get(live).await.ok()?;
        let t = d.status?.targets.into_iter().next()?;
        t.waiting_for.clone().filter(|w| w == review).map(|_| t)
    })
    .await;
    assert_eq!(waiting.attempts, 0, "waiting is no attempt");
    let why = waiting.last_error.unwrap();
    assert!(why.starts_with("WaitingForEarlierEvent: "), "{why}");
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn each_policy_keeps_its_promise_and_no_ordering_keeps_the_old_behaviour() {
    let env = env("ordering").await;
    let (latest, in_order, none) = (
        LaunchDarkly::start(2).await,
        LaunchDarkly::start(2).await,
        LaunchDarkly::start(2).await,
    );
    env.apply_route("latest", route(&latest, Some("latestWins")))
        .await;
    env.apply_route("in-order", route(&in_order, Some("inOrder")))
        .await;
    let op = env
        .operator_with_route("unordered", route(&none, None))
        .await;
    for r in ["latest", "in-order"] {
        env.wait_ready(r, "True").await;
    }
    let (l_review, l_live) = review_then_live(&env, &op, "latest", &latest).await;
    let (o_review, o_live) = review_then_live(&env, &op, "in-order", &in_order).await;
    let (n_review, n_live) = review_then_live(&env, &op, "unordered", &none).await;

    assert_waiting(&env, &o_review, &o_live).await;
    assert_latest_wins(&env, &latest, &l_review, &l_live).await;
    assert_in_order(&env, &in_order, &o_review, &o_live).await;
    // No ordering: each delivery on its own, as before: the retried "off" lands last.
    for name in [&n_review, &n_live] {
        let d = env.wait_delivery_finished(name).await;
        assert_eq!(target_of(&d).phase, DeliveryPhase::Succeeded, "{name}");
    }
    assert_eq!(
        none.calls(),
        [(false, 503), (true, 200), (false, 503), (false, 200)]
    );
    assert_eq!(
        none.on(),
        Some(false),
        "the flag is off while the app is live"
    );

    let metrics = op.context.metrics.encode();
    assert!(
        metrics.contains("statused_target_calls_superseded_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"statused_target_calls_deferred_total{reason="earlierEvent"}"#),
        "{metrics}"
    );

    // A redelivery of the superseded event says so, and sends nothing...
    let requests: kube::Api<StatusedRedelivery> = kube::Api::namespaced(env.admin.clone(), &env.ns);
    let ask = |name: &str, ignore: bool| {
        serde_json::from_value::<StatusedRedelivery>(json!({
            "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedRedelivery",
            "metadata": {"name": name},
            "spec": {"delivery": l_review, "targets": "All", "ignoreOrdering": ignore},
        }))
        .unwrap()
    };
    let pp = kube::api::PostParams::default();
    requests.create(&pp, &ask("again", false)).await.unwrap();
    let (reason, message) = eventually("the redelivery's answer", || async {
        let c = requests
            .get("again")
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .next()?;
        (c.status == "True").then_some((c.reason, c.message))
    })
    .await;
    assert_eq!(reason, "Superseded", "{message}");
    assert!(message.contains("ignoreOrdering: true"), "{message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(latest.calls().len(), 2, "nothing sent");
    // ...unless asked to ignore the ordering: then the old event is sent, as asked (the
    // stand-in still refuses one more "off" first).
    requests.create(&pp, &ask("anyway", true)).await.unwrap();
    eventually("the old event sent on request", || async {
        (latest.on() == Some(false)).then_some(())
    })
    .await;
    assert_eq!(latest.calls()[2..], [(false, 503), (false, 200)]);
    let d = env.wait_delivery_finished(&l_review).await;
    assert_eq!(target_of(&d).phase, DeliveryPhase::Succeeded);
    op.shutdown().await;
}

/// Both ordered routes, each half-way: "Ready for Sale" succeeded (latestWins) or waits
/// (inOrder), and "In Review" is still to be tried again. Events go to `to`.
struct MidWay {
    latest: LaunchDarkly,
    in_order: LaunchDarkly,
    sent: [(String, String); 2],
}

async fn apply_ordered_routes(env: &TestEnv) -> (LaunchDarkly, LaunchDarkly) {
    let (latest, in_order) = (LaunchDarkly::start(2).await, LaunchDarkly::start(2).await);
    env.apply_route("latest", route(&latest, Some("latestWins")))
        .await;
    env.apply_route("in-order", route(&in_order, Some("inOrder")))
        .await;
    for r in ["latest", "in-order"] {
        env.wait_ready(r, "True").await;
    }
    (latest, in_order)
}

async fn half_way(
    env: &TestEnv,
    to: &Running,
    (latest, in_order): (LaunchDarkly, LaunchDarkly),
) -> MidWay {
    let l = review_then_live(env, to, "latest", &latest).await;
    let o = review_then_live(env, to, "in-order", &in_order).await;
    eventually("Ready for Sale succeeded", || async {
        latest.calls().contains(&(true, 200)).then_some(())
    })
    .await;
    assert_waiting(env, &o.0, &o.1).await;
    MidWay {
        latest,
        in_order,
        sent: [l, o],
    }
}

/// Whoever delivers now knows only the stored deliveries: the same outcome as without a stop.
async fn finished_in_order(env: &TestEnv, m: &MidWay) {
    let [(l_review, l_live), (o_review, o_live)] = &m.sent;
    assert_latest_wins(env, &m.latest, l_review, l_live).await;
    assert_in_order(env, &m.in_order, o_review, o_live).await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn the_order_holds_when_the_operator_is_killed_mid_way() {
    let env = env("ordering-kill").await;
    let op = env.start_operator().await;
    let m = half_way(&env, &op, apply_ordered_routes(&env).await).await;
    op.kill().await;
    assert_eq!(
        m.in_order.calls(),
        [(false, 503)],
        "killed before the retry"
    );
    let op = env.start_operator().await;
    finished_in_order(&env, &m).await;
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn the_order_holds_when_the_leader_changes_mid_way() {
    let env = env("ordering-leader").await;
    let lease = format!("lease-{}", env.ns);
    let (a, b) = (
        env.start_replica(&lease, "replica-a").await,
        env.start_replica(&lease, "replica-b").await,
    );
    let routes = apply_ordered_routes(&env).await;
    let a_leads = support::a_leads(&a, &b).await;
    let (leader, follower) = if a_leads { (a, b) } else { (b, a) };
    eventually("the follower ready", || async {
        follower.context.is_ready().then_some(())
    })
    .await;
    // The follower receives, the leader delivers, until it dies without a word: the
    // follower takes over once the Lease expires, from the stored deliveries alone.
    let m = half_way(&env, &follower, routes).await;
    leader.kill().await;
    finished_in_order(&env, &m).await;
    assert!(follower.context.is_leader());
    follower.shutdown().await;
}

/// The issue's corner: a route's policy switched while a delivery waits for its retry, then a
/// newer event for the key. Each delivery keeps the policy it was accepted with, and the
/// lane follows the newest's, so the two never wait for each other.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_policy_switched_while_deliveries_wait_never_deadlocks() {
    let env = env("switch").await;
    // In Review (off) is refused twice to `to_in_order`, and until the end to `to_latest`.
    let (to_in_order, to_latest) = (LaunchDarkly::start(2).await, LaunchDarkly::start(99).await);
    env.apply_route("to-in-order", route(&to_in_order, Some("latestWins")))
        .await;
    let op = env
        .operator_with_route("to-latest", route(&to_latest, Some("inOrder")))
        .await;
    env.wait_ready("to-in-order", "True").await;

    // latestWins → inOrder: the older (latestWins) goes first, then the newer (inOrder).
    let review = send(&env, &op, "to-in-order", "app-in-review.json", "a-review").await;
    eventually("the first, refused call", || async {
        (!to_in_order.calls().is_empty()).then_some(())
    })
    .await;
    env.apply_route("to-in-order", route(&to_in_order, Some("inOrder")))
        .await;
    env.wait_ready("to-in-order", "True").await;
    let live = send(
        &env,
        &op,
        "to-in-order",
        "app-ready-for-sale.json",
        "a-live",
    )
    .await;
    assert_in_order(&env, &to_in_order, &review, &live).await;

    // inOrder → latestWins: the newer (latestWins) goes first; the older is superseded.
    let review = send(&env, &op, "to-latest", "app-in-review.json", "b-review").await;
    eventually("the first, refused call", || async {
        (!to_latest.calls().is_empty()).then_some(())
    })
    .await;
    env.apply_route("to-latest", route(&to_latest, Some("latestWins")))
        .await;
    env.wait_ready("to-latest", "True").await;
    let live = send(&env, &op, "to-latest", "app-ready-for-sale.json", "b-live").await;
    let live_d = env.wait_delivery_finished(&live).await;
    assert_eq!(target_of(&live_d).phase, DeliveryPhase::Succeeded);
    let review_d = env.wait_delivery_finished(&review).await;
    let t = target_of(&review_d);
    assert_eq!(t.phase, DeliveryPhase::Superseded, "{t:?}");
    assert_eq!(t.superseded_by.as_deref(), Some(live.as_str()));
    assert_eq!(to_latest.on(), Some(true), "the flag ends on");
    assert_eq!(to_latest.calls().last(), Some(&(true, 200)));
    op.shutdown().await;
}
