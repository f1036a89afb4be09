//! `gitlabPipeline`: GitLab's pipeline trigger API,
//! `POST {baseURL}/api/v4/projects/{id or URL-encoded path}/trigger/pipeline` with form fields
//! `token`, `ref` and `variables[KEY]=value`.

use std::collections::BTreeMap;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::CompileError;
use super::fields::{
    Field, at_most, base_url, compile_templates, credential_text, join_url, path_segment,
    render_templates, required, token,
};
use super::kind::{Kind, Trigger};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, base_headers};
use crate::expr::{JsonTemplate, Template};
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};

pub const DEFAULT_BASE_URL: &str = "https://gitlab.com";
/// The most CI/CD variables one pipeline gets (`variables`), each templated per event.
pub const MAX_VARIABLES: usize = 64;
/// The most pipeline inputs one pipeline gets (`inputs`), as many as variables.
pub const MAX_INPUTS: usize = 64;
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitlabPipelineTarget {
    /// Numeric project ID or full path (`mobile/ios-app`).
    pub project: String,
    /// Branch or tag to run the pipeline for. Templated.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// CI/CD variables (at most 64); values are templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_VARIABLES))]
    pub variables: BTreeMap<String, String>,
    /// Pipeline inputs (`spec:inputs`), typed: strings (templated), numbers, booleans,
    /// arrays. GitLab.com projects increasingly refuse variables from triggers; inputs are
    /// what they accept. With inputs the request is JSON instead of a form. At most 64.
    #[serde(default)]
    #[schemars(
        schema_with = "crate::schema::any_object",
        extend("maxProperties" = MAX_INPUTS)
    )]
    pub inputs: Option<serde_json::Value>,
    /// Secret key holding the pipeline trigger token (key defaults to `token`).
    pub token_secret_ref: SecretKeySelector,
    /// For self-managed GitLab (default `https://gitlab.com`).
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}

#[derive(Debug)]
pub struct GitlabPipeline {
    url: Url,
    token: SecretValue,
    git_ref: Template,
    variables: Vec<(String, Template)>,
    inputs: Option<JsonTemplate>,
}

impl Kind for GitlabPipelineTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        at_most(field.at("variables"), spec.variables.len(), MAX_VARIABLES)?;
        if let Some(serde_json::Value::Object(inputs)) = &spec.inputs {
            at_most(field.at("inputs"), inputs.len(), MAX_INPUTS)?;
        }
        let project = required(&field.at("project"), spec.project.trim())?;
        let is_path = project.split('/').count() >= 2 && project.split('/').all(|s| !s.is_empty());
        if !project.chars().all(|c| c.is_ascii_digit()) && !is_path {
            return Err(CompileError::invalid(
                field.at("project"),
                "must be a numeric project ID or a path like group/project",
            ));
        }
        let base = base_url(
            &field.at("baseURL"),
            spec.base_url.as_deref(),
            DEFAULT_BASE_URL,
        )?;
        let encoded = path_segment(project);
        let url = join_url(
            &field.at("project"),
            &base,
            &format!("/api/v4/projects/{encoded}/trigger/pipeline"),
        )?;
        let git_ref = Template::compile(required(&field.at("ref"), &spec.git_ref)?)
            .map_err(|e| CompileError::template(field.at("ref"), e))?;
        Ok(Trigger::http(GitlabPipeline {
            url,
            token: token(field, &spec.token_secret_ref, secrets)?,
            git_ref,
            variables: compile_templates(&field.at("variables"), &spec.variables)?,
            inputs: match &spec.inputs {
                None => None,
                Some(v @ serde_json::Value::Object(_)) => Some(
                    JsonTemplate::compile(v)
                        .map_err(|e| CompileError::template(field.at("inputs"), e))?,
                ),
                Some(_) => {
                    return Err(CompileError::invalid(
                        field.at("inputs"),
                        "must be a map of input names to values",
                    ));
                }
            },
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.token_secret_ref]
    }
}

impl HttpTarget for GitlabPipeline {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let token = credential_text(&self.token);
        if let Some(inputs) = &self.inputs {
            // Typed inputs need JSON; the trigger API takes the same fields as JSON.
            let variables: serde_json::Map<String, serde_json::Value> =
                render_templates(&self.variables, ctx.scope)?
                    .into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect();
            let mut body = serde_json::json!({
                "token": token,
                "ref": self.git_ref.render(ctx.scope)?,
                "inputs": inputs.render(ctx.scope)?,
            });
            if !variables.is_empty() {
                body["variables"] = variables.into();
            }
            return Ok(
                HttpRequest::post_json(self.url.clone(), base_headers(ctx)?, &body).secret(token),
            );
        }
        let mut form = percent_encoding_form();
        form.append_pair("token", token);
        form.append_pair("ref", &self.git_ref.render(ctx.scope)?);
        for (k, v) in render_templates(&self.variables, ctx.scope)? {
            form.append_pair(&format!("variables[{k}]"), &v);
        }
        let mut headers = base_headers(ctx)?;
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        Ok(HttpRequest::new(
            Method::POST,
            self.url.clone(),
            headers,
            form.finish().into_bytes(),
        )
        .secret(token))
    }
}

fn percent_encoding_form() -> url::form_urlencoded::Serializer<'static, String> {
    url::form_urlencoded::Serializer::new(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, sent};
    use serde_json::json;

    #[test]
    fn trigger_is_a_form_post_with_token_ref_and_variables() {
        let (t, req) = sent::<GitlabPipelineTarget>(
            json!({
                "project": "mobile/ios-app", "ref": "main",
                "variables": {"APP": "$(data.app_name)", "STATUS": "$(data.status)"},
                "tokenSecretRef": {"name": "gl"}, "baseURL": "https://gitlab.example.com/"
            }),
            &SecretSet::new("ns").with("gl", &[("token", "glptt-123")]),
        );
        assert_eq!(
            req.url.as_str(),
            "https://gitlab.example.com/api/v4/projects/mobile%2Fios-app/trigger/pipeline"
        );
        assert_eq!(
            req.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            String::from_utf8(req.body.clone()).unwrap(),
            "token=glptt-123&ref=main&variables%5BAPP%5D=Markdown+Email&variables%5BSTATUS%5D=Valid"
        );
        assert!(!format!("{t:?}{req:?}").contains("glptt-123"));
    }

    #[test]
    fn more_variables_or_inputs_than_the_limits_are_refused() {
        let map = |n: usize| -> serde_json::Map<String, serde_json::Value> {
            (0..n).map(|i| (format!("K{i}"), "v".into())).collect()
        };
        let secrets = SecretSet::new("ns").with("gl", &[("token", "t")]);
        let compile = |field: &str, n: usize| {
            let spec: GitlabPipelineTarget = serde_json::from_value(serde_json::json!({
                "project": "a/b", "ref": "main", "tokenSecretRef": {"name": "gl"}, field: map(n)
            }))
            .unwrap();
            compile_http(&spec, &secrets).map(|_| ())
        };
        assert!(compile("variables", MAX_VARIABLES).is_ok());
        assert!(compile("inputs", MAX_INPUTS).is_ok());
        assert_eq!(
            compile("variables", 65).unwrap_err().message,
            "t.variables has 65 entries; at most 64 are allowed"
        );
        assert_eq!(
            compile("inputs", 65).unwrap_err().message,
            "t.inputs has 65 entries; at most 64 are allowed"
        );
    }

    #[test]
    fn project_and_ref_are_checked() {
        let secrets = SecretSet::new("ns").with("gl", &[("token", "x")]);
        for (project, git_ref, needle) in [
            ("", "main", "t.project"),
            ("a//b", "main", "t.project"),
            ("42", "", "t.ref"),
        ] {
            let spec: GitlabPipelineTarget = serde_json::from_value(json!({
                "project": project, "ref": git_ref, "tokenSecretRef": {"name": "gl"}}))
            .unwrap();
            let err = compile_http(&spec, &secrets).unwrap_err();
            assert!(err.message.contains(needle), "{project}: {}", err.message);
        }
    }

    #[test]
    fn typed_inputs_are_sent_as_json() {
        let (_, req) = sent::<GitlabPipelineTarget>(
            json!({"project": "42", "ref": "main", "variables": {"APP": "$(data.app_name)"},
                   "inputs": {"version": "$(data.version)", "build": 456, "notify": true, "targets": ["ios"]},
                   "tokenSecretRef": {"name": "gl"}}),
            &SecretSet::new("ns").with("gl", &[("token", "glptt-123")]),
        );
        assert_eq!(req.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"token": "glptt-123", "ref": "main", "variables": {"APP": "Markdown Email"},
                   "inputs": {"version": "1.2.3", "build": 456, "notify": true, "targets": ["ios"]}})
        );
        assert_eq!(req.redact("glptt-123"), "[redacted]");
    }
}
