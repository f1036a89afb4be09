//! The routing table: every route this replica knows, compiled, keyed by namespace and name.
//! Written only by the route reconciler; read by the receiver and the delivery executor.
//! Locks are never held across `.await`: readers clone an `Arc` out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::route::{CompiledRoute, RouteKey};

/// What the table holds for one route.
#[derive(Debug, Clone)]
pub enum RouteState {
    Ready(Arc<CompiledRoute>),
    /// Known but unusable; the receiver answers 503 so that Statused retries once it is fixed.
    NotReady,
}

/// Shared handle to the table.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    inner: Arc<RwLock<HashMap<RouteKey, RouteState>>>,
}

impl RoutingTable {
    pub fn upsert(&self, key: RouteKey, state: RouteState) {
        self.write().insert(key, state);
    }

    pub fn remove(&self, key: &RouteKey) {
        self.write().remove(key);
    }

    /// Drops every route `keep` says no to (routes deleted while a watch was down).
    pub fn retain(&self, mut keep: impl FnMut(&RouteKey) -> bool) {
        self.write().retain(|k, _| keep(k));
    }

    pub fn lookup(&self, key: &RouteKey) -> Option<RouteState> {
        self.read().get(key).cloned()
    }

    /// The compiled route `key`, if the route object `owner` may use it now (`owner`: the uid
    /// that accepted an event; `None` for a new event), given the uid the route watch cache
    /// shows (`cached`: `None` when it has no such route) and whether the routes are
    /// `loaded`; else why not (never [`RouteCheck::Run`]). The one answer to "is this the
    /// route?" for the receiver and the executor alike: see [`route_check`].
    pub fn check(
        &self,
        key: &RouteKey,
        owner: Option<&str>,
        cached: Option<Option<&str>>,
        loaded: bool,
    ) -> Result<Arc<CompiledRoute>, RouteCheck> {
        let entry = self.lookup(key);
        let compiled = match &entry {
            None => Compiled::Missing,
            Some(RouteState::NotReady) => Compiled::NotReady,
            Some(RouteState::Ready(route)) => Compiled::Ready(route.uid.as_deref()),
        };
        match (route_check(owner, compiled, cached, loaded), entry) {
            (RouteCheck::Run, Some(RouteState::Ready(route))) => Ok(route),
            (RouteCheck::Run, _) => Err(RouteCheck::Settling),
            (check, _) => Err(check),
        }
    }

    pub fn contains(&self, key: &RouteKey) -> bool {
        self.read().contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// (Ready, not Ready) routes.
    pub fn readiness(&self) -> (usize, usize) {
        let table = self.read();
        let ready = table
            .values()
            .filter(|s| matches!(s, RouteState::Ready(_)))
            .count();
        (ready, table.len() - ready)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned lock only means a writer panicked mid-insert of a whole entry; the map itself
    // is still consistent, so keep serving.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<RouteKey, RouteState>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<RouteKey, RouteState>> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the routing table holds for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled<'a> {
    Missing,
    NotReady,
    /// Compiled, from the route object with this uid.
    Ready(Option<&'a str>),
}

/// Whether an event or a delivery may use a route now: only the route object that accepted
/// the event, compiled, with the watch cache agreeing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteCheck {
    /// The table's compiled route is that object, and the watch cache agrees.
    Run,
    /// A route of the same name, but another object: a delivery never runs (RouteGone).
    ReCreated,
    /// No such route, and the routes are loaded (a 404; a delivery's RouteGone).
    Gone,
    /// The table and the watch cache disagree for a moment (a delete or a re-create the
    /// table has not followed yet): look again soon (the receiver answers 503).
    Settling,
    /// Not Ready, or not loaded yet: wait (503; a delivery waits up to `--max-pending-age`).
    NotReady,
}

/// Which route object may be used, from the `owner` uid (a delivery's routeUID; none for a
/// new event or a delivery older than that field), the routing table and the route watch
/// cache (`cached`: `None` when the cache has no route of that name). Pure.
///
/// The cache is consulted first: it is the API server's view, which the table follows (a
/// route is compiled after the cache shows it, and dropped after the cache drops it). So
/// while the table still holds the old compiled route of a route deleted and re-created,
/// the cache already names the new object, and the old route's targets must not run. A
/// compiled route is used only when the cache shows that same object.
pub fn route_check(
    owner: Option<&str>,
    table: Compiled<'_>,
    cached: Option<Option<&str>>,
    loaded: bool,
) -> RouteCheck {
    let replaced = |uid: Option<&str>| owner.is_some() && uid != owner;
    if cached.is_some_and(replaced) {
        return RouteCheck::ReCreated;
    }
    match table {
        Compiled::Ready(uid) if replaced(uid) => RouteCheck::ReCreated,
        Compiled::Ready(uid) if cached == Some(uid) => RouteCheck::Run,
        // Compiled, but the cache no longer shows that object (deleted: the table drops it
        // next), or shows another one (a delivery with no routeUID).
        Compiled::Ready(_) => RouteCheck::Settling,
        Compiled::Missing if loaded && cached.is_none() => RouteCheck::Gone,
        Compiled::Missing | Compiled::NotReady => RouteCheck::NotReady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Option<&str> = Some("old-uid");
    const NEW: Option<&str> = Some("new-uid");

    #[test]
    fn a_delivery_runs_only_when_table_and_cache_show_its_route_object() {
        assert_eq!(
            route_check(OLD, Compiled::Ready(OLD), Some(OLD), true),
            RouteCheck::Run
        );
        // Deleted and created again: the cache shows the new object while the table still
        // holds the old compiled route (uid == the delivery's routeUID). Its targets must
        // not run.
        assert_eq!(
            route_check(OLD, Compiled::Ready(OLD), Some(NEW), true),
            RouteCheck::ReCreated
        );
        // Deleted: the cache no longer has it, the table not yet followed: wait for it.
        assert_eq!(
            route_check(OLD, Compiled::Ready(OLD), None, true),
            RouteCheck::Settling
        );
        assert_eq!(
            route_check(OLD, Compiled::Missing, None, true),
            RouteCheck::Gone
        );
        assert_eq!(
            route_check(OLD, Compiled::Missing, None, false),
            RouteCheck::NotReady,
            "not loaded yet: no verdict"
        );
    }

    #[test]
    fn a_replaced_route_is_gone_whatever_the_table_holds() {
        for table in [Compiled::Ready(NEW), Compiled::NotReady, Compiled::Missing] {
            assert_eq!(
                route_check(OLD, table, Some(NEW), true),
                RouteCheck::ReCreated,
                "{table:?}"
            );
        }
        assert_eq!(
            route_check(OLD, Compiled::Ready(NEW), None, true),
            RouteCheck::ReCreated
        );
    }

    #[test]
    fn not_ready_routes_wait() {
        assert_eq!(
            route_check(OLD, Compiled::NotReady, Some(OLD), true),
            RouteCheck::NotReady
        );
        assert_eq!(
            route_check(OLD, Compiled::Missing, Some(OLD), true),
            RouteCheck::NotReady,
            "in the cache, not compiled yet"
        );
    }

    #[test]
    fn a_new_event_or_an_old_delivery_follows_the_cache() {
        assert_eq!(
            route_check(None, Compiled::Ready(NEW), Some(NEW), true),
            RouteCheck::Run
        );
        assert_eq!(
            route_check(None, Compiled::Ready(OLD), Some(NEW), true),
            RouteCheck::Settling
        );
        assert_eq!(
            route_check(None, Compiled::Missing, None, true),
            RouteCheck::Gone,
            "the receiver's 404"
        );
    }
}
