//! Redelivery on demand: re-runs a finished delivery's failed targets (or every target).
//! Asked for in two ways:
//! - a `StatusedRedelivery` object naming the delivery (what teams use: the chart's
//!   `-redeliver` role, aggregated into `edit`, may create them); its uid is the token;
//! - for admins, who may write deliveries anyway: `kubectl annotate statuseddelivery NAME
//!   statused.dev/redeliver="$(date -u +%FT%TZ)"` (`statused.dev/redeliver-targets: all`:
//!   every target).
//!
//! Each token is honoured once: the last one honoured is recorded in the delivery's status,
//! with the number of redeliveries, which also names the round's in-cluster objects (a new
//! PipelineRun per round, still exactly once per round). Pure: the executor and the request
//! controller read the request and write the statuses this returns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    DeliveryPhase, MatchedTarget, RedeliveryTargets, StatusedDelivery, StatusedDeliveryStatus,
    StatusedRedelivery, StatusedRedeliveryStatus, TargetStatus,
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

/// The condition a `StatusedRedelivery` answers with.
pub const ACCEPTED: &str = "Accepted";

/// What to do with a `StatusedRedelivery`, given the delivery it names (`None`: not found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answered for good already: nothing to do.
    Answered,
    NotFound,
    /// The delivery is still being delivered: look again later.
    Wait,
    /// The delivery already records this request's token (the request's own status write
    /// did not land): say so, reopen nothing.
    Honoured {
        round: u32,
    },
    Reopen(Request),
}

pub fn decide(request: &StatusedRedelivery, delivery: Option<&StatusedDelivery>) -> Decision {
    if answered(request) {
        return Decision::Answered;
    }
    let Some(delivery) = delivery else {
        return Decision::NotFound;
    };
    let token = request_token(request);
    let status = delivery.status.clone().unwrap_or_default();
    if status.redelivery_token.as_deref() == Some(token.as_str()) {
        return Decision::Honoured {
            round: status.redeliveries,
        };
    }
    if !status.phase.is_finished() {
        return Decision::Wait;
    }
    Decision::Reopen(Request {
        token,
        all_targets: request.spec.targets == RedeliveryTargets::All,
    })
}

/// A request's token: its uid, so each request object is honoured once (and one created
/// again under the same name is another request).
pub fn request_token(request: &StatusedRedelivery) -> String {
    request
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| request.metadata.name.clone().unwrap_or_default())
}

/// Whether `request` has its final answer (Accepted True or False; Unknown is waiting).
pub fn answered(request: &StatusedRedelivery) -> bool {
    request
        .status
        .as_ref()
        .and_then(|s| crate::api::conditions::find(&s.conditions, ACCEPTED))
        .is_some_and(|c| c.status != "Unknown")
}

/// What happened to a request, as its status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    NotFound,
    Waiting,
    /// `rerun` of `of` targets run again, as redelivery `round`.
    Reopened {
        round: u32,
        rerun: usize,
        of: usize,
    },
    /// Honoured before (see [`Decision::Honoured`]).
    Honoured {
        round: u32,
    },
}

/// The status that records `answer` for a request naming `delivery`. The condition keeps
/// its lastTransitionTime while its status does not change, so a waiting request is not
/// rewritten on every look.
pub fn request_status(
    previous: Option<&StatusedRedeliveryStatus>,
    delivery: &str,
    answer: Answer,
    generation: Option<i64>,
    now: Time,
) -> StatusedRedeliveryStatus {
    let (status, reason, message, round, targets) = match answer {
        Answer::NotFound => (
            "False",
            "DeliveryNotFound",
            format!("no StatusedDelivery {delivery} in this namespace"),
            None,
            None,
        ),
        Answer::Waiting => (
            "Unknown",
            "DeliveryNotFinished",
            format!(
                "delivery {delivery} is still being delivered; redelivered once it has finished"
            ),
            None,
            None,
        ),
        Answer::Reopened { rerun: 0, .. } => (
            "True",
            "NothingToRedeliver",
            format!(
                "delivery {delivery} has no failed targets; ask for targets: All to run every target again"
            ),
            None,
            Some(0),
        ),
        Answer::Reopened { round, rerun, of } => (
            "True",
            "Redelivering",
            format!("delivery {delivery}: {rerun} of {of} targets run again (round {round})"),
            Some(round),
            u32::try_from(rerun).ok(),
        ),
        Answer::Honoured { round } => (
            "True",
            "Redelivering",
            format!("delivery {delivery}: redelivered (round {round})"),
            Some(round),
            None,
        ),
    };
    let previous_condition =
        previous.and_then(|p| crate::api::conditions::find(&p.conditions, ACCEPTED));
    let last_transition_time = match previous_condition {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    };
    StatusedRedeliveryStatus {
        conditions: vec![Condition {
            type_: ACCEPTED.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time,
        }],
        round,
        targets,
    }
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

    fn request(targets: RedeliveryTargets) -> StatusedRedelivery {
        let mut r = StatusedRedelivery::new(
            "again",
            crate::api::StatusedRedeliverySpec {
                delivery: "ev-1".into(),
                targets,
            },
        );
        r.metadata.uid = Some("request-uid".into());
        r
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    #[test]
    fn a_request_reopens_a_finished_delivery_once_with_its_uid_as_the_token() {
        let mut d = finished();
        let mut r = request(RedeliveryTargets::Failed);
        assert_eq!(decide(&r, None), Decision::NotFound);
        let Decision::Reopen(asked) = decide(&r, Some(&d)) else {
            panic!("a finished delivery is reopened");
        };
        assert_eq!(
            asked,
            Request {
                token: "request-uid".into(),
                all_targets: false
            }
        );
        assert!(matches!(
            decide(&request(RedeliveryTargets::All), Some(&d)),
            Decision::Reopen(Request {
                all_targets: true,
                ..
            })
        ));
        // Reopened, but the request's own status was not written: not reopened again.
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &asked);
        d.status = Some(next);
        assert_eq!(decide(&r, Some(&d)), Decision::Honoured { round: 1 });
        // Answered: nothing more, whatever the delivery says.
        r.status = Some(request_status(
            None,
            "ev-1",
            Answer::Reopened {
                round: 1,
                rerun,
                of: 2,
            },
            None,
            now(),
        ));
        assert!(answered(&r));
        assert_eq!(decide(&r, Some(&finished())), Decision::Answered);
    }

    #[test]
    fn a_request_waits_for_a_running_delivery() {
        let mut d = finished();
        d.status.as_mut().unwrap().phase = DeliveryPhase::Running;
        let mut r = request(RedeliveryTargets::Failed);
        assert_eq!(decide(&r, Some(&d)), Decision::Wait);
        let waiting = request_status(None, "ev-1", Answer::Waiting, None, now());
        assert_eq!(waiting.conditions[0].status, "Unknown");
        assert_eq!(waiting.conditions[0].reason, "DeliveryNotFinished");
        r.status = Some(waiting.clone());
        assert!(!answered(&r), "waiting is not an answer");
        let later = Time(jiff::Timestamp::from_second(1_700_000_100).unwrap());
        assert_eq!(
            request_status(Some(&waiting), "ev-1", Answer::Waiting, None, later),
            waiting,
            "unchanged: no new timestamp, no write"
        );
    }

    #[test]
    fn request_statuses_say_what_happened() {
        let status = |answer| request_status(None, "d", answer, Some(1), now());
        let reason = |answer| status(answer).conditions[0].reason.clone();
        assert_eq!(reason(Answer::NotFound), "DeliveryNotFound");
        assert_eq!(status(Answer::NotFound).conditions[0].status, "False");
        assert_eq!(
            reason(Answer::Reopened {
                round: 1,
                rerun: 0,
                of: 2
            }),
            "NothingToRedeliver"
        );
        let reopened = status(Answer::Reopened {
            round: 2,
            rerun: 1,
            of: 2,
        });
        assert_eq!(reopened.conditions[0].reason, "Redelivering");
        assert_eq!(
            reopened.conditions[0].message,
            "delivery d: 1 of 2 targets run again (round 2)"
        );
        assert_eq!((reopened.round, reopened.targets), (Some(2), Some(1)));
    }
}
