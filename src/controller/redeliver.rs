//! Redelivery on demand: `kubectl annotate statuseddelivery NAME
//! statused.dev/redeliver="$(date -u +%FT%TZ)"` re-runs a finished delivery's failed targets
//! (`statused.dev/redeliver-targets: all`: every target). Each token value is honoured once:
//! the last one honoured is recorded in the status, with the number of redeliveries, which
//! also names the round's in-cluster objects (a new PipelineRun per round, still exactly
//! once per round). Pure: the executor reads the request and writes the status this returns.

use crate::api::{
    DeliveryPhase, MatchedTarget, StatusedDelivery, StatusedDeliveryStatus, TargetStatus,
};

/// Set to a new value (any text: the CLI writes the time) to redeliver.
pub const ANNOTATION_REDELIVER: &str = "statused.dev/redeliver";
/// `all` re-runs every target; otherwise only the failed ones.
pub const ANNOTATION_REDELIVER_TARGETS: &str = "statused.dev/redeliver-targets";

/// A redelivery asked for and not honoured yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub token: String,
    pub all_targets: bool,
}

/// The redelivery `delivery`'s annotations ask for, if its token is new.
pub fn requested(delivery: &StatusedDelivery) -> Option<Request> {
    let annotations = delivery.metadata.annotations.as_ref()?;
    let token = annotations.get(ANNOTATION_REDELIVER)?.trim();
    let honoured = delivery
        .status
        .as_ref()
        .and_then(|s| s.redelivery_token.as_deref());
    if token.is_empty() || honoured == Some(token) {
        return None;
    }
    Some(Request {
        token: token.to_string(),
        all_targets: annotations
            .get(ANNOTATION_REDELIVER_TARGETS)
            .is_some_and(|v| v.trim() == "all"),
    })
}

/// The status that re-runs what `request` asks for: those targets start again (pending, no
/// attempts, nothing left of their last outcome), and the token is recorded. Returns how
/// many targets re-run (none: the token is still recorded, so it is not asked again).
pub fn reopen(
    status: &StatusedDeliveryStatus,
    request: &Request,
) -> (StatusedDeliveryStatus, usize) {
    let mut next = status.clone();
    let mut rerun = 0;
    for t in &mut next.targets {
        if request.all_targets || t.phase == DeliveryPhase::Failed {
            // As new: nothing of the last round survives (a call-started mark would make an
            // at-most-once target fail at once as "outcome unknown").
            *t = TargetStatus::pending(&MatchedTarget {
                rule: t.rule.clone(),
                target: t.target,
                kind: t.kind.clone(),
            });
            rerun += 1;
        }
    }
    next.redelivery_token = Some(request.token.clone());
    if rerun > 0 {
        next.redeliveries += 1;
        next.phase = DeliveryPhase::Pending;
        next.completed_at = None;
    }
    (next, rerun)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn finished() -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture("ev-1", "releases");
        let at = Some(Time(jiff::Timestamp::now()));
        let target = |i: u32, phase| TargetStatus {
            phase,
            attempts: 3,
            last_response_code: Some(404),
            last_error: Some("HTTP 404".into()),
            next_attempt_at: at.clone(),
            call_started_at: at.clone(),
            completed_at: at.clone(),
            created: Some(crate::api::CreatedObject {
                api_version: "v".into(),
                kind: "K".into(),
                name: "n".into(),
                uid: None,
                url: None,
            }),
            listener_event_id: Some("el".into()),
            ..TargetStatus::pending(&MatchedTarget {
                rule: "r".into(),
                target: i,
                kind: "webhook".into(),
            })
        };
        d.status = Some(StatusedDeliveryStatus {
            phase: DeliveryPhase::Failed,
            attempts: 6,
            targets: vec![
                target(0, DeliveryPhase::Failed),
                target(1, DeliveryPhase::Succeeded),
            ],
            completed_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            )),
            ..Default::default()
        });
        d
    }

    fn annotate(d: &mut StatusedDelivery, pairs: &[(&str, &str)]) {
        let a = d.metadata.annotations.get_or_insert_with(Default::default);
        for (k, v) in pairs {
            a.insert(k.to_string(), v.to_string());
        }
    }

    #[test]
    fn a_new_token_reopens_the_failed_targets_once() {
        let mut d = finished();
        assert_eq!(requested(&d), None, "no annotation, nothing to do");
        annotate(&mut d, &[(ANNOTATION_REDELIVER, "2026-11-27T12:00:00Z")]);
        let request = requested(&d).unwrap();
        assert!(!request.all_targets);
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &request);
        assert_eq!(rerun, 1);
        assert_eq!(next.phase, DeliveryPhase::Pending);
        assert_eq!(next.completed_at, None);
        assert_eq!(next.redeliveries, 1);
        assert_eq!(next.targets[0].phase, DeliveryPhase::Pending);
        assert_eq!(
            (next.targets[0].attempts, next.targets[0].last_error.clone()),
            (0, None)
        );
        assert_eq!(next.targets[1].phase, DeliveryPhase::Succeeded, "kept");
        // Honoured: the same token again asks for nothing.
        d.status = Some(next);
        assert_eq!(requested(&d), None);
        annotate(&mut d, &[(ANNOTATION_REDELIVER, "2026-11-27T13:00:00Z")]);
        assert!(requested(&d).is_some());
    }

    #[test]
    fn all_targets_reruns_the_succeeded_ones_too() {
        let mut d = finished();
        annotate(
            &mut d,
            &[
                (ANNOTATION_REDELIVER, "t1"),
                (ANNOTATION_REDELIVER_TARGETS, "all"),
            ],
        );
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &requested(&d).unwrap());
        assert_eq!(rerun, 2);
        assert!(
            next.targets
                .iter()
                .all(|t| t.phase == DeliveryPhase::Pending)
        );
    }

    #[test]
    fn nothing_failed_records_the_token_and_stays_finished() {
        let mut d = finished();
        d.status.as_mut().unwrap().targets[0].phase = DeliveryPhase::Succeeded;
        d.status.as_mut().unwrap().phase = DeliveryPhase::Succeeded;
        annotate(&mut d, &[(ANNOTATION_REDELIVER, "t1")]);
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &requested(&d).unwrap());
        assert_eq!(rerun, 0);
        assert_eq!(next.phase, DeliveryPhase::Succeeded);
        assert_eq!(next.redeliveries, 0);
        assert_eq!(next.redelivery_token.as_deref(), Some("t1"));
    }
}
