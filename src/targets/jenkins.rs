//! `jenkins`: the Generic Webhook Trigger plugin, `POST {baseURL}/generic-webhook-trigger/invoke`
//! with the job's token in the `token` header (never the query string, so it stays out of
//! access logs) and a JSON body the job's variables are extracted from.

use reqwest::Url;
use reqwest::header::HeaderName;

use super::error::CompileError;
use super::fields::EventBody;
use super::fields::{Field, base_url, credential_text, join_url, token};
use super::kind::{Kind, Trigger};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, token_post};
use super::send::Class;
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

spec! {
pub struct JenkinsTarget {
    /// Jenkins' base URL, e.g. `https://jenkins.example.com` (or `.../jenkins`).
    #[serde(rename = "baseURL")]
    pub base_url: String,
    /// Secret key holding the token configured in the job's Generic Webhook Trigger
    /// (key defaults to `token`).
    pub token_secret_ref: SecretKeySelector,
    /// JSON body; strings are templated. Defaults to the whole CloudEvent.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub body: Option<serde_json::Value>,
}
}

#[derive(Debug)]
pub struct Jenkins {
    url: Url,
    token: SecretValue,
    body: EventBody,
}

impl Kind for JenkinsTarget {

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
        let mut request = token_post(
            ctx,
            &self.url,
            HeaderName::from_static("token"),
            token,
            &body,
        )?;
        request.classify_failure = Some(classify_failure);
        Ok(request)
    }
}

/// The plugin answers 500 "There were errors when triggering jobs." with
/// `{"jobs": {"<job>": {"triggered": true, ...} | "<error>"}}` when one of the jobs its token
/// names failed: retrying would start the jobs that did start again, so it is retried only
/// when none started. (A 500 with another body is retried as any 5xx.)
fn classify_failure(code: u16, body: &[u8]) -> Option<Class> {
    if code != 500 {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let jobs = answer.get("jobs")?.as_object()?;
    let started = jobs
        .values()
        .any(|job| job.get("triggered").and_then(serde_json::Value::as_bool) == Some(true));
    Some(if started {
        Class::Permanent
    } else {
        Class::Retry
    })
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

    #[test]
    fn a_500_after_some_jobs_started_is_not_retried() {
        let partly = br#"{"message": "There were errors when triggering jobs.", "jobs": {
            "ios-release": {"triggered": true, "id": 41, "url": "queue/item/41/"},
            "android-release": "Exception occurred (class java.lang.RuntimeException: boom)"}}"#;
        assert_eq!(classify_failure(500, partly), Some(Class::Permanent));
        let none = br#"{"message": "There were errors when triggering jobs.", "jobs": {
            "ios-release": "Exception occurred (boom)"}}"#;
        assert_eq!(classify_failure(500, none), Some(Class::Retry));
        assert_eq!(
            classify_failure(500, b"<html>Jenkins is restarting</html>"),
            None
        );
        assert_eq!(classify_failure(404, partly), None);
    }
}
