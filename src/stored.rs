//! How many `StatusedDelivery`s are stored, per namespace and in all, and whether one more
//! may be: the bound that keeps one team from filling etcd (which stops the whole cluster's
//! API server) and the operator's memory (its executor caches every stored delivery).
//!
//! Every replica keeps the counts from a watch of the deliveries' metadata (the receiver
//! runs on every replica, the executor's cache only on the leader), one small key per stored
//! delivery. Pure bookkeeping over the watch's events: [`StoredDeliveries::observe`].
//!
//! The counts lag the API server by the watch's delay, so the bound may be passed by the
//! creates in flight when it is reached: at most `--max-inflight-requests` per replica. A
//! `ResourceQuota` on `count/statuseddeliveries.statused.dev` is exact, and the receiver
//! answers its refusal the same way (429, naming the quota).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::watcher;

/// The counts, and the bounds they are held to.
#[derive(Debug)]
pub struct StoredDeliveries {
    state: Mutex<State>,
    per_namespace: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Names of the stored deliveries, per namespace.
    by_namespace: HashMap<String, HashSet<String>>,
    total: usize,
    /// A relist under way: the names it has listed so far, swapped in when it is done.
    relisting: Option<HashMap<String, HashSet<String>>>,
}

/// Why one more delivery may not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The namespace holds its most: its team's own bound (429).
    #[error(
        "namespace {namespace} holds {count} stored deliveries, its most (--max-deliveries-per-namespace {max}); they are pruned by their routes' history limits once the dedup window has passed"
    )]
    Namespace {
        namespace: String,
        count: usize,
        max: usize,
    },
    /// The operator holds its most across all namespaces (503: not this team's doing).
    #[error("the operator holds {count} stored deliveries, its most (--max-deliveries {max})")]
    Total { count: usize, max: usize },
}

impl StoredDeliveries {
    /// At most `per_namespace` stored deliveries in one namespace, `total` in all.
    pub fn new(per_namespace: usize, total: usize) -> Self {
        Self {
            state: Mutex::default(),
            per_namespace: per_namespace.max(1),
            total: total.max(1),
        }
    }

    /// Whether one more delivery of `namespace` may be stored now.
    pub fn admit(&self, namespace: &str) -> Result<(), Full> {
        let state = self.lock();
        let count = state.by_namespace.get(namespace).map_or(0, HashSet::len);
        if count >= self.per_namespace {
            return Err(Full::Namespace {
                namespace: namespace.to_string(),
                count,
                max: self.per_namespace,
            });
        }
        if state.total >= self.total {
            return Err(Full::Total {
                count: state.total,
                max: self.total,
            });
        }
        Ok(())
    }

    /// Stored deliveries of `namespace`, as last seen.
    pub fn count(&self, namespace: &str) -> usize {
        self.lock()
            .by_namespace
            .get(namespace)
            .map_or(0, HashSet::len)
    }

    /// Stored deliveries in all, as last seen.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Takes in one event of the watch of deliveries (`namespace`, `name` of its object).
    pub fn observe<K: kube::Resource>(&self, event: &watcher::Event<K>) {
        let key = |o: &K| {
            let meta = o.meta();
            (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        match event {
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = key(o);
                state
                    .relisting
                    .get_or_insert_default()
                    .entry(ns)
                    .or_default()
                    .insert(name);
            }
            watcher::Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                state.total = listed.values().map(HashSet::len).sum();
                state.by_namespace = listed;
            }
            watcher::Event::Apply(o) => {
                let (ns, name) = key(o);
                if state.by_namespace.entry(ns).or_default().insert(name) {
                    state.total += 1;
                }
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(o);
                if let Some(names) = state.by_namespace.get_mut(&ns)
                    && names.remove(&name)
                {
                    state.total -= 1;
                    if names.is_empty() {
                        state.by_namespace.remove(&ns);
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use kube::api::{ObjectMeta, PartialObjectMeta};

    use super::*;
    use crate::api::StatusedDelivery;

    type Meta = PartialObjectMeta<StatusedDelivery>;

    fn meta(ns: &str, name: &str) -> Meta {
        Meta {
            types: None,
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn a_namespace_at_its_bound_is_refused_and_another_is_not() {
        let stored = StoredDeliveries::new(2, 10);
        for name in ["a", "b"] {
            stored.observe(&watcher::Event::Apply(meta("team-a", name)));
        }
        // The same object seen again (a status write) counts once.
        stored.observe(&watcher::Event::Apply(meta("team-a", "a")));
        assert_eq!(stored.count("team-a"), 2);
        let full = stored.admit("team-a").unwrap_err();
        assert!(
            full.to_string()
                .contains("--max-deliveries-per-namespace 2"),
            "{full}"
        );
        assert!(stored.admit("team-b").is_ok(), "another team is not held");
        stored.observe(&watcher::Event::Delete(meta("team-a", "a")));
        assert!(stored.admit("team-a").is_ok(), "room once one is pruned");
    }

    #[test]
    fn the_total_bounds_every_namespace_together() {
        let stored = StoredDeliveries::new(10, 3);
        for (ns, name) in [("a", "1"), ("b", "1"), ("c", "1")] {
            stored.observe(&watcher::Event::Apply(meta(ns, name)));
        }
        assert_eq!(stored.admit("d"), Err(Full::Total { count: 3, max: 3 }));
    }

    #[test]
    fn a_relist_replaces_the_counts_once_it_is_done() {
        let stored = StoredDeliveries::new(10, 10);
        stored.observe(&watcher::Event::Apply(meta("a", "gone-while-down")));
        stored.observe(&watcher::Event::<Meta>::Init);
        stored.observe(&watcher::Event::InitApply(meta("a", "1")));
        stored.observe(&watcher::Event::InitApply(meta("b", "1")));
        assert_eq!(
            stored.total(),
            1,
            "the old counts hold until the list is done"
        );
        stored.observe(&watcher::Event::<Meta>::InitDone);
        assert_eq!(
            (stored.total(), stored.count("a"), stored.count("b")),
            (2, 1, 1)
        );
    }
}
