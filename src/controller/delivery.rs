//! The delivery executor: for each pending `StatusedDelivery`, calls every matched target,
//! retries what is worth retrying, and records each target's outcome on the delivery.
//!
//! This file is the loop and its IO: it gathers what `decide.rs` reads (the delivery, never
//! older than its own last write; the route check; the ledger), does the step `decide`
//! names (render, call, write) and writes every status through `write_status`. What happens
//! to a target is never decided here; each decision has its test in `decide.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Patch;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::decide::{self, Observed, Plan, Step, decide};
use super::delivery_cache::{CacheBudget, DeliveryCache, EVENT_TRIMMED, TRIMMED};
use super::destinations::{Admit, Destination, Lease};
use super::executor::Executor;
use super::ordering::{self, Claimed};
use super::redeliver;
use super::retry::RetryPolicy;
use super::route_activity::Activity;
use super::{Error, scoped_api};
use crate::api::{
    DeliveryPhase, LastDelivery, LastEvent, MatchedTarget, StatusedDelivery,
    StatusedDeliveryStatus, TargetStatus,
};
use crate::expr::Scope;
use crate::route::plan::{PlanInput, Planned, Rendered, attach, plan};
use crate::route::{CompiledRoute, RouteKey};
use crate::route_cache::RouteIndex;
use crate::targets::create::create_once;
use crate::targets::request::RenderContext;
use crate::targets::send::{self, Outcome};
use crate::traces::{Kind, Span};

/// Runs the executor until `shutdown`: the delivery controller (at most
/// `--executor-concurrency` deliveries worked on at once; `--executor-api-writes` status
/// writes, fresh reads and object creates), the pruner and the route status flush, all over
/// one watch of the deliveries.
pub async fn run(ctx: Arc<Executor>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api: Api<StatusedDelivery> =
        scoped_api(ctx.client.clone(), ctx.config.namespace.as_deref());
    let (store, writer) = reflector::store();
    // A new term: what this replica wrote in an earlier one says nothing of the stored
    // deliveries now (another leader may have written since).
    ctx.ledger.new_term();
    // Ordering per key: what may go once a key's order moves is woken (ordering.rs), each
    // delivery once until taken.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    ctx.ordering.wake_to(wake);
    let taker = ctx.clone();
    let woken = woken.inspect(move |d| taker.ordering.taken(d));
    let deliveries = watch(&ctx, api).reflect(writer);
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
        ctx.routes.clone(),
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
        .reconcile_on(woken)
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

/// Deliveries per page of the watch's list: a page is held whole while it is parsed, and a
/// stored delivery's spec may be a few hundred KiB (an event near the data limits), so 25 of
/// them are at most a few MiB, where 100 took a restart with 800 such deliveries stored
/// 20 MiB higher (`hack/just attack`, `memory`).
const LIST_PAGE: u32 = 25;

/// The watch of deliveries: it feeds the ordering index (before the cache trims them), then
/// the cache, which holds every stored delivery (all of the dedup window's), each small
/// (delivery_cache.rs). Small pages: the first list of a large history is parsed a page at
/// a time.
fn watch(
    ctx: &Arc<Executor>,
    api: Api<StatusedDelivery>,
) -> impl futures::Stream<Item = Result<watcher::Event<StatusedDelivery>, watcher::Error>> + use<> {
    let index = ctx.clone();
    watcher(
        api,
        watcher::Config::default()
            .any_semantic()
            .page_size(LIST_PAGE),
    )
    .inspect_ok(move |event| {
        index
            .ordering
            .observe(event, |d| index.ledger.newer_written(d));
    })
    .map_ok(DeliveryCache::new(CacheBudget::default()).keeper())
}

/// The executor's cache, shared in the context while it runs: unshared when the executor
/// stops (a follower's cache would go stale).
struct Cached(Arc<Executor>);

impl Cached {
    fn share(ctx: &Arc<Executor>, store: reflector::Store<StatusedDelivery>) -> Self {
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

#[instrument(skip(delivery, ctx), fields(delivery = %delivery.name_any()))]
async fn reconcile(delivery: Arc<StatusedDelivery>, ctx: Arc<Executor>) -> Result<Action, Error> {
    let ns = delivery.namespace().ok_or(Error::NoNamespace)?;
    let _slot = ctx.slots.acquire(&ns).await;
    // Boxed: a delivery waiting for its slot is a small future (measured: 10,000 waiting
    // inline, each as large as the work's state machine, took the burst's peak RSS from
    // 70 to 154 MiB); the work's state is allocated once the slot is held.
    Box::pin(work(delivery, ctx, ns)).await
}

/// The loop around [`decide`]: gathers what it reads, does what it says.
async fn work(
    delivery: Arc<StatusedDelivery>,
    ctx: Arc<Executor>,
    ns: String,
) -> Result<Action, Error> {
    let delivery = not_behind(&ctx, delivery, &ns).await?;
    let key = RouteKey::new(&ns, &delivery.spec.route);
    let cached = ctx.routes.cached_uid(&key);
    let unrecorded = ctx.ledger.pending(&delivery);
    let observed = Observed {
        delivery: &delivery,
        unrecorded: unrecorded.as_ref(),
        route: ctx.routes.table.check(
            &key,
            delivery.route_uid(),
            cached.as_ref().map(Option::as_deref),
            ctx.is_ready(),
        ),
        writes_backlogged: ctx
            .ledger
            .backlog_full(usize::from(ctx.config.executor_api_writes)),
        max_pending_age: ctx.config.max_pending_age,
    };
    match decide(observed, jiff::Timestamp::now()) {
        Step::Idle => {
            // Nothing left to do; the pruner deletes it when its time comes.
            ctx.ledger.forget(&delivery);
            ctx.reconcile_failures
                .reset(&format!("delivery:{ns}/{}", delivery.name_any()));
            Ok(Action::await_change())
        }
        Step::Reopen => honour_redelivery(&ctx, &ns, &delivery.name_any()).await,
        Step::Record(status) => record(&ctx, &delivery, &status).await,
        Step::GiveUp { status, why } => {
            warn!(delivery = %delivery.name_any(), reason = %why, "delivery given up");
            record(&ctx, &delivery, &status).await
        }
        Step::Wait(after) => {
            debug!(route = %key, ?after, "delivery waits");
            ctx.reconcile_failures
                .reset(&format!("delivery:{ns}/{}", delivery.name_any()));
            Ok(Action::requeue(after))
        }
        Step::Render {
            route,
            targets,
            due,
        } => {
            // The event, when the cache keeps the delivery without it.
            let delivery = with_event(&ctx, delivery, &ns).await?;
            // What the targets' ordering keys say first: held or superseded calls are not
            // rendered; the lanes of those that go are held until their outcome is written.
            let claimed = ctx.ordering.claim(&delivery, &targets, due);
            call_due(&ctx, delivery, &route, targets, claimed).await
        }
    }
}

/// `delivery` as the executor last wrote it: when its last write is not in the cache yet
/// (the watch lags), read afresh, so that a finished target never looks due; and whole,
/// read afresh when the cache keeps it [`TRIMMED`].
async fn not_behind(
    ctx: &Executor,
    delivery: Arc<StatusedDelivery>,
    ns: &str,
) -> Result<Arc<StatusedDelivery>, Error> {
    let trimmed = delivery.annotations().contains_key(TRIMMED);
    if !trimmed && !ctx.ledger.cache_behind(&delivery) {
        return Ok(delivery);
    }
    let fresh = read(ctx, ns, &delivery.name_any()).await?;
    ctx.ledger.read_afresh(&fresh);
    Ok(Arc::new(fresh))
}

/// `delivery` with its event read afresh when the cache keeps it without
/// ([`EVENT_TRIMMED`]): the spec never changes, so the event is the stored one whatever the
/// status is now.
async fn with_event(
    ctx: &Executor,
    delivery: Arc<StatusedDelivery>,
    ns: &str,
) -> Result<Arc<StatusedDelivery>, Error> {
    if !delivery.annotations().contains_key(EVENT_TRIMMED) {
        return Ok(delivery);
    }
    let fresh = read(ctx, ns, &delivery.name_any()).await?;
    let mut whole = (*delivery).clone();
    whole.spec.event = fresh.spec.event;
    whole.annotations_mut().remove(EVENT_TRIMMED);
    Ok(Arc::new(whole))
}

/// Writes `status`, calling nothing, and what follows.
async fn record(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    status: &StatusedDeliveryStatus,
) -> Result<Action, Error> {
    write_status(ctx, delivery, status).await?;
    Ok(recorded(ctx, delivery, status, delivery.status.is_none()).await)
}

/// Renders the due targets of `delivery` that their ordering lets go (`claimed`), makes
/// the calls [`decide::calls`] decides on (after writing the mark of at-most-once ones), and
/// records their outcomes with what the ordering decided for the others.
async fn call_due(
    ctx: &Arc<Executor>,
    delivery: Arc<StatusedDelivery>,
    route: &Arc<CompiledRoute>,
    targets: Vec<TargetStatus>,
    claimed: Claimed<'_>,
) -> Result<Action, Error> {
    let Claimed { go, plans, held } = claimed;
    let ordered = ordered(ctx, plans);
    if go.is_empty() {
        return record_plans(ctx, &delivery, targets, ordered).await;
    }
    receiver_first(ctx).await?;
    let (planned, _bytes) = render(ctx, route, &delivery, &targets, go).await?;
    let now = jiff::Timestamp::now();
    let current = delivery.status.clone().unwrap_or_default();
    // Each HTTP call's destination admits it, or defers it (held until the calls are done).
    let admitted = admit(ctx, route, &delivery, &targets, &planned, now);
    let plans = ordered.into_iter().chain(admitted.plans);
    let calls = decide::calls(&current, targets, plans, now);
    let first_look = delivery.status.is_none();
    let delivery = match &calls.mark {
        // The outcome is written on top of the mark, conditional on the mark's version.
        Some(mark) => marked(ctx, &delivery, mark).await?,
        None => delivery,
    };
    let outcomes = make_calls(ctx, &delivery, planned, &calls, admitted.leases).await;
    let policy = retry_policy(ctx);
    let limited = rate_limited(&outcomes);
    let desired = decide::recorded(&current, calls.targets, outcomes, &policy, now);
    pause(ctx, &admitted.destinations, &limited, &desired);
    if decide::worth_writing(&current, &desired)
        && let Err(e) = write_status(ctx, &delivery, &desired).await
    {
        // The calls were made: remember what they did, so that the retry only writes.
        ctx.ledger.unrecorded(&delivery, desired);
        return Err(e);
    }
    // The outcome is in the ordering index: the next call for these keys may go.
    drop(held);
    Ok(recorded(ctx, &delivery, &desired, first_look).await)
}

/// Makes the calls `calls` asks for, at once: one `execute` span for the pass, in the trace
/// the delivery was recorded in, and one `call` span per target.
async fn make_calls(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    planned: Vec<(usize, Planned<'_>)>,
    calls: &decide::Calls,
    mut leases: HashMap<usize, Lease>,
) -> Vec<(usize, Outcome)> {
    let kinds: Vec<(String, u32)> = (calls.targets.iter())
        .map(|t| (t.kind.clone(), t.attempts))
        .collect();
    let pass = Span::continuing(
        delivery.spec.traceparent.as_deref(),
        "execute",
        Kind::Consumer,
    );
    pass.set("statused.delivery", delivery.name_any());
    pass.set("statused.route", delivery.spec.route.clone());
    let outcomes = future::join_all(
        planned
            .into_iter()
            .filter(|(i, _)| calls.call.contains(i))
            .map(|(i, p)| {
                let (kind, attempt) = &kinds[i];
                let span = pass.child("call", Kind::Client);
                span.set("statused.target.index", i as i64);
                span.set("statused.target.kind", kind.clone());
                span.set("statused.target.attempt", i64::from(*attempt));
                let lease = leases.remove(&i);
                async move { (i, call(ctx, kind, p, span, lease).await) }
            }),
    )
    .await;
    drop(pass);
    outcomes
}

/// The plans the ordering decided (held or superseded), counted in the metrics.
fn ordered(ctx: &Executor, plans: Vec<(usize, Plan)>) -> Vec<(usize, Plan)> {
    for (_, plan) in &plans {
        match plan {
            Plan::Hold { why, .. } => ctx.metrics.call_deferred(ordering::hold_reason(why)),
            Plan::Supersede { .. } => ctx.metrics.call_superseded(),
            _ => {}
        }
    }
    plans
}

/// Records `plans` (the ordering held or superseded every due target), calling nothing.
/// Incoming events first here too: under a burst of ordered events, most wait, and each
/// says so once, after the receiver's writes.
async fn record_plans(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    targets: Vec<TargetStatus>,
    plans: Vec<(usize, Plan)>,
) -> Result<Action, Error> {
    let current = delivery.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let calls = decide::calls(&current, targets, plans, now);
    let policy = retry_policy(ctx);
    let desired = decide::recorded(&current, calls.targets, [], &policy, now);
    if decide::worth_writing(&current, &desired) {
        receiver_first(ctx).await?;
        write_status(ctx, delivery, &desired).await?;
    }
    Ok(recorded(ctx, delivery, &desired, delivery.status.is_none()).await)
}

fn retry_policy(ctx: &Executor) -> RetryPolicy {
    RetryPolicy {
        max_attempts: ctx.config.max_attempts,
        backoff: ctx.config.retry_backoff,
    }
}

/// Incoming events first: while the receiver is busy, a delivery waits (a bounded time)
/// before it calls anything, so that its writes do not slow down the creates that senders
/// are waiting on. Under a burst this makes events durable sooner and delivers them right
/// after. Waiting here, not between a call and its write, keeps the time a made call goes
/// unrecorded short. At most `--executor-api-writes` deliveries wait at once, each up to a
/// second: under a sustained flood the executor starts that many deliveries a second, as
/// when its slots bounded calls and writes together.
async fn receiver_first(ctx: &Executor) -> Result<(), Error> {
    let _turn = ctx
        .quiet_turns
        .acquire()
        .await
        .map_err(|_| Error::Blocking("quiet turns closed".into()))?;
    ctx.admission
        .quiet(RECEIVER_BUSY, RECEIVER_FIRST_WAIT)
        .await;
    Ok(())
}

/// The plan of each `due` target (index, plan), rendered on the blocking pool.
/// With them, their share of the budget of rendered bytes in flight, held until the calls
/// are done.
async fn render<'r>(
    ctx: &'r Executor,
    route: &'r Arc<CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    targets: &[TargetStatus],
    due: Vec<usize>,
) -> Result<(Vec<(usize, Planned<'r>)>, tokio::sync::SemaphorePermit<'r>), Error> {
    let matched: Vec<MatchedTarget> = due
        .iter()
        .map(|&i| MatchedTarget {
            rule: targets[i].rule.clone(),
            target: targets[i].target,
            kind: targets[i].kind.clone(),
            ordering: None,
        })
        .collect();
    let (rendered, bytes) = render_off_the_workers(ctx, route, delivery, &matched).await?;
    let planned = due
        .into_iter()
        .zip(matched.iter().zip(rendered))
        .map(|(i, (m, r))| (i, attach(route, m, r)))
        .collect();
    Ok((planned, bytes))
}

/// The plans as the decisions see them, once each HTTP call's destination admitted it or
/// deferred it; the leases of the admitted calls, by index; where each HTTP call goes.
struct Admitted {
    plans: Vec<(usize, Plan)>,
    leases: HashMap<usize, Lease>,
    destinations: HashMap<usize, Destination>,
}

/// Asks each HTTP call's destination (see destinations.rs) whether it may go now, with the
/// limits its target declares.
fn admit(
    ctx: &Executor,
    route: &CompiledRoute,
    delivery: &StatusedDelivery,
    targets: &[TargetStatus],
    planned: &[(usize, Planned<'_>)],
    now: jiff::Timestamp,
) -> Admitted {
    let ns = delivery.namespace().unwrap_or_default();
    let mut admitted = Admitted {
        plans: Vec::with_capacity(planned.len()),
        leases: HashMap::new(),
        destinations: HashMap::new(),
    };
    for (i, p) in planned {
        let (i, mut plan) = (*i, plan_of(p));
        if let Planned::Http { request, .. } = p {
            let t = &targets[i];
            let limits = route
                .target(&t.rule, t.target)
                .map(|c| c.limits)
                .unwrap_or_default();
            let destination = Destination::of(&ns, &request.url);
            match ctx
                .destinations
                .admit(&destination, limits, now, Instant::now())
            {
                Admit::Go(lease) => {
                    admitted.leases.insert(i, lease);
                }
                Admit::Later { until, why, reason } => {
                    ctx.metrics.call_deferred(reason);
                    plan = Plan::Defer { until, why };
                }
            }
            admitted.destinations.insert(i, destination);
        }
        admitted.plans.push((i, plan));
    }
    admitted
}

/// The calls answered with a rate limit (429, or a 403 that `send` read as GitHub's
/// secondary limit), by index, with the code.
fn rate_limited(outcomes: &[(usize, Outcome)]) -> Vec<(usize, u16)> {
    outcomes
        .iter()
        .filter_map(|(i, o)| match o {
            Outcome::Retry {
                code: Some(code @ (429 | 403)),
                ..
            } => Some((*i, *code)),
            _ => None,
        })
        .collect()
}

/// Pauses the destinations that answered with a rate limit until the time their target is
/// due again (the later of the answer's Retry-After or reset time and our backoff): every
/// delivery's calls to them wait until then.
fn pause(
    ctx: &Executor,
    destinations: &HashMap<usize, Destination>,
    limited: &[(usize, u16)],
    status: &StatusedDeliveryStatus,
) {
    for &(i, code) in limited {
        let until = status.targets[i].next_attempt_at.as_ref().map(|t| t.0);
        if let (Some(d), Some(until)) = (destinations.get(&i), until) {
            // The host is not logged: a URL read from a Secret may hold its token there.
            warn!(namespace = %d.namespace, code, %until, "a target's host asked to be left alone; its calls wait");
            ctx.destinations.pause(d, until, Some(code));
        }
    }
}

/// What the pure decisions need to know of a rendered plan.
fn plan_of(planned: &Planned<'_>) -> Plan {
    match planned {
        Planned::Http { at_most_once, .. } => Plan::Call {
            at_most_once: *at_most_once,
        },
        Planned::Kube { .. } => Plan::Call {
            at_most_once: false,
        },
        Planned::Gone(e) | Planned::Unbuildable(e) => Plan::Fail(e.clone()),
    }
}

/// Writes `mark` on `delivery`; the copy of the delivery the outcome is then written on.
async fn marked(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    mark: &StatusedDeliveryStatus,
) -> Result<Arc<StatusedDelivery>, Error> {
    let rv = write_status(ctx, delivery, mark).await?;
    let mut next = delivery.clone();
    next.metadata.resource_version = rv;
    next.status = Some(mark.clone());
    Ok(Arc::new(next))
}

/// Makes one planned call: an HTTP request (its destination's `lease` ends with its
/// answer) or an in-cluster object. (A plan that cannot be made fails; `decide::calls`
/// never asks for one.)
async fn call(
    ctx: &Executor,
    kind: &str,
    planned: Planned<'_>,
    span: Span,
    lease: Option<Lease>,
) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = match planned {
        Planned::Http {
            target,
            mut request,
            ..
        } => {
            span.propagate(&mut request.headers);
            let outcome =
                send::call(&ctx.outbound, target, request, ctx.config.request_timeout).await;
            if let Some(lease) = lease {
                lease.answered(&outcome, started);
            }
            outcome
        }
        Planned::Kube {
            target,
            object,
            identity,
        } => match api_write(ctx).await {
            // An object is created on the API server: one of the executor's writes.
            Ok(_write) => create_once(&ctx.client, target.api(), object, &identity).await,
            Err(e) => Outcome::retry(None, e.to_string(), None),
        },
        Planned::Gone(e) | Planned::Unbuildable(e) => Outcome::failed(None, e),
    };
    ctx.metrics
        .target_attempt(kind, &outcome, started.elapsed());
    let (code, error) = match &outcome {
        Outcome::Succeeded { code, .. } => (code, None),
        Outcome::Retry { code, error, .. } | Outcome::Failed { code, error } => (code, Some(error)),
    };
    if let Some(code) = code {
        span.set("http.response.status_code", i64::from(*code));
    }
    if let Some(error) = error {
        // Recorded errors are scrubbed of the request's secrets (send.rs).
        span.fail(error);
    }
    outcome
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
///
/// The render slot is held until the rendered requests' bytes have their share of the
/// executor's budget (`Executor::bytes`): at most that budget, plus what the render slots
/// hold, is ever rendered and waiting for its calls, however many deliveries are in flight.
async fn render_off_the_workers<'e>(
    ctx: &'e Executor,
    route: &Arc<CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    due: &[MatchedTarget],
) -> Result<(Vec<Rendered>, tokio::sync::SemaphorePermit<'e>), Error> {
    let permit = RENDER_SLOTS
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Blocking("render slots closed".into()))?;
    let (rendered, permit) = render_blocking(route, delivery, due, permit).await?;
    let bytes = ctx.bytes_for(&rendered).await?;
    drop(permit);
    Ok((rendered, bytes))
}

/// Renders `due` on the blocking pool, holding the render slot `permit` there: it bounds
/// the work that runs, even when the reconcile that waits for it is dropped. The slot is
/// handed back with the result.
async fn render_blocking(
    route: &Arc<CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    due: &[MatchedTarget],
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(Vec<Rendered>, tokio::sync::OwnedSemaphorePermit), Error> {
    let (route, delivery, due) = (route.clone(), delivery.clone(), due.to_vec());
    tokio::task::spawn_blocking(move || (render_now(&route, &delivery, &due), permit))
        .await
        .map_err(|e| Error::Blocking(e.to_string()))
}

/// The request or object of each of `due`, rendered here and now (CEL: on the blocking
/// pool only).
fn render_now(
    route: &CompiledRoute,
    delivery: &StatusedDelivery,
    due: &[MatchedTarget],
) -> Vec<Rendered> {
    let event = &delivery.spec.event;
    if let Err(over) = crate::event::check_data_value(&event.data, &crate::event::DATA_LIMITS) {
        let why = format!("EventOverLimits: the stored event is over its data limits: {over}");
        return due
            .iter()
            .map(|_| Rendered::Unbuildable(why.clone()))
            .collect();
    }
    let (ns, name) = (
        delivery.namespace().unwrap_or_default(),
        delivery.name_any(),
    );
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
        .map(|m| plan(route, &input, &render, m).detach())
        .collect()
}

/// One of the executor's `--executor-api-writes`, held for one request to the API server
/// (a status write, a fresh read, an object a target creates).
async fn api_write(ctx: &Executor) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
    ctx.writes
        .acquire()
        .await
        .map_err(|_| Error::Blocking("executor writes closed".into()))
}

/// Reads delivery `ns/name` from the API server.
async fn read(ctx: &Executor, ns: &str, name: &str) -> Result<StatusedDelivery, Error> {
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.client.clone(), ns);
    let _write = api_write(ctx).await?;
    Ok(api.get(name).await?)
}

/// Writes `desired` as the delivery's status.
///
/// A merge patch, not server-side apply: the executor is the only writer of a delivery's
/// status, and apply's field bookkeeping costs the API server about as much as the
/// receiver's create, on every delivery. The resourceVersion makes it conditional: a
/// reconcile working from an outdated copy gets a conflict and runs again on the current
/// one instead of overwriting newer status.
async fn write_status(
    ctx: &Executor,
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
    let _write = api_write(ctx).await?;
    let written = api
        .patch_status(
            &delivery.name_any(),
            &crate::naming::patch_params(),
            &Patch::Merge(&patch),
        )
        .await?;
    let rv = written.metadata.resource_version;
    ctx.ledger.written(delivery, rv.clone());
    ctx.ordering.written(delivery, desired);
    Ok(rv)
}

/// Honours a redelivery asked for with the annotation (see `redeliver.rs`): reads the
/// delivery afresh (the cache keeps little of a finished one) and reopens it.
async fn honour_redelivery(ctx: &Executor, ns: &str, name: &str) -> Result<Action, Error> {
    let fresh = read(ctx, ns, name).await?;
    let finished = fresh.status.as_ref().is_some_and(|s| s.phase.is_finished());
    let Some(request) = redeliver::requested(&fresh).filter(|_| finished) else {
        ctx.ledger.read_afresh(&fresh);
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    let reopened = redeliver::reopened(&fresh, &request, |t| {
        ctx.ordering.superseded_by(&fresh, &t.rule, t.target)
    });
    write_reopened(ctx, &fresh, &request, &reopened).await?;
    Ok(Action::requeue(Duration::from_millis(10)))
}

/// Writes `reopened`, the finished delivery `fresh` (just read from the API server)
/// reopened for `request` (`redeliver::reopened`): the targets asked for start again, with
/// one conditional status write, and an Event says so. The executor then delivers them as
/// it delivers any event. Shared by the annotation and by `StatusedRedelivery` requests
/// (`redelivery_requests.rs`), so both are honoured alike, once per token.
pub async fn write_reopened(
    ctx: &Executor,
    fresh: &StatusedDelivery,
    request: &redeliver::Request,
    reopened: &redeliver::Reopened,
) -> Result<(), Error> {
    ctx.ledger.read_afresh(fresh);
    let (next, rerun) = (&reopened.status, reopened.rerun);
    write_status(ctx, fresh, next).await?;
    let superseded = redeliver::superseded(next);
    let (reason, note) = if rerun == 0 && superseded > 0 {
        (
            "RedeliverySuperseded",
            format!(
                "redelivery {:?}: {superseded} {}",
                request.token,
                redeliver::SUPERSEDED_NOT_SENT
            ),
        )
    } else if rerun == 0 {
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
                "redelivery {:?} (round {}): {rerun} of {} targets run again{}",
                request.token,
                next.redeliveries,
                next.targets.len(),
                match superseded {
                    0 => String::new(),
                    n => format!("; {n} {}", redeliver::SUPERSEDED_NOT_SENT),
                }
            ),
        )
    };
    info!(delivery = %fresh.name_any(), token = %request.token, rerun, "redelivery requested");
    publish(ctx, fresh, EventType::Normal, reason, note).await;
    Ok(())
}

/// What follows a status write: route activity, the Event and metric of a finished
/// delivery, and when to look again.
async fn recorded(
    ctx: &Executor,
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

    match decide::next_look(desired, jiff::Timestamp::now()) {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    }
}

/// Requests in flight at the receiver from which it counts as busy.
const RECEIVER_BUSY: usize = 4;
/// The longest a delivery waits for a busy receiver before it calls its targets.
const RECEIVER_FIRST_WAIT: Duration = Duration::from_secs(1);

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
        route_uid: delivery.route_uid().map(str::to_string),
    }
}

/// A Kubernetes Event on the delivery, so `kubectl describe` and `kubectl get events` show
/// the outcome.
async fn announce(ctx: &Executor, delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) {
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
    let superseded = redeliver::superseded(status);
    let (type_, reason, note) = if failed.is_empty() {
        info!(attempts = status.attempts, superseded, "delivery succeeded");
        let triggered = status.targets.len() - superseded;
        let event = &delivery.spec.event.id;
        (
            EventType::Normal,
            if triggered == 0 {
                "Superseded"
            } else {
                "Delivered"
            },
            match superseded {
                0 => format!("{triggered} targets triggered for event {event}"),
                n => format!(
                    "{triggered} targets triggered for event {event}; {n} not, a newer event for their ordering key having succeeded there (latestWins)"
                ),
            },
        )
    } else {
        warn!(failed = ?failed, "delivery failed");
        (EventType::Warning, "DeliveryFailed", failed.join("; "))
    };
    publish(ctx, delivery, type_, reason, note).await;
}

/// A Kubernetes Event on the delivery, within the Event budget.
async fn publish(
    ctx: &Executor,
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

fn error_policy(delivery: Arc<StatusedDelivery>, error: &Error, ctx: Arc<Executor>) -> Action {
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
