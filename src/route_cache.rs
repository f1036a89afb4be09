//! What every replica knows of the routes: the routing table of compiled routes and the
//! watch cache of route objects, which together say whether the routes are loaded, and
//! which route object a name stands for now. Shared by the receiver (through the narrow
//! [`RouteIndex`]), the route reconciler (which fills both) and the executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::StatusedRoute;
use crate::route::{CompiledRoute, RouteKey};
use crate::routing::{RouteCheck, RoutingTable};

/// The routes the watch cache holds, as the receiver asks about them.
pub trait RouteIndex: Send + Sync {
    /// The route list has synced and every listed route is in the table (ready or not), so
    /// that a 404 really means "no such route".
    fn is_ready(&self) -> bool;
    /// The uid of route `key` in the watch cache; `None` when the cache has no such route.
    fn cached_uid(&self, key: &RouteKey) -> Option<Option<String>>;

    /// The one route check, for the receiver, the executor and the pruner alike: the route
    /// compiled in `table` as `key`, if the route object `owner` may use it now (`None`: a
    /// new event, or a record older than routeUID); else why not ([`RoutingTable::check`]).
    /// `loaded`: whether a route missing from both is gone for good.
    fn check_in(
        &self,
        table: &RoutingTable,
        key: &RouteKey,
        owner: Option<&str>,
        loaded: bool,
    ) -> Result<Arc<CompiledRoute>, RouteCheck> {
        let cached = self.cached_uid(key);
        table.check(key, owner, cached.as_ref().map(Option::as_deref), loaded)
    }
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

    /// [`RouteIndex::check_in`] this cache's own table, the routes loaded when it is ready.
    pub fn check(
        &self,
        key: &RouteKey,
        owner: Option<&str>,
    ) -> Result<Arc<CompiledRoute>, RouteCheck> {
        self.check_in(&self.table, key, owner, self.is_ready())
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

    /// Where `route` stands among the routes, oldest first (creation time, then namespace
    /// and name): (its place in its namespace, its place among all). The routes beyond
    /// `--max-routes-per-namespace` / `--max-routes` are not served. O(routes), once per
    /// reconcile of a route.
    pub fn place(&self, route: &StatusedRoute) -> (usize, usize) {
        let order = |r: &StatusedRoute| {
            let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (
                created,
                r.metadata.namespace.clone(),
                r.metadata.name.clone(),
            )
        };
        let mine = order(route);
        let (mut in_namespace, mut overall) = (0, 0);
        for other in self.store.state() {
            if order(&other) < mine {
                overall += 1;
                in_namespace += usize::from(other.metadata.namespace == route.metadata.namespace);
            }
        }
        (in_namespace, overall)
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

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;
    use crate::api::fixtures::route;

    fn at(ns: &str, name: &str, secs: i64) -> StatusedRoute {
        let mut r = route(ns, name).build();
        r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap(),
        ));
        r
    }

    #[test]
    fn a_routes_place_counts_the_older_routes_in_its_namespace_and_in_all() {
        let (store, mut writer) = reflector::store();
        let routes = [
            at("a", "one", 1),
            at("b", "two", 2),
            at("a", "three", 3),
            at("a", "four", 3),
        ];
        for r in &routes {
            writer.apply_watcher_event(&watcher::Event::Apply(r.clone()));
        }
        let cache = RouteCache::new(store);
        assert_eq!(cache.place(&routes[0]), (0, 0));
        assert_eq!(cache.place(&routes[1]), (0, 1));
        // The same second: by name, so every replica agrees.
        assert_eq!(cache.place(&routes[3]), (1, 2));
        assert_eq!(cache.place(&routes[2]), (2, 3));
    }
}
