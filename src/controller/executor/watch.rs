//! The executor's watch of deliveries and its loop: the controller over the watch, the
//! pruner and the route status flush beside it, and the watch cache (trimmed, see
//! `delivery_cache.rs`) shared with the redelivery requests while it runs.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, future};
use kube::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use tracing::debug;

use super::Executor;
use super::step::reconcile;
use crate::api::StatusedDelivery;
use crate::controller::{Error, back_off, scoped_api};

/// Runs the executor until `shutdown`: the delivery controller (at most
/// `--executor-concurrency` deliveries worked on at once; `--executor-api-writes` status
/// writes, fresh reads and object creates), the pruner and the route status flush, all over
/// one watch of the deliveries.
pub async fn run(ctx: Arc<Executor>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api: Api<StatusedDelivery> = scoped_api(
        ctx.shared.client.clone(),
        ctx.shared.config.namespace.as_deref(),
    );
    let (store, writer) = reflector::store();
    // A new term (delivery_index.rs). What may go once a key's order moves (ordering.rs) or
    // a busy destination's call ends (destinations.rs) is woken, each delivery once until
    // taken (wakeups.rs).
    let (wake, woken) = futures::channel::mpsc::unbounded();
    ctx.index.new_term(wake);
    let taker = ctx.clone();
    let woken = woken.inspect(move |d| taker.index.taken(d));
    let deliveries = watch(&ctx, api).reflect(writer);
    let deliveries = crate::controller::triggers(
        "deliveries",
        deliveries,
        store.clone(),
        ctx.shared.health.clone(),
    );
    // Shared with the redelivery requests while this executor runs (see `Cached` below).
    let _shared = Cached::share(&ctx, store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    // Held in a JoinSet: when this replica stops leading, the executor future is dropped
    // and the pruner and the route status flush are aborted with it (a follower writes
    // nothing).
    let mut helpers = tokio::task::JoinSet::new();
    helpers.spawn(crate::controller::pruner::run(
        ctx.clone(),
        store.clone(),
        ctx.shared.config.prune_interval,
        stop.clone().cancelled_owned(),
    ));
    helpers.spawn(crate::controller::route_activity::flush_every(
        ctx.shared.client.clone(),
        ctx.route_activity.clone(),
        ctx.shared.routes.clone(),
        ctx.shared.config.route_status_interval,
        stop.clone().cancelled_owned(),
    ));
    // The controller backs the watch off after an error (kube's default: 0.8 s doubling to
    // 30 s, reset after 2 min of success): no hot loop towards a dead API server. Its own
    // concurrency is not limited: each reconcile first takes one of the executor's
    // `--executor-concurrency` slots, handed out round-robin across namespaces (slots.rs);
    // one without a slot returns at once, queued, and is woken when its turn comes, so the
    // controller holds no future per waiting delivery.
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

/// The watch of deliveries, through the delivery index (delivery_index.rs: the ordering sees
/// each whole, then the cache's budget trims it), into the cache, which holds every stored
/// delivery (all of the dedup window's), each small (delivery_cache.rs). Small pages: the first list of a large history is parsed a page at
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
    .map_ok(move |event| index.index.apply(event))
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

fn error_policy(delivery: Arc<StatusedDelivery>, error: &Error, ctx: Arc<Executor>) -> Action {
    back_off(&ctx.shared, "delivery", &*delivery, error)
}
