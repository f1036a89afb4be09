//! Reopening a finished delivery for a redelivery: the IO shared by the two ways to ask
//! (the annotation, honoured by the executor's look at the delivery, and a
//! `StatusedRedelivery`, by `redelivery_requests.rs`). What the reopened status is, is
//! decided in `redeliver.rs`; the Event's words in `announcement.rs`.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::info;

use super::announcement;
use super::executor::Executor;
use super::executor::after_write::publish;
use super::executor::writes::{read, write_status};
use super::{Error, redeliver};
use crate::api::StatusedDelivery;

/// Honours a redelivery asked for with the annotation (see `redeliver.rs`): reads the
/// delivery afresh (the cache keeps little of a finished one) and reopens it.
pub async fn honour_annotation(ctx: &Executor, ns: &str, name: &str) -> Result<Action, Error> {
    let fresh = read(ctx, ns, name).await?;
    let finished = fresh.status.as_ref().is_some_and(|s| s.phase.is_finished());
    let Some(request) = redeliver::requested(&fresh).filter(|_| finished) else {
        ctx.index.read_afresh(&fresh);
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    let reopened = redeliver::reopened(&fresh, &request, |t| {
        ctx.index.superseded_by(&fresh, &t.rule, t.target)
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
    ctx.index.read_afresh(fresh);
    let (next, rerun) = (&reopened.status, reopened.rerun);
    write_status(ctx, fresh, next).await?;
    let announcement = announcement::redelivery(&request.token, next, rerun);
    info!(delivery = %fresh.name_any(), token = %request.token, rerun, "redelivery requested");
    publish(ctx, fresh, &announcement).await;
    Ok(())
}
