//! What the executor tells about a delivery: the Kubernetes Event (type, reason, text) when
//! it finishes and when it is reopened for a redelivery, and the route activity it reports.
//! Pure: the executor publishes what this returns (`executor/after_write.rs`, `reopen.rs`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::redeliver;
use super::route_activity::Activity;
use crate::api::{
    DeliveryPhase, LastDelivery, LastEvent, StatusedDelivery, StatusedDeliveryStatus,
};

/// A Kubernetes Event to publish on a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// The Event of a finished delivery: `Delivered`, `Superseded` (every target superseded by a
/// newer event), or a `DeliveryFailed` warning naming each failed target and its error.
pub fn outcome(delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) -> Announcement {
    let failed: Vec<String> = status
        .targets
        .iter()
        .filter(|t| t.phase == DeliveryPhase::Failed)
        .map(|t| {
            format!(
                "{}[{}] {}: {}",
                t.rule,
                t.target,
                t.kind,
                t.last_error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Announcement {
            type_: EventType::Warning,
            reason: "DeliveryFailed",
            note: failed.join("; "),
        };
    }
    let superseded = redeliver::superseded(status);
    let triggered = status.targets.len() - superseded;
    let event = &delivery.spec.event.id;
    let followed = status.targets.iter().filter(|t| t.run.is_some()).count();
    let runs = match followed {
        0 => String::new(),
        n => format!("; {n} followed runs succeeded"),
    };
    Announcement {
        type_: EventType::Normal,
        reason: if triggered == 0 {
            "Superseded"
        } else {
            "Delivered"
        },
        note: match superseded {
            0 => format!("{triggered} targets triggered for event {event}{runs}"),
            n => format!(
                "{triggered} targets triggered for event {event}{runs}; {n} not, a newer event for their ordering key having succeeded there (latestWins)"
            ),
        },
    }
}

/// The Event of a delivery reopened for redelivery `token` into `next`, `rerun` of its
/// targets running again: `Redelivering`, or why nothing runs again.
pub fn redelivery(token: &str, next: &StatusedDeliveryStatus, rerun: usize) -> Announcement {
    let superseded = redeliver::superseded(next);
    let (reason, note) = if rerun == 0 && superseded > 0 {
        (
            "RedeliverySuperseded",
            format!(
                "redelivery {token:?}: {superseded} {}",
                redeliver::SUPERSEDED_NOT_SENT
            ),
        )
    } else if rerun == 0 {
        (
            "RedeliveryNotNeeded",
            format!(
                "redelivery {token:?}: no failed targets; ask for all targets to run every target again"
            ),
        )
    } else {
        (
            "Redelivering",
            format!(
                "redelivery {token:?} (round {}): {rerun} of {} targets run again{}",
                next.redeliveries,
                next.targets.len(),
                match superseded {
                    0 => String::new(),
                    n => format!("; {n} {}", redeliver::SUPERSEDED_NOT_SENT),
                }
            ),
        )
    };
    Announcement {
        type_: EventType::Normal,
        reason,
        note,
    }
}

/// What the route's status says about this delivery (`lastEvent`, `lastDelivery`).
pub fn activity(delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) -> Activity {
    let mut rules: Vec<String> = delivery
        .spec
        .matched
        .iter()
        .map(|m| m.rule.clone())
        .collect();
    rules.dedup();
    let received_at = delivery
        .metadata
        .creation_timestamp
        .clone()
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    Activity {
        last_event: LastEvent {
            id: delivery.spec.event.id.clone(),
            type_: delivery.spec.event.type_.clone(),
            received_at,
            matched_rules: rules,
        },
        last_delivery: LastDelivery {
            name: delivery.name_any(),
            phase: status.phase.as_str().to_string(),
            completed_at: status.completed_at.clone(),
        },
        route_uid: delivery.route_uid().map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetStatus;

    fn target(phase: DeliveryPhase, error: Option<&str>) -> TargetStatus {
        let mut t = TargetStatus::pending(&crate::api::MatchedTarget {
            rule: "valid".into(),
            target: 0,
            kind: "webhook".into(),
            ordering: None,
            follow: None,
            after: None,
        });
        t.phase = phase;
        t.last_error = error.map(str::to_string);
        t
    }

    fn delivery() -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture("d1", "route");
        d.spec.event.id = "evt-1".into();
        d
    }

    fn status(targets: Vec<TargetStatus>) -> StatusedDeliveryStatus {
        StatusedDeliveryStatus {
            targets,
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_target_makes_a_warning_that_names_it_and_its_error() {
        let s = status(vec![
            target(DeliveryPhase::Succeeded, None),
            target(DeliveryPhase::Failed, Some("HTTP 404")),
        ]);
        let a = outcome(&delivery(), &s);
        assert_eq!((a.type_, a.reason), (EventType::Warning, "DeliveryFailed"));
        assert_eq!(a.note, "valid[0] webhook: HTTP 404");
    }

    #[test]
    fn a_delivery_whose_targets_were_all_superseded_says_so() {
        let mut superseded = target(DeliveryPhase::Superseded, None);
        superseded.superseded_by = Some("newer".into());
        let one = outcome(&delivery(), &status(vec![superseded.clone()]));
        assert_eq!((one.type_, one.reason), (EventType::Normal, "Superseded"));
        let two = outcome(
            &delivery(),
            &status(vec![target(DeliveryPhase::Succeeded, None), superseded]),
        );
        assert_eq!(two.reason, "Delivered");
        assert!(
            two.note
                .starts_with("1 targets triggered for event evt-1; 1 not"),
            "{}",
            two.note
        );
    }

    #[test]
    fn a_redelivery_says_how_many_targets_run_again_or_why_none() {
        let mut next = status(vec![target(DeliveryPhase::Pending, None)]);
        next.redeliveries = 2;
        let a = redelivery("tok", &next, 1);
        assert_eq!(a.reason, "Redelivering");
        assert_eq!(
            a.note,
            "redelivery \"tok\" (round 2): 1 of 1 targets run again"
        );
        assert_eq!(redelivery("tok", &next, 0).reason, "RedeliveryNotNeeded");
        let mut superseded = target(DeliveryPhase::Superseded, None);
        superseded.superseded_by = Some("newer".into());
        let none = redelivery("tok", &status(vec![superseded]), 0);
        assert_eq!(none.reason, "RedeliverySuperseded");
    }

    #[test]
    fn the_route_activity_names_the_event_its_rules_and_the_phase() {
        let mut d = delivery();
        d.spec.matched = ["a", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, rule)| crate::api::MatchedTarget {
                rule: (*rule).into(),
                target: i as u32,
                kind: "webhook".into(),
                ordering: None,
                follow: None,
                after: None,
            })
            .collect();
        let mut s = status(vec![]);
        s.phase = DeliveryPhase::Succeeded;
        let a = activity(&d, &s);
        assert_eq!(a.last_event.id, "evt-1");
        assert_eq!(a.last_event.matched_rules, ["a", "b"], "each rule once");
        assert_eq!(a.last_delivery.name, "d1");
        assert_eq!(a.last_delivery.phase, "Succeeded");
    }
}
