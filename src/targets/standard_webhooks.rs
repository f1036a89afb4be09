//! Signing as the Standard Webhooks specification says (standardwebhooks.com), so that a
//! receiver verifies with that specification's libraries: `webhook-id` (the event id, the
//! same for every retry and redelivery), `webhook-timestamp` (Unix seconds when the request
//! is built) and `webhook-signature`, `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per
//! secret, space-separated, so that a secret can be rotated (the receiver accepts any).

use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::CompileError;
use super::fields::Field;
use super::request::RenderError;
use crate::secrets::{SecretKeySelector, SecretSet, SecretValue};

/// The most secrets one target signs with (a rotation needs two).
pub const MAX_SECRETS: usize = 4;

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandardWebhooks {
    /// Secrets holding `whsec_` signing secrets (the key defaults to `secret`), at most 4:
    /// each signs, so that the receiver can rotate to a new one.
    #[schemars(length(min = 1, max = 4))]
    pub secret_refs: Vec<SecretKeySelector>,
}

/// The decoded signing keys of one target.
pub struct StandardSigner {
    keys: Vec<SecretValue>,
}

impl std::fmt::Debug for StandardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardSigner")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl StandardSigner {
    pub fn compile(
        field: &Field,
        spec: &StandardWebhooks,
        secrets: &SecretSet,
    ) -> Result<Self, CompileError> {
        if spec.secret_refs.is_empty() || spec.secret_refs.len() > MAX_SECRETS {
            return Err(CompileError::invalid(
                field.at("secretRefs"),
                format!("name 1 to {MAX_SECRETS} Secrets"),
            ));
        }
        let mut keys = Vec::with_capacity(spec.secret_refs.len());
        for (i, sel) in spec.secret_refs.iter().enumerate() {
            let stored = secrets.get(sel, "secret")?;
            let key = decode_secret(stored.as_bytes()).ok_or_else(|| {
                CompileError::invalid(
                    format!("{}[{i}]", field.at("secretRefs")),
                    format!(
                        "Secret {} key {} is not a Standard Webhooks secret: whsec_ and the key in base64",
                        sel.name,
                        sel.key_or("secret")
                    ),
                )
            })?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The three headers for a request with `body`, for event `id`, built at `timestamp`
    /// (Unix seconds).
    pub fn headers(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<[(HeaderName, HeaderValue); 3], RenderError> {
        let invalid = |what: &str| RenderError::Invalid(format!("{what} is not a valid header"));
        // A receiver trims header values, and would check a signature over another id.
        if id.trim() != id {
            return Err(invalid("an event id with spaces at its ends"));
        }
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|k| crate::signature::sign_standard(k.as_bytes(), id, timestamp, body))
            .collect();
        Ok([
            (
                HeaderName::from_static("webhook-id"),
                HeaderValue::from_str(id).map_err(|_| invalid("the event id"))?,
            ),
            (
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from(timestamp),
            ),
            (
                HeaderName::from_static("webhook-signature"),
                HeaderValue::from_str(&signatures.join(" ")).map_err(|_| invalid("a signature"))?,
            ),
        ])
    }
}

/// The key of a `whsec_` secret (`signature::decode_whsec`), kept as a secret.
fn decode_secret(stored: &[u8]) -> Option<SecretValue> {
    crate::signature::decode_whsec(stored).map(SecretValue::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::sign_standard as sign;

    /// The specification's published vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secrets(values: &[&str]) -> (SecretSet, StandardWebhooks) {
        let pairs: Vec<(String, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("key{i}"), v.to_string()))
            .collect();
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let set = SecretSet::new("ns").with("signing", &borrowed);
        let spec = StandardWebhooks {
            secret_refs: (0..values.len())
                .map(|i| SecretKeySelector {
                    name: "signing".into(),
                    key: Some(format!("key{i}")),
                })
                .collect(),
        };
        (set, spec)
    }

    #[test]
    fn signs_the_specifications_published_vector() {
        let key = decode_secret(SECRET.as_bytes()).unwrap();
        assert_eq!(sign(key.as_bytes(), ID, TIMESTAMP, BODY), SIGNATURE);
        let with_newline = format!("{SECRET}\n");
        assert_eq!(
            decode_secret(with_newline.as_bytes()).unwrap().as_bytes(),
            key.as_bytes()
        );
    }

    #[test]
    fn every_secret_signs_for_rotation_and_the_id_is_the_one_given() {
        let (set, spec) = secrets(&[SECRET, "whsec_c2Vjb25kLXNlY3JldA=="]);
        let signer = StandardSigner::compile(&Field::new("f"), &spec, &set).unwrap();
        let [(id_name, id), (ts_name, ts), (sig_name, sig)] =
            signer.headers(ID, TIMESTAMP, BODY).unwrap();
        assert_eq!((id_name.as_str(), id.to_str().unwrap()), ("webhook-id", ID));
        assert_eq!(
            (ts_name.as_str(), ts.to_str().unwrap()),
            ("webhook-timestamp", "1614265330")
        );
        assert_eq!(sig_name.as_str(), "webhook-signature");
        let parts: Vec<&str> = sig.to_str().unwrap().split(' ').collect();
        assert_eq!(parts[0], SIGNATURE);
        assert_eq!(parts[1], sign(b"second-secret", ID, TIMESTAMP, BODY));
        // A receiver trims header values: an id it would read otherwise is refused.
        assert!(signer.headers(" msg_1", TIMESTAMP, BODY).is_err());
    }

    #[test]
    fn a_secret_that_is_not_whsec_base64_names_its_field_and_never_its_value() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_",
        ] {
            let (set, spec) = secrets(&[bad]);
            let err = StandardSigner::compile(&Field::new("spec.x"), &spec, &set).unwrap_err();
            assert!(
                err.message.starts_with("spec.x.secretRefs[0]"),
                "{}",
                err.message
            );
            assert!(
                !err.message.contains(bad) || bad == "whsec_",
                "{}",
                err.message
            );
        }
        let (set, mut spec) = secrets(&[SECRET]);
        spec.secret_refs = vec![spec.secret_refs[0].clone(); MAX_SECRETS + 1];
        assert!(StandardSigner::compile(&Field::new("f"), &spec, &set).is_err());
    }
}
