//! The CloudEvents 1.0 envelope Statused sends (structured JSON mode), parsed without copying,
//! and the normalisation of Apple's human status labels.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A Statused event as it arrives. Strings borrow from the request body; `data` stays raw JSON
/// until something needs it, so unknown or missing fields never make an event invalid.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub specversion: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub type_: Cow<'a, str>,
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// The few `data` fields that rule matching reads without evaluating an expression.
#[derive(Debug, Default, Deserialize)]
pub struct MatchFields<'a> {
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub app_name: Option<Cow<'a, str>>,
}

/// Why a body is not a Statused event. Answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not a JSON CloudEvent: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported specversion {0:?}, expected \"1.0\"")]
    SpecVersion(String),
    #[error("required attribute {0} is empty")]
    Empty(&'static str),
}

impl<'a> Envelope<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, EnvelopeError> {
        let env: Envelope<'a> = serde_json::from_slice(body)?;
        if env.specversion != "1.0" {
            return Err(EnvelopeError::SpecVersion(env.specversion.into_owned()));
        }
        for (name, value) in [
            ("id", &env.id),
            ("type", &env.type_),
            ("source", &env.source),
        ] {
            if value.is_empty() {
                return Err(EnvelopeError::Empty(name));
            }
        }
        Ok(env)
    }

    /// `status` and `app_name` from `data`, tolerating any shape: non-object data or fields of
    /// other types simply leave them unset.
    pub fn match_fields(&self) -> MatchFields<'a> {
        self.data
            .and_then(|raw| serde_json::from_str::<MatchFields<'a>>(raw.get()).ok())
            .unwrap_or_default()
    }

    /// `data` as an owned JSON value (null when absent).
    pub fn data_value(&self) -> serde_json::Value {
        self.data
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The envelope as an owned JSON object with the attributes expressions see.
    pub fn to_value(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("specversion".into(), self.specversion.as_ref().into());
        obj.insert("id".into(), self.id.as_ref().into());
        obj.insert("type".into(), self.type_.as_ref().into());
        obj.insert("source".into(), self.source.as_ref().into());
        if let Some(time) = &self.time {
            obj.insert("time".into(), time.as_ref().into());
        }
        if let Some(subject) = &self.subject {
            obj.insert("subject".into(), subject.as_ref().into());
        }
        obj.insert("data".into(), self.data_value());
        serde_json::Value::Object(obj)
    }
}

/// Apple renamed two states; a rule written with either label matches both.
const ALIASES: &[(&str, &str)] = &[
    ("ready for distribution", "ready for sale"),
    ("processing for distribution", "processing for app store"),
];

/// The canonical, lowercase form of a status label: trimmed, case-folded, inner whitespace
/// collapsed, and Apple's newer labels mapped to the older ones.
pub fn normalize_status(label: &str) -> String {
    let folded = label
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    match ALIASES.iter().find(|(new, _)| *new == folded) {
        Some((_, old)) => (*old).to_string(),
        None => folded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sample;

    #[test]
    fn build_event_parses_with_borrowed_fields() {
        let body = sample("build-valid.json");
        let env = Envelope::parse(&body).unwrap();
        assert_eq!(env.type_, "com.statused.build.status.updated");
        assert_eq!(env.id, "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d");
        assert!(matches!(env.id, Cow::Borrowed(_)));
        let fields = env.match_fields();
        assert_eq!(fields.status.as_deref(), Some("Valid"));
        assert_eq!(fields.app_name.as_deref(), Some("Markdown Email"));
        assert_eq!(env.data_value()["build_version"], "456");
    }

    #[test]
    fn account_event_without_app_name_is_valid() {
        let body = sample("account-agreement.json");
        let env = Envelope::parse(&body).unwrap();
        assert_eq!(env.match_fields().app_name, None);
        assert_eq!(
            env.match_fields().status.as_deref(),
            Some("Action Required")
        );
    }

    #[test]
    fn unknown_type_and_odd_data_are_accepted() {
        let body = br#"{"specversion":"1.0","type":"com.example.new","source":"s","id":"1","data":[1,2],"extra":true}"#;
        let env = Envelope::parse(body).unwrap();
        assert_eq!(env.match_fields().status, None);
        assert_eq!(env.to_value()["data"], serde_json::json!([1, 2]));
    }

    #[test]
    fn data_fields_of_unexpected_types_are_ignored_not_fatal() {
        let body = br#"{"specversion":"1.0","type":"t","source":"s","id":"1","data":{"status":7,"app_name":null}}"#;
        let env = Envelope::parse(body).unwrap();
        assert_eq!(env.match_fields().status, None);
    }

    #[test]
    fn malformed_envelopes_are_rejected() {
        for body in [
            &b"not json"[..],
            br#"{"type":"t","source":"s","id":"1"}"#,
            br#"{"specversion":"0.3","type":"t","source":"s","id":"1"}"#,
            br#"{"specversion":"1.0","type":"t","source":"s","id":""}"#,
            br#"{"specversion":"1.0","type":"t","source":"s"}"#,
        ] {
            assert!(
                Envelope::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn escaped_strings_still_parse() {
        let body = br#"{"specversion":"1.0","type":"t","source":"s","id":"a\"b"}"#;
        assert_eq!(Envelope::parse(body).unwrap().id, "a\"b");
    }

    #[test]
    fn status_labels_fold_case_space_and_apple_renames() {
        assert_eq!(
            normalize_status("Ready for Sale"),
            normalize_status("READY  FOR distribution")
        );
        assert_eq!(
            normalize_status("Processing for App Store"),
            normalize_status("processing for distribution")
        );
        assert_eq!(normalize_status(" Valid "), "valid");
        assert_ne!(
            normalize_status("Ready for Sale"),
            normalize_status("Ready for Review")
        );
    }
}
