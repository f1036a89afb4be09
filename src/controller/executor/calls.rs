//! The calls of one look at a delivery: its due targets rendered, each HTTP call admitted by
//! its destination, the mark of at-most-once calls written first, the calls made at once,
//! and their outcomes written with what the ordering decided for the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use super::Executor;
use super::after_write::after_write;
use super::follow::interval;
use super::render::render;
use super::writes::{api_write, marked, write_status};
use crate::api::{StatusedDelivery, StatusedDeliveryStatus, TargetStatus};
use crate::controller::decide::{self, Fate};
use crate::controller::destinations::{Admit, Destination, Lease};
use crate::controller::ordering::{self, Claimed};
use crate::controller::retry::RetryPolicy;
use crate::controller::{Error, follow};
use crate::route::CompiledRoute;
use crate::route::plan::Planned;
use crate::targets::create::create_once;
use crate::targets::send::{self, Outcome};
use crate::traces::{Kind, Span};

/// Renders the due targets of `delivery` that their ordering lets go (`claimed`), makes
/// the calls [`decide::calls`] decides on (after writing the mark of at-most-once ones), and
/// records their outcomes with what the ordering decided for the others.
pub(super) async fn call_due(
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
    let limited = decide::rate_limited(&outcomes);
    let desired = decide::status_after(&current, calls.targets, outcomes, &policy, now);
    // A trigger accepted by a target that follows its run: Running until the run ends.
    let config = &ctx.shared.config;
    let room = (ctx.index).follow_room(
        &delivery,
        config.max_follows_per_namespace,
        config.max_follows,
    );
    let desired = follow::started(desired, &delivery.spec.matched, interval(ctx), room, now);
    pause(ctx, &admitted.destinations, &limited, &desired);
    if decide::worth_writing(&current, &desired)
        && let Err(e) = write_status(ctx, &delivery, &desired).await
    {
        // The calls were made: remember what they did, so that the retry only writes.
        ctx.index.unwritten(&delivery, desired);
        return Err(e);
    }
    // The outcome is in the ordering index: the next call for these keys may go.
    drop(held);
    Ok(after_write(ctx, &delivery, &desired, first_look).await)
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
fn ordered(ctx: &Executor, plans: Vec<(usize, Fate)>) -> Vec<(usize, Fate)> {
    for (_, plan) in &plans {
        match plan {
            Fate::Hold { why, .. } => ctx.shared.metrics.call_deferred(ordering::hold_reason(why)),
            Fate::Supersede { .. } => ctx.shared.metrics.call_superseded(),
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
    plans: Vec<(usize, Fate)>,
) -> Result<Action, Error> {
    let current = delivery.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let calls = decide::calls(&current, targets, plans, now);
    let policy = retry_policy(ctx);
    let desired = decide::status_after(&current, calls.targets, [], &policy, now);
    if decide::worth_writing(&current, &desired) {
        receiver_first(ctx).await?;
        write_status(ctx, delivery, &desired).await?;
    }
    Ok(after_write(ctx, delivery, &desired, delivery.status.is_none()).await)
}

fn retry_policy(ctx: &Executor) -> RetryPolicy {
    RetryPolicy {
        max_attempts: ctx.shared.config.max_attempts,
        backoff: ctx.shared.config.retry_backoff,
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
        .map_err(|_| Error::Closed("quiet turns"))?;
    ctx.shared
        .admission
        .quiet(RECEIVER_BUSY, RECEIVER_FIRST_WAIT)
        .await;
    Ok(())
}

/// Requests in flight at the receiver from which it counts as busy.
const RECEIVER_BUSY: usize = 4;

/// The longest a delivery waits for a busy receiver before it calls its targets.
const RECEIVER_FIRST_WAIT: Duration = Duration::from_secs(1);

/// The plans as the decisions see them, once each HTTP call's destination admitted it or
/// deferred it; the leases of the admitted calls, by index; where each HTTP call goes.
struct Admitted {
    plans: Vec<(usize, Fate)>,
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
        let (i, mut plan) = (*i, decide::fate_of(p));
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
                    ctx.shared.metrics.call_deferred(reason);
                    if reason == "busy" {
                        let me = ObjectRef::from_obj(delivery);
                        ctx.destinations.wake_when_free(&destination, me);
                    }
                    plan = Fate::Defer { until, why };
                }
            }
            admitted.destinations.insert(i, destination);
        }
        admitted.plans.push((i, plan));
    }
    admitted
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
            let outcome = send::call(
                &ctx.outbound,
                target,
                request,
                ctx.shared.config.request_timeout,
            )
            .await;
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
            Ok(_write) => create_once(&ctx.shared.client, target.api(), object, &identity).await,
            Err(e) => Outcome::retry(None, e.to_string(), None),
        },
        Planned::Gone(e) | Planned::Unbuildable(e) => Outcome::failed(None, e),
    };
    ctx.shared
        .metrics
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
