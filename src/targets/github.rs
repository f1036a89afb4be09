//! `githubDispatch`: GitHub Actions `repository_dispatch`
//! (`POST {apiURL}/repos/{owner}/{repo}/dispatches`).

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    CompileError, HttpRequest, HttpTarget, RenderContext, RenderError, base_headers, sensitive,
};
use crate::api::SecretKeySelector;
use crate::expr::{JsonTemplate, Template};
use crate::secrets::{SecretSet, SecretValue};

pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// GitHub rejects a `client_payload` with more top-level properties.
pub const MAX_CLIENT_PAYLOAD_KEYS: usize = 10;
/// GitHub's limit on `event_type`.
pub const MAX_EVENT_TYPE_LEN: usize = 100;
const API_VERSION: &str = "2022-11-28";

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GithubDispatchTarget {
    /// `owner/name` of the repository whose workflows listen for `repository_dispatch`.
    pub repository: String,
    /// The `event_type` the workflow filters on (`on.repository_dispatch.types`). Templated.
    pub event_type: String,
    /// Up to 10 top-level properties, values templated with `$(...)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::any_object")]
    pub client_payload: Option<serde_json::Value>,
    /// Secret key holding a token allowed to dispatch (key defaults to `token`).
    pub token_secret_ref: SecretKeySelector,
    /// API base URL, for GitHub Enterprise Server (`https://ghe.example.com/api/v3`).
    #[serde(default, rename = "apiURL", skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

pub struct GithubDispatch {
    url: Url,
    token: SecretValue,
    event_type: Template,
    client_payload: Option<JsonTemplate>,
}

impl std::fmt::Debug for GithubDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubDispatch")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

pub fn compile(
    field: &str,
    spec: &GithubDispatchTarget,
    secrets: &SecretSet,
) -> Result<GithubDispatch, CompileError> {
    let (owner, repo) = split_repository(&spec.repository).ok_or_else(|| {
        CompileError::invalid(
            &format!("{field}.repository"),
            format!("{:?} is not of the form owner/name", spec.repository),
        )
    })?;
    if spec.event_type.trim().is_empty() {
        return Err(CompileError::invalid(
            &format!("{field}.eventType"),
            "must not be empty",
        ));
    }
    if spec.event_type.len() > MAX_EVENT_TYPE_LEN {
        return Err(CompileError::invalid(
            &format!("{field}.eventType"),
            format!("at most {MAX_EVENT_TYPE_LEN} characters"),
        ));
    }
    let event_type = Template::compile(&spec.event_type)
        .map_err(|e| CompileError::template(&format!("{field}.eventType"), e))?;
    let client_payload = match &spec.client_payload {
        None => None,
        Some(serde_json::Value::Object(map)) if map.len() > MAX_CLIENT_PAYLOAD_KEYS => {
            return Err(CompileError::invalid(
                &format!("{field}.clientPayload"),
                format!(
                    "has {} top-level properties; GitHub accepts at most {MAX_CLIENT_PAYLOAD_KEYS} (nest the rest in an object)",
                    map.len()
                ),
            ));
        }
        Some(v @ serde_json::Value::Object(_)) => Some(
            JsonTemplate::compile(v)
                .map_err(|e| CompileError::template(&format!("{field}.clientPayload"), e))?,
        ),
        Some(_) => {
            return Err(CompileError::invalid(
                &format!("{field}.clientPayload"),
                "must be an object",
            ));
        }
    };
    let base = spec.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
    let base = super::parse_http_url(&format!("{field}.apiURL"), base)?;
    let url = Url::parse(&format!(
        "{}/repos/{owner}/{repo}/dispatches",
        base.as_str().trim_end_matches('/')
    ))
    .map_err(|e| CompileError::invalid(&format!("{field}.repository"), e))?;
    let token = secrets.text(&spec.token_secret_ref, "token")?;
    if token.is_empty() {
        return Err(CompileError::invalid(
            &format!("{field}.tokenSecretRef"),
            "token is empty",
        ));
    }
    Ok(GithubDispatch {
        url,
        token: SecretValue::new(token),
        event_type,
        client_payload,
    })
}

fn split_repository(repository: &str) -> Option<(&str, &str)> {
    let (owner, repo) = repository.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (valid(owner) && valid(repo) && repo != "." && repo != "..").then_some((owner, repo))
}

impl HttpTarget for GithubDispatch {
    fn kind(&self) -> &'static str {
        "githubDispatch"
    }

    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let event_type = self.event_type.render(ctx.scope)?;
        let client_payload = match &self.client_payload {
            Some(t) => t.render(ctx.scope)?,
            None => serde_json::json!({}),
        };
        let body = serde_json::json!({"event_type": event_type, "client_payload": client_payload});
        let mut headers = base_headers(ctx)?;
        let token = std::str::from_utf8(self.token.as_bytes())
            .map_err(|_| RenderError::Invalid("token is not text".into()))?;
        headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            HeaderName::from_static("x-github-api-version"),
            HeaderValue::from_static(API_VERSION),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(HttpRequest {
            method: Method::POST,
            url: self.url.clone(),
            headers,
            body: body.to_string().into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::Reason;
    use crate::expr::Scope;
    use serde_json::json;

    fn spec(payload: serde_json::Value) -> GithubDispatchTarget {
        serde_json::from_value(json!({
            "repository": "acme/ios-app",
            "eventType": "submit-for-review",
            "clientPayload": payload,
            "tokenSecretRef": {"name": "github-token", "key": "token"},
            "apiURL": "http://127.0.0.1:9999/"
        }))
        .unwrap()
    }

    fn secrets() -> SecretSet {
        SecretSet::new("mobile-ci").with("github-token", &[("token", "ghp_test")])
    }

    fn scope() -> Scope {
        let body = std::fs::read(format!(
            "{}/tests/fixtures/samples/build-valid.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let env = crate::event::Envelope::parse(&body).unwrap();
        Scope::new(&env.to_value(), "mobile-ci", "releases")
    }

    #[test]
    fn repository_dispatch_request_is_exactly_what_github_documents() {
        let t = compile(
            "t",
            &spec(
                json!({"app_name": "$(data.app_name)", "build_version": "$(data.build_version)"}),
            ),
            &secrets(),
        )
        .unwrap();
        let scope = scope();
        let req = t
            .build_request(&RenderContext {
                scope: &scope,
                event_id: "ev-1",
            })
            .unwrap();
        assert_eq!(req.method, Method::POST);
        assert_eq!(
            req.url.as_str(),
            "http://127.0.0.1:9999/repos/acme/ios-app/dispatches"
        );
        assert_eq!(req.headers["authorization"], "Bearer ghp_test");
        assert_eq!(req.headers["accept"], "application/vnd.github+json");
        assert_eq!(req.headers["x-github-api-version"], "2022-11-28");
        assert_eq!(req.headers["x-statused-event-id"], "ev-1");
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"event_type": "submit-for-review",
            "client_payload": {"app_name": "Markdown Email", "build_version": "456"}})
        );
        assert!(!format!("{req:?}").contains("ghp_test"));
        assert!(!format!("{t:?}").contains("ghp_test"));
    }

    #[test]
    fn more_than_ten_payload_keys_is_an_invalid_target() {
        let payload: serde_json::Map<_, _> =
            (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
        let err = compile(
            "rules[0].targets[0].githubDispatch",
            &spec(payload.into()),
            &secrets(),
        )
        .unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTarget);
        assert!(err.message.contains("clientPayload"), "{}", err.message);
    }

    #[test]
    fn repository_must_be_owner_slash_name() {
        for bad in ["acme", "acme/", "/x", "a/b/c", "acme/ios app"] {
            let mut s = spec(json!({}));
            s.repository = bad.into();
            let err = compile("t", &s, &secrets()).unwrap_err();
            assert_eq!(err.reason, Reason::InvalidTarget, "{bad}");
        }
    }

    #[test]
    fn missing_token_key_is_reported_without_its_value() {
        let secrets = SecretSet::new("mobile-ci").with("github-token", &[("other", "ghp_test")]);
        let err = compile("t", &spec(json!({})), &secrets).unwrap_err();
        assert_eq!(err.reason, Reason::SecretKeyMissing);
        assert_eq!(
            err.message,
            "Secret mobile-ci/github-token has no key token"
        );
    }

    #[test]
    fn bad_interpolation_is_an_invalid_template() {
        let err = compile("t", &spec(json!({"a": "$(data.app_name"})), &secrets()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplate);
    }
}
