//! What the delivery executor owns, beside what every part shares (`Context`, which it
//! derefs to): how it reaches targets, its slots for deliveries and for API writes, what it
//! knows of its own writes, its watch cache of deliveries while it runs, its Event budget
//! and the route activity it reports. Built once in `operator.rs`; used by the executor
//! (`delivery.rs`), the pruner and the redelivery requests.

use std::sync::{Arc, PoisonError, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};

use super::destinations::Destinations;
use super::event_budget::EventBudget;
use super::ledger::Ledger;
use super::ordering::Ordering;
use super::route_activity::RouteActivity;
use crate::api::StatusedDelivery;
use crate::context::Context;
use crate::fair_share::FairShare;
use crate::route::plan::Rendered;
use crate::targets::outbound::Outbound;

pub struct Executor {
    pub ctx: Arc<Context>,
    /// How the executor reaches HTTP targets: the guarded client, the outbound policy and the
    /// credentials it obtained at send time (GitHub App installation tokens).
    pub outbound: Outbound,
    /// The executor's `--executor-concurrency` slots, served round-robin across namespaces:
    /// the deliveries worked on (their calls in flight) at once.
    pub slots: FairShare,
    /// The executor's `--executor-api-writes`: its status writes, fresh reads and the objects
    /// in-cluster targets create, at once; bounded apart from the calls, so that slow targets
    /// can be many in flight while the API server sees no more of these than before.
    pub writes: tokio::sync::Semaphore,
    /// The executor's own status writes, beyond what its cache shows.
    pub ledger: Ledger,
    /// The executor's watch cache of deliveries while it runs (trimmed: see
    /// `delivery_cache.rs`), for the redelivery requests' cheap look at a delivery's phase.
    pub deliveries: RwLock<Option<Store<StatusedDelivery>>>,
    /// How many Kubernetes Events the executor may publish.
    pub event_budget: EventBudget,
    /// `lastEvent` / `lastDelivery` per route, written by a coalescing flush.
    pub route_activity: Arc<RouteActivity>,
    /// The budget of rendered requests in flight, in KiB ([`BYTES_IN_FLIGHT`]).
    pub bytes: tokio::sync::Semaphore,
    /// Limits and pauses per destination (`maxConcurrent`, `ratePerMinute`, 429s).
    pub destinations: Destinations,
    /// Where each stored delivery stands in its ordering keys' order, and the keys with a
    /// call in flight (a route's `ordering`).
    pub ordering: Ordering,
    /// Deliveries waiting for a quiet receiver at once (`--executor-api-writes`).
    pub quiet_turns: tokio::sync::Semaphore,
}

/// Rendered requests and objects held by deliveries in flight, at most: with 256 deliveries
/// of the largest events, their copies would otherwise take hundreds of MiB.
pub const BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;

impl std::ops::Deref for Executor {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Executor {
    /// The executor's state, with the bounds `ctx.config` sets.
    pub fn new(ctx: Arc<Context>, outbound: Outbound) -> Self {
        let config = &ctx.config;
        Self {
            outbound,
            slots: FairShare::new(usize::from(config.executor_concurrency)),
            writes: tokio::sync::Semaphore::new(usize::from(config.executor_api_writes)),
            ledger: Ledger::default(),
            deliveries: RwLock::default(),
            event_budget: EventBudget::default(),
            route_activity: Arc::default(),
            bytes: tokio::sync::Semaphore::new(BYTES_IN_FLIGHT / 1024),
            destinations: Destinations::default(),
            ordering: Ordering::default(),
            quiet_turns: tokio::sync::Semaphore::new(usize::from(config.executor_api_writes)),
            ctx,
        }
    }

    /// The share of [`BYTES_IN_FLIGHT`] that `rendered` takes (at least 1 KiB each, at most
    /// the whole budget), waited for.
    pub async fn bytes_for(
        &self,
        rendered: &[Rendered],
    ) -> Result<tokio::sync::SemaphorePermit<'_>, super::Error> {
        let bytes: usize = rendered
            .iter()
            .map(|r| match r {
                Rendered::Http { request, .. } => request.body.len(),
                // An object is small next to the event it renders from: count it so.
                _ => 0,
            } + 1024)
            .sum();
        let kib = u32::try_from((bytes / 1024).clamp(1, BYTES_IN_FLIGHT / 1024)).unwrap_or(1);
        self.bytes
            .acquire_many(kib)
            .await
            .map_err(|_| super::Error::Blocking("rendered bytes budget closed".into()))
    }

    /// Delivery `ns/name` as the executor's watch cache has it; `None` when the executor
    /// is not running or the cache has no such delivery (it may lag: only a positive answer
    /// means much).
    pub fn cached_delivery(&self, ns: &str, name: &str) -> Option<Arc<StatusedDelivery>> {
        let cache = self
            .deliveries
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        cache.as_ref()?.get(&ObjectRef::new(name).within(ns))
    }
}
