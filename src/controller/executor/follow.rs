//! The reads of followed runs: each due target's PipelineRun or Workflow read from the API
//! server (one of `--executor-api-writes` each), what [`follow::read`] makes of it written in
//! one status write, and a metric for each run that ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch};
use kube::runtime::controller::Action;
use tracing::info;

use super::Executor;
use super::after_write::after_write;
use super::writes::{api_write, write_status};
use crate::api::{CreatedObject, StatusedDelivery, TargetStatus};
use crate::controller::destinations::{Admit, Destination};
use crate::controller::status::delivery_status;
use crate::controller::{Error, follow};
use crate::route::CompiledRoute;
use crate::targets::kind::Trigger;
use crate::targets::objects::ApiRef;
use crate::targets::send::{self, Outcome};
use crate::targets::{argo, tekton};

/// The shortest time between two reads of one run, whatever `--follow-interval` says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How often a followed run is read: `--follow-interval`, at least [`MIN_INTERVAL`].
pub(super) fn interval(ctx: &Executor) -> Duration {
    ctx.shared.config.follow_interval.max(MIN_INTERVAL)
}

/// Reads the runs of `delivery`'s `due` targets and writes what they say.
pub(super) async fn follow_runs(
    ctx: &Executor,
    delivery: Arc<StatusedDelivery>,
    route: Option<Arc<CompiledRoute>>,
    mut targets: Vec<TargetStatus>,
    due: Vec<usize>,
) -> Result<Action, Error> {
    let ns = delivery.namespace().ok_or(Error::NoNamespace)?;
    let interval = interval(ctx);
    for i in due {
        let Some(created) = targets[i].created.clone() else {
            continue;
        };
        cancel_if_superseded(ctx, &delivery, &mut targets[i], &created).await;
        let reading = match followed_api(&created.kind) {
            Some(_) => read_run(ctx, &ns, &created)
                .await
                .map(|object| follow::reading(&created, object.as_ref())),
            None => read_http_run(ctx, &ns, route.as_deref(), &targets[i], &created).await,
        };
        let now = jiff::Timestamp::now();
        if let Some(phase) = follow::read(&mut targets[i], reading, interval, now) {
            ctx.shared
                .metrics
                .run_ended(&targets[i].kind, phase.as_str());
        }
    }
    let current = delivery.status.clone().unwrap_or_default();
    let desired = delivery_status(&current, targets, jiff::Timestamp::now());
    write_status(ctx, &delivery, &desired).await?;
    Ok(after_write(ctx, &delivery, &desired, false).await)
}

/// Cancels the run `t` follows when a newer event's run for its key supersedes it
/// (`follow.cancelSuperseded`, [`follow::to_cancel`]), and says so on `t`; a cancel that
/// fails is said in `lastError` and tried again at the next read.
async fn cancel_if_superseded(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    t: &mut TargetStatus,
    created: &CreatedObject,
) {
    let Some(m) = (delivery.spec.matched.iter()).find(|m| m.rule == t.rule && m.target == t.target)
    else {
        return;
    };
    // The index is asked only for a target that wants it.
    let newer = || ctx.index.newer_following(delivery, &t.rule, t.target);
    let Some(newer) = follow::to_cancel(m, t, newer) else {
        return;
    };
    let (Some(api_ref), Some(patch)) = (
        followed_api(&created.kind),
        follow::cancel_patch(&created.kind),
    ) else {
        return;
    };
    let ns = delivery.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.shared.client.clone(), &ns, &api_ref.api_resource());
    let Ok(_write) = api_write(ctx).await else {
        return;
    };
    let params = crate::naming::patch_params();
    match api
        .patch(&created.name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(run = %created.name, %newer, "superseded run cancelled");
            t.superseded_by = Some(newer);
        }
        Err(e) => {
            t.last_error = Some(format!("cancelling {} {}: {e}", created.kind, created.name));
        }
    }
}

/// The stored object `created` names (None: not found), as JSON; why it could not be read.
async fn read_run(
    ctx: &Executor,
    ns: &str,
    created: &CreatedObject,
) -> Result<Option<serde_json::Value>, String> {
    let Some(api_ref) = followed_api(&created.kind) else {
        return Err(format!(
            "{} is not a kind the operator follows",
            created.kind
        ));
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.shared.client.clone(), ns, &api_ref.api_resource());
    let _read = api_write(ctx).await.map_err(|e| e.to_string())?;
    match api.get_opt(&created.name).await {
        Ok(object) => Ok(object.map(|o| serde_json::to_value(o).unwrap_or_default())),
        Err(kube::Error::Api(status)) => Err(format!("{} ({})", status.message, status.code)),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads the run an HTTP target started (`HttpTarget::run_request`) with its target's
/// credentials, admitted by its destination like a call (its limits, pauses and adaptive
/// limit): what the answer says, or why it could not be read.
async fn read_http_run(
    ctx: &Executor,
    ns: &str,
    route: Option<&CompiledRoute>,
    t: &TargetStatus,
    created: &CreatedObject,
) -> Result<follow::Reading, String> {
    let compiled = route
        .and_then(|r| r.target(&t.rule, t.target))
        .ok_or("its route cannot run this delivery now (gone, or not Ready)")?;
    let Trigger::Http(http) = &compiled.trigger else {
        return Err(format!(
            "{} is not a kind the operator follows",
            created.kind
        ));
    };
    let request = http
        .run_request(created)
        .ok_or_else(|| format!("{} {} cannot be read", created.kind, created.name))?;
    let destination = Destination::of(ns, &request.url);
    let now = jiff::Timestamp::now();
    let lease = match ctx
        .destinations
        .admit(&destination, compiled.limits, now, Instant::now())
    {
        Admit::Go(lease) => lease,
        Admit::Later { why, .. } => return Err(why),
    };
    let started = Instant::now();
    let timeout = compiled
        .timeout
        .unwrap_or(ctx.shared.config.request_timeout);
    let outcome = send::send(&ctx.outbound, request, timeout).await;
    lease.answered(&outcome, started);
    match outcome {
        Outcome::Succeeded { body, .. } => http
            .run_reading(&body)
            .map(follow::answered)
            .ok_or_else(|| "the answer does not describe a run".to_string()),
        Outcome::Failed {
            code: Some(404), ..
        } => Ok(follow::gone(created)),
        Outcome::Failed { error, .. } | Outcome::Retry { error, .. } => Err(error),
    }
}

/// The API of a kind whose runs can be followed.
fn followed_api(kind: &str) -> Option<&'static ApiRef> {
    [&tekton::PIPELINE_RUN, &argo::WORKFLOW]
        .into_iter()
        .find(|a| a.kind == kind)
}
