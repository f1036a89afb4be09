//! The CloudEvents 1.0 envelope Statused sends (structured JSON mode), parsed once into an
//! owned record that the matcher, the replay check and the delivery share, and the
//! normalisation of Apple's human status labels.

use std::borrow::Cow;

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

pub use crate::cost::{DATA_LIMITS, DataLimits};

/// A Statused event as it arrives, parsed in one pass. `data` is open: unknown or missing
/// fields never make an event invalid; it is held to [`DATA_LIMITS`] as it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub specversion: String,
    pub type_: String,
    pub source: String,
    pub id: String,
    pub time: Option<String>,
    pub subject: Option<String>,
    /// `null` when the event has none.
    pub data: Value,
}

/// The few `data` fields that rule matching reads without evaluating an expression.
#[derive(Debug, Default)]
pub struct MatchFields<'a> {
    pub status: Option<Cow<'a, str>>,
    pub app_name: Option<Cow<'a, str>>,
}

/// Why a body is not a Statused event. Answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported specversion {0:?}, expected \"1.0\"")]
    SpecVersion(String),
    #[error("required attribute {0} is empty")]
    Empty(&'static str),
    #[error("event over its data limits: {0}")]
    OverLimit(#[from] OverLimit),
    #[error("not an App Store Connect notification: {0}")]
    AppStoreConnect(&'static str),
}

impl Envelope {
    /// Parses `body` once: the attributes, and `data` checked against the limits while it is
    /// built (nothing past a limit is kept).
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let mut walk = Walk::new(&DATA_LIMITS);
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = de.deserialize_map(Fields { walk: &mut walk });
        if let Some(over) = walk.over {
            return Err(over.into());
        }
        let env = parsed?;
        de.end()?;
        if env.specversion != "1.0" {
            return Err(EnvelopeError::SpecVersion(env.specversion));
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
        env.check_attributes(&DATA_LIMITS)?;
        Ok(env)
    }

    /// Attributes are strings of bounded length, like every string of `data`.
    fn check_attributes(&self, limits: &DataLimits) -> Result<(), OverLimit> {
        let attributes = [
            Some(("id", &self.id)),
            Some(("type", &self.type_)),
            Some(("source", &self.source)),
            Some(("specversion", &self.specversion)),
            self.time.as_ref().map(|t| ("time", t)),
            self.subject.as_ref().map(|s| ("subject", s)),
        ];
        for (name, value) in attributes.into_iter().flatten() {
            if value.len() > limits.max_string_bytes {
                return Err(OverLimit::String {
                    path: name.to_string(),
                    limit: limits.max_string_bytes,
                });
            }
        }
        Ok(())
    }

    /// `status` and `app_name` from `data`, tolerating any shape: non-object data or fields of
    /// other types simply leave them unset.
    pub fn match_fields(&self) -> MatchFields<'_> {
        let text = |name: &str| {
            self.data
                .get(name)
                .and_then(Value::as_str)
                .map(Cow::Borrowed)
        };
        MatchFields {
            status: text("status"),
            app_name: text("app_name"),
        }
    }

    /// The envelope as an owned JSON object with the attributes expressions see.
    pub fn to_value(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("specversion".into(), self.specversion.as_str().into());
        obj.insert("id".into(), self.id.as_str().into());
        obj.insert("type".into(), self.type_.as_str().into());
        obj.insert("source".into(), self.source.as_str().into());
        if let Some(time) = &self.time {
            obj.insert("time".into(), time.as_str().into());
        }
        if let Some(subject) = &self.subject {
            obj.insert("subject".into(), subject.as_str().into());
        }
        obj.insert("data".into(), self.data.clone());
        Value::Object(obj)
    }
}

/// A whole JSON body held to `limits` as it is read, the way [`Envelope::parse`] holds `data`
/// (a source whose events are not CloudEvents, such as App Store Connect's, is read so).
pub fn parse_limited(body: &[u8], limits: &DataLimits) -> Result<Value, EnvelopeError> {
    let mut walk = Walk::new(limits);
    // Paths in a message start from the body, not from a CloudEvent's `data`.
    walk.path = vec!["body".to_string()];
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Node {
        walk: &mut walk,
        depth: 0,
    }
    .deserialize(&mut de);
    if let Some(over) = walk.over {
        return Err(over.into());
    }
    let value = parsed?;
    de.end()?;
    Ok(value)
}

/// The envelope's members, read in one pass; unknown ones are skipped without being kept.
struct Fields<'w, 'l> {
    walk: &'w mut Walk<'l>,
}

impl<'de> Visitor<'de> for Fields<'_, '_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a CloudEvent JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let (mut specversion, mut type_, mut source, mut id) = (None, None, None, None);
        let (mut time, mut subject, mut data) = (None, None, Value::Null);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "specversion" => specversion = Some(map.next_value::<String>()?),
                "type" => type_ = Some(map.next_value::<String>()?),
                "source" => source = Some(map.next_value::<String>()?),
                "id" => id = Some(map.next_value::<String>()?),
                "time" => time = map.next_value::<Option<String>>()?,
                "subject" => subject = map.next_value::<Option<String>>()?,
                "data" => {
                    data = map.next_value_seed(Node {
                        walk: &mut *self.walk,
                        depth: 0,
                    })?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let required =
            |v: Option<String>, name: &'static str| v.ok_or_else(|| A::Error::missing_field(name));
        Ok(Envelope {
            specversion: required(specversion, "specversion")?,
            type_: required(type_, "type")?,
            source: required(source, "source")?,
            id: required(id, "id")?,
            time,
            subject,
            data,
        })
    }
}

/// Why an event is over [`DATA_LIMITS`]: the limit and where it was passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error("{path} has more than {limit} items (at most {limit} items per list or map)")]
    Items { path: String, limit: usize },
    #[error("{path} is nested more than {limit} lists or maps deep (at most {limit})")]
    Depth { path: String, limit: usize },
    #[error("data has more than {limit} values (at most {limit} in an event)")]
    Nodes { limit: usize },
    #[error("a string at {path} is longer than {limit} bytes (at most {limit} per string)")]
    String { path: String, limit: usize },
    #[error("the strings of data add up to more than {limit} bytes (at most {limit})")]
    TotalBytes { limit: usize },
}

/// Checks `data` (a stored event's, or one escaped for a chat) against `limits`: the same
/// counts as the parse's, walked in place (nothing is copied).
pub fn check_data_value(data: &Value, limits: &DataLimits) -> Result<(), OverLimit> {
    let mut walk = Walk::new(limits);
    match walk.value::<serde::de::value::Error>(data, 0) {
        Ok(()) => Ok(()),
        // Every error of the walk is a limit it recorded.
        Err(_) => walk.over.map_or(Ok(()), Err),
    }
}

/// Counts what `data` holds while it is read, and stops at the first limit passed.
struct Walk<'l> {
    limits: &'l DataLimits,
    nodes: usize,
    bytes: usize,
    path: Vec<String>,
    over: Option<OverLimit>,
}

impl<'l> Walk<'l> {
    fn new(limits: &'l DataLimits) -> Self {
        Walk {
            limits,
            nodes: 0,
            bytes: 0,
            path: vec!["data".to_string()],
            over: None,
        }
    }

    /// Where the walk is, for a message: keys are the event's own, so each is cut to 40
    /// characters and the whole to 200, whatever the event holds.
    fn path(&self) -> String {
        let cut = |s: &str, n: usize| -> String {
            match s.char_indices().nth(n) {
                Some((i, _)) => format!("{}…", &s[..i]),
                None => s.to_string(),
            }
        };
        let joined = self
            .path
            .iter()
            .map(|segment| cut(segment, 40))
            .collect::<Vec<_>>()
            .join(".");
        cut(&joined, 200)
    }

    /// Records `over` and stops the walk (a serde error unwinds it).
    fn stop<E: serde::de::Error>(&mut self, over: OverLimit) -> E {
        self.over = Some(over);
        E::custom("over the data limits")
    }

    fn node<E: serde::de::Error>(&mut self) -> Result<(), E> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            let limit = self.limits.max_nodes;
            return Err(self.stop(OverLimit::Nodes { limit }));
        }
        Ok(())
    }

    fn string<E: serde::de::Error>(&mut self, s: &str) -> Result<(), E> {
        self.node()?;
        if s.len() > self.limits.max_string_bytes {
            let (path, limit) = (self.path(), self.limits.max_string_bytes);
            return Err(self.stop(OverLimit::String { path, limit }));
        }
        self.bytes += s.len();
        if self.bytes > self.limits.max_total_bytes {
            let limit = self.limits.max_total_bytes;
            return Err(self.stop(OverLimit::TotalBytes { limit }));
        }
        Ok(())
    }

    fn enter<E: serde::de::Error>(&mut self, depth: usize) -> Result<(), E> {
        self.node()?;
        if depth >= self.limits.max_depth {
            let (path, limit) = (self.path(), self.limits.max_depth);
            return Err(self.stop(OverLimit::Depth { path, limit }));
        }
        Ok(())
    }

    /// The walk over a value already built.
    fn value<E: serde::de::Error>(&mut self, v: &Value, depth: usize) -> Result<(), E> {
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => self.node(),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.enter(depth)?;
                for (i, item) in items.iter().enumerate() {
                    self.item(i + 1)?;
                    self.path.push(i.to_string());
                    let checked = self.value(item, depth + 1);
                    self.path.pop();
                    checked?;
                }
                Ok(())
            }
            Value::Object(entries) => {
                self.enter(depth)?;
                for (i, (key, item)) in entries.iter().enumerate() {
                    self.item(i + 1)?;
                    self.string(key)?;
                    self.path.push(key.clone());
                    let checked = self.value(item, depth + 1);
                    self.path.pop();
                    checked?;
                }
                Ok(())
            }
        }
    }

    fn item<E: serde::de::Error>(&mut self, count: usize) -> Result<(), E> {
        if count > self.limits.max_items {
            let (path, limit) = (self.path(), self.limits.max_items);
            return Err(self.stop(OverLimit::Items { path, limit }));
        }
        Ok(())
    }
}

/// One JSON value at `depth`, built as it is read and checked against the limits first.
struct Node<'w, 'l> {
    walk: &'w mut Walk<'l>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.walk.node().map(|()| Value::Bool(b))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        self.walk.node().map(|()| Value::from(n))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        self.walk.node().map(|()| Value::from(n))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        self.walk.node().map(|()| Value::from(n))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.walk.node().map(|()| Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.walk.string(s).map(|()| Value::String(s.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.walk.string(&s).map(|()| Value::String(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.walk.enter(self.depth)?;
        let mut items = Vec::new();
        loop {
            self.walk.path.push(items.len().to_string());
            let next = seq.next_element_seed(Node {
                walk: &mut *self.walk,
                depth: self.depth + 1,
            });
            self.walk.path.pop();
            let Some(item) = next? else {
                return Ok(Value::Array(items));
            };
            items.push(item);
            self.walk.item(items.len())?;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.walk.enter(self.depth)?;
        let mut entries = serde_json::Map::new();
        let mut count = 0usize;
        while let Some(key) = map.next_key::<String>()? {
            count += 1;
            self.walk.item(count)?;
            self.walk.string(&key)?;
            self.walk.path.push(key.clone());
            let value = map.next_value_seed(Node {
                walk: &mut *self.walk,
                depth: self.depth + 1,
            });
            self.walk.path.pop();
            entries.insert(key, value?);
        }
        Ok(Value::Object(entries))
    }
}

/// Apple renamed two states; a rule written with either label matches both.
const ALIASES: &[(&str, &str)] = &[
    ("ready for distribution", "ready for sale"),
    ("processing for distribution", "processing for app store"),
];

/// The canonical, lowercase form of a status label: trimmed, case-folded, inner whitespace
/// collapsed, underscores read as spaces (App Store Connect's API says `IN_REVIEW` where
/// Statused says "In Review"), and Apple's newer labels mapped to the older ones.
pub fn normalize_status(label: &str) -> String {
    let folded = label
        .split(|c: char| c.is_whitespace() || c == '_')
        .filter(|word| !word.is_empty())
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
    fn build_event_parses_into_one_owned_record() {
        let body = sample("build-valid.json");
        let env = Envelope::parse(&body).unwrap();
        assert_eq!(env.type_, "com.statused.build.status.updated");
        assert_eq!(env.id, "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d");
        let fields = env.match_fields();
        assert_eq!(fields.status.as_deref(), Some("Valid"));
        assert_eq!(fields.app_name.as_deref(), Some("Markdown Email"));
        assert_eq!(env.data["build_version"], "456");
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

    fn event_with_data(data: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0", "type": "t", "source": "s", "id": "1", "data": data,
        }))
        .unwrap()
    }

    #[test]
    fn events_over_the_data_limits_are_refused_naming_the_limit() {
        let limits = DATA_LIMITS;
        let cases = [
            (
                serde_json::json!({"l": vec![0; limits.max_items + 1]}),
                "data.l has more than 256 items",
            ),
            (
                serde_json::json!({"m": (0..=limits.max_items).map(|i| (i.to_string(), serde_json::json!(0))).collect::<serde_json::Map<_, _>>()}),
                "data.m has more than 256 items",
            ),
            (
                serde_json::json!({"s": "x".repeat(limits.max_string_bytes + 1)}),
                "a string at data.s is longer than 16384 bytes",
            ),
            (
                (0..=limits.max_depth).fold(serde_json::json!(1), |v, _| serde_json::json!([v])),
                "nested more than 16",
            ),
            (
                serde_json::json!((0..20).map(|_| vec![0; 250]).collect::<Vec<_>>()),
                "more than 4096 values",
            ),
            (
                serde_json::json!(
                    (0..100)
                        .map(|_| "y".repeat(limits.max_string_bytes))
                        .collect::<Vec<_>>()
                ),
                "add up to more than 262144 bytes",
            ),
        ];
        for (data, expected) in cases {
            let body = event_with_data(data);
            let err = Envelope::parse(&body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} (expected: {expected})");
        }
    }

    #[test]
    fn events_at_the_data_limits_are_accepted() {
        let limits = DATA_LIMITS;
        let at = serde_json::json!({
            "l": vec![0; limits.max_items],
            "s": "x".repeat(limits.max_string_bytes),
            "deep": (0..limits.max_depth - 2).fold(serde_json::json!(1), |v, _| serde_json::json!([v])),
        });
        Envelope::parse(&event_with_data(at)).unwrap();
        let long_id = serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0", "type": "t", "source": "s", "id": "i".repeat(limits.max_string_bytes + 1),
        }))
        .unwrap();
        let err = Envelope::parse(&long_id).unwrap_err().to_string();
        assert!(err.contains("string at id"), "{err}");
    }

    #[test]
    fn an_over_limit_message_never_echoes_more_than_a_short_path() {
        let key = "k".repeat(10_000);
        let data = (0..=DATA_LIMITS.max_depth).fold(
            serde_json::json!(1),
            |v, _| serde_json::json!({key.clone(): v}),
        );
        let err = Envelope::parse(&event_with_data(data))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400, "{} bytes: {err:.200}", err.len());
        assert!(err.contains("nested more than 16"), "{err:.300}");
    }

    #[test]
    fn a_stored_events_data_is_checked_the_same_way() {
        let over = serde_json::json!({"l": vec![0; DATA_LIMITS.max_items + 1]});
        assert!(check_data_value(&over, &DATA_LIMITS).is_err());
        assert!(check_data_value(&serde_json::json!({"l": [1]}), &DATA_LIMITS).is_ok());
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
        // App Store Connect's own webhooks name states in the API's enum form.
        assert_eq!(normalize_status("IN_REVIEW"), normalize_status("In Review"));
        assert_eq!(
            normalize_status("READY_FOR_DISTRIBUTION"),
            normalize_status("Ready for Sale")
        );
        assert_ne!(
            normalize_status("Ready for Sale"),
            normalize_status("Ready for Review")
        );
    }
}
