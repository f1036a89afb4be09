//! Turning a `StatusedRoute` and the Secrets it references into a [`CompiledRoute`]. Pure:
//! the reconciler reads the Secrets and writes the result.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::ResourceExt;

use super::history::HistoryLimits;
use super::ordering::KeyOrdering;
use super::{CompiledRoute, CompiledRule, RouteKey};
use crate::api::route::{MAX_MATCH_VALUES, MAX_RULES, MAX_SIGNING_SECRETS, MAX_TARGETS_PER_RULE};
use crate::api::{
    After, EventSource, OnUncertain, Rule, RunPhase, SignatureFormat, StatusedRoute, Target,
};
use crate::conditions::Reason;
use crate::cost::{self, Cost};
use crate::expr;
use crate::matching::Matcher;
use crate::secrets::{SecretSet, SecretValue};
use crate::signature;
use crate::targets::error::CompileError;
use crate::targets::fields::{self, Field};
use crate::targets::kind::{CompiledTarget, DestinationLimits, Trigger};
use crate::targets::objects::ApiRef;
use crate::token_bucket::Limit;

/// The longest per-target timeout; a slower target should answer 202 and work in the
/// background.
pub const MAX_TIMEOUT_SECONDS: u32 = 300;
/// `follow.timeoutSeconds`: a minute to a week.
pub const FOLLOW_SECONDS: std::ops::RangeInclusive<u32> = 60..=604_800;
/// How long a run is followed when the target does not say.
pub const DEFAULT_FOLLOW_SECONDS: u32 = 7200;

/// Every Secret the route reads: its signing Secrets and each target's, as the targets'
/// kinds name them.
pub fn referenced_secrets(route: &StatusedRoute) -> BTreeSet<String> {
    let targets = route.spec.rules.iter().flat_map(|r| &r.targets);
    route
        .spec
        .signing_secrets
        .iter()
        .chain(targets.flat_map(|t| t.kind.as_kind().secret_refs()))
        .map(|s| s.name.clone())
        .collect()
}

/// The in-cluster APIs the route's targets create objects of.
pub fn required_apis(route: &StatusedRoute) -> BTreeSet<&'static ApiRef> {
    route
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.targets)
        .filter_map(|t| t.kind.as_kind().required_api())
        .collect()
}

/// Compiles `route` against its Secrets. `missing_apis` are the in-cluster APIs the cluster
/// does not serve (see [`required_apis`]).
pub fn compile_route(
    route: &StatusedRoute,
    secrets: &SecretSet,
    missing_apis: &BTreeSet<&'static ApiRef>,
) -> Result<CompiledRoute, CompileError> {
    let key = RouteKey::new(route.namespace().unwrap_or_default(), route.name_any());
    let spec = &route.spec;
    if spec.signing_secrets.is_empty() {
        return Err(CompileError {
            reason: Reason::InvalidSpec,
            message: "spec.signingSecrets: at least one signing Secret is required".into(),
        });
    }
    // Before any Secret is read: the bound is what limits the HMACs per request.
    at_most(
        "spec.signingSecrets",
        spec.signing_secrets.len(),
        MAX_SIGNING_SECRETS,
    )?;
    let signature = match (spec.source, spec.signature_format) {
        (EventSource::AppStoreConnect, SignatureFormat::Statused) => {
            signature::Format::AppStoreConnect
        }
        (EventSource::AppStoreConnect, _) => {
            return Err(CompileError {
                reason: Reason::InvalidSpec,
                message: "spec.signatureFormat applies to source statused only: App Store Connect signs its notifications with x-apple-signature; remove signatureFormat".into(),
            });
        }
        (EventSource::Statused, SignatureFormat::Statused) => signature::Format::Statused,
        (EventSource::Statused, SignatureFormat::StandardWebhooks) => {
            signature::Format::StandardWebhooks
        }
    };
    let mut signing_keys = Vec::new();
    for sel in &spec.signing_secrets {
        // A trailing newline from `kubectl create secret --from-file` is not part of the secret.
        let stored = secrets.get(sel, "secret")?;
        let value = match signature {
            signature::Format::Statused | signature::Format::AppStoreConnect => {
                SecretValue::new(stored.as_bytes().trim_ascii())
            }
            signature::Format::StandardWebhooks => {
                SecretValue::new(signature::decode_whsec(stored.as_bytes()).ok_or_else(|| {
                    CompileError {
                        reason: Reason::InvalidSpec,
                        message: format!(
                            "Secret {}/{} key {} is not a Standard Webhooks secret (signatureFormat: standardWebhooks): whsec_ and the key in base64",
                            key.namespace,
                            sel.name,
                            sel.key_or("secret")
                        ),
                    }
                })?)
            }
        };
        if value.as_bytes().is_empty() {
            return Err(CompileError {
                reason: Reason::SecretKeyMissing,
                message: format!(
                    "Secret {}/{} key {} is empty",
                    key.namespace,
                    sel.name,
                    sel.key_or("secret")
                ),
            });
        }
        signing_keys.push(value);
    }
    if spec.rules.is_empty() {
        return Err(CompileError {
            reason: Reason::InvalidSpec,
            message: "spec.rules: at least one rule is required".into(),
        });
    }
    at_most("spec.rules", spec.rules.len(), MAX_RULES)?;
    let mut seen = BTreeSet::new();
    let mut rules = Vec::new();
    // Every rule's match expression runs in one evaluation per event: bounded together.
    let mut matching = Cost::default();
    let mut ordered = 0usize;
    // One delivery renders all its due targets in one render slot: their work together is
    // bounded too, so that no route holds a slot for long.
    let mut rendering = 0u64;
    for (i, rule) in spec.rules.iter().enumerate() {
        let field = Field::new("spec.rules").index(i);
        if rule.name.is_empty() || !seen.insert(rule.name.as_str()) {
            return Err(CompileError {
                reason: Reason::InvalidSpec,
                message: format!(
                    "{field}.name: rule names must be non-empty and unique, {:?} is not",
                    rule.name
                ),
            });
        }
        if rule.targets.is_empty() {
            return Err(CompileError::invalid(
                field.at("targets"),
                "at least one target is required",
            ));
        }
        at_most(
            field.at("targets"),
            rule.targets.len(),
            MAX_TARGETS_PER_RULE,
        )?;
        let m = &rule.match_;
        for (name, values) in [
            ("types", &m.types),
            ("statuses", &m.statuses),
            ("apps", &m.apps),
        ] {
            at_most(field.at("match").at(name), values.len(), MAX_MATCH_VALUES)?;
        }
        let (matcher, cost) =
            expr::metered(|| Matcher::compile(&field.at("match").to_string(), &rule.match_));
        let matcher = matcher?;
        matching = matching.plus(cost);
        if let Some(why) = matching.over(cost::BUDGET) {
            return Err(CompileError {
                reason: Reason::InvalidExpression,
                message: format!(
                    "{field}.match.expression: the rules' match expressions up to this one together are too costly: {why} (each event evaluates all of them; see the data limits in the README)"
                ),
            });
        }
        let targets: Vec<CompiledTarget> = rule
            .targets
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let target_field = field.at("targets").index(j);
                let kind = t.kind.as_kind();
                if let Some(api) = kind.required_api().filter(|a| missing_apis.contains(a)) {
                    return Err(CompileError {
                        reason: Reason::TargetAPINotInstalled,
                        message: format!(
                            "{target_field}: the cluster does not serve {} {} ({}); install it or remove this target",
                            api.api_version(),
                            api.plural,
                            api.kind
                        ),
                    });
                }
                // One target's templates are rendered in one evaluation: bounded together.
                let (compiled, cost) = expr::metered(|| compile_target(&target_field, t, secrets));
                if let Some(why) = cost.over(cost::BUDGET) {
                    return Err(CompileError {
                        reason: Reason::InvalidTemplate,
                        message: format!(
                            "{target_field}: the target's $(...) expressions together are too costly: {why} (see the data limits in the README)"
                        ),
                    });
                }
                rendering = rendering.saturating_add(cost.units);
                if rendering > cost::ROUTE_RENDER_UNITS {
                    return Err(CompileError {
                        reason: Reason::InvalidTemplate,
                        message: format!(
                            "{target_field}: the route's targets' $(...) expressions up to this one together cost {rendering} units, at most {} for one delivery (see the data limits in the README)",
                            cost::ROUTE_RENDER_UNITS
                        ),
                    });
                }
                compiled
            })
            .collect::<Result<_, _>>()?;
        let ordering = ordering(&field, rule, &mut matching)?;
        ordered += ordering.iter().flatten().count();
        if ordered > MAX_ORDERED_TARGETS {
            return Err(CompileError {
                reason: Reason::InvalidSpec,
                message: format!(
                    "{field}: the route orders {ordered} targets up to this rule; at most {MAX_ORDERED_TARGETS} may be ordered (each keeps an entry per stored delivery in the executor's ordering index): order the targets that need it, or split the route"
                ),
            });
        }
        for (j, t) in targets.iter().enumerate() {
            let latest_wins = ordering[j]
                .as_ref()
                .is_some_and(|o| o.policy() == crate::api::OrderingPolicy::LatestWins);
            if t.cancel_superseded && !latest_wins {
                return Err(CompileError::invalid(
                    field
                        .at("targets")
                        .index(j)
                        .at("follow")
                        .at("cancelSuperseded"),
                    "needs a latestWins ordering (the target's or the rule's): it is what says which run supersedes which",
                ));
            }
        }
        let after = after(&field, rule, &route.spec.rules)?;
        if after.is_some() && ordering.iter().any(Option::is_some) {
            return Err(CompileError::invalid(
                field.at("ordering"),
                "a rule with `after` is sent once per event after another rule's targets ended; it cannot be ordered",
            ));
        }
        rules.push(CompiledRule {
            name: rule.name.clone(),
            matcher,
            targets,
            ordering,
            after,
        });
    }
    Ok(CompiledRoute {
        key,
        uid: route.uid(),
        signing_keys,
        signature,
        rules,
        history: HistoryLimits::compile(spec.history.as_ref())?,
        replay_window: match &spec.replay_window {
            None => None,
            Some(text) => Some(crate::duration::parse_go_duration(text).ok_or_else(|| {
                CompileError {
                    reason: Reason::InvalidSpec,
                    message: format!(
                        "spec.replayWindow: {text:?} is not a duration like 24h or 30m (0 disables)"
                    ),
                }
            })?),
        },
        rate_limit: match &spec.rate_limit {
            None => None,
            Some(r) if r.requests_per_minute == 0 || r.burst == Some(0) => {
                return Err(CompileError {
                    reason: Reason::InvalidSpec,
                    message: "spec.rateLimit: requestsPerMinute and burst must be at least 1"
                        .into(),
                });
            }
            Some(r) => Some(Limit {
                per_minute: f64::from(r.requests_per_minute),
                burst: f64::from(r.burst.unwrap_or(r.requests_per_minute)),
            }),
        },
    })
}

/// The most targets of one route with an `ordering` (its own or its rule's): each keeps an
/// entry per stored delivery in the executor's ordering index, about 1 KiB (measured by
/// `hack/just bench-load` with `STATUSED_BENCH_ORDERING=inOrder`).
pub const MAX_ORDERED_TARGETS: usize = 2;

/// Each target's ordering (its own, else the rule's), compiled. Keys are rendered when an
/// event matches, in the same evaluation as the match expressions: their cost is added to
/// `matching`, which is bounded as a whole.
fn ordering(
    field: &Field,
    rule: &Rule,
    matching: &mut Cost,
) -> Result<Vec<Option<KeyOrdering>>, CompileError> {
    let mut compiled = Vec::with_capacity(rule.targets.len());
    for (j, target) in rule.targets.iter().enumerate() {
        let (at, declared) = match &target.ordering {
            Some(own) => (field.at("targets").index(j).at("ordering"), Some(own)),
            None => (field.at("ordering"), rule.ordering.as_ref()),
        };
        let Some(declared) = declared else {
            compiled.push(None);
            continue;
        };
        let (key, cost) = expr::metered(|| KeyOrdering::compile(&at, declared));
        *matching = matching.plus(cost);
        if let Some(why) = matching.over(cost::BUDGET) {
            return Err(CompileError {
                reason: Reason::InvalidExpression,
                message: format!(
                    "{at}.key: the rules' match expressions and ordering keys up to this one together are too costly: {why} (each event evaluates all of them)"
                ),
            });
        }
        compiled.push(Some(key?));
    }
    Ok(compiled)
}

/// Compiles one target entry: its kind, then the settings every kind shares; `field` is its
/// path, e.g. `spec.rules[0].targets[1]`.
fn compile_target(
    field: &Field,
    target: &Target,
    secrets: &SecretSet,
) -> Result<CompiledTarget, CompileError> {
    let kind = target.kind.as_kind();
    let trigger = kind.compile(&field.at(target.kind.name()), secrets)?;
    let at_most_once = target.on_uncertain == OnUncertain::Fail;
    if at_most_once && matches!(trigger, Trigger::Kube(_)) {
        return Err(CompileError::invalid(
            field.at("onUncertain"),
            "applies to HTTP kinds only: Tekton and Argo objects are created exactly once",
        ));
    }
    let timeout = within(
        field,
        "timeoutSeconds",
        target.timeout_seconds,
        MAX_TIMEOUT_SECONDS,
    )?
    .map(|secs| Duration::from_secs(secs.into()));
    let limits = DestinationLimits {
        max_concurrent: within(field, "maxConcurrent", target.max_concurrent, 64)?,
        per_minute: within(field, "ratePerMinute", target.rate_per_minute, 6000)?,
    };
    if limits != DestinationLimits::default() && matches!(trigger, Trigger::Kube(_)) {
        return Err(CompileError::invalid(
            field.at(if limits.max_concurrent.is_some() {
                "maxConcurrent"
            } else {
                "ratePerMinute"
            }),
            "applies to HTTP kinds only: Tekton and Argo objects are created on the API server",
        ));
    }
    let follow = match (&target.follow, &trigger) {
        (None, _) => None,
        (Some(_), Trigger::Http(http)) if let Err(why) = http.followable() => {
            return Err(CompileError::invalid(field.at("follow"), why));
        }
        (Some(f), _) => Some(Duration::from_secs(
            within_range(
                &field.at("follow"),
                "timeoutSeconds",
                f.timeout_seconds,
                FOLLOW_SECONDS,
            )?
            .unwrap_or(DEFAULT_FOLLOW_SECONDS)
            .into(),
        )),
    };
    Ok(CompiledTarget {
        kind: target.kind.name(),
        follow,
        cancel_superseded: target.follow.as_ref().is_some_and(|f| f.cancel_superseded),
        trigger,
        timeout,
        at_most_once,
        limits,
    })
}

/// The route's own lists, bounded as [`fields::at_most`] bounds a target's: an invalid spec.
fn at_most(field: impl std::fmt::Display, count: usize, max: usize) -> Result<(), CompileError> {
    fields::at_most(field, count, max).map_err(|e| CompileError {
        reason: Reason::InvalidSpec,
        ..e
    })
}

/// `value` of setting `name`, which must be between 1 and `max` when set.
/// A rule's `after`, checked: it names another rule of the route, one that waits for
/// nothing itself, and says at least one outcome, none of them `Running`.
fn after(field: &Field, rule: &Rule, rules: &[Rule]) -> Result<Option<After>, CompileError> {
    let Some(after) = &rule.after else {
        return Ok(None);
    };
    let at = field.at("after");
    match rules.iter().find(|r| r.name == after.rule) {
        None => Err(CompileError::invalid(
            at.at("rule"),
            format!("no rule of this route is named {:?}", after.rule),
        )),
        Some(r) if r.name == rule.name => Err(CompileError::invalid(
            at.at("rule"),
            "a rule cannot wait for its own targets",
        )),
        Some(r) if r.after.is_some() => Err(CompileError::invalid(
            at.at("rule"),
            format!(
                "rule {:?} waits for another rule itself; `after` names a rule without `after`",
                r.name
            ),
        )),
        Some(_) if after.phases.is_empty() || after.phases.contains(&RunPhase::Running) => {
            Err(CompileError::invalid(
                at.at("phases"),
                "name at least one outcome: Succeeded, Failed, Cancelled, TimedOut or Deleted",
            ))
        }
        Some(_) => Ok(Some(after.clone())),
    }
}

fn within(
    field: &Field,
    name: &str,
    value: Option<u32>,
    max: u32,
) -> Result<Option<u32>, CompileError> {
    within_range(field, name, value, 1..=max)
}

fn within_range(
    field: &Field,
    name: &str,
    value: Option<u32>,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, CompileError> {
    match value {
        Some(v) if !range.contains(&v) => Err(CompileError::invalid(
            field.at(name),
            format!("must be between {} and {}", range.start(), range.end()),
        )),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::{kind, route, rule};
    use crate::event::Envelope;
    use serde_json::json;

    fn issue_example() -> StatusedRoute {
        route("mobile-ci", "releases")
            .rule(
                rule("submit-valid-build")
                    .types(&["com.statused.build.status.updated"])
                    .statuses(&["Valid"])
                    .target(kind(json!({"githubDispatch": {
                        "repository": "acme/ios-app", "eventType": "submit-for-review",
                        "clientPayload": {"app_name": "$(data.app_name)", "build_version": "$(data.build_version)"},
                        "tokenSecretRef": {"name": "github-token", "key": "token"}}}))),
            )
            .rule(
                rule("announce-release")
                    .types(&["com.statused.app.status.updated"])
                    .statuses(&["Ready for Sale"])
                    .target(kind(json!({"webhook": {
                        "urlSecretRef": {"name": "chat-hook", "key": "url"},
                        "body": {"text": "$(data.app_name) v$(data.version) is live"}}}))),
            )
            .build()
    }

    fn all_secrets() -> SecretSet {
        SecretSet::new("mobile-ci")
            .with("statused-webhook", &[("secret", "statused-test-secret")])
            .with("github-token", &[("token", "ghp_x")])
            .with("chat-hook", &[("url", "http://127.0.0.1:1/chat")])
    }

    #[test]
    fn referenced_secrets_lists_signing_and_target_secrets() {
        let names: Vec<_> = referenced_secrets(&issue_example()).into_iter().collect();
        assert_eq!(names, ["chat-hook", "github-token", "statused-webhook"]);
    }

    #[test]
    fn the_issue_example_compiles_and_matches_samples() {
        let compiled = compile_route(&issue_example(), &all_secrets(), &BTreeSet::new()).unwrap();
        let body = crate::test_support::sample("build-valid.json");
        let (matched, failures) = compiled.match_event(&Envelope::parse(&body).unwrap());
        assert!(failures.is_empty());
        assert_eq!(matched.len(), 1);
        assert_eq!(
            (matched[0].rule.as_str(), matched[0].kind.as_str()),
            ("submit-valid-build", "githubDispatch")
        );
        let body = crate::test_support::sample("app-ready-for-distribution.json");
        let (matched, _) = compiled.match_event(&Envelope::parse(&body).unwrap());
        assert_eq!(matched[0].rule, "announce-release");
    }

    #[test]
    fn each_matched_target_carries_its_ordering_key_its_own_over_its_rules() {
        use crate::api::{OrderedBy, Ordering, OrderingPolicy};
        let mut r = issue_example();
        r.spec.rules[0].ordering = Some(Ordering {
            key: "$(data.app_name)".into(),
            policy: OrderingPolicy::InOrder,
        });
        let mut second = r.spec.rules[0].targets[0].clone();
        second.ordering = Some(Ordering {
            key: "$(data.app_name)/$(data.build_version)".into(),
            policy: OrderingPolicy::LatestWins,
        });
        r.spec.rules[0].targets.push(second);
        let compiled = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap();
        let body = crate::test_support::sample("build-valid.json");
        let (matched, failures) = compiled.match_event(&Envelope::parse(&body).unwrap());
        assert!(failures.is_empty(), "{failures:?}");
        let ordered: Vec<_> = matched.iter().map(|m| m.ordering.clone()).collect();
        assert_eq!(
            ordered,
            [
                Some(OrderedBy {
                    key: "Markdown Email".into(),
                    policy: OrderingPolicy::InOrder
                }),
                Some(OrderedBy {
                    key: "Markdown Email/456".into(),
                    policy: OrderingPolicy::LatestWins
                }),
            ]
        );
        // Another rule declares none: as before.
        let body = crate::test_support::sample("app-ready-for-sale.json");
        let (matched, _) = compiled.match_event(&Envelope::parse(&body).unwrap());
        assert_eq!(matched[0].ordering, None);
    }

    #[test]
    fn standard_webhooks_routes_need_whsec_secrets_and_keep_their_decoded_keys() {
        let mut r = issue_example();
        r.spec.signature_format = SignatureFormat::StandardWebhooks;
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(
            err.message
                .contains("statused-webhook key secret is not a Standard Webhooks secret")
                && !err.message.contains("statused-test-secret"),
            "{}",
            err.message
        );
        let secrets =
            all_secrets().with("statused-webhook", &[("secret", "whsec_c2lnbmluZy1rZXk=")]);
        let compiled = compile_route(&r, &secrets, &BTreeSet::new()).unwrap();
        assert_eq!(compiled.signature, signature::Format::StandardWebhooks);
        assert_eq!(compiled.signing_keys[0].as_bytes(), b"signing-key");
    }

    #[test]
    fn app_store_connect_routes_verify_apples_way_and_take_no_signature_format() {
        let mut r = issue_example();
        r.spec.source = EventSource::AppStoreConnect;
        let compiled = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap();
        assert_eq!(compiled.signature, signature::Format::AppStoreConnect);
        assert_eq!(compiled.signing_keys[0].as_bytes(), b"statused-test-secret");
        r.spec.signature_format = SignatureFormat::StandardWebhooks;
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(
            err.message.contains("remove signatureFormat"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_signing_secret_is_secret_not_found() {
        let secrets = SecretSet::new("mobile-ci").with("github-token", &[("token", "x")]);
        let err = compile_route(&issue_example(), &secrets, &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::SecretNotFound);
        assert_eq!(err.message, "Secret mobile-ci/statused-webhook not found");
    }

    #[test]
    fn cel_compile_errors_surface_as_invalid_expression() {
        let mut r = issue_example();
        r.spec.rules[1].match_.expression = Some("data.version.startsWith(".into());
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidExpression);
        assert!(
            err.message.starts_with("spec.rules[1].match.expression"),
            "{}",
            err.message
        );
    }

    /// An expression that costs between a third and a half of the budget (see cost.rs): two
    /// fit, three do not.
    fn near_half() -> String {
        let list: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        format!("data.l.exists(x, [{}].exists(y, y == x))", list.join(","))
    }

    #[test]
    fn a_routes_match_expressions_are_bounded_together() {
        let mut r = issue_example();
        r.spec.rules[0].match_.expression = Some(near_half());
        r.spec.rules[1].match_.expression = Some(near_half());
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
        let mut third = r.spec.rules[1].clone();
        third.name = "third".into();
        r.spec.rules.push(third);
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidExpression);
        assert!(
            err.message.starts_with("spec.rules[2].match.expression")
                && err.message.contains("together are too costly"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_route_orders_at_most_its_most_targets() {
        let mut r = issue_example();
        let mut rule = r.spec.rules[0].clone();
        let target = rule.targets[0].clone();
        rule.targets = vec![target; MAX_ORDERED_TARGETS + 1];
        rule.ordering = Some(crate::api::Ordering {
            key: "$(data.app_name)".into(),
            policy: crate::api::OrderingPolicy::LatestWins,
        });
        r.spec.rules = vec![rule.clone()];
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(
            err.message
                .contains("orders 3 targets up to this rule; at most 2"),
            "{}",
            err.message
        );
        rule.targets.pop();
        r.spec.rules = vec![rule];
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
    }

    #[test]
    fn ordering_keys_are_bounded_with_the_match_expressions() {
        let mut r = issue_example();
        r.spec.rules[0].match_.expression = Some(near_half());
        let key = |key: String| crate::api::Ordering {
            key,
            policy: crate::api::OrderingPolicy::InOrder,
        };
        r.spec.rules[1].ordering = Some(key("$(data.app_name)".into()));
        let compiled = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap();
        assert!(compiled.rules[1].ordering.iter().all(Option::is_some));
        assert!(compiled.rules[0].ordering.iter().all(Option::is_none));
        // Keys are rendered with the match expressions, in one evaluation per event.
        r.spec.rules[1].ordering = Some(key(format!("$(string({}))", near_half())));
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
        r.spec.rules[0].targets[0].ordering = Some(key(format!("$(string({}))", near_half())));
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidExpression);
        assert!(
            err.message.starts_with("spec.rules[1].ordering.key")
                && err.message.contains("together are too costly"),
            "{}",
            err.message
        );
        r.spec.rules[1].targets[0].ordering = Some(key("$(data.app_name".into()));
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert!(
            err.message
                .starts_with("spec.rules[1].targets[0].ordering.key"),
            "{}",
            err.message
        );
    }

    #[test]
    fn one_targets_templates_are_bounded_together() {
        let templated = |n: usize| {
            let body: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| {
                    (
                        format!("k{i}"),
                        format!("$(string({}))", near_half()).into(),
                    )
                })
                .collect();
            route("mobile-ci", "releases")
                .rule(rule("a").target(kind(json!({"webhook": {
                    "urlSecretRef": {"name": "chat-hook", "key": "url"}, "body": body}}))))
                .build()
        };
        assert!(compile_route(&templated(2), &all_secrets(), &BTreeSet::new()).is_ok());
        let err = compile_route(&templated(3), &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplate);
        assert!(
            err.message.starts_with("spec.rules[0].targets[0]")
                && err.message.contains("together are too costly"),
            "{}",
            err.message
        );
    }

    #[test]
    fn all_the_targets_of_a_route_are_bounded_together() {
        // `n` targets, in rules of at most MAX_TARGETS_PER_RULE: the bound is the route's.
        let with_targets = |n: usize| {
            let mut b = route("mobile-ci", "releases");
            for first in (0..n).step_by(MAX_TARGETS_PER_RULE) {
                let mut r = rule(&format!("r{first}"));
                for _ in first..n.min(first + MAX_TARGETS_PER_RULE) {
                    r = r.target(kind(json!({"webhook": {
                        "urlSecretRef": {"name": "chat-hook", "key": "url"},
                        "body": {"k": format!("$(string({}))", near_half())}}})));
                }
                b = b.rule(r);
            }
            b.build()
        };
        assert!(compile_route(&with_targets(10), &all_secrets(), &BTreeSet::new()).is_ok());
        let err = compile_route(&with_targets(11), &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplate);
        assert!(
            err.message.contains(&format!(
                "at most {} for one delivery",
                cost::ROUTE_RENDER_UNITS
            )),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_issues_hostile_expression_makes_the_route_not_ready_saying_why() {
        let mut r = issue_example();
        r.spec.rules[0].match_.expression =
            Some("data.l.map(x, data.l.map(y, y)).size() > 0".into());
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidExpression);
        assert!(
            err.message.contains("is too complex: its worst case is")
                && err.message.contains("256 items per list"),
            "{}",
            err.message
        );
    }

    /// The error `r` compiles to, which must be an invalid spec.
    fn invalid_spec(r: &StatusedRoute) -> String {
        let err = compile_route(r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec, "{}", err.message);
        err.message
    }

    #[test]
    fn more_signing_secrets_than_the_limit_are_refused_before_any_is_read() {
        let mut r = issue_example();
        r.spec.signing_secrets = vec![r.spec.signing_secrets[0].clone(); MAX_SIGNING_SECRETS];
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
        // The fifth names a Secret that does not exist: the count is what is refused.
        r.spec
            .signing_secrets
            .push(crate::api::fixtures::secret("absent"));
        assert_eq!(
            invalid_spec(&r),
            "spec.signingSecrets has 5 entries; at most 4 are allowed"
        );
    }

    #[test]
    fn more_rules_than_the_limit_are_refused() {
        let mut r = issue_example();
        while r.spec.rules.len() < MAX_RULES {
            let mut next = r.spec.rules[0].clone();
            next.name = format!("rule-{}", r.spec.rules.len());
            r.spec.rules.push(next);
        }
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
        let mut next = r.spec.rules[0].clone();
        next.name = "one-too-many".into();
        r.spec.rules.push(next);
        assert_eq!(
            invalid_spec(&r),
            "spec.rules has 33 entries; at most 32 are allowed"
        );
    }

    #[test]
    fn more_targets_in_a_rule_than_the_limit_are_refused() {
        let mut r = issue_example();
        let target = r.spec.rules[1].targets[0].clone();
        r.spec.rules[1].targets = vec![target.clone(); MAX_TARGETS_PER_RULE];
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
        r.spec.rules[1].targets.push(target);
        assert_eq!(
            invalid_spec(&r),
            "spec.rules[1].targets has 9 entries; at most 8 are allowed"
        );
    }

    #[test]
    fn more_match_values_than_the_limit_are_refused() {
        let values = |n: usize| -> Vec<String> { (0..n).map(|i| format!("v{i}")).collect() };
        let mut r = issue_example();
        r.spec.rules[0].match_.apps = values(MAX_MATCH_VALUES);
        r.spec.rules[0].match_.types = values(MAX_MATCH_VALUES);
        r.spec.rules[0].match_.statuses = values(MAX_MATCH_VALUES);
        assert!(compile_route(&r, &all_secrets(), &BTreeSet::new()).is_ok());
        r.spec.rules[0].match_.statuses = values(MAX_MATCH_VALUES + 1);
        assert_eq!(
            invalid_spec(&r),
            "spec.rules[0].match.statuses has 65 entries; at most 64 are allowed"
        );
    }

    #[test]
    fn a_kinds_own_bounds_name_the_field_in_the_route() {
        let headers: serde_json::Map<String, serde_json::Value> =
            (0..=32).map(|i| (format!("X-H{i}"), "v".into())).collect();
        let r = route("mobile-ci", "releases")
            .rule(rule("a").target(kind(json!({"webhook": {
                "urlSecretRef": {"name": "chat-hook", "key": "url"}, "headers": headers}}))))
            .build();
        let err = compile_route(&r, &all_secrets(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTarget);
        assert_eq!(
            err.message,
            "spec.rules[0].targets[0].webhook.headers has 33 entries; at most 32 are allowed"
        );
    }

    #[test]
    fn duplicate_rule_names_are_rejected() {
        let mut r = issue_example();
        r.spec.rules[1].name = r.spec.rules[0].name.clone();
        assert_eq!(
            compile_route(&r, &all_secrets(), &BTreeSet::new())
                .unwrap_err()
                .reason,
            Reason::InvalidSpec
        );
    }

    #[test]
    fn destination_limits_apply_to_http_kinds_within_their_range() {
        let compile = |t: serde_json::Value| {
            let t: Target = serde_json::from_value(t).unwrap();
            compile_target(&Field::new("t"), &t, &SecretSet::new("ns"))
        };
        let ok = compile(json!({"maxConcurrent": 2, "ratePerMinute": 30,
                                 "webhook": {"url": "http://127.0.0.1:1/"}}))
        .unwrap();
        assert_eq!(
            ok.limits,
            DestinationLimits {
                max_concurrent: Some(2),
                per_minute: Some(30)
            }
        );
        let err = compile(json!({"ratePerMinute": 0, "webhook": {"url": "http://127.0.0.1:1/"}}))
            .err()
            .unwrap();
        assert!(
            err.message
                .starts_with("t.ratePerMinute: must be between 1 and 6000"),
            "{}",
            err.message
        );
        let err = compile(json!({"maxConcurrent": 1, "tekton": {"pipelineRef": {"name": "p"}}}))
            .err()
            .unwrap();
        assert!(
            err.message
                .starts_with("t.maxConcurrent: applies to HTTP kinds only"),
            "{}",
            err.message
        );
    }

    #[test]
    fn on_uncertain_applies_to_http_kinds_only() {
        let t: Target = serde_json::from_value(json!({
            "onUncertain": "fail", "tekton": {"pipelineRef": {"name": "p"}}
        }))
        .unwrap();
        let err = compile_target(&Field::new("t"), &t, &SecretSet::new("ns")).unwrap_err();
        assert_eq!(err.message.split(':').next(), Some("t.onUncertain"));
    }

    #[test]
    fn follow_applies_to_kinds_that_start_a_run_within_its_bounds() {
        let target = |t: serde_json::Value| -> Target { serde_json::from_value(t).unwrap() };
        let secrets = SecretSet::new("ns");
        let webhook = target(json!({"follow": {}, "webhook": {"url": "https://ci.example/hook"}}));
        let err = compile_target(&Field::new("t"), &webhook, &secrets).unwrap_err();
        assert!(
            err.message
                .starts_with("t.follow: only tekton, argoWorkflow and githubDispatch"),
            "{}",
            err.message
        );

        let short = target(
            json!({"follow": {"timeoutSeconds": 5}, "tekton": {"pipelineRef": {"name": "p"}}}),
        );
        let err = compile_target(&Field::new("t"), &short, &secrets).unwrap_err();
        assert_eq!(
            err.message,
            "t.follow.timeoutSeconds: must be between 60 and 604800"
        );

        let default = target(json!({"follow": {}, "tekton": {"pipelineRef": {"name": "p"}}}));
        let compiled = compile_target(&Field::new("t"), &default, &secrets).unwrap();
        assert_eq!(
            compiled.follow,
            Some(Duration::from_secs(DEFAULT_FOLLOW_SECONDS.into()))
        );
        let unfollowed = target(json!({"tekton": {"pipelineRef": {"name": "p"}}}));
        assert_eq!(
            compile_target(&Field::new("t"), &unfollowed, &secrets)
                .unwrap()
                .follow,
            None
        );
    }

    #[test]
    fn after_names_another_rule_that_waits_for_nothing_with_an_outcome() {
        let compile = |rules: serde_json::Value| {
            let mut r = issue_example();
            r.spec.rules = serde_json::from_value(rules).unwrap();
            compile_route(&r, &all_secrets(), &BTreeSet::new())
        };
        let hook = json!([{"webhook": {"url": "https://chat.example/hook"}}]);
        let release = json!({"name": "release", "targets": hook});
        let after = |rule: &str, phases: serde_json::Value| json!({"name": "tell", "after": {"rule": rule, "phases": phases}, "targets": hook});
        let compiled = compile(json!([release, after("release", json!(["Failed"]))])).unwrap();
        // Its targets are matched with the rule it waits for, carrying its `after`.
        let body = crate::test_support::sample("build-valid.json");
        let (matched, _) = compiled.match_event(&Envelope::parse(&body).unwrap());
        let rules: Vec<_> = matched
            .iter()
            .map(|m| (m.rule.as_str(), m.after.is_some()))
            .collect();
        assert_eq!(rules, [("release", false), ("tell", true)]);
        let mut unmatched = release.clone();
        unmatched["match"] = json!({"types": ["com.statused.nothing"]});
        let compiled = compile(json!([unmatched, after("release", json!(["Failed"]))])).unwrap();
        let (matched, _) = compiled.match_event(&Envelope::parse(&body).unwrap());
        assert!(
            matched.is_empty(),
            "not without the rule it waits for: {matched:?}"
        );
        let message = |rules| compile(rules).map(|_| ()).unwrap_err().message;
        assert_eq!(
            message(json!([release, after("nope", json!(["Failed"]))])),
            "spec.rules[1].after.rule: no rule of this route is named \"nope\""
        );
        assert_eq!(
            message(json!([after("tell", json!(["Failed"]))])),
            "spec.rules[0].after.rule: a rule cannot wait for its own targets"
        );
        assert!(
            message(json!([release, after("release", json!(["Running"]))]))
                .starts_with("spec.rules[1].after.phases: name at least one outcome")
        );
        let mut chained = after("tell", json!(["Failed"]));
        chained["name"] = "again".into();
        assert!(
            message(json!([
                release,
                after("release", json!(["Failed"])),
                chained
            ]))
            .contains("waits for another rule itself")
        );
    }

    #[test]
    fn cancel_superseded_needs_a_latest_wins_ordering() {
        let compile = |target: serde_json::Value| {
            let mut r = issue_example();
            r.spec.rules =
                serde_json::from_value(json!([{"name": "release", "targets": [target]}])).unwrap();
            compile_route(&r, &all_secrets(), &BTreeSet::new()).map(|_| ())
        };
        let run =
            json!({"follow": {"cancelSuperseded": true}, "tekton": {"pipelineRef": {"name": "p"}}});
        assert_eq!(
            compile(run.clone()).unwrap_err().message,
            "spec.rules[0].targets[0].follow.cancelSuperseded: needs a latestWins ordering (the target's or the rule's): it is what says which run supersedes which"
        );
        let mut in_order = run.clone();
        in_order["ordering"] = json!({"key": "$(data.app_name)", "policy": "inOrder"});
        assert!(compile(in_order).is_err());
        let mut latest = run;
        latest["ordering"] = json!({"key": "$(data.app_name)", "policy": "latestWins"});
        assert!(compile(latest).is_ok());
    }
}
