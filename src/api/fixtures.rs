//! Builders of routes for tests and examples: `route("ns", "name").rule(rule("ship")
//! .types(&[..]).target(webhook(url))).build()` instead of a JSON blob per test.

use kube::api::ObjectMeta;

use super::route::{
    Ordering, OrderingPolicy, RateLimit, Rule, RuleMatch, StatusedRoute, StatusedRouteSpec, Target,
    TargetKind,
};
use crate::secrets::SecretKeySelector;
use crate::targets::webhook::WebhookTarget;

/// A route named `name` in `namespace`, signed with the Secret `statused-webhook`.
pub fn route(namespace: &str, name: &str) -> RouteBuilder {
    RouteBuilder {
        route: StatusedRoute {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: StatusedRouteSpec {
                signing_secrets: vec![secret("statused-webhook")],
                rules: Vec::new(),
                rate_limit: None,
                history: None,
                replay_window: None,
                signature_format: Default::default(),
                source: Default::default(),
            },
            status: None,
        },
    }
}

pub struct RouteBuilder {
    route: StatusedRoute,
}

impl RouteBuilder {
    pub fn uid(mut self, uid: &str) -> Self {
        self.route.metadata.uid = Some(uid.into());
        self
    }

    /// Signed with the key `secret` of these Secrets instead.
    pub fn signing(mut self, names: &[&str]) -> Self {
        self.route.spec.signing_secrets = names.iter().map(|n| secret(n)).collect();
        self
    }

    pub fn rule(mut self, rule: RuleBuilder) -> Self {
        self.route.spec.rules.push(rule.rule);
        self
    }

    pub fn rate_limit(mut self, requests_per_minute: u32, burst: u32) -> Self {
        self.route.spec.rate_limit = Some(RateLimit {
            requests_per_minute,
            burst: Some(burst),
        });
        self
    }

    /// `spec.replayWindow` (Go duration; `0` disables).
    pub fn replay_window(mut self, window: &str) -> Self {
        self.route.spec.replay_window = Some(window.into());
        self
    }

    pub fn build(self) -> StatusedRoute {
        self.route
    }
}

/// A rule named `name` that matches every event until told otherwise.
pub fn rule(name: &str) -> RuleBuilder {
    RuleBuilder {
        rule: Rule {
            name: name.into(),
            match_: RuleMatch::default(),
            targets: Vec::new(),
            ordering: None,
            after: None,
        },
    }
}

pub struct RuleBuilder {
    rule: Rule,
}

impl RuleBuilder {
    pub fn types(mut self, types: &[&str]) -> Self {
        self.rule.match_.types = types.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn statuses(mut self, statuses: &[&str]) -> Self {
        self.rule.match_.statuses = statuses.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn expression(mut self, expression: &str) -> Self {
        self.rule.match_.expression = Some(expression.into());
        self
    }

    /// Orders the rule's targets' calls per `key` with `policy`.
    pub fn ordering(mut self, key: &str, policy: OrderingPolicy) -> Self {
        self.rule.ordering = Some(Ordering {
            key: key.into(),
            policy,
        });
        self
    }

    pub fn target(mut self, kind: TargetKind) -> Self {
        self.rule.targets.push(Target {
            timeout_seconds: None,
            on_uncertain: Default::default(),
            max_concurrent: None,
            rate_per_minute: None,
            ordering: None,
            follow: None,
            kind,
        });
        self
    }
}

/// A `webhook` target POSTing the event to `url`.
pub fn webhook(url: &str) -> TargetKind {
    TargetKind::Webhook(WebhookTarget {
        url: Some(url.into()),
        ..Default::default()
    })
}

/// A target of any kind, from the YAML a user would write (`{"slack": {...}}`).
pub fn kind(yaml: serde_json::Value) -> TargetKind {
    serde_json::from_value(yaml).unwrap_or_else(|e| panic!("not a target kind: {e}"))
}

/// The key `secret` of Secret `name`.
pub fn secret(name: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: None,
    }
}
