//! The executor's `--executor-concurrency` slots for deliveries, served round-robin across
//! namespaces (fair_share.rs), without a future parked for each delivery that waits.
//!
//! kube's controller keeps each reconcile in flight in a map that it polls whole whenever
//! any of them wakes (kube-runtime 5's `FutureHashMap`). With a reconcile parked per
//! waiting delivery, a burst of 10,000 events kept 10,000 of them there: measured with
//! `perf` under `hack/just bench-load`, most of the operator's CPU went to polling them.
//! Here a delivery without a slot returns at once, queued in the share; when its turn comes
//! a slot is reserved for it and it is woken (wakeups.rs), and its next look takes it.
//!
//! Bounded: one queued entry per delivery (a set and the share's queue), at most one
//! reserved slot per slot; a reservation not taken within [`RESERVED_FOR`] (the delivery
//! was deleted, or the executor stopped) goes back to the share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use crate::api::StatusedDelivery;
use crate::controller::wakeups::Wakeups;
use crate::fair_share::{FairShare, Slot};

/// How long a slot stays reserved for a woken delivery that does not come for it.
pub const RESERVED_FOR: Duration = Duration::from_secs(10);
/// When a queued delivery looks again if no wake came (a safety net: the wake comes when
/// its turn does).
pub const QUEUED_POLL: Duration = Duration::from_secs(30);

type Delivery = ObjectRef<StatusedDelivery>;

/// The slots, and the deliveries queued for them or with one reserved.
#[derive(Debug)]
pub struct DeliverySlots {
    share: FairShare,
    waiting: Arc<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    reserved: Mutex<HashMap<Delivery, (Slot, Instant)>>,
    queued: Mutex<HashSet<Delivery>>,
    wakeups: Arc<Wakeups>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DeliverySlots {
    /// `slots` slots; deliveries whose turn comes are woken through `wakeups`.
    pub fn new(slots: usize, wakeups: Arc<Wakeups>) -> Self {
        Self {
            share: FairShare::new(slots),
            waiting: Arc::new(Waiting {
                reserved: Mutex::default(),
                queued: Mutex::default(),
                wakeups,
            }),
        }
    }

    /// A slot for `delivery` of `namespace`: the one reserved for it, or a free one when
    /// nobody waits. Else `None`: it is queued (once), and woken when its turn comes.
    pub fn take(&self, namespace: &str, delivery: &Delivery) -> Option<Slot> {
        if let Some((slot, _)) = lock(&self.waiting.reserved).remove(delivery) {
            return Some(slot);
        }
        self.expire(Instant::now());
        if !lock(&self.waiting.queued).insert(delivery.clone()) {
            return None;
        }
        let (waiting, me) = (self.waiting.clone(), delivery.clone());
        let slot = self
            .share
            .acquire_or_call(namespace, move |slot| waiting.reserve(me, slot));
        if slot.is_some() {
            lock(&self.waiting.queued).remove(delivery);
        }
        slot
    }

    /// Reservations older than [`RESERVED_FOR`] go back to the share (dropped outside the
    /// lock: a dropped slot may be reserved for the next delivery at once).
    fn expire(&self, now: Instant) {
        let expired: Vec<(Slot, Instant)> = {
            let mut reserved = lock(&self.waiting.reserved);
            if reserved.is_empty() {
                return;
            }
            let old: Vec<Delivery> = reserved
                .iter()
                .filter(|(_, (_, at))| now.duration_since(*at) > RESERVED_FOR)
                .map(|(d, _)| d.clone())
                .collect();
            old.iter().filter_map(|d| reserved.remove(d)).collect()
        };
        drop(expired);
    }

    /// Deliveries queued for a slot now.
    pub fn queued(&self) -> usize {
        lock(&self.waiting.queued).len()
    }
}

impl Waiting {
    /// `delivery`'s turn came with `slot`: reserved for it, and it is woken.
    fn reserve(&self, delivery: Delivery, slot: Slot) {
        lock(&self.queued).remove(&delivery);
        let replaced = lock(&self.reserved).insert(delivery.clone(), (slot, Instant::now()));
        drop(replaced);
        self.wakeups.wake(&[delivery]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(name: &str) -> Delivery {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn a_delivery_without_a_slot_is_queued_once_and_woken_with_one_reserved_for_it() {
        let wakeups = Arc::new(Wakeups::default());
        let (tx, mut woken) = futures::channel::mpsc::unbounded();
        wakeups.connect(tx);
        let slots = DeliverySlots::new(1, wakeups);
        let first = slots.take("a", &delivery("first")).expect("a free slot");
        assert!(slots.take("a", &delivery("second")).is_none());
        assert!(
            slots.take("a", &delivery("second")).is_none(),
            "looked again"
        );
        assert!(slots.take("b", &delivery("other")).is_none());
        assert_eq!(slots.queued(), 2, "each queued once");
        assert!(woken.try_recv().is_err(), "no slot freed yet");
        drop(first);
        assert_eq!(woken.try_recv().ok(), Some(delivery("second")));
        assert!(
            slots.take("b", &delivery("other")).is_none(),
            "the freed slot is reserved for the one woken"
        );
        let second = slots
            .take("a", &delivery("second"))
            .expect("reserved for it");
        drop(second);
        assert_eq!(
            woken.try_recv().ok(),
            Some(delivery("other")),
            "then namespace b's turn"
        );
        assert_eq!(slots.queued(), 0);
    }

    #[test]
    fn a_reservation_not_taken_goes_back_to_the_share() {
        let wakeups = Arc::new(Wakeups::default());
        let slots = DeliverySlots::new(1, wakeups);
        let first = slots.take("a", &delivery("first")).unwrap();
        assert!(slots.take("a", &delivery("gone")).is_none());
        drop(first);
        // "gone" never comes for its slot.
        slots.expire(Instant::now() + RESERVED_FOR + Duration::from_secs(1));
        assert!(
            slots.take("a", &delivery("next")).is_some(),
            "the slot is free again"
        );
    }
}
