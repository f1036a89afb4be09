//! `jenkins`: the Generic Webhook Trigger plugin, `POST {baseURL}/generic-webhook-trigger/invoke`
//! with the job's token in the `token` header (never the query string, so it stays out of
//! access logs) and a JSON body the job's variables are extracted from.

use reqwest::Url;
use reqwest::header::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fields::EventBody;
use super::fields::{Field, base_url, credential_text, join_url, token};
use super::kind::{Kind, Trigger};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, token_post};
use crate::route::error::CompileError;
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JenkinsTarget {
    /// Jenkins' base URL, e.g. `https://jenkins.example.com` (or `.../jenkins`).
    #[serde(rename = "baseURL")]
    pub base_url: String,
    /// Secret key holding the token configured in the job's Generic Webhook Trigger
    /// (key defaults to `token`).
    pub token_secret_ref: SecretKeySelector,
    /// JSON body; strings are templated. Defaults to the whole CloudEvent.
    #[serde(default)]
    #[schemars(schema_with = "crate::api::schema::any_json")]
    pub body: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct Jenkins {
    url: Url,
    token: SecretValue,
    body: EventBody,
}

impl Kind for JenkinsTarget {
    fn name(&self) -> &'static str {
        "jenkins"
    }

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        let base = base_url(&field.at("baseURL"), Some(&spec.base_url), "")?;
        let body = EventBody::compile(&field.at("body"), spec.body.as_ref())?;
        Ok(Trigger::http(Jenkins {
            url: join_url(
                &field.at("baseURL"),
                &base,
                "/generic-webhook-trigger/invoke",
            )?,
            token: token(field, &spec.token_secret_ref, secrets)?,
            body,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.token_secret_ref]
    }
}

impl HttpTarget for Jenkins {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let body = self.body.render(ctx.scope)?;
        let token = credential_text(&self.token);
        token_post(
            ctx,
            &self.url,
            HeaderName::from_static("token"),
            token,
            &body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::sent;
    use serde_json::json;

    #[test]
    fn token_travels_in_a_header_not_the_query() {
        let (_t, req) = sent::<JenkinsTarget>(
            json!({
                "baseURL": "https://ci.example.com/jenkins/", "tokenSecretRef": {"name": "j"},
                "body": {"app": "$(data.app_name)", "status": "$(data.status)"}
            }),
            &SecretSet::new("ns").with("j", &[("token", "ios-release-token")]),
        );
        assert_eq!(
            req.url.as_str(),
            "https://ci.example.com/jenkins/generic-webhook-trigger/invoke"
        );
        assert_eq!(req.url.query(), None);
        assert_eq!(req.headers["token"], "ios-release-token");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
            json!({"app": "Markdown Email", "status": "Valid"})
        );
    }
}
