//! `tekton`: creates a `tekton.dev/v1` PipelineRun in the route's namespace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::CompileError;
use super::fields::{Field, at_most, check_duration};
use super::kind::{Kind, Trigger};
use super::objects::{ApiRef, CompiledMetadata, ExtraMetadata, KubeTarget};
use super::request::{RenderContext, RenderError};
use crate::expr::Template;
use crate::naming::ObjectIdentity;
use crate::secrets::{SecretKeySelector, SecretSet};

pub const PIPELINE_RUN: ApiRef = ApiRef {
    group: "tekton.dev",
    version: "v1",
    kind: "PipelineRun",
    plural: "pipelineruns",
    chart_switch: "tekton.enabled",
};

/// The most parameters one PipelineRun gets (`params`), and the most a resolver gets
/// (`pipelineRef.params`): each is templated per event.
pub const MAX_PARAMS: usize = 64;
/// The most workspaces one PipelineRun binds.
pub const MAX_WORKSPACES: usize = 16;

spec! {
pub struct TektonTarget {
    /// The Pipeline to run: by `name`, or through a `resolver` (git, bundles, hub, cluster).
    pub pipeline_ref: PipelineRef,
    /// Pipeline parameters, at most 64. A value is a string, an array of strings or an
    /// object of strings; every string is templated with `$(...)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PARAMS))]
    pub params: Vec<TektonParam>,
    pub task_run_template: Option<TaskRunTemplate>,
    /// Workspace bindings (at most 16), passed to the PipelineRun as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WORKSPACES))]
    pub workspaces: Vec<WorkspaceBinding>,
    pub timeouts: Option<Timeouts>,
    #[serde(flatten)]
    pub metadata: ExtraMetadata,
}
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct PipelineRef {
    pub name: Option<String>,
    pub resolver: Option<String>,
    /// Resolver parameters (at most 64); values are templated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PARAMS))]
    pub params: Vec<ResolverParam>,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct ResolverParam {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct TektonParam {
    pub name: String,
    /// A string, an array of strings or an object of strings.
    #[schemars(schema_with = "crate::schema::any_json")]
    pub value: Value,
}

spec! {
pub struct TaskRunTemplate {
    pub service_account_name: Option<String>,
}
}

spec! {
/// One workspace and exactly one volume source for it.
pub struct WorkspaceBinding {
    pub name: String,
    pub sub_path: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_object")]
    pub volume_claim_template: Option<Value>,
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_object")]
    pub empty_dir: Option<Value>,
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_object")]
    pub secret: Option<Value>,
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_object")]
    pub config_map: Option<Value>,
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_object")]
    pub persistent_volume_claim: Option<Value>,
}
}

/// Go durations, e.g. `1h30m`, `45m0s`.
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct Timeouts {
    pub pipeline: Option<String>,
    pub tasks: Option<String>,
    pub finally: Option<String>,
}

#[derive(Debug)]
enum ParamValue {
    String(Template),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

impl ParamValue {
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Value, RenderError> {
        Ok(match self {
            ParamValue::String(t) => Value::String(t.render(ctx.scope)?),
            ParamValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render(ctx.scope).map(Value::String))
                    .collect::<Result<_, _>>()?,
            ),
            ParamValue::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), Value::String(t.render(ctx.scope)?))))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

#[derive(Debug)]
enum CompiledRef {
    Name(String),
    Resolver {
        resolver: String,
        params: Vec<(String, Template)>,
    },
}

#[derive(Debug)]
pub struct Tekton {
    pipeline_ref: CompiledRef,
    params: Vec<(String, ParamValue)>,
    service_account_name: Option<String>,
    workspaces: Vec<Value>,
    timeouts: Option<Value>,
    metadata: CompiledMetadata,
}

fn template(field: &str, source: &str) -> Result<Template, CompileError> {
    Template::compile(source).map_err(|e| CompileError::template(field, e))
}

impl Kind for TektonTarget {

    fn compile(&self, field: &Field, _secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        let r = &spec.pipeline_ref;
        at_most(
            field.at("pipelineRef").at("params"),
            r.params.len(),
            MAX_PARAMS,
        )?;
        at_most(field.at("params"), spec.params.len(), MAX_PARAMS)?;
        at_most(
            field.at("workspaces"),
            spec.workspaces.len(),
            MAX_WORKSPACES,
        )?;
        let pipeline_ref = match (&r.name, &r.resolver) {
            (Some(name), None) if !name.trim().is_empty() => {
                if !r.params.is_empty() {
                    return Err(CompileError::invalid(
                        field.at("pipelineRef").at("params"),
                        "only allowed with a resolver",
                    ));
                }
                CompiledRef::Name(name.clone())
            }
            (None, Some(resolver)) if !resolver.trim().is_empty() => CompiledRef::Resolver {
                resolver: resolver.clone(),
                params: named_templates(
                    &field.at("pipelineRef").at("params").to_string(),
                    r.params.iter().map(|p| (&p.name, &p.value)),
                )?,
            },
            _ => {
                return Err(CompileError::invalid(
                    field.at("pipelineRef"),
                    "set exactly one of name and resolver",
                ));
            }
        };
        let mut params = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in spec.params.iter().enumerate() {
            let pf = field.at("params").index(i);
            if p.name.trim().is_empty() || !seen.insert(p.name.as_str()) {
                return Err(CompileError::invalid(
                    format!("{pf}.name"),
                    "parameter names must be non-empty and unique",
                ));
            }
            let value = match &p.value {
                Value::String(s) => ParamValue::String(template(&format!("{pf}.value"), s)?),
                Value::Array(items) => ParamValue::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(j, v)| match v {
                            Value::String(s) => template(&format!("{pf}.value[{j}]"), s),
                            _ => Err(CompileError::invalid(
                                format!("{pf}.value[{j}]"),
                                "array items must be strings",
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Value::Object(map) => ParamValue::Object(
                    map.iter()
                        .map(|(k, v)| match v {
                            Value::String(s) => {
                                Ok((k.clone(), template(&format!("{pf}.value.{k}"), s)?))
                            }
                            _ => Err(CompileError::invalid(
                                format!("{pf}.value.{k}"),
                                "object values must be strings",
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(CompileError::invalid(
                        format!("{pf}.value"),
                        "must be a string, an array of strings or an object of strings",
                    ));
                }
            };
            params.push((p.name.clone(), value));
        }
        let mut workspaces = Vec::new();
        for (i, w) in spec.workspaces.iter().enumerate() {
            let wf = field.at("workspaces").index(i);
            if w.name.trim().is_empty() {
                return Err(CompileError::invalid(
                    format!("{wf}.name"),
                    "must not be empty",
                ));
            }
            let sources = [
                &w.volume_claim_template,
                &w.empty_dir,
                &w.secret,
                &w.config_map,
                &w.persistent_volume_claim,
            ];
            if sources.iter().filter(|s| s.is_some()).count() != 1 {
                return Err(CompileError::invalid(
                    &wf,
                    "set exactly one of volumeClaimTemplate, emptyDir, secret, configMap, persistentVolumeClaim",
                ));
            }
            workspaces.push(serde_json::to_value(w).map_err(|e| CompileError::invalid(&wf, e))?);
        }
        let timeouts = match &spec.timeouts {
            None => None,
            Some(t) => {
                for (name, value) in [
                    ("pipeline", &t.pipeline),
                    ("tasks", &t.tasks),
                    ("finally", &t.finally),
                ] {
                    if let Some(v) = value {
                        check_duration(&field.at("timeouts").at(name), v)?;
                    }
                }
                Some(
                    serde_json::to_value(t)
                        .map_err(|e| CompileError::invalid(field.at("timeouts"), e))?,
                )
            }
        };
        Ok(Trigger::kube(Tekton {
            pipeline_ref,
            params,
            service_account_name: spec
                .task_run_template
                .as_ref()
                .and_then(|t| t.service_account_name.clone()),
            workspaces,
            timeouts,
            metadata: spec.metadata.compile(field)?,
        }))
    }

    fn required_api(&self) -> Option<&'static ApiRef> {
        Some(&PIPELINE_RUN)
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![]
    }
}

fn named_templates<'a>(
    field: &str,
    items: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<(String, Template)>, CompileError> {
    items
        .enumerate()
        .map(|(i, (name, value))| {
            if name.trim().is_empty() {
                return Err(CompileError::invalid(
                    format!("{field}[{i}].name"),
                    "must not be empty",
                ));
            }
            Ok((
                name.clone(),
                template(&format!("{field}[{i}].value"), value)?,
            ))
        })
        .collect()
}

impl KubeTarget for Tekton {
    fn api(&self) -> &'static ApiRef {
        &PIPELINE_RUN
    }

    fn build_object(
        &self,
        ctx: &RenderContext<'_>,
        id: &ObjectIdentity,
    ) -> Result<Value, RenderError> {
        let pipeline_ref = match &self.pipeline_ref {
            CompiledRef::Name(name) => json!({"name": name}),
            CompiledRef::Resolver { resolver, params } => json!({
                "resolver": resolver,
                "params": params.iter().map(|(n, t)| Ok(json!({"name": n, "value": t.render(ctx.scope)?})))
                    .collect::<Result<Vec<_>, RenderError>>()?,
            }),
        };
        let mut spec = json!({"pipelineRef": pipeline_ref});
        if !self.params.is_empty() {
            spec["params"] = self
                .params
                .iter()
                .map(|(n, v)| Ok(json!({"name": n, "value": v.render(ctx)?})))
                .collect::<Result<Vec<_>, RenderError>>()?
                .into();
        }
        if let Some(sa) = &self.service_account_name {
            spec["taskRunTemplate"] = json!({"serviceAccountName": sa});
        }
        if !self.workspaces.is_empty() {
            spec["workspaces"] = self.workspaces.clone().into();
        }
        if let Some(t) = &self.timeouts {
            spec["timeouts"] = t.clone();
        }
        Ok(json!({
            "apiVersion": PIPELINE_RUN.api_version(),
            "kind": PIPELINE_RUN.kind,
            "metadata": self.metadata.render(ctx, id)?,
            "spec": spec,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Reason;
    use crate::targets::test_support::{compile_kube, identity, object};

    fn spec(v: Value) -> TektonTarget {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pipeline_run_has_ref_params_account_workspaces_timeouts_and_identity() {
        let t = compile_kube(&spec(json!({
                "pipelineRef": {"name": "release"},
                "params": [
                    {"name": "app", "value": "$(data.app_name)"},
                    {"name": "tags", "value": ["v$(data.version)", "latest"]},
                    {"name": "meta", "value": {"build": "$(data.build_version)"}}
                ],
                "taskRunTemplate": {"serviceAccountName": "release-bot"},
                "workspaces": [{"name": "src", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}},
                               {"name": "cache", "emptyDir": {}}],
                "timeouts": {"pipeline": "1h30m"},
                "labels": {"team": "mobile"},
                "annotations": {"example.com/why": "$(data.status)"}
            })))
        .unwrap();
        let obj = object(&*t);
        assert_eq!(obj["apiVersion"], "tekton.dev/v1");
        assert_eq!(obj["kind"], "PipelineRun");
        assert_eq!(obj["metadata"]["name"], identity().name);
        assert_eq!(obj["metadata"]["labels"]["team"], "mobile");
        assert_eq!(obj["metadata"]["labels"]["statused.dev/route"], "releases");
        assert_eq!(obj["metadata"]["annotations"]["example.com/why"], "Valid");
        assert_eq!(obj["spec"]["pipelineRef"], json!({"name": "release"}));
        assert_eq!(
            obj["spec"]["params"],
            json!([{"name": "app", "value": "Markdown Email"},
                   {"name": "tags", "value": ["v1.2.3", "latest"]},
                   {"name": "meta", "value": {"build": "456"}}])
        );
        assert_eq!(
            obj["spec"]["taskRunTemplate"],
            json!({"serviceAccountName": "release-bot"})
        );
        assert_eq!(
            obj["spec"]["workspaces"][1],
            json!({"name": "cache", "emptyDir": {}})
        );
        assert_eq!(obj["spec"]["timeouts"], json!({"pipeline": "1h30m"}));
    }

    #[test]
    fn resolver_refs_are_rendered() {
        let t = compile_kube(&spec(json!({"pipelineRef": {"resolver": "git", "params": [
                {"name": "url", "value": "https://example.com/ci.git"},
                {"name": "revision", "value": "release-$(data.version)"}]}})))
        .unwrap();
        let obj = object(&*t);
        assert_eq!(
            obj["spec"]["pipelineRef"],
            json!({"resolver": "git", "params": [{"name": "url", "value": "https://example.com/ci.git"},
                                                 {"name": "revision", "value": "release-1.2.3"}]})
        );
    }

    #[test]
    fn malformed_targets_are_caught_at_compile_time() {
        let cases = [
            (
                json!({"pipelineRef": {}}),
                Reason::InvalidTarget,
                "t.pipelineRef",
            ),
            (
                json!({"pipelineRef": {"name": "a", "resolver": "git"}}),
                Reason::InvalidTarget,
                "t.pipelineRef",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "params": [{"name": "", "value": "x"}]}),
                Reason::InvalidTarget,
                "t.params[0].name",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "params": [{"name": "p", "value": 3}]}),
                Reason::InvalidTarget,
                "t.params[0].value",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "params": [{"name": "p", "value": "$(data."}]}),
                Reason::InvalidTemplate,
                "t.params[0].value",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "workspaces": [{"name": "w"}]}),
                Reason::InvalidTarget,
                "t.workspaces[0]",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "timeouts": {"pipeline": "an hour"}}),
                Reason::InvalidTarget,
                "t.timeouts.pipeline",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "labels": {"statused.dev/route": "x"}}),
                Reason::InvalidTarget,
                "t.labels",
            ),
        ];
        for (s, reason, needle) in cases {
            let err = compile_kube(&spec(s.clone())).unwrap_err();
            assert_eq!(err.reason, reason, "{s}");
            assert!(err.message.contains(needle), "{s}: {}", err.message);
        }
    }

    #[test]
    fn more_params_workspaces_or_annotations_than_the_limits_are_refused() {
        let params = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"name": format!("p{i}"), "value": "v"}))
                .collect()
        };
        let workspaces = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"name": format!("w{i}"), "emptyDir": {}}))
                .collect()
        };
        let annotations = |n: usize| -> serde_json::Map<String, Value> {
            (0..n).map(|i| (format!("a{i}"), "v".into())).collect()
        };
        let fits = json!({"pipelineRef": {"resolver": "git", "params": params(MAX_PARAMS)},
                          "params": params(MAX_PARAMS), "workspaces": workspaces(MAX_WORKSPACES),
                          "annotations": annotations(crate::targets::objects::MAX_ANNOTATIONS)});
        assert!(compile_kube(&spec(fits)).is_ok());
        for (s, message) in [
            (
                json!({"pipelineRef": {"name": "a"}, "params": params(65)}),
                "t.params has 65 entries; at most 64 are allowed",
            ),
            (
                json!({"pipelineRef": {"resolver": "git", "params": params(65)}}),
                "t.pipelineRef.params has 65 entries; at most 64 are allowed",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "workspaces": workspaces(17)}),
                "t.workspaces has 17 entries; at most 16 are allowed",
            ),
            (
                json!({"pipelineRef": {"name": "a"}, "annotations": annotations(33)}),
                "t.annotations has 33 entries; at most 32 are allowed",
            ),
        ] {
            let err = compile_kube(&spec(s)).unwrap_err();
            assert_eq!(
                (err.reason, err.message.as_str()),
                (Reason::InvalidTarget, message)
            );
        }
    }
}
