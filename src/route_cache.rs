//! What every replica knows of the routes: the routing table of compiled routes and the
//! watch cache of route objects, which together say whether the routes are loaded, and
//! which route object a name stands for now. Shared by the receiver (through the narrow
//! [`RouteIndex`]), the route reconciler (which fills both) and the executor.

use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::StatusedRoute;
use crate::route::RouteKey;
use crate::routing::RoutingTable;

/// The routes the watch cache holds, as the receiver asks about them.
pub trait RouteIndex: Send + Sync {
    /// The route list has synced and every listed route is in the table (ready or not), so
    /// that a 404 really means "no such route".
    fn is_ready(&self) -> bool;
    /// The uid of route `key` in the watch cache; `None` when the cache has no such route.
    fn cached_uid(&self, key: &RouteKey) -> Option<Option<String>>;
}

/// The routing table and the watch cache of routes.
pub struct RouteCache {
    /// The compiled routes; written only by the route reconciler.
    pub table: RoutingTable,
    store: Store<StatusedRoute>,
    /// Set once the first list of routes has been received.
    synced: AtomicBool,
    /// Latched once [`RouteCache::is_ready`] was true.
    ready: AtomicBool,
}

impl RouteCache {
    /// Over the watch cache `store`, with an empty table.
    pub fn new(store: Store<StatusedRoute>) -> Self {
        Self {
            table: RoutingTable::default(),
            store,
            synced: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }

    /// The first list of routes has been received.
    pub fn synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Whether `route` (this uid) is still in the watch cache, i.e. not deleted.
    pub fn is_current(&self, route: &StatusedRoute) -> bool {
        let key = RouteKey::of(route);
        self.get(&key)
            .is_some_and(|r| r.metadata.uid == route.metadata.uid)
    }

    /// Whether the watch cache holds route `key`.
    pub fn contains(&self, key: &RouteKey) -> bool {
        self.get(key).is_some()
    }

    fn get(&self, key: &RouteKey) -> Option<std::sync::Arc<StatusedRoute>> {
        self.store
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }
}

impl RouteIndex for RouteCache {
    /// Latched: once ready, the hot path is a single atomic load.
    fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.synced.load(Ordering::Acquire)
            && self
                .store
                .state()
                .iter()
                .all(|r| self.table.contains(&RouteKey::of(r)));
        if ready {
            self.ready.store(true, Ordering::Release);
        }
        ready
    }

    fn cached_uid(&self, key: &RouteKey) -> Option<Option<String>> {
        self.get(key).map(|r| r.metadata.uid.clone())
    }
}
