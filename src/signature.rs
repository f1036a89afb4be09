//! Verification of the `X-Statused-Signature` header: `sha256=<hex HMAC-SHA256(secret, raw body)>`.
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

type HmacSha256 = Hmac<Sha256>;

/// Why a signature did not verify. Deliberately coarse: the caller answers 401 for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("signature header is not of the form sha256=<hex>")]
    Malformed,
    #[error("signature does not match any signing secret")]
    Mismatch,
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

/// Checks `header` (the raw header value, if any) against every secret in `secrets`.
///
/// Every secret is tried even after a match so that the time taken does not reveal which one
/// matched.
pub fn verify<S: AsRef<[u8]>>(
    header: Option<&[u8]>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let normalized = normalize(header).ok_or(SignatureError::Malformed)?;
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = sign(secret.as_ref(), body);
        matched |= expected.as_bytes().ct_eq(&normalized);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `sha256=` followed by exactly 64 hex digits, lowercased; anything else is malformed.
fn normalize(header: &[u8]) -> Option<Vec<u8>> {
    let header = header.trim_ascii();
    let hex = header.strip_prefix(PREFIX.as_bytes())?;
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = PREFIX.as_bytes().to_vec();
    out.extend(hex.iter().map(u8::to_ascii_lowercase));
    Some(out)
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
}
