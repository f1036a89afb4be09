//! The webhook receiver on its own: every status code it can answer, driven through the axum
//! router with `tower::ServiceExt::oneshot` (no socket, no API server, no kube client). The
//! store of deliveries and the watch cache of routes are in-memory doubles; routes are
//! compiled from `StatusedRoute`s the way the route reconciler compiles them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::runtime::watcher;
use serde_json::{Value, json};
use statused_operator::admission::Admission;
use statused_operator::api::fixtures::{RuleBuilder, route, rule, webhook};
use statused_operator::api::{StatusedDelivery, StatusedRoute};
use statused_operator::fair_share::FairShare;
use statused_operator::metrics::Metrics;
use statused_operator::naming::{delivery_name, second_delivery_name};
use statused_operator::rate_limit::RateLimiter;
use statused_operator::route::compile::compile_route;
use statused_operator::route::{CompiledRoute, RouteKey};
use statused_operator::route_cache::RouteIndex;
use statused_operator::routing::{RouteState, RoutingTable};
use statused_operator::secrets::SecretSet;
use statused_operator::server::webhook::{
    DeliveryStore, EVALUATIONS, Limits, Receiver, StoreError,
};
use statused_operator::server::webhook_router;
use statused_operator::signature::{SIGNATURE_HEADER, hmac_sha256_hex};
use statused_operator::stored::{ANNOTATION_SIZE, Bounds, StoredDeliveries};
use tower::ServiceExt;

const NS: &str = "mobile-ci";
/// The receiver's bounds on stored deliveries (counted only where a test feeds the counts).
const STORED_PER_NAMESPACE: usize = 3;
const STORED_TOTAL: usize = 100;
/// The operator's default replay window.
const REPLAY_WINDOW: Duration = Duration::from_secs(72 * 3600);
const SIGNING_SECRET_NAME: &str = "statused-webhook";
const SIGNING_SECRET: &str = "statused-test-secret";
const BUILD_UPDATED: &str = "com.statused.build.status.updated";
const BODY_LIMIT: usize = 64 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_millis(200);
const RECORD_TIMEOUT: Duration = Duration::from_millis(200);

/// A sample event dated now, inside the replay window.
fn sample(name: &str) -> Vec<u8> {
    let file = std::fs::read(format!(
        "{}/tests/fixtures/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut event: Value = serde_json::from_slice(&file).unwrap();
    event["time"] = jiff::Timestamp::now().to_string().into();
    serde_json::to_vec(&event).unwrap()
}

/// `build-valid.json` (a Valid build of Markdown Email) under another event id.
fn build_valid_with_id(id: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&sample("build-valid.json")).unwrap();
    event["id"] = id.into();
    serde_json::to_vec(&event).unwrap()
}

fn event_id(body: &[u8]) -> String {
    let event: Value = serde_json::from_slice(body).unwrap();
    event["id"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// The store of deliveries.

/// What a store call does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Works,
    /// Answers `StoreError::Unavailable` at once.
    Fails,
    /// Never answers.
    Hangs,
    /// Refused by the namespace's ResourceQuota `deliveries`, as the API server refuses.
    OverQuota,
}

/// `StatusedDelivery`s by (namespace, name), as the API server would keep them: a create of a
/// name that is taken is `AlreadyExists`.
#[derive(Default)]
struct MemoryStore {
    deliveries: Mutex<BTreeMap<(String, String), StatusedDelivery>>,
    create_mode: Mutex<Mode>,
    get_mode: Mutex<Mode>,
    /// `create` calls, whatever their outcome.
    create_calls: AtomicUsize,
    /// `create` calls that stored a delivery.
    creates: AtomicUsize,
}

impl MemoryStore {
    fn set_create(&self, mode: Mode) {
        *self.create_mode.lock().unwrap() = mode;
    }

    fn set_get(&self, mode: Mode) {
        *self.get_mode.lock().unwrap() = mode;
    }

    /// Puts a delivery in directly, as if an earlier create had stored it.
    fn insert(&self, delivery: StatusedDelivery) {
        let key = (
            delivery.metadata.namespace.clone().unwrap(),
            delivery.metadata.name.clone().unwrap(),
        );
        self.deliveries.lock().unwrap().insert(key, delivery);
    }

    fn stored(&self, name: &str) -> Option<StatusedDelivery> {
        self.deliveries
            .lock()
            .unwrap()
            .get(&(NS.to_string(), name.to_string()))
            .cloned()
    }

    fn len(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    fn create_calls(&self) -> usize {
        self.create_calls.load(Ordering::SeqCst)
    }
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("the store is down".into())
}

impl DeliveryStore for MemoryStore {
    fn create<'a>(
        &'a self,
        delivery: &'a StatusedDelivery,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.create_calls.fetch_add(1, Ordering::SeqCst);
        let result = match *self.create_mode.lock().unwrap() {
            Mode::Hangs => return futures::future::pending().boxed(),
            Mode::Fails => Err(unavailable()),
            Mode::OverQuota => Err(StoreError::OverQuota("deliveries".into())),
            Mode::Works => {
                let key = (
                    delivery.metadata.namespace.clone().unwrap_or_default(),
                    delivery.metadata.name.clone().unwrap_or_default(),
                );
                match self.deliveries.lock().unwrap().entry(key) {
                    Entry::Occupied(_) => Err(StoreError::AlreadyExists),
                    Entry::Vacant(free) => {
                        free.insert(delivery.clone());
                        self.creates.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }
            }
        };
        futures::future::ready(result).boxed()
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<StatusedDelivery, StoreError>> {
        let result = match *self.get_mode.lock().unwrap() {
            Mode::Hangs => return futures::future::pending().boxed(),
            Mode::Fails | Mode::OverQuota => Err(unavailable()),
            Mode::Works => self
                .deliveries
                .lock()
                .unwrap()
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| StoreError::Unavailable(format!("{namespace}/{name} not found"))),
        };
        futures::future::ready(result).boxed()
    }
}

// ---------------------------------------------------------------------------------------
// The watch cache of routes.

/// Whether the route list has synced, and the uid of each route the cache holds.
struct CachedRoutes {
    ready: AtomicBool,
    uids: Mutex<BTreeMap<RouteKey, Option<String>>>,
}

impl CachedRoutes {
    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    fn cache(&self, name: &str, uid: Option<&str>) {
        self.uids
            .lock()
            .unwrap()
            .insert(RouteKey::new(NS, name), uid.map(str::to_string));
    }
}

impl RouteIndex for CachedRoutes {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn cached_uid(&self, key: &RouteKey) -> Option<Option<String>> {
        self.uids.lock().unwrap().get(key).cloned()
    }
}

// ---------------------------------------------------------------------------------------
// Routes.

/// A rule that sends `types` x `statuses` to a webhook on a port nothing listens on (the
/// receiver only records; it never calls a target).
fn ship(id: &str) -> RuleBuilder {
    rule(id)
        .types(&[BUILD_UPDATED])
        .statuses(&["Valid"])
        .target(webhook("http://127.0.0.1:9/"))
}

/// The route most tests use: Valid builds go to one webhook.
fn releases() -> StatusedRoute {
    route(NS, "releases").uid("u1").rule(ship("ship")).build()
}

/// A `whsec_` secret, for routes whose events are signed as Standard Webhooks say.
const STANDARD_SECRET_NAME: &str = "standard-webhooks";
const STANDARD_KEY: &[u8] = b"a standard webhooks key";

fn compile(route: &StatusedRoute) -> CompiledRoute {
    use base64::Engine;
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(STANDARD_KEY)
    );
    let secrets = SecretSet::new(NS)
        .with(SIGNING_SECRET_NAME, &[("secret", SIGNING_SECRET)])
        .with(STANDARD_SECRET_NAME, &[("secret", &whsec)]);
    compile_route(route, &secrets, &BTreeSet::new()).unwrap()
}

// ---------------------------------------------------------------------------------------
// The receiver.

struct Harness {
    receiver: Arc<Receiver>,
    store: Arc<MemoryStore>,
    routes: Arc<CachedRoutes>,
}

/// One answer of the receiver.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON; `Null` when empty.
    json: Value,
}

impl Reply {
    fn retry_after(&self) -> Option<&str> {
        self.headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap())
    }

    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_else(|| {
            panic!("no error in {:?} ({})", self.json, self.status);
        })
    }
}

impl Harness {
    /// A ready receiver with no routes yet.
    fn new() -> Self {
        Self::with_admission(Admission::new(16, 1 << 20))
    }

    fn with_admission(admission: Admission) -> Self {
        let store = Arc::new(MemoryStore::default());
        // Counted from a watch that listed nothing: the store starts empty.
        let stored = Arc::new(StoredDeliveries::new(Bounds {
            per_namespace: STORED_PER_NAMESPACE,
            total: STORED_TOTAL,
            bytes_per_namespace: 1 << 30,
            bytes: 1 << 30,
        }));
        stored.observe(&watcher::Event::<StatusedDelivery>::Init);
        stored.observe(&watcher::Event::<StatusedDelivery>::InitDone);
        let routes = Arc::new(CachedRoutes {
            ready: AtomicBool::new(true),
            uids: Mutex::default(),
        });
        let receiver = Arc::new(Receiver {
            table: RoutingTable::default(),
            routes: routes.clone(),
            store: store.clone(),
            stored: stored.clone(),
            rate_limiter: Arc::new(RateLimiter::default()),
            admission: Arc::new(admission),
            evaluations: Arc::new(FairShare::new(EVALUATIONS)),
            metrics: Arc::new(Metrics::default()),
            limits: Limits {
                body_limit: BODY_LIMIT,
                body_timeout: BODY_TIMEOUT,
                record_timeout: RECORD_TIMEOUT,
                replay_window: REPLAY_WINDOW,
            },
        });
        Self {
            receiver,
            store,
            routes,
        }
    }

    /// A ready receiver serving `route`.
    fn serving(route: &StatusedRoute) -> Self {
        let h = Self::new();
        h.serve(route);
        h
    }

    /// `route` compiled into the table and in the watch cache, as once the route reconciler
    /// has seen it.
    fn serve(&self, route: &StatusedRoute) {
        self.compile_into_table(route);
        let key = RouteKey::of(route);
        self.routes.cache(&key.name, route.metadata.uid.as_deref());
    }

    /// `route` compiled into the table only.
    fn compile_into_table(&self, route: &StatusedRoute) {
        let compiled = compile(route);
        self.receiver
            .table
            .upsert(compiled.key.clone(), RouteState::Ready(Arc::new(compiled)));
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        // Bounded, so that a receiver that never answers fails the test instead of hanging it.
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            webhook_router(self.receiver.clone()).oneshot(request),
        )
        .await
        .expect("an answer within 5 s")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{status}: body is not JSON ({e}): {bytes:?}");
            })
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    /// POSTs `body` to route `name`, signed with the signing secret.
    async fn post(&self, name: &str, body: &[u8]) -> Reply {
        self.send(signed(name, body.to_vec())).await
    }

    /// How many answers of `code` the receiver counted in its metrics.
    fn counted(&self, code: u16) -> u64 {
        let line = format!("statused_webhook_requests_total{{code=\"{code}\"}} ");
        self.receiver
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.parse().unwrap())
    }
}

fn hook(name: &str) -> String {
    format!("/hooks/{NS}/{name}")
}

fn signature_of(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hmac_sha256_hex(SIGNING_SECRET.as_bytes(), body)
    )
}

/// A POST to route `name` declaring a body of `len` bytes (as a client with the whole body
/// at hand does), not signed yet.
fn post_to(name: &str, len: usize) -> axum::http::request::Builder {
    Request::builder()
        .method(Method::POST)
        .uri(hook(name))
        .header(header::CONTENT_TYPE, "application/cloudevents+json")
        .header(header::CONTENT_LENGTH, len)
}

fn signed(name: &str, body: Vec<u8>) -> Request<Body> {
    post_to(name, body.len())
        .header(SIGNATURE_HEADER, signature_of(&body))
        .body(Body::from(body))
        .unwrap()
}

/// A signed POST whose body arrives as `chunks`, with no Content-Length (chunked encoding).
fn chunked<S>(name: &str, signature: &str, chunks: S) -> Request<Body>
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Request::builder()
        .method(Method::POST)
        .uri(hook(name))
        .header(SIGNATURE_HEADER, signature)
        .body(Body::from_stream(chunks))
        .unwrap()
}

/// `build-valid.json` under `id`, dated `age_secs` before now (negative: after).
fn dated(id: &str, age_secs: i64) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&build_valid_with_id(id)).unwrap();
    let time = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_secs);
    event["time"] = time.to_string().into();
    serde_json::to_vec(&event).unwrap()
}

// ---------------------------------------------------------------------------------------
// 2xx

#[tokio::test]
async fn a_new_event_is_recorded_once_and_answered_202() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let id = event_id(&body);

    let reply = h.post("releases", &body).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    let name = delivery_name("releases", &id);
    assert_eq!(
        reply.json,
        json!({"delivery": name, "matched": [{"rule": "ship", "target": 0, "kind": "webhook"}]})
    );
    assert_eq!(reply.retry_after(), None);
    assert_eq!(h.store.creates(), 1);
    assert_eq!(h.store.len(), 1);
    let stored = h
        .store
        .stored(&name)
        .expect("recorded under the first name");
    let labels = stored.metadata.labels.clone().unwrap();
    assert_eq!(
        labels,
        BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "statused-operator".to_string()
            ),
            ("statused.dev/route".to_string(), "releases".to_string()),
            (
                "statused.dev/event-type".to_string(),
                BUILD_UPDATED.to_string()
            ),
        ])
    );
    // Not owned by the route (the record outlives it, see tests/dedup.rs), but it says
    // which route object accepted the event.
    assert_eq!(stored.metadata.owner_references, None);
    assert_eq!(stored.spec.route_uid.as_deref(), Some("u1"));
    assert_eq!(stored.route_uid(), Some("u1"));
    assert_eq!(stored.spec.route, "releases");
    assert_eq!(stored.spec.event.id, id);
    assert_eq!(stored.spec.event.type_, BUILD_UPDATED);
    assert_eq!(stored.spec.event.data["build_version"], "456");
    assert_eq!(stored.spec.matched.len(), 1);
    assert_eq!(h.counted(202), 1);
}

/// A POST of `body` to route `name` signed as Standard Webhooks say, at `at` (Unix seconds).
fn standard_signed(name: &str, body: Vec<u8>, at: i64) -> Request<Body> {
    let id = event_id(&body);
    post_to(name, body.len())
        .header("webhook-id", &id)
        .header("webhook-timestamp", at)
        .header(
            "webhook-signature",
            statused_operator::signature::sign_standard(STANDARD_KEY, &id, at, &body),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_route_signed_as_standard_webhooks_verifies_them_within_five_minutes() {
    let mut r = route(NS, "standard").uid("u-sw").rule(ship("ship")).build();
    r.spec.signature_format = statused_operator::api::SignatureFormat::StandardWebhooks;
    r.spec.signing_secrets[0].name = STANDARD_SECRET_NAME.into();
    let h = Harness::serving(&r);
    let now = jiff::Timestamp::now().as_second();
    let reply = h
        .send(standard_signed(
            "standard",
            build_valid_with_id("sw-1"),
            now,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    // Outside the tolerance, or signed the Statused way: refused, nothing recorded.
    let stale = h
        .send(standard_signed(
            "standard",
            build_valid_with_id("sw-2"),
            now - 301,
        ))
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        stale.error(),
        "invalid signature",
        "which check failed is not said"
    );
    let statused_way = h.post("standard", &build_valid_with_id("sw-3")).await;
    assert_eq!(statused_way.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn the_same_event_again_is_a_duplicate_answered_200() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let name = delivery_name("releases", &event_id(&body));
    assert_eq!(h.post("releases", &body).await.status, StatusCode::ACCEPTED);

    let reply = h.post("releases", &body).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["duplicate"], true);
    assert_eq!(reply.json["delivery"], name.as_str());
    assert_eq!(reply.json["matched"][0]["rule"], "ship");
    assert_eq!(h.store.creates(), 1, "recorded once");
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn an_event_no_rule_matches_is_answered_200_without_a_delivery() {
    let h = Harness::serving(&releases());

    let reply = h
        .post("releases", &sample("app-ready-for-distribution.json"))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json, json!({"matched": []}));
    assert_eq!(h.store.create_calls(), 0, "the store is not touched");
}

#[tokio::test]
async fn the_same_event_recorded_for_an_earlier_route_of_that_name_is_a_duplicate() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let id = event_id(&body);
    // The first name holds a record of this event id for an earlier route of that name,
    // deleted and applied again since (another uid): still the same event.
    let (first, _) = names_for(&id);
    h.store
        .insert(recorded(&first, &id, "uid-of-a-deleted-route"));

    let reply = h.post("releases", &body).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["duplicate"], true);
    assert_eq!(reply.json["delivery"], first.as_str());
    assert_eq!(h.store.creates(), 0);
}

#[tokio::test]
async fn a_name_taken_by_another_event_records_under_the_second_name() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let id = event_id(&body);
    // A 40-bit hash collision: the first name holds another event's record.
    let (first, second) = names_for(&id);
    h.store.insert(recorded(&first, "another-event", "u1"));

    let reply = h.post("releases", &body).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    assert_eq!(reply.json["delivery"], second.as_str());
    assert_eq!(reply.json.get("duplicate"), None);
    assert_eq!(h.store.stored(&second).unwrap().route_uid(), Some("u1"));
    assert_eq!(h.store.creates(), 1);
    // Its retry finds it there.
    let reply = h.post("releases", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["delivery"], second.as_str());
    assert_eq!(h.store.creates(), 1);
}

// ---------------------------------------------------------------------------------------
// Which route (503 / 404)

#[tokio::test]
async fn before_the_route_list_syncs_every_request_is_503() {
    let h = Harness::serving(&releases());
    h.routes.set_ready(false);

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "operator not ready");
    assert_eq!(reply.retry_after(), Some("10"));
    assert_eq!(h.store.create_calls(), 0);
}

#[tokio::test]
async fn a_route_neither_table_nor_cache_has_is_404() {
    let h = Harness::serving(&releases());

    let reply = h.post("nope", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error(), "no such route");
    assert_eq!(reply.retry_after(), None);
}

/// 503 "route is not ready", to be retried in 10 s.
fn assert_route_not_ready(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "route is not ready");
    assert_eq!(reply.retry_after(), Some("10"));
}

#[tokio::test]
async fn a_route_the_table_holds_as_not_ready_is_503() {
    let h = Harness::new();
    h.receiver
        .table
        .upsert(RouteKey::new(NS, "releases"), RouteState::NotReady);
    h.routes.cache("releases", Some("u1"));

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_route_not_ready(&reply);
}

#[tokio::test]
async fn a_route_cached_but_not_compiled_yet_is_503() {
    let h = Harness::new();
    h.routes.cache("releases", Some("u1"));

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_route_not_ready(&reply);
}

#[tokio::test]
async fn a_compiled_route_gone_from_the_cache_is_503() {
    let h = Harness::new();
    h.compile_into_table(&releases());

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "route is not ready");
    assert_eq!(
        h.store.create_calls(),
        0,
        "no record owned by a route that is gone"
    );
}

#[tokio::test]
async fn a_route_re_created_under_the_same_name_is_503_until_recompiled() {
    let h = Harness::new();
    // The table still holds the route compiled from uid u1; the cache already has u2.
    h.compile_into_table(&releases());
    h.routes.cache("releases", Some("u2"));

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_route_not_ready(&reply);
    assert_eq!(h.store.create_calls(), 0, "no record owned by the old uid");

    // Once the reconciler compiles u2 the two agree again.
    h.serve(&route(NS, "releases").uid("u2").rule(ship("ship")).build());
    let reply = h.post("releases", &sample("build-valid.json")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
}

// ---------------------------------------------------------------------------------------
// The body (413 / 408 / 400)

#[tokio::test]
async fn a_declared_content_length_over_the_limit_is_413_and_its_drain_is_a_request_in_flight() {
    // One request at a time. The body over the limit is drained (so that its sender reads
    // the 413) as a request in flight: while another holds the only slot, it waits its turn.
    let h = Harness::with_admission(Admission::new(1, 1 << 20));
    h.serve(&releases());
    let held = h
        .receiver
        .admission
        .try_admit("other-team", 1)
        .expect("budget free");
    let body = vec![b' '; BODY_LIMIT + 1];

    let reply = h.post("releases", &body).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "counted");

    drop(held);
    let reply = h.post("releases", &body).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.error(),
        format!("body larger than {BODY_LIMIT} bytes")
    );
    assert_eq!(reply.retry_after(), None);
    assert_eq!(h.store.create_calls(), 0);
    assert_eq!(h.receiver.admission.in_flight(), 0, "given back");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let h = Harness::serving(&releases());
    // 17 chunks of 4 KiB: one over the limit, and no Content-Length to tell up front.
    let chunks = (0..17).map(|_| Ok(Bytes::from(vec![b' '; 4096])));
    let request = chunked(
        "releases",
        &signature_of(b"whatever"),
        futures::stream::iter(chunks),
    );
    assert!(request.headers().get(header::CONTENT_LENGTH).is_none());

    let reply = h.send(request).await;

    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.error(),
        format!("body larger than {BODY_LIMIT} bytes")
    );
    assert_eq!(h.store.create_calls(), 0);
}

#[tokio::test]
async fn a_chunked_body_within_the_limit_is_accepted() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let signature = signature_of(&body);
    let chunks: Vec<_> = body
        .chunks(16)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();

    let reply = h
        .send(chunked(
            "releases",
            &signature,
            futures::stream::iter(chunks),
        ))
        .await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    assert_eq!(h.store.creates(), 1);
}

#[tokio::test]
async fn a_body_that_stalls_past_the_body_timeout_is_408() {
    let h = Harness::serving(&releases());
    let first = futures::stream::once(async { Ok(Bytes::from_static(b"{\"specversion\":")) });
    let stalls = first.chain(futures::stream::pending());
    let started = std::time::Instant::now();

    let reply = h
        .send(chunked("releases", &signature_of(b"x"), stalls))
        .await;

    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.error(), "body not received in time");
    assert_eq!(reply.retry_after(), None);
    let waited = started.elapsed();
    assert!(
        waited >= BODY_TIMEOUT && waited < BODY_TIMEOUT * 10,
        "{waited:?}"
    );
    assert_eq!(h.store.create_calls(), 0);
}

#[tokio::test]
async fn a_body_that_breaks_off_is_400() {
    let h = Harness::serving(&releases());
    let broken = futures::stream::iter([
        Ok(Bytes::from_static(b"{\"specversion\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )),
    ]);

    let reply = h
        .send(chunked("releases", &signature_of(b"x"), broken))
        .await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error(), "could not read body");
}

// ---------------------------------------------------------------------------------------
// The signature (401) and the event (400)

#[tokio::test]
async fn an_unsigned_event_is_401() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let request = post_to("releases", body.len())
        .body(Body::from(body))
        .unwrap();

    let reply = h.send(request).await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json, json!({"error": "invalid signature"}));
    assert_eq!(reply.retry_after(), None);
    assert_eq!(h.store.create_calls(), 0);
}

#[tokio::test]
async fn a_wrong_signature_is_401_and_says_only_invalid_signature() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let wrong = [
        // Another secret.
        format!("sha256={}", hmac_sha256_hex(b"not-the-secret", &body)),
        // The secret, over another body.
        signature_of(b"another body"),
        // Not of the form sha256=<64 hex>.
        "sha256=abc".to_string(),
        hmac_sha256_hex(SIGNING_SECRET.as_bytes(), &body),
    ];
    for signature in wrong {
        let request = post_to("releases", body.len())
            .header(SIGNATURE_HEADER, &signature)
            .body(Body::from(body.clone()))
            .unwrap();

        let reply = h.send(request).await;

        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{signature}");
        assert_eq!(
            reply.json,
            json!({"error": "invalid signature"}),
            "{signature}"
        );
    }
    assert_eq!(h.store.create_calls(), 0);
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_cloudevent_is_400() {
    let h = Harness::serving(&releases());
    for body in [
        &b"not json"[..],
        br#"{"hello": "world"}"#,
        br#"{"specversion":"0.3","id":"1","type":"t","source":"s"}"#,
        br#"{"specversion":"1.0","id":"","type":"t","source":"s"}"#,
    ] {
        let reply = h.post("releases", body).await;

        let text = String::from_utf8_lossy(body);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            reply.error().starts_with("invalid event: "),
            "{text}: {}",
            reply.error()
        );
        assert_eq!(reply.retry_after(), None);
    }
    assert_eq!(h.store.create_calls(), 0);
}

// ---------------------------------------------------------------------------------------
// Load (429 / 503)

#[tokio::test]
async fn over_the_route_rate_limit_is_429_with_retry_after() {
    let h = Harness::serving(
        &route(NS, "releases")
            .uid("u1")
            .rule(ship("ship"))
            .rate_limit(1, 1)
            .build(),
    );
    // Unsigned requests do not use up the route's budget.
    let body = build_valid_with_id("first");
    let not_signed = post_to("releases", body.len())
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(h.send(not_signed).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.post("releases", &body).await.status, StatusCode::ACCEPTED);

    let reply = h.post("releases", &build_valid_with_id("second")).await;

    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.error(), "route over its rate limit");
    // One event a minute, the one token just taken: the next is a minute away.
    assert_eq!(reply.retry_after(), Some("60"));
    assert_eq!(h.store.creates(), 1);
}

#[tokio::test]
async fn over_the_admission_budget_is_503_retry_after_1() {
    let h = Harness::with_admission(Admission::new(1, 1 << 20));
    h.serve(&releases());
    let held = h
        .receiver
        .admission
        .try_admit("other-team", 1)
        .expect("budget free");

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "receiver busy");
    assert_eq!(reply.retry_after(), Some("1"));
    assert_eq!(h.store.create_calls(), 0);

    drop(held);
    let reply = h.post("releases", &sample("build-valid.json")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
}

#[tokio::test(start_paused = true)]
async fn no_rule_evaluation_slot_within_the_evaluation_time_is_503_retry_after_1() {
    let h = Harness::serving(&releases());
    // Another team holds every slot for longer than a sender waits.
    let mut held = Vec::new();
    for _ in 0..EVALUATIONS {
        held.push(h.receiver.evaluations.acquire("another-team").await);
    }

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "receiver busy");
    assert_eq!(reply.retry_after(), Some("1"));
    assert_eq!(h.store.create_calls(), 0);
}

#[tokio::test]
async fn a_namespace_with_its_share_in_flight_is_429_retry_after_1_and_others_are_not_held_up() {
    let h = Harness::with_admission(Admission::new(16, 1 << 20).per_namespace(1));
    h.serve(&releases());
    // Another route of the same team holds the team's share.
    let held = h
        .receiver
        .admission
        .namespace_share(NS)
        .expect("share free");

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reply.error(),
        "too many events in flight for this namespace (--max-inflight-per-namespace)"
    );
    assert_eq!(reply.retry_after(), Some("1"));
    assert_eq!(h.store.create_calls(), 0);
    // Another team's share is its own.
    assert!(h.receiver.admission.namespace_share("other-team").is_some());
    drop(held);
    let reply = h.post("releases", &sample("build-valid.json")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
}

#[tokio::test]
async fn requests_to_one_namespace_signed_or_not_hold_at_most_half_the_receiver() {
    // 8 requests at once: at most 4 to one namespace's routes, before any signature.
    let h = Harness::with_admission(Admission::new(8, 1 << 20));
    h.serve(&releases());
    // Whoever floods another team's URL holds that team's half...
    let flood: Vec<_> = (0..4)
        .map(|_| h.receiver.admission.try_admit("other-team", 1).unwrap())
        .collect();
    assert!(h.receiver.admission.try_admit("other-team", 1).is_err());
    // ... and this team's events are not held up.
    let reply = h.post("releases", &sample("build-valid.json")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    drop(flood);
    // Flooded itself, this team gets 429 at once, naming the bound.
    let mine: Vec<_> = (0..4)
        .map(|_| h.receiver.admission.try_admit(NS, 1).unwrap())
        .collect();
    let reply = h.post("releases", &build_valid_with_id("flooded")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reply.error(),
        "requests to this namespace's routes hold half the receiver's requests or body bytes, the most one namespace may"
    );
    assert_eq!(reply.retry_after(), Some("1"));
    drop(mine);
}

#[tokio::test(start_paused = true)]
async fn a_signature_is_checked_in_a_slot_of_the_blocking_pool_not_on_the_workers() {
    let h = Harness::serving(&releases());
    let mut held = Vec::new();
    for _ in 0..EVALUATIONS {
        held.push(h.receiver.evaluations.acquire("another-team").await);
    }
    // A wrong signature would be 401 at once if it were checked inline: it waits for a
    // slot, like rule matching, and hears 503 when none frees within the evaluation time.
    let body = sample("build-valid.json");
    let request = post_to("releases", body.len())
        .header(SIGNATURE_HEADER, format!("sha256={}", "0".repeat(64)))
        .body(Body::from(body))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "receiver busy");
    drop(held);
    let body = sample("build-valid.json");
    let request = post_to("releases", body.len())
        .header(SIGNATURE_HEADER, format!("sha256={}", "0".repeat(64)))
        .body(Body::from(body))
        .unwrap();
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_namespace_with_its_most_stored_deliveries_is_429_naming_the_bound() {
    let h = Harness::serving(&releases());
    for i in 0..STORED_PER_NAMESPACE {
        let reply = h
            .post("releases", &build_valid_with_id(&format!("e{i}")))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    // What the watch of deliveries would tell every replica.
    for d in h.store.deliveries.lock().unwrap().values() {
        h.receiver.stored.observe(&watcher::Event::Apply(d.clone()));
    }

    let reply = h.post("releases", &build_valid_with_id("one-more")).await;

    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        reply.json
    );
    assert!(
        reply
            .error()
            .contains("holds 3 stored deliveries, its most (--max-deliveries-per-namespace 3)"),
        "{}",
        reply.error()
    );
    assert_eq!(reply.retry_after(), Some("60"));
    assert_eq!(h.store.len(), STORED_PER_NAMESPACE, "nothing more stored");
    assert!(h.receiver.stored.admit("other-team", 1000).is_ok());
    // An event already stored is still a duplicate at the bound, so its sender stops.
    let reply = h.post("releases", &build_valid_with_id("e0")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["duplicate"], true);
    // Each stored delivery carries its size, which every replica's count reads.
    let size: usize = h
        .store
        .deliveries
        .lock()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .metadata
        .annotations
        .as_ref()
        .unwrap()[ANNOTATION_SIZE]
        .parse()
        .unwrap();
    assert!(size > 100, "{size}");
}

#[tokio::test]
async fn a_namespace_over_its_delivery_quota_is_429_naming_the_quota() {
    let h = Harness::serving(&releases());
    h.store.set_create(Mode::OverQuota);

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        reply.json
    );
    assert!(
        reply
            .error()
            .contains("ResourceQuota deliveries has no room"),
        "{}",
        reply.error()
    );
    assert_eq!(reply.retry_after(), Some("60"));
    assert_eq!(h.store.len(), 0);
    h.store.set_create(Mode::Works);
    let reply = h.post("releases", &sample("build-valid.json")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "room again: accepted");
    // The quota used up again, a retry of the stored event is still a duplicate.
    h.store.set_create(Mode::OverQuota);
    let reply = h.post("releases", &sample("build-valid.json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["duplicate"], true);
}

#[tokio::test]
async fn an_event_over_the_data_limits_is_400_naming_the_limit_and_records_nothing() {
    let h = Harness::serving(&releases());
    let mut event: Value = serde_json::from_slice(&dated("over-limits", 0)).unwrap();
    event["data"]["l"] = json!(vec![0; 3000]);

    let reply = h
        .post("releases", &serde_json::to_vec(&event).unwrap())
        .await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json);
    assert!(
        reply.error().contains("data.l has more than 256 items"),
        "{}",
        reply.error()
    );
    assert_eq!(h.store.create_calls(), 0);
}

// ---------------------------------------------------------------------------------------
// The store (503)

#[tokio::test]
async fn a_store_that_fails_is_503_retry_after_5() {
    let h = Harness::serving(&releases());
    h.store.set_create(Mode::Fails);

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.error(),
        "could not record event",
        "no internal detail"
    );
    assert_eq!(reply.retry_after(), Some("5"));
    assert_eq!(h.store.create_calls(), 1);
    assert_eq!(h.store.len(), 0);
}

#[tokio::test]
async fn a_store_that_hangs_past_the_record_timeout_is_503_retry_after_5() {
    let h = Harness::serving(&releases());
    h.store.set_create(Mode::Hangs);
    let started = std::time::Instant::now();

    let reply = h.post("releases", &sample("build-valid.json")).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "could not record event in time");
    assert_eq!(reply.retry_after(), Some("5"));
    let waited = started.elapsed();
    assert!(
        waited >= RECORD_TIMEOUT && waited < RECORD_TIMEOUT * 10,
        "{waited:?}"
    );
    assert_eq!(h.store.len(), 0);
}

#[tokio::test]
async fn a_store_that_cannot_read_back_a_taken_name_is_503_retry_after_5() {
    for (mode, error) in [
        (Mode::Fails, "could not record event"),
        (Mode::Hangs, "could not record event in time"),
    ] {
        let h = Harness::serving(&releases());
        let body = sample("build-valid.json");
        assert_eq!(h.post("releases", &body).await.status, StatusCode::ACCEPTED);
        h.store.set_get(mode);

        let reply = h.post("releases", &body).await;

        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{mode:?}");
        assert_eq!(reply.error(), error, "{mode:?}");
        assert_eq!(reply.retry_after(), Some("5"), "{mode:?}");
        assert_eq!(h.store.creates(), 1, "{mode:?}");
    }
}

/// The two names `new_delivery` gives event `id` of route `releases`.
fn names_for(id: &str) -> (String, String) {
    (
        delivery_name("releases", id),
        second_delivery_name("releases", id),
    )
}

/// A delivery of event `id` for route `releases` (uid `uid`) stored under `name`.
fn recorded(name: &str, id: &str, uid: &str) -> StatusedDelivery {
    serde_json::from_value(json!({
        "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedDelivery",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "route": "releases", "routeUID": uid,
            "event": {"id": id, "type": BUILD_UPDATED, "source": "statused", "data": {}},
            "matched": [{"rule": "ship", "target": 0, "kind": "webhook"}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn both_names_taken_by_other_events_is_503() {
    let h = Harness::serving(&releases());
    let body = sample("build-valid.json");
    let (first, second) = names_for(&event_id(&body));
    h.store.insert(recorded(&first, "another-event", "u1"));
    h.store.insert(recorded(&second, "yet-another-event", "u1"));

    let reply = h.post("releases", &body).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "could not record event");
    assert_eq!(reply.retry_after(), Some("10"));
    assert_eq!(h.store.create_calls(), 2, "both names tried");
    assert_eq!(h.store.creates(), 0);
    assert_eq!(
        h.store.stored(&first).unwrap().spec.event.id,
        "another-event"
    );
}

// ---------------------------------------------------------------------------------------
// The method (405)

#[tokio::test]
async fn get_on_the_hook_path_is_405() {
    let h = Harness::serving(&releases());
    let request = Request::builder()
        .method(Method::GET)
        .uri(hook("releases"))
        .body(Body::empty())
        .unwrap();

    let reply = h.send(request).await;

    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        reply
            .headers
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap()),
        Some("POST")
    );
    assert_eq!(h.store.create_calls(), 0);
}

// ---------------------------------------------------------------------------------------
// The replay window

/// How many events the receiver refused for `reason` in its metrics.
fn refused(h: &Harness, reason: &str) -> u64 {
    let line = format!("statused_webhook_events_refused_total{{reason=\"{reason}\"}} ");
    h.receiver
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn an_event_older_than_the_replay_window_is_refused_400() {
    let h = Harness::serving(&releases());
    let window = REPLAY_WINDOW.as_secs() as i64;
    // A second inside the window: accepted (the edge, with a minute for the test's own time).
    let inside = h.post("releases", &dated("inside", window - 60)).await;
    assert_eq!(inside.status, StatusCode::ACCEPTED, "{:?}", inside.json);
    let old = h.post("releases", &dated("old", window + 60)).await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST, "{:?}", old.json);
    assert_eq!(
        old.json,
        json!({"error": "event time is older than the replay window"})
    );
    assert_eq!(old.headers.get(header::RETRY_AFTER), None);
    assert_eq!(h.store.creates(), 1, "the old event is not recorded");
    assert_eq!(refused(&h, "too_old"), 1);
}

#[tokio::test]
async fn an_event_dated_more_than_five_minutes_ahead_is_refused_400() {
    let h = Harness::serving(&releases());
    let ahead = h.post("releases", &dated("ahead", -(4 * 60 + 50))).await;
    assert_eq!(ahead.status, StatusCode::ACCEPTED, "{:?}", ahead.json);
    let future = h.post("releases", &dated("future", -(5 * 60 + 30))).await;
    assert_eq!(future.status, StatusCode::BAD_REQUEST, "{:?}", future.json);
    assert_eq!(
        future.json,
        json!({"error": "event time is too far in the future"})
    );
    assert_eq!(refused(&h, "in_future"), 1);
}

#[tokio::test]
async fn an_event_without_a_time_is_refused_unless_the_route_disables_the_window() {
    let mut event: Value = serde_json::from_slice(&build_valid_with_id("timeless")).unwrap();
    event.as_object_mut().unwrap().remove("time");
    let body = serde_json::to_vec(&event).unwrap();
    let h = Harness::serving(&releases());
    let reply = h.post("releases", &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json);
    assert_eq!(refused(&h, "no_time"), 1);

    let open = route(NS, "open")
        .uid("u9")
        .rule(ship("ship"))
        .replay_window("0")
        .build();
    h.serve(&open);
    let reply = h.post("open", &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    let reply = h.post("open", &dated("ancient", 10 * 365 * 86400)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
}

#[tokio::test]
async fn a_route_replay_window_overrides_the_operators() {
    let h = Harness::new();
    let short = route(NS, "short")
        .uid("u8")
        .rule(ship("ship"))
        .replay_window("1h")
        .build();
    h.serve(&short);
    let reply = h.post("short", &dated("recent", 3000)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    let reply = h.post("short", &dated("two-hours", 7200)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json);
}

/// An App Store Connect notification from tests/fixtures/app-store-connect, dated now.
fn apple_notification(name: &str) -> Vec<u8> {
    use statused_operator::cli::send::{Sender, dated_now};
    let path = format!(
        "{}/tests/fixtures/app-store-connect/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    dated_now(&std::fs::read(path).unwrap(), Sender::AppStoreConnect).unwrap()
}

/// A POST of `body` signed as App Store Connect signs: `x-apple-signature: hmacsha256=<hex>`.
fn apple_signed(name: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(hook(name))
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            "x-apple-signature",
            statused_operator::signature::sign_apple(SIGNING_SECRET.as_bytes(), &body),
        )
        .body(Body::from(body))
        .unwrap()
}

/// A route for App Store Connect's own notifications: versions in review go to one webhook.
fn from_apple() -> StatusedRoute {
    let mut r = route(NS, "apple")
        .uid("u-asc")
        .rule(
            rule("in-review")
                .types(&["appStoreVersionAppVersionStateUpdated"])
                // Statused's label: App Store Connect's IN_REVIEW matches it.
                .statuses(&["In Review"])
                .target(webhook("http://127.0.0.1:9/")),
        )
        .build();
    r.spec.source = statused_operator::api::EventSource::AppStoreConnect;
    r
}

#[tokio::test]
async fn an_app_store_connect_notification_is_verified_mapped_and_recorded_once() {
    let h = Harness::serving(&from_apple());
    let body = apple_notification("app-version-in-review.json");

    let reply = h.send(apple_signed("apple", body.clone())).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json);
    assert_eq!(reply.json["matched"][0]["rule"], "in-review");
    let id = "0d6a9f4e-3f0e-4c55-9a1b-2f4d1c6e8a01";
    let stored = h.store.stored(&delivery_name("apple", id)).unwrap();
    assert_eq!(stored.spec.event.id, id);
    assert_eq!(
        stored.spec.event.type_,
        "appStoreVersionAppVersionStateUpdated"
    );
    assert_eq!(stored.spec.event.data["status"], "IN_REVIEW");
    assert_eq!(stored.spec.event.data["old_status"], "WAITING_FOR_REVIEW");
    assert_eq!(stored.spec.event.data["instance_type"], "appStoreVersions");
    // The same notification again (Apple's redelivery) is the same event: no second record.
    let again = h.send(apple_signed("apple", body)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["duplicate"], true);
    assert_eq!(h.store.creates(), 1);
}

#[tokio::test]
async fn an_app_store_connect_ping_is_verified_and_answered_without_a_delivery() {
    let h = Harness::serving(&from_apple());
    let ping = apple_notification("ping.json");

    let reply = h.send(apple_signed("apple", ping.clone())).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json, json!({"ping": true}));
    assert_eq!(h.store.creates(), 0);
    // A ping is verified like any notification.
    let mut unsigned = apple_signed("apple", ping);
    unsigned.headers_mut().remove("x-apple-signature");
    assert_eq!(h.send(unsigned).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_app_store_connect_route_refuses_what_apple_would_not_send() {
    let h = Harness::serving(&from_apple());
    let body = apple_notification("app-version-in-review.json");
    // Signed the Statused way, or with another secret: 401, nothing recorded.
    assert_eq!(
        h.post("apple", &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut forged = apple_signed("apple", body.clone());
    forged.headers_mut().insert(
        "x-apple-signature",
        statused_operator::signature::sign_apple(b"not the secret", &body)
            .parse()
            .unwrap(),
    );
    assert_eq!(h.send(forged).await.status, StatusCode::UNAUTHORIZED);
    // A Statused event, signed Apple's way, is not a notification: 400 saying so.
    let statused = sample("build-valid.json");
    let reply = h.send(apple_signed("apple", statused)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply
            .error()
            .contains("not an App Store Connect notification"),
        "{}",
        reply.error()
    );
    // Outside the replay window, as for Statused's events.
    let stale = String::from_utf8(body)
        .unwrap()
        .replace(
            &jiff::Timestamp::now().to_string()[..4],
            "2001", // the year
        )
        .into_bytes();
    let reply = h.send(apple_signed("apple", stale)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json);
    // Over the data limits: refused naming where, as for Statused's events.
    let long = "x".repeat(statused_operator::event::DATA_LIMITS.max_string_bytes + 1);
    let big = serde_json::to_vec(&json!({"data": {"type": "buildUploadStateUpdated",
        "id": "big", "attributes": {"newState": long}}}))
    .unwrap();
    let reply = h.send(apple_signed("apple", big)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error().contains("body.data.attributes.newState"),
        "{}",
        reply.error()
    );
    assert_eq!(h.store.creates(), 0);
}
