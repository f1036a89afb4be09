//! `Ready` condition reasons and the pure computation of a route's conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";

/// Why a route is or is not Ready. The variant name is the condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Accepted,
    SecretNotFound,
    SecretKeyMissing,
    /// `--secret-access=labeled` and the Secret lacks `statused.dev/route-access: "true"`.
    SecretNotAllowed,
    InvalidExpression,
    InvalidTemplate,
    InvalidTarget,
    InvalidSpec,
    TargetAPINotInstalled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "Accepted",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyMissing => "SecretKeyMissing",
            Reason::SecretNotAllowed => "SecretNotAllowed",
            Reason::InvalidExpression => "InvalidExpression",
            Reason::InvalidTemplate => "InvalidTemplate",
            Reason::InvalidTarget => "InvalidTarget",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TargetAPINotInstalled => "TargetAPINotInstalled",
        }
    }
}

/// The Ready condition for `generation`, reusing `previous`'s lastTransitionTime when the
/// status did not change, so an unchanged route never gets a new timestamp (which would make
/// the controller react to its own writes).
pub fn ready_condition(
    previous: Option<&Condition>,
    ready: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let first = ready_condition(None, true, Reason::Accepted, "ok", Some(1), t(100));
        let again = ready_condition(Some(&first), true, Reason::Accepted, "ok", Some(2), t(200));
        assert_eq!(again.last_transition_time, t(100));
        assert_eq!(again.observed_generation, Some(2));
    }

    #[test]
    fn a_status_flip_takes_the_new_time() {
        let first = ready_condition(None, true, Reason::Accepted, "ok", Some(1), t(100));
        let failed = ready_condition(
            Some(&first),
            false,
            Reason::SecretNotFound,
            "Secret a/b not found",
            Some(1),
            t(300),
        );
        assert_eq!(failed.last_transition_time, t(300));
        assert_eq!(failed.status, "False");
        assert_eq!(failed.reason, "SecretNotFound");
    }
}
