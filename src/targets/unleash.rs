//! `unleash`: enable or disable a feature in one environment through Unleash's Admin API,
//! `POST {url}/api/admin/projects/{project}/features/{feature}/environments/{environment}/on`
//! (or `/off`), empty body, `Authorization: <admin, personal or service-account token>`
//! (<https://docs.getunleash.io/api/toggle-feature-environment-on>,
//! <https://docs.getunleash.io/concepts/api-tokens-and-client-keys>). Answers 200 with no body;
//! the project defaults to `default`.

use reqwest::Method;
use reqwest::header::AUTHORIZATION;

use super::error::CompileError;
use super::fields::{Choice, Field, base_url, credential_text, path_segment, required, token};
use super::kind::{Kind, Trigger};
use super::request::{
    HttpRequest, HttpTarget, RenderContext, RenderError, base_headers, sensitive,
};
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

/// The first is the default: features off while an app is in review.
const ACTIONS: &[&str] = &["off", "on"];

spec! {
pub struct UnleashTarget {
    /// The Unleash server, e.g. `https://unleash.example.com` or
    /// `https://<instance>.getunleash.io`.
    pub url: String,
    /// Secret key holding an admin, personal or service-account token (key defaults to
    /// `token`).
    pub token_secret_ref: SecretKeySelector,
    /// The project (default `default`).
    pub project: Option<String>,
    /// The feature's name.
    pub feature: String,
    /// The environment, e.g. `production`.
    pub environment: String,
    /// `on` or `off` (default `off`); templated.
    pub action: Option<String>,
}
}

#[derive(Debug)]
pub struct Unleash {
    /// `{url}/api/admin/projects/{project}/features/{feature}/environments/{environment}`.
    environment_url: String,
    token: SecretValue,
    action: Choice,
}

impl Kind for UnleashTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let base = base_url(&field.at("url"), Some(&self.url), "")?;
        let segment = |name: &str, value: &str| -> Result<String, CompileError> {
            let value = required(&field.at(name), value.trim())?;
            Ok(path_segment(value))
        };
        let project = segment("project", self.project.as_deref().unwrap_or("default"))?;
        let feature = segment("feature", &self.feature)?;
        let environment = segment("environment", &self.environment)?;
        Ok(Trigger::http(Unleash {
            environment_url: format!(
                "{base}/api/admin/projects/{project}/features/{feature}/environments/{environment}"
            ),
            token: token(field, &self.token_secret_ref, secrets)?,
            action: Choice::compile(&field.at("action"), self.action.as_deref(), ACTIONS)?,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.token_secret_ref]
    }
}

impl HttpTarget for Unleash {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let action = self.action.render(ctx.scope)?;
        let url = reqwest::Url::parse(&format!("{}/{action}", self.environment_url))
            .map_err(|e| RenderError::Invalid(format!("feature URL: {e}")))?;
        let token = credential_text(&self.token);
        let mut headers = base_headers(ctx)?;
        headers.insert(AUTHORIZATION, sensitive(token)?);
        Ok(HttpRequest::new(Method::POST, url, headers, Vec::new()).secret(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::sent;
    use serde_json::json;

    fn secrets() -> SecretSet {
        SecretSet::new("ns").with("unleash", &[("token", "user:abc123-admin-token")])
    }

    #[test]
    fn off_and_on_post_to_the_environment_endpoint_with_no_body() {
        let (t, req) = sent::<UnleashTarget>(
            json!({"url": "https://unleash.example.com/", "tokenSecretRef": {"name": "unleash"},
                   "feature": "new-onboarding", "environment": "production"}),
            &secrets(),
        );
        assert_eq!(req.method, Method::POST);
        assert_eq!(
            req.url.as_str(),
            "https://unleash.example.com/api/admin/projects/default/features/new-onboarding/environments/production/off"
        );
        assert_eq!(req.headers["authorization"], "user:abc123-admin-token");
        assert!(req.body.is_empty());
        assert!(!format!("{t:?}").contains("abc123"));
        let (_, req) = sent::<UnleashTarget>(
            json!({"url": "https://unleash.example.com", "tokenSecretRef": {"name": "unleash"},
                   "project": "mobile", "feature": "f", "environment": "development",
                   "action": "$(data.status == 'Valid' ? 'on' : 'off')"}),
            &secrets(),
        );
        assert_eq!(
            req.url.path(),
            "/api/admin/projects/mobile/features/f/environments/development/on"
        );
    }

    #[test]
    fn an_action_that_renders_to_something_else_fails_the_target() {
        let spec: UnleashTarget = serde_json::from_value(json!({
            "url": "https://u.example.com", "tokenSecretRef": {"name": "unleash"},
            "feature": "f", "environment": "e", "action": "$(data.status)"
        }))
        .unwrap();
        let t = crate::targets::test_support::compile_http(&spec, &secrets()).unwrap();
        let err = crate::targets::test_support::try_request(&t).unwrap_err();
        assert!(err.to_string().contains("not one of off, on"), "{err}");
    }
}
