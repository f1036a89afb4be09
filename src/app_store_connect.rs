//! App Store Connect's own webhook notifications (Apple, 2025), read into the same event
//! record as a Statused CloudEvent, so that rules, targets, dedup, the replay window and the
//! data limits treat both sources alike.
//!
//! Apple POSTs a JSON:API document, signed with `x-apple-signature: hmacsha256=<hex>` (see
//! `signature.rs`):
//!
//! ```json
//! {"data": {"type": "appStoreVersionAppVersionStateUpdated", "id": "7c81…", "version": 1,
//!   "attributes": {"oldValue": "PREPARE_FOR_SUBMISSION", "newValue": "READY_FOR_REVIEW",
//!                  "timestamp": "2025-04-16T05:00:52.745Z"},
//!   "relationships": {"instance": {"data": {"type": "appStoreVersions", "id": "ad7e…"}}}}}
//! ```
//!
//! | event record      | from the notification                                        |
//! |-------------------|--------------------------------------------------------------|
//! | `id`              | `data.id`                                                    |
//! | `type`            | `data.type`, as Apple spells it                              |
//! | `source`          | [`SOURCE`]                                                   |
//! | `time`            | `data.attributes.timestamp`                                  |
//! | `data.status`     | the new state (`newValue`, `newState` or `newExternalBuildState`) |
//! | `data.old_status` | the old state (`oldValue`, `oldState` or `oldExternalBuildState`) |
//! | `data.instance_type`, `data.instance_id`, `data.instance_url` | `relationships.instance` |
//! | `data.app_store_connect` | Apple's `data` object as sent                          |
//!
//! A ping (`webhookPingCreated`, what "Test" in App Store Connect sends) is answered without
//! a delivery. Pure: no HTTP, no Kubernetes.

use serde_json::{Map, Value};

use crate::event::{DATA_LIMITS, Envelope, EnvelopeError, check_data_value, parse_limited};

/// The `source` of every event read from App Store Connect.
pub const SOURCE: &str = "https://appstoreconnect.apple.com";
/// The type of the notification App Store Connect sends when a webhook is tested.
pub const PING: &str = "webhookPingCreated";
/// The old and new state, as each kind of notification names them.
const STATES: [(&str, &str); 3] = [
    ("oldValue", "newValue"),
    ("oldState", "newState"),
    ("oldExternalBuildState", "newExternalBuildState"),
];

/// What App Store Connect sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Event(Envelope),
    /// A test of the webhook: verified, then answered, and nothing else.
    Ping,
}

/// Reads a notification's body, held to the same data limits as a Statused event.
pub fn parse(body: &[u8]) -> Result<Notification, EnvelopeError> {
    let mut document = parse_limited(body, &DATA_LIMITS)?;
    let Some(Value::Object(data)) = document.get_mut("data").map(Value::take) else {
        return Err(invalid("the body has no `data` object"));
    };
    let text = |name: &str, why: &'static str| match data.get(name).and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(invalid(why)),
    };
    let type_ = text("type", "`data.type` is missing or empty")?;
    if type_ == PING {
        return Ok(Notification::Ping);
    }
    let id = text("id", "`data.id` is missing or empty")?;
    let attributes = data.get("attributes").and_then(Value::as_object);
    let attribute = |name: &str| attributes.and_then(|a| a.get(name)).and_then(Value::as_str);
    let time = attribute("timestamp").map(str::to_string);
    let mut mapped = Map::new();
    mapped.insert("store_name".into(), "App Store Connect".into());
    if let Some((old, new)) = STATES
        .iter()
        .find(|(old, new)| attribute(old).is_some() || attribute(new).is_some())
    {
        for (field, name) in [("status", new), ("old_status", old)] {
            if let Some(v) = attribute(name) {
                mapped.insert(field.into(), v.into());
            }
        }
    }
    let instance = instance(&data);
    for (field, value) in [
        ("instance_type", instance.type_),
        ("instance_id", instance.id),
        ("instance_url", instance.url),
    ] {
        if let Some(v) = value {
            mapped.insert(field.into(), v.into());
        }
    }
    let subject = instance.id.map(str::to_string);
    mapped.insert("app_store_connect".into(), Value::Object(data));
    let data = Value::Object(mapped);
    // The copies above (the states, the instance) count too: what rules, templates and the
    // record see is held to the same limits as a Statused event's `data`, which the cost of
    // every expression was bounded against.
    check_data_value(&data, &DATA_LIMITS)?;
    Ok(Notification::Event(Envelope {
        specversion: "1.0".into(),
        type_,
        source: SOURCE.into(),
        id,
        time,
        subject,
        data,
    }))
}

fn invalid(why: &'static str) -> EnvelopeError {
    EnvelopeError::AppStoreConnect(why)
}

/// What the notification is about.
#[derive(Default)]
struct Instance<'a> {
    type_: Option<&'a str>,
    id: Option<&'a str>,
    url: Option<&'a str>,
}

/// `relationships.instance`: `{data: {type, id}, links: {self}}`, or (Background Asset
/// notifications) `{type, id, links}` without the `data` wrapper.
fn instance(data: &Map<String, Value>) -> Instance<'_> {
    let Some(instance) = data.get("relationships").and_then(|r| r.get("instance")) else {
        return Instance::default();
    };
    let linkage = instance.get("data").unwrap_or(instance);
    fn text<'v>(v: &'v Value, name: &str) -> Option<&'v str> {
        v.get(name)?.as_str()
    }
    Instance {
        type_: text(linkage, "type"),
        id: text(linkage, "id"),
        url: instance.get("links").and_then(|l| text(l, "self")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::OverLimit;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/app-store-connect"
        );
        std::fs::read(format!("{dir}/{name}")).unwrap()
    }

    fn event(name: &str) -> Envelope {
        match parse(&fixture(name)).unwrap() {
            Notification::Event(e) => e,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn an_app_version_state_change_reads_as_an_event_with_old_and_new_state() {
        let e = event("app-version-in-review.json");
        assert_eq!(e.type_, "appStoreVersionAppVersionStateUpdated");
        assert_eq!(e.id, "0d6a9f4e-3f0e-4c55-9a1b-2f4d1c6e8a01");
        assert_eq!(e.source, SOURCE);
        assert_eq!(e.time.as_deref(), Some("2026-11-30T09:15:02.745Z"));
        assert_eq!(e.data["status"], "IN_REVIEW");
        assert_eq!(e.data["old_status"], "WAITING_FOR_REVIEW");
        assert_eq!(e.data["instance_type"], "appStoreVersions");
        assert_eq!(
            e.data["instance_id"],
            "ad7e6298-7b4a-4c4e-a3a1-0f1a5c2d9b11"
        );
        assert_eq!(
            e.subject.as_deref(),
            Some("ad7e6298-7b4a-4c4e-a3a1-0f1a5c2d9b11")
        );
        // Apple's own object is kept whole for expressions that need more.
        assert_eq!(e.data["app_store_connect"]["version"], 1);
        assert_eq!(e.match_fields().status.as_deref(), Some("IN_REVIEW"));
    }

    #[test]
    fn each_kind_of_state_names_its_fields_its_own_way() {
        let build = event("build-upload-complete.json");
        assert_eq!(build.data["status"], "COMPLETE");
        assert_eq!(build.data["old_status"], "PROCESSING");
        assert_eq!(build.data["instance_type"], "buildUploads");
        let beta = event("build-beta-approved.json");
        assert_eq!(beta.data["status"], "BETA_APPROVED");
        assert_eq!(beta.data["old_status"], "IN_BETA_REVIEW");
        // Feedback has no state: no status, the rest as usual.
        let feedback = event("beta-feedback-screenshot.json");
        assert!(feedback.data.get("status").is_none());
        assert_eq!(
            feedback.data["instance_url"],
            "https://api.appstoreconnect.apple.com/v1/betaFeedbackScreenshotSubmissions/AD8Jv1kq0bF3xS3HhZgX"
        );
    }

    #[test]
    fn a_ping_is_not_an_event() {
        assert_eq!(parse(&fixture("ping.json")).unwrap(), Notification::Ping);
    }

    #[test]
    fn background_asset_instances_without_the_data_wrapper_are_read_too() {
        let body = br#"{"data":{"type":"backgroundAssetVersionStateUpdated","id":"x1",
            "attributes":{"oldState":"PROCESSING","newState":"COMPLETE","timestamp":"2026-11-30T09:00:00Z"},
            "relationships":{"instance":{"type":"backgroundAssetVersions","id":"bav-1",
            "links":{"self":"https://api.appstoreconnect.apple.com/v1/backgroundAssetVersions/bav-1"}}}}}"#;
        let Notification::Event(e) = parse(body).unwrap() else {
            panic!()
        };
        assert_eq!(e.data["instance_id"], "bav-1");
        assert_eq!(e.data["status"], "COMPLETE");
    }

    #[test]
    fn what_is_not_a_notification_is_refused_saying_why() {
        for (body, why) in [
            (&b"[]"[..], "no `data` object"),
            (br#"{"data":"x"}"#, "no `data` object"),
            (br#"{"data":{"id":"a"}}"#, "`data.type` is missing"),
            (
                br#"{"data":{"type":"x","id":""}}"#,
                "`data.id` is missing or empty",
            ),
            (b"{", "not JSON"),
        ] {
            let error = parse(body).unwrap_err().to_string();
            assert!(error.contains(why), "{error} (wanted {why})");
        }
    }

    #[test]
    fn what_the_mapping_copies_counts_against_the_limits_too() {
        // Each string within the limit, and the body within the total; the states and ids
        // copied into `data` would take it over: refused, not passed on over the limits.
        let part = "x".repeat(DATA_LIMITS.max_string_bytes);
        let strings = DATA_LIMITS.max_total_bytes / DATA_LIMITS.max_string_bytes - 1;
        let mut attributes = serde_json::Map::new();
        attributes.insert("newValue".into(), part.clone().into());
        attributes.insert("oldValue".into(), part.clone().into());
        for i in 0..strings.saturating_sub(2) {
            attributes.insert(format!("pad{i}"), part.clone().into());
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "data": {"type": "t", "id": "i", "attributes": attributes}
        }))
        .unwrap();
        assert!(
            parse_limited(&body, &DATA_LIMITS).is_ok(),
            "the body alone is within the limits"
        );
        assert!(
            matches!(parse(&body), Err(EnvelopeError::OverLimit(_))),
            "{:?}",
            parse(&body).map(|_| ())
        );
    }

    #[test]
    fn a_notification_over_the_data_limits_is_refused_naming_where() {
        let long = "x".repeat(DATA_LIMITS.max_string_bytes + 1);
        let body = serde_json::to_vec(&serde_json::json!({
            "data": {"type": "t", "id": "i", "attributes": {"newValue": long}}
        }))
        .unwrap();
        match parse(&body) {
            Err(EnvelopeError::OverLimit(OverLimit::String { path, .. })) => {
                assert_eq!(path, "body.data.attributes.newValue")
            }
            other => panic!("{other:?}"),
        }
    }
}
