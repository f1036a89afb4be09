//! `webhook`: any HTTP endpoint, with a templated JSON body.

use std::collections::BTreeMap;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::error::CompileError;
use super::fields::{EventBody, Field, at_most};
use super::kind::{Kind, Trigger};
use super::request::{
    HttpRequest, HttpTarget, RenderContext, RenderError, base_headers, sensitive,
};
use super::signing::{Algorithm, BodySignature, BodySigner, Scheme};
use super::standard_webhooks::{StandardSigner, StandardWebhooks};
use crate::expr::Template;
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};

/// The most extra headers a target sends (`headers`; `webhook`, `tektonEventListener`,
/// `argoEventsWebhook`): far more than a receiver reads, and each is templated per call.
pub const MAX_HEADERS: usize = 32;

spec! {
pub struct WebhookTarget {
    /// Secret key holding the URL (key defaults to `url`). Incoming-webhook URLs usually embed
    /// a token, so they belong in a Secret.
    pub url_secret_ref: Option<SecretKeySelector>,
    /// The URL, when it is not secret. Set this or `urlSecretRef`.
    pub url: Option<String>,
    /// HTTP method, default `POST`.
    pub method: Option<String>,
    /// Extra headers (at most 32); values are templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_HEADERS))]
    pub headers: BTreeMap<String, String>,
    /// A Secret whose every key is a header name and whose value is that header's value
    /// (for `Authorization` and API keys). Only `name` is used.
    pub headers_secret_ref: Option<SecretKeySelector>,
    /// JSON body; strings are templated. Defaults to the whole CloudEvent.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub body: Option<serde_json::Value>,
    /// Re-sign the body sent with HMAC-SHA256; header defaults to `X-Statused-Signature`,
    /// prefix to `sha256=`.
    pub signature: Option<BodySignature>,
    /// Send `Idempotency-Key: <event id>` so the receiver can drop repeats.
    pub idempotency_key: Option<bool>,
    /// Sign as the Standard Webhooks specification says (`webhook-id`: the event id, the
    /// same on every retry and redelivery; `webhook-timestamp`; `webhook-signature`), so that
    /// the receiver verifies with that specification's libraries.
    pub standard_webhooks: Option<StandardWebhooks>,
}
}

/// The receiver's own signature, re-made over the body sent.
const SIGNATURE: Scheme = Scheme {
    header: crate::signature::SIGNATURE_HEADER,
    prefix: "sha256=",
    algorithm: Algorithm::Sha256,
    exact_key: false,
};

pub struct Webhook {
    url_from_secret: bool,
    /// Field of a JSON success answer recorded on the delivery (Tekton's `eventID`).
    pub(super) response_id_field: Option<&'static str>,
    pub(super) signer: Option<BodySigner>,
    /// `standardWebhooks`.
    standard: Option<StandardSigner>,
    idempotency_key: bool,
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, Template)>,
    secret_headers: Vec<(HeaderName, SecretValue)>,
    body: EventBody,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("method", &self.method)
            .field("host", &self.url.host_str())
            .finish_non_exhaustive()
    }
}

const METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET", "DELETE"];

pub fn compile(
    field: &Field,
    spec: &WebhookTarget,
    secrets: &SecretSet,
) -> Result<Webhook, CompileError> {
    let mut w = compile_kind(field, spec, secrets)?;
    if let Some(sig) = &spec.signature {
        w.signer = Some(BodySigner::compile(
            &field.at("signature"),
            sig,
            secrets,
            &SIGNATURE,
        )?);
    }
    if let Some(standard) = &spec.standard_webhooks {
        w.standard = Some(StandardSigner::compile(
            &field.at("standardWebhooks"),
            standard,
            secrets,
        )?);
    }
    Ok(w)
}

/// The request-building core shared by every kind that POSTs JSON to a URL.
pub(super) fn compile_kind(
    field: &Field,
    spec: &WebhookTarget,
    secrets: &SecretSet,
) -> Result<Webhook, CompileError> {
    let url = match (&spec.url, &spec.url_secret_ref) {
        (Some(url), None) => super::fields::parse_http_url(&field.at("url"), url)?,
        (None, Some(sel)) => {
            super::fields::parse_http_url(&field.at("urlSecretRef"), &secrets.text(sel, "url")?)?
        }
        _ => {
            return Err(CompileError::invalid(
                field,
                "set exactly one of url and urlSecretRef",
            ));
        }
    };
    let method_name = spec
        .method
        .as_deref()
        .unwrap_or("POST")
        .to_ascii_uppercase();
    if !METHODS.contains(&method_name.as_str()) {
        return Err(CompileError::invalid(
            field.at("method"),
            format!("{method_name:?} is not one of {}", METHODS.join(", ")),
        ));
    }
    let method = Method::from_bytes(method_name.as_bytes())
        .map_err(|e| CompileError::invalid(field.at("method"), e))?;
    at_most(field.at("headers"), spec.headers.len(), MAX_HEADERS)?;
    let mut headers = Vec::new();
    for (name, value) in &spec.headers {
        let header_field = field.at("headers").at(name);
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CompileError::invalid(&header_field, "not a valid header name"))?;
        let value =
            Template::compile(value).map_err(|e| CompileError::template(&header_field, e))?;
        headers.push((name, value));
    }
    let mut secret_headers = Vec::new();
    if let Some(sel) = &spec.headers_secret_ref {
        for (name, value) in secrets.all(&sel.name)? {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CompileError::invalid(
                    field.at("headersSecretRef"),
                    format!(
                        "Secret {} key {name:?} is not a valid header name",
                        sel.name
                    ),
                )
            })?;
            secret_headers.push((name, value.clone()));
        }
    }
    let body = EventBody::compile(&field.at("body"), spec.body.as_ref())?;
    Ok(Webhook {
        url_from_secret: spec.url_secret_ref.is_some(),
        response_id_field: None,
        signer: None,
        standard: None,
        idempotency_key: spec.idempotency_key.unwrap_or(false),
        method,
        url,
        headers,
        secret_headers,
        body,
    })
}

impl HttpTarget for Webhook {
    fn response_id(&self, body: &[u8]) -> Option<String> {
        let field = self.response_id_field?;
        let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
        answer.get(field)?.as_str().map(str::to_string)
    }

    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let body = self.body.render(ctx.scope)?;
        let mut headers = base_headers(ctx)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, template) in &self.headers {
            let value = template.render(ctx.scope)?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                RenderError::Invalid(format!("header {name} rendered to an invalid value"))
            })?;
            headers.insert(name.clone(), value);
        }
        for (name, value) in &self.secret_headers {
            let text = std::str::from_utf8(value.as_bytes()).map_err(|_| {
                RenderError::Invalid(format!("header {name} from Secret is not text"))
            })?;
            headers.insert(name.clone(), sensitive(text.trim())?);
        }
        if self.idempotency_key {
            headers.insert(
                HeaderName::from_static("idempotency-key"),
                HeaderValue::from_str(&ctx.idempotency_key()).map_err(|_| {
                    RenderError::Invalid("event id is not a valid header value".into())
                })?,
            );
        }
        let body = body.to_string().into_bytes();
        if let Some(signer) = &self.signer {
            let (name, value) = signer.sign(&body)?;
            headers.insert(name, value);
        }
        if let Some(standard) = &self.standard {
            let now = jiff::Timestamp::now().as_second();
            for (name, value) in standard.headers(ctx.event_id, now, &body)? {
                headers.insert(name, value);
            }
        }
        let mut request = HttpRequest::new(self.method.clone(), self.url.clone(), headers, body);
        for (_, value) in &self.secret_headers {
            request = request.secret(String::from_utf8_lossy(value.as_bytes()).trim());
        }
        if self.url_from_secret {
            request = request.secret_url(&self.url);
        }
        Ok(request)
    }
}

impl Kind for WebhookTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        Ok(Trigger::http(compile(field, self, secrets)?))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        let mut refs = secret_refs(
            &self.url_secret_ref,
            &self.headers_secret_ref,
            &self.signature,
        );
        refs.extend(self.standard_webhooks.iter().flat_map(|s| &s.secret_refs));
        refs
    }
}

/// The Secrets a kind that POSTs to a URL reads: the URL's, the headers' and the signing
/// key's, each when set.
pub(super) fn secret_refs<'a>(
    url: &'a Option<SecretKeySelector>,
    headers: &'a Option<SecretKeySelector>,
    signature: &'a Option<BodySignature>,
) -> Vec<&'a SecretKeySelector> {
    url.iter()
        .chain(headers)
        .chain(signature.iter().map(|s| &s.secret_ref))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Reason;
    use crate::targets::test_support::request_for;
    use serde_json::json;

    /// The request `t` builds for this module's event (`ev-9`).
    fn build(t: &dyn HttpTarget) -> HttpRequest {
        let event = json!({"specversion": "1.0", "id": "ev-9", "type": "com.statused.app.status.updated",
            "source": "statused", "data": {"app_name": "Markdown Email", "version": "1.2.3"}});
        request_for(t, &event)
    }

    fn spec(v: serde_json::Value) -> WebhookTarget {
        serde_json::from_value(v).unwrap()
    }

    fn secrets() -> SecretSet {
        SecretSet::new("mobile-ci")
            .with(
                "chat-hook",
                &[("url", "https://chat.example.test/hooks/T0K3N")],
            )
            .with("hook-headers", &[("Authorization", "Bearer s3cr3t")])
    }

    #[test]
    fn renders_url_from_secret_templated_body_and_secret_headers() {
        let t = compile(
            &Field::new("t"),
            &spec(json!({"urlSecretRef": {"name": "chat-hook"}, "headersSecretRef": {"name": "hook-headers"},
                         "headers": {"X-App": "$(data.app_name)"},
                         "body": {"text": "$(data.app_name) v$(data.version) is live"}})),
            &secrets(),
        )
        .unwrap();
        let req = build(&t);
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.url.as_str(), "https://chat.example.test/hooks/T0K3N");
        assert_eq!(req.headers["authorization"], "Bearer s3cr3t");
        assert_eq!(req.headers["x-app"], "Markdown Email");
        assert_eq!(req.headers["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body, json!({"text": "Markdown Email v1.2.3 is live"}));
        let debug = format!("{req:?} {t:?}");
        assert!(
            !debug.contains("T0K3N") && !debug.contains("s3cr3t"),
            "{debug}"
        );
    }

    #[test]
    fn more_headers_than_the_limit_are_refused_naming_the_count() {
        let headers = |n: usize| -> serde_json::Map<String, serde_json::Value> {
            (0..n).map(|i| (format!("X-H{i}"), "v".into())).collect()
        };
        let with = |n| spec(json!({"url": "http://127.0.0.1:1/", "headers": headers(n)}));
        assert!(compile(&Field::new("t"), &with(MAX_HEADERS), &secrets()).is_ok());
        let err = compile(&Field::new("t"), &with(MAX_HEADERS + 1), &secrets()).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTarget);
        assert_eq!(
            err.message,
            format!("t.headers has 33 entries; at most {MAX_HEADERS} are allowed")
        );
    }

    #[test]
    fn standard_webhooks_headers_sign_the_body_sent_for_the_event_id() {
        let set = secrets().with(
            "sw",
            &[("secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        );
        let t = compile(
            &Field::new("t"),
            &spec(json!({"url": "http://127.0.0.1:1/x",
                         "standardWebhooks": {"secretRefs": [{"name": "sw"}]}})),
            &set,
        )
        .unwrap();
        let before = jiff::Timestamp::now().as_second();
        let req = build(&t);
        assert_eq!(
            req.headers["webhook-id"], "ev-1",
            "the event id it is rendered for"
        );
        let ts: i64 = req.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((before..=before + 5).contains(&ts), "{ts}");
        let key = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        assert_eq!(
            req.headers["webhook-signature"],
            crate::signature::sign_standard(&key, "ev-1", ts, &req.body).as_str()
        );
        let debug = format!("{req:?} {t:?}");
        assert!(!debug.contains("MfKQ9r8G"), "{debug}");
        // The reconciler reads (and watches) the signing Secrets.
        let rotating = spec(json!({"url": "http://127.0.0.1:1/x",
            "standardWebhooks": {"secretRefs": [{"name": "sw"}, {"name": "sw-next"}]}}));
        let refs: Vec<&str> = rotating
            .secret_refs()
            .into_iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(refs, ["sw", "sw-next"]);
    }

    #[test]
    fn default_body_is_the_event() {
        let t = compile(
            &Field::new("t"),
            &spec(json!({"url": "http://127.0.0.1:1/x", "method": "put"})),
            &secrets(),
        )
        .unwrap();
        let req = build(&t);
        assert_eq!(req.method, Method::PUT);
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["id"], "ev-9");
        assert_eq!(body["data"]["version"], "1.2.3");
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases = [
            (json!({"url": "ftp://x/y"}), Reason::InvalidTarget, "t.url"),
            (
                json!({}),
                Reason::InvalidTarget,
                "exactly one of url and urlSecretRef",
            ),
            (
                json!({"url": "http://x/", "method": "TRACE"}),
                Reason::InvalidTarget,
                "t.method",
            ),
            (
                json!({"url": "http://x/", "headers": {"bad name": "v"}}),
                Reason::InvalidTarget,
                "t.headers",
            ),
            (
                json!({"url": "http://x/", "body": {"a": "$(nope.x)"}}),
                Reason::InvalidTemplate,
                "t.body",
            ),
            (
                json!({"urlSecretRef": {"name": "chat-hook", "key": "nokey"}}),
                Reason::SecretKeyMissing,
                "has no key nokey",
            ),
            (
                json!({"urlSecretRef": {"name": "absent"}}),
                Reason::SecretNotFound,
                "absent",
            ),
        ];
        for (s, reason, needle) in cases {
            let err = compile(&Field::new("t"), &spec(s.clone()), &secrets()).unwrap_err();
            assert_eq!(err.reason, reason, "{s}");
            assert!(err.message.contains(needle), "{s}: {}", err.message);
        }
    }

    #[test]
    fn url_from_secret_is_not_echoed_when_invalid() {
        let secrets = SecretSet::new("ns").with("h", &[("url", "not a url T0K3N")]);
        let err = compile(
            &Field::new("t"),
            &spec(json!({"urlSecretRef": {"name": "h"}})),
            &secrets,
        )
        .unwrap_err();
        assert!(!err.message.contains("T0K3N"), "{}", err.message);
    }
}
