//! Target kinds. Each file holds one kind's spec (part of the CRD), its reconcile-time
//! validation and its pure request building; [`HttpTarget`] is the one trait they share.
//! Sending and the response policy live in [`send`].

pub mod argo;
pub mod create;
pub mod github;
pub mod listener;
pub mod send;
pub mod signing;
pub mod tekton;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::api::Target;
use crate::api::conditions::Reason;
use crate::expr::{ExprError, Scope, Template};
use crate::naming::ObjectIdentity;
use crate::secrets::{SecretError, SecretSet};

/// Header every HTTP target sends so that a receiver can deduplicate.
pub const EVENT_ID_HEADER: &str = "x-statused-event-id";
pub const USER_AGENT: &str = concat!("statused-operator/", env!("CARGO_PKG_VERSION"));

/// A request ready to send. Header values that carry credentials are marked sensitive, which
/// keeps them out of `Debug` output.
pub struct HttpRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may come from a Secret (incoming-webhook URLs embed their token).
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("host", &self.url.host_str())
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What a target needs to render its request for one event.
pub struct RenderContext<'a> {
    pub scope: &'a Scope,
    pub event_id: &'a str,
}

/// A target that is triggered by one HTTP request.
pub trait HttpTarget: Send + Sync + fmt::Debug {
    fn kind(&self) -> &'static str;
    /// Builds the exact request this event sends. Pure.
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError>;
    /// An identifier the service returned in a successful answer, worth recording.
    fn response_id(&self, _body: &[u8]) -> Option<String> {
        None
    }
}

/// A target that is triggered by creating one object through the Kubernetes API, in the
/// route's namespace, under a name derived from route, rule, target and event.
pub trait KubeTarget: Send + Sync + fmt::Debug {
    fn kind(&self) -> &'static str;
    fn api(&self) -> &'static ApiRef;
    /// Builds the exact object this event creates. Pure.
    fn build_object(
        &self,
        ctx: &RenderContext<'_>,
        identity: &ObjectIdentity,
    ) -> Result<serde_json::Value, RenderError>;
}

/// A target compiled from its spec and Secrets when the route was reconciled.
#[derive(Debug)]
pub enum CompiledTarget {
    Http(Box<dyn HttpTarget>),
    Kube(Box<dyn KubeTarget>),
}

impl CompiledTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            CompiledTarget::Http(t) => t.kind(),
            CompiledTarget::Kube(t) => t.kind(),
        }
    }
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

/// The in-cluster API a target spec needs, so the reconciler can check it is served.
pub fn required_api(target: &Target) -> Option<&'static ApiRef> {
    if target.tekton.is_some() {
        Some(&tekton::PIPELINE_RUN)
    } else if target.argo_workflow.is_some() {
        Some(&argo::WORKFLOW)
    } else {
        None
    }
}

/// Why a target could not be compiled; becomes the route's Ready condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub reason: Reason,
    pub message: String,
}

impl CompileError {
    pub fn invalid(field: &str, problem: impl fmt::Display) -> Self {
        Self {
            reason: Reason::InvalidTarget,
            message: format!("{field}: {problem}"),
        }
    }

    pub fn template(field: &str, err: ExprError) -> Self {
        Self {
            reason: Reason::InvalidTemplate,
            message: format!("{field}: {err}"),
        }
    }
}

impl From<SecretError> for CompileError {
    fn from(err: SecretError) -> Self {
        let reason = match err {
            SecretError::NotFound { .. } => Reason::SecretNotFound,
            SecretError::KeyMissing { .. } | SecretError::NotText { .. } => {
                Reason::SecretKeyMissing
            }
        };
        Self {
            reason,
            message: err.to_string(),
        }
    }
}

/// Why a request could not be rendered for one event (a permanent failure for that target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error("{0}")]
    Invalid(String),
}

/// The kinds a target entry can set, in the order of the spec's fields.
pub const KINDS: &[&str] = &[
    "githubDispatch",
    "webhook",
    "tekton",
    "argoWorkflow",
    "tektonEventListener",
    "argoEventsWebhook",
];

/// Compiles one target entry of a rule. `field` is its path, e.g. `rules[0].targets[1]`.
pub fn compile(
    field: &str,
    target: &Target,
    secrets: &SecretSet,
) -> Result<CompiledTarget, CompileError> {
    let Target {
        github_dispatch,
        webhook,
        tekton,
        argo_workflow,
        tekton_event_listener,
        argo_events_webhook,
    } = target;
    let set = [
        github_dispatch.is_some(),
        webhook.is_some(),
        tekton.is_some(),
        argo_workflow.is_some(),
        tekton_event_listener.is_some(),
        argo_events_webhook.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err(CompileError::invalid(
            field,
            format!(
                "set exactly one target kind ({}), found {set}",
                KINDS.join(", ")
            ),
        ));
    }
    let at = |kind: &str| format!("{field}.{kind}");
    let http = |t: Box<dyn HttpTarget>| Ok(CompiledTarget::Http(t));
    let kube = |t: Box<dyn KubeTarget>| Ok(CompiledTarget::Kube(t));
    if let Some(spec) = github_dispatch {
        return http(Box::new(github::compile(
            &at("githubDispatch"),
            spec,
            secrets,
        )?));
    }
    if let Some(spec) = webhook {
        return http(Box::new(webhook::compile(&at("webhook"), spec, secrets)?));
    }
    if let Some(spec) = tekton {
        return kube(Box::new(tekton::compile(&at("tekton"), spec)?));
    }
    if let Some(spec) = argo_workflow {
        return kube(Box::new(argo::compile(&at("argoWorkflow"), spec)?));
    }
    if let Some(spec) = tekton_event_listener {
        return http(Box::new(listener::compile_tekton(
            &at("tektonEventListener"),
            spec,
            secrets,
        )?));
    }
    if let Some(spec) = argo_events_webhook {
        return http(Box::new(listener::compile_argo_events(
            &at("argoEventsWebhook"),
            spec,
            secrets,
        )?));
    }
    unreachable!("exactly one kind is set")
}

/// Parses an http(s) URL, for reconcile-time validation. The URL itself is not echoed because
/// it may come from a Secret.
pub fn parse_http_url(field: &str, raw: &str) -> Result<Url, CompileError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| CompileError::invalid(field, format!("not a valid URL ({e})")))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        scheme => Err(CompileError::invalid(
            field,
            format!("URL must be http or https with a host, not {scheme}:"),
        )),
    }
}

/// A header value holding a credential.
pub fn sensitive(value: &str) -> Result<HeaderValue, RenderError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| RenderError::Invalid("credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Headers every HTTP target sends.
pub fn base_headers(ctx: &RenderContext<'_>) -> Result<HeaderMap, RenderError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    headers.insert(
        HeaderName::from_static(EVENT_ID_HEADER),
        HeaderValue::from_str(ctx.event_id)
            .map_err(|_| RenderError::Invalid("event id is not a valid header value".into()))?,
    );
    Ok(headers)
}

/// Label or annotation values with templates; keys are checked at compile time.
#[derive(Debug, Default)]
pub struct TemplateMap(Vec<(String, Template)>);

impl TemplateMap {
    pub fn compile(field: &str, map: &BTreeMap<String, String>) -> Result<Self, CompileError> {
        map.iter()
            .map(|(k, v)| {
                crate::naming::check_user_key(k).map_err(|e| CompileError::invalid(field, e))?;
                let t = Template::compile(v)
                    .map_err(|e| CompileError::template(&format!("{field}.{k}"), e))?;
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

/// `metadata` for a created object: the user's labels and annotations, then the operator's
/// identity, which wins so that the exactly-once labels cannot be overridden.
pub fn metadata(
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

/// A Go duration as Tekton and Argo accept it: `1h30m`, `45s`, `1.5h`, `0`.
pub fn check_duration(field: &str, value: &str) -> Result<(), CompileError> {
    const UNITS: [&str; 7] = ["ns", "us", "µs", "ms", "s", "m", "h"];
    let invalid = || {
        CompileError::invalid(
            field,
            format!("{value:?} is not a duration like 1h30m or 45m"),
        )
    };
    if value == "0" {
        return Ok(());
    }
    if value.is_empty() {
        return Err(invalid());
    }
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if digits == 0 || rest[..digits].parse::<f64>().is_err() {
            return Err(invalid());
        }
        rest = &rest[digits..];
        let unit = UNITS
            .iter()
            .filter(|u| rest.starts_with(**u))
            .max_by_key(|u| u.len())
            .ok_or_else(invalid)?;
        rest = &rest[unit.len()..];
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::naming::IdentityInput;

    /// The `build-valid` sample as targets see it.
    pub fn scope() -> Scope {
        let body = std::fs::read(format!(
            "{}/tests/fixtures/samples/build-valid.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let env = crate::event::Envelope::parse(&body).unwrap();
        Scope::new(&env.to_value(), "mobile-ci", "releases")
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
        })
    }

    #[test]
    fn go_durations_are_checked() {
        for ok in ["0", "1h", "1h30m", "45m0s", "1.5h", "300ms"] {
            assert!(check_duration("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1", "h", "an hour", "1d", "-1h", "1h-"] {
            assert!(check_duration("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn two_kinds_in_one_entry_is_invalid() {
        let t: Target = serde_json::from_value(serde_json::json!({
            "webhook": {"url": "http://x/"}, "tekton": {"pipelineRef": {"name": "p"}}
        }))
        .unwrap();
        let err = compile("rules[0].targets[0]", &t, &SecretSet::new("ns")).unwrap_err();
        assert!(
            err.message.contains("exactly one target kind"),
            "{}",
            err.message
        );
    }
}
