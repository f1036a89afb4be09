//! The routing table: every route this replica knows, compiled, keyed by namespace and name.
//! Written only by the route reconciler; read by the receiver and the delivery executor.
//! Locks are never held across `.await`: readers clone an `Arc` out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::api::MatchedTarget;
use crate::controller::history::HistoryLimits;
use crate::event::Envelope;
use crate::matching::{EventView, Matcher};
use crate::secrets::SecretValue;
use crate::targets::CompiledTarget;
use crate::token_bucket::Limit;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub namespace: String,
    pub name: String,
}

impl RouteKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A route resolved against its Secrets, with every expression compiled.
#[derive(Debug)]
pub struct CompiledRoute {
    pub key: RouteKey,
    pub uid: Option<String>,
    pub signing_keys: Vec<SecretValue>,
    pub rules: Vec<CompiledRule>,
    pub history: HistoryLimits,
    pub rate_limit: Option<Limit>,
}

#[derive(Debug)]
pub struct CompiledRule {
    pub name: String,
    pub matcher: Matcher,
    pub targets: Vec<CompiledTarget>,
}

/// A rule whose expression could not be evaluated for one event; the rule is skipped.
#[derive(Debug)]
pub struct MatchFailure {
    pub rule: String,
    pub error: String,
}

impl CompiledRoute {
    /// Every (rule, target) pair the event triggers, in route order.
    pub fn match_event(&self, envelope: &Envelope<'_>) -> (Vec<MatchedTarget>, Vec<MatchFailure>) {
        let view = EventView::new(envelope, &self.key.namespace, &self.key.name);
        let mut matched = Vec::new();
        let mut failures = Vec::new();
        for rule in &self.rules {
            match rule.matcher.matches(&view) {
                Ok(true) => {
                    matched.extend(rule.targets.iter().enumerate().map(|(i, t)| MatchedTarget {
                        rule: rule.name.clone(),
                        target: u32::try_from(i).unwrap_or(u32::MAX),
                        kind: t.kind().to_string(),
                    }))
                }
                Ok(false) => {}
                Err(e) => failures.push(MatchFailure {
                    rule: rule.name.clone(),
                    error: e.to_string(),
                }),
            }
        }
        (matched, failures)
    }

    pub fn target(&self, rule: &str, index: u32) -> Option<&CompiledTarget> {
        self.rules
            .iter()
            .find(|r| r.name == rule)?
            .targets
            .get(index as usize)
    }
}

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
