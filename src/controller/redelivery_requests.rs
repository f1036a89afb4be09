//! The leader's controller for `StatusedRedelivery` requests: each new request reopens the
//! delivery it names (in its own namespace) once, through the same function as the
//! annotation (`delivery::reopen`), and its status says what happened. The request gets
//! the delivery as its ownerReference, so requests go with the delivery they asked about.
//!
//! What a request may do is decided here and in `redeliver.rs`, not by the requester's
//! rights on deliveries: it names a delivery of its namespace and which targets; the event,
//! the route and the targets are the delivery's own, as received and signed.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, instrument};

use super::executor::Executor;
use super::redeliver::{self, Answer, Decision};
use super::{Error, scoped_api};
use crate::api::{FIELD_MANAGER, StatusedDelivery, StatusedRedelivery, StatusedRedeliveryStatus};

/// A request for a delivery still being delivered looks again after as long as it has
/// waited, from `FIRST_WAIT` (2 s, 4 s, 8 s, ...) up to `LONGEST_WAIT`.
const FIRST_WAIT: Duration = Duration::from_secs(2);
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// When a request waiting since `waited` ago looks again: as long again (its wait doubles),
/// within [`FIRST_WAIT`, `LONGEST_WAIT`]. Kept in the request's status (the waiting
/// condition's lastTransitionTime), so a new leader goes on from there. Pure.
fn wait_delay(waited: Duration) -> Duration {
    waited.clamp(FIRST_WAIT, LONGEST_WAIT)
}

/// Runs until `shutdown`, while this replica leads (next to the executor).
pub async fn run(ctx: Arc<Executor>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api: Api<StatusedRedelivery> = scoped_api(
        ctx.shared.client.clone(),
        ctx.shared.config.namespace.as_deref(),
    );
    let (store, writer) = reflector::store();
    let requests = watcher(api, watcher::Config::default().any_semantic())
        .modify(|r: &mut StatusedRedelivery| r.metadata.managed_fields = None)
        .reflect(writer);
    let requests = super::triggers(
        "redeliveries",
        requests,
        store.clone(),
        ctx.shared.health.clone(),
    );
    // Not limited here: a waiting request's look is a read of two caches, and the API
    // calls are limited, fairly, by REQUEST_SLOTS.
    Controller::for_stream(requests, store)
        .with_config(controller::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "redelivery request reconcile did not run");
            }
            future::ready(())
        })
        .await;
}

#[instrument(skip(request, ctx), fields(request = %request.name_any()))]
async fn reconcile(request: Arc<StatusedRedelivery>, ctx: Arc<Executor>) -> Result<Action, Error> {
    if redeliver::answered(&request) {
        return Ok(Action::await_change());
    }
    let ns = request.namespace().ok_or(Error::NoNamespace)?;
    if let Some(delay) = still_waiting(&ctx, &ns, &request) {
        return Ok(Action::requeue(delay));
    }
    let _slot = ctx.request_slots.acquire(&ns).await;
    let requests: Api<StatusedRedelivery> = Api::namespaced(ctx.shared.client.clone(), &ns);
    // Read afresh too: the cached copy may predate this controller's own last write (the
    // ownerReference patch triggers a look before the status write is in the cache).
    let Some(request) = requests.get_opt(&request.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if redeliver::answered(&request) {
        return Ok(Action::await_change());
    }
    let deliveries: Api<StatusedDelivery> = Api::namespaced(ctx.shared.client.clone(), &ns);
    // Read afresh: the executor's cache keeps little of a finished delivery.
    let delivery = deliveries.get_opt(&request.spec.delivery).await?;
    if let Some(delivery) = &delivery {
        owned_by(&ctx, &request, delivery).await?;
    }
    let mut previous = request.status.clone();
    let answer = match (redeliver::decision(&request, delivery.as_ref()), &delivery) {
        (Decision::Answered, _) => return Ok(Action::await_change()),
        (Decision::NotFound, _) => Answer::NotFound,
        (Decision::Wait, _) => Answer::Waiting,
        (Decision::Honoured, _) => redeliver::honoured_answer(&request),
        (Decision::Reopen(asked), Some(delivery)) => {
            let claimed = claim(&ctx, &requests, &request, delivery, &asked).await?;
            previous = Some(claimed.status);
            super::reopen::write_reopened(&ctx, delivery, &asked, &claimed.reopened).await?;
            info!(delivery = %delivery.name_any(), rerun = claimed.reopened.rerun, "redelivery request honoured");
            claimed.answer
        }
        // `decide` reopens only a delivery it was given.
        (Decision::Reopen(_), None) => return Ok(Action::await_change()),
    };
    let desired = redeliver::request_status(
        previous.as_ref(),
        &request.spec.delivery,
        answer,
        request.metadata.generation,
        Time(jiff::Timestamp::now()),
    );
    if previous.as_ref() != Some(&desired) {
        write_status(&requests, &request, &desired).await?;
    }
    ctx.shared.metrics.reconcile("redelivery", "success");
    super::reset_backoff(&ctx.shared, &request);
    Ok(match answer {
        Answer::Waiting => Action::requeue(wait_delay(waited(&desired))),
        _ => Action::await_change(),
    })
}

/// A request's claim, written, and the reopened status it claims.
struct Claimed {
    /// The request's status with the claim.
    status: StatusedRedeliveryStatus,
    /// The delivery's status once reopened (not written yet).
    reopened: redeliver::Reopened,
    /// What the request answers once the reopen is written.
    answer: Answer,
}

/// Claims the request's number, with what the reopen of `delivery` for `asked` will do,
/// before the reopen is written. The reopen is a write conditional on this very delivery,
/// so it does exactly that or nothing: a retry after a failed write then knows whether the
/// reopen landed, even after other requests reopened the delivery since (see redeliver.rs).
async fn claim(
    ctx: &Executor,
    requests: &Api<StatusedRedelivery>,
    request: &StatusedRedelivery,
    delivery: &StatusedDelivery,
    asked: &redeliver::Request,
) -> Result<Claimed, Error> {
    let reopened = redeliver::reopened(delivery, asked, |t| {
        ctx.index.superseded_by(delivery, &t.rule, t.target)
    });
    let status = redeliver::request_status(
        request.status.as_ref(),
        &request.spec.delivery,
        Answer::Claimed {
            claim: reopened.status.redelivery_requests,
            round: reopened.status.redeliveries,
            rerun: reopened.rerun,
        },
        request.metadata.generation,
        Time(jiff::Timestamp::now()),
    );
    write_status(requests, request, &status).await?;
    let answer = Answer::Reopened {
        round: reopened.status.redeliveries,
        rerun: reopened.rerun,
        of: reopened.status.targets.len(),
        superseded: redeliver::superseded(&reopened.status),
    };
    Ok(Claimed {
        status,
        reopened,
        answer,
    })
}

/// When a request already answered "waiting" (and so holds no claim) names a delivery that
/// the executor's watch cache shows still being delivered: when to look again, with no
/// API call. Anything else (no cache, the delivery not in it or finished, another answer)
/// is looked at afresh.
fn still_waiting(ctx: &Executor, ns: &str, request: &StatusedRedelivery) -> Option<Duration> {
    let status = request.status.as_ref()?;
    let condition = crate::conditions::find(&status.conditions, redeliver::ACCEPTED)?;
    if condition.reason != redeliver::WAITING || status.claim.is_some() {
        return None;
    }
    let delivery = ctx.cached_delivery(ns, &request.spec.delivery)?;
    if delivery
        .status
        .as_ref()
        .is_some_and(|s| s.phase.is_finished())
    {
        return None;
    }
    Some(wait_delay(waited(status)))
}

/// How long a request has been waiting, as its status says.
fn waited(status: &StatusedRedeliveryStatus) -> Duration {
    crate::conditions::find(&status.conditions, redeliver::ACCEPTED)
        .filter(|c| c.reason == redeliver::WAITING)
        .map(|c| jiff::Timestamp::now().duration_since(c.last_transition_time.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

/// Writes a request's status.
async fn write_status(
    requests: &Api<StatusedRedelivery>,
    request: &StatusedRedelivery,
    status: &StatusedRedeliveryStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": StatusedRedelivery::api_version(&()),
        "kind": StatusedRedelivery::kind(&()),
        "status": status,
    });
    requests
        .patch_status(
            &request.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Makes `delivery` the request's owner (once), so that pruning a delivery also removes the
/// requests made for it. Conditional on the request's resourceVersion: any ownerReferences
/// already there are kept.
async fn owned_by(
    ctx: &Executor,
    request: &StatusedRedelivery,
    delivery: &StatusedDelivery,
) -> Result<(), Error> {
    let Some(uid) = delivery.metadata.uid.clone() else {
        return Ok(());
    };
    let mut owners = request
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    if owners.iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    owners.push(OwnerReference {
        api_version: StatusedDelivery::api_version(&()).into_owned(),
        kind: StatusedDelivery::kind(&()).into_owned(),
        name: delivery.name_any(),
        uid,
        controller: None,
        block_owner_deletion: None,
    });
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": request.metadata.resource_version,
        "ownerReferences": owners,
    }});
    let ns = request.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<StatusedRedelivery> = Api::namespaced(ctx.shared.client.clone(), &ns);
    api.patch(
        &request.name_any(),
        &crate::naming::patch_params(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

fn error_policy(request: Arc<StatusedRedelivery>, error: &Error, ctx: Arc<Executor>) -> Action {
    super::back_off(&ctx.shared, "redelivery", &*request, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_request_looks_again_less_and_less_often() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!(wait_delay(secs(0)), secs(2));
        assert_eq!(wait_delay(secs(2)), secs(2));
        assert_eq!(wait_delay(secs(4)), secs(4));
        assert_eq!(wait_delay(secs(8)), secs(8));
        assert_eq!(wait_delay(secs(45)), secs(45));
        assert_eq!(wait_delay(secs(3600)), secs(60));
    }
}
