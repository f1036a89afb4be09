//! Pure computation of route and delivery status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{DeliveryPhase, StatusedDeliveryStatus, StatusedRouteStatus, TargetStatus};
use crate::conditions::{self, Reason};

/// The part of a route's status the route reconciler owns.
pub fn route_status(
    previous: Option<&StatusedRouteStatus>,
    generation: Option<i64>,
    webhook_path: String,
    public_url: Option<&str>,
    outcome: Result<&str, (Reason, &str)>,
    now: Time,
) -> StatusedRouteStatus {
    let prev_ready = previous.and_then(|s| conditions::find(&s.conditions, conditions::READY));
    let condition = match outcome {
        Ok(message) => conditions::ready_condition(
            prev_ready,
            true,
            Reason::Accepted,
            message,
            generation,
            now,
        ),
        Err((reason, message)) => {
            conditions::ready_condition(prev_ready, false, reason, message, generation, now)
        }
    };
    StatusedRouteStatus {
        observed_generation: generation,
        webhook_url: public_url.map(|base| format!("{}{webhook_path}", base.trim_end_matches('/'))),
        webhook_path: Some(webhook_path),
        conditions: vec![condition],
        last_event: None,
        last_delivery: None,
    }
}

/// Whether `desired` (reconciler-owned fields only) differs from what the object has.
pub fn route_status_changed(
    current: Option<&StatusedRouteStatus>,
    desired: &StatusedRouteStatus,
) -> bool {
    let Some(current) = current else { return true };
    current.observed_generation != desired.observed_generation
        || current.webhook_path != desired.webhook_path
        || current.webhook_url != desired.webhook_url
        || current.conditions != desired.conditions
}

/// A delivery's status from its targets' (the one place it is built): its phase, attempts
/// and completion follow the targets; what redeliveries recorded is kept from `current`.
pub fn delivery_status(
    current: &StatusedDeliveryStatus,
    targets: Vec<TargetStatus>,
    now: jiff::Timestamp,
) -> StatusedDeliveryStatus {
    let phase = delivery_phase(&targets);
    StatusedDeliveryStatus {
        phase,
        attempts: targets.iter().map(|t| t.attempts).sum(),
        completed_at: phase.is_finished().then_some(Time(now)),
        targets,
        redeliveries: current.redeliveries,
        redelivery_token: current.redelivery_token.clone(),
        redelivery_requests: current.redelivery_requests,
        recent_redelivery_requests: current.recent_redelivery_requests.clone(),
    }
}

/// A delivery's phase from its targets': finished when all are, failed if any failed,
/// superseded if all were (none was called; those skipped by their `after` aside), else succeeded; Running once any was tried or has a call in flight.
pub fn delivery_phase(targets: &[TargetStatus]) -> DeliveryPhase {
    if targets.iter().all(|t| t.phase.is_finished()) {
        if targets.iter().any(|t| t.phase == DeliveryPhase::Failed) {
            DeliveryPhase::Failed
        } else if targets.iter().any(|t| t.phase == DeliveryPhase::Superseded)
            && targets
                .iter()
                .all(|t| matches!(t.phase, DeliveryPhase::Superseded | DeliveryPhase::Skipped))
        {
            DeliveryPhase::Superseded
        } else {
            DeliveryPhase::Succeeded
        }
    } else if targets
        .iter()
        .any(|t| t.attempts > 0 || t.call_started_at.is_some())
    {
        DeliveryPhase::Running
    } else {
        DeliveryPhase::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MatchedTarget;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_route_produces_no_change() {
        let first = route_status(None, Some(3), "/hooks/a/b".into(), None, Ok("ok"), t(1));
        let again = route_status(
            Some(&first),
            Some(3),
            "/hooks/a/b".into(),
            None,
            Ok("ok"),
            t(99),
        );
        assert!(!route_status_changed(Some(&first), &again));
        let bumped = route_status(
            Some(&first),
            Some(4),
            "/hooks/a/b".into(),
            None,
            Ok("ok"),
            t(99),
        );
        assert!(route_status_changed(Some(&first), &bumped));
        assert_eq!(bumped.conditions[0].last_transition_time, t(1));
    }

    #[test]
    fn public_url_is_joined_with_the_path() {
        let s = route_status(
            None,
            None,
            "/hooks/a/b".into(),
            Some("https://hooks.example.com/"),
            Ok("ok"),
            t(1),
        );
        assert_eq!(
            s.webhook_url.as_deref(),
            Some("https://hooks.example.com/hooks/a/b")
        );
    }

    #[test]
    fn delivery_phase_follows_targets() {
        let m = MatchedTarget {
            rule: "r".into(),
            target: 0,
            kind: "webhook".into(),
            ordering: None,
            follow: None,
            after: None,
        };
        let mut a = TargetStatus::pending(&m);
        let mut b = TargetStatus::pending(&m);
        assert_eq!(
            delivery_phase(&[a.clone(), b.clone()]),
            DeliveryPhase::Pending
        );
        a.attempts = 1;
        assert_eq!(
            delivery_phase(&[a.clone(), b.clone()]),
            DeliveryPhase::Running
        );
        a.phase = DeliveryPhase::Succeeded;
        b.phase = DeliveryPhase::Failed;
        assert_eq!(
            delivery_phase(&[a.clone(), b.clone()]),
            DeliveryPhase::Failed
        );
        b.phase = DeliveryPhase::Succeeded;
        assert_eq!(delivery_phase(&[a, b]), DeliveryPhase::Succeeded);
    }
}
