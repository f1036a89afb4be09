//! `bitrise`: Bitrise's "trigger a build" API, `POST {baseURL}/v0.1/apps/{appSlug}/builds`
//! with `Authorization: <token>` (no `Bearer`) and `hook_info.type = "bitrise"`.

use std::collections::BTreeMap;

use reqwest::Url;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use super::error::CompileError;
use super::fields::{
    Field, at_most, base_url, compile_opt, compile_templates, credential_text, join_url,
    render_templates, required, token,
};
use super::kind::{Kind, Trigger};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, token_post};
use crate::expr::Template;
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};

pub const DEFAULT_BASE_URL: &str = "https://api.bitrise.io";
/// The most environment variables one build gets (`environments`), each templated per event.
pub const MAX_ENVIRONMENTS: usize = 64;

spec! {
pub struct BitriseTarget {
    /// The app's slug (from its Bitrise URL).
    pub app_slug: String,
    /// What to build: at least one of `branch`, `tag`, `commitHash`, `workflowId` and
    /// `pipelineId` (a workflow or pipeline alone is enough). Templated.
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_hash: Option<String>,
    /// Workflow to run; set at most one of `workflowId` and `pipelineId` (neither: the
    /// trigger map decides).
    pub workflow_id: Option<String>,
    pub pipeline_id: Option<String>,
    /// Shown as the build's commit message. Templated.
    pub commit_message: Option<String>,
    /// Environment variables for the build (at most 64); values are templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_ENVIRONMENTS))]
    pub environments: BTreeMap<String, String>,
    /// Secret key holding a personal access or workspace API token (key defaults to `token`).
    pub token_secret_ref: SecretKeySelector,
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}
}

#[derive(Debug)]
pub struct Bitrise {
    url: Url,
    token: SecretValue,
    fields: Vec<(&'static str, Template)>,
    environments: Vec<(String, Template)>,
}

impl Kind for BitriseTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        at_most(
            field.at("environments"),
            spec.environments.len(),
            MAX_ENVIRONMENTS,
        )?;
        let slug = required(&field.at("appSlug"), spec.app_slug.trim())?;
        if !slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(CompileError::invalid(
                field.at("appSlug"),
                "is not an app slug",
            ));
        }
        // Bitrise builds a workflow or pipeline from its trigger settings alone, or whatever
        // branch, tag or commit is named.
        let what = [
            &spec.branch,
            &spec.tag,
            &spec.commit_hash,
            &spec.workflow_id,
            &spec.pipeline_id,
        ];
        if what.iter().all(|v| v.is_none()) {
            return Err(CompileError::invalid(
                field,
                "set at least one of branch, tag, commitHash, workflowId and pipelineId",
            ));
        }
        if spec.workflow_id.is_some() && spec.pipeline_id.is_some() {
            return Err(CompileError::invalid(
                field,
                "set at most one of workflowId and pipelineId",
            ));
        }
        let base = base_url(
            &field.at("baseURL"),
            spec.base_url.as_deref(),
            DEFAULT_BASE_URL,
        )?;
        let mut fields = Vec::new();
        for (name, wire, value) in [
            ("branch", "branch", &spec.branch),
            ("tag", "tag", &spec.tag),
            ("commitHash", "commit_hash", &spec.commit_hash),
            ("workflowId", "workflow_id", &spec.workflow_id),
            ("pipelineId", "pipeline_id", &spec.pipeline_id),
            ("commitMessage", "commit_message", &spec.commit_message),
        ] {
            if let Some(t) = compile_opt(&field.at(name), value.as_deref())? {
                fields.push((wire, t));
            }
        }
        Ok(Trigger::http(Bitrise {
            url: join_url(
                &field.at("appSlug"),
                &base,
                &format!("/v0.1/apps/{slug}/builds"),
            )?,
            token: token(field, &spec.token_secret_ref, secrets)?,
            fields,
            environments: compile_templates(&field.at("environments"), &spec.environments)?,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.token_secret_ref]
    }
}

impl HttpTarget for Bitrise {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let mut params = serde_json::Map::new();
        for (wire, t) in &self.fields {
            params.insert((*wire).to_string(), Value::String(t.render(ctx.scope)?));
        }
        let environments = render_templates(&self.environments, ctx.scope)?;
        if !environments.is_empty() {
            let list: Vec<Value> = environments
                .into_iter()
                .map(|(k, v)| json!({"mapped_to": k, "value": v, "is_expand": false}))
                .collect();
            params.insert("environments".into(), list.into());
        }
        let body = json!({"hook_info": {"type": "bitrise"}, "build_params": params, "triggered_by": "statused-operator"});
        let token = credential_text(&self.token);
        token_post(ctx, &self.url, AUTHORIZATION, token, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, sent};

    #[test]
    fn build_request_matches_the_bitrise_api() {
        let (_t, req) = sent::<BitriseTarget>(
            json!({
                "appSlug": "a1b2c3d4e5", "branch": "main", "workflowId": "deploy-testflight",
                "commitMessage": "Statused: $(data.app_name) build $(data.build_version) is $(data.status)",
                "environments": {"BUILD_NUMBER": "$(data.build_version)"},
                "tokenSecretRef": {"name": "bitrise"}
            }),
            &SecretSet::new("ns").with("bitrise", &[("token", "bt-secret")]),
        );
        assert_eq!(
            req.url.as_str(),
            "https://api.bitrise.io/v0.1/apps/a1b2c3d4e5/builds"
        );
        assert_eq!(req.headers["authorization"], "bt-secret");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "hook_info": {"type": "bitrise"},
                "build_params": {"branch": "main", "workflow_id": "deploy-testflight",
                                 "commit_message": "Statused: Markdown Email build 456 is Valid",
                                 "environments": [{"mapped_to": "BUILD_NUMBER", "value": "456", "is_expand": false}]},
                "triggered_by": "statused-operator"
            })
        );
    }

    #[test]
    fn more_environments_than_the_limit_are_refused() {
        let environments: serde_json::Map<String, Value> = (0..=MAX_ENVIRONMENTS)
            .map(|i| (format!("E{i}"), "v".into()))
            .collect();
        let spec: BitriseTarget = serde_json::from_value(json!({
            "appSlug": "a1", "workflowId": "w", "environments": environments,
            "tokenSecretRef": {"name": "b"}
        }))
        .unwrap();
        let err =
            compile_http(&spec, &SecretSet::new("ns").with("b", &[("token", "x")])).unwrap_err();
        assert_eq!(
            err.message,
            "t.environments has 65 entries; at most 64 are allowed"
        );
    }

    #[test]
    fn a_workflow_alone_is_enough() {
        let (_, req) = sent::<BitriseTarget>(
            json!({"appSlug": "a1", "workflowId": "nightly", "tokenSecretRef": {"name": "b"}}),
            &SecretSet::new("ns").with("b", &[("token", "x")]),
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["build_params"], json!({"workflow_id": "nightly"}));
    }

    #[test]
    fn what_to_build_is_required() {
        let spec: BitriseTarget =
            serde_json::from_value(json!({"appSlug": "a1", "tokenSecretRef": {"name": "b"}}))
                .unwrap();
        let err =
            compile_http(&spec, &SecretSet::new("ns").with("b", &[("token", "x")])).unwrap_err();
        assert!(
            err.message
                .contains("branch, tag, commitHash, workflowId and pipelineId"),
            "{}",
            err.message
        );
    }
}
