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
    Field, at_most, base_url, compile_templates, credential, credential_text, join_url,
    path_segment, render_templates, required, token,
};
use super::kind::{Kind, Trigger};
use super::outcome::{CreatedObject, RunPhase, RunReading};
use super::request::{
    HttpRequest, HttpTarget, RenderContext, RenderError, base_headers, sensitive,
};
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
    /// With `follow`: a Secret key holding a token allowed to read the project's pipelines
    /// (a project access token with `read_api`; key defaults to `token`). A trigger token
    /// can start pipelines but not read them.
    pub read_token_secret_ref: Option<SecretKeySelector>,
    /// For self-managed GitLab (default `https://gitlab.com`).
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}

#[derive(Debug)]
pub struct GitlabPipeline {
    url: Url,
    /// `.../api/v4/projects/{project}/pipelines/`: where a pipeline it started is read.
    pipelines: Url,
    /// `readTokenSecretRef`: what reads them.
    read_token: Option<SecretValue>,
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
        let pipelines = join_url(
            &field.at("project"),
            &base,
            &format!("/api/v4/projects/{encoded}/pipelines/"),
        )?;
        let read_token = match &spec.read_token_secret_ref {
            Some(sel) => Some(credential(
                &field.at("readTokenSecretRef"),
                sel,
                "token",
                secrets,
            )?),
            None => None,
        };
        Ok(Trigger::http(GitlabPipeline {
            url,
            pipelines,
            read_token,
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
        std::iter::once(&self.token_secret_ref)
            .chain(&self.read_token_secret_ref)
            .collect()
    }
}

impl HttpTarget for GitlabPipeline {
    fn created(&self, body: &[u8]) -> Option<CreatedObject> {
        Self::pipeline(body)
    }

    fn followable(&self) -> Result<(), String> {
        match self.read_token {
            Some(_) => Ok(()),
            None => Err("a gitlabPipeline is followed with a token that may read its pipelines: set readTokenSecretRef (a trigger token cannot)".into()),
        }
    }

    /// `GET /projects/:id/pipelines/:pipeline_id` with `PRIVATE-TOKEN`
    /// (docs.gitlab.com/api/pipelines/#get-a-single-pipeline).
    fn run_request(&self, created: &CreatedObject) -> Option<HttpRequest> {
        let token = credential_text(self.read_token.as_ref()?);
        if created.kind != "Pipeline" || !created.name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(super::request::USER_AGENT),
        );
        headers.insert("private-token", sensitive(token).ok()?);
        let url = self.pipelines.join(&created.name).ok()?;
        Some(HttpRequest::get_run(url, headers).secret(token))
    }

    /// A pipeline's `status`: success, failed, canceled (or canceling), skipped; anything
    /// else (created, pending, running, manual, scheduled, ...) runs.
    fn run_reading(&self, body: &[u8]) -> Option<RunReading> {
        let p: serde_json::Value = serde_json::from_slice(body).ok()?;
        let text = |k: &str| p.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        let status = text("status")?;
        let phase = match status.as_str() {
            "success" | "skipped" => RunPhase::Succeeded,
            "failed" => RunPhase::Failed,
            "canceled" | "canceling" => RunPhase::Cancelled,
            _ => RunPhase::Running,
        };
        Some(RunReading {
            phase,
            started_at: text("started_at"),
            completed_at: text("finished_at"),
            message: Some(status),
            url: text("web_url"),
        })
    }

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

impl GitlabPipeline {
    /// The trigger API answers with the pipeline it created: `{"id", "web_url", ...}`.
    fn pipeline(body: &[u8]) -> Option<CreatedObject> {
        let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
        let id = answer.get("id")?.as_u64()?;
        Some(CreatedObject {
            api_version: "gitlab.com/v4".into(),
            kind: "Pipeline".into(),
            name: id.to_string(),
            uid: None,
            url: answer
                .get("web_url")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
        })
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

    #[test]
    fn a_pipeline_it_started_is_read_as_gitlab_documents_it() {
        let spec = |read: bool| -> GitlabPipelineTarget {
            let mut v = json!({"project": "mobile/ios-app", "ref": "main",
                "tokenSecretRef": {"name": "gl"}, "baseURL": "https://gitlab.example.com/"});
            if read {
                v["readTokenSecretRef"] = json!({"name": "gl-read"});
            }
            serde_json::from_value(v).unwrap()
        };
        let secrets = SecretSet::new("ns")
            .with("gl", &[("token", "glptt-123")])
            .with("gl-read", &[("token", "glpat-read")]);
        let unread = compile_http(&spec(false), &secrets).unwrap();
        assert!(unread.followable().unwrap_err().contains("readTokenSecretRef"));
        let t = compile_http(&spec(true), &secrets).unwrap();
        assert_eq!(t.followable(), Ok(()));
        let answer = br#"{"id": 287, "iid": 12, "status": "created", "web_url": "https://gitlab.example.com/mobile/ios-app/-/pipelines/287"}"#;
        let created = t.created(answer).unwrap();
        assert_eq!((created.kind.as_str(), created.name.as_str()), ("Pipeline", "287"));
        let read = t.run_request(&created).unwrap();
        assert_eq!(read.method, Method::GET);
        assert_eq!(
            read.url.as_str(),
            "https://gitlab.example.com/api/v4/projects/mobile%2Fios-app/pipelines/287"
        );
        assert_eq!(read.headers["private-token"], "glpat-read");
        assert!(read.headers["private-token"].is_sensitive());
        assert!(!format!("{t:?}").contains("glpat-read"));
        let reading = |status: &str| {
            let body = json!({"id": 287, "status": status, "web_url": "https://gitlab.example.com/mobile/ios-app/-/pipelines/287",
                "started_at": "2027-01-15T08:00:00.000Z", "finished_at": "2027-01-15T08:09:00.000Z"});
            t.run_reading(body.to_string().as_bytes()).unwrap()
        };
        for (status, phase) in [
            ("created", RunPhase::Running),
            ("pending", RunPhase::Running),
            ("running", RunPhase::Running),
            ("manual", RunPhase::Running),
            ("success", RunPhase::Succeeded),
            ("failed", RunPhase::Failed),
            ("canceled", RunPhase::Cancelled),
        ] {
            assert_eq!(reading(status).phase, phase, "{status}");
        }
        assert_eq!(reading("failed").started_at.as_deref(), Some("2027-01-15T08:00:00.000Z"));
    }
}

