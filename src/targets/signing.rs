//! HMAC-SHA256 signing of the body a target sends, in the header its receiver checks
//! (e.g. GitHub-style `X-Hub-Signature-256: sha256=<hex>` for a Tekton GitHub interceptor).

use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::CompileError;
use super::fields::Field;
use super::request::RenderError;
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};
use crate::signature::hmac_sha256_hex;

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BodySignature {
    /// Secret key holding the HMAC key (key defaults to `secret`).
    pub secret_ref: SecretKeySelector,
    /// Header carrying the signature. Each kind documents its default.
    pub header: Option<String>,
    /// Text before the hex digest. Each kind documents its default.
    pub prefix: Option<String>,
}

pub struct BodySigner {
    header: HeaderName,
    prefix: String,
    key: SecretValue,
    algorithm: Algorithm,
}

/// The digest behind the HMAC. SHA-1 only where a service documents nothing else (Azure
/// DevOps incoming webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha1,
}

impl std::fmt::Debug for BodySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySigner")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// How a kind signs when its route does not say otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Scheme {
    /// The header, when `header` is not set.
    pub header: &'static str,
    /// The text before the hex digest, when `prefix` is not set.
    pub prefix: &'static str,
    pub algorithm: Algorithm,
    /// Sign with the Secret's bytes exactly as stored, for receivers that do not trim them
    /// (Tekton's GitHub interceptor): with a trimmed key, a Secret ending in a newline would
    /// make every signature fail there while the call still succeeds here. Otherwise the
    /// key is trimmed, as the receiver's own signing Secrets are.
    pub exact_key: bool,
}

impl BodySigner {
    pub fn compile(
        field: &Field,
        spec: &BodySignature,
        secrets: &SecretSet,
        scheme: &Scheme,
    ) -> Result<Self, CompileError> {
        let header_name = spec.header.as_deref().unwrap_or(scheme.header);
        let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
            CompileError::invalid(
                field.at("header"),
                format!("{header_name:?} is not a valid header name"),
            )
        })?;
        let prefix = spec
            .prefix
            .clone()
            .unwrap_or_else(|| scheme.prefix.to_string());
        if HeaderValue::from_str(&prefix).is_err() {
            return Err(CompileError::invalid(
                field.at("prefix"),
                "not valid in a header",
            ));
        }
        let stored = secrets.get(&spec.secret_ref, "secret")?;
        if stored.as_bytes().trim_ascii().is_empty() {
            return Err(CompileError::invalid(
                field.at("secretRef"),
                "the signing key is empty",
            ));
        }
        let key = if scheme.exact_key {
            stored
        } else {
            SecretValue::new(stored.as_bytes().trim_ascii())
        };
        Ok(Self {
            header,
            prefix,
            key,
            algorithm: scheme.algorithm,
        })
    }

    pub fn sign(&self, body: &[u8]) -> Result<(HeaderName, HeaderValue), RenderError> {
        let digest = match self.algorithm {
            Algorithm::Sha256 => hmac_sha256_hex(self.key.as_bytes(), body),
            Algorithm::Sha1 => {
                use hmac::Mac;
                let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(self.key.as_bytes())
                    .map_err(|_| RenderError::Invalid("HMAC key".into()))?;
                mac.update(body);
                hex::encode(mac.finalize().into_bytes())
            }
        };
        let value = HeaderValue::from_str(&format!("{}{digest}", self.prefix))
            .map_err(|_| RenderError::Invalid("signature header".into()))?;
        Ok((self.header.clone(), value))
    }
}
