//! One look at a delivery: gathers what `decide.rs` reads (the delivery, never older than
//! the executor's own last write; the route check; the ledger) and does the step `decide`
//! names. What happens to a target is never decided here; each decision has its test in
//! `decide.rs`.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, instrument, warn};

use super::Executor;
use super::after_write::after_write;
use super::calls::call_due;
use super::follow::follow_runs;
use super::slots::QUEUED_POLL;
use super::writes::{read, write_status};
use crate::api::{StatusedDelivery, StatusedDeliveryStatus};
use crate::controller::decide::{Observed, Step, decide};
use crate::controller::delivery_cache::{EVENT_TRIMMED, TRIMMED};
use crate::controller::{Error, reopen, reset_backoff};
use crate::route::RouteKey;

#[instrument(skip(delivery, ctx), fields(delivery = %delivery.name_any()))]
pub(super) async fn reconcile(
    delivery: Arc<StatusedDelivery>,
    ctx: Arc<Executor>,
) -> Result<Action, Error> {
    let ns = delivery.namespace().ok_or(Error::NoNamespace)?;
    let Some(_slot) = ctx.slots.take(&ns, &ObjectRef::from_obj(&*delivery)) else {
        // Queued: woken when its namespace's turn comes (slots.rs).
        return Ok(Action::requeue(QUEUED_POLL));
    };
    // Boxed: the work's state machine is large; allocated once the slot is held.
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
    let unrecorded = ctx.index.unwritten_status(&delivery);
    let observed = Observed {
        delivery: &delivery,
        unrecorded: unrecorded.as_ref(),
        route: ctx.shared.routes.check(&key, delivery.route_uid()),
        writes_backlogged: ctx
            .index
            .backlog_full(usize::from(ctx.shared.config.executor_api_writes)),
        max_pending_age: ctx.shared.config.max_pending_age,
    };
    match decide(observed, jiff::Timestamp::now()) {
        Step::Idle => {
            // Nothing left to do; the pruner deletes it when its time comes.
            ctx.index.forget(&delivery);
            reset_backoff(&ctx.shared, &*delivery);
            Ok(Action::await_change())
        }
        Step::Reopen => reopen::honour_annotation(&ctx, &ns, &delivery.name_any()).await,
        Step::Write(status) => write_decided(&ctx, &delivery, &status).await,
        Step::GiveUp { status, why } => {
            warn!(delivery = %delivery.name_any(), reason = %why, "delivery given up");
            write_decided(&ctx, &delivery, &status).await
        }
        Step::Wait(after) => {
            debug!(route = %key, ?after, "delivery waits");
            reset_backoff(&ctx.shared, &*delivery);
            Ok(Action::requeue(after))
        }
        Step::Follow {
            route,
            targets,
            due,
        } => follow_runs(&ctx, delivery, route, targets, due).await,
        Step::Render {
            route,
            targets,
            due,
        } => {
            // The event, when the cache keeps the delivery without it.
            let delivery = with_event(&ctx, delivery, &ns).await?;
            // What the targets' ordering keys say first: held or superseded calls are not
            // rendered; the lanes of those that go are held until their outcome is written.
            let claimed = ctx.index.claim(&delivery, &targets, due);
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
    if !trimmed && !ctx.index.cache_behind(&delivery) {
        return Ok(delivery);
    }
    let fresh = read(ctx, ns, &delivery.name_any()).await?;
    ctx.index.read_afresh(&fresh);
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
async fn write_decided(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    status: &StatusedDeliveryStatus,
) -> Result<Action, Error> {
    write_status(ctx, delivery, status).await?;
    Ok(after_write(ctx, delivery, status, delivery.status.is_none()).await)
}
