//! The executor's IO without a cluster, in the style of controller-rs's fixtures: a
//! stand-in API server behind a real `kube::Client` (a tower service, no socket) keeps the
//! deliveries it is given, answers reads, status merge patches (conditional on the
//! resourceVersion, as the API server does) and Events, and records every request; a real
//! HTTP server on 127.0.0.1 stands in for the target. Each test drives looks at a delivery
//! through [`reconcile`], as the controller does, and checks the exact requests.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};

use axum::http::{Request, Response, StatusCode};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::Executor;
use super::step::reconcile;
use crate::api::fixtures::{rule, webhook};
use crate::api::{
    DeliveryPhase, MatchedTarget, OnUncertain, OrderedBy, OrderingPolicy, StatusedDelivery,
    StatusedRoute,
};
use crate::context::Context;
use crate::route::compile::compile_route;
use crate::route_cache::RouteCache;
use crate::routing::RouteState;
use crate::secrets::SecretSet;
use crate::targets::outbound::Outbound;

const NS: &str = "ns";
const DELIVERIES: &str = "/apis/statused.dev/v1alpha1/namespaces/ns/statuseddeliveries";

/// One request the stand-in API server got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// The stand-in API server: the deliveries it holds (by path), what it saw, and the
/// answers to force.
#[derive(Default)]
struct Server {
    objects: HashMap<String, Value>,
    seen: Vec<Seen>,
    resource_version: u64,
    /// The next this many status patches answer 409 whatever their resourceVersion.
    conflicts: usize,
}

#[derive(Clone, Default)]
struct ApiServer(Arc<Mutex<Server>>);

impl ApiServer {
    /// Holds `delivery` as stored (its resourceVersion set to the server's next).
    fn store(&self, delivery: &StatusedDelivery) -> StatusedDelivery {
        let mut s = self.0.lock().unwrap();
        s.resource_version += 1;
        let mut d = delivery.clone();
        d.metadata.resource_version = Some(s.resource_version.to_string());
        let path = format!("{DELIVERIES}/{}", d.metadata.name.as_deref().unwrap());
        let mut value = serde_json::to_value(&d).unwrap();
        value["apiVersion"] = json!("statused.dev/v1alpha1");
        value["kind"] = json!("StatusedDelivery");
        s.objects.insert(path, value);
        d
    }

    /// The delivery `name` as stored now.
    fn stored(&self, name: &str) -> StatusedDelivery {
        let s = self.0.lock().unwrap();
        serde_json::from_value(s.objects[&format!("{DELIVERIES}/{name}")].clone()).unwrap()
    }

    /// What it saw, as `METHOD path` (Events by their reason).
    fn requests(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.seen
            .iter()
            .map(|r| match r.body["reason"].as_str() {
                Some(reason) if r.path.contains("/events") => {
                    format!("{} event {reason}", r.method)
                }
                _ => format!("{} {}", r.method, r.path.trim_start_matches(DELIVERIES)),
            })
            .collect()
    }

    /// The bodies of the status patches it saw, in order.
    fn patches(&self) -> Vec<Value> {
        let s = self.0.lock().unwrap();
        s.seen
            .iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.body.clone())
            .collect()
    }

    fn conflict_next(&self, n: usize) {
        self.0.lock().unwrap().conflicts = n;
    }

    fn answer(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let mut s = self.0.lock().unwrap();
        s.seen.push(Seen {
            method: method.into(),
            path: path.into(),
            body: body.clone(),
        });
        if path.contains("/events") {
            return (StatusCode::CREATED, body);
        }
        let object = path.trim_end_matches("/status").to_string();
        let Some(stored) = s.objects.get(&object).cloned() else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        match method {
            "GET" => (StatusCode::OK, stored),
            "PATCH" => s.patch(&object, stored, &body),
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }
}

impl Server {
    /// A merge patch of the status, refused when its resourceVersion is not the stored one.
    fn patch(&mut self, path: &str, mut stored: Value, body: &Value) -> (StatusCode, Value) {
        let precondition = &body["metadata"]["resourceVersion"];
        if self.conflicts > 0 || *precondition != stored["metadata"]["resourceVersion"] {
            self.conflicts = self.conflicts.saturating_sub(1);
            return status(StatusCode::CONFLICT, "Conflict");
        }
        merge(&mut stored["status"], &body["status"]);
        self.resource_version += 1;
        stored["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.objects.insert(path.to_string(), stored.clone());
        (StatusCode::OK, stored)
    }
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (k, v) in patch {
        if v.is_null() {
            fields.remove(k);
        } else {
            merge(fields.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn status(code: StatusCode, reason: &str) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code.as_u16(), "message": reason,
    });
    (code, body)
}

/// A `kube::Client` whose requests `server` answers.
fn client(server: &ApiServer) -> kube::Client {
    let server = server.clone();
    let service = tower::service_fn(move |request: Request<kube::client::Body>| {
        let server = server.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
                .await
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, answer) = server.answer(parts.method.as_str(), parts.uri.path(), body);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(
                    serde_json::to_vec(&answer).unwrap(),
                ))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    kube::Client::new(service, NS)
}

/// The target: a real HTTP server on 127.0.0.1 that counts its calls and answers `code`.
async fn target(code: u16) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Atomic::SeqCst);
        async move { StatusCode::from_u16(code).unwrap() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// An executor over `server`, serving `route` (compiled, Ready, in the watch cache).
fn executor(server: &ApiServer, route: &StatusedRoute) -> Arc<Executor> {
    let client = client(server);
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(route.clone()));
    let routes = RouteCache::new(store);
    routes.synced();
    let secrets = SecretSet::new(NS).with("statused-webhook", &[("secret", "s")]);
    let compiled = compile_route(route, &secrets, &BTreeSet::new()).unwrap();
    routes
        .table
        .upsert(compiled.key.clone(), RouteState::Ready(Arc::new(compiled)));
    let config = crate::config::Config::default();
    let reporter = kube::runtime::events::Reporter {
        controller: "statused-operator".into(),
        instance: None,
    };
    let ctx = Arc::new(Context {
        recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
        client,
        metrics: Arc::default(),
        reconcile_failures: Default::default(),
        routes: Arc::new(routes),
        rate_limiter: Arc::default(),
        admission: Arc::new(crate::admission::Admission::new(64, 1 << 20)),
        stored: Arc::new(crate::stored::StoredDeliveries::new(
            crate::stored::Bounds {
                per_namespace: 100,
                total: 100,
                bytes_per_namespace: 1 << 20,
                bytes: 1 << 20,
            },
        )),
        health: Arc::default(),
        stopping: Default::default(),
        leading: tokio::sync::watch::channel(true).1,
        config,
    });
    // The target stands on 127.0.0.1, which only an explicit allow lets through.
    let policy = crate::egress::EgressPolicy {
        profile: crate::egress::EgressProfile::Default,
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        deny: Vec::new(),
        api_server: Vec::new(),
        own_ips: Vec::new(),
        listeners: Vec::new(),
    };
    crate::install_crypto_provider();
    let outbound = Outbound::new(policy, None).unwrap();
    Arc::new(Executor::new(ctx, outbound))
}

/// Route `r` (uid `u1`) with one rule, `a`, whose one target calls `url`; `at_most_once`
/// makes it `onUncertain: fail`.
fn route_to(url: &str, at_most_once: bool, ordered: bool) -> StatusedRoute {
    let mut a = rule("a").target(webhook(url));
    if ordered {
        a = a.ordering("$(data.app)", OrderingPolicy::InOrder);
    }
    let mut route = crate::api::fixtures::route(NS, "r")
        .uid("u1")
        .rule(a)
        .build();
    if at_most_once {
        route.spec.rules[0].targets[0].on_uncertain = OnUncertain::Fail;
    }
    route
}

/// Delivery `name` of event `name` (of app `ledger`, at second `second`) for route `r`,
/// matched to its one target (ordered by app when `ordered`), stored in `server`.
fn delivery(server: &ApiServer, name: &str, second: i64, ordered: bool) -> StatusedDelivery {
    let mut d = StatusedDelivery::fixture(name, "r");
    d.spec.route_uid = Some("u1".into());
    d.spec.event.data = json!({"app": "ledger"});
    d.spec.event.time = Some(
        jiff::Timestamp::from_second(1_700_000_000 + second)
            .unwrap()
            .to_string(),
    );
    d.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    d.spec.matched = vec![MatchedTarget {
        rule: "a".into(),
        target: 0,
        kind: "webhook".into(),
        ordering: ordered.then(|| OrderedBy {
            key: "ledger".into(),
            policy: OrderingPolicy::InOrder,
        }),
        follow: None,
        after: None,
    }];
    server.store(&d)
}

/// One look at `d`, as the controller makes it.
async fn look(
    ex: &Arc<Executor>,
    d: &StatusedDelivery,
) -> Result<Action, crate::controller::Error> {
    reconcile(Arc::new(d.clone()), ex.clone()).await
}

fn phase(d: &StatusedDelivery) -> Option<DeliveryPhase> {
    d.status.as_ref().map(|s| s.phase)
}

#[tokio::test]
async fn a_delivered_target_is_one_conditional_status_patch_then_an_event() {
    let (url, calls) = target(204).await;
    let server = ApiServer::default();
    let ex = executor(&server, &route_to(&url, false, false));
    let d = delivery(&server, "d1", 0, false);
    look(&ex, &d).await.unwrap();
    assert_eq!(calls.load(Atomic::SeqCst), 1);
    assert_eq!(
        server.requests(),
        ["PATCH /d1/status", "POST event Delivered"],
        "one write for the outcome, then the Event; no read: the copy was current"
    );
    let patch = &server.patches()[0];
    assert_eq!(
        patch["metadata"]["resourceVersion"],
        json!("1"),
        "conditional"
    );
    assert_eq!(patch["status"]["phase"], json!("Succeeded"));
    assert_eq!(
        patch["status"]["targets"][0]["lastResponseCode"],
        json!(204)
    );
    assert_eq!(patch["status"]["targets"][0]["attempts"], json!(1));
    assert!(
        patch["status"]["targets"][0].get("callStartedAt").is_none(),
        "no mark for an at-least-once target: {patch}"
    );
    assert_eq!(phase(&server.stored("d1")), Some(DeliveryPhase::Succeeded));
}

#[tokio::test]
async fn an_at_most_once_call_is_marked_before_it_is_made_and_the_outcome_written_on_the_mark() {
    let (url, calls) = target(204).await;
    let server = ApiServer::default();
    let ex = executor(&server, &route_to(&url, true, false));
    let d = delivery(&server, "d1", 0, false);
    look(&ex, &d).await.unwrap();
    assert_eq!(calls.load(Atomic::SeqCst), 1);
    let patches = server.patches();
    assert_eq!(patches.len(), 2, "{:?}", server.requests());
    let mark = &patches[0]["status"]["targets"][0];
    assert!(mark["callStartedAt"].is_string(), "the mark: {mark}");
    assert!(
        mark.get("lastResponseCode").is_none(),
        "no outcome yet: {mark}"
    );
    assert_eq!(
        patches[1]["metadata"]["resourceVersion"],
        json!("2"),
        "the outcome is conditional on the mark's version"
    );
    assert_eq!(patches[1]["status"]["phase"], json!("Succeeded"));
}

#[tokio::test]
async fn an_outcome_whose_write_conflicts_is_written_again_without_calling_again() {
    let (url, calls) = target(204).await;
    let server = ApiServer::default();
    let ex = executor(&server, &route_to(&url, false, false));
    let d = delivery(&server, "d1", 0, false);
    server.conflict_next(1);
    let error = look(&ex, &d).await.unwrap_err();
    assert!(error.to_string().contains("Conflict"), "{error}");
    assert_eq!(calls.load(Atomic::SeqCst), 1);
    // The controller looks again (after its backoff) at the copy it has: the call was made,
    // so this look only writes what it did.
    look(&ex, &d).await.unwrap();
    assert_eq!(
        calls.load(Atomic::SeqCst),
        1,
        "never called twice for one outcome"
    );
    assert_eq!(
        server.requests(),
        [
            "PATCH /d1/status",
            "PATCH /d1/status",
            "POST event Delivered"
        ]
    );
    assert_eq!(phase(&server.stored("d1")), Some(DeliveryPhase::Succeeded));
}

#[tokio::test]
async fn a_look_at_a_copy_older_than_its_own_write_reads_the_delivery_afresh() {
    let (url, calls) = target(503).await;
    let server = ApiServer::default();
    let ex = executor(&server, &route_to(&url, false, false));
    let d = delivery(&server, "d1", 0, false);
    look(&ex, &d).await.unwrap();
    assert_eq!(calls.load(Atomic::SeqCst), 1);
    let retrying = server.stored("d1");
    assert_eq!(
        phase(&retrying),
        Some(DeliveryPhase::Running),
        "a 503 is retried"
    );
    // The watch lags: the controller hands the first copy again, not the one just written.
    look(&ex, &d).await.unwrap();
    assert_eq!(
        server.requests(),
        ["PATCH /d1/status", "GET /d1"],
        "read afresh, and then nothing is due yet (its retry is later): no call, no write"
    );
    assert_eq!(calls.load(Atomic::SeqCst), 1);
}

#[tokio::test]
async fn the_outcome_of_an_ordered_call_wakes_the_next_event_for_its_key() {
    let (url, calls) = target(204).await;
    let server = ApiServer::default();
    let ex = executor(&server, &route_to(&url, false, true));
    let (wake, mut woken) = futures::channel::mpsc::unbounded();
    ex.index.new_term(wake);
    let first = delivery(&server, "first", 0, true);
    let second = delivery(&server, "second", 1, true);
    for d in [&first, &second] {
        ex.index.apply(watcher::Event::Apply(d.clone()));
    }
    // The later event looks first: it waits for the earlier one, and says so.
    look(&ex, &second).await.unwrap();
    assert_eq!(calls.load(Atomic::SeqCst), 0);
    let held = server.stored("second");
    let target = &held.status.as_ref().unwrap().targets[0];
    assert_eq!(target.waiting_for.as_deref(), Some("first"));
    assert!(woken.try_recv().is_err(), "nothing moved yet");
    look(&ex, &first).await.unwrap();
    assert_eq!(calls.load(Atomic::SeqCst), 1);
    assert_eq!(
        woken.try_recv().ok(),
        Some(ObjectRef::new("second").within(NS)),
        "the earlier event's outcome written: the later one may go"
    );
    look(&ex, &server.stored("second")).await.unwrap();
    assert_eq!(calls.load(Atomic::SeqCst), 2);
    assert_eq!(
        phase(&server.stored("second")),
        Some(DeliveryPhase::Succeeded)
    );
}
