//! `launchdarkly`: turn a feature flag on or off in one environment with a semantic patch,
//! `PATCH {baseURL}/api/v2/flags/{project}/{flag}` with
//! `Content-Type: application/json; domain-model=launchdarkly.semanticpatch`,
//! `Authorization: <access token>` (no `Bearer`), `LD-API-Version: 20240415` and
//! `{"environmentKey", "instructions": [{"kind": "turnFlagOn" | "turnFlagOff"}], "comment"}`
//! (<https://launchdarkly.com/docs/api/feature-flags/patch-feature-flag>,
//! <https://launchdarkly.com/docs/api>). Idempotent: an instruction for the state a flag is
//! already in does nothing. 200 on success; 409 (a concurrent change) and 429 are retried.

use reqwest::Method;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::json;

use super::error::CompileError;
use super::fields::{
    Choice, Field, base_url, compile_opt, credential, credential_text, join_url, render_opt,
    required,
};
use super::kind::{Kind, Trigger};
use super::message::default_message;
use super::outcome::Class;
use super::request::{
    HttpRequest, HttpTarget, RenderContext, RenderError, base_headers, sensitive,
};
use crate::expr::Template;
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

pub const DEFAULT_BASE_URL: &str = "https://app.launchdarkly.com";
/// The REST API version asked for (LaunchDarkly recommends setting it explicitly).
pub const API_VERSION: &str = "20240415";
/// The first is the default.
const ACTIONS: &[&str] = &["off", "on"];

spec! {
pub struct LaunchdarklyTarget {
    /// Secret key holding an API access token with writer rights (key defaults to
    /// `access-token`).
    pub access_token_secret_ref: SecretKeySelector,
    /// The project key.
    pub project: String,
    /// The flag key.
    pub flag: String,
    /// The environment key, e.g. `production`.
    pub environment: String,
    /// `on` or `off` (default `off`: flags off while an app is in review); templated.
    pub action: Option<String>,
    /// Shown in the flag's history; templated (default: names the event).
    pub comment: Option<String>,
    /// For the EU instance (`https://app.eu.launchdarkly.com`), tests and proxies.
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}
}

#[derive(Debug)]
pub struct Launchdarkly {
    url: Url,
    token: SecretValue,
    environment: String,
    action: Choice,
    comment: Option<Template>,
}

/// A path segment of a project or flag key, which LaunchDarkly limits to these characters.
fn key(field: &Field, value: &str) -> Result<String, CompileError> {
    let value = required(field, value.trim())?;
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(value.to_string())
    } else {
        Err(CompileError::invalid(
            field,
            format!("{value:?} is not a key (letters, digits, '-', '_', '.')"),
        ))
    }
}

impl Kind for LaunchdarklyTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let base = base_url(
            &field.at("baseURL"),
            self.base_url.as_deref(),
            DEFAULT_BASE_URL,
        )?;
        let project = key(&field.at("project"), &self.project)?;
        let flag = key(&field.at("flag"), &self.flag)?;
        Ok(Trigger::http(Launchdarkly {
            url: join_url(
                &field.at("flag"),
                &base,
                &format!("/api/v2/flags/{project}/{flag}"),
            )?,
            token: credential(
                &field.at("accessTokenSecretRef"),
                &self.access_token_secret_ref,
                "access-token",
                secrets,
            )?,
            environment: key(&field.at("environment"), &self.environment)?,
            action: Choice::compile(&field.at("action"), self.action.as_deref(), ACTIONS)?,
            comment: compile_opt(&field.at("comment"), self.comment.as_deref())?,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.access_token_secret_ref]
    }
}

impl HttpTarget for Launchdarkly {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let kind = match self.action.render(ctx.scope)? {
            "on" => "turnFlagOn",
            _ => "turnFlagOff",
        };
        let comment = render_opt(&self.comment, ctx.scope)?.unwrap_or_else(|| {
            let title = default_message(ctx.scope.event()).title;
            format!("statused-operator, event {}: {title}", ctx.event_id)
        });
        let body = json!({
            "environmentKey": self.environment,
            "instructions": [{"kind": kind}],
            "comment": comment,
        });
        let token = credential_text(&self.token);
        let mut headers = base_headers(ctx)?;
        headers.insert(AUTHORIZATION, sensitive(token)?);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; domain-model=launchdarkly.semanticpatch"),
        );
        headers.insert(
            HeaderName::from_static("ld-api-version"),
            HeaderValue::from_static(API_VERSION),
        );
        let mut request = HttpRequest::new(
            Method::PATCH,
            self.url.clone(),
            headers,
            body.to_string().into_bytes(),
        )
        .secret(token);
        request.classify_failure = Some(classify_failure);
        Ok(request)
    }
}

/// "Conflicts with a concurrent API request": LaunchDarkly says to retry a 409.
fn classify_failure(code: u16, _body: &[u8]) -> Option<Class> {
    (code == 409).then_some(Class::Retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::sent;

    fn secrets() -> SecretSet {
        SecretSet::new("ns").with("ld", &[("access-token", "api-0123-token")])
    }

    #[test]
    fn in_review_turns_the_flag_off_with_a_semantic_patch() {
        let (t, req) = sent::<LaunchdarklyTarget>(
            json!({"accessTokenSecretRef": {"name": "ld"}, "project": "mobile", "flag": "new-onboarding",
                   "environment": "production"}),
            &secrets(),
        );
        assert_eq!(req.method, Method::PATCH);
        assert_eq!(
            req.url.as_str(),
            "https://app.launchdarkly.com/api/v2/flags/mobile/new-onboarding"
        );
        assert_eq!(req.headers["authorization"], "api-0123-token");
        assert_eq!(
            req.headers["content-type"],
            "application/json; domain-model=launchdarkly.semanticpatch"
        );
        assert_eq!(req.headers["ld-api-version"], "20240415");
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"environmentKey": "production", "instructions": [{"kind": "turnFlagOff"}],
                   "comment": "statused-operator, event ev-1: ✅ Build 1.2.3 (456) of Markdown Email is valid"})
        );
        let classify = req.classify_failure.unwrap();
        assert_eq!(classify(409, b""), Some(Class::Retry));
        assert_eq!(classify(400, b""), None, "the usual policy otherwise");
        assert!(!format!("{t:?}").contains("api-0123"));
    }

    #[test]
    fn on_is_turn_flag_on_and_keys_are_checked() {
        let (_, req) = sent::<LaunchdarklyTarget>(
            json!({"accessTokenSecretRef": {"name": "ld"}, "project": "mobile", "flag": "f",
                   "environment": "production", "action": "on", "comment": "live: $(data.app_name)"}),
            &secrets(),
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["instructions"], json!([{"kind": "turnFlagOn"}]));
        assert_eq!(body["comment"], "live: Markdown Email");
        let spec: LaunchdarklyTarget = serde_json::from_value(json!({
            "accessTokenSecretRef": {"name": "ld"}, "project": "a/b", "flag": "f", "environment": "e"
        }))
        .unwrap();
        let err = spec.compile(&Field::new("t"), &secrets()).unwrap_err();
        assert!(err.message.starts_with("t.project"), "{}", err.message);
    }
}
