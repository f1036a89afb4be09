//! `statused-operator sign` and `send`: produce and post an event exactly as Statused does.

use std::io::Read;
use std::path::Path;

use crate::signature::{self, SIGNATURE_HEADER};

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

/// `body` (a CloudEvent) with its `time` set to now.
pub fn dated_now(body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let mut event: serde_json::Value = serde_json::from_slice(body)?;
    if let Some(fields) = event.as_object_mut() {
        fields.insert("time".into(), jiff::Timestamp::now().to_string().into());
    }
    serde_json::to_vec(&event)
}

/// POSTs `body` signed with `secret`; returns the status code and response body.
pub async fn send(url: &str, secret: &str, body: Vec<u8>) -> Result<(u16, String), reqwest::Error> {
    let response = reqwest::Client::new()
        .post(url)
        .header(SIGNATURE_HEADER, sign(secret, &body))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/cloudevents+json",
        )
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}
