//! Front doors users may already run: `tektonEventListener` (a Tekton Triggers
//! EventListener) and `argoEventsWebhook` (an Argo Events webhook EventSource). Both get the
//! event (or a templated body) POSTed as JSON, optionally HMAC-signed in the header their
//! interceptor checks.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::CompileError;
use super::fields::Field;
use super::kind::{Kind, Trigger};
use super::signing::{Algorithm, BodySignature, BodySigner, Scheme};
use super::webhook::{self, Webhook, WebhookTarget};
use crate::secrets::{SecretKeySelector, SecretSet};

spec! {
pub struct ListenerTarget {
    /// The listener's URL, e.g. `http://el-mobile.ci.svc:8080` or an Argo Events
    /// `http://webhook-eventsource-svc.argo-events:12000/statused`. Set this or `urlSecretRef`.
    pub url: Option<String>,
    /// Secret key holding the URL (key defaults to `url`).
    pub url_secret_ref: Option<SecretKeySelector>,
    /// Extra headers (e.g. `X-GitHub-Event` for a GitHub interceptor), at most 32; values
    /// are templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = webhook::MAX_HEADERS))]
    pub headers: BTreeMap<String, String>,
    /// A Secret whose every key is a header name and whose value is that header's value,
    /// e.g. `Authorization: Bearer <token>` for an Argo Events webhook's `authSecret`.
    /// Only `name` is used.
    pub headers_secret_ref: Option<SecretKeySelector>,
    /// JSON body; strings are templated. Defaults to the whole CloudEvent.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub body: Option<serde_json::Value>,
    /// HMAC-SHA256 of the body; header defaults to `X-Hub-Signature-256`, prefix to `sha256=`.
    pub signature: Option<BodySignature>,
}
}

/// GitHub's signature, which Tekton's GitHub interceptor and Argo Events check.
pub const SIGNATURE: Scheme = Scheme {
    header: "X-Hub-Signature-256",
    prefix: "sha256=",
    algorithm: Algorithm::Sha256,
    exact_key: true,
};

fn compile(
    field: &Field,
    spec: &ListenerTarget,
    secrets: &SecretSet,
) -> Result<Webhook, CompileError> {
    let as_webhook = WebhookTarget {
        url: spec.url.clone(),
        url_secret_ref: spec.url_secret_ref.clone(),
        method: None,
        headers: spec.headers.clone(),
        headers_secret_ref: spec.headers_secret_ref.clone(),
        body: spec.body.clone(),
        signature: None,
        idempotency_key: None,
        standard_webhooks: None,
    };
    let mut compiled = webhook::compile_kind(field, &as_webhook, secrets)?;
    if let Some(sig) = &spec.signature {
        compiled.signer = Some(BodySigner::compile(
            &field.at("signature"),
            sig,
            secrets,
            &SIGNATURE,
        )?);
    }
    Ok(compiled)
}

/// A Tekton Triggers EventListener. It answers 202 with `{"eventListener", "namespace",
/// "eventID", ...}`; the `eventID` is recorded on the delivery.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(transparent)]
pub struct TektonEventListenerTarget(pub ListenerTarget);

/// An Argo Events webhook EventSource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(transparent)]
pub struct ArgoEventsWebhookTarget(pub ListenerTarget);

impl Kind for TektonEventListenerTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let mut w = compile(field, &self.0, secrets)?;
        w.response_id_field = Some("eventID");
        Ok(Trigger::http(w))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        self.0.secret_refs()
    }
}

impl Kind for ArgoEventsWebhookTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        Ok(Trigger::http(compile(field, &self.0, secrets)?))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        self.0.secret_refs()
    }
}

impl ListenerTarget {
    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        webhook::secret_refs(
            &self.url_secret_ref,
            &self.headers_secret_ref,
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, request};
    use serde_json::json;

    #[test]
    fn event_listener_request_is_signed_like_a_github_interceptor_expects() {
        let spec: ListenerTarget = serde_json::from_value(json!({
            "url": "http://127.0.0.1:8080",
            "headers": {"X-GitHub-Event": "statused"},
            "signature": {"secretRef": {"name": "el-secret"}}
        }))
        .unwrap();
        let secrets = SecretSet::new("ns").with("el-secret", &[("secret", "s3cret")]);
        let kind = TektonEventListenerTarget(spec);
        let t = compile_http(&kind, &secrets).unwrap();
        let req = request(t.as_ref());
        let expected = format!(
            "sha256={}",
            crate::signature::hmac_sha256_hex(b"s3cret", &req.body)
        );
        assert_eq!(req.headers["x-hub-signature-256"], expected.as_str());
        assert_eq!(req.headers["x-github-event"], "statused");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&req.body).unwrap()["id"],
            "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
        );
        assert_eq!(
            t.response_id(br#"{"eventListener":"el","eventID":"abc-123"}"#)
                .as_deref(),
            Some("abc-123")
        );
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn header_and_prefix_are_configurable() {
        let spec: ListenerTarget = serde_json::from_value(json!({
            "url": "http://127.0.0.1:12000/statused",
            "body": {"app": "$(data.app_name)"},
            "signature": {"secretRef": {"name": "k", "key": "hmac"}, "header": "X-Signature", "prefix": ""}
        }))
        .unwrap();
        let secrets = SecretSet::new("ns").with("k", &[("hmac", "key")]);
        let t = compile_http(&ArgoEventsWebhookTarget(spec), &secrets).unwrap();
        let req = request(t.as_ref());
        assert_eq!(
            req.headers["x-signature"],
            crate::signature::hmac_sha256_hex(b"key", &req.body).as_str()
        );
        assert_eq!(t.response_id(br#"{"eventID":"x"}"#), None);
    }

    #[test]
    fn missing_signing_key_is_reported() {
        let spec: ListenerTarget = serde_json::from_value(json!({
            "url": "http://127.0.0.1:8080", "signature": {"secretRef": {"name": "absent"}}
        }))
        .unwrap();
        let err =
            compile_http(&TektonEventListenerTarget(spec), &SecretSet::new("ns")).unwrap_err();
        assert_eq!(err.message, "Secret ns/absent not found");
    }

    #[test]
    fn the_signing_key_is_used_as_stored_and_headers_come_from_a_secret() {
        let spec: ListenerTarget = serde_json::from_value(json!({
            "url": "http://127.0.0.1:12000/statused",
            "headersSecretRef": {"name": "auth"},
            "signature": {"secretRef": {"name": "el-secret"}}
        }))
        .unwrap();
        // `kubectl create secret --from-file` keeps the file's trailing newline; Tekton signs
        // with it too.
        let secrets = SecretSet::new("ns")
            .with("el-secret", &[("secret", "s3cret\n")])
            .with("auth", &[("Authorization", "Bearer ev-t0ken")]);
        let kind = ArgoEventsWebhookTarget(spec.clone());
        assert_eq!(
            kind.secret_refs()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["auth", "el-secret"]
        );
        let t = compile_http(&TektonEventListenerTarget(spec), &secrets).unwrap();
        let req = request(t.as_ref());
        let expected = format!(
            "sha256={}",
            crate::signature::hmac_sha256_hex(b"s3cret\n", &req.body)
        );
        assert_eq!(req.headers["x-hub-signature-256"], expected.as_str());
        assert_eq!(req.headers["authorization"], "Bearer ev-t0ken");
        assert!(req.headers["authorization"].is_sensitive());
        assert!(!format!("{req:?}").contains("ev-t0ken"));
    }
}
