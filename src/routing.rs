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
