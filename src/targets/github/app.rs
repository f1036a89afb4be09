//! Authenticating as a GitHub App installation: an RS256 JWT signed with the App's private
//! key is exchanged for an installation access token
//! (`POST {apiURL}/app/installations/{id}/access_tokens`), which is cached until shortly
//! before it expires. Many organisations forbid personal tokens; this is what they use.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use reqwest::header::{HeaderMap, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::credentials::CredentialCache;
use super::super::error::CompileError;
use super::super::fields::Field;
use super::super::request::{DeferredAuth, USER_AGENT};
use super::super::send::{Class, Outcome, classify_status, transport_error};
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};

/// Refresh the installation token this long before GitHub says it expires.
const REFRESH_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GithubAppAuth {
    /// The App's ID (or client ID).
    pub app_id: IntOrString,
    /// The installation on the repository's owner.
    pub installation_id: IntOrString,
    /// Secret key holding the App's private key, PEM (key defaults to `private-key`).
    pub private_key_secret_ref: SecretKeySelector,
}

pub struct GithubApp {
    token_url: String,
    issuer: serde_json::Value,
    key: EncodingKey,
    /// Identifies the installation token in the executor's credential cache: the same App,
    /// installation and key
    /// share one token however often the route is recompiled.
    cache_key: String,
}

fn text(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.trim().to_string(),
    }
}

/// A numeric App ID, or a client ID: `Iv1.0123456789abcdef` (older Apps) or `Iv23li...`.
fn valid_app_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

impl GithubApp {
    pub fn compile(
        field: &Field,
        spec: &GithubAppAuth,
        api_base: &str,
        secrets: &SecretSet,
    ) -> Result<Self, CompileError> {
        let app_id = text(&spec.app_id);
        if !valid_app_id(&app_id) {
            return Err(CompileError::invalid(
                field.at("appId"),
                "must be the App's numeric ID or client ID",
            ));
        }
        let installation = text(&spec.installation_id);
        if installation.is_empty() || !installation.chars().all(|c| c.is_ascii_digit()) {
            return Err(CompileError::invalid(
                field.at("installationId"),
                "must be a number",
            ));
        }
        let pem = secrets.get(&spec.private_key_secret_ref, "private-key")?;
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            CompileError::invalid(
                field.at("privateKeySecretRef"),
                format!(
                    "Secret {} does not hold an RSA private key in PEM form",
                    spec.private_key_secret_ref.name
                ),
            )
        })?;
        // GitHub documents the numeric App ID as a number claim; a client ID is a string.
        let issuer = app_id
            .parse::<u64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| app_id.clone().into());
        let token_url = format!("{api_base}/app/installations/{installation}/access_tokens");
        let cache_key = crate::signature::hmac_sha256_hex(
            pem.as_bytes(),
            format!("{token_url} {app_id}").as_bytes(),
        );
        Ok(Self {
            token_url,
            issuer,
            key,
            cache_key,
        })
    }

    /// The App JWT: issued a minute in the past against clock drift, valid for nine minutes
    /// (GitHub allows at most ten).
    pub fn jwt(&self, now: jiff::Timestamp) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now.as_second();
        let claims = serde_json::json!({"iat": now - 60, "exp": now + 9 * 60, "iss": self.issuer});
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
    }

    async fn installation_token(
        &self,
        client: &reqwest::Client,
        credentials: &CredentialCache,
        timeout: Duration,
    ) -> Result<SecretValue, Outcome> {
        // Held across the exchange so that concurrent deliveries of this App wait for one
        // token instead of each fetching their own.
        let slot = credentials.slot(&self.cache_key);
        let mut cached = slot.lock().await;
        let now = jiff::Timestamp::now();
        if let Some((token, expires)) = cached.as_ref()
            && *expires - REFRESH_MARGIN > now
        {
            return Ok(token.clone());
        }
        let jwt = self
            .jwt(now)
            .map_err(|e| Outcome::failed(None, format!("cannot sign the GitHub App JWT: {e}")))?;
        let response = client
            .post(&self.token_url)
            .bearer_auth(&jwt)
            .headers(super::github_headers(HeaderMap::new()))
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                Outcome::retry(
                    None,
                    format!(
                        "GitHub App token exchange: {}",
                        transport_error(&e, timeout)
                    ),
                    None,
                )
            })?;
        let code = response.status().as_u16();
        match classify_status(code) {
            Class::Success => {}
            Class::Retry => {
                return Err(Outcome::retry(
                    Some(code),
                    format!("GitHub App token exchange: HTTP {code}"),
                    None,
                ));
            }
            Class::Permanent => {
                return Err(Outcome::failed(
                    Some(code),
                    format!(
                        "GitHub App token exchange: HTTP {code} (check appId, installationId and the private key)"
                    ),
                ));
            }
        }
        #[derive(Deserialize)]
        struct Answer {
            token: String,
            expires_at: jiff::Timestamp,
        }
        // At most READ_AT_MOST bytes: a token answer is small, whatever the server sends.
        let body =
            super::super::send::read_capped(response, super::super::send::READ_AT_MOST).await;
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            Outcome::retry(
                Some(code),
                "GitHub App token exchange: unexpected answer".into(),
                None,
            )
        })?;
        let token = SecretValue::new(answer.token);
        *cached = Some((token.clone(), answer.expires_at));
        Ok(token)
    }
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp")
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl DeferredAuth for GithubApp {
    fn invalidate(&self, credentials: &CredentialCache) {
        if let Ok(mut cached) = credentials.slot(&self.cache_key).try_lock() {
            *cached = None;
        }
    }

    fn authorization<'a>(
        &'a self,
        client: &'a reqwest::Client,
        credentials: &'a CredentialCache,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(HeaderValue, String), Outcome>> {
        async move {
            let token = self
                .installation_token(client, credentials, timeout)
                .await?;
            let text = std::str::from_utf8(token.as_bytes())
                .map_err(|_| Outcome::failed(None, "installation token is not text".into()))?;
            let mut value = HeaderValue::from_str(&format!("Bearer {text}")).map_err(|_| {
                Outcome::failed(None, "installation token is not a valid header".into())
            })?;
            value.set_sensitive(true);
            Ok((value, text.to_string()))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_and_client_ids_are_accepted() {
        for ok in ["123456", "Iv1.0123456789abcdef", "Iv23liABCdef0123456"] {
            assert!(valid_app_id(ok), "{ok}");
        }
        for bad in ["", "Iv1 0123", "../etc", ".x", "Iv1/abc"] {
            assert!(!valid_app_id(bad), "{bad}");
        }
    }
}
