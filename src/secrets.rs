//! Secret values read from the route's namespace: never printed, never logged; and the
//! selector of one Secret key, as routes spell it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the route's namespace.
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret, in the route's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret. Each field documents its default.
    pub key: Option<String>,
}

impl SecretKeySelector {
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// Bytes from a Secret. `Debug` prints `<redacted>` so that a value cannot reach a log line
/// through a derived `Debug` of a struct that holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SecretValue {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SecretValue {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error(
        "Secret {namespace}/{name} may not be used by routes: the operator runs with \
         --secret-access=labeled; label it with `kubectl label secret -n {namespace} {name} \
         statused.dev/route-access=true`"
    )]
    NotAllowed { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key}")]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key {key} is not valid UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
}

/// The Secrets one route references, as read from its namespace (absent ones are missing).
#[derive(Debug, Clone, Default)]
pub struct SecretSet {
    namespace: String,
    secrets: BTreeMap<String, BTreeMap<String, SecretValue>>,
    /// Secrets that exist but routes may not use (`--secret-access=labeled`).
    not_allowed: std::collections::BTreeSet<String>,
}

impl SecretSet {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            secrets: BTreeMap::new(),
            not_allowed: Default::default(),
        }
    }

    /// Records that Secret `name` exists but routes may not use it; its values are not kept.
    pub fn refuse(&mut self, name: impl Into<String>) {
        self.not_allowed.insert(name.into());
    }

    pub fn insert(&mut self, name: impl Into<String>, data: BTreeMap<String, SecretValue>) {
        self.secrets.insert(name.into(), data);
    }

    /// Builder form of [`insert`](Self::insert) for string data.
    pub fn with(mut self, name: &str, data: &[(&str, &str)]) -> Self {
        let data = data
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
            .collect();
        self.insert(name, data);
        self
    }

    pub fn all(&self, name: &str) -> Result<&BTreeMap<String, SecretValue>, SecretError> {
        if self.not_allowed.contains(name) {
            return Err(SecretError::NotAllowed {
                namespace: self.namespace.clone(),
                name: name.to_string(),
            });
        }
        self.secrets.get(name).ok_or_else(|| SecretError::NotFound {
            namespace: self.namespace.clone(),
            name: name.to_string(),
        })
    }

    pub fn get(
        &self,
        sel: &SecretKeySelector,
        default_key: &str,
    ) -> Result<SecretValue, SecretError> {
        let key = sel.key_or(default_key);
        self.all(&sel.name)?
            .get(key)
            .cloned()
            .ok_or_else(|| SecretError::KeyMissing {
                namespace: self.namespace.clone(),
                name: sel.name.clone(),
                key: key.to_string(),
            })
    }

    /// A value that must be text (a token, a URL); surrounding whitespace is trimmed because
    /// `echo value | kubectl create secret --from-file` leaves a newline.
    pub fn text(&self, sel: &SecretKeySelector, default_key: &str) -> Result<String, SecretError> {
        let value = self.get(sel, default_key)?;
        String::from_utf8(value.0)
            .map(|s| s.trim().to_string())
            .map_err(|_| SecretError::NotText {
                namespace: self.namespace.clone(),
                name: sel.name.clone(),
                key: sel.key_or(default_key).to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(name: &str, key: Option<&str>) -> SecretKeySelector {
        SecretKeySelector {
            name: name.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn debug_output_never_shows_the_value() {
        let v = SecretValue::new("hunter2");
        assert_eq!(format!("{v:?}"), "<redacted>");
        let set = SecretSet::new("ns").with("s", &[("k", "hunter2")]);
        assert!(!format!("{set:?}").contains("hunter2"));
    }

    #[test]
    fn missing_secret_and_missing_key_say_what_to_fix() {
        let set = SecretSet::new("mobile-ci").with("gh-token", &[("other", "x")]);
        assert_eq!(
            set.get(&sel("nope", None), "token")
                .unwrap_err()
                .to_string(),
            "Secret mobile-ci/nope not found"
        );
        assert_eq!(
            set.get(&sel("gh-token", None), "token")
                .unwrap_err()
                .to_string(),
            "Secret mobile-ci/gh-token has no key token"
        );
        assert_eq!(
            set.text(&sel("gh-token", Some("other")), "token").unwrap(),
            "x"
        );
    }

    #[test]
    fn text_values_are_trimmed() {
        let set = SecretSet::new("ns").with("s", &[("url", "https://x.test/hook\n")]);
        assert_eq!(
            set.text(&sel("s", None), "url").unwrap(),
            "https://x.test/hook"
        );
    }
}
