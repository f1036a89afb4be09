//! `argoWorkflow`: creates an `argoproj.io/v1alpha1` Workflow from a WorkflowTemplate or
//! ClusterWorkflowTemplate in the route's namespace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::CompileError;
use super::fields::{Field, at_most};
use super::kind::{Kind, Trigger};
use super::objects::{ApiRef, CompiledMetadata, ExtraMetadata, KubeTarget};
use super::request::{RenderContext, RenderError};
use crate::expr::Template;
use crate::naming::ObjectIdentity;
use crate::secrets::{SecretKeySelector, SecretSet};

pub const WORKFLOW: ApiRef = ApiRef {
    group: "argoproj.io",
    version: "v1alpha1",
    kind: "Workflow",
    plural: "workflows",
    chart_switch: "argo.enabled",
};

spec! {
pub struct ArgoWorkflowTarget {
    pub workflow_template_ref: WorkflowTemplateRef,
    pub arguments: Option<Arguments>,
    pub service_account_name: Option<String>,
    #[serde(flatten)]
    pub metadata: ExtraMetadata,
}
}

spec! {
pub struct WorkflowTemplateRef {
    pub name: String,
    /// Reference a ClusterWorkflowTemplate instead of a namespaced WorkflowTemplate.
    pub cluster_scope: Option<bool>,
}
}

/// The most parameters one Workflow gets (`arguments.parameters`), each templated per event.
pub const MAX_PARAMETERS: usize = 64;

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct Arguments {
    /// Workflow parameters (at most 64); values are templated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PARAMETERS))]
    pub parameters: Vec<Parameter>,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct Parameter {
    pub name: String,
    pub value: String,
}

#[derive(Debug)]
pub struct ArgoWorkflow {
    template: String,
    cluster_scope: bool,
    parameters: Vec<(String, Template)>,
    service_account_name: Option<String>,
    metadata: CompiledMetadata,
}

impl Kind for ArgoWorkflowTarget {

    fn compile(&self, field: &Field, _secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        if spec.workflow_template_ref.name.trim().is_empty() {
            return Err(CompileError::invalid(
                field.at("workflowTemplateRef").at("name"),
                "must not be empty",
            ));
        }
        if let Some(arguments) = &spec.arguments {
            at_most(
                field.at("arguments").at("parameters"),
                arguments.parameters.len(),
                MAX_PARAMETERS,
            )?;
        }
        let mut parameters = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in spec
            .arguments
            .iter()
            .flat_map(|a| &a.parameters)
            .enumerate()
        {
            let pf = field.at("arguments").at("parameters").index(i);
            if p.name.trim().is_empty() || !seen.insert(p.name.as_str()) {
                return Err(CompileError::invalid(
                    format!("{pf}.name"),
                    "parameter names must be non-empty and unique",
                ));
            }
            // What the Workflow schema allows: the API server would refuse every Workflow
            // with 422, one delivery at a time.
            let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if !p.name.chars().all(allowed) {
                return Err(CompileError::invalid(
                    format!("{pf}.name"),
                    format!(
                        "{:?} is not a Workflow parameter name: use letters, digits, '-' and '_' (^[-a-zA-Z0-9_]+$)",
                        p.name
                    ),
                ));
            }
            let value = Template::compile(&p.value)
                .map_err(|e| CompileError::template(format!("{pf}.value"), e))?;
            parameters.push((p.name.clone(), value));
        }
        Ok(Trigger::kube(ArgoWorkflow {
            template: spec.workflow_template_ref.name.clone(),
            cluster_scope: spec.workflow_template_ref.cluster_scope.unwrap_or(false),
            parameters,
            service_account_name: spec.service_account_name.clone(),
            metadata: spec.metadata.compile(field)?,
        }))
    }

    fn required_api(&self) -> Option<&'static ApiRef> {
        Some(&WORKFLOW)
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        vec![]
    }
}

impl KubeTarget for ArgoWorkflow {
    fn api(&self) -> &'static ApiRef {
        &WORKFLOW
    }

    fn build_object(
        &self,
        ctx: &RenderContext<'_>,
        id: &ObjectIdentity,
    ) -> Result<Value, RenderError> {
        let mut template_ref = json!({"name": self.template});
        if self.cluster_scope {
            template_ref["clusterScope"] = true.into();
        }
        let mut spec = json!({"workflowTemplateRef": template_ref});
        if !self.parameters.is_empty() {
            let parameters = self
                .parameters
                .iter()
                .map(|(n, t)| Ok(json!({"name": n, "value": t.render(ctx.scope)?})))
                .collect::<Result<Vec<_>, RenderError>>()?;
            spec["arguments"] = json!({"parameters": parameters});
        }
        if let Some(sa) = &self.service_account_name {
            spec["serviceAccountName"] = sa.as_str().into();
        }
        Ok(json!({
            "apiVersion": WORKFLOW.api_version(),
            "kind": WORKFLOW.kind,
            "metadata": self.metadata.render(ctx, id)?,
            "spec": spec,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_kube, object};

    #[test]
    fn workflow_references_the_template_with_interpolated_parameters() {
        let spec: ArgoWorkflowTarget = serde_json::from_value(json!({
            "workflowTemplateRef": {"name": "ship-it", "clusterScope": true},
            "arguments": {"parameters": [{"name": "version", "value": "$(data.version)"},
                                         {"name": "app", "value": "$(data.app_name)"}]},
            "serviceAccountName": "argo-runner"
        }))
        .unwrap();
        let obj = object(&*compile_kube(&spec).unwrap());
        assert_eq!(obj["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(obj["kind"], "Workflow");
        assert_eq!(
            obj["spec"],
            json!({"workflowTemplateRef": {"name": "ship-it", "clusterScope": true},
                   "arguments": {"parameters": [{"name": "version", "value": "1.2.3"},
                                                {"name": "app", "value": "Markdown Email"}]},
                   "serviceAccountName": "argo-runner"})
        );
        assert_eq!(obj["metadata"]["labels"]["statused.dev/event-id"], "ev-1");
    }

    #[test]
    fn parameter_names_the_workflow_schema_refuses_make_the_target_invalid() {
        for (name, ok) in [
            ("app-name_2", true),
            ("app.name", false),
            ("app name", false),
            ("ä", false),
        ] {
            let spec: ArgoWorkflowTarget = serde_json::from_value(json!({
                "workflowTemplateRef": {"name": "x"},
                "arguments": {"parameters": [{"name": name, "value": "v"}]}
            }))
            .unwrap();
            match compile_kube(&spec) {
                Ok(_) => assert!(ok, "{name:?} was accepted"),
                Err(e) => {
                    assert!(!ok, "{name:?}: {}", e.message);
                    assert!(
                        e.message.contains("arguments.parameters[0].name")
                            && e.message.contains("^[-a-zA-Z0-9_]+$"),
                        "{}",
                        e.message
                    );
                }
            }
        }
    }

    #[test]
    fn more_parameters_labels_or_annotations_than_the_limits_are_refused() {
        let parameters: Vec<_> = (0..=MAX_PARAMETERS)
            .map(|i| json!({"name": format!("p{i}"), "value": "v"}))
            .collect();
        let spec: ArgoWorkflowTarget = serde_json::from_value(json!({
            "workflowTemplateRef": {"name": "x"}, "arguments": {"parameters": parameters}
        }))
        .unwrap();
        assert_eq!(
            compile_kube(&spec).unwrap_err().message,
            "t.arguments.parameters has 65 entries; at most 64 are allowed"
        );
        let labels: serde_json::Map<String, Value> = (0..=crate::targets::objects::MAX_LABELS)
            .map(|i| (format!("l{i}"), "v".into()))
            .collect();
        let spec: ArgoWorkflowTarget = serde_json::from_value(json!({
            "workflowTemplateRef": {"name": "x"}, "labels": labels
        }))
        .unwrap();
        assert_eq!(
            compile_kube(&spec).unwrap_err().message,
            "t.labels has 33 entries; at most 32 are allowed"
        );
    }

    #[test]
    fn empty_names_are_invalid_targets() {
        let spec: ArgoWorkflowTarget =
            serde_json::from_value(json!({"workflowTemplateRef": {"name": ""}})).unwrap();
        assert!(
            compile_kube(&spec)
                .unwrap_err()
                .message
                .contains("workflowTemplateRef.name")
        );
        let spec: ArgoWorkflowTarget = serde_json::from_value(json!({
            "workflowTemplateRef": {"name": "x"}, "arguments": {"parameters": [{"name": "", "value": "v"}]}
        }))
        .unwrap();
        assert!(
            compile_kube(&spec)
                .unwrap_err()
                .message
                .contains("parameters[0].name")
        );
    }
}
