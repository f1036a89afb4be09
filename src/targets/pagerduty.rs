//! `pagerduty`: an incident through PagerDuty's Events API v2,
//! `POST {baseURL}/v2/enqueue` with the integration's `routing_key` in the JSON body (no auth
//! header), `event_action` `trigger` or `resolve` and a `dedup_key`
//! (<https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>,
//! <https://developer.pagerduty.com/docs/events-api-v2/overview/>). A trigger carries
//! `payload.summary` (at most 1,024 characters), `payload.source`, `payload.severity`,
//! `payload.timestamp` and `payload.custom_details`; a resolve only the key. PagerDuty
//! answers 202; 400 is permanent, 429 and 5xx are retried.

use reqwest::Url;
use serde_json::json;

use super::error::CompileError;
use super::fields::{Choice, Field, base_url, compile_opt, incident_key, join_url, render_opt};
use super::kind::{Kind, Trigger};
use super::message::default_message;
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, base_headers};
use crate::expr::Template;
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

pub const DEFAULT_BASE_URL: &str = "https://events.pagerduty.com";
/// PagerDuty's limits on the summary and the dedup key.
const MAX_SUMMARY: usize = 1024;
const MAX_DEDUP_KEY: usize = 255;
const ACTIONS: &[&str] = &["trigger", "resolve"];
const SEVERITIES: &[&str] = &["error", "critical", "warning", "info"];

spec! {
pub struct PagerdutyTarget {
    /// Secret key holding the integration's 32-character routing key (key defaults to
    /// `routing-key`).
    pub routing_key_secret_ref: SecretKeySelector,
    /// `trigger` (default) or `resolve`; templated.
    pub action: Option<String>,
    /// Finds the incident again: a later `resolve` with the same key closes it. Templated;
    /// defaults to `statused/<namespace>/<route>/<app>/<version>`.
    pub dedup_key: Option<String>,
    /// The incident's title; templated (default: the event's headline).
    pub summary: Option<String>,
    /// Where it happened; templated (default: the app's name).
    pub source: Option<String>,
    /// `error` (default), `critical`, `warning` or `info`; templated.
    pub severity: Option<String>,
    /// For tests and proxies (default `https://events.pagerduty.com`).
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}
}

#[derive(Debug)]
pub struct Pagerduty {
    url: Url,
    routing_key: SecretValue,
    action: Choice,
    dedup_key: Option<Template>,
    summary: Option<Template>,
    source: Option<Template>,
    severity: Choice,
}

impl Kind for PagerdutyTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let base = base_url(
            &field.at("baseURL"),
            self.base_url.as_deref(),
            DEFAULT_BASE_URL,
        )?;
        let routing_key = super::fields::credential(
            &field.at("routingKeySecretRef"),
            &self.routing_key_secret_ref,
            "routing-key",
            secrets,
        )?;
        Ok(Trigger::http(Pagerduty {
            url: join_url(&field.at("baseURL"), &base, "/v2/enqueue")?,
            routing_key,
            action: Choice::compile(&field.at("action"), self.action.as_deref(), ACTIONS)?,
            dedup_key: compile_opt(&field.at("dedupKey"), self.dedup_key.as_deref())?,
            summary: compile_opt(&field.at("summary"), self.summary.as_deref())?,
            source: compile_opt(&field.at("source"), self.source.as_deref())?,
            severity: Choice::compile(&field.at("severity"), self.severity.as_deref(), SEVERITIES)?,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.routing_key_secret_ref]
    }
}

impl HttpTarget for Pagerduty {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let scope = ctx.scope;
        let routing_key = super::fields::credential_text(&self.routing_key);
        let action = self.action.render(scope)?;
        let dedup_key = render_opt(&self.dedup_key, scope)?.unwrap_or_else(|| incident_key(scope));
        if dedup_key.is_empty() || dedup_key.chars().count() > MAX_DEDUP_KEY {
            return Err(RenderError::Invalid(format!(
                "dedupKey must have 1 to {MAX_DEDUP_KEY} characters"
            )));
        }
        let mut body =
            json!({"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key});
        if action == "trigger" {
            let event = scope.event();
            let headline = default_message(event);
            let summary = render_opt(&self.summary, scope)?.unwrap_or(headline.title);
            let app = event["data"]["app_name"].as_str().unwrap_or("statused");
            let source = render_opt(&self.source, scope)?.unwrap_or_else(|| app.to_string());
            let mut payload = json!({
                "summary": summary.chars().take(MAX_SUMMARY).collect::<String>(),
                "source": source,
                "severity": self.severity.render(scope)?,
                "custom_details": event["data"],
            });
            if let Some(time) = event["time"].as_str() {
                payload["timestamp"] = time.into();
            }
            body["payload"] = payload;
            body["client"] = "statused-operator".into();
        }
        Ok(HttpRequest::post_json(self.url.clone(), base_headers(ctx)?, &body).secret(routing_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{request_for, sample_with, sent};

    fn secrets() -> SecretSet {
        SecretSet::new("ns").with("pd", &[("routing-key", "R0UT1NGKEY0000000000000000000000")])
    }

    #[test]
    fn a_rejection_triggers_one_incident_keyed_by_route_app_and_version() {
        let (t, req) = sent::<PagerdutyTarget>(
            json!({"routingKeySecretRef": {"name": "pd"}, "severity": "critical",
                   "baseURL": "http://127.0.0.1:9/pd/"}),
            &secrets(),
        );
        assert_eq!(req.method, reqwest::Method::POST);
        assert_eq!(req.url.as_str(), "http://127.0.0.1:9/pd/v2/enqueue");
        assert_eq!(req.headers["content-type"], "application/json");
        assert!(
            req.headers.get("authorization").is_none(),
            "the key is in the body"
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "routing_key": "R0UT1NGKEY0000000000000000000000",
                "event_action": "trigger",
                "dedup_key": "statused/mobile-ci/releases/Markdown Email/1.2.3",
                "payload": {
                    "summary": "✅ Build 1.2.3 (456) of Markdown Email is valid",
                    "source": "Markdown Email",
                    "severity": "critical",
                    "timestamp": body["payload"]["timestamp"],
                    "custom_details": body["payload"]["custom_details"],
                },
                "client": "statused-operator",
            })
        );
        assert_eq!(body["payload"]["custom_details"]["build_version"], "456");
        assert!(body["payload"]["timestamp"].is_string());
        assert_eq!(
            req.redact("key R0UT1NGKEY0000000000000000000000"),
            "key [redacted]"
        );
        assert!(!format!("{t:?}").contains("R0UT1NG"));
    }

    #[test]
    fn a_later_event_resolves_it_with_the_same_key_and_no_payload() {
        let spec: PagerdutyTarget = serde_json::from_value(json!({
            "routingKeySecretRef": {"name": "pd"},
            "action": "$(data.status == 'Ready for Sale' ? 'resolve' : 'trigger')"
        }))
        .unwrap();
        let t = crate::targets::test_support::compile_http(&spec, &secrets()).unwrap();
        let event = sample_with(json!({"status": "Ready for Sale"}));
        let body: serde_json::Value =
            serde_json::from_slice(&request_for(&t, &event).body).unwrap();
        assert_eq!(
            body,
            json!({"routing_key": "R0UT1NGKEY0000000000000000000000", "event_action": "resolve",
                   "dedup_key": "statused/mobile-ci/releases/Markdown Email/1.2.3"})
        );
    }

    #[test]
    fn bad_settings_are_refused_at_reconcile() {
        for (spec, needle) in [
            (
                json!({"routingKeySecretRef": {"name": "pd"}, "action": "page"}),
                "t.pagerduty.action",
            ),
            (
                json!({"routingKeySecretRef": {"name": "pd"}, "severity": "high"}),
                "t.pagerduty.severity",
            ),
            (json!({"routingKeySecretRef": {"name": "absent"}}), "absent"),
        ] {
            let spec: PagerdutyTarget = serde_json::from_value(spec).unwrap();
            let err = spec
                .compile(&Field::new("t").at("pagerduty"), &secrets())
                .unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }
}
