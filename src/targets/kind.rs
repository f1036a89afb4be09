//! What a target kind does, and what compiling one target entry yields.
//!
//! Each kind's spec type (one variant of [`TargetKind`](super::TargetKind)) implements
//! [`Kind`] in the kind's own file; [`TargetKind::as_kind`](super::TargetKind::as_kind) maps
//! the variant to it.

use std::time::Duration;

use super::error::CompileError;
use super::fields::Field;
use super::objects::{ApiRef, KubeTarget};
use super::request::HttpTarget;
use crate::secrets::{SecretKeySelector, SecretSet};

/// One target kind.
pub trait Kind {
    /// Checks the spec and reads its Secrets, at reconcile time; `field` is the kind's path
    /// in the route (`spec.rules[0].targets[1].gitlabPipeline`).
    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError>;
    /// The in-cluster API it creates objects in, which the cluster must serve.
    fn required_api(&self) -> Option<&'static ApiRef> {
        None
    }
    /// Every Secret key it reads, so that the reconciler watches those Secrets.
    fn secret_refs(&self) -> Vec<&SecretKeySelector>;
}

/// How a compiled target is triggered.
#[derive(Debug)]
pub enum Trigger {
    /// One HTTP request.
    Http(Box<dyn HttpTarget>),
    /// One object created through the Kubernetes API.
    Kube(Box<dyn KubeTarget>),
}

impl Trigger {
    pub fn http(target: impl HttpTarget + 'static) -> Self {
        Trigger::Http(Box::new(target))
    }

    pub fn kube(target: impl KubeTarget + 'static) -> Self {
        Trigger::Kube(Box::new(target))
    }
}

/// A target compiled from its spec and Secrets when the route was reconciled.
#[derive(Debug)]
pub struct CompiledTarget {
    /// The kind, as spelled in YAML.
    pub kind: &'static str,
    pub trigger: Trigger,
    /// This target's call timeout (`timeoutSeconds`); the operator's default when `None`.
    pub timeout: Option<Duration>,
    /// Never call twice, even when an outcome is unknown (`onUncertain: fail`).
    pub at_most_once: bool,
    /// `maxConcurrent`, `ratePerMinute`: what this target asks of its destination.
    pub limits: DestinationLimits,
    /// `follow`: how long the run this target starts is followed.
    pub follow: Option<Duration>,
    /// `follow.cancelSuperseded`.
    pub cancel_superseded: bool,
}

/// What a target declares about its destination (`maxConcurrent`, `ratePerMinute`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationLimits {
    pub max_concurrent: Option<u32>,
    pub per_minute: Option<u32>,
}
