//! Sending a built request and the one response policy every HTTP target follows:
//! 2xx succeeds; 408, 425, 429, 5xx and network errors are retried (honouring `Retry-After`);
//! any other status fails at once.

use std::time::Duration;

use super::outbound::{Blocked, Outbound, refusal};
pub use super::outcome::{Class, ClassifyFailure, Outcome, classify_status};
use super::request::{HttpRequest, HttpTarget};

/// How many bytes of a failed response body are kept on the delivery.
const BODY_EXCERPT: usize = 256;

/// How many bytes of a successful answer are kept for the target to read an id from.
const SUCCESS_BODY: usize = 4096;

/// The most of any answer that is read: the rest is never received (the connection is
/// dropped), so a target streaming gigabytes costs this much memory, not gigabytes. Larger
/// than the excerpt so that a secret echoed across the excerpt's end is still redacted whole.
pub const READ_AT_MOST: usize = 16 * 1024;

/// Reads at most `cap` bytes of `response`'s body; what does not arrive within the request's
/// timeout, or fails, ends the read with what was had.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The start of an answer for `lastError`: secrets redacted first, then cut to
/// `BODY_EXCERPT` bytes (at a character boundary), so no prefix of a secret survives the cut.
pub fn excerpt(body: &[u8], redact: impl Fn(&str) -> String) -> String {
    // Control characters (newlines, escapes) become spaces: the excerpt is one line of text.
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let redacted = redact(&text);
    let mut end = redacted.len().min(BODY_EXCERPT);
    while !redacted.is_char_boundary(end) {
        end -= 1;
    }
    redacted[..end].trim().to_string()
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

/// Sends `req`, built by `target`, and classifies the answer; a success carries what
/// `target` reads from it (what it started, the id it was given).
pub async fn call(
    out: &Outbound,
    target: &dyn HttpTarget,
    req: HttpRequest,
    default_timeout: Duration,
) -> Outcome {
    match send(out, req, default_timeout).await {
        Outcome::Succeeded { code, body, .. } => Outcome::Succeeded {
            code,
            created: target.created(&body),
            response_id: target.response_id(&body),
            body,
        },
        other => other,
    }
}

/// Sends `req` and classifies the answer. Recorded text never includes the URL (it may hold
/// a token) and has the request's secrets scrubbed.
///
/// A destination the outbound guard refuses fails at once and is not retried; its error says
/// the address class, never the address.
pub async fn send(out: &Outbound, mut req: HttpRequest, default_timeout: Duration) -> Outcome {
    let timeout = req.timeout.unwrap_or(default_timeout);
    match out.check(&req.url).await {
        Ok(()) => {}
        Err(Blocked::Refused(refused)) => return Outcome::failed(None, refused.to_string()),
        Err(Blocked::Unresolved) => {
            let error = "the target's host name did not resolve".to_string();
            return Outcome::retry(None, error, None);
        }
    }
    let client = &out.client;
    // Taken, not copied: what is used afterwards is the secrets, auth and classification.
    let mut headers = std::mem::take(&mut req.headers);
    if let Some(auth) = req.auth.clone() {
        match auth.authorization(client, &out.credentials, timeout).await {
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
        .body(std::mem::take(&mut req.body))
        .timeout(timeout)
        .send()
        .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => match refusal(&e) {
            Some(refused) => return Outcome::failed(None, refused.to_string()),
            None => return Outcome::retry(None, transport_error(&e, timeout), None),
        },
    };
    let code = response.status().as_u16();
    let (limited, after) = rate_limit(response.headers(), jiff::Timestamp::now());
    let class = match classify_status(code) {
        // GitHub answers its secondary rate limit with 403 and Retry-After, or with
        // x-ratelimit-remaining: 0 and the reset time: a wait, not a refusal.
        Class::Permanent if code == 403 && limited => Class::Retry,
        class => class,
    };
    if class == Class::Success {
        return Outcome::Succeeded {
            code: Some(code),
            body: read_capped(response, req.answer_bytes.unwrap_or(SUCCESS_BODY)).await,
            created: None,
            response_id: None,
        };
    }
    let body = read_capped(response, READ_AT_MOST).await;
    let class = req
        .classify_failure
        .and_then(|classify| classify(code, &body))
        .unwrap_or(class);
    let excerpt = excerpt(&body, |text| req.redact(text));
    let error = match (code, excerpt.is_empty()) {
        // Redirects are never followed: where they lead has not passed the outbound guard.
        (300..=399, _) => format!("HTTP {code}: redirects are not followed; use the final URL"),
        (_, true) => format!("HTTP {code}"),
        (_, false) => format!("HTTP {code}: {excerpt}"),
    };
    if code == 401
        && let Some(auth) = &req.auth
    {
        // A revoked or expired credential: drop it and try again with a fresh one.
        auth.invalidate(&out.credentials);
        return Outcome::retry(Some(code), error, after);
    }
    match class {
        Class::Retry => Outcome::retry(Some(code), error, after),
        _ => Outcome::failed(Some(code), error),
    }
}

/// Whether an answer says a rate limit was hit, and until when: `Retry-After` (seconds or a
/// date), else `x-ratelimit-reset` (epoch seconds, GitHub and others) when
/// `x-ratelimit-remaining` is 0.
pub fn rate_limit(
    headers: &reqwest::header::HeaderMap,
    now: jiff::Timestamp,
) -> (bool, Option<Duration>) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = text("retry-after").and_then(|v| parse_retry_after(v, now));
    let exhausted = text("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    let reset = text("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .filter(|_| exhausted)
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or_default());
    (retry_after.is_some() || exhausted, retry_after.or(reset))
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
    fn a_secret_across_the_cut_is_redacted_before_cutting() {
        let secret = "s3cr3t-t0ken-value";
        let body = format!("{}{secret} and more", "x".repeat(BODY_EXCERPT - 6));
        let cut = excerpt(body.as_bytes(), |t| t.replace(secret, "[redacted]"));
        assert!(!cut.contains("s3cr3t"), "{cut}");
        assert!(cut.len() <= BODY_EXCERPT);
        // Multi-byte characters are never split.
        let wide = "é".repeat(BODY_EXCERPT);
        assert!(excerpt(wide.as_bytes(), |t| t.to_string()).len() <= BODY_EXCERPT);
    }

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
    fn a_rate_limit_is_read_from_retry_after_or_githubs_reset_headers() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = reqwest::header::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert_eq!(
            rate_limit(&headers(&[("retry-after", "5")]), now),
            (true, Some(Duration::from_secs(5)))
        );
        let reset = (now.as_second() + 30).to_string();
        assert_eq!(
            rate_limit(
                &headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &reset)
                ]),
                now
            ),
            (true, Some(Duration::from_secs(30)))
        );
        // Requests left: the reset time is no wait.
        assert_eq!(
            rate_limit(
                &headers(&[
                    ("x-ratelimit-remaining", "12"),
                    ("x-ratelimit-reset", &reset)
                ]),
                now
            ),
            (false, None)
        );
        assert_eq!(rate_limit(&headers(&[]), now), (false, None));
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
