//! What follows a status write: the route's activity, the Kubernetes Event and metric of a
//! finished delivery, and when to look again. The words are chosen in `announcement.rs`.

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::Executor;
use crate::api::{StatusedDelivery, StatusedDeliveryStatus};
use crate::controller::announcement::{Announcement, activity, outcome};
use crate::controller::{decide, reset_backoff};
use crate::route::RouteKey;

/// What follows a status write: route activity, the Event and metric of a finished
/// delivery, and when to look again.
pub(super) async fn after_write(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    desired: &StatusedDeliveryStatus,
    first_look: bool,
) -> Action {
    let phase = desired.phase;
    let ns = delivery.namespace().unwrap_or_default();
    if first_look || phase.is_finished() {
        ctx.route_activity.note(
            RouteKey::new(&ns, &delivery.spec.route),
            activity(delivery, desired),
        );
    }
    if phase.is_finished() {
        announce(ctx, delivery, desired).await;
        ctx.shared.metrics.delivery(phase.as_str());
    }
    reset_backoff(&ctx.shared, delivery);

    match decide::next_look(desired, jiff::Timestamp::now()) {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    }
}

/// A Kubernetes Event on the delivery, so `kubectl describe` and `kubectl get events` show
/// the outcome.
async fn announce(ctx: &Executor, delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) {
    let a = outcome(delivery, status);
    match a.type_ {
        EventType::Warning => warn!(failed = %a.note, "delivery failed"),
        EventType::Normal => info!(
            attempts = status.attempts,
            reason = a.reason,
            "delivery succeeded"
        ),
    }
    publish(ctx, delivery, &a).await;
}

/// A Kubernetes Event on the delivery, within the Event budget.
pub async fn publish(ctx: &Executor, delivery: &StatusedDelivery, a: &Announcement) {
    let Announcement {
        type_,
        reason,
        note,
    } = a;
    let type_ = *type_;
    if !ctx.event_budget.allow(type_, std::time::Instant::now()) {
        ctx.shared.metrics.kube_event("skipped");
        return;
    }
    ctx.shared.metrics.kube_event("published");
    let event = Event {
        type_,
        reason: (*reason).into(),
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
        .shared
        .recorder
        .publish(&event, &delivery.object_ref(&()))
        .await
    {
        debug!(error = %e, "could not publish event");
    }
}
