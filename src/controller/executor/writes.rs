//! The executor's requests to the API server about deliveries: a fresh read, the status
//! write (conditional on the copy it was decided from), and the mark before at-most-once
//! calls; each one of its `--executor-api-writes`.

use std::sync::Arc;

use kube::api::Patch;
use kube::{Api, ResourceExt};

use super::Executor;
use crate::api::{StatusedDelivery, StatusedDeliveryStatus};
use crate::controller::Error;

/// One of the executor's `--executor-api-writes`, held for one request to the API server
/// (a status write, a fresh read, an object a target creates).
pub(super) async fn api_write(ctx: &Executor) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
    ctx.writes
        .acquire()
        .await
        .map_err(|_| Error::Closed("executor writes"))
}

/// Reads delivery `ns/name` from the API server.
pub async fn read(ctx: &Executor, ns: &str, name: &str) -> Result<StatusedDelivery, Error> {
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.shared.client.clone(), ns);
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
pub async fn write_status(
    ctx: &Executor,
    delivery: &StatusedDelivery,
    desired: &StatusedDeliveryStatus,
) -> Result<Option<String>, Error> {
    let ns = delivery.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.shared.client.clone(), &ns);
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
    ctx.index.written(delivery, rv.clone(), desired);
    Ok(rv)
}

/// Writes `mark` on `delivery`; the copy of the delivery the outcome is then written on.
pub(super) async fn marked(
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
