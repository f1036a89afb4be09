//! `circleci`: CircleCI API v2. With `definitionId`, the pipeline run endpoint
//! (`POST /api/v2/project/{provider}/{org}/{project}/pipeline/run`); otherwise the older
//! `POST /api/v2/project/{slug}/pipeline`. Auth header `Circle-Token`.

use std::collections::BTreeMap;

use reqwest::Url;
use reqwest::header::HeaderName;
use serde_json::{Value, json};

use super::error::CompileError;
use super::fields::{Field, at_most, base_url, credential_text, join_url, required, token};
use super::kind::{Kind, Trigger};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, token_post};
use crate::expr::{JsonTemplate, Template};
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};

pub const DEFAULT_BASE_URL: &str = "https://circleci.com";
/// The most pipeline parameters one target passes (`parameters`).
pub const MAX_PARAMETERS: usize = 64;

spec! {
pub struct CircleciTarget {
    /// `{vcs}/{org}/{project}`, e.g. `gh/acme/ios-app` or `circleci/<org-id>/<project-id>`.
    pub project_slug: String,
    /// The pipeline definition to run (Project Settings → Pipelines). When set, the pipeline
    /// run endpoint is used.
    pub definition_id: Option<String>,
    /// Branch to build (templated). Set this or `tag`.
    pub branch: Option<String>,
    /// Tag to build (templated). Set this or `branch`.
    pub tag: Option<String>,
    /// Pipeline parameters (at most 64): strings are templated, numbers and booleans pass as
    /// they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(
        schema_with = "crate::schema::any_object",
        extend("maxProperties" = MAX_PARAMETERS)
    )]
    pub parameters: BTreeMap<String, Value>,
    /// Secret key holding a personal API token (key defaults to `token`).
    pub token_secret_ref: SecretKeySelector,
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}
}

#[derive(Debug)]
enum Revision {
    Branch(Template),
    Tag(Template),
}

#[derive(Debug)]
pub struct Circleci {
    url: Url,
    token: SecretValue,
    definition_id: Option<String>,
    revision: Revision,
    parameters: Option<JsonTemplate>,
}

impl Kind for CircleciTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        at_most(
            field.at("parameters"),
            spec.parameters.len(),
            MAX_PARAMETERS,
        )?;
        let slug = required(&field.at("projectSlug"), spec.project_slug.trim())?;
        let parts: Vec<&str> = slug.split('/').collect();
        let valid_part = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if parts.len() != 3 || !parts.iter().all(valid_part) {
            return Err(CompileError::invalid(
                field.at("projectSlug"),
                "must be {vcs}/{org}/{project}, e.g. gh/acme/ios-app",
            ));
        }
        if parts[0] == "circleci" && spec.definition_id.is_none() {
            return Err(CompileError::invalid(
                field.at("definitionId"),
                "a circleci/<org>/<project> slug works only with the pipeline/run endpoint: set \
                 definitionId (Project Settings → Pipelines)",
            ));
        }
        let template = |name: &str, v: &str| {
            Template::compile(v).map_err(|e| CompileError::template(field.at(name), e))
        };
        let revision = match (&spec.branch, &spec.tag) {
            (Some(b), None) => {
                Revision::Branch(template("branch", required(&field.at("branch"), b)?)?)
            }
            (None, Some(t)) => Revision::Tag(template("tag", required(&field.at("tag"), t)?)?),
            _ => {
                return Err(CompileError::invalid(
                    field,
                    "set exactly one of branch and tag",
                ));
            }
        };
        let base = base_url(
            &field.at("baseURL"),
            spec.base_url.as_deref(),
            DEFAULT_BASE_URL,
        )?;
        let path = match &spec.definition_id {
            Some(id) => {
                required(&field.at("definitionId"), id)?;
                format!("/api/v2/project/{slug}/pipeline/run")
            }
            None => format!("/api/v2/project/{slug}/pipeline"),
        };
        let parameters = if spec.parameters.is_empty() {
            None
        } else {
            let map: serde_json::Map<String, Value> = spec.parameters.clone().into_iter().collect();
            Some(
                JsonTemplate::compile(&Value::Object(map))
                    .map_err(|e| CompileError::template(field.at("parameters"), e))?,
            )
        };
        Ok(Trigger::http(Circleci {
            url: join_url(&field.at("projectSlug"), &base, &path)?,
            token: token(field, &spec.token_secret_ref, secrets)?,
            definition_id: spec.definition_id.clone(),
            revision,
            parameters,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![&self.token_secret_ref]
    }
}

impl HttpTarget for Circleci {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let revision = match &self.revision {
            Revision::Branch(t) => json!({"branch": t.render(ctx.scope)?}),
            Revision::Tag(t) => json!({"tag": t.render(ctx.scope)?}),
        };
        let mut body = match &self.definition_id {
            Some(id) => json!({"definition_id": id, "config": revision, "checkout": revision}),
            None => revision,
        };
        if let Some(p) = &self.parameters {
            body["parameters"] = p.render(ctx.scope)?;
        }
        let token = credential_text(&self.token);
        token_post(
            ctx,
            &self.url,
            HeaderName::from_static("circle-token"),
            token,
            &body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, sent};

    fn build(v: Value) -> HttpRequest {
        let secrets = SecretSet::new("ns").with("cci", &[("token", "CCIPAT_x")]);
        sent::<CircleciTarget>(v, &secrets).1
    }

    #[test]
    fn pipeline_run_endpoint_with_definition_id() {
        let req = build(
            json!({"projectSlug": "gh/acme/ios-app", "definitionId": "2f5e8c3a", "branch": "main",
                               "parameters": {"build": "$(data.build_version)", "deploy": true},
                               "tokenSecretRef": {"name": "cci"}}),
        );
        assert_eq!(
            req.url.as_str(),
            "https://circleci.com/api/v2/project/gh/acme/ios-app/pipeline/run"
        );
        assert_eq!(req.headers["circle-token"], "CCIPAT_x");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"definition_id": "2f5e8c3a", "config": {"branch": "main"}, "checkout": {"branch": "main"},
                                "parameters": {"build": "456", "deploy": true}})
        );
    }

    #[test]
    fn older_pipeline_endpoint_without_definition_id() {
        let req = build(
            json!({"projectSlug": "gh/acme/ios-app", "tag": "v$(data.version)", "tokenSecretRef": {"name": "cci"}}),
        );
        assert_eq!(
            req.url.as_str(),
            "https://circleci.com/api/v2/project/gh/acme/ios-app/pipeline"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&req.body).unwrap(),
            json!({"tag": "v1.2.3"})
        );
    }

    #[test]
    fn more_parameters_than_the_limit_are_refused() {
        let parameters: serde_json::Map<String, Value> = (0..=MAX_PARAMETERS)
            .map(|i| (format!("p{i}"), true.into()))
            .collect();
        let spec: CircleciTarget = serde_json::from_value(json!({
            "projectSlug": "gh/acme/ios-app", "branch": "main", "parameters": parameters,
            "tokenSecretRef": {"name": "cci"}
        }))
        .unwrap();
        let secrets = SecretSet::new("ns").with("cci", &[("token", "x")]);
        assert_eq!(
            compile_http(&spec, &secrets).unwrap_err().message,
            "t.parameters has 65 entries; at most 64 are allowed"
        );
    }

    #[test]
    fn slug_and_revision_are_checked() {
        let secrets = SecretSet::new("ns").with("cci", &[("token", "x")]);
        for (v, needle) in [
            (
                json!({"projectSlug": "circleci/0f1e2d3c/4b5a6978", "branch": "main"}),
                "works only with the pipeline/run endpoint: set definitionId",
            ),
            (
                json!({"projectSlug": "acme/ios-app", "branch": "main"}),
                "projectSlug",
            ),
            (
                json!({"projectSlug": "gh/acme/ios-app"}),
                "exactly one of branch and tag",
            ),
            (
                json!({"projectSlug": "gh/acme/ios-app", "branch": "a", "tag": "b"}),
                "exactly one of branch and tag",
            ),
        ] {
            let mut v = v;
            v["tokenSecretRef"] = json!({"name": "cci"});
            let spec: CircleciTarget = serde_json::from_value(v.clone()).unwrap();
            let err = compile_http(&spec, &secrets).unwrap_err();
            assert!(err.message.contains(needle), "{v}: {}", err.message);
        }
    }
}
