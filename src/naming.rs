//! Deterministic names, labels and annotations for what the operator creates, so that a
//! redelivered event or a retried target finds what is already there instead of creating it
//! twice.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub const LABEL_ROUTE: &str = "statused.dev/route";
pub const LABEL_RULE: &str = "statused.dev/rule";
pub const LABEL_EVENT_ID: &str = "statused.dev/event-id";
pub const LABEL_EVENT_TYPE: &str = "statused.dev/event-type";
pub const ANNOTATION_EVENT_ID: &str = "statused.dev/event-id";
pub const ANNOTATION_APP: &str = "statused.dev/app";
pub const ANNOTATION_STATUS: &str = "statused.dev/status";
pub const ANNOTATION_DELIVERY: &str = "statused.dev/delivery";

/// The field manager of every write this operator makes: what `managedFields` names as the
/// owner of the objects it creates and the fields it sets (instead of `unknown`).
pub const FIELD_MANAGER: &str = "statused-operator";

/// Create and replace options naming [`FIELD_MANAGER`].
pub fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Merge-patch options naming [`FIELD_MANAGER`].
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        // A separator that cannot occur in names, so ("ab","c") and ("a","bc") differ.
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

/// `<route>-<10 hex of sha256(event id)>`, at most 253 characters.
pub fn delivery_name(route: &str, event_id: &str) -> String {
    let hash = sha256_hex(&[event_id]);
    let prefix: String = route.chars().take(253 - 11).collect();
    format!("{}-{}", prefix.trim_end_matches(['-', '.']), &hash[..10])
}

/// Where event `event_id` is recorded when [`delivery_name`] holds another event's record
/// (10 hex digits are 40 bits: a collision is rare, not impossible). Derived from the event
/// id alone, like the first name, so a retry of the event finds its record here.
pub fn second_delivery_name(route: &str, event_id: &str) -> String {
    delivery_name(route, &format!("{event_id}\u{0}second"))
}

/// A DNS-1123 label (at most 63 characters) for the object one target creates for one event:
/// the route name, shortened and cleaned, and a hash of (route, rule, target index, event id).
pub fn object_name(route: &str, rule: &str, target: u32, event_id: &str, round: u32) -> String {
    // Round 0 (the event itself) hashes as it always has; a redelivery round names its own.
    let round = (round > 0).then(|| format!("redelivery-{round}"));
    let mut parts = vec![route, rule];
    let target = target.to_string();
    parts.extend([target.as_str(), event_id]);
    parts.extend(round.as_deref());
    let hash = sha256_hex(&parts);
    let cleaned: String = route
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63 - 11)
        .collect();
    let prefix = cleaned.trim_matches('-');
    if prefix.is_empty() {
        format!("statused-{}", &hash[..10])
    } else {
        format!("{prefix}-{}", &hash[..10])
    }
}

/// A valid label value for `s`: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at
/// both ends. Characters outside the set become `_`.
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The event id itself when it is a valid label value, otherwise a hash of it (the full id
/// is kept in an annotation).
pub fn event_id_label(event_id: &str) -> String {
    if label_value(event_id) == event_id && !event_id.is_empty() {
        event_id.to_string()
    } else {
        sha256_hex(&[event_id])[..40].to_string()
    }
}

/// Labels and annotations every created object carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// What identifies one target's object for one event.
pub struct IdentityInput<'a> {
    pub namespace: &'a str,
    pub route: &'a str,
    pub rule: &'a str,
    pub target: u32,
    pub delivery: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub app_name: Option<&'a str>,
    pub status: Option<&'a str>,
    /// The redelivery round (0: the event as received): each round creates its own object.
    pub round: u32,
}

impl ObjectIdentity {
    pub fn new(i: &IdentityInput<'_>) -> Self {
        let labels = [
            (
                "app.kubernetes.io/managed-by",
                "statused-operator".to_string(),
            ),
            (LABEL_ROUTE, label_value(i.route)),
            (LABEL_RULE, label_value(i.rule)),
            (LABEL_EVENT_ID, event_id_label(i.event_id)),
            (LABEL_EVENT_TYPE, label_value(i.event_type)),
        ];
        let mut annotations = BTreeMap::from([
            (ANNOTATION_EVENT_ID.to_string(), i.event_id.to_string()),
            (ANNOTATION_DELIVERY.to_string(), i.delivery.to_string()),
        ]);
        if let Some(app) = i.app_name {
            annotations.insert(ANNOTATION_APP.to_string(), app.to_string());
        }
        if let Some(status) = i.status {
            annotations.insert(ANNOTATION_STATUS.to_string(), status.to_string());
        }
        Self {
            name: object_name(i.route, i.rule, i.target, i.event_id, i.round),
            namespace: i.namespace.to_string(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            annotations,
        }
    }
}

/// Whether `key` is a valid label/annotation key (`[prefix/]name`), and not one of ours.
pub fn check_user_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if !name_ok || !prefix_ok {
        return Err(format!("{key:?} is not a valid label or annotation key"));
    }
    if prefix == Some("statused.dev") {
        return Err(format!(
            "{key:?} uses the statused.dev/ prefix, which the operator sets itself"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    }

    #[test]
    fn delivery_names_are_deterministic_and_valid() {
        let a = delivery_name("releases", "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d");
        assert_eq!(
            a,
            delivery_name("releases", "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d")
        );
        assert_ne!(a, delivery_name("releases", "other"));
        assert!(a.starts_with("releases-") && a.len() == "releases-".len() + 10);
        assert!(delivery_name(&"r".repeat(300), "x").len() <= 253);
        let second = second_delivery_name("releases", "ev");
        assert_eq!(second, second_delivery_name("releases", "ev"));
        assert_ne!(second, delivery_name("releases", "ev"));
        assert!(second.starts_with("releases-"));
    }

    #[test]
    fn object_names_are_dns_labels_unique_per_target_and_event() {
        let n = object_name("ios.Releases", "submit", 0, "ev-1", 0);
        assert!(is_dns_label(&n), "{n}");
        assert!(n.starts_with("ios-releases-"));
        assert_eq!(n, object_name("ios.Releases", "submit", 0, "ev-1", 0));
        assert_ne!(n, object_name("ios.Releases", "submit", 1, "ev-1", 0));
        assert_ne!(n, object_name("ios.Releases", "other", 0, "ev-1", 0));
        assert_ne!(n, object_name("ios.Releases", "submit", 0, "ev-2", 0));
        assert!(is_dns_label(&object_name(&"a".repeat(250), "r", 0, "e", 0)));
        assert!(is_dns_label(&object_name("...", "r", 0, "e", 0)));
        let first = object_name("ios.Releases", "submit", 0, "ev-1", 1);
        assert!(is_dns_label(&first));
        assert_ne!(first, n, "a redelivery round creates its own object");
        assert_ne!(first, object_name("ios.Releases", "submit", 0, "ev-1", 2));
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(
            label_value("com.statused.build.status.updated"),
            "com.statused.build.status.updated"
        );
        assert_eq!(label_value("a b/c"), "a_b_c");
        assert!(label_value(&"x".repeat(100)).len() <= 63);
    }

    #[test]
    fn event_ids_that_are_not_label_values_are_hashed() {
        assert_eq!(event_id_label("b7a1c2d3-e4f5-4a6b"), "b7a1c2d3-e4f5-4a6b");
        let hashed = event_id_label("urn:event/1");
        assert_eq!(hashed.len(), 40);
        assert_eq!(label_value(&hashed), hashed);
    }

    #[test]
    fn user_keys_are_checked() {
        assert!(check_user_key("team").is_ok());
        assert!(check_user_key("example.com/team").is_ok());
        assert!(check_user_key("statused.dev/route").is_err());
        assert!(check_user_key("bad key").is_err());
        assert!(check_user_key("Bad.Com/x").is_err());
    }
}
