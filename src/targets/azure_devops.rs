//! `azureDevOps`: an "Incoming WebHook" service connection,
//! `POST {baseURL}/{organization}/_apis/public/distributedtask/webhooks/{webhookName}?api-version=...`,
//! optionally signed with HMAC-SHA1 of the body in the header the connection names.

use reqwest::Url;

use super::error::CompileError;
use super::fields::EventBody;
use super::fields::{Field, base_url, required};
use super::kind::{Kind, Trigger};
use super::request::{HttpRequest, HttpTarget, RenderContext, RenderError, base_headers};
use super::signing::{Algorithm, BodySignature, BodySigner, Scheme};
use crate::secrets::{SecretKeySelector, SecretSet};

pub const DEFAULT_BASE_URL: &str = "https://dev.azure.com";
pub const DEFAULT_API_VERSION: &str = "6.0-preview";
/// The HMAC-SHA1 an Incoming WebHook service connection checks (it documents nothing else).
const SIGNATURE: Scheme = Scheme {
    header: "X-Hub-Signature",
    prefix: "sha1=",
    algorithm: Algorithm::Sha1,
    exact_key: false,
};

spec! {
pub struct AzureDevOpsTarget {
    pub organization: String,
    /// The service connection's "WebHook Name" (what `resources.webhooks[].webhook` uses).
    pub webhook_name: String,
    /// Default `6.0-preview`.
    pub api_version: Option<String>,
    /// JSON body; strings are templated. Defaults to the whole CloudEvent.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub body: Option<serde_json::Value>,
    /// The connection's Secret: HMAC-SHA1 of the body in its "Http Header" (header defaults
    /// to `X-Hub-Signature`, prefix to `sha1=`).
    pub signature: Option<BodySignature>,
    /// For Azure DevOps Server (default `https://dev.azure.com`).
    #[serde(rename = "baseURL")]
    pub base_url: Option<String>,
}
}

#[derive(Debug)]
pub struct AzureDevOps {
    url: Url,
    body: EventBody,
    signer: Option<BodySigner>,
}

fn name_like(field: &Field, value: &str) -> Result<String, CompileError> {
    let value = required(field, value.trim())?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CompileError::invalid(
            field,
            "may only contain letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(value.to_string())
}

impl Kind for AzureDevOpsTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        let org = name_like(&field.at("organization"), &spec.organization)?;
        let hook = name_like(&field.at("webhookName"), &spec.webhook_name)?;
        let api_version = name_like(
            &field.at("apiVersion"),
            spec.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION),
        )?;
        let base = base_url(
            &field.at("baseURL"),
            spec.base_url.as_deref(),
            DEFAULT_BASE_URL,
        )?;
        let mut url = Url::parse(&format!(
            "{base}/{org}/_apis/public/distributedtask/webhooks/{hook}"
        ))
        .map_err(|e| CompileError::invalid(field.at("organization"), e))?;
        url.query_pairs_mut()
            .append_pair("api-version", &api_version);
        let body = EventBody::compile(&field.at("body"), spec.body.as_ref())?;
        let signer = spec
            .signature
            .as_ref()
            .map(|s| {
                BodySigner::compile(
                    &field.at("signature"),
                    s,
                    secrets,
                    &SIGNATURE,
                )
            })
            .transpose()?;
        Ok(Trigger::http(AzureDevOps { url, body, signer }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        self.signature.iter().map(|s| &s.secret_ref).collect()
    }
}

impl HttpTarget for AzureDevOps {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let body = self.body.render(ctx.scope)?;
        let mut request = HttpRequest::post_json(self.url.clone(), base_headers(ctx)?, &body);
        if let Some(signer) = &self.signer {
            let (name, value) = signer.sign(&request.body)?;
            request.headers.insert(name, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_support::{compile_http, sent};
    use hmac::Mac;
    use serde_json::json;

    #[test]
    fn incoming_webhook_url_and_sha1_signature() {
        let (_t, req) = sent::<AzureDevOpsTarget>(
            json!({
                "organization": "acme", "webhookName": "statusedEvents",
                "body": {"resource": {"app": "$(data.app_name)", "status": "$(data.status)"}},
                "signature": {"secretRef": {"name": "ado"}, "header": "X-Statused-Checksum"}
            }),
            &SecretSet::new("ns").with("ado", &[("secret", "hmac-key")]),
        );
        assert_eq!(
            req.url.as_str(),
            "https://dev.azure.com/acme/_apis/public/distributedtask/webhooks/statusedEvents?api-version=6.0-preview"
        );
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"hmac-key").unwrap();
        mac.update(&req.body);
        let expected = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(req.headers["x-statused-checksum"], expected.as_str());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
            json!({"resource": {"app": "Markdown Email", "status": "Valid"}})
        );
    }

    #[test]
    fn names_with_path_characters_are_rejected() {
        let spec: AzureDevOpsTarget =
            serde_json::from_value(json!({"organization": "acme/../x", "webhookName": "h"}))
                .unwrap();
        assert!(
            compile_http(&spec, &SecretSet::new("ns"))
                .unwrap_err()
                .message
                .contains("t.organization")
        );
    }
}
