//! Target kinds. Each file holds one kind's spec (part of the CRD), its reconcile-time
//! validation and its pure request building; [`HttpTarget`] is the one trait they share.
//! Sending and the response policy live in [`send`].

pub mod github;
pub mod send;
pub mod webhook;

use std::fmt;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::api::Target;
use crate::api::conditions::Reason;
use crate::expr::{ExprError, Scope};
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
}

/// A target compiled from its spec and Secrets when the route was reconciled.
#[derive(Debug)]
pub enum CompiledTarget {
    Http(Box<dyn HttpTarget>),
}

impl CompiledTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            CompiledTarget::Http(t) => t.kind(),
        }
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

/// Compiles one target entry of a rule. `field` is its path, e.g. `rules[0].targets[1]`.
pub fn compile(
    field: &str,
    target: &Target,
    secrets: &SecretSet,
) -> Result<CompiledTarget, CompileError> {
    let Target {
        github_dispatch,
        webhook,
    } = target;
    let set = [github_dispatch.is_some(), webhook.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if set != 1 {
        return Err(CompileError::invalid(
            field,
            format!("set exactly one target kind (githubDispatch, webhook), found {set}"),
        ));
    }
    if let Some(spec) = github_dispatch {
        return Ok(CompiledTarget::Http(Box::new(github::compile(
            &format!("{field}.githubDispatch"),
            spec,
            secrets,
        )?)));
    }
    if let Some(spec) = webhook {
        return Ok(CompiledTarget::Http(Box::new(webhook::compile(
            &format!("{field}.webhook"),
            spec,
            secrets,
        )?)));
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
