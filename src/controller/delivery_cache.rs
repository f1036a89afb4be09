//! What the executor's watch cache keeps of each stored delivery, and the budget that keeps
//! it small whatever a team sends.
//!
//! The cache holds every stored delivery (all of the dedup window's; how many is bounded
//! per namespace and in all by `stored.rs`). Each is kept:
//! - finished: only what pruning needs (name, uid, times, route, phase);
//! - unfinished, while its spec and status fit the budget: whole, so that the executor works
//!   from the cache without a read;
//! - unfinished beyond the budget (a namespace's deliveries near the data limits, or
//!   thousands of them waiting behind a target's 429): without its event's data, marked
//!   [`EVENT_TRIMMED`], while the rest fits: the executor decides from it as it is (a
//!   delivery that waits costs no read) and reads the event afresh to render it (one GET);
//! - beyond the budget even so (hundreds of targets each): as a finished one is, marked
//!   [`TRIMMED`], and read afresh each time the executor works on it.
//!
//! The budget is counted in bytes of JSON, [`NAMESPACE_BYTES`] per namespace and
//! [`TOTAL_BYTES`] in all: one team's deliveries never take another's room, and the
//! executor's memory is a small fixed cost per stored delivery plus at most the budget.
//! A restart with the bounds full comes back up the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;
use kube::runtime::watcher;

use super::redeliver;
use crate::api::StatusedDelivery;
use crate::stored::json_len;

/// Bytes (as JSON) of whole unfinished deliveries one namespace keeps in the cache: about
/// 8,000 ordinary events. Each delivery beyond it reads its event again to render it: with
/// 8 MiB a burst of 10,000 ordered events to one namespace was delivered at 131/s, with all
/// of them whole at 186/s, for the same peak RSS (112 and 115 MiB; `hack/just bench-load`).
pub const NAMESPACE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes (as JSON) of whole unfinished deliveries the cache keeps in all.
pub const TOTAL_BYTES: usize = 32 * 1024 * 1024;

/// Marks, in the executor's cache only (never written), a delivery kept without its event
/// and targets: the executor reads it afresh before working on it.
pub const TRIMMED: &str = "statused.dev/trimmed-in-cache";

/// Marks, in the executor's cache only, a delivery kept without its event's data: the
/// executor decides from it as it is, and reads the event afresh to render it.
pub const EVENT_TRIMMED: &str = "statused.dev/event-trimmed-in-cache";

/// Who holds how much of the budget: the whole unfinished deliveries by uid.
#[derive(Debug)]
pub struct CacheBudget {
    held: HashMap<String, (String, usize)>,
    by_namespace: HashMap<String, usize>,
    total: usize,
    per_namespace: usize,
    max_total: usize,
}

impl Default for CacheBudget {
    fn default() -> Self {
        Self::new(NAMESPACE_BYTES, TOTAL_BYTES)
    }
}

impl CacheBudget {
    pub fn new(per_namespace: usize, max_total: usize) -> Self {
        Self {
            held: HashMap::new(),
            by_namespace: HashMap::new(),
            total: 0,
            per_namespace,
            max_total,
        }
    }

    /// Charges `bytes` for delivery `uid` of `namespace` (in place of what it held), or
    /// holds nothing for it and says `false` when that is over either bound.
    pub fn hold(&mut self, uid: &str, namespace: &str, bytes: usize) -> bool {
        self.release(uid);
        let used = self.by_namespace.get(namespace).copied().unwrap_or(0);
        if used + bytes > self.per_namespace || self.total + bytes > self.max_total {
            return false;
        }
        *self.by_namespace.entry(namespace.to_string()).or_default() += bytes;
        self.total += bytes;
        self.held
            .insert(uid.to_string(), (namespace.to_string(), bytes));
        true
    }

    /// What delivery `uid` held goes back to the budget.
    pub fn release(&mut self, uid: &str) {
        let Some((namespace, bytes)) = self.held.remove(uid) else {
            return;
        };
        self.total -= bytes;
        if let Some(used) = self.by_namespace.get_mut(&namespace) {
            *used -= bytes;
            if *used == 0 {
                self.by_namespace.remove(&namespace);
            }
        }
    }

    /// Bytes held in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The budget behind the watch: each event's deliveries kept whole or trimmed.
#[derive(Debug, Clone)]
pub struct DeliveryCache(Arc<Mutex<CacheBudget>>);

impl DeliveryCache {
    pub fn new(budget: CacheBudget) -> Self {
        Self(Arc::new(Mutex::new(budget)))
    }

    /// Keeps `event`'s delivery whole or trimmed, as the budget allows.
    pub fn keep(&self, event: &mut watcher::Event<StatusedDelivery>) {
        let mut budget = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            // A relist: every delivery is charged again as it arrives (the old ones stay in
            // the store until the list is done, so for that moment the cache may hold up to
            // twice the budget).
            watcher::Event::Init => {
                *budget = CacheBudget::new(budget.per_namespace, budget.max_total)
            }
            watcher::Event::InitApply(d) | watcher::Event::Apply(d) => {
                let uid = d.uid().unwrap_or_default();
                let finished = d.status.as_ref().is_some_and(|s| s.phase.is_finished());
                strip(d);
                if finished {
                    budget.release(&uid);
                    trim(d);
                    return;
                }
                let ns = d.namespace().unwrap_or_default();
                if budget.hold(&uid, &ns, held_bytes(d)) {
                    return;
                }
                // Without its event (read again only to render it), what the executor
                // decides from stays: a delivery that waits costs no read.
                drop_event(d);
                let mark = if budget.hold(&uid, &ns, held_bytes(d)) {
                    EVENT_TRIMMED
                } else {
                    trim(d);
                    TRIMMED
                };
                d.annotations_mut().insert(mark.to_string(), String::new());
            }
            watcher::Event::Delete(d) => budget.release(&d.uid().unwrap_or_default()),
            watcher::Event::InitDone => {}
        }
    }
}

/// What no delivery in the cache needs: `managedFields`, the last applied configuration.
fn strip(delivery: &mut StatusedDelivery) {
    delivery.metadata.managed_fields = None;
    if let Some(annotations) = delivery.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Keeps only what pruning needs: name, uid, times, route, phase, and a redelivery request
/// (what reopens a finished delivery).
pub fn trim(delivery: &mut StatusedDelivery) {
    strip(delivery);
    let meta = &mut delivery.metadata;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(redeliver::ANNOTATION_REDELIVER));
    }
    meta.owner_references = None;
    drop_event(delivery);
    // The time stays: the pruner keeps a record while its event could be replayed.
    delivery.spec.matched = Vec::new();
    if let Some(status) = delivery.status.as_mut() {
        status.targets = Vec::new();
        status.recent_redelivery_requests = Vec::new();
    }
}

/// Drops what only rendering reads: the event's data, source and subject (its id, type and
/// time stay: the pruner, the ordering and the logs read them).
fn drop_event(delivery: &mut StatusedDelivery) {
    let event = &mut delivery.spec.event;
    event.data = serde_json::Value::Null;
    event.source = String::new();
    event.subject = None;
}

/// The bytes of `delivery`'s spec and status as JSON.
fn held_bytes(delivery: &StatusedDelivery) -> usize {
    json_len(&delivery.spec).saturating_add(json_len(&delivery.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DeliveryPhase, StatusedDeliveryStatus};

    fn delivery(ns: &str, name: &str, bytes: usize, phase: DeliveryPhase) -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture(name, "r");
        d.metadata.namespace = Some(ns.into());
        d.spec.event.data = serde_json::json!({"s": "x".repeat(bytes)});
        d.spec.event.time = Some("2026-12-07T00:00:00Z".into());
        let matched = crate::api::MatchedTarget {
            rule: "r".into(),
            target: 0,
            kind: "webhook".into(),
            ordering: None,
            follow: None,
            after: None,
        };
        d.status = Some(StatusedDeliveryStatus {
            phase,
            targets: vec![crate::api::TargetStatus::pending(&matched)],
            ..Default::default()
        });
        d.spec.matched = vec![matched];
        d
    }

    fn kept(cache: &DeliveryCache, d: StatusedDelivery) -> StatusedDelivery {
        let mut event = watcher::Event::Apply(d);
        cache.keep(&mut event);
        match event {
            watcher::Event::Apply(d) => d,
            _ => unreachable!(),
        }
    }

    fn whole(d: &StatusedDelivery) -> bool {
        !d.spec.event.data.is_null()
            && !d.annotations().contains_key(TRIMMED)
            && !d.annotations().contains_key(EVENT_TRIMMED)
    }

    #[test]
    fn unfinished_deliveries_are_whole_within_the_namespaces_budget_and_marked_beyond() {
        let cache = DeliveryCache::new(CacheBudget::new(10_000, 100_000));
        let first = kept(&cache, delivery("hog", "a", 6_000, DeliveryPhase::Pending));
        assert!(whole(&first));
        // The namespace has no room for a second: kept without its event, which is read
        // afresh to render it.
        let second = kept(&cache, delivery("hog", "b", 6_000, DeliveryPhase::Pending));
        assert!(second.spec.event.data.is_null());
        assert!(second.annotations().contains_key(EVENT_TRIMMED));
        assert!(held_bytes(&second) < 1_000, "small once trimmed");
        // Once even that has no room, it is kept as a finished one is.
        let cramped = DeliveryCache::new(CacheBudget::new(100, 100_000));
        let third = kept(
            &cramped,
            delivery("hog", "c", 6_000, DeliveryPhase::Pending),
        );
        assert!(third.annotations().contains_key(TRIMMED));
        assert!(third.status.as_ref().unwrap().targets.is_empty());
        assert!(third.spec.matched.is_empty());
        // Without its event only, it keeps what the executor decides from.
        assert_eq!(second.status.as_ref().unwrap().targets.len(), 1);
        assert_eq!(second.spec.matched.len(), 1);
        // Another team has room of its own.
        assert!(whole(&kept(
            &cache,
            delivery("other", "c", 6_000, DeliveryPhase::Pending)
        )));
        // Once the first finishes, its room is given back.
        let done = kept(
            &cache,
            delivery("hog", "a", 6_000, DeliveryPhase::Succeeded),
        );
        assert!(done.spec.event.data.is_null() && !done.annotations().contains_key(TRIMMED));
        assert!(whole(&kept(
            &cache,
            delivery("hog", "b", 6_000, DeliveryPhase::Pending)
        )));
    }

    #[test]
    fn the_total_bounds_every_namespace_together_and_a_delete_gives_room_back() {
        let cache = DeliveryCache::new(CacheBudget::new(10_000, 10_000));
        let a = kept(&cache, delivery("a", "a", 6_000, DeliveryPhase::Pending));
        assert!(whole(&a));
        assert!(!whole(&kept(
            &cache,
            delivery("b", "b", 6_000, DeliveryPhase::Pending)
        )));
        let mut gone = watcher::Event::Delete(a);
        cache.keep(&mut gone);
        assert!(whole(&kept(
            &cache,
            delivery("b", "b", 6_000, DeliveryPhase::Pending)
        )));
    }

    #[test]
    fn a_delivery_seen_again_is_charged_once() {
        let cache = DeliveryCache::new(CacheBudget::new(10_000, 10_000));
        for _ in 0..5 {
            assert!(whole(&kept(
                &cache,
                delivery("a", "a", 6_000, DeliveryPhase::Running)
            )));
        }
        assert!(cache.0.lock().unwrap().total() < 10_000);
    }
}
