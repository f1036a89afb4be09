//! The controllers: the route reconciler (routes and Secrets into the routing table and route
//! status), the delivery executor (deliveries into target calls) and the redelivery
//! requests (`StatusedRedelivery` into reopened deliveries).
//!
//! No function here is over 60 lines (`clippy.toml`): the decisions are in `decide.rs`, the
//! IO around them in small steps.
#![deny(clippy::too_many_lines)]

pub mod after;
pub mod announcement;
pub mod decide;
pub mod delivery_cache;
pub mod delivery_index;
pub mod destinations;
pub mod event_budget;
pub mod executor;
pub mod follow;
pub mod follow_count;
pub mod history;
pub mod ledger;
pub mod ordering;
pub mod pruner;
pub mod redeliver;
pub mod redelivery_requests;
pub mod reopen;
pub mod retry;
pub mod route;
pub mod route_activity;
pub mod status;
pub mod wakeups;

use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::context::Context;

/// An `Api` over one namespace, or all namespaces when the operator is not scoped.
pub fn scoped_api<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// What a controller reconciles from a reflected watch: each applied object, and after
/// every (re)list every object in the store.
///
/// kube's `applied_objects()` yields the objects of a relist as they arrive, before the
/// store holds them (the new list is swapped in at `InitDone`). The controller looks each
/// one up in the store, misses those created while the watch was down, and drops their
/// reconcile for good: measured, after an API server restart the deliveries accepted in the
/// meantime were never delivered. Here a relist triggers once the store has it all.
///
/// Each event also tells `health` whether the watch `name` works.
pub fn triggers<K>(
    name: &'static str,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    store: Store<K>,
    health: std::sync::Arc<crate::health::Health>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    events.flat_map(move |event| {
        match &event {
            Ok(_) => health.ok(name),
            Err(e) => {
                tracing::debug!(watch = name, error = %e, "watch failed; retrying with backoff");
                health.failed(name, std::time::Instant::now());
            }
        }
        let objects: Vec<Result<K, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(obj)) => vec![Ok(obj)],
            Ok(watcher::Event::InitDone) => store.state().iter().map(|o| Ok(K::clone(o))).collect(),
            // Init and InitApply: not in the store yet (see above); Delete: nothing to do.
            Ok(_) => Vec::new(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(objects)
    })
}

/// Errors a reconcile can end with; each is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
    #[error("status cannot be written: {0}")]
    Serialize(serde_json::Error),
    /// Work moved to the blocking pool (CEL compiling or rendering) did not complete.
    #[error("work on the blocking pool failed: {0}")]
    Blocking(String),
    /// A semaphore the executor waits on was closed (it is stopping).
    #[error("{0} closed")]
    Closed(&'static str),
}

/// The key under which `object`'s failed reconciles are counted: its controller (the
/// object's kind) and its namespace and name.
fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}:{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// A controller's error policy: `object`'s reconcile failed with `error`; it runs again after
/// its own backoff (`Config::reconcile_backoff`, doubling per failure in a row, at least
/// 100 ms so that an object that fails at once never spins), logged and counted under
/// `controller`.
pub fn back_off<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    controller: &'static str,
    object: &K,
    error: &Error,
) -> Action {
    let key = backoff_key(object);
    let failures = ctx.reconcile_failures.fail(&key);
    let delay = ctx.config.reconcile_backoff.delay(failures);
    tracing::warn!(object = %key, %error, retry_in = ?delay, "{controller} reconcile failed");
    ctx.metrics.reconcile(controller, "error");
    Action::requeue(delay.max(std::time::Duration::from_millis(100)))
}

/// `object`'s reconcile worked: its next failure backs off from the start again.
pub fn reset_backoff<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K) {
    ctx.reconcile_failures.reset(&backoff_key(object));
}
