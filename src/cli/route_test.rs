//! `statused-operator route test ROUTE.yaml EVENT.json`: which rules an event matches and the
//! exact requests (or objects) each target would send, without sending anything. Secrets come
//! from the same YAML (or `--secrets`); their values are shown as `[redacted]`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Deserialize;

use crate::api::StatusedRoute;
use crate::event::EnvelopeError;
use crate::expr::Scope;
use crate::naming::delivery_name;
use crate::route::compile::compile_route;
use crate::route::plan::{PlanInput, Planned, plan};
use crate::secrets::{SecretSet, SecretValue};
use crate::targets::error::CompileError;
use crate::targets::request::RenderContext;

/// Why a manifest file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not YAML")]
    NotYaml(#[source] serde_yaml::Error),
    #[error("invalid StatusedRoute")]
    InvalidRoute(#[source] serde_yaml::Error),
    #[error("invalid Secret")]
    InvalidSecret(#[source] serde_yaml::Error),
}

/// Why no report could be made for a route and an event.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("route {route} is not Ready ({}): {}", .error.reason.as_str(), .error.message)]
    RouteNotReady { route: String, error: CompileError },
    #[error("the event is not valid")]
    InvalidEvent(#[from] EnvelopeError),
}

/// The routes and Secrets of one or more multi-document YAML files.
#[derive(Debug, Default)]
pub struct Manifests {
    pub routes: Vec<StatusedRoute>,
    pub secrets: Vec<Secret>,
}

impl Manifests {
    pub fn load(&mut self, text: &str) -> Result<(), LoadError> {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc).map_err(LoadError::NotYaml)?;
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("StatusedRoute") => self
                    .routes
                    .push(serde_yaml::from_value(value).map_err(LoadError::InvalidRoute)?),
                Some("Secret") => self
                    .secrets
                    .push(serde_yaml::from_value(value).map_err(LoadError::InvalidSecret)?),
                _ => {}
            }
        }
        Ok(())
    }

    /// The Secrets as the route in `namespace` would see them (`data` and `stringData`).
    pub fn secret_set(&self, namespace: &str) -> SecretSet {
        let mut set = SecretSet::new(namespace);
        for s in &self.secrets {
            if s.namespace().as_deref().unwrap_or("default") != namespace {
                continue;
            }
            let mut data: std::collections::BTreeMap<String, SecretValue> = s
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, SecretValue::new(v.0)))
                .collect();
            for (k, v) in s.string_data.clone().unwrap_or_default() {
                data.insert(k, SecretValue::new(v));
            }
            set.insert(s.name_any(), data);
        }
        set
    }
}

/// The report for one route and one event body. Pure.
pub fn report(
    route: &StatusedRoute,
    secrets: &SecretSet,
    body: &[u8],
) -> Result<String, ReportError> {
    let ns = route.namespace().unwrap_or_else(|| "default".into());
    let name = route.name_any();
    let compiled = compile_route(route, secrets, &BTreeSet::new()).map_err(|error| {
        ReportError::RouteNotReady {
            route: format!("{ns}/{name}"),
            error,
        }
    })?;
    let Some(envelope) = compiled.read_event(body)? else {
        return Ok(format!(
            "route {ns}/{name}: Ready\nping from App Store Connect: the receiver would answer 200 and trigger nothing\n"
        ));
    };
    let (matched, failures) = compiled.match_event(&envelope);
    let mut out = String::new();
    let _ = writeln!(out, "route {ns}/{name}: Ready");
    let _ = writeln!(out, "event {} ({})", envelope.id, envelope.type_);
    for f in &failures {
        let skipped = if f.skipped { " skipped" } else { "" };
        let _ = writeln!(out, "rule {}{skipped}: {}", f.rule, f.error);
    }
    if matched.is_empty() {
        let _ = writeln!(
            out,
            "no rule matches: the receiver would answer 200 and trigger nothing"
        );
        return Ok(out);
    }
    let event = envelope.to_value();
    let scope = Scope::new(&event, &ns, &name);
    let delivery = delivery_name(&name, &envelope.id);
    let _ = writeln!(out, "delivery {delivery}");
    let input = PlanInput {
        namespace: &ns,
        route: &name,
        delivery: &delivery,
        event_id: &envelope.id,
        event_type: &envelope.type_,
        data: &event["data"],
        round: 0,
    };
    for m in &matched {
        let _ = writeln!(out, "\nrule {}, target {} ({}):", m.rule, m.target, m.kind);
        if let Some(o) = &m.ordering {
            let _ = writeln!(out, "  ordered: {}, key {:?}", o.policy.as_str(), o.key);
        }
        if let Some(f) = &m.follow {
            let _ = writeln!(
                out,
                "  its run followed to its end (at most {} s)",
                f.timeout_seconds
            );
        }
        // A rule with `after`: shown as sent for the first outcome it names.
        let after_scope = m.after.as_ref().map(|a| {
            let phases: Vec<&str> = a.phases.iter().map(|p| p.as_str()).collect();
            let _ = writeln!(
                out,
                "  sent only after rule {} ends {} (shown as if {}; otherwise Skipped)",
                a.rule,
                phases.join(" or "),
                phases[0]
            );
            Scope::new(&event, &ns, &name).with_run(&serde_json::json!({
                "rule": a.rule, "phase": phases[0], "name": "[the run's name]",
                "message": "[the run's message]", "error": "[why it ended]",
            }))
        });
        let render = RenderContext {
            scope: after_scope.as_ref().unwrap_or(&scope),
            event_id: &envelope.id,
            round: 0,
        };
        // The executor's own plan: what is printed is what it would send.
        match plan(&compiled, &input, &render, m) {
            Planned::Http { request: req, .. } => {
                let _ = writeln!(out, "  {} {}", req.method, req.redact(req.url.as_str()));
                for (k, v) in &req.headers {
                    let shown = if v.is_sensitive() {
                        "[redacted]".to_string()
                    } else {
                        req.redact(v.to_str().unwrap_or("<binary>"))
                    };
                    let _ = writeln!(out, "  {k}: {shown}");
                }
                if req.auth.is_some() {
                    let _ = writeln!(
                        out,
                        "  authorization: Bearer [GitHub App installation token]"
                    );
                }
                let body = String::from_utf8_lossy(&req.body);
                let pretty = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| body.to_string());
                for line in req.redact(&pretty).lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            Planned::Kube {
                target,
                object,
                identity,
            } => {
                let _ = writeln!(
                    out,
                    "  create {} {}/{}:",
                    target.api().kind,
                    ns,
                    identity.name
                );
                let yaml = serde_yaml::to_string(&object).unwrap_or_default();
                for line in yaml.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
            Planned::Unbuildable(e) => {
                let _ = writeln!(out, "  would fail: {e}");
            }
            Planned::Gone(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sample;

    fn manifests(file: &str) -> Manifests {
        let mut m = Manifests::default();
        let text =
            std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        m.load(&text.replace("SINK_URL", "http://127.0.0.1:1"))
            .unwrap();
        m
    }

    #[test]
    fn shows_the_exact_request_with_secrets_redacted() {
        let m = manifests("demo-route.yaml");
        let route = &m.routes[0];
        let out = report(route, &m.secret_set("default"), &sample("build-valid.json")).unwrap();
        assert!(
            out.contains("rule submit-valid-build, target 0 (githubDispatch):"),
            "{out}"
        );
        assert!(
            out.contains("  POST http://127.0.0.1:1/repos/acme/ios-app/dispatches"),
            "{out}"
        );
        assert!(out.contains("  authorization: [redacted]"), "{out}");
        assert!(out.contains(r#""build_version": "456""#), "{out}");
        assert!(!out.contains("ghp_demo_token"), "{out}");
    }

    #[test]
    fn shows_a_followed_run_and_what_is_sent_after_it() {
        let m = manifests("release-followed.yaml");
        let out = report(
            &m.routes[0],
            &m.secret_set("mobile-ci"),
            &sample("build-valid.json"),
        )
        .unwrap();
        assert!(
            out.contains("  its run followed to its end (at most 7200 s)"),
            "{out}"
        );
        assert!(
            out.contains("  sent only after rule release ends Failed or TimedOut or Cancelled (shown as if Failed; otherwise Skipped)"),
            "{out}"
        );
        assert!(
            out.contains("\"text\": \"Release of Markdown Email 1.2.3 (456): Failed, PipelineRun [the run's name]: [the run's message]\""),
            "{out}"
        );
        assert!(out.contains("did not run: [why it ended]"), "{out}");
    }

    #[test]
    fn shows_the_object_an_in_cluster_target_creates() {
        let m = manifests("tekton.yaml");
        let mut event: serde_json::Value =
            serde_json::from_slice(&sample("build-valid.json")).unwrap();
        event["data"]["version"] = "2.0.1".into();
        let out = report(
            &m.routes[0],
            &m.secret_set("mobile-ci"),
            &serde_json::to_vec(&event).unwrap(),
        )
        .unwrap();
        assert!(
            out.contains("create PipelineRun mobile-ci/ios-release-"),
            "{out}"
        );
        assert!(out.contains("- v2.0.1"), "{out}");
    }

    #[test]
    fn says_when_nothing_matches_or_the_route_is_not_ready() {
        let m = manifests("demo-route.yaml");
        let out = report(
            &m.routes[0],
            &m.secret_set("default"),
            &sample("account-agreement.json"),
        )
        .unwrap();
        assert!(out.contains("no rule matches"), "{out}");
        let err = report(
            &m.routes[0],
            &SecretSet::new("default"),
            &sample("build-valid.json"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("SecretNotFound"), "{err}");
        assert!(
            matches!(&err, ReportError::RouteNotReady { error, .. }
                if error.reason == crate::conditions::Reason::SecretNotFound),
            "{err:?}"
        );
    }
}
