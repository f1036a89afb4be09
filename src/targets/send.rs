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

/// `Retry-After` as delta-seconds (the HTTP-date form is rare for APIs and treated as absent).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sends `req` and classifies the answer. Errors never include the URL, which may hold a token.
pub async fn send(client: &reqwest::Client, req: HttpRequest, timeout: Duration) -> Outcome {
    let HttpRequest {
        method,
        url,
        headers,
        body,
    } = req;
    let result = client
        .request(method, url)
        .headers(headers)
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no response within {}s", timeout.as_secs_f32())
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                "request failed".to_string()
            };
            return Outcome::Retry {
                code: None,
                error,
                after: None,
            };
        }
    };
    let code = response.status().as_u16();
    let class = classify_status(code);
    if class == Class::Success {
        let mut body = response.bytes().await.unwrap_or_default().to_vec();
        body.truncate(SUCCESS_BODY);
        return Outcome::Succeeded {
            code: Some(code),
            body,
            created: None,
        };
    }
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.bytes().await.unwrap_or_default();
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)])
        .trim()
        .to_string();
    let error = if excerpt.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {excerpt}")
    };
    match class {
        Class::Retry => Outcome::Retry {
            code: Some(code),
            error,
            after,
        },
        _ => Outcome::Failed {
            code: Some(code),
            error,
        },
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
    fn retry_after_seconds_parse() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
