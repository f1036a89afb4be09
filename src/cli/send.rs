//! `statused-operator sign` and `send`: produce and post an event exactly as Statused (or App
//! Store Connect) does.

use std::io::Read;
use std::path::Path;

use crate::signature::{self, APPLE_SIGNATURE_HEADER, SIGNATURE_HEADER};

pub fn read_body(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    signature::sign(secret.as_bytes(), body)
}

/// Whose way a body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Statused,
    AppStoreConnect,
}

/// `body` with its time set to now: a CloudEvent's `time`, or an App Store Connect
/// notification's `data.attributes.timestamp`.
pub fn dated_now(body: &[u8], sender: Sender) -> Result<Vec<u8>, serde_json::Error> {
    let mut event: serde_json::Value = serde_json::from_slice(body)?;
    let now = jiff::Timestamp::now().to_string();
    let (fields, name) = match sender {
        Sender::Statused => (event.as_object_mut(), "time"),
        // `data.attributes` is made when the notification has none.
        Sender::AppStoreConnect => (
            event
                .get_mut("data")
                .and_then(|d| d.as_object_mut())
                .and_then(|d| {
                    d.entry("attributes")
                        .or_insert_with(|| serde_json::json!({}))
                        .as_object_mut()
                }),
            "timestamp",
        ),
    };
    if let Some(fields) = fields {
        fields.insert(name.into(), now.into());
    }
    serde_json::to_vec(&event)
}

/// POSTs `body` signed with `secret` as `sender` does; returns the status code and response
/// body.
pub async fn send(
    url: &str,
    secret: &str,
    body: Vec<u8>,
    sender: Sender,
) -> Result<(u16, String), reqwest::Error> {
    let (header, value, content_type) = match sender {
        Sender::Statused => (
            SIGNATURE_HEADER,
            sign(secret, &body),
            "application/cloudevents+json",
        ),
        Sender::AppStoreConnect => (
            APPLE_SIGNATURE_HEADER,
            signature::sign_apple(secret.as_bytes(), &body),
            "application/json",
        ),
    };
    let response = reqwest::Client::new()
        .post(url)
        .header(header, value)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}
