//! How many `StatusedDelivery`s are stored, and how many bytes they hold, per namespace and
//! in all, and whether one more may be: the bound that keeps one team from filling etcd
//! (which stops the whole cluster's API server) and the operator's memory (its executor
//! caches every stored delivery).
//!
//! Every replica keeps the counts from a watch of the deliveries' metadata (the receiver
//! runs on every replica, the executor's cache only on the leader), one small key per stored
//! delivery; a delivery's size is the annotation [`ANNOTATION_SIZE`] the receiver writes
//! when it creates it. Pure bookkeeping over the watch's events:
//! [`StoredDeliveries::observe`].
//!
//! A replica counts its own creates at once ([`StoredDeliveries::created`]) and the other
//! replicas' as its watch sees them, so the bound may be passed by what other replicas
//! stored within the watch's delay. A
//! `ResourceQuota` on `count/statuseddeliveries.statused.dev` is exact, and the receiver
//! answers its refusal the same way (429, naming the quota).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::watcher;

/// A delivery's spec as JSON, in bytes: written by the receiver when it creates the delivery,
/// read by every replica's count.
pub const ANNOTATION_SIZE: &str = "statused.dev/size";

/// What a delivery without [`ANNOTATION_SIZE`] (made by hand) is counted as.
const UNKNOWN_SIZE: usize = 4 * 1024;
/// The most one delivery is counted as, whatever its annotation says.
const MAX_SIZE: usize = 64 * 1024 * 1024;

/// The bounds: stored deliveries and their bytes, per namespace and in all.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub per_namespace: usize,
    pub total: usize,
    pub bytes_per_namespace: usize,
    pub bytes: usize,
}

/// The counts, and the bounds they are held to.
#[derive(Debug)]
pub struct StoredDeliveries {
    state: Mutex<State>,
    bounds: Bounds,
}

/// Stored deliveries' sizes by name, and their sum.
#[derive(Debug, Default)]
struct Namespace {
    sizes: HashMap<String, usize>,
    bytes: usize,
}

impl Namespace {
    /// Puts `name` at `size`; the size it had, if it was there.
    fn put(&mut self, name: String, size: usize) -> Option<usize> {
        let old = self.sizes.insert(name, size);
        self.bytes = self.bytes - old.unwrap_or(0) + size;
        old
    }
}

impl State {
    /// Counts delivery `name` of `namespace` at `size` (once, however often it is seen).
    fn put(&mut self, namespace: String, name: String, size: usize) {
        let old = self
            .by_namespace
            .entry(namespace)
            .or_default()
            .put(name, size);
        self.total += usize::from(old.is_none());
        self.bytes = self.bytes - old.unwrap_or(0) + size;
    }
}

#[derive(Debug, Default)]
struct State {
    by_namespace: HashMap<String, Namespace>,
    total: usize,
    bytes: usize,
    /// The watch has listed every stored delivery once: until then nothing is admitted,
    /// since a restarted replica would otherwise admit past the bounds.
    listed: bool,
    /// A relist under way: what it has listed so far, swapped in when it is done.
    relisting: Option<HashMap<String, Namespace>>,
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
    /// The namespace's deliveries hold their most bytes (429).
    #[error(
        "namespace {namespace}'s stored deliveries hold {bytes} bytes; with this event's {event} they would pass its most (--max-delivery-bytes-per-namespace {max}); they are pruned by their routes' history limits once the dedup window has passed"
    )]
    NamespaceBytes {
        namespace: String,
        bytes: usize,
        event: usize,
        max: usize,
    },
    /// The operator holds its most across all namespaces (503: not this team's doing). The
    /// answer names the bound, not what other teams store.
    #[error("the operator holds its most stored deliveries (--max-deliveries {max})")]
    Total { count: usize, max: usize },
    /// The stored deliveries of all namespaces hold their most bytes (503).
    #[error("the operator's stored deliveries hold their most bytes (--max-delivery-bytes {max})")]
    TotalBytes { bytes: usize, max: usize },
    /// The stored deliveries have not been counted yet since this replica started (503).
    #[error("the operator has not counted the stored deliveries yet")]
    NotListed,
}

impl Full {
    /// Whether the team's own namespace is at its bound (else the operator is).
    pub fn is_namespace(&self) -> bool {
        matches!(self, Full::Namespace { .. } | Full::NamespaceBytes { .. })
    }
}

/// The bytes of `value` as JSON, counted without building the text.
pub fn json_len<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that does not serialize counts as large.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX / 2,
    }
}

impl StoredDeliveries {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            state: Mutex::default(),
            bounds,
        }
    }

    /// Whether one more delivery of `namespace`, of `size` bytes, may be stored now.
    pub fn admit(&self, namespace: &str, size: usize) -> Result<(), Full> {
        let (state, b) = (self.lock(), &self.bounds);
        if !state.listed {
            return Err(Full::NotListed);
        }
        let (count, bytes) = state
            .by_namespace
            .get(namespace)
            .map_or((0, 0), |n| (n.sizes.len(), n.bytes));
        let namespace = namespace.to_string();
        if count >= b.per_namespace {
            let max = b.per_namespace;
            return Err(Full::Namespace {
                namespace,
                count,
                max,
            });
        }
        if bytes + size > b.bytes_per_namespace {
            let max = b.bytes_per_namespace;
            return Err(Full::NamespaceBytes {
                namespace,
                bytes,
                event: size,
                max,
            });
        }
        if state.total >= b.total {
            return Err(Full::Total {
                count: state.total,
                max: b.total,
            });
        }
        if state.bytes + size > b.bytes {
            return Err(Full::TotalBytes {
                bytes: state.bytes,
                max: b.bytes,
            });
        }
        Ok(())
    }

    /// Stored deliveries of `namespace` and their bytes, as last seen.
    pub fn count(&self, namespace: &str) -> (usize, usize) {
        self.lock()
            .by_namespace
            .get(namespace)
            .map_or((0, 0), |n| (n.sizes.len(), n.bytes))
    }

    /// Whether the watch has listed every stored delivery once (`/readyz` waits for it).
    pub fn is_listed(&self) -> bool {
        self.lock().listed
    }

    /// Stored deliveries in all and their bytes, as last seen.
    pub fn total(&self) -> (usize, usize) {
        let state = self.lock();
        (state.total, state.bytes)
    }

    /// This replica stored delivery `name` of `namespace`, of `size` bytes: counted at once,
    /// not when the watch reports it (the watch's event for it then changes nothing), so
    /// that one replica's own creates never pass the bounds however far the watch lags.
    pub fn created(&self, namespace: &str, name: &str, size: usize) {
        let size = size.min(MAX_SIZE);
        self.lock()
            .put(namespace.to_string(), name.to_string(), size);
    }

    /// Takes in one event of the watch of deliveries (`namespace`, `name` of its object).
    pub fn observe<K: kube::Resource>(&self, event: &watcher::Event<K>) {
        let key = |o: &K| {
            let meta = o.meta();
            // Clamped: the annotation is text, and no delivery's spec is over the body limit
            // by much (the event is parsed from at most that).
            let size = (meta.annotations.as_ref())
                .and_then(|a| a.get(ANNOTATION_SIZE))
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(UNKNOWN_SIZE)
                .min(MAX_SIZE);
            let namespace = meta.namespace.clone().unwrap_or_default();
            (namespace, meta.name.clone().unwrap_or_default(), size)
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        match event {
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name, size) = key(o);
                let relisting = state.relisting.get_or_insert_default();
                relisting.entry(ns).or_default().put(name, size);
            }
            watcher::Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                state.total = listed.values().map(|n| n.sizes.len()).sum();
                state.bytes = listed.values().map(|n| n.bytes).sum();
                state.by_namespace = listed;
                state.listed = true;
            }
            watcher::Event::Apply(o) => {
                let (ns, name, size) = key(o);
                state.put(ns, name, size);
            }
            watcher::Event::Delete(o) => {
                let (ns, name, _) = key(o);
                if let Some(n) = state.by_namespace.get_mut(&ns)
                    && let Some(size) = n.sizes.remove(&name)
                {
                    n.bytes -= size;
                    state.total -= 1;
                    state.bytes -= size;
                    if n.sizes.is_empty() {
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

    fn meta(ns: &str, name: &str, size: usize) -> Meta {
        Meta {
            types: None,
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                annotations: Some([(ANNOTATION_SIZE.to_string(), size.to_string())].into()),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    /// Counted from a watch that has listed nothing yet.
    fn listed(bounds: Bounds) -> StoredDeliveries {
        let stored = StoredDeliveries::new(bounds);
        stored.observe(&watcher::Event::<Meta>::Init);
        stored.observe(&watcher::Event::<Meta>::InitDone);
        stored
    }

    fn bounds(per_namespace: usize, total: usize) -> Bounds {
        Bounds {
            per_namespace,
            total,
            bytes_per_namespace: 10_000,
            bytes: 20_000,
        }
    }

    #[test]
    fn a_namespace_at_its_bound_is_refused_and_another_is_not() {
        let stored = listed(bounds(2, 10));
        for name in ["a", "b"] {
            stored.observe(&watcher::Event::Apply(meta("team-a", name, 100)));
        }
        // The same object seen again (a status write) counts once.
        stored.observe(&watcher::Event::Apply(meta("team-a", "a", 100)));
        assert_eq!(stored.count("team-a"), (2, 200));
        let full = stored.admit("team-a", 100).unwrap_err();
        assert!(full.is_namespace());
        assert!(
            full.to_string()
                .contains("--max-deliveries-per-namespace 2"),
            "{full}"
        );
        assert!(
            stored.admit("team-b", 100).is_ok(),
            "another team is not held"
        );
        stored.observe(&watcher::Event::Delete(meta("team-a", "a", 100)));
        assert!(
            stored.admit("team-a", 100).is_ok(),
            "room once one is pruned"
        );
    }

    #[test]
    fn a_namespaces_bytes_are_bounded_whatever_their_count() {
        let stored = listed(bounds(100, 100));
        stored.observe(&watcher::Event::Apply(meta("hog", "a", 9_000)));
        let full = stored.admit("hog", 2_000).unwrap_err();
        assert!(full.is_namespace());
        assert!(
            full.to_string()
                .contains("hold 9000 bytes; with this event's 2000"),
            "{full}"
        );
        assert!(stored.admit("hog", 1_000).is_ok(), "a small one fits");
        assert!(stored.admit("other", 2_000).is_ok());
        // Counted when this replica creates it, before the watch says so; once.
        stored.created("hog", "b", 1_000);
        assert!(stored.admit("hog", 1).is_err());
        stored.observe(&watcher::Event::Apply(meta("hog", "b", 1_000)));
        assert_eq!(stored.count("hog"), (2, 10_000));
    }

    #[test]
    fn the_total_bounds_every_namespace_together() {
        let stored = listed(bounds(10, 3));
        for (ns, name) in [("a", "1"), ("b", "1"), ("c", "1")] {
            stored.observe(&watcher::Event::Apply(meta(ns, name, 10)));
        }
        let full = stored.admit("d", 10).unwrap_err();
        assert_eq!(full, Full::Total { count: 3, max: 3 });
        assert!(!full.is_namespace());
    }

    #[test]
    fn nothing_is_admitted_before_the_first_list_and_sizes_are_clamped() {
        let stored = StoredDeliveries::new(bounds(10, 10));
        assert_eq!(stored.admit("a", 10), Err(Full::NotListed));
        stored.observe(&watcher::Event::<Meta>::Init);
        stored.observe(&watcher::Event::InitApply(meta("a", "huge", usize::MAX)));
        stored.observe(&watcher::Event::<Meta>::InitDone);
        assert_eq!(stored.total(), (1, MAX_SIZE));
        stored.observe(&watcher::Event::Apply(meta("a", "huge", 1)));
        assert_eq!(stored.total(), (1, 1));
        stored.observe(&watcher::Event::Delete(meta("a", "huge", 1)));
        assert_eq!(stored.total(), (0, 0));
    }

    #[test]
    fn a_relist_replaces_the_counts_once_it_is_done() {
        let stored = StoredDeliveries::new(bounds(10, 10));
        stored.observe(&watcher::Event::Apply(meta("a", "gone-while-down", 10)));
        stored.observe(&watcher::Event::<Meta>::Init);
        stored.observe(&watcher::Event::InitApply(meta("a", "1", 10)));
        stored.observe(&watcher::Event::InitApply(meta("b", "1", 20)));
        assert_eq!(
            stored.total(),
            (1, 10),
            "the old counts hold until the list is done"
        );
        stored.observe(&watcher::Event::<Meta>::InitDone);
        assert_eq!(stored.total(), (2, 30));
        assert_eq!(stored.count("a"), (1, 10));
    }

    #[test]
    fn json_len_counts_the_text_serde_would_write() {
        let value = serde_json::json!({"a": [1, 2, "three"]});
        assert_eq!(json_len(&value), serde_json::to_vec(&value).unwrap().len());
    }
}
