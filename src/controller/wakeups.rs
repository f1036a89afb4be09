//! The executor's wake channel: deliveries to look at again now, because what they waited
//! for moved (their ordering key's order, a call to their destination ended), instead of at
//! their next poll. Each delivery is in the channel at most once until the executor takes
//! it, so the channel holds at most one entry per stored delivery.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;

use crate::api::StatusedDelivery;

/// Where wakes go, and those not taken by the executor yet.
#[derive(Debug, Default)]
pub struct Wakeups(Mutex<Wakes>);

#[derive(Debug, Default)]
struct Wakes {
    sender: Option<mpsc::UnboundedSender<ObjectRef<StatusedDelivery>>>,
    pending: HashSet<ObjectRef<StatusedDelivery>>,
}

impl Wakeups {
    fn wakes(&self) -> MutexGuard<'_, Wakes> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, deliveries to wake go to `sender` (a new term of the executor); the
    /// executor calls [`Wakeups::taken`] for each it takes.
    pub fn connect(&self, sender: mpsc::UnboundedSender<ObjectRef<StatusedDelivery>>) {
        *self.wakes() = Wakes {
            sender: Some(sender),
            pending: HashSet::new(),
        };
    }

    /// The executor took the wake of `delivery`: it may be woken again.
    pub fn taken(&self, delivery: &ObjectRef<StatusedDelivery>) {
        self.wakes().pending.remove(delivery);
    }

    /// Wakes `deliveries`, each once until taken; nothing while no executor listens.
    pub fn wake(&self, deliveries: &[ObjectRef<StatusedDelivery>]) {
        if deliveries.is_empty() {
            return;
        }
        let mut wakes = self.wakes();
        let Wakes { sender, pending } = &mut *wakes;
        let Some(sender) = sender.as_ref() else {
            return;
        };
        for d in deliveries {
            if pending.insert(d.clone()) && sender.unbounded_send(d.clone()).is_err() {
                pending.remove(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn a_delivery_is_woken_once_until_taken() {
        let w = Wakeups::default();
        let d = ObjectRef::new("d").within("ns");
        w.wake(std::slice::from_ref(&d));
        let (tx, mut rx) = mpsc::unbounded();
        w.connect(tx);
        w.wake(&[d.clone(), d.clone()]);
        w.wake(std::slice::from_ref(&d));
        assert_eq!(rx.try_recv().ok(), Some(d.clone()));
        assert!(
            rx.try_recv().is_err(),
            "once until taken (and none from before connecting)"
        );
        w.taken(&d);
        w.wake(std::slice::from_ref(&d));
        assert_eq!(futures::executor::block_on(rx.next()), Some(d));
    }
}
