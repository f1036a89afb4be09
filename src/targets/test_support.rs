//! What the kinds' unit tests share: the sample event, the request a target builds for it,
//! and an object identity.

use super::error::CompileError;
use super::fields::Field;
use super::kind::{Kind, Trigger};
use super::objects::KubeTarget;
use super::request::{HttpRequest, HttpTarget, RenderContext};
use crate::expr::Scope;
use crate::naming::{IdentityInput, ObjectIdentity};
use crate::secrets::SecretSet;

/// The `build-valid` sample as targets see it.
pub fn scope() -> Scope {
    let body = crate::test_support::sample("build-valid.json");
    let env = crate::event::Envelope::parse(&body).unwrap();
    Scope::new(&env.to_value(), "mobile-ci", "releases")
}

/// The request `target` builds for `event` (a CloudEvent as JSON).
pub fn request_for(target: &dyn HttpTarget, event: &serde_json::Value) -> HttpRequest {
    let scope = Scope::new(event, "mobile-ci", "releases");
    target
        .build_request(&RenderContext {
            scope: &scope,
            event_id: "ev-1",
            round: 0,
        })
        .unwrap()
}

/// The `build-valid` sample with its `data` fields changed.
pub fn sample_with(data: serde_json::Value) -> serde_json::Value {
    let mut event: serde_json::Value =
        serde_json::from_slice(&crate::test_support::sample("build-valid.json")).unwrap();
    for (k, v) in data.as_object().unwrap() {
        event["data"][k] = v.clone();
    }
    event
}

/// The request `target` builds for the `build-valid` sample (event id `ev-1`).
pub fn request(target: &dyn HttpTarget) -> HttpRequest {
    request_for(target, scope().event())
}

pub fn identity() -> ObjectIdentity {
    ObjectIdentity::new(&IdentityInput {
        namespace: "mobile-ci",
        route: "releases",
        rule: "ship",
        target: 0,
        delivery: "releases-0123456789",
        event_id: "ev-1",
        event_type: "com.statused.build.status.updated",
        app_name: Some("Markdown Email"),
        status: Some("Valid"),
        round: 0,
    })
}

/// Compiles a kind's spec at field `t` into its HTTP target.
pub fn compile_http(
    kind: &dyn Kind,
    secrets: &SecretSet,
) -> Result<Box<dyn HttpTarget>, CompileError> {
    match kind.compile(&Field::new("t"), secrets)? {
        Trigger::Http(target) => Ok(target),
        Trigger::Kube(_) => panic!("{} is not an HTTP kind", kind.name()),
    }
}

/// Compiles an in-cluster kind's spec at field `t` into its object builder.
pub fn compile_kube(kind: &dyn Kind) -> Result<Box<dyn KubeTarget>, CompileError> {
    match kind.compile(&Field::new("t"), &SecretSet::new("ns"))? {
        Trigger::Kube(target) => Ok(target),
        Trigger::Http(_) => panic!("{} is not an in-cluster kind", kind.name()),
    }
}

/// A kind's spec read from JSON and compiled with `secrets` at field `t`, and the request it
/// builds for the `build-valid` sample (event id `ev-1`).
pub fn sent<K: Kind + serde::de::DeserializeOwned>(
    spec: serde_json::Value,
    secrets: &SecretSet,
) -> (Box<dyn HttpTarget>, HttpRequest) {
    let spec: K = serde_json::from_value(spec).unwrap();
    let target = compile_http(&spec, secrets).unwrap();
    let request = request(&target);
    (target, request)
}
