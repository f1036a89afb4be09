//! The receiver: verify, parse, match and record one Statused event.
//!
//! Order matters: the route is looked up first (404), the body size is checked before any MAC
//! work (413), the signature is verified before the body is parsed (401), and only a durable
//! `StatusedDelivery` earns a 2xx.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::admission::{Admission, Admitted, Refused};
use crate::api::{MatchedTarget, StatusedDelivery};
use crate::event::Envelope;
use crate::fair_share::FairShare;
use crate::metrics::Metrics;
use crate::naming::{delivery_name, second_delivery_name};
use crate::rate_limit::RateLimiter;
use crate::replay::{self, OutsideWindow};
use crate::route::{CompiledRoute, RouteKey};
use crate::route_cache::RouteIndex;
use crate::routing::{RouteCheck, RoutingTable};
use crate::signature::{self, APPLE_SIGNATURE_HEADER, SIGNATURE_HEADER};
use crate::stored::{ANNOTATION_SIZE, Full, StoredDeliveries, json_len};
use crate::traces::{Kind, Span};

/// What the receiver needs, and nothing more: no kube client, no leadership. Tests build it
/// with an in-memory store (`tests/receiver.rs`); `operator.rs` with the API server's.
pub struct Receiver {
    pub table: RoutingTable,
    /// The watch cache of routes, to tell "no such route" from "not compiled yet".
    pub routes: Arc<dyn RouteIndex>,
    /// Where accepted events are recorded.
    pub store: Arc<dyn DeliveryStore>,
    /// How many deliveries are stored, per namespace and in all, and the bounds.
    pub stored: Arc<StoredDeliveries>,
    pub rate_limiter: Arc<RateLimiter>,
    /// The budget of requests and body bytes in flight.
    pub admission: Arc<Admission>,
    /// Work on the blocking pool at once, signature checks and rule evaluations (CEL)
    /// ([`EVALUATIONS`]), handed out round-robin across namespaces.
    pub evaluations: Arc<FairShare>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

/// The receiver's own settings (flags of `statused-operator run`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted body, in bytes (larger: 413).
    pub body_limit: usize,
    /// How long a sender may take to deliver the body (slower: 408).
    pub body_timeout: std::time::Duration,
    /// How long the store may take to record a delivery (slower: 503).
    pub record_timeout: std::time::Duration,
    /// Events whose signed time is older are refused (400); a route's `spec.replayWindow`
    /// overrides it; zero: no limit.
    pub replay_window: std::time::Duration,
}

/// Records accepted events durably: a 2xx is only given once `create` succeeded.
pub trait DeliveryStore: Send + Sync {
    fn create<'a>(
        &'a self,
        delivery: &'a StatusedDelivery,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<StatusedDelivery, StoreError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a delivery of that name exists")]
    AlreadyExists,
    /// The namespace's ResourceQuota (named, when the API server said which) has no room.
    #[error("exceeded quota: {0}")]
    OverQuota(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<Refused> for ReceiveError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Namespace => ReceiveError::NamespaceHalf,
            Refused::Busy => ReceiveError::Busy,
        }
    }
}

/// Every way a request can be refused. Bodies are short and never carry internal detail.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("operator not ready")]
    NotReady,
    #[error("no such route")]
    UnknownRoute,
    #[error("route is not ready")]
    RouteNotReady,
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("could not read body")]
    BadBody,
    #[error("body not received in time")]
    SlowBody,
    #[error("route over its rate limit")]
    RateLimited(std::time::Duration),
    /// The route's namespace has its share of the receiver in flight already.
    #[error("too many events in flight for this namespace (--max-inflight-per-namespace)")]
    RouteBusy,
    /// Requests to the namespace's routes, signed or not, hold half the receiver's requests
    /// or body bytes already.
    #[error(
        "requests to this namespace's routes hold half the receiver's requests or body bytes, the most one namespace may"
    )]
    NamespaceHalf,
    /// The namespace's ResourceQuota on deliveries is used up: its team must let deliveries
    /// finish and be pruned, or raise the quota. Answered 429, so the sender retries later.
    #[error(
        "the namespace's ResourceQuota {0} has no room for another StatusedDelivery; retry after its deliveries finish and are pruned, or raise the quota"
    )]
    OverQuota(String),
    #[error("invalid signature")]
    Signature(#[from] signature::SignatureError),
    #[error("invalid event: {0}")]
    Envelope(#[from] crate::event::EnvelopeError),
    /// Outside the replay window: refused for good (a 4xx the sender does not retry).
    #[error("{0}")]
    Replay(#[from] OutsideWindow),
    #[error("receiver busy")]
    Busy,
    /// The namespace (429) or the operator (503) holds its most stored deliveries.
    #[error("{0}")]
    Full(Full),
    #[error("could not record event")]
    Record(#[source] StoreError),
    #[error("could not record event in time")]
    RecordTimeout,
    #[error("could not record event")]
    NameTaken,
}

impl ReceiveError {
    pub fn status(&self) -> StatusCode {
        match self {
            // The operator's bound across namespaces: not the team's doing.
            ReceiveError::Full(full) if !full.is_namespace() => StatusCode::SERVICE_UNAVAILABLE,
            ReceiveError::NotReady
            | ReceiveError::RouteNotReady
            | ReceiveError::Busy
            | ReceiveError::Record(_)
            | ReceiveError::RecordTimeout
            | ReceiveError::NameTaken => StatusCode::SERVICE_UNAVAILABLE,
            ReceiveError::UnknownRoute => StatusCode::NOT_FOUND,
            ReceiveError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ReceiveError::BadBody | ReceiveError::Envelope(_) | ReceiveError::Replay(_) => {
                StatusCode::BAD_REQUEST
            }
            ReceiveError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            ReceiveError::RateLimited(_)
            | ReceiveError::RouteBusy
            | ReceiveError::NamespaceHalf
            | ReceiveError::OverQuota(_)
            | ReceiveError::Full(_) => StatusCode::TOO_MANY_REQUESTS,
            ReceiveError::Signature(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for ReceiveError {
    fn into_response(self) -> Response {
        let status = self.status();
        // 401 says only "invalid signature": which check failed is for the log, not the caller.
        let mut response = (status, Json(json!({"error": self.to_string()}))).into_response();
        // Tell the sender when to try again.
        let retry_after = match &self {
            ReceiveError::RateLimited(wait) => Some(wait.as_secs_f64().ceil().max(1.0).to_string()),
            // Over the in-flight budget: capacity frees up within moments.
            ReceiveError::Busy | ReceiveError::RouteBusy | ReceiveError::NamespaceHalf => {
                Some("1".to_string())
            }
            // The count is a moment away: the watch's first list.
            ReceiveError::Full(Full::NotListed) => Some("5".to_string()),
            // Room in a quota comes back as deliveries finish and are pruned.
            ReceiveError::OverQuota(_) | ReceiveError::Full(_) => Some("60".to_string()),
            // The API server is slow or refusing: give it a few seconds.
            ReceiveError::Record(_) | ReceiveError::RecordTimeout => Some("5".to_string()),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some("10".to_string()),
            _ => None,
        };
        if let Some(value) = retry_after.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[instrument(skip_all, fields(route = %format!("{namespace}/{name}")))]
pub async fn receive(
    State(ctx): State<Arc<Receiver>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = Span::root("receive", Kind::Server);
    let result = handle(&ctx, RouteKey::new(namespace, name), &headers, body, &span).await;
    let response = match result {
        Ok(accepted) => accepted.into_response(),
        Err(e) => {
            match &e {
                ReceiveError::Record(source) => warn!(error = %source, "could not record event"),
                ReceiveError::RecordTimeout => warn!("could not record event in time"),
                // Under overload this is every other request: not worth a line each.
                ReceiveError::Busy => debug!("receiver busy"),
                ReceiveError::OverQuota(quota) => {
                    warn!(%quota, "event refused: the namespace's quota of deliveries is used up")
                }
                other => info!(status = other.status().as_u16(), reason = %other, "event refused"),
            }
            e.into_response()
        }
    };
    let code = response.status();
    span.set("http.response.status_code", i64::from(code.as_u16()));
    if code.is_server_error() {
        span.fail(code.to_string());
    }
    ctx.metrics.webhook_request(code.as_u16());
    response
}

/// A 2xx answer.
pub struct Accepted {
    delivery: Option<String>,
    duplicate: bool,
    matched: Vec<MatchedTarget>,
    /// App Store Connect's test notification: verified, and nothing else done.
    ping: bool,
}

impl Accepted {
    /// `delivery` already records this event: answered 200, nothing triggered again.
    fn duplicate(delivery: String, matched: Vec<MatchedTarget>) -> Self {
        Accepted {
            delivery: Some(delivery),
            duplicate: true,
            ..Accepted::new(matched)
        }
    }

    /// No delivery (nothing matched) unless one is set.
    fn new(matched: Vec<MatchedTarget>) -> Self {
        Accepted {
            delivery: None,
            duplicate: false,
            matched,
            ping: false,
        }
    }
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let status = if self.delivery.is_some() && !self.duplicate {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        if self.ping {
            return (status, Json(json!({"ping": true}))).into_response();
        }
        let mut body = json!({"matched": self.matched});
        if let Some(d) = self.delivery {
            body["delivery"] = d.into();
        }
        if self.duplicate {
            body["duplicate"] = true.into();
        }
        (status, Json(body)).into_response()
    }
}

async fn handle(
    ctx: &Receiver,
    key: RouteKey,
    headers: &HeaderMap,
    body: Body,
    span: &Span,
) -> Result<Accepted, ReceiveError> {
    if !ctx.routes.is_ready() {
        return Err(ReceiveError::NotReady);
    }
    // The table (compiled routes) and the watch cache can disagree for a moment around a
    // route's delete or re-create: answer 503 then (the sender retries), never a 404 for a
    // route that exists nor a record owned by a route that is gone.
    let route = (ctx.routes)
        .check_in(&ctx.table, &key, None, true)
        .map_err(|check| match check {
            RouteCheck::Gone => ReceiveError::UnknownRoute,
            _ => ReceiveError::RouteNotReady,
        })?;
    // Named only once it is a route: a path nobody routes is not worth a span's bytes.
    span.set("statused.route", key.to_string());
    let limit = ctx.limits.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Held until the answer: bounds the requests and body bytes worked on at once, and
    // charges them to the route's namespace, signed or not: anyone who can reach a team's
    // URL can fill that team's half of the receiver (429), never the rest. Before the
    // signature is checked a request holds only what it has sent (see admission.rs), and
    // all of it must arrive within the body timeout.
    let declared_body = declared.map_or(limit, |len| usize::try_from(len).unwrap_or(usize::MAX));
    let mut admitted = ctx
        .admission
        .try_admit(&key.namespace, declared_body.min(limit))?;
    if declared_body > limit {
        // Drained (and thrown away) so that the sender reads its 413, as a request in
        // flight: within the body timeout and counted, like any other.
        let _ = tokio::time::timeout(ctx.limits.body_timeout, drain(body.into_data_stream())).await;
        return Err(ReceiveError::TooLarge(limit));
    }
    let bytes = tokio::time::timeout(
        ctx.limits.body_timeout,
        read_body(body, limit, &mut admitted),
    )
    .await
    .map_err(|_| ReceiveError::SlowBody)??;
    let bytes = {
        let verifying = span.child("verify", Kind::Internal);
        verify_off_the_workers(ctx, &route, headers, bytes)
            .await
            .inspect_err(|e| verifying.fail(e.to_string()))?
    };
    // Only a signed request keeps the executor waiting (see `Admission::quiet`).
    admitted.verified();
    // From here on the request is the route's team's own: it takes a share of the receiver
    // that leaves the rest to the other namespaces.
    let _share = ctx
        .admission
        .namespace_share(&key.namespace)
        .ok_or(ReceiveError::RouteBusy)?;
    if let Some(limit) = route.rate_limit {
        ctx.rate_limiter
            .check(&key, limit, std::time::Instant::now())
            .map_err(ReceiveError::RateLimited)?;
    }
    // Parsed once (into the record the matcher, the replay check and the delivery share),
    // checked against the replay window and matched, on the blocking pool.
    let matching = span.child("match", Kind::Internal);
    let Some((envelope, (matched, failures))) = match_off_the_workers(ctx, &route, bytes)
        .await
        .inspect_err(|e| {
            matching.fail(e.to_string());
            if let ReceiveError::Replay(outside) = e {
                ctx.metrics.event_refused(outside.as_str());
            }
        })?
    else {
        span.set("statused.ping", true);
        return Ok(Accepted {
            ping: true,
            ..Accepted::new(Vec::new())
        });
    };
    for f in &failures {
        let what = if f.skipped {
            "rule expression failed; rule skipped"
        } else {
            "ordering key failed; the empty key is used"
        };
        warn!(rule = %f.rule, error = %f.error, event = %envelope.id, "{what}");
    }
    span.set("statused.event.id", envelope.id.clone());
    span.set("statused.event.type", envelope.type_.clone());
    matching.set("statused.matched", matched.len() as i64);
    drop(matching);
    if matched.is_empty() {
        info!(event = %envelope.id, "no rule matched");
        return Ok(Accepted::new(matched));
    }
    let recording = span.child("record", Kind::Internal);
    let accepted = record(ctx, &route, envelope, matched, recording.traceparent())
        .await
        .inspect_err(|e| recording.fail(e.to_string()))?;
    if let Some(name) = &accepted.delivery {
        recording.set("statused.delivery", name.clone());
        recording.set("statused.duplicate", accepted.duplicate);
    }
    Ok(accepted)
}

/// The signature is checked on the blocking pool, in a slot of [`EVALUATIONS`] handed out
/// round-robin across namespaces, like rule matching: one check costs at most the body
/// limit times the route's signing secrets (at most 4, the CRD's `maxItems`) of HMAC, and
/// however many unsigned bodies are sent to one team's route, they wait for that team's
/// turn, never on the async workers that answer probes, renew the lease and serve the other
/// teams. The body comes back for the parse.
async fn verify_off_the_workers(
    ctx: &Receiver,
    route: &Arc<CompiledRoute>,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<Vec<u8>, ReceiveError> {
    let permit = blocking_slot(ctx, &route.key.namespace).await?;
    let route = route.clone();
    // Only the headers a check reads (hyper bounds their size).
    let wanted = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
    let given = SignatureHeaders {
        statused: wanted(SIGNATURE_HEADER),
        apple: wanted(APPLE_SIGNATURE_HEADER),
        id: wanted("webhook-id"),
        timestamp: wanted("webhook-timestamp"),
        signature: wanted("webhook-signature"),
    };
    let checking = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        verify(&route, &given, &body).map(|()| body)
    });
    match tokio::time::timeout(EVALUATION_TIME, checking).await {
        Ok(Ok(checked)) => Ok(checked?),
        _ => Err(ReceiveError::Busy),
    }
}

/// A slot of the blocking pool for `namespace`'s turn ([`EVALUATIONS`], round-robin across
/// namespaces), waited for at most [`EVALUATION_TIME`]; then 503.
async fn blocking_slot(
    ctx: &Receiver,
    namespace: &str,
) -> Result<crate::fair_share::Slot, ReceiveError> {
    tokio::time::timeout(EVALUATION_TIME, ctx.evaluations.acquire(namespace))
        .await
        .map_err(|_| ReceiveError::Busy)
}

/// The signature headers of one request, owned so that the check can run off the workers.
struct SignatureHeaders {
    statused: Option<Vec<u8>>,
    apple: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    timestamp: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
}

/// Checks the request's signature as its route says events are signed.
fn verify(
    route: &CompiledRoute,
    given: &SignatureHeaders,
    body: &[u8],
) -> Result<(), signature::SignatureError> {
    match route.signature {
        signature::Format::Statused => {
            signature::verify(given.statused.as_deref(), body, &route.signing_keys)
        }
        signature::Format::AppStoreConnect => {
            signature::verify_apple(given.apple.as_deref(), body, &route.signing_keys)
        }
        signature::Format::StandardWebhooks => signature::verify_standard(
            signature::StandardHeaders {
                id: given.id.as_deref(),
                timestamp: given.timestamp.as_deref(),
                signature: given.signature.as_deref(),
            },
            body,
            &route.signing_keys,
            jiff::Timestamp::now().as_second(),
        ),
    }
}

/// Rule matching (CEL) runs on the blocking pool, at most [`EVALUATIONS`] at once: an
/// expensive route costs its own events time, never the async workers that serve other
/// routes, probes and lease renewal. What one evaluation can cost is bounded when the route
/// is compiled (`cost.rs`, over the data limits the parse holds every event to); the sender
/// waits at most [`EVALUATION_TIME`] for a slot or a result, and the slot stays taken until
/// the work is done.
type Matches = (Vec<MatchedTarget>, Vec<crate::route::MatchFailure>);

/// `None` for App Store Connect's ping, which is answered without matching.
async fn match_off_the_workers(
    ctx: &Receiver,
    route: &Arc<CompiledRoute>,
    bytes: Vec<u8>,
) -> Result<Option<(Envelope, Matches)>, ReceiveError> {
    let permit = blocking_slot(ctx, &route.key.namespace).await?;
    let route = route.clone();
    let window = route.replay_window.unwrap_or(ctx.limits.replay_window);
    let matching = tokio::task::spawn_blocking(move || {
        // The slot is the evaluation's, not the waiter's: it is given back when the work
        // ends, so that EVALUATIONS is a bound on work running, not on work waited for.
        let _permit = permit;
        let Some(envelope) = route.read_event(&bytes)? else {
            info!("App Store Connect ping answered");
            return Ok(None);
        };
        drop(bytes);
        // An event outside the replay window costs no rule evaluation.
        let now = jiff::Timestamp::now();
        replay::check(envelope.time.as_deref(), window, now).map_err(|outside| {
            info!(event = %envelope.id, reason = outside.as_str(), "event refused: outside the replay window");
            ReceiveError::Replay(outside)
        })?;
        let matches = route.match_event(&envelope);
        Ok::<_, ReceiveError>(Some((envelope, matches)))
    });
    match tokio::time::timeout(EVALUATION_TIME, matching).await {
        Ok(Ok(parsed)) => parsed,
        // Too slow (the evaluation finishes on its own thread) or it panicked.
        _ => Err(ReceiveError::Busy),
    }
}

/// Signature checks and rule evaluations at once, across all routes.
pub const EVALUATIONS: usize = 4;
/// The longest one event's rule matching may take before the sender is told to retry.
pub const EVALUATION_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Stores the delivery. A name already taken is a duplicate when the record there is this
/// event for this route name: within the dedup window the same event id to the same route
/// name in the same namespace is one event, even if the route was deleted and applied again
/// since (its uid changed; a GitOps re-sync does that). Otherwise the name is another
/// event's (a hash collision) and the event is stored under a second name, never dropped.
async fn record(
    ctx: &Receiver,
    route: &CompiledRoute,
    mut envelope: Envelope,
    matched: Vec<MatchedTarget>,
    traceparent: Option<String>,
) -> Result<Accepted, ReceiveError> {
    // The event's data moves into the record, and back out only for a second name.
    let mut data = std::mem::take(&mut envelope.data);
    for second_name in [false, true] {
        let mut delivery = new_delivery(route, &envelope, data, matched.clone(), second_name);
        delivery.spec.traceparent = traceparent.clone();
        let name = delivery.metadata.name.clone().unwrap_or_default();
        // Bounded before it is stored: what one team keeps in etcd and in the executor's
        // cache. Every replica counts what is stored; the size goes with the delivery.
        let size = json_len(&delivery.spec);
        if !second_name && let Err(full) = ctx.stored.admit(&route.key.namespace, size) {
            let refused = ReceiveError::Full(full);
            return duplicate_or(ctx, route, &envelope, matched, refused).await;
        }
        kube::ResourceExt::annotations_mut(&mut delivery)
            .insert(ANNOTATION_SIZE.to_string(), size.to_string());
        // Bounded: a slow API server gets a 503 to the sender, not a queue. Should the
        // create still land after the timeout, the sender's retry finds it (a duplicate).
        let created = tokio::time::timeout(ctx.limits.record_timeout, ctx.store.create(&delivery))
            .await
            .map_err(|_| ReceiveError::RecordTimeout)?;
        match created {
            Ok(_) => {
                ctx.stored.created(&route.key.namespace, &name, size);
                info!(event = %envelope.id, delivery = %name, targets = matched.len(), "event accepted");
                return Ok(Accepted {
                    delivery: Some(name),
                    ..Accepted::new(matched)
                });
            }
            Err(StoreError::AlreadyExists) => {
                let existing = tokio::time::timeout(
                    ctx.limits.record_timeout,
                    ctx.store.get(&route.key.namespace, &name),
                )
                .await
                .map_err(|_| ReceiveError::RecordTimeout)?
                .map_err(ReceiveError::Record)?;
                if same_event(&existing, route, &envelope) {
                    info!(event = %envelope.id, delivery = %name, "duplicate event");
                    return Ok(Accepted::duplicate(name, matched));
                }
                warn!(event = %envelope.id, delivery = %name, "name taken by another event; recording under a second name");
                data = std::mem::take(&mut delivery.spec.event.data);
            }
            Err(StoreError::OverQuota(quota)) => {
                let refused = ReceiveError::OverQuota(quota);
                return duplicate_or(ctx, route, &envelope, matched, refused).await;
            }
            Err(e) => return Err(ReceiveError::Record(e)),
        }
    }
    Err(ReceiveError::NameTaken)
}

/// At a bound, an event already stored (under its name or its second name) is still a
/// duplicate (200), so its sender stops; anything else is `refused`.
async fn duplicate_or(
    ctx: &Receiver,
    route: &CompiledRoute,
    envelope: &Envelope,
    matched: Vec<MatchedTarget>,
    refused: ReceiveError,
) -> Result<Accepted, ReceiveError> {
    let names = [
        delivery_name(&route.key.name, &envelope.id),
        second_delivery_name(&route.key.name, &envelope.id),
    ];
    for name in names {
        let existing = tokio::time::timeout(
            ctx.limits.record_timeout,
            ctx.store.get(&route.key.namespace, &name),
        )
        .await;
        if let Ok(Ok(existing)) = existing
            && same_event(&existing, route, envelope)
        {
            return Ok(Accepted::duplicate(name, matched));
        }
    }
    Err(refused)
}

/// Whether `existing` records this event for this route name, whichever object of that name
/// accepted it.
fn same_event(existing: &StatusedDelivery, route: &CompiledRoute, envelope: &Envelope) -> bool {
    existing.spec.event.id == envelope.id && existing.spec.route == route.key.name
}

/// The most of an oversized body read (and thrown away) before answering 413, and for how
/// long. A client that writes its whole body before reading (Python's urllib does) would
/// otherwise see the connection reset instead of the 413, and retry forever.
const DRAIN_AT_MOST: usize = 8 * 1024 * 1024;
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and discards what is left of a refused body, within [`DRAIN_AT_MOST`] and
/// [`DRAIN_FOR`]; beyond, the connection is closed.
async fn drain(
    mut stream: impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin,
) {
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_AT_MOST {
                break;
            }
        }
    })
    .await;
}

/// Reads at most `limit` bytes, counting as the chunks arrive so that an oversized body is
/// refused without buffering it (chunked bodies have no Content-Length to check up front).
async fn read_body(
    body: Body,
    limit: usize,
    admitted: &mut Admitted,
) -> Result<Vec<u8>, ReceiveError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ReceiveError::BadBody)?;
        if bytes.len() + chunk.len() > limit {
            drop(bytes);
            drain(stream).await;
            return Err(ReceiveError::TooLarge(limit));
        }
        // The budget is taken as the bytes arrive, never on the word of Content-Length.
        admitted
            .grow(bytes.len() + chunk.len())
            .map_err(ReceiveError::from)?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn new_delivery(
    route: &CompiledRoute,
    envelope: &Envelope,
    data: serde_json::Value,
    matched: Vec<MatchedTarget>,
    second_name: bool,
) -> StatusedDelivery {
    let name = if second_name {
        second_delivery_name(&route.key.name, &envelope.id)
    } else {
        delivery_name(&route.key.name, &envelope.id)
    };
    StatusedDelivery::for_event(
        name,
        &route.key.namespace,
        &route.key.name,
        route.uid.as_deref(),
        envelope,
        data,
        matched,
    )
}
