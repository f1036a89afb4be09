//! What one matched target does for one event, built without doing it: the exact request,
//! or the exact object with its deterministic identity. Pure: the executor sends what it
//! plans (see `controller/executor/render.rs`), and `statused-operator route test` prints the same plan.

use crate::api::MatchedTarget;
use crate::naming::{IdentityInput, ObjectIdentity};
use crate::route::CompiledRoute;
use crate::targets::kind::Trigger;
use crate::targets::objects::KubeTarget;
use crate::targets::request::{HttpRequest, HttpTarget, RenderContext};

/// The event a plan is for, and the delivery that records it.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub namespace: &'a str,
    pub route: &'a str,
    pub delivery: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub data: &'a serde_json::Value,
    /// The redelivery round (`status.redeliveries`).
    pub round: u32,
}

/// One target's planned work.
pub enum Planned<'r> {
    Http {
        target: &'r dyn HttpTarget,
        request: HttpRequest,
        /// Never call twice, even when an outcome is unknown (`onUncertain: fail`).
        at_most_once: bool,
    },
    Kube {
        target: &'r dyn KubeTarget,
        object: serde_json::Value,
        identity: ObjectIdentity,
    },
    /// The route no longer has this target (edited since the event was accepted): sending
    /// to whatever is at that index now would trigger something the event never matched.
    Gone(String),
    /// The request or object cannot be built for this event (a permanent failure for it).
    Unbuildable(String),
}

/// A plan as it leaves the blocking pool, where it is rendered: the request or object,
/// without the borrowed target ([`attach`] finds it again).
pub enum Rendered {
    Http {
        request: HttpRequest,
        at_most_once: bool,
    },
    Kube {
        object: serde_json::Value,
        identity: ObjectIdentity,
    },
    Gone(String),
    Unbuildable(String),
}

impl Planned<'_> {
    pub fn detach(self) -> Rendered {
        match self {
            Planned::Http {
                request,
                at_most_once,
                ..
            } => Rendered::Http {
                request,
                at_most_once,
            },
            Planned::Kube {
                object, identity, ..
            } => Rendered::Kube { object, identity },
            Planned::Gone(e) => Rendered::Gone(e),
            Planned::Unbuildable(e) => Rendered::Unbuildable(e),
        }
    }
}

/// `rendered` with the target of `route` it was made for.
pub fn attach<'r>(route: &'r CompiledRoute, m: &MatchedTarget, rendered: Rendered) -> Planned<'r> {
    let trigger = route
        .target(&m.rule, m.target)
        .filter(|c| c.kind == m.kind)
        .map(|c| &c.trigger);
    match (rendered, trigger) {
        (
            Rendered::Http {
                request,
                at_most_once,
            },
            Some(Trigger::Http(http)),
        ) => Planned::Http {
            target: http.as_ref(),
            request,
            at_most_once,
        },
        (Rendered::Kube { object, identity }, Some(Trigger::Kube(kube))) => Planned::Kube {
            target: kube.as_ref(),
            object,
            identity,
        },
        (Rendered::Gone(e), _) => Planned::Gone(e),
        (Rendered::Unbuildable(e), _) => Planned::Unbuildable(e),
        (_, _) => Planned::Gone(format!(
            "rule {} target {} ({}) is no longer in the route",
            m.rule, m.target, m.kind
        )),
    }
}

pub fn plan<'r>(
    route: &'r CompiledRoute,
    input: &PlanInput<'_>,
    render: &RenderContext<'_>,
    m: &MatchedTarget,
) -> Planned<'r> {
    let target = route.target(&m.rule, m.target).filter(|c| c.kind == m.kind);
    let Some(compiled) = target else {
        return Planned::Gone(format!(
            "rule {} target {} ({}) is no longer in the route",
            m.rule, m.target, m.kind
        ));
    };
    match &compiled.trigger {
        Trigger::Http(http) => match http.build_request(render) {
            Ok(mut request) => {
                request.timeout = compiled.timeout;
                Planned::Http {
                    target: http.as_ref(),
                    request,
                    at_most_once: compiled.at_most_once,
                }
            }
            Err(e) => Planned::Unbuildable(format!("cannot build request: {e}")),
        },
        Trigger::Kube(kube) => {
            let text = |k: &str| input.data.get(k).and_then(|v| v.as_str());
            let identity = ObjectIdentity::new(&IdentityInput {
                namespace: input.namespace,
                route: input.route,
                rule: &m.rule,
                target: m.target,
                delivery: input.delivery,
                event_id: input.event_id,
                event_type: input.event_type,
                app_name: text("app_name"),
                status: text("status"),
                round: input.round,
            });
            match kube.build_object(render, &identity) {
                Ok(object) => Planned::Kube {
                    target: kube.as_ref(),
                    object,
                    identity,
                },
                Err(e) => Planned::Unbuildable(format!("cannot build request: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::api::fixtures;
    use crate::expr::Scope;
    use crate::route::compile::compile_route;
    use crate::secrets::{SecretSet, SecretValue};

    fn route() -> CompiledRoute {
        let route = fixtures::route("ns", "r")
            .signing(&["hook"])
            .rule(
                fixtures::rule("a")
                    .target(fixtures::kind(serde_json::json!({"webhook": {
                        "url": "http://127.0.0.1:1/x", "body": {"v": "$(data.version)"}}})))
                    .target(fixtures::kind(
                        serde_json::json!({"tekton": {"pipelineRef": {"name": "release"}}}),
                    )),
            )
            .build();
        let mut secrets = SecretSet::new("ns");
        secrets.insert(
            "hook",
            BTreeMap::from([("secret".to_string(), SecretValue::new("s"))]),
        );
        compile_route(&route, &secrets, &BTreeSet::new()).unwrap()
    }

    fn planned(data: serde_json::Value, target: u32, kind: &str) -> String {
        let route = route();
        let event = serde_json::json!({"id": "e1", "type": "t", "source": "s", "data": data});
        let scope = Scope::new(&event, "ns", "r");
        let render = RenderContext {
            scope: &scope,
            event_id: "e1",
            round: 0,
        };
        let input = PlanInput {
            namespace: "ns",
            route: "r",
            delivery: "r-1",
            event_id: "e1",
            event_type: "t",
            data: &event["data"],
            round: 0,
        };
        let m = MatchedTarget {
            rule: "a".into(),
            target,
            kind: kind.into(),
            ordering: None,
            follow: None,
            after: None,
        };
        match plan(&route, &input, &render, &m) {
            Planned::Http { request, .. } => String::from_utf8(request.body).unwrap(),
            Planned::Kube { identity, .. } => format!("object {}", identity.name),
            Planned::Gone(e) => format!("gone: {e}"),
            Planned::Unbuildable(e) => format!("unbuildable: {e}"),
        }
    }

    #[test]
    fn plans_the_exact_request_or_object() {
        let data = serde_json::json!({"version": "1.2"});
        assert_eq!(planned(data.clone(), 0, "webhook"), r#"{"v":"1.2"}"#);
        let object = planned(data, 1, "tekton");
        assert!(object.starts_with("object r-"), "{object}");
    }

    #[test]
    fn a_target_the_route_no_longer_has_is_gone_not_sent_elsewhere() {
        let data = serde_json::json!({"version": "1.2"});
        // Index 1 is a tekton target now; the event matched a webhook there.
        assert!(planned(data.clone(), 1, "webhook").starts_with("gone: "));
        assert!(planned(data, 7, "webhook").starts_with("gone: "));
    }

    #[test]
    fn a_request_that_cannot_be_built_is_a_permanent_failure() {
        let missing = serde_json::json!({});
        assert!(planned(missing, 0, "webhook").starts_with("unbuildable: cannot build request"));
    }
}
