//! The delivery executor: for each pending `StatusedDelivery`, calls every matched target,
//! retries what is worth retrying, and records each target's outcome on the delivery.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::plan::{PlanInput, Planned, Rendered, attach, plan};
use super::redeliver;
use super::retry::{self, RetryPolicy, finish};
use super::route_activity::Activity;
use super::status::delivery_phase;
use super::{Error, scoped_api};
use crate::api::{
    DeliveryPhase, LastDelivery, LastEvent, MatchedTarget, StatusedDelivery, StatusedDeliveryStatus,
};
use crate::context::Context;
use crate::expr::Scope;
use crate::naming::ObjectIdentity;
use crate::route::RouteKey;
use crate::routing::RouteState;
use crate::targets::create::create_once;
use crate::targets::objects::KubeTarget;
use crate::targets::request::{HttpRequest, HttpTarget, RenderContext};
use crate::targets::send::{Outcome, send};

/// Runs the executor until `shutdown`: the delivery controller (at most
/// `executor_concurrency` reconciles at once), the pruner and the route status flush, all
/// over one watch of the deliveries.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api: Api<StatusedDelivery> =
        scoped_api(ctx.client.clone(), ctx.config.namespace.as_deref());
    let (store, writer) = reflector::store();
    // The cache holds every stored delivery (all of the dedup window's): keep each small.
    // Small pages: the first list of a large history is parsed a page at a time.
    let deliveries = watcher(
        api,
        watcher::Config::default().any_semantic().page_size(100),
    )
    .modify(trim)
    .reflect(writer);
    let deliveries = super::triggers("deliveries", deliveries, store.clone(), ctx.health.clone());
    // Shared with the redelivery requests while this executor runs (see `Cached` below).
    let _shared = Cached::share(&ctx, store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = |t: &tokio_util::sync::CancellationToken| {
        let t = t.clone();
        async move { t.cancelled().await }
    };
    // Held in a JoinSet: when this replica stops leading, the executor future is dropped
    // and the pruner and the route status flush are aborted with it (a follower writes
    // nothing).
    let mut helpers = tokio::task::JoinSet::new();
    helpers.spawn(super::pruner::run(
        ctx.clone(),
        store.clone(),
        ctx.config.prune_interval,
        stopped(&stop),
    ));
    helpers.spawn(super::route_activity::flush_every(
        ctx.client.clone(),
        ctx.route_activity.clone(),
        ctx.config.route_status_interval,
        stopped(&stop),
    ));
    // The controller backs the watch off after an error (kube's default: 0.8 s doubling to
    // 30 s, reset after 2 min of success): no hot loop towards a dead API server. Its own
    // concurrency is not limited: each reconcile first waits for one of the executor's
    // `--executor-concurrency` slots, handed out round-robin across namespaces
    // (fair_share.rs), so that the wait is fair; a waiting reconcile is one parked future
    // per queued delivery (the controller never queues an object twice).
    Controller::for_stream(deliveries, store)
        .with_config(controller::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "delivery reconcile did not run");
            }
            future::ready(())
        })
        .await;
    stop.cancel();
    while helpers.join_next().await.is_some() {}
}

/// The executor's cache, shared in the context while it runs: unshared when the executor
/// stops (a follower's cache would go stale).
struct Cached(Arc<Context>);

impl Cached {
    fn share(ctx: &Arc<Context>, store: reflector::Store<StatusedDelivery>) -> Self {
        *ctx.deliveries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
        Self(ctx.clone())
    }
}

impl Drop for Cached {
    fn drop(&mut self) {
        *self
            .0
            .deliveries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// What the executor's cache keeps of a delivery: everything while it is being delivered;
/// once finished, only what pruning needs (name, uid, times, route, phase), so that a stored
/// delivery costs a few hundred bytes, not its event. `managedFields` are never needed.
pub fn trim(delivery: &mut StatusedDelivery) {
    delivery.metadata.managed_fields = None;
    if let Some(annotations) = delivery.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let finished = delivery
        .status
        .as_ref()
        .is_some_and(|s| s.phase.is_finished());
    if finished {
        let meta = &mut delivery.metadata;
        meta.labels = None;
        // Only a redelivery request is kept: it is what reopens a finished delivery.
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.retain(|k, _| k.starts_with(redeliver::ANNOTATION_REDELIVER));
        }
        meta.owner_references = None;
        let event = &mut delivery.spec.event;
        event.data = serde_json::Value::Null;
        event.source = String::new();
        event.subject = None;
        // The time stays: the pruner keeps a record while its event could be replayed.
        delivery.spec.matched = Vec::new();
        if let Some(status) = delivery.status.as_mut() {
            status.targets = Vec::new();
            status.recent_redelivery_requests = Vec::new();
        }
    }
}

#[instrument(skip(delivery, ctx), fields(delivery = %delivery.name_any()))]
async fn reconcile(delivery: Arc<StatusedDelivery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = delivery.namespace().ok_or(Error::NoNamespace)?;
    let _slot = ctx.executor_slots.acquire(&ns).await;
    // Boxed: a delivery waiting for its slot is a small future (measured: 10,000 waiting
    // inline, each as large as the work's state machine, took the burst's peak RSS from
    // 70 to 154 MiB); the work's state is allocated once the slot is held.
    Box::pin(work(delivery, ctx, ns)).await
}

async fn work(
    delivery: Arc<StatusedDelivery>,
    ctx: Arc<Context>,
    ns: String,
) -> Result<Action, Error> {
    let name = delivery.name_any();
    let delivery = if ctx.ledger.cache_behind(&delivery) {
        // Our last write is not in the cache yet (the watch lags): work from the delivery as
        // it is now, never from a copy on which a finished target still looks due.
        let api: Api<StatusedDelivery> = Api::namespaced(ctx.client.clone(), &ns);
        let fresh = api.get(&name).await?;
        ctx.ledger.read_afresh(&fresh);
        Arc::new(fresh)
    } else {
        delivery
    };
    let current = delivery.status.clone().unwrap_or_default();
    if current.phase.is_finished() && redeliver::requested(&delivery).is_some() {
        return honour_redelivery(&ctx, &ns, &name).await;
    }
    if current.phase.is_finished() {
        // Nothing left to do; the pruner deletes it when its time comes.
        ctx.ledger.forget(&delivery);
        ctx.reconcile_failures
            .reset(&format!("delivery:{ns}/{name}"));
        return Ok(Action::await_change());
    }
    if let Some(pending) = ctx.ledger.pending(&delivery) {
        // Calls made, status not written yet: write it, call nothing.
        write_status(&ctx, &delivery, &pending).await?;
        let first_look = delivery.status.is_none();
        return Ok(recorded(&ctx, &delivery, &pending, first_look).await);
    }

    // A delivery runs only for the route object that accepted its event (`spec.routeUID`):
    // it has no ownerReference, so it outlives a deleted route, and a route applied again
    // under the same name is not the one the event was matched against.
    let route_key = RouteKey::new(&ns, &delivery.spec.route);
    let cached = ctx.cached_route_uid(&route_key);
    let entry = ctx.table.lookup(&route_key);
    let compiled = match &entry {
        None => Compiled::Missing,
        Some(RouteState::NotReady) => Compiled::NotReady,
        Some(RouteState::Ready(route)) => Compiled::Ready(route.uid.as_deref()),
    };
    let check = route_check(
        delivery.route_uid(),
        compiled,
        cached.as_ref().map(Option::as_deref),
        ctx.is_ready(),
    );
    let route = match (check, entry) {
        (RouteCheck::Run, Some(RouteState::Ready(route))) => route,
        (RouteCheck::ReCreated, _) => {
            return give_up(&ctx, &delivery, &current, re_created(&delivery)).await;
        }
        (RouteCheck::Gone, _) => {
            let why = format!("RouteGone: route {} no longer exists", delivery.spec.route);
            return give_up(&ctx, &delivery, &current, why).await;
        }
        (RouteCheck::Settling, _) => {
            debug!(route = %route_key, "routing table and watch cache disagree; delivery waits");
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        // Not Ready (a Secret is missing) or not loaded yet: wait, but not forever.
        _ => {
            let age = delivery
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| jiff::Timestamp::now().duration_since(t.0))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            if age > ctx.config.max_pending_age {
                let why = format!(
                    "RouteNotReady: route {} was not Ready within --max-pending-age ({}s) of the event",
                    delivery.spec.route,
                    ctx.config.max_pending_age.as_secs()
                );
                return give_up(&ctx, &delivery, &current, why).await;
            }
            debug!(route = %route_key, "route not ready; delivery waits");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };

    // Incoming events first: while the receiver is busy, a delivery waits (a bounded time)
    // so that its writes do not slow down the creates that senders are waiting on. Under a
    // burst this makes events durable sooner and delivers them right after.
    ctx.admission
        .quiet(RECEIVER_BUSY, RECEIVER_FIRST_WAIT)
        .await;

    let first_look = delivery.status.is_none();
    if ctx
        .ledger
        .backlog_full(usize::from(ctx.config.executor_concurrency))
    {
        // Status writes are failing: start no new calls until they succeed again.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut targets = retry::targets(&delivery.spec.matched, &current);

    let now = jiff::Timestamp::now();
    let due = retry::due(&targets, now);

    // Requests and objects are rendered on the blocking pool (CEL: bounded by construction,
    // see cost.rs, and never on the async threads), then sent or created concurrently.
    let due: Vec<(usize, MatchedTarget)> = due
        .into_iter()
        .map(|i| {
            let t = &targets[i];
            let matched = MatchedTarget {
                rule: t.rule.clone(),
                target: t.target,
                kind: t.kind.clone(),
            };
            (i, matched)
        })
        .collect();
    let rendered = render_off_the_workers(&route, &delivery, &ns, &name, &due).await?;
    let mut attempts = Vec::new();
    {
        for ((i, matched), rendered) in due.into_iter().zip(rendered) {
            let t = &mut targets[i];
            match attach(&route, &matched, rendered) {
                // At most once, and a call was started that has no recorded outcome: the
                // operator stopped while it was in flight. Never call twice.
                Planned::Http {
                    at_most_once: true, ..
                } if t.call_started_at.is_some() => {
                    let error = "outcome unknown: the operator stopped while this call was in flight (onUncertain: fail)".to_string();
                    finish(t, DeliveryPhase::Failed, None, Some(error), now);
                }
                Planned::Http {
                    target,
                    request,
                    at_most_once,
                } => attempts.push((
                    i,
                    Attempt::Http {
                        kind: t.kind.clone(),
                        req: request,
                        target,
                        at_most_once,
                    },
                )),
                Planned::Kube {
                    target,
                    object,
                    identity,
                } => attempts.push((
                    i,
                    Attempt::Kube {
                        kind: t.kind.clone(),
                        target,
                        object,
                        id: identity,
                    },
                )),
                Planned::Gone(error) | Planned::Unbuildable(error) => {
                    finish(t, DeliveryPhase::Failed, None, Some(error), now)
                }
            }
        }
    }

    // Calls that must happen at most once are marked in the status before they are made,
    // with the same conditional write: a crash then leaves the mark, and the next look at
    // the delivery knows the outcome is unknown.
    let at_most_once: Vec<usize> = attempts
        .iter()
        .filter(|(_, a)| {
            matches!(
                a,
                Attempt::Http {
                    at_most_once: true,
                    ..
                }
            )
        })
        .map(|(i, _)| *i)
        .collect();
    let mut delivery = delivery;
    if !at_most_once.is_empty() {
        let mut marked = current.clone();
        marked.targets = targets.clone();
        for &i in &at_most_once {
            marked.targets[i].call_started_at = Some(Time(now));
        }
        marked.phase = DeliveryPhase::Running;
        let rv = write_status(&ctx, &delivery, &marked).await?;
        // The outcome is written on top of the mark, conditional on the mark's version.
        let mut next = StatusedDelivery::clone(&delivery);
        next.metadata.resource_version = rv;
        next.status = Some(marked);
        delivery = Arc::new(next);
    }

    let outcomes = future::join_all(attempts.into_iter().map(|(i, attempt)| {
        let ctx = ctx.clone();
        async move {
            let started = std::time::Instant::now();
            let (kind, outcome, listener_id) = match attempt {
                Attempt::Http {
                    kind, req, target, ..
                } => {
                    let mut outcome = send(&ctx.outbound, req, ctx.config.request_timeout).await;
                    let id = match &mut outcome {
                        Outcome::Succeeded { body, created, .. } => {
                            *created = target.created(body);
                            target.response_id(body)
                        }
                        _ => None,
                    };
                    (kind, outcome, id)
                }
                Attempt::Kube {
                    kind,
                    target,
                    object,
                    id,
                } => (
                    kind,
                    create_once(&ctx.client, target.api(), object, &id).await,
                    None,
                ),
            };
            ctx.metrics
                .target_attempt(&kind, &outcome, started.elapsed());
            (i, outcome, listener_id)
        }
    }))
    .await;

    let policy = RetryPolicy {
        max_attempts: ctx.config.max_attempts,
        backoff: ctx.config.retry_backoff,
    };
    for (i, outcome, listener_id) in outcomes {
        let t = &mut targets[i];
        if matches!(outcome, Outcome::Succeeded { .. }) {
            t.listener_event_id = listener_id;
        }
        policy.apply(t, outcome, now);
    }

    let phase = delivery_phase(&targets);
    let desired = StatusedDeliveryStatus {
        phase,
        attempts: targets.iter().map(|t| t.attempts).sum(),
        completed_at: phase.is_finished().then_some(Time(now)),
        targets,
        redeliveries: current.redeliveries,
        redelivery_token: current.redelivery_token.clone(),
        redelivery_requests: current.redelivery_requests,
        recent_redelivery_requests: current.recent_redelivery_requests.clone(),
    };
    if desired != current
        && let Err(e) = write_status(&ctx, &delivery, &desired).await
    {
        // The calls were made: remember what they did, so that the retry only writes.
        ctx.ledger.unrecorded(&delivery, desired);
        return Err(e);
    }
    Ok(recorded(&ctx, &delivery, &desired, first_look).await)
}

/// Renders at once on the blocking pool, across all deliveries: rendering is bounded per
/// target (cost.rs), and this bounds how many run, so the executor's async threads (status
/// writes, watches, lease renewal) never wait on CEL.
const RENDERS: usize = 2;
static RENDER_SLOTS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(RENDERS)));

/// The request or object of each `due` target, in order, rendered on the blocking pool. A
/// stored event over the data limits (recorded before they were in force, or by hand) is
/// not rendered: each target fails with `EventOverLimits`, once, and the delivery finishes.
async fn render_off_the_workers(
    route: &Arc<crate::route::CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    ns: &str,
    name: &str,
    due: &[(usize, MatchedTarget)],
) -> Result<Vec<Rendered>, Error> {
    if due.is_empty() {
        // Nothing due (the targets back off): no slot, no scope.
        return Ok(Vec::new());
    }
    let permit = RENDER_SLOTS
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Blocking("render slots closed".into()))?;
    let (route, delivery) = (route.clone(), delivery.clone());
    let (ns, name, due) = (ns.to_string(), name.to_string(), due.to_vec());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let event = &delivery.spec.event;
        if let Err(over) = crate::event::check_data_value(&event.data, &crate::event::DATA_LIMITS) {
            let why = format!("EventOverLimits: the stored event is over its data limits: {over}");
            return due
                .iter()
                .map(|_| Rendered::Unbuildable(why.clone()))
                .collect();
        }
        let round = delivery.status.as_ref().map_or(0, |s| s.redeliveries);
        let scope = Scope::new(&event.to_value(), &ns, &delivery.spec.route);
        let render = RenderContext {
            scope: &scope,
            event_id: &event.id,
            round,
        };
        let input = PlanInput {
            namespace: &ns,
            route: &delivery.spec.route,
            delivery: &name,
            event_id: &event.id,
            event_type: &event.type_,
            data: &event.data,
            round,
        };
        due.iter()
            .map(|(_, m)| plan(&route, &input, &render, m).detach())
            .collect()
    })
    .await
    .map_err(|e| Error::Blocking(e.to_string()))
}

/// What the routing table holds for a delivery's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compiled<'a> {
    Missing,
    NotReady,
    /// Compiled, from the route object with this uid.
    Ready(Option<&'a str>),
}

/// Whether a delivery may run now, for the route object that accepted its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteCheck {
    /// The table's compiled route is that object, and the watch cache agrees.
    Run,
    /// A route of the same name, but another object: never run (RouteGone).
    ReCreated,
    /// No such route, and the routes are loaded (RouteGone).
    Gone,
    /// The table and the watch cache disagree for a moment (a delete or a re-create the
    /// table has not followed yet): look again soon.
    Settling,
    /// Not Ready, or not loaded yet: wait, up to `--max-pending-age`.
    NotReady,
}

/// Which route object a delivery may run for, from the delivery's `owner` (its routeUID;
/// none on deliveries older than that field), the routing table and the route watch cache
/// (`cached`: `None` when the cache has no route of that name). Pure.
///
/// The cache is consulted first: it is the API server's view, which the table follows (a
/// route is compiled after the cache shows it, and dropped after the cache drops it). So
/// while the table still holds the old compiled route of a route deleted and re-created,
/// the cache already names the new object, and the old route's targets must not run. As
/// the receiver does (`handle` in server/webhook.rs), a compiled route is used only when the
/// cache shows that same object.
fn route_check(
    owner: Option<&str>,
    table: Compiled<'_>,
    cached: Option<Option<&str>>,
    loaded: bool,
) -> RouteCheck {
    let replaced = |uid: Option<&str>| owner.is_some() && uid != owner;
    if cached.is_some_and(replaced) {
        return RouteCheck::ReCreated;
    }
    match table {
        Compiled::Ready(uid) if replaced(uid) => RouteCheck::ReCreated,
        Compiled::Ready(uid) if cached == Some(uid) => RouteCheck::Run,
        // Compiled, but the cache no longer shows that object (deleted: the table drops it
        // next), or shows another one (a delivery with no routeUID).
        Compiled::Ready(_) => RouteCheck::Settling,
        Compiled::Missing if loaded && cached.is_none() => RouteCheck::Gone,
        Compiled::Missing | Compiled::NotReady => RouteCheck::NotReady,
    }
}

/// Why a delivery whose route object was replaced is never run.
fn re_created(delivery: &StatusedDelivery) -> String {
    format!(
        "RouteGone: route {} was deleted and created again; this delivery belonged to the earlier one",
        delivery.spec.route
    )
}

/// Fails every unfinished target of `delivery` with `why`, calling nothing.
async fn give_up(
    ctx: &Context,
    delivery: &StatusedDelivery,
    current: &StatusedDeliveryStatus,
    why: String,
) -> Result<Action, Error> {
    let now = jiff::Timestamp::now();
    let mut targets = retry::targets(&delivery.spec.matched, current);
    for t in targets.iter_mut().filter(|t| !t.phase.is_finished()) {
        finish(t, DeliveryPhase::Failed, None, Some(why.clone()), now);
    }
    let phase = delivery_phase(&targets);
    let desired = StatusedDeliveryStatus {
        phase,
        attempts: targets.iter().map(|t| t.attempts).sum(),
        completed_at: Some(Time(now)),
        targets,
        redeliveries: current.redeliveries,
        redelivery_token: current.redelivery_token.clone(),
        redelivery_requests: current.redelivery_requests,
        recent_redelivery_requests: current.recent_redelivery_requests.clone(),
    };
    warn!(delivery = %delivery.name_any(), reason = %why, "delivery given up");
    write_status(ctx, delivery, &desired).await?;
    Ok(recorded(ctx, delivery, &desired, delivery.status.is_none()).await)
}

/// Writes `desired` as the delivery's status.
///
/// A merge patch, not server-side apply: the executor is the only writer of a delivery's
/// status, and apply's field bookkeeping costs the API server about as much as the
/// receiver's create, on every delivery. The resourceVersion makes it conditional: a
/// reconcile working from an outdated copy gets a conflict and runs again on the current
/// one instead of overwriting newer status.
async fn write_status(
    ctx: &Context,
    delivery: &StatusedDelivery,
    desired: &StatusedDeliveryStatus,
) -> Result<Option<String>, Error> {
    let ns = delivery.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = serde_json::to_value(desired).map_err(Error::Serialize)?;
    if desired.completed_at.is_none() {
        // A merge patch keeps what it does not name: a reopened delivery clears it.
        status["completedAt"] = serde_json::Value::Null;
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": delivery.metadata.resource_version},
        "status": status,
    });
    let written = api
        .patch_status(
            &delivery.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let rv = written.metadata.resource_version;
    ctx.ledger.written(delivery, rv.clone());
    Ok(rv)
}

/// Honours a redelivery asked for with the annotation (see `redeliver.rs`): reads the
/// delivery afresh (the cache keeps little of a finished one) and reopens it.
async fn honour_redelivery(ctx: &Context, ns: &str, name: &str) -> Result<Action, Error> {
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.client.clone(), ns);
    let fresh = api.get(name).await?;
    let finished = fresh.status.as_ref().is_some_and(|s| s.phase.is_finished());
    let Some(request) = redeliver::requested(&fresh).filter(|_| finished) else {
        ctx.ledger.read_afresh(&fresh);
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    reopen(ctx, &fresh, &request).await?;
    Ok(Action::requeue(Duration::from_millis(10)))
}

/// Reopens the finished delivery `fresh` (just read from the API server) for `request`: the
/// targets asked for start again, with one conditional status write, and an Event says so.
/// The executor then delivers them as it delivers any event. Returns the status written and
/// how many targets run again. Shared by the annotation and by `StatusedRedelivery`
/// requests (`redelivery_requests.rs`), so both are honoured alike, once per token.
pub async fn reopen(
    ctx: &Context,
    fresh: &StatusedDelivery,
    request: &redeliver::Request,
) -> Result<(StatusedDeliveryStatus, usize), Error> {
    ctx.ledger.read_afresh(fresh);
    let current = fresh.status.clone().unwrap_or_default();
    let (next, rerun) = redeliver::reopen(&current, request);
    write_status(ctx, fresh, &next).await?;
    let (reason, note) = if rerun == 0 {
        (
            "RedeliveryNotNeeded",
            format!(
                "redelivery {:?}: no failed targets; ask for all targets to run every target again",
                request.token
            ),
        )
    } else {
        (
            "Redelivering",
            format!(
                "redelivery {:?} (round {}): {rerun} of {} targets run again",
                request.token,
                next.redeliveries,
                next.targets.len()
            ),
        )
    };
    info!(delivery = %fresh.name_any(), token = %request.token, rerun, "redelivery requested");
    publish(ctx, fresh, EventType::Normal, reason, note).await;
    Ok((next, rerun))
}

/// What follows a status write: route activity, the Event and metric of a finished
/// delivery, and when to look again.
async fn recorded(
    ctx: &Context,
    delivery: &StatusedDelivery,
    desired: &StatusedDeliveryStatus,
    first_look: bool,
) -> Action {
    let phase = desired.phase;
    let ns = delivery.namespace().unwrap_or_default();
    if first_look || phase.is_finished() {
        ctx.route_activity.record(
            RouteKey::new(&ns, &delivery.spec.route),
            activity(delivery, desired),
        );
    }
    if phase.is_finished() {
        announce(ctx, delivery, desired).await;
        ctx.metrics.delivery(phase.as_str());
    }
    ctx.reconcile_failures
        .reset(&format!("delivery:{ns}/{}", delivery.name_any()));

    let next = desired
        .targets
        .iter()
        .filter(|t| !t.phase.is_finished())
        .filter_map(|t| t.next_attempt_at.as_ref())
        .map(|at| at.0.duration_since(jiff::Timestamp::now()))
        .min();
    match next {
        Some(wait) => Action::requeue(
            Duration::try_from(wait)
                .unwrap_or_default()
                .max(Duration::from_millis(10)),
        ),
        None if phase.is_finished() => Action::await_change(),
        None => Action::requeue(Duration::from_secs(1)),
    }
}

/// Requests in flight at the receiver from which it counts as busy.
const RECEIVER_BUSY: usize = 4;
/// The longest a delivery waits for a busy receiver (its least rate under a sustained flood:
/// `executor_concurrency` deliveries per this).
const RECEIVER_FIRST_WAIT: Duration = Duration::from_secs(1);

/// One target's work for this reconcile, built and ready to run.
enum Attempt<'a> {
    Http {
        kind: String,
        req: HttpRequest,
        target: &'a dyn HttpTarget,
        at_most_once: bool,
    },
    Kube {
        kind: String,
        target: &'a dyn KubeTarget,
        object: serde_json::Value,
        id: ObjectIdentity,
    },
}

/// What the route's status says about this delivery (`lastEvent`, `lastDelivery`).
fn activity(delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) -> Activity {
    let mut rules: Vec<String> = delivery
        .spec
        .matched
        .iter()
        .map(|m| m.rule.clone())
        .collect();
    rules.dedup();
    let received_at = delivery
        .metadata
        .creation_timestamp
        .clone()
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    Activity {
        last_event: LastEvent {
            id: delivery.spec.event.id.clone(),
            type_: delivery.spec.event.type_.clone(),
            received_at,
            matched_rules: rules,
        },
        last_delivery: LastDelivery {
            name: delivery.name_any(),
            phase: status.phase.as_str().to_string(),
            completed_at: status.completed_at.clone(),
        },
    }
}

/// A Kubernetes Event on the delivery, so `kubectl describe` and `kubectl get events` show
/// the outcome.
async fn announce(ctx: &Context, delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) {
    let failed: Vec<String> = status
        .targets
        .iter()
        .filter(|t| t.phase == DeliveryPhase::Failed)
        .map(|t| {
            format!(
                "{}[{}] {}: {}",
                t.rule,
                t.target,
                t.kind,
                t.last_error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    let (type_, reason, note) = if failed.is_empty() {
        info!(attempts = status.attempts, "delivery succeeded");
        (
            EventType::Normal,
            "Delivered",
            format!(
                "{} targets triggered for event {}",
                status.targets.len(),
                delivery.spec.event.id
            ),
        )
    } else {
        warn!(failed = ?failed, "delivery failed");
        (EventType::Warning, "DeliveryFailed", failed.join("; "))
    };
    publish(ctx, delivery, type_, reason, note).await;
}

/// A Kubernetes Event on the delivery, within the Event budget.
async fn publish(
    ctx: &Context,
    delivery: &StatusedDelivery,
    type_: EventType,
    reason: &str,
    note: String,
) {
    if !ctx.event_budget.allow(type_, std::time::Instant::now()) {
        ctx.metrics.kube_event("skipped");
        return;
    }
    ctx.metrics.kube_event("published");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: if reason.starts_with("Redeliver") {
            "Redeliver"
        } else {
            "Deliver"
        }
        .into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder
        .publish(&event, &delivery.object_ref(&()))
        .await
    {
        debug!(error = %e, "could not publish event");
    }
}

fn error_policy(delivery: Arc<StatusedDelivery>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "delivery:{}/{}",
        delivery.namespace().unwrap_or_default(),
        delivery.name_any()
    );
    let failures = ctx.reconcile_failures.fail(&key);
    let delay = ctx.config.reconcile_backoff.delay(failures);
    warn!(delivery = %key, %error, retry_in = ?delay, "delivery reconcile failed");
    ctx.metrics.reconcile("delivery", "error");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Option<&str> = Some("old-uid");
    const NEW: Option<&str> = Some("new-uid");

    #[test]
    fn a_delivery_runs_only_when_table_and_cache_show_its_route_object() {
        assert_eq!(
            route_check(OLD, Compiled::Ready(OLD), Some(OLD), true),
            RouteCheck::Run
        );
        // Deleted and created again: the cache shows the new object while the table still
        // holds the old compiled route (uid == the delivery's routeUID). Its targets must
        // not run.
        assert_eq!(
            route_check(OLD, Compiled::Ready(OLD), Some(NEW), true),
            RouteCheck::ReCreated
        );
        // Deleted: the cache no longer has it, the table not yet followed: wait for it.
        assert_eq!(
            route_check(OLD, Compiled::Ready(OLD), None, true),
            RouteCheck::Settling
        );
        assert_eq!(
            route_check(OLD, Compiled::Missing, None, true),
            RouteCheck::Gone
        );
        assert_eq!(
            route_check(OLD, Compiled::Missing, None, false),
            RouteCheck::NotReady,
            "not loaded yet: no verdict"
        );
    }

    #[test]
    fn a_replaced_route_is_gone_whatever_the_table_holds() {
        for table in [Compiled::Ready(NEW), Compiled::NotReady, Compiled::Missing] {
            assert_eq!(
                route_check(OLD, table, Some(NEW), true),
                RouteCheck::ReCreated,
                "{table:?}"
            );
        }
        assert_eq!(
            route_check(OLD, Compiled::Ready(NEW), None, true),
            RouteCheck::ReCreated
        );
    }

    #[test]
    fn not_ready_routes_wait() {
        assert_eq!(
            route_check(OLD, Compiled::NotReady, Some(OLD), true),
            RouteCheck::NotReady
        );
        assert_eq!(
            route_check(OLD, Compiled::Missing, Some(OLD), true),
            RouteCheck::NotReady,
            "in the cache, not compiled yet"
        );
    }

    #[test]
    fn a_delivery_without_a_route_uid_follows_the_cache() {
        assert_eq!(
            route_check(None, Compiled::Ready(NEW), Some(NEW), true),
            RouteCheck::Run
        );
        assert_eq!(
            route_check(None, Compiled::Ready(OLD), Some(NEW), true),
            RouteCheck::Settling
        );
    }
}
