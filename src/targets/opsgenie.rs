//! `opsgenie`: an alert through Opsgenie's Alert API v2 (<https://docs.opsgenie.com/docs/alert-api>),
//! authenticated with `Authorization: GenieKey <key>` (a key of an API integration).
//! `create`: `POST {baseURL}/v2/alerts` with `message` (at most 130 characters), `alias` (at
//! most 512, the dedup key), `description`, `priority` (`P1`..`P5`), `tags`, `details`,
//! `entity`, `source`. `close`: `POST {baseURL}/v2/alerts/{alias}/close?identifierType=alias`
//! with `source` and `note`. Opsgenie answers 202 and processes the request asynchronously;
//! 429 and 5xx are retried. The US base URL is `https://api.opsgenie.com`, the EU one
//! `https://api.eu.opsgenie.com`.

use reqwest::Url;
use reqwest::header::AUTHORIZATION;
use serde_json::json;

use super::error::CompileError;
use super::fields::{
    Choice, Field, at_most, base_url, compile_opt, credential, credential_text, incident_key,
    path_segment, render_opt,
};
use super::kind::{Kind, Trigger};
use super::message::default_message;
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, token_post};
use crate::expr::Template;
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

pub const US_BASE_URL: &str = "https://api.opsgenie.com";
pub const EU_BASE_URL: &str = "https://api.eu.opsgenie.com";
/// Opsgenie's limits on an alert's message and alias.
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
/// Opsgenie's limit on an alert's tags ("at most 20 tags can be specified for a single
/// alert", docs.opsgenie.com/docs/alerts-and-alert-fields).
pub const MAX_TAGS: usize = 20;
const ACTIONS: &[&str] = &["create", "close"];
const PRIORITIES: &[&str] = &["P3", "P1", "P2", "P4", "P5"];

spec! {
pub struct OpsgenieTarget {
    /// Secret key holding the API integration's key (key defaults to `api-key`).
    pub api_key_secret_ref: SecretKeySelector,
    /// `create` (default) or `close`; templated.
    pub action: Option<String>,
    /// Deduplicates alerts; `close` finds the alert by it. Templated; defaults to
    /// `statused/<namespace>/<route>/<app>/<version>`.
    pub alias: Option<String>,
    /// The alert's message; templated (default: the event's headline). Cut to 130 characters.
    pub message: Option<String>,
    /// Templated (default: the event's own message).
    pub description: Option<String>,
    /// `P1` to `P5` (default `P3`); templated.
    pub priority: Option<String>,
    /// Tags (at most 20, Opsgenie's limit); templated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TAGS))]
    pub tags: Vec<String>,
    /// `us` (default) or `eu`.
    pub region: Option<String>,
    /// Overrides the region's URL (tests, proxies).
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}
}

#[derive(Debug)]
pub struct Opsgenie {
    base: String,
    key: SecretValue,
    action: Choice,
    alias: Option<Template>,
    message: Option<Template>,
    description: Option<Template>,
    priority: Choice,
    tags: Vec<Template>,
}

impl Kind for OpsgenieTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let region = match self.region.as_deref().unwrap_or("us") {
            "us" => US_BASE_URL,
            "eu" => EU_BASE_URL,
            other => {
                return Err(CompileError::invalid(
                    field.at("region"),
                    format!("{other:?} is not us or eu"),
                ));
            }
        };
        at_most(field.at("tags"), self.tags.len(), MAX_TAGS)?;
        let tags = self
            .tags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Template::compile(t)
                    .map_err(|e| CompileError::template(field.at("tags").index(i), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Trigger::http(Opsgenie {
            base: base_url(&field.at("baseURL"), self.base_url.as_deref(), region)?,
            key: credential(
                &field.at("apiKeySecretRef"),
                &self.api_key_secret_ref,
                "api-key",
                secrets,
            )?,
            action: Choice::compile(&field.at("action"), self.action.as_deref(), ACTIONS)?,
            alias: compile_opt(&field.at("alias"), self.alias.as_deref())?,
            message: compile_opt(&field.at("message"), self.message.as_deref())?,
            description: compile_opt(&field.at("description"), self.description.as_deref())?,
            priority: Choice::compile(&field.at("priority"), self.priority.as_deref(), PRIORITIES)?,
            tags,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.api_key_secret_ref]
    }
}

impl HttpTarget for Opsgenie {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let scope = ctx.scope;
        let alias = render_opt(&self.alias, scope)?.unwrap_or_else(|| incident_key(scope));
        if alias.is_empty() || alias.chars().count() > MAX_ALIAS {
            return Err(RenderError::Invalid(format!(
                "alias must have 1 to {MAX_ALIAS} characters"
            )));
        }
        let event = scope.event();
        let headline = default_message(event);
        let (url, body) = match self.action.render(scope)? {
            "close" => {
                let alias = path_segment(&alias);
                let url = format!("{}/v2/alerts/{alias}/close?identifierType=alias", self.base);
                let note = format!("Closed by statused-operator: {}", headline.title);
                (url, json!({"source": "statused-operator", "note": note}))
            }
            _ => {
                let message = render_opt(&self.message, scope)?.unwrap_or(headline.title);
                let tags = self
                    .tags
                    .iter()
                    .map(|t| t.render(scope))
                    .collect::<Result<Vec<_>, _>>()?;
                let details: serde_json::Map<String, serde_json::Value> = event["data"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.into())))
                    .collect();
                let mut body = json!({
                    "message": message.chars().take(MAX_MESSAGE).collect::<String>(),
                    "alias": alias,
                    "priority": self.priority.render(scope)?,
                    "tags": tags,
                    "details": details,
                    "source": "statused-operator",
                });
                if let Some(d) = render_opt(&self.description, scope)?.or(headline.text) {
                    body["description"] = d.into();
                }
                if let Some(app) = event["data"]["app_name"].as_str() {
                    body["entity"] = app.into();
                }
                (format!("{}/v2/alerts", self.base), body)
            }
        };
        let url = Url::parse(&url).map_err(|e| RenderError::Invalid(format!("alert URL: {e}")))?;
        let key = credential_text(&self.key);
        token_post(ctx, &url, AUTHORIZATION, &format!("GenieKey {key}"), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, request_for, sample_with, sent};

    fn secrets() -> SecretSet {
        SecretSet::new("ns").with("og", &[("api-key", "0f0e-genie-key")])
    }

    #[test]
    fn create_is_an_alert_with_genie_key_auth_and_an_alias() {
        let (t, req) = sent::<OpsgenieTarget>(
            json!({"apiKeySecretRef": {"name": "og"}, "priority": "P2", "tags": ["ios", "$(data.status)"],
                   "region": "eu"}),
            &secrets(),
        );
        assert_eq!(req.url.as_str(), "https://api.eu.opsgenie.com/v2/alerts");
        assert_eq!(req.headers["authorization"], "GenieKey 0f0e-genie-key");
        assert!(req.headers["authorization"].is_sensitive());
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body["message"],
            "✅ Build 1.2.3 (456) of Markdown Email is valid"
        );
        assert_eq!(
            body["alias"],
            "statused/mobile-ci/releases/Markdown Email/1.2.3"
        );
        assert_eq!(body["priority"], "P2");
        assert_eq!(body["tags"], json!(["ios", "Valid"]));
        assert_eq!(body["entity"], "Markdown Email");
        assert_eq!(body["source"], "statused-operator");
        assert_eq!(body["details"]["build_version"], "456");
        assert_eq!(req.redact("saw 0f0e-genie-key"), "saw [redacted]");
        assert!(!format!("{t:?}").contains("genie-key"));
    }

    #[test]
    fn more_tags_than_opsgenie_takes_are_refused() {
        let tags = |n: usize| -> Vec<String> { (0..n).map(|i| format!("t{i}")).collect() };
        let spec = |n| -> OpsgenieTarget {
            serde_json::from_value(json!({"apiKeySecretRef": {"name": "og"}, "tags": tags(n)}))
                .unwrap()
        };
        assert!(compile_http(&spec(MAX_TAGS), &secrets()).is_ok());
        let err = compile_http(&spec(MAX_TAGS + 1), &secrets()).unwrap_err();
        assert_eq!(err.message, "t.tags has 21 entries; at most 20 are allowed");
    }

    #[test]
    fn close_finds_the_alert_by_its_alias() {
        let spec: OpsgenieTarget = serde_json::from_value(json!({
            "apiKeySecretRef": {"name": "og"}, "action": "close", "baseURL": "http://127.0.0.1:9/og"
        }))
        .unwrap();
        let t = compile_http(&spec, &secrets()).unwrap();
        let req = request_for(&t, &sample_with(json!({"app_name": "A/B"})));
        assert_eq!(
            req.url.as_str(),
            "http://127.0.0.1:9/og/v2/alerts/statused%2Fmobile-ci%2Freleases%2FA%2FB%2F1.2.3/close?identifierType=alias"
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["source"], "statused-operator");
    }

    #[test]
    fn a_long_message_is_cut_to_opsgenies_limit() {
        let (_, req) = sent::<OpsgenieTarget>(
            json!({"apiKeySecretRef": {"name": "og"}, "message": "x$(data.app_name)".replace('x', &"x".repeat(200))}),
            &secrets(),
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["message"].as_str().unwrap().chars().count(), 130);
    }
}
