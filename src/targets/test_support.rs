//! What the kinds' unit tests share: the sample event, the request or object a target
//! builds for it, and an object identity.

use super::error::CompileError;
use super::fields::Field;
use super::kind::{Kind, Trigger};
use super::objects::KubeTarget;
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError};
use crate::expr::Scope;
use crate::naming::{IdentityInput, ObjectIdentity};
use crate::secrets::SecretSet;

/// The `build-valid` sample as targets see it.
pub fn scope() -> Scope {
    let body = crate::test_support::sample("build-valid.json");
    let env = crate::event::Envelope::parse(&body).unwrap();
    Scope::new(&env.to_value(), "mobile-ci", "releases")
}

/// What `target` builds for the event in `scope`, as event id `ev-1`.
fn build(target: &dyn HttpTarget, scope: &Scope) -> Result<HttpRequest, RenderError> {
    target.build_request(&RenderContext {
        scope,
        event_id: "ev-1",
        round: 0,
    })
}

/// The request `target` builds for `event` (a CloudEvent as JSON).
pub fn request_for(target: &dyn HttpTarget, event: &serde_json::Value) -> HttpRequest {
    build(target, &Scope::new(event, "mobile-ci", "releases")).unwrap()
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

/// The request `target` builds for the `build-valid` sample (event id `ev-1`), or why it
/// cannot.
pub fn try_request(target: &dyn HttpTarget) -> Result<HttpRequest, RenderError> {
    build(target, &scope())
}

/// The request `target` builds for the `build-valid` sample (event id `ev-1`).
pub fn request(target: &dyn HttpTarget) -> HttpRequest {
    try_request(target).unwrap()
}

/// The object an in-cluster `target` builds for the `build-valid` sample (event id `ev-1`,
/// [`identity`]).
pub fn object(target: &dyn KubeTarget) -> serde_json::Value {
    let ctx = RenderContext {
        scope: &scope(),
        event_id: "ev-1",
        round: 0,
    };
    target.build_object(&ctx, &identity()).unwrap()
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
        Trigger::Kube(_) => panic!("not an HTTP kind"),
    }
}

/// Compiles an in-cluster kind's spec at field `t` into its object builder.
pub fn compile_kube(kind: &dyn Kind) -> Result<Box<dyn KubeTarget>, CompileError> {
    match kind.compile(&Field::new("t"), &SecretSet::new("ns"))? {
        Trigger::Kube(target) => Ok(target),
        Trigger::Http(_) => panic!("not an in-cluster kind"),
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
