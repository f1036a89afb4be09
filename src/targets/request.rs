//! One HTTP request as a target builds it: method, URL, headers, body, and the secrets to
//! scrub from anything recorded about its answer. Also the trait every HTTP kind implements.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::credentials::CredentialCache;
use crate::expr::{ExprError, Scope};

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
    /// Overrides the operator-wide request timeout (the compiled target's `timeout`, set
    /// when the call is planned).
    pub timeout: Option<Duration>,
    /// Credentials and secret URLs to scrub from anything recorded about the answer.
    pub secrets: Vec<String>,
    /// Credentials obtained at send time (a GitHub App installation token).
    pub auth: Option<Arc<dyn DeferredAuth>>,
    /// A service's own reading of a failed answer (code, body), where it documents one:
    /// LaunchDarkly's 409 (a concurrent change) is worth retrying; Jenkins' Generic Webhook
    /// Trigger answers 500 both when nothing started and when some jobs started.
    pub classify_failure: Option<super::outcome::ClassifyFailure>,
    /// How much of a successful answer is kept (default 4 KiB): a run's state, read while it
    /// is followed, is further into its answer than that ([`RUN_ANSWER_BYTES`]).
    pub answer_bytes: Option<usize>,
}

/// How much of the answer to a run's read (`HttpTarget::run_request`) is kept: a GitHub
/// workflow run is about 8 KiB of JSON.
pub const RUN_ANSWER_BYTES: usize = 32 * 1024;

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
            classify_failure: None,
            answer_bytes: None,
        }
    }

    /// A GET that keeps up to [`RUN_ANSWER_BYTES`] of its answer: the read of a run.
    pub fn get_run(url: Url, headers: HeaderMap) -> Self {
        let mut r = Self::new(Method::GET, url, headers, Vec::new());
        r.answer_bytes = Some(RUN_ANSWER_BYTES);
        r
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
    /// `credentials` is the executor's cache of them.
    fn authorization<'a>(
        &'a self,
        client: &'a reqwest::Client,
        credentials: &'a CredentialCache,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(HeaderValue, String), super::outcome::Outcome>>;

    /// The service rejected the credential (401): forget it so the next attempt gets a new one.
    fn invalidate(&self, credentials: &CredentialCache);
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
    /// The redelivery round (0: the event as received).
    pub round: u32,
}

impl RenderContext<'_> {
    /// The `Idempotency-Key` of this call: the event id, and the redelivery round after the
    /// first, so that a receiver that remembers keys runs a redelivery asked for by hand.
    pub fn idempotency_key(&self) -> String {
        match self.round {
            0 => self.event_id.to_string(),
            n => format!("{}-redelivery-{n}", self.event_id),
        }
    }
}

/// A target that is triggered by one HTTP request.
pub trait HttpTarget: Send + Sync + fmt::Debug {
    /// Builds the exact request this event sends. Pure.
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError>;
    /// An identifier the service returned in a successful answer, worth recording.
    fn response_id(&self, _body: &[u8]) -> Option<String> {
        None
    }
    /// What the service says it started, from a successful answer (a GitHub workflow run).
    fn created(&self, _body: &[u8]) -> Option<super::outcome::CreatedObject> {
        None
    }
    /// Whether the runs this target starts can be followed (`follow`), or why not.
    fn followable(&self) -> Result<(), String> {
        Err("only tekton, argoWorkflow and githubDispatch (workflow, with returnRunDetails) targets start a run the operator can follow".into())
    }
    /// The request that reads the run `created` names, for a kind whose runs can be followed
    /// (`follow`); `None` for the others.
    fn run_request(&self, _created: &super::outcome::CreatedObject) -> Option<HttpRequest> {
        None
    }
    /// What a successful answer to [`Self::run_request`] says of the run.
    fn run_reading(&self, _body: &[u8]) -> Option<super::outcome::RunReading> {
        None
    }
}

/// A compiled target as a `Trigger` holds it.
impl<T: HttpTarget + ?Sized> HttpTarget for Box<T> {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        (**self).build_request(ctx)
    }

    fn response_id(&self, body: &[u8]) -> Option<String> {
        (**self).response_id(body)
    }

    fn created(&self, body: &[u8]) -> Option<super::outcome::CreatedObject> {
        (**self).created(body)
    }

    fn followable(&self) -> Result<(), String> {
        (**self).followable()
    }

    fn run_request(&self, created: &super::outcome::CreatedObject) -> Option<HttpRequest> {
        (**self).run_request(created)
    }

    fn run_reading(&self, body: &[u8]) -> Option<super::outcome::RunReading> {
        (**self).run_reading(body)
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

/// A header value holding a credential.
pub fn sensitive(value: &str) -> Result<HeaderValue, RenderError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| RenderError::Invalid("credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A JSON POST that carries `token` in header `name`: the header is marked sensitive and
/// the token is redacted from anything recorded about the answer.
pub fn token_post(
    ctx: &RenderContext<'_>,
    url: &Url,
    name: HeaderName,
    token: &str,
    body: &serde_json::Value,
) -> Result<HttpRequest, RenderError> {
    let mut headers = base_headers(ctx)?;
    headers.insert(name, sensitive(token)?);
    Ok(HttpRequest::post_json(url.clone(), headers, body).secret(token))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
