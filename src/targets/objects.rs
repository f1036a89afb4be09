//! What the in-cluster kinds (Tekton, Argo) share: the trait, the API they create in, and the
//! object metadata that carries the exactly-once identity.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::CompileError;
use super::fields::{Field, at_most};
use super::request::{RenderContext, RenderError};
use crate::expr::Template;
use crate::naming::ObjectIdentity;

/// A target that is triggered by creating one object through the Kubernetes API, in the
/// route's namespace, under a name derived from route, rule, target and event.
pub trait KubeTarget: Send + Sync + fmt::Debug {
    fn api(&self) -> &'static ApiRef;
    /// Builds the exact object this event creates. Pure.
    fn build_object(
        &self,
        ctx: &RenderContext<'_>,
        identity: &ObjectIdentity,
    ) -> Result<serde_json::Value, RenderError>;
}

/// A resource an in-cluster target creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiRef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// The Helm value that grants the operator access to it.
    pub chart_switch: &'static str,
}

impl ApiRef {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    pub fn api_resource(&self) -> kube::discovery::ApiResource {
        kube::discovery::ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.api_version(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

/// Label or annotation values with templates; keys are checked at compile time.
#[derive(Debug, Default)]
pub struct TemplateMap(Vec<(String, Template)>);

impl TemplateMap {
    pub fn compile(
        field: impl fmt::Display + Copy,
        map: &BTreeMap<String, String>,
    ) -> Result<Self, CompileError> {
        map.iter()
            .map(|(k, v)| {
                crate::naming::check_user_key(k).map_err(|e| CompileError::invalid(field, e))?;
                let t = Template::compile(v)
                    .map_err(|e| CompileError::template(format!("{field}.{k}"), e))?;
                Ok((k.clone(), t))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn render_into(
        &self,
        ctx: &RenderContext<'_>,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), RenderError> {
        for (k, t) in &self.0 {
            out.insert(k.clone(), t.render(ctx.scope)?.into());
        }
        Ok(())
    }
}

/// The most extra labels a route puts on one created object: selectors need a few, and the
/// operator adds its own identity labels on top.
pub const MAX_LABELS: usize = 32;
/// The most extra annotations a route puts on one created object (each templated per event).
pub const MAX_ANNOTATIONS: usize = 32;

/// Labels and annotations a user adds to the object an in-cluster kind creates.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct ExtraMetadata {
    /// Extra labels on the created Workflow or PipelineRun (at most 32); values are templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_LABELS))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the created Workflow or PipelineRun (at most 32); values are
    /// templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_ANNOTATIONS))]
    pub annotations: BTreeMap<String, String>,
}

impl ExtraMetadata {
    /// Checks the counts and keys and compiles the templated values; `field` is the kind's
    /// path.
    pub fn compile(&self, field: &Field) -> Result<CompiledMetadata, CompileError> {
        at_most(field.at("labels"), self.labels.len(), MAX_LABELS)?;
        at_most(
            field.at("annotations"),
            self.annotations.len(),
            MAX_ANNOTATIONS,
        )?;
        Ok(CompiledMetadata {
            labels: TemplateMap::compile(&field.at("labels"), &self.labels)?,
            annotations: TemplateMap::compile(&field.at("annotations"), &self.annotations)?,
        })
    }
}

/// [`ExtraMetadata`], compiled.
#[derive(Debug)]
pub struct CompiledMetadata {
    labels: TemplateMap,
    annotations: TemplateMap,
}

impl CompiledMetadata {
    /// The object's `metadata` for one event (see `metadata`).
    pub fn render(
        &self,
        ctx: &RenderContext<'_>,
        id: &ObjectIdentity,
    ) -> Result<serde_json::Value, RenderError> {
        metadata(ctx, id, &self.labels, &self.annotations)
    }
}

/// `metadata` for a created object: the user's labels and annotations, then the operator's
/// identity, which wins so that the exactly-once labels cannot be overridden.
fn metadata(
    ctx: &RenderContext<'_>,
    id: &ObjectIdentity,
    labels: &TemplateMap,
    annotations: &TemplateMap,
) -> Result<serde_json::Value, RenderError> {
    let mut l = serde_json::Map::new();
    labels.render_into(ctx, &mut l)?;
    for (k, v) in &id.labels {
        l.insert(k.clone(), v.as_str().into());
    }
    let mut a = serde_json::Map::new();
    annotations.render_into(ctx, &mut a)?;
    for (k, v) in &id.annotations {
        a.insert(k.clone(), v.as_str().into());
    }
    Ok(
        serde_json::json!({"name": id.name, "namespace": id.namespace, "labels": l, "annotations": a}),
    )
}
