//! The delivery executor: for each pending `StatusedDelivery`, calls every matched target,
//! retries what is worth retrying, and records each target's outcome on the delivery.
//!
//! What happens to a target is decided in [`decide`](super::decide) (pure); this folder is
//! the IO around it, a file per concern:
//! - [`watch`]: the watch of deliveries and the controller over it ([`watch::run`]);
//! - [`step`]: one look at a delivery, doing the step `decide` names;
//! - [`calls`]: admitting, marking, making and recording the calls of one look;
//! - [`follow`]: the reads of the runs targets follow;
//! - [`render`]: rendering requests on the blocking pool;
//! - [`slots`]: the slots for deliveries, without a future parked for each that waits;
//! - [`writes`]: the fresh reads and status writes, each one of `--executor-api-writes`;
//! - [`after_write`]: the route activity, Event and metric after a write, in the words of
//!   [`announcement`](super::announcement).
//!
//! Links here and in the rest of the crate's docs are checked: `hack/just test` builds the
//! docs with warnings denied, so a file renamed or moved breaks the build, not the reader.
//!
//! This file is what the executor owns, beside what every part shares (`shared`): how it
//! reaches targets, its slots for deliveries, renders and API writes, what it knows of its
//! own writes, its watch cache of deliveries while it runs, its Event budget and the route
//! activity it reports. Built once in `operator.rs`; used by the executor, the pruner and
//! the redelivery requests.

pub mod after_write;
mod calls;
mod follow;
mod render;
pub mod slots;
mod step;
pub mod watch;
pub mod writes;

use std::sync::{Arc, PoisonError, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};

use super::delivery_index::DeliveryIndex;
use super::destinations::Destinations;
use super::event_budget::EventBudget;
use super::route_activity::RouteActivity;
use super::wakeups::Wakeups;
use crate::api::StatusedDelivery;
use crate::context::Context;
use crate::fair_share::FairShare;
use crate::route::plan::Rendered;
use crate::targets::outbound::Outbound;
use slots::DeliverySlots;

pub struct Executor {
    /// What every part shares.
    pub shared: Arc<Context>,
    /// How the executor reaches HTTP targets: the guarded client, the outbound policy and the
    /// credentials it obtained at send time (GitHub App installation tokens).
    pub outbound: Outbound,
    /// The executor's `--executor-concurrency` slots, served round-robin across namespaces:
    /// the deliveries worked on (their calls in flight) at once.
    pub slots: DeliverySlots,
    /// The redelivery requests that read and write the API server at once, served
    /// round-robin across namespaces.
    pub request_slots: FairShare,
    /// The executor's `--executor-api-writes`: its status writes, fresh reads and the objects
    /// in-cluster targets create, at once; bounded apart from the calls, so that slow targets
    /// can be many in flight while the API server sees no more of these than before.
    pub writes: tokio::sync::Semaphore,
    /// What it knows about deliveries: its own writes, the ordering lanes, its watch
    /// cache's budget, where deliveries are woken.
    pub index: DeliveryIndex,
    /// The executor's watch cache of deliveries while it runs (trimmed: see
    /// `delivery_cache.rs`), for the redelivery requests' cheap look at a delivery's phase.
    pub deliveries: RwLock<Option<Store<StatusedDelivery>>>,
    /// How many Kubernetes Events the executor may publish.
    pub event_budget: EventBudget,
    /// `lastEvent` / `lastDelivery` per route, written by a coalescing flush.
    pub route_activity: Arc<RouteActivity>,
    /// The budget of rendered requests in flight, in KiB ([`BYTES_IN_FLIGHT`]).
    pub bytes: tokio::sync::Semaphore,
    /// Renders at once on the blocking pool ([`RENDERS`]): an `Arc`, since a
    /// render holds its slot on the blocking pool even when the look that waits for it is
    /// dropped.
    pub renders: Arc<tokio::sync::Semaphore>,
    /// Limits and pauses per destination (`maxConcurrent`, `ratePerMinute`, 429s).
    pub destinations: Destinations,
    /// Deliveries waiting for a quiet receiver at once (`--executor-api-writes`).
    pub quiet_turns: tokio::sync::Semaphore,
}

/// Redelivery requests worked on at once (each reads and writes the API server): a team
/// with thousands of requests delays another team's next one by at most one request per
/// busy namespace ahead of it.
pub const REQUEST_SLOTS: usize = 2;

/// Renders at once on the blocking pool, across all deliveries: rendering is bounded per
/// target (cost.rs), and this bounds how many run, so the executor's async threads (status
/// writes, watches, lease renewal) never wait on CEL.
pub const RENDERS: usize = 2;

/// Rendered requests and objects held by deliveries in flight, at most: with 256 deliveries
/// of the largest events, their copies would otherwise take hundreds of MiB.
pub const BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;

impl Executor {
    /// The executor's state, with the bounds `ctx.shared.config` sets.
    pub fn new(ctx: Arc<Context>, outbound: Outbound) -> Self {
        let config = &ctx.config;
        let wakeups = Arc::new(Wakeups::default());
        Self {
            outbound,
            slots: DeliverySlots::new(usize::from(config.executor_concurrency), wakeups.clone()),
            request_slots: FairShare::new(REQUEST_SLOTS),
            writes: tokio::sync::Semaphore::new(usize::from(config.executor_api_writes)),
            index: DeliveryIndex::new(wakeups.clone()),
            deliveries: RwLock::default(),
            event_budget: EventBudget::default(),
            route_activity: Arc::default(),
            bytes: tokio::sync::Semaphore::new(BYTES_IN_FLIGHT / 1024),
            renders: Arc::new(tokio::sync::Semaphore::new(RENDERS)),
            destinations: Destinations::new(wakeups),
            quiet_turns: tokio::sync::Semaphore::new(usize::from(config.executor_api_writes)),
            shared: ctx,
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
            .map_err(|_| super::Error::Closed("rendered bytes budget"))
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

#[cfg(test)]
mod tests;
