//! What the controllers and the probes share: the kube client, the routing table, the watch
//! cache of routes, leadership, and the executor's bookkeeping. The receiver does not see it:
//! it gets the narrow [`Receiver`](crate::server::webhook) state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use crate::api::StatusedRoute;
use crate::config::Config;
use crate::controller::backoff::FailureCounts;
use crate::metrics::Metrics;
use crate::route::RouteKey;
use crate::routing::RoutingTable;
use crate::server::webhook::RouteIndex;

/// What the controllers and servers share.
pub struct Context {
    pub client: Client,
    /// How the executor reaches HTTP targets: the guarded client, the outbound policy and the
    /// credentials it obtained at send time (GitHub App installation tokens).
    pub outbound: crate::targets::outbound::Outbound,
    pub config: Config,
    pub table: RoutingTable,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub reconcile_failures: FailureCounts,
    pub rate_limiter: Arc<crate::server::rate_limit::RateLimiter>,
    /// The receiver's budget of requests and bytes in flight.
    pub admission: Arc<crate::server::admission::Admission>,
    /// `lastEvent` / `lastDelivery` per route, written by a coalescing flush.
    pub route_activity: Arc<crate::controller::route_activity::RouteActivity>,
    /// Whether the watches work (for `/healthz`).
    pub health: Arc<crate::health::Health>,
    /// The executor's own status writes, beyond what its cache shows.
    pub ledger: crate::controller::ledger::Ledger,
    /// The executor's `--executor-concurrency` slots, served round-robin across namespaces:
    /// the deliveries worked on (their calls in flight) at once.
    pub executor_slots: crate::fair_share::FairShare,
    /// The executor's `--executor-api-writes`: its status writes and reads at once, bounded
    /// apart from the calls, so that slow targets can be many in flight while the API server
    /// sees no more writes than before.
    pub executor_writes: tokio::sync::Semaphore,
    /// The executor's watch cache of deliveries while it runs (trimmed: see
    /// `delivery::trim`), for the redelivery requests' cheap look at a delivery's phase.
    pub deliveries: std::sync::RwLock<Option<Store<crate::api::StatusedDelivery>>>,
    /// How many Kubernetes Events the executor may publish.
    pub event_budget: crate::controller::event_budget::EventBudget,
    /// Set once the first list of routes has been received.
    pub routes_synced: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` fails from then on.
    pub stopping: AtomicBool,
    pub(crate) ready: AtomicBool,
    pub(crate) routes: Store<StatusedRoute>,
    pub(crate) leading: watch::Receiver<bool>,
}

impl Context {
    /// Whether this replica leads: runs the executor and writes route status.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Yields each time this replica becomes the leader.
    pub fn became_leader(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.leading.clone(), |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
    }

    /// Delivery `ns/name` as the executor's watch cache has it; `None` when the executor
    /// is not running or the cache has no such delivery (it may lag: only a positive answer
    /// means much).
    pub fn cached_delivery(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<Arc<crate::api::StatusedDelivery>> {
        let cache = self
            .deliveries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let obj = kube::runtime::reflector::ObjectRef::new(name).within(ns);
        cache.as_ref()?.get(&obj)
    }

    /// Whether `route` (this uid) is still in the watch cache, i.e. not deleted.
    pub fn route_is_current(&self, route: &StatusedRoute) -> bool {
        let key = RouteKey::of(route);
        let obj = kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace);
        self.routes
            .get(&obj)
            .is_some_and(|r| r.metadata.uid == route.metadata.uid)
    }

    /// The uid of the route `key` in the watch cache; `None` when the cache has no such route.
    pub fn cached_route_uid(&self, key: &RouteKey) -> Option<Option<String>> {
        let obj = kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace);
        self.routes.get(&obj).map(|r| r.metadata.uid.clone())
    }

    /// Ready when the route list has synced and every listed route has been compiled into the
    /// table (ready or not), so that a 404 really means "no such route".
    ///
    /// Latched: once ready, the hot path is a single atomic load.
    pub fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.routes_synced.load(Ordering::Acquire)
            && self
                .routes
                .state()
                .iter()
                .all(|r| self.table.contains(&RouteKey::of(r)));
        if ready {
            self.ready.store(true, Ordering::Release);
        }
        ready
    }
}

/// The receiver asks the watch cache through this.
impl RouteIndex for Context {
    fn is_ready(&self) -> bool {
        Context::is_ready(self)
    }

    fn cached_uid(&self, key: &RouteKey) -> Option<Option<String>> {
        self.cached_route_uid(key)
    }
}
