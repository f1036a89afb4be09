//! A route as compiled from its spec and Secrets: pure data, no I/O. The route reconciler
//! builds it ([`compile`]), the routing table holds it, the receiver matches events with it
//! and the executor finds each target in it. It depends on the API types and the target
//! kinds, never on the controllers or the servers.

pub mod compile;
pub mod history;
pub mod ordering;
pub mod plan;

use crate::api::MatchedTarget;
use crate::api::StatusedRoute;
use crate::event::{Envelope, EnvelopeError};
use crate::matching::{EventView, Matcher};
use crate::secrets::SecretValue;
use crate::targets::kind::CompiledTarget;
use crate::token_bucket::Limit;
use history::HistoryLimits;
use ordering::KeyOrdering;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub namespace: String,
    pub name: String,
}

impl RouteKey {
    /// The key of a route object.
    pub fn of(route: &StatusedRoute) -> Self {
        use kube::ResourceExt;
        Self::new(route.namespace().unwrap_or_default(), route.name_any())
    }

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
    /// How its events are signed, which also says how a body is read (App Store Connect's
    /// notifications by `app_store_connect.rs`, every other format's CloudEvents by
    /// `event.rs`); with Standard Webhooks, `signing_keys` are the decoded `whsec_` keys.
    pub signature: crate::signature::Format,
    pub rules: Vec<CompiledRule>,
    pub history: HistoryLimits,
    pub rate_limit: Option<Limit>,
    /// `spec.replayWindow`; the operator's default when `None`.
    pub replay_window: Option<std::time::Duration>,
}

#[derive(Debug)]
pub struct CompiledRule {
    pub name: String,
    pub matcher: Matcher,
    pub targets: Vec<CompiledTarget>,
    /// Each target's ordering (its own, else the rule's), one per target, in order.
    pub ordering: Vec<Option<KeyOrdering>>,
    /// `after`: the targets are sent once another rule's targets ended so.
    pub after: Option<crate::api::After>,
}

/// A rule whose expression could not be evaluated for one event: its match expression (the
/// rule is skipped) or an ordering key (the empty key is used).
#[derive(Debug)]
pub struct MatchFailure {
    pub rule: String,
    pub error: String,
    /// Whether the rule was skipped (its match expression failed).
    pub skipped: bool,
}

impl CompiledRoute {
    /// Reads a body as the route's source sends events; `None` for App Store Connect's ping,
    /// which is answered without a delivery.
    pub fn read_event(&self, body: &[u8]) -> Result<Option<Envelope>, EnvelopeError> {
        use crate::app_store_connect::{self, Notification};
        use crate::signature::Format;
        match self.signature {
            Format::Statused | Format::StandardWebhooks => Envelope::parse(body).map(Some),
            Format::AppStoreConnect => match app_store_connect::parse(body)? {
                Notification::Event(envelope) => Ok(Some(envelope)),
                Notification::Ping => Ok(None),
            },
        }
    }

    /// Every (rule, target) pair the event triggers, in route order; the targets of a rule
    /// with `after` only when the rule it waits for matched too.
    pub fn match_event(&self, envelope: &Envelope) -> (Vec<MatchedTarget>, Vec<MatchFailure>) {
        let view = EventView::new(envelope, &self.key.namespace, &self.key.name);
        let mut matched = Vec::new();
        let mut failures = Vec::new();
        let mut matched_rules = Vec::new();
        for rule in &self.rules {
            match rule.matcher.matches(&view) {
                Ok(true) => matched_rules.push(rule),
                Ok(false) => {}
                Err(e) => failures.push(MatchFailure {
                    rule: rule.name.clone(),
                    error: e.to_string(),
                    skipped: true,
                }),
            }
        }
        let names: Vec<&str> = matched_rules.iter().map(|r| r.name.as_str()).collect();
        for rule in &matched_rules {
            if rule
                .after
                .as_ref()
                .is_some_and(|a| !names.contains(&a.rule.as_str()))
            {
                continue;
            }
            for (i, t) in rule.targets.iter().enumerate() {
                let ordering = rule.ordering.get(i).and_then(Option::as_ref).map(|o| {
                    let (ordered, error) = o.of(view.scope());
                    if let Some(e) = error {
                        failures.push(MatchFailure {
                            rule: rule.name.clone(),
                            error: format!("ordering key (the empty key is used): {e}"),
                            skipped: false,
                        });
                    }
                    ordered
                });
                matched.push(MatchedTarget {
                    rule: rule.name.clone(),
                    target: u32::try_from(i).unwrap_or(u32::MAX),
                    kind: t.kind.to_string(),
                    ordering,
                    follow: t.follow.map(|d| crate::api::FollowedBy {
                        timeout_seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
                        cancel_superseded: t.cancel_superseded,
                    }),
                    after: rule.after.clone(),
                });
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
