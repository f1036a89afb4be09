//! Slots shared fairly between namespaces: the executor's deliveries and the receiver's rule
//! evaluations.
//!
//! When all slots are taken, waiters queue per namespace, and a freed slot goes to the next
//! namespace in turn (round-robin), not to whoever has queued most: a team that fills the
//! slots with its own work (a burst, slow targets, costly expressions) delays its own work,
//! and another team's next piece of work waits for at most one slot per busy namespace ahead
//! of it. A waiter is a parked future; one that gives up (a timeout) leaves its place.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Debug)]
pub struct FairShare {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Waiters per namespace, oldest first.
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// Namespaces with waiters, in the order they are served.
    turn: VecDeque<String>,
}

/// One waiting for a slot: a parked future, or a call to make with the slot.
enum Waiter {
    Parked(oneshot::Sender<Slot>),
    Call(Box<dyn FnOnce(Slot) + Send>),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Parked(_) => "Parked",
            Waiter::Call(_) => "Call",
        })
    }
}

/// One slot; dropping it hands the slot to the next namespace in turn.
#[derive(Debug)]
pub struct Slot {
    state: Option<Arc<Mutex<State>>>,
}

impl FairShare {
    pub fn new(slots: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            })),
        }
    }

    /// Waits for a slot for a delivery of `namespace`.
    pub async fn acquire(&self, namespace: &str) -> Slot {
        let (tx, rx) = oneshot::channel();
        if let Some(slot) = self.take_or_queue(namespace, Waiter::Parked(tx)) {
            return slot;
        }
        match rx.await {
            Ok(slot) => slot,
            // The share was dropped with its executor: nothing left to protect.
            Err(_) => Slot { state: None },
        }
    }

    /// A slot for `namespace` now, when one is free and nobody waits; else `None`, and
    /// `on_slot` is called with one when the namespace's turn comes (from the drop of
    /// another slot, outside this share's lock). Nothing waits meanwhile: a caller with
    /// thousands of pieces of work queued holds no future for each (the executor's
    /// deliveries, woken when their turn comes).
    pub fn acquire_or_call(
        &self,
        namespace: &str,
        on_slot: impl FnOnce(Slot) + Send + 'static,
    ) -> Option<Slot> {
        self.take_or_queue(namespace, Waiter::Call(Box::new(on_slot)))
    }

    fn take_or_queue(&self, namespace: &str, waiter: Waiter) -> Option<Slot> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if state.free > 0 && state.turn.is_empty() {
            state.free -= 1;
            return Some(Slot {
                state: Some(self.state.clone()),
            });
        }
        let queue = state.waiting.entry(namespace.to_string()).or_default();
        if queue.is_empty() {
            state.turn.push_back(namespace.to_string());
        }
        queue.push_back(waiter);
        None
    }

    /// Slots in use or promised.
    #[cfg(test)]
    fn free(&self) -> usize {
        lock(&self.state).free
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.state.take() else {
            return;
        };
        let call = {
            let mut guard = lock(&shared);
            let state = &mut *guard;
            match hand_on(state, &shared) {
                Handed::Call(call) => call,
                Handed::Parked => return,
                Handed::Nobody => {
                    state.free += 1;
                    return;
                }
            }
        };
        // Outside the lock: the call may take or drop slots itself.
        call(Slot {
            state: Some(shared),
        });
    }
}

/// Where a freed slot went.
enum Handed {
    /// To a parked waiter.
    Parked,
    /// To a call, to be made once the lock is released.
    Call(Box<dyn FnOnce(Slot) + Send>),
    /// Nobody waits.
    Nobody,
}

/// Hands a freed slot to the next namespace in turn whose waiter is still there.
fn hand_on(state: &mut State, shared: &Arc<Mutex<State>>) -> Handed {
    while let Some(ns) = state.turn.pop_front() {
        let Some(queue) = state.waiting.get_mut(&ns) else {
            continue;
        };
        let mut handed = Handed::Nobody;
        while let Some(waiter) = queue.pop_front() {
            match waiter {
                Waiter::Call(call) => {
                    handed = Handed::Call(call);
                    break;
                }
                Waiter::Parked(tx) => match tx.send(Slot {
                    state: Some(shared.clone()),
                }) {
                    Ok(()) => {
                        handed = Handed::Parked;
                        break;
                    }
                    // Its reconcile was dropped; the slot came back: defuse it, try the next.
                    Err(mut unused) => unused.state = None,
                },
            }
        }
        if queue.is_empty() {
            state.waiting.remove(&ns);
        } else {
            state.turn.push_back(ns);
        }
        if !matches!(handed, Handed::Nobody) {
            return handed;
        }
    }
    Handed::Nobody
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Starts a waiter for `ns` that records its name when it gets a slot and holds the slot
    /// until told to let go.
    fn waiter(
        share: &Arc<FairShare>,
        ns: &'static str,
        served: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (release, released) = oneshot::channel::<()>();
        let (share, served) = (share.clone(), served.clone());
        let task = tokio::spawn(async move {
            let _slot = share.acquire(ns).await;
            served.lock().unwrap().push(ns);
            let _ = released.await;
        });
        (task, release)
    }

    #[tokio::test(start_paused = true)]
    async fn freed_slots_go_round_robin_across_namespaces_not_to_the_longest_queue() {
        let share = Arc::new(FairShare::new(1));
        let served = Arc::new(Mutex::new(Vec::new()));
        let first = share.acquire("noisy").await;
        // Ten of the noisy team's deliveries queue first, then one of the quiet team's.
        let mut releases = Vec::new();
        for _ in 0..10 {
            releases.push(waiter(&share, "noisy", &served));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (quiet, quiet_release) = waiter(&share, "quiet", &served);
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The first noisy delivery got the slot; when it is done, the quiet team's turn.
        let (_, release) = releases.remove(0);
        let _ = release.send(());
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _ = quiet_release.send(());
        quiet.await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let order = served.lock().unwrap().clone();
        assert_eq!(order, ["noisy", "quiet", "noisy"]);
        for (task, release) in releases {
            let _ = release.send(());
            task.await.unwrap();
        }
        assert_eq!(served.lock().unwrap().len(), 11);
        assert_eq!(share.free(), 1, "every slot came back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gave_up_does_not_keep_its_slot() {
        let share = Arc::new(FairShare::new(1));
        let held = share.acquire("a").await;
        let s = share.clone();
        let gave_up = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(5), s.acquire("b")).await;
        });
        gave_up.await.unwrap();
        drop(held);
        assert_eq!(share.free(), 1);
        let _again = share.acquire("c").await;
        assert_eq!(share.free(), 0);
    }

    #[tokio::test]
    async fn with_free_slots_nobody_waits() {
        let share = FairShare::new(2);
        let _a = share.acquire("a").await;
        let _b = share.acquire("a").await;
        assert_eq!(share.free(), 0);
    }
}
