//! Verification of the `X-Statused-Signature` header: `sha256=<hex HMAC-SHA256(secret, raw body)>`,
//! of Standard Webhooks signatures (standardwebhooks.com), and of App Store Connect's own
//! `x-apple-signature: hmacsha256=<hex>`, for routes that ask for them.
//!
//! Pure: no HTTP framework, no Kubernetes. The whole header value is compared in constant time
//! against the expected value computed for each signing secret (rotation means several secrets
//! may be valid at once), as the Statused seed examples do; hex is accepted in either case.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header Statused puts the signature in.
pub const SIGNATURE_HEADER: &str = "x-statused-signature";
const PREFIX: &str = "sha256=";
/// The header App Store Connect puts its signature in, and the value's prefix: Apple's
/// "Configuring and parsing App Store Connect API webhook notifications" gives
/// `x-apple-signature:hmacsha256=<hex digest of HMAC-SHA256(secret, body)>`.
pub const APPLE_SIGNATURE_HEADER: &str = "x-apple-signature";
const APPLE_PREFIX: &str = "hmacsha256=";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature did not verify. Deliberately coarse: the caller answers 401 for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("signature header is not of the form sha256=<hex> (hmacsha256=<hex> from Apple)")]
    Malformed,
    #[error("signature does not match any signing secret")]
    Mismatch,
    #[error("webhook-id, webhook-timestamp and webhook-signature (v1,<base64>) are required")]
    MalformedStandard,
    #[error("webhook-timestamp is more than 5 minutes from now")]
    Stale,
}

/// How a route's events are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `X-Statused-Signature: sha256=<hex>` over the body.
    #[default]
    Statused,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// App Store Connect: `x-apple-signature: hmacsha256=<hex>` over the body.
    AppStoreConnect,
}

/// How far a Standard Webhooks timestamp may be from now, as the specification advises.
pub const STANDARD_TOLERANCE_SECONDS: i64 = 5 * 60;
/// Signatures read from one `webhook-signature` header, at most (a rotation sends two).
const STANDARD_MAX_SIGNATURES: usize = 8;

/// The key of a `whsec_` secret (a trailing newline is not part of it); `None` when it is
/// not one.
pub fn decode_whsec(stored: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(stored.trim_ascii()).ok()?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.strip_prefix("whsec_")?)
        .ok()?;
    (!key.is_empty()).then_some(key)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body" under key>`.
/// The body is fed to the HMAC as it is, never copied: a request costs no more memory per
/// signing key.
pub fn sign_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    // HMAC accepts keys of any length, so this cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The Standard Webhooks headers of a request, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardHeaders<'a> {
    pub id: Option<&'a [u8]>,
    pub timestamp: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

/// Checks a Standard-Webhooks-signed request at `now` (Unix seconds): its timestamp within
/// [`STANDARD_TOLERANCE_SECONDS`], and any of its `v1` signatures (the first 8) made with any
/// of `keys`, compared in constant time, every pair tried.
pub fn verify_standard<S: AsRef<[u8]>>(
    headers: StandardHeaders<'_>,
    body: &[u8],
    keys: &[S],
    now: i64,
) -> Result<(), SignatureError> {
    let signature = headers.signature.ok_or(SignatureError::Missing)?;
    fn text(v: Option<&[u8]>) -> Result<&str, SignatureError> {
        v.and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(SignatureError::MalformedStandard)
    }
    let (id, timestamp) = (text(headers.id)?, text(headers.timestamp)?);
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::MalformedStandard)?;
    // abs_diff: the timestamp is the sender's, unauthenticated yet; no arithmetic on it
    // may overflow.
    if now.abs_diff(timestamp) > STANDARD_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let given: Vec<&str> = text(Some(signature))?
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .take(STANDARD_MAX_SIGNATURES)
        .collect();
    if given.is_empty() {
        return Err(SignatureError::MalformedStandard);
    }
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        let expected = sign_standard(key.as_ref(), id, timestamp, body);
        for g in &given {
            matched |= expected.as_bytes()[3..].ct_eq(g.as_bytes());
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value Statused sends for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("{PREFIX}{}", hmac_sha256_hex(secret, body))
}

/// Lowercase hex HMAC-SHA256, as GitHub, Tekton interceptors and most webhook receivers use.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body))
}

/// HMAC-SHA256 of `body` under `secret`, the raw 32 bytes.
pub fn mac(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header value App Store Connect sends for `body` under `secret` (the secret's bytes as
/// the user typed it in the webhook's configuration).
pub fn sign_apple(secret: &[u8], body: &[u8]) -> String {
    format!("{APPLE_PREFIX}{}", hmac_sha256_hex(secret, body))
}

/// Checks `header` (the raw header value, if any) against every secret in `secrets`.
///
/// Every secret is tried even after a match so that the time taken does not reveal which one
/// matched.
pub fn verify<S: AsRef<[u8]>>(
    header: Option<&[u8]>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), SignatureError> {
    verify_hex(PREFIX, header, body, secrets)
}

/// [`verify`] for App Store Connect's `x-apple-signature: hmacsha256=<hex>`.
pub fn verify_apple<S: AsRef<[u8]>>(
    header: Option<&[u8]>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), SignatureError> {
    verify_hex(APPLE_PREFIX, header, body, secrets)
}

/// `<prefix><hex HMAC-SHA256 of body>` against every secret, in constant time.
fn verify_hex<S: AsRef<[u8]>>(
    prefix: &str,
    header: Option<&[u8]>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let given = normalize(prefix, header).ok_or(SignatureError::Malformed)?;
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = hmac_sha256_hex(secret.as_ref(), body);
        matched |= expected.as_bytes().ct_eq(&given);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The hex digits after `prefix`, exactly 64 of them, lowercased; anything else is malformed.
fn normalize(prefix: &str, header: &[u8]) -> Option<Vec<u8>> {
    let header = header.trim_ascii();
    let hex = header.strip_prefix(prefix.as_bytes())?;
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(hex.iter().map(u8::to_ascii_lowercase).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"statused-test-secret";

    fn sample(name: &str) -> (Vec<u8>, String) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/samples");
        let body = std::fs::read(format!("{dir}/{name}")).unwrap();
        let sigs = std::fs::read_to_string(format!("{dir}/SIGNATURES.txt")).unwrap();
        let sig = sigs
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .to_string();
        (body, sig)
    }

    const SAMPLES: &[&str] = &[
        "account-agreement.json",
        "app-in-review.json",
        "app-ready-for-distribution.json",
        "app-ready-for-sale.json",
        "app-rejected.json",
        "build-invalid.json",
        "build-valid.json",
    ];

    #[test]
    fn every_sample_signature_is_reproduced_and_verifies() {
        for name in SAMPLES {
            let (body, sig) = sample(name);
            assert_eq!(sign(SECRET, &body), sig, "{name}");
            assert_eq!(
                verify(Some(sig.as_bytes()), &body, &[SECRET]),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        let (body, sig) = sample("build-valid.json");
        assert_eq!(
            verify(Some(sig.as_bytes()), &body, &[b"another-secret".as_slice()]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_body_is_a_mismatch() {
        let (mut body, sig) = sample("build-valid.json");
        let pos = body.iter().position(|b| *b == b'V').unwrap();
        body[pos] = b'v';
        assert_eq!(
            verify(Some(sig.as_bytes()), &body, &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_header_is_reported_as_missing() {
        let (body, _) = sample("build-valid.json");
        assert_eq!(verify(None, &body, &[SECRET]), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let (body, sig) = sample("build-valid.json");
        let hex = sig.strip_prefix("sha256=").unwrap();
        for bad in [
            hex.to_string(),                   // no prefix
            format!("sha1={hex}"),             // other algorithm
            format!("sha256={}", &hex[..63]),  // short
            format!("sha256={hex}00"),         // long
            format!("sha256={}z", &hex[..63]), // not hex
            String::new(),
        ] {
            assert_eq!(
                verify(Some(bad.as_bytes()), &body, &[SECRET]),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn app_store_connect_apples_published_example_signs_and_verifies() {
        // Apple's article: the secret "This is my secret" and the body "Hello, World!" give
        // `x-apple-signature:hmacsha256=7f062172…e54657`.
        let header = sign_apple(b"This is my secret", b"Hello, World!");
        assert_eq!(
            header,
            "hmacsha256=7f062172b01cb00b53ca068614674a3d982a34062a0f5d37687d5e3377e54657"
        );
        let keys: [&[u8]; 2] = [b"an older secret", b"This is my secret"];
        assert_eq!(
            verify_apple(Some(header.as_bytes()), b"Hello, World!", &keys),
            Ok(())
        );
        assert_eq!(
            verify_apple(Some(header.as_bytes()), b"Hello, World?", &keys),
            Err(SignatureError::Mismatch)
        );
        // Statused's prefix is not Apple's, nor the other way round; a bare digest neither.
        let hex = header.strip_prefix("hmacsha256=").unwrap();
        for bad in [format!("sha256={hex}"), hex.to_string()] {
            assert_eq!(
                verify_apple(Some(bad.as_bytes()), b"Hello, World!", &keys),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(Some(header.as_bytes()), b"Hello, World!", &keys),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_apple(None, b"Hello, World!", &keys),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn uppercase_hex_verifies() {
        let (body, sig) = sample("app-rejected.json");
        let upper = format!("sha256={}", sig["sha256=".len()..].to_ascii_uppercase());
        assert_eq!(verify(Some(upper.as_bytes()), &body, &[SECRET]), Ok(()));
    }

    #[test]
    fn a_rotated_second_secret_verifies_and_the_old_one_still_does() {
        let (body, old_sig) = sample("app-in-review.json");
        let new_secret = b"rotated-secret".as_slice();
        let new_sig = sign(new_secret, &body);
        let both = [new_secret, SECRET];
        assert_eq!(verify(Some(new_sig.as_bytes()), &body, &both), Ok(()));
        assert_eq!(verify(Some(old_sig.as_bytes()), &body, &both), Ok(()));
        assert_eq!(
            verify(Some(new_sig.as_bytes()), &body, &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_secrets_never_verifies() {
        let (body, sig) = sample("build-valid.json");
        let none: [&[u8]; 0] = [];
        assert_eq!(
            verify(Some(sig.as_bytes()), &body, &none),
            Err(SignatureError::Mismatch)
        );
    }

    /// The Standard Webhooks specification's published vector.
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_AT: i64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn standard<'a>(id: &'a str, at: &'a str, sig: &'a str) -> StandardHeaders<'a> {
        StandardHeaders {
            id: Some(id.as_bytes()),
            timestamp: Some(at.as_bytes()),
            signature: Some(sig.as_bytes()),
        }
    }

    #[test]
    fn standard_webhooks_the_published_vector_signs_and_verifies() {
        let key = decode_whsec(WHSEC.as_bytes()).unwrap();
        assert_eq!(sign_standard(&key, SW_ID, SW_AT, SW_BODY), SW_SIGNATURE);
        let at = SW_AT.to_string();
        let ok = verify_standard(standard(SW_ID, &at, SW_SIGNATURE), SW_BODY, &[&key], SW_AT);
        assert_eq!(ok, Ok(()));
        // Rotation: another key first, and several signatures in the header.
        let rotated = format!("v1,bm90IGl0 {SW_SIGNATURE}");
        let keys = [b"another key".to_vec(), key.clone()];
        assert_eq!(
            verify_standard(standard(SW_ID, &at, &rotated), SW_BODY, &keys, SW_AT + 299),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_refuses_stale_altered_and_malformed_requests() {
        let key = decode_whsec(WHSEC.as_bytes()).unwrap();
        let at = SW_AT.to_string();
        let check =
            |h: StandardHeaders<'_>, body: &[u8], now: i64| verify_standard(h, body, &[&key], now);
        let h = standard(SW_ID, &at, SW_SIGNATURE);
        assert_eq!(check(h, SW_BODY, SW_AT + 301), Err(SignatureError::Stale));
        assert_eq!(check(h, SW_BODY, SW_AT - 301), Err(SignatureError::Stale));
        assert_eq!(check(h, b"{}", SW_AT), Err(SignatureError::Mismatch));
        let other_id = standard("msg_other", &at, SW_SIGNATURE);
        assert_eq!(
            check(other_id, SW_BODY, SW_AT),
            Err(SignatureError::Mismatch)
        );
        let no_v1 = standard(SW_ID, &at, "v2,g0hM9SsE");
        assert_eq!(
            check(no_v1, SW_BODY, SW_AT),
            Err(SignatureError::MalformedStandard)
        );
        let bad_time = standard(SW_ID, "soon", SW_SIGNATURE);
        assert_eq!(
            check(bad_time, SW_BODY, SW_AT),
            Err(SignatureError::MalformedStandard)
        );
        // A timestamp no arithmetic can take: refused, never a panic or a wrap.
        for extreme in [i64::MIN, i64::MAX] {
            let t = extreme.to_string();
            let h = standard(SW_ID, &t, SW_SIGNATURE);
            assert_eq!(check(h, SW_BODY, SW_AT), Err(SignatureError::Stale));
        }
        let none = StandardHeaders::default();
        assert_eq!(check(none, SW_BODY, SW_AT), Err(SignatureError::Missing));
        assert!(decode_whsec(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(decode_whsec(b"whsec_not base64!").is_none());
    }
}
