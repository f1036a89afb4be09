//! Whether an event matches a rule. Pure.

use std::cell::OnceCell;

use crate::api::RuleMatch;
use crate::conditions::Reason;
use crate::event::{Envelope, MatchFields, normalize_status};
use crate::expr::{ExprError, Expression, Scope};
use crate::targets::error::CompileError;

/// A rule's `match`, compiled.
#[derive(Debug)]
pub struct Matcher {
    types: Vec<String>,
    statuses: Vec<String>,
    apps: Vec<glob::Pattern>,
    expression: Option<Expression>,
}

impl Matcher {
    pub fn compile(field: &str, spec: &RuleMatch) -> Result<Self, CompileError> {
        let apps = spec
            .apps
            .iter()
            .map(|app| {
                glob::Pattern::new(app).map_err(|e| CompileError {
                    reason: Reason::InvalidSpec,
                    message: format!("{field}.apps: {app:?} is not a valid glob: {e}"),
                })
            })
            .collect::<Result<_, _>>()?;
        let expression = match &spec.expression {
            None => None,
            Some(source) => {
                let invalid = |e: ExprError| CompileError {
                    reason: Reason::InvalidExpression,
                    message: format!("{field}.expression: {e}"),
                };
                let e = Expression::compile(source).map_err(invalid)?;
                e.check_bool(&Scope::probe()).map_err(invalid)?;
                Some(e)
            }
        };
        Ok(Self {
            types: spec.types.clone(),
            statuses: spec.statuses.iter().map(|s| normalize_status(s)).collect(),
            apps,
            expression,
        })
    }

    /// Cheap checks first; the expression only runs when everything else matched.
    pub fn matches(&self, event: &EventView<'_>) -> Result<bool, ExprError> {
        if !self.types.is_empty() && !self.types.contains(&event.envelope.type_) {
            return Ok(false);
        }
        if !self.statuses.is_empty() {
            let Some(status) = event.status.as_deref() else {
                return Ok(false);
            };
            if !self.statuses.iter().any(|s| s == status) {
                return Ok(false);
            }
        }
        if !self.apps.is_empty() {
            let Some(app) = event.fields.app_name.as_deref() else {
                return Ok(false);
            };
            if !self
                .apps
                .iter()
                .any(|p| p.as_str() == app || p.matches(app))
            {
                return Ok(false);
            }
        }
        match &self.expression {
            Some(e) => e.eval_bool(event.scope()),
            None => Ok(true),
        }
    }
}

/// One parsed event as the matchers see it; the CEL scope is built only if an expression
/// needs it.
pub struct EventView<'e> {
    envelope: &'e Envelope,
    fields: MatchFields<'e>,
    status: Option<String>,
    route_namespace: &'e str,
    route_name: &'e str,
    scope: OnceCell<Scope>,
}

impl<'e> EventView<'e> {
    pub fn new(envelope: &'e Envelope, route_namespace: &'e str, route_name: &'e str) -> Self {
        let fields = envelope.match_fields();
        let status = fields.status.as_deref().map(normalize_status);
        Self {
            envelope,
            fields,
            status,
            route_namespace,
            route_name,
            scope: OnceCell::new(),
        }
    }

    pub fn scope(&self) -> &Scope {
        self.scope.get_or_init(|| {
            Scope::new(
                &self.envelope.to_value(),
                self.route_namespace,
                self.route_name,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sample;

    fn matcher(v: serde_json::Value) -> Matcher {
        Matcher::compile("rules[0].match", &serde_json::from_value(v).unwrap()).unwrap()
    }

    fn matches(m: &Matcher, sample_name: &str) -> bool {
        let body = sample(sample_name);
        let env = Envelope::parse(&body).unwrap();
        m.matches(&EventView::new(&env, "ns", "route")).unwrap()
    }

    #[test]
    fn empty_match_matches_everything() {
        let m = matcher(serde_json::json!({}));
        assert!(matches(&m, "account-agreement.json"));
        assert!(matches(&m, "build-valid.json"));
    }

    #[test]
    fn type_and_status_must_both_match() {
        let m = matcher(
            serde_json::json!({"types": ["com.statused.build.status.updated"], "statuses": ["valid"]}),
        );
        assert!(matches(&m, "build-valid.json"));
        assert!(!matches(&m, "build-invalid.json"));
        assert!(!matches(&m, "app-in-review.json"));
    }

    #[test]
    fn ready_for_sale_rule_matches_ready_for_distribution_events_and_back() {
        let old = matcher(serde_json::json!({"statuses": ["Ready for Sale"]}));
        assert!(matches(&old, "app-ready-for-sale.json"));
        assert!(matches(&old, "app-ready-for-distribution.json"));
        let new = matcher(serde_json::json!({"statuses": ["READY FOR DISTRIBUTION"]}));
        assert!(matches(&new, "app-ready-for-sale.json"));
    }

    #[test]
    fn apps_match_exactly_or_by_glob_and_events_without_app_do_not_match() {
        assert!(matches(
            &matcher(serde_json::json!({"apps": ["Markdown Email"]})),
            "build-valid.json"
        ));
        assert!(matches(
            &matcher(serde_json::json!({"apps": ["Markdown*"]})),
            "build-valid.json"
        ));
        assert!(!matches(
            &matcher(serde_json::json!({"apps": ["Other"]})),
            "build-valid.json"
        ));
        assert!(!matches(
            &matcher(serde_json::json!({"apps": ["*"]})),
            "account-agreement.json"
        ));
    }

    #[test]
    fn expression_is_evaluated_against_the_event() {
        let m = matcher(serde_json::json!({"expression": "data.build_version == '456'"}));
        assert!(matches(&m, "build-valid.json"));
        let m = matcher(serde_json::json!({"expression": "data.version.startsWith('2.')"}));
        assert!(!matches(&m, "build-valid.json"));
    }

    #[test]
    fn bad_expressions_are_compile_errors_with_reason() {
        for expr in ["data.version ==", "data.app_name", "nope == 1"] {
            let err = Matcher::compile(
                "rules[2].match",
                &RuleMatch {
                    expression: Some(expr.into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert_eq!(err.reason, Reason::InvalidExpression, "{expr}");
            assert!(
                err.message.starts_with("rules[2].match.expression: "),
                "{}",
                err.message
            );
        }
    }
}
