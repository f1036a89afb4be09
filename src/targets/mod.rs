//! Target kinds. Each file holds one kind's spec (part of the CRD), its reconcile-time
//! validation and its pure request building; [`HttpTarget`] is the one trait they share.
//! Sending and the response policy live in [`send`].

pub mod argo;
pub mod azure_devops;
pub mod bitrise;
pub mod circleci;
pub mod create;
pub mod github;
pub mod github_app;
pub mod gitlab;
pub mod jenkins;
pub mod listener;
pub mod message;
pub mod send;
pub mod signing;
pub mod slack;
pub mod teams;
pub mod tekton;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::api::Target;
use crate::expr::{ExprError, JsonTemplate, Scope, Template};
use crate::naming::ObjectIdentity;
use crate::secrets::SecretSet;
pub use crate::route::error::CompileError;

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
    /// Overrides the operator-wide request timeout (the target's `timeoutSeconds`).
    pub timeout: Option<Duration>,
    /// Credentials and secret URLs to scrub from anything recorded about the answer.
    pub secrets: Vec<String>,
    /// Credentials obtained at send time (a GitHub App installation token).
    pub auth: Option<Arc<dyn DeferredAuth>>,
}

impl HttpRequest {
    pub fn new(method: Method, url: Url, headers: HeaderMap, body: Vec<u8>) -> Self {
        Self {
            method,
            url,
            headers,
            body,
            timeout: None,
            secrets: Vec::new(),
            auth: None,
        }
    }

    /// A JSON POST.
    pub fn post_json(url: Url, mut headers: HeaderMap, body: &serde_json::Value) -> Self {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Self::new(Method::POST, url, headers, body.to_string().into_bytes())
    }

    /// Marks `value` as secret: it is scrubbed from recorded error text, also in its JSON-
    /// and percent-encoded forms and, for `Bearer x`-style values, the bare credential.
    /// (Values shorter than four characters are not credentials and would scrub ordinary
    /// text.)
    pub fn secret(mut self, value: impl Into<String>) -> Self {
        self.add_secret(&value.into());
        self
    }

    fn add_secret(&mut self, value: &str) {
        let value = value.trim();
        if value.len() < 4 {
            return;
        }
        let mut forms = vec![
            value.to_string(),
            value.replace('/', "\\/"),
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ];
        if let Ok(decoded) = percent_encoding::percent_decode_str(value).decode_utf8() {
            forms.push(decoded.into_owned());
        }
        if let Some((_, credential)) = value.split_once(' ') {
            forms.push(credential.trim().to_string());
        }
        for form in forms {
            if form.len() >= 4 && !self.secrets.contains(&form) {
                self.secrets.push(form);
            }
        }
    }

    /// Marks a URL from a Secret as secret: its path, every long path segment and every
    /// query value (incoming-webhook URLs carry their token in either).
    pub fn secret_url(mut self, url: &Url) -> Self {
        self.add_secret(url.username());
        if let Some(password) = url.password() {
            self.add_secret(password);
        }
        if url.path().len() > 1 {
            self.add_secret(url.path());
        }
        for segment in url
            .path_segments()
            .into_iter()
            .flatten()
            .filter(|s| s.len() >= 8)
        {
            self.add_secret(segment);
        }
        for (_, value) in url.query_pairs() {
            self.add_secret(&value);
        }
        if let Some(query) = url.query() {
            self.add_secret(query);
        }
        self
    }

    /// `text` with every secret of this request replaced by `[redacted]`, longest first so
    /// that a secret containing another is removed whole.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.secrets.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
            .into_iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "[redacted]"))
    }
}

/// Credentials that need a network call before the request can be sent.
pub trait DeferredAuth: Send + Sync {
    /// The `Authorization` header value and the credential inside it (to be redacted), or the
    /// outcome to record when it cannot be had.
    fn authorization<'a>(
        &'a self,
        client: &'a reqwest::Client,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(HeaderValue, String), send::Outcome>>;

    /// The service rejected the credential (401): forget it so the next attempt gets a new one.
    fn invalidate(&self);
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may come from a Secret (incoming-webhook URLs embed their token).
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("host", &self.url.host_str())
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
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
    /// Never call twice, even when an outcome is unknown (`onUncertain: fail`).
    fn at_most_once(&self) -> bool {
        false
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

/// Why a request could not be rendered for one event (a permanent failure for that target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error("{0}")]
    Invalid(String),
}

/// Compiles one target entry of a rule. `field` is its path, e.g. `rules[0].targets[1]`.
pub fn compile(
    field: &str,
    target: &Target,
    secrets: &SecretSet,
) -> Result<CompiledTarget, CompileError> {
    let kinds = target.kinds();
    let [kind] = kinds.as_slice() else {
        return Err(CompileError::invalid(
            field,
            format!(
                "set exactly one target kind ({}), found {}",
                Target::KINDS.join(", "),
                kinds.len()
            ),
        ));
    };
    let f = format!("{field}.{kind}");
    if !target.on_uncertain.is_retry() && matches!(*kind, "tekton" | "argoWorkflow") {
        return Err(CompileError::invalid(
            &format!("{field}.onUncertain"),
            "applies to HTTP kinds only: Tekton and Argo objects are created exactly once",
        ));
    }
    let http: Box<dyn HttpTarget> = match target {
        Target {
            tekton: Some(spec), ..
        } => return Ok(CompiledTarget::Kube(Box::new(tekton::compile(&f, spec)?))),
        Target {
            argo_workflow: Some(spec),
            ..
        } => {
            return Ok(CompiledTarget::Kube(Box::new(argo::compile(&f, spec)?)));
        }
        Target {
            github_dispatch: Some(spec),
            ..
        } => Box::new(github::compile(&f, spec, secrets)?),
        Target {
            webhook: Some(spec),
            ..
        } => Box::new(webhook::compile(&f, spec, secrets)?),
        Target {
            tekton_event_listener: Some(spec),
            ..
        } => Box::new(listener::compile_tekton(&f, spec, secrets)?),
        Target {
            argo_events_webhook: Some(spec),
            ..
        } => Box::new(listener::compile_argo_events(&f, spec, secrets)?),
        Target {
            gitlab_pipeline: Some(spec),
            ..
        } => Box::new(gitlab::compile(&f, spec, secrets)?),
        Target {
            bitrise: Some(spec),
            ..
        } => Box::new(bitrise::compile(&f, spec, secrets)?),
        Target {
            circleci: Some(spec),
            ..
        } => Box::new(circleci::compile(&f, spec, secrets)?),
        Target {
            jenkins: Some(spec),
            ..
        } => Box::new(jenkins::compile(&f, spec, secrets)?),
        Target {
            azure_devops: Some(spec),
            ..
        } => Box::new(azure_devops::compile(&f, spec, secrets)?),
        Target {
            slack: Some(spec), ..
        } => Box::new(slack::compile(&f, spec, secrets)?),
        Target {
            teams: Some(spec), ..
        } => Box::new(teams::compile(&f, spec, secrets)?),
        _ => unreachable!("kinds() found exactly one kind"),
    };
    let timeout = match target.timeout_seconds {
        None => None,
        Some(secs @ 1..=MAX_TIMEOUT_SECONDS) => Some(Duration::from_secs(secs.into())),
        Some(_) => {
            return Err(CompileError::invalid(
                &format!("{field}.timeoutSeconds"),
                format!("must be between 1 and {MAX_TIMEOUT_SECONDS}"),
            ));
        }
    };
    let at_most_once = target.on_uncertain == crate::api::OnUncertain::Fail;
    if timeout.is_none() && !at_most_once {
        return Ok(CompiledTarget::Http(http));
    }
    Ok(CompiledTarget::Http(Box::new(Configured {
        inner: http,
        timeout,
        at_most_once,
    })))
}

/// The longest per-target timeout; a slower target should answer 202 and work in the
/// background.
pub const MAX_TIMEOUT_SECONDS: u32 = 300;

/// An HTTP target with the settings every kind shares: its own timeout (`timeoutSeconds`)
/// and at-most-once calls (`onUncertain: fail`).
#[derive(Debug)]
struct Configured {
    inner: Box<dyn HttpTarget>,
    timeout: Option<Duration>,
    at_most_once: bool,
}

impl HttpTarget for Configured {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let mut request = self.inner.build_request(ctx)?;
        if let Some(timeout) = self.timeout {
            request.timeout = Some(timeout);
        }
        Ok(request)
    }

    fn response_id(&self, body: &[u8]) -> Option<String> {
        self.inner.response_id(body)
    }

    fn at_most_once(&self) -> bool {
        self.at_most_once
    }
}

/// Parses an http(s) URL, for reconcile-time validation. The URL itself is not echoed because
/// it may come from a Secret.
pub fn parse_http_url(field: &str, raw: &str) -> Result<Url, CompileError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| CompileError::invalid(field, format!("not a valid URL ({e})")))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        // The scheme is not echoed: a malformed `user:pass@host` parses as scheme `user`.
        _ => Err(CompileError::invalid(
            field,
            "URL must be http or https with a host",
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
    crate::duration::parse_go_duration(value)
        .map(|_| ())
        .ok_or_else(|| {
            CompileError::invalid(
                field,
                format!("{value:?} is not a duration like 1h30m or 45m"),
            )
        })
}

/// A JSON body whose strings are templates; without one, the whole CloudEvent is sent.
#[derive(Debug)]
pub struct EventBody(Option<JsonTemplate>);

impl EventBody {
    pub fn compile(field: &str, spec: Option<&serde_json::Value>) -> Result<Self, CompileError> {
        spec.map(JsonTemplate::compile)
            .transpose()
            .map(Self)
            .map_err(|e| CompileError::template(field, e))
    }

    pub fn render(&self, scope: &Scope) -> Result<serde_json::Value, RenderError> {
        match &self.0 {
            Some(t) => Ok(t.render(scope)?),
            None => Ok(scope.event().clone()),
        }
    }
}

/// A URL read from a Secret (incoming-webhook URLs embed their token): `Debug` shows only
/// the host.
#[derive(Clone)]
pub struct SecretUrl(pub Url);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretUrl")
            .field(&self.0.host_str())
            .finish()
    }
}

/// `(name, template)` pairs from a map of templated strings (variables, inputs, parameters).
pub fn compile_templates(
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<Vec<(String, Template)>, CompileError> {
    map.iter()
        .map(|(k, v)| {
            if k.trim().is_empty() {
                return Err(CompileError::invalid(field, "names must not be empty"));
            }
            let t = Template::compile(v)
                .map_err(|e| CompileError::template(&format!("{field}.{k}"), e))?;
            Ok((k.clone(), t))
        })
        .collect()
}

pub fn render_templates(
    templates: &[(String, Template)],
    scope: &Scope,
) -> Result<Vec<(String, String)>, RenderError> {
    templates
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.render(scope)?)))
        .collect()
}

/// An optional templated string field.
pub fn compile_opt(field: &str, value: Option<&str>) -> Result<Option<Template>, CompileError> {
    value
        .map(|v| Template::compile(v).map_err(|e| CompileError::template(field, e)))
        .transpose()
}

pub fn render_opt(t: &Option<Template>, scope: &Scope) -> Result<Option<String>, RenderError> {
    t.as_ref()
        .map(|t| t.render(scope))
        .transpose()
        .map_err(Into::into)
}

/// A base URL (default or user override), without its trailing slash.
pub fn base_url(field: &str, value: Option<&str>, default: &str) -> Result<String, CompileError> {
    let url = parse_http_url(field, value.unwrap_or(default))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `base` joined with `path` (which starts with `/`).
pub fn join_url(field: &str, base: &str, path: &str) -> Result<Url, CompileError> {
    Url::parse(&format!("{base}{path}")).map_err(|e| CompileError::invalid(field, e))
}

/// A non-empty credential from a Secret.
pub fn credential(
    field: &str,
    sel: &crate::api::SecretKeySelector,
    default_key: &str,
    secrets: &SecretSet,
) -> Result<crate::secrets::SecretValue, CompileError> {
    let value = secrets.text(sel, default_key)?;
    if value.is_empty() {
        return Err(CompileError::invalid(
            field,
            format!(
                "Secret {} key {} is empty",
                sel.name,
                sel.key_or(default_key)
            ),
        ));
    }
    Ok(crate::secrets::SecretValue::new(value))
}

/// A credential's text (Secrets are checked to be UTF-8 when read).
pub fn credential_text(value: &crate::secrets::SecretValue) -> &str {
    std::str::from_utf8(value.as_bytes()).unwrap_or_default()
}

/// A field that must be set and non-empty.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, CompileError> {
    if value.trim().is_empty() {
        Err(CompileError::invalid(field, "is required"))
    } else {
        Ok(value)
    }
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

    /// The request `target` builds for the `build-valid` sample (event id `ev-1`).
    pub fn request(target: &dyn HttpTarget) -> HttpRequest {
        let scope = scope();
        target
            .build_request(&RenderContext {
                scope: &scope,
                event_id: "ev-1",
            })
            .unwrap()
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
    fn redaction_covers_bearer_values_encoded_forms_and_url_parts() {
        let url =
            Url::parse("https://hooks.example.com/services/T000/B000/XXXXSECRET?sig=qu%2Bery")
                .unwrap();
        let r = HttpRequest::new(Method::POST, url.clone(), HeaderMap::new(), Vec::new())
            .secret("Bearer tok3n-value")
            .secret_url(&url);
        assert_eq!(r.redact("saw tok3n-value"), "saw [redacted]");
        assert_eq!(
            r.redact(r#"{"path":"\/services\/T000\/B000\/XXXXSECRET"}"#),
            r#"{"path":"[redacted]"}"#
        );
        assert_eq!(r.redact("segment XXXXSECRET"), "segment [redacted]");
        assert_eq!(
            r.redact("sig qu+ery and qu%2Bery"),
            "sig [redacted] and [redacted]"
        );
        assert_eq!(
            r.redact("ab /"),
            "ab /",
            "short values are not treated as secrets"
        );
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
