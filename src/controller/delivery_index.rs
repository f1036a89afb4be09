//! What the executor knows about deliveries, in one place, as linkerd's policy index keeps
//! what its watchers learn: the ledger of its own status writes (ledger.rs), where each
//! stored delivery stands in its ordering keys' order (ordering.rs), the budget of its
//! trimmed watch cache (delivery_cache.rs), where deliveries are woken (wakeups.rs) and how
//! many follow a run (follow_count.rs).
//!
//! The parts are private: they change together, only through these operations, so that one
//! is never updated without the others:
//! - [`DeliveryIndex::new_term`]: the executor starts (again) leading;
//! - [`DeliveryIndex::apply`]: a watch event, seen by the ordering before the cache trims it;
//! - [`DeliveryIndex::written`]: a status this replica wrote, in the ledger and the lanes;
//! - [`DeliveryIndex::read_afresh`], [`DeliveryIndex::unwritten`],
//!   [`DeliveryIndex::forget`]: what a look learnt of one delivery;
//! - [`DeliveryIndex::claim`]: the lanes of the calls about to be made (held until their
//!   outcome is written).

use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::delivery_cache::{CacheBudget, DeliveryCache};
use super::follow_count::FollowCount;
use super::ledger::Ledger;
use super::ordering::{Claimed, OrderIndex};
use super::wakeups::Wakeups;
use crate::api::{StatusedDelivery, StatusedDeliveryStatus, TargetStatus};

/// The executor's index of deliveries.
#[derive(Debug)]
pub struct DeliveryIndex {
    ledger: Ledger,
    ordering: OrderIndex,
    cache: Mutex<DeliveryCache>,
    wakeups: Arc<Wakeups>,
    follows: FollowCount,
}

impl DeliveryIndex {
    /// An empty index that wakes deliveries through `wakeups`.
    pub fn new(wakeups: Arc<Wakeups>) -> Self {
        Self {
            ledger: Ledger::default(),
            ordering: OrderIndex::new(wakeups.clone()),
            cache: Mutex::new(DeliveryCache::new(CacheBudget::default())),
            wakeups,
            follows: FollowCount::default(),
        }
    }

    /// A new term: what this replica wrote in an earlier one says nothing of the stored
    /// deliveries now (another leader may have written since); the lanes and the cache
    /// budget start empty (the watch lists every delivery again); wakes go to `wake`.
    pub fn new_term(&self, wake: mpsc::UnboundedSender<ObjectRef<StatusedDelivery>>) {
        self.ledger.new_term();
        self.ordering.clear();
        self.follows.clear();
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) =
            DeliveryCache::new(CacheBudget::default());
        self.wakeups.connect(wake);
    }

    /// A watch event: the ordering sees each delivery whole, then the cache's budget keeps
    /// it whole or trimmed; the event as the watch cache should hold it.
    pub fn apply(
        &self,
        mut event: watcher::Event<StatusedDelivery>,
    ) -> watcher::Event<StatusedDelivery> {
        self.ordering
            .observe(&event, |d| self.ledger.newer_written(d));
        self.follows.observe(&event);
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        cache.keep(&mut event);
        event
    }

    /// The executor took the wake of `delivery`: it may be woken again.
    pub fn taken(&self, delivery: &ObjectRef<StatusedDelivery>) {
        self.wakeups.taken(delivery);
    }

    /// This replica wrote `status` on `delivery` and the API server gave it
    /// `resource_version`: the ledger knows the cache is behind until it shows that
    /// version, and the lanes move (waking what may go).
    pub fn written(
        &self,
        delivery: &StatusedDelivery,
        resource_version: Option<String>,
        status: &StatusedDeliveryStatus,
    ) {
        self.ledger.written(delivery, resource_version);
        self.ordering.written(delivery, status);
        self.follows.put(delivery, Some(status));
    }

    /// Calls were made for `delivery` but `status` could not be written: the next look only
    /// writes it.
    pub fn unwritten(&self, delivery: &StatusedDelivery, status: StatusedDeliveryStatus) {
        self.ledger.unwritten(delivery, status);
    }

    /// The status still to be written for `delivery`, if any.
    pub fn unwritten_status(&self, delivery: &StatusedDelivery) -> Option<StatusedDeliveryStatus> {
        self.ledger.unwritten_status(delivery)
    }

    /// Whether so many statuses wait to be written that no new calls start.
    pub fn backlog_full(&self, limit: usize) -> bool {
        self.ledger.backlog_full(limit)
    }

    /// `delivery` was read afresh: the cache is behind until it shows this version.
    pub fn read_afresh(&self, delivery: &StatusedDelivery) {
        self.ledger.read_afresh(delivery);
    }

    /// Whether the watch cache's copy of `delivery` is older than this replica's last write.
    pub fn cache_behind(&self, delivery: &StatusedDelivery) -> bool {
        self.ledger.cache_behind(delivery)
    }

    /// `delivery` is finished: nothing of it needs remembering.
    pub fn forget(&self, delivery: &StatusedDelivery) {
        self.ledger.forget(delivery);
    }

    /// The due targets of `delivery` sorted by what their ordering says; the lanes of those
    /// that go are held until dropped (their outcome written).
    pub fn claim(
        &self,
        delivery: &StatusedDelivery,
        targets: &[TargetStatus],
        due: Vec<usize>,
    ) -> Claimed<'_> {
        self.ordering.claim(delivery, targets, due)
    }

    /// The delivery of a newer event that succeeded at `delivery`'s target `target` of
    /// `rule`, when that target is ordered `latestWins`.
    pub fn superseded_by(
        &self,
        delivery: &StatusedDelivery,
        rule: &str,
        target: u32,
    ) -> Option<String> {
        self.ordering.superseded_by(delivery, rule, target)
    }

    /// The delivery of a newer event that follows a run it started at `delivery`'s target
    /// `target` of `rule`, when that target is ordered `latestWins` (ordering.rs).
    pub fn newer_following(
        &self,
        delivery: &StatusedDelivery,
        rule: &str,
        target: u32,
    ) -> Option<String> {
        self.ordering.newer_following(delivery, rule, target)
    }

    /// How many more follows may start for `delivery`'s namespace under `per_namespace` and
    /// `total` (follow_count.rs).
    pub fn follow_room(
        &self,
        delivery: &StatusedDelivery,
        per_namespace: usize,
        total: usize,
    ) -> usize {
        self.follows.room(delivery, per_namespace, total)
    }

    /// Whether delivery `name` of `namespace` must not be pruned yet (ordering.rs).
    pub fn pinned(&self, namespace: &str, name: &str) -> bool {
        self.ordering.pinned(namespace, name)
    }
}
