//! Sending a built request and the one response policy every HTTP target follows:
//! 2xx succeeds; 408, 425, 429, 5xx and network errors are retried (honouring `Retry-After`);
//! any other status fails at once.

use std::time::Duration;

use super::HttpRequest;
use crate::api::CreatedObject;

/// How many bytes of a failed response body are kept on the delivery.
const BODY_EXCERPT: usize = 256;

/// How many bytes of a successful answer are kept for the target to read an id from.
const SUCCESS_BODY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        code: Option<u16>,
        /// The start of the answer's body (HTTP targets).
        body: Vec<u8>,
        /// The object an in-cluster target created (or found already created).
        created: Option<CreatedObject>,
    },
    /// Worth trying again; `after` is the server's `Retry-After`, if it gave one.
    Retry {
        code: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    Failed {
        code: Option<u16>,
        error: String,
    },
}

impl Outcome {
    pub fn created(object: CreatedObject, code: u16) -> Self {
        Outcome::Succeeded {
            code: Some(code),
            body: Vec::new(),
            created: Some(object),
        }
    }

    pub fn failed(code: Option<u16>, error: String) -> Self {
        Outcome::Failed { code, error }
    }

    pub fn retry(code: Option<u16>, error: String, after: Option<Duration>) -> Self {
        Outcome::Retry { code, error, after }
    }
}

pub fn classify_status(code: u16) -> Class {
    match code {
        200..=299 => Class::Success,
        408 | 425 | 429 | 500..=599 => Class::Retry,
        _ => Class::Permanent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    Retry,
    Permanent,
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(Duration::try_from(at.duration_since(now)).unwrap_or_default())
}

/// Sends `req` and classifies the answer. Recorded text never includes the URL (it may hold
/// a token) and has the request's secrets scrubbed.
pub async fn send(
    client: &reqwest::Client,
    mut req: HttpRequest,
    default_timeout: Duration,
) -> Outcome {
    let timeout = req.timeout.unwrap_or(default_timeout);
    let mut headers = req.headers.clone();
    if let Some(auth) = req.auth.clone() {
        match auth.authorization(client, timeout).await {
            Ok((value, credential)) => {
                headers.insert(reqwest::header::AUTHORIZATION, value);
                req = req.secret(credential);
            }
            Err(outcome) => return outcome,
        }
    }
    let result = client
        .request(req.method.clone(), req.url.clone())
        .headers(headers)
        .body(req.body.clone())
        .timeout(timeout)
        .send()
        .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => return Outcome::retry(None, transport_error(&e, timeout), None),
    };
    let code = response.status().as_u16();
    let class = classify_status(code);
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
    let mut body = response.bytes().await.unwrap_or_default().to_vec();
    if class == Class::Success {
        body.truncate(SUCCESS_BODY);
        return Outcome::Succeeded {
            code: Some(code),
            body,
            created: None,
        };
    }
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)])
        .trim()
        .to_string();
    let excerpt = req.redact(&excerpt);
    let error = if excerpt.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {excerpt}")
    };
    if code == 401
        && let Some(auth) = &req.auth
    {
        // A revoked or expired credential: drop it and try again with a fresh one.
        auth.invalidate();
        return Outcome::retry(Some(code), error, after);
    }
    match class {
        Class::Retry => Outcome::retry(Some(code), error, after),
        _ => Outcome::failed(Some(code), error),
    }
}

/// A transport failure in words, without the URL reqwest would include.
pub fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no response within {}s", timeout.as_secs_f32())
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_follow_the_policy() {
        for code in [200, 201, 202, 204] {
            assert_eq!(classify_status(code), Class::Success, "{code}");
        }
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(code), Class::Retry, "{code}");
        }
        for code in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(classify_status(code), Class::Permanent, "{code}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now: jiff::Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
