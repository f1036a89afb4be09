//! Redelivery on demand: re-runs a finished delivery's failed targets (or every target).
//! Asked for in two ways:
//! - a `StatusedRedelivery` object naming the delivery (what teams use: the chart's
//!   `-redeliver` role, aggregated into `edit`, may create them); its uid is the token;
//! - for admins, who may write deliveries anyway: `kubectl annotate statuseddelivery NAME
//!   statused.dev/redeliver="$(date -u +%FT%TZ)"` (`statused.dev/redeliver-targets: all`:
//!   every target; `statused.dev/redeliver-ignore-ordering: "true"`: send even targets that a
//!   newer event superseded, and call without waiting for the key's order).
//!
//! Each is honoured exactly once, recorded in the delivery's status by the same conditional
//! write that reopens it, with the number of redeliveries, which also names the round's
//! in-cluster objects (a new PipelineRun per round, still exactly once per round):
//! - the annotation: its last value honoured (`redeliveryToken`); the annotation holds one
//!   value, so the last one is enough;
//! - requests: several may be honoured one after another, and a request whose own status
//!   write failed after reopening the delivery looks again later, maybe after other requests
//!   reopened it too, maybe from a new leader. So each request first claims, in its own
//!   status, the number it takes among the delivery's honoured requests
//!   (`redeliveryRequests` + 1); the reopen then counts it and records its uid among the
//!   last [`RECENT_REQUESTS`]. On a retry: its uid recorded, or its number taken while its
//!   uid is no longer among the recent ones, is honoured; its number taken by another
//!   request (recorded in its place) is not, and it is asked again.
//!
//! Pure: the executor and the request controller read the request and write the statuses
//! this returns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    DeliveryPhase, MatchedTarget, RedeliveryTargets, StatusedDelivery, StatusedDeliveryStatus,
    StatusedRedelivery, StatusedRedeliveryStatus, TargetStatus,
};

/// Set to a new value (any text: the CLI writes the time) to redeliver.
pub const ANNOTATION_REDELIVER: &str = "statused.dev/redeliver";
/// `all` re-runs every target; otherwise only the failed ones.
pub const ANNOTATION_REDELIVER_TARGETS: &str = "statused.dev/redeliver-targets";
/// `true`: the targets run again ignore their route's `ordering`, and superseded ones run
/// again too (the explicit override; without it a superseded target stays superseded).
pub const ANNOTATION_REDELIVER_IGNORE_ORDERING: &str = "statused.dev/redeliver-ignore-ordering";

/// How many honoured requests' uids a delivery keeps (36 bytes each).
pub const RECENT_REQUESTS: usize = 32;

/// Who asked for a redelivery: where its token is recorded once honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `statused.dev/redeliver` annotation: `redeliveryToken`.
    Annotation,
    /// A `StatusedRedelivery`: counted, and its uid among the recent ones.
    Request,
}

/// A redelivery asked for and not honoured yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub token: String,
    pub all_targets: bool,
    /// Superseded targets run again too, and every target run again ignores the ordering.
    pub ignore_ordering: bool,
    pub source: Source,
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
        ignore_ordering: annotations
            .get(ANNOTATION_REDELIVER_IGNORE_ORDERING)
            .is_some_and(|v| v.trim() == "true"),
        source: Source::Annotation,
    })
}

/// A delivery's status reopened for a request, and how many targets it re-runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Reopened {
    pub status: StatusedDeliveryStatus,
    pub rerun: usize,
}

/// `delivery` reopened for `request` (see [`reopen_with`]); `newer` names, for a target
/// ordered `latestWins`, the delivery of a newer event for its key that succeeded there.
pub fn reopened(
    delivery: &StatusedDelivery,
    request: &Request,
    newer: impl Fn(&TargetStatus) -> Option<String>,
) -> Reopened {
    let status = delivery.status.clone().unwrap_or_default();
    let (status, rerun) = reopen_with(&status, request, newer);
    Reopened { status, rerun }
}

/// [`reopen_with`] for targets that no newer event superseded.
pub fn reopen(
    status: &StatusedDeliveryStatus,
    request: &Request,
) -> (StatusedDeliveryStatus, usize) {
    reopen_with(status, request, |_| None)
}

/// The status that re-runs what `request` asks for: those targets start again (pending, no
/// attempts, nothing left of their last outcome), and the token is recorded. Returns how
/// many targets re-run (none: the token is still recorded, so it is not asked again). A
/// target that a newer event for its key superseded since (`newer` names its delivery) is
/// not run again unless the request ignores the ordering: it becomes Superseded, so that the
/// answer says so.
pub fn reopen_with(
    status: &StatusedDeliveryStatus,
    request: &Request,
    newer: impl Fn(&TargetStatus) -> Option<String>,
) -> (StatusedDeliveryStatus, usize) {
    let mut next = status.clone();
    let mut rerun = 0;
    for t in &mut next.targets {
        let superseded_since = (!request.ignore_ordering)
            .then(|| newer(t))
            .flatten()
            .filter(|_| runs_again(t.phase, request));
        if let Some(by) = superseded_since {
            t.phase = DeliveryPhase::Superseded;
            t.superseded_by = Some(by);
            t.last_error = None;
            t.next_attempt_at = None;
        } else if runs_again(t.phase, request) {
            // As new: nothing of the last round survives (a call-started mark would make an
            // at-most-once target fail at once as "outcome unknown").
            *t = TargetStatus {
                ignore_ordering: request.ignore_ordering,
                ..TargetStatus::pending(&MatchedTarget::bare(t))
            };
            rerun += 1;
        }
    }
    match request.source {
        Source::Annotation => next.redelivery_token = Some(request.token.clone()),
        Source::Request => {
            next.redelivery_requests += 1;
            let recent = &mut next.recent_redelivery_requests;
            recent.push(request.token.clone());
            let over = recent.len().saturating_sub(RECENT_REQUESTS);
            recent.drain(..over);
        }
    }
    if rerun > 0 {
        next.redeliveries += 1;
        next.phase = DeliveryPhase::Pending;
        next.completed_at = None;
    }
    (next, rerun)
}

/// Whether a target finished in `phase` runs again for `request`: a failed one always; a
/// superseded one only when the request ignores the ordering (a newer event for its key
/// succeeded there: sending this one would undo it); any other with `all`.
fn runs_again(phase: DeliveryPhase, request: &Request) -> bool {
    match phase {
        DeliveryPhase::Failed => true,
        DeliveryPhase::Superseded => request.ignore_ordering,
        _ => request.all_targets,
    }
}

/// How many of `status`'s targets are superseded, and stay so after a reopen that did not
/// ignore the ordering: what a redelivery's answer says it did not send.
pub fn superseded(status: &StatusedDeliveryStatus) -> usize {
    status
        .targets
        .iter()
        .filter(|t| t.phase == DeliveryPhase::Superseded)
        .count()
}

/// What a redelivery says of the superseded targets it did not send.
pub const SUPERSEDED_NOT_SENT: &str = "superseded by a newer event for their ordering key, not sent: sending an older event would undo the newer one (ask with ignoreOrdering: true to send anyway)";

/// The condition a `StatusedRedelivery` answers with.
pub const ACCEPTED: &str = "Accepted";
/// Its reason while the delivery is still being delivered.
pub const WAITING: &str = "DeliveryNotFinished";

/// What to do with a `StatusedRedelivery`, given the delivery it names (`None`: not found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answered for good already: nothing to do.
    Answered,
    NotFound,
    /// The delivery is still being delivered: look again later.
    Wait,
    /// The delivery was reopened for this request already (the request's own status write
    /// did not land): say so, reopen nothing. What the reopen did is what the request's
    /// claim recorded.
    Honoured,
    Reopen(Request),
}

pub fn decision(request: &StatusedRedelivery, delivery: Option<&StatusedDelivery>) -> Decision {
    if answered(request) {
        return Decision::Answered;
    }
    let Some(delivery) = delivery else {
        return Decision::NotFound;
    };
    let token = request_token(request);
    let status = delivery.status.clone().unwrap_or_default();
    if honoured(request, &token, &status) {
        return Decision::Honoured;
    }
    if !status.phase.is_finished() {
        return Decision::Wait;
    }
    Decision::Reopen(Request {
        token,
        all_targets: request.spec.targets == RedeliveryTargets::All,
        ignore_ordering: request.spec.ignore_ordering,
        source: Source::Request,
    })
}

/// Whether the delivery with `status` was reopened for the request with `token`.
fn honoured(request: &StatusedRedelivery, token: &str, status: &StatusedDeliveryStatus) -> bool {
    let recent = &status.recent_redelivery_requests;
    // The last token: what versions before the count recorded for requests too.
    if recent.iter().any(|t| t == token) || status.redelivery_token.as_deref() == Some(token) {
        return true;
    }
    let Some(claim) = request.status.as_ref().and_then(|s| s.claim) else {
        return false;
    };
    if status.redelivery_requests < claim {
        // Its number not taken yet: its reopen did not land (the count only grows, and
        // the reopen's write was conditional on the delivery it claimed from).
        return false;
    }
    // Its number was taken, and its uid is not among the recent ones. If they still reach
    // back to its number, another request took it; if not, the reopen was this request's
    // or another's, and that cannot be told any more: honoured, never twice (it would take
    // more than RECENT_REQUESTS other requests between its reopen and this look).
    let oldest = (status.redelivery_requests as usize + 1).saturating_sub(recent.len());
    (claim as usize) < oldest
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
        .and_then(|s| crate::conditions::find(&s.conditions, ACCEPTED))
        .is_some_and(|c| c.status != "Unknown")
}

/// What happened to a request, as its status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    NotFound,
    Waiting,
    /// About to reopen the delivery as request number `claim` (see the module's notes):
    /// written first, with what the reopen will do.
    Claimed {
        claim: u32,
        round: u32,
        rerun: usize,
    },
    /// `rerun` of `of` targets run again, as redelivery `round`; `superseded` were not, a
    /// newer event for their ordering key having succeeded there.
    Reopened {
        round: u32,
        rerun: usize,
        of: usize,
        superseded: usize,
    },
    /// Honoured before (see [`Decision::Honoured`]): what its claim recorded.
    Honoured {
        round: Option<u32>,
        rerun: Option<u32>,
    },
}

/// What a request's status recorded when it claimed its number: the answer to give once
/// its reopen is known to have landed.
pub fn honoured_answer(request: &StatusedRedelivery) -> Answer {
    let status = request.status.as_ref();
    Answer::Honoured {
        round: status.and_then(|s| s.round),
        rerun: status.and_then(|s| s.targets),
    }
}

/// The status that records `answer` for a request naming `delivery`. The condition keeps
/// its lastTransitionTime while its status does not change, so a waiting request is not
/// rewritten on every look. A claim, once made, is kept while the request may have been
/// honoured by it; waiting (or no delivery) means it was not, and it is dropped: a claim
/// lost to another request must not later pass for honoured once the delivery's recent
/// list no longer reaches back to it.
pub fn request_status(
    previous: Option<&StatusedRedeliveryStatus>,
    delivery: &str,
    answer: Answer,
    generation: Option<i64>,
    now: Time,
) -> StatusedRedeliveryStatus {
    let claim = match answer {
        Answer::Claimed { claim, .. } => Some(claim),
        Answer::NotFound | Answer::Waiting => None,
        _ => previous.and_then(|p| p.claim),
    };
    let (status, reason, message, round, targets) = said(answer, delivery);
    let previous_condition =
        previous.and_then(|p| crate::conditions::find(&p.conditions, ACCEPTED));
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
        claim,
    }
}

/// What a request's condition says for `answer` about `delivery`: (status, reason, message,
/// the round it started, the targets it re-ran).
fn said(
    answer: Answer,
    delivery: &str,
) -> (&'static str, &'static str, String, Option<u32>, Option<u32>) {
    match answer {
        Answer::NotFound => (
            "False",
            "DeliveryNotFound",
            format!("no StatusedDelivery {delivery} in this namespace"),
            None,
            None,
        ),
        Answer::Waiting => (
            "Unknown",
            WAITING,
            format!(
                "delivery {delivery} is still being delivered; redelivered once it has finished"
            ),
            None,
            None,
        ),
        Answer::Claimed { round, rerun, .. } => (
            "Unknown",
            "Reopening",
            format!("delivery {delivery} is being reopened"),
            (rerun > 0).then_some(round),
            u32::try_from(rerun).ok(),
        ),
        Answer::Reopened {
            round,
            rerun,
            of,
            superseded,
        } => reopened_said(delivery, round, rerun, of, superseded),
        Answer::Honoured { rerun: Some(0), .. } => nothing_to_redeliver(delivery),
        Answer::Honoured { round, rerun } => (
            "True",
            "Redelivering",
            match round {
                Some(round) => format!("delivery {delivery}: redelivered (round {round})"),
                None => format!("delivery {delivery}: redelivered"),
            },
            round,
            rerun,
        ),
    }
}

/// What a request's condition says once it reopened `delivery` (see [`said`]).
fn reopened_said(
    delivery: &str,
    round: u32,
    rerun: usize,
    of: usize,
    superseded: usize,
) -> (&'static str, &'static str, String, Option<u32>, Option<u32>) {
    match (rerun, superseded) {
        (0, 0) => nothing_to_redeliver(delivery),
        (0, _) => (
            "True",
            "Superseded",
            format!("delivery {delivery}: {SUPERSEDED_NOT_SENT}"),
            None,
            Some(0),
        ),
        (_, n) => {
            let mut message =
                format!("delivery {delivery}: {rerun} of {of} targets run again (round {round})");
            if n > 0 {
                message.push_str(&format!("; {n} {SUPERSEDED_NOT_SENT}"));
            }
            (
                "True",
                "Redelivering",
                message,
                Some(round),
                u32::try_from(rerun).ok(),
            )
        }
    }
}

fn nothing_to_redeliver(
    delivery: &str,
) -> (&'static str, &'static str, String, Option<u32>, Option<u32>) {
    (
        "True",
        "NothingToRedeliver",
        format!(
            "delivery {delivery} has no failed targets; ask for targets: All to run every target again"
        ),
        None,
        Some(0),
    )
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
                ordering: None,
                follow: None,
                after: None,
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
    fn a_superseded_target_runs_again_only_when_the_ordering_is_ignored() {
        let mut d = finished();
        let status = d.status.as_mut().unwrap();
        status.targets[0].phase = DeliveryPhase::Superseded;
        status.targets[0].superseded_by = Some("newer".into());
        status.targets[1].phase = DeliveryPhase::Succeeded;
        for all in ["failed", "all"] {
            annotate(
                &mut d,
                &[
                    (ANNOTATION_REDELIVER, all),
                    (ANNOTATION_REDELIVER_TARGETS, all),
                ],
            );
            let (next, _) = reopen(d.status.as_ref().unwrap(), &requested(&d).unwrap());
            assert_eq!(next.targets[0].phase, DeliveryPhase::Superseded, "{all}");
            assert_eq!(superseded(&next), 1, "what the answer says was not sent");
        }
        annotate(&mut d, &[(ANNOTATION_REDELIVER_IGNORE_ORDERING, "true")]);
        let request = requested(&d).unwrap();
        assert!(request.ignore_ordering);
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &request);
        assert_eq!(rerun, 2);
        assert_eq!(next.targets[0].phase, DeliveryPhase::Pending);
        assert_eq!(next.targets[0].superseded_by, None);
        assert!(
            next.targets.iter().all(|t| t.ignore_ordering),
            "every target run again ignores the ordering"
        );
        assert_eq!(superseded(&next), 0);
    }

    #[test]
    fn a_target_a_newer_event_superseded_since_is_not_run_again_and_says_so() {
        let mut d = finished();
        annotate(
            &mut d,
            &[
                (ANNOTATION_REDELIVER, "t1"),
                (ANNOTATION_REDELIVER_TARGETS, "all"),
            ],
        );
        let newer = |t: &TargetStatus| (t.target == 0).then(|| "newer".to_string());
        let request = requested(&d).unwrap();
        let reopened = reopened(&d, &request, newer);
        let t = &reopened.status.targets[0];
        assert_eq!(
            (t.phase, t.superseded_by.as_deref()),
            (DeliveryPhase::Superseded, Some("newer"))
        );
        assert_eq!(reopened.rerun, 1, "only the other target");
        assert_eq!(superseded(&reopened.status), 1, "what the answer says");
        annotate(&mut d, &[(ANNOTATION_REDELIVER_IGNORE_ORDERING, "true")]);
        let reopened = super::reopened(&d, &requested(&d).unwrap(), newer);
        assert_eq!(reopened.rerun, 2, "unless the ordering is ignored");
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

    /// The delivery's run after a reopen: every target tried again, failed again.
    fn runs_and_fails(d: &mut StatusedDelivery) {
        let status = d.status.as_mut().unwrap();
        for t in &mut status.targets {
            if t.phase == DeliveryPhase::Pending {
                t.phase = DeliveryPhase::Failed;
                t.attempts = 1;
            }
        }
        status.phase = DeliveryPhase::Failed;
        status.completed_at = Some(now());
    }

    fn named(uid: &str) -> StatusedRedelivery {
        let mut r = request(RedeliveryTargets::Failed);
        r.metadata.uid = Some(uid.into());
        r
    }

    /// What the request controller does for a request it decides to honour: the claim in
    /// the request's status first, then the reopen (a write conditional on the delivery it
    /// decided on: applied only when `lands`).
    fn claim_and_reopen(r: &mut StatusedRedelivery, d: &mut StatusedDelivery, lands: bool) {
        let Decision::Reopen(asked) = decision(r, Some(d)) else {
            panic!("{:?} should reopen", r.metadata.uid);
        };
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &asked);
        r.status = Some(request_status(
            r.status.as_ref(),
            "ev-1",
            Answer::Claimed {
                claim: next.redelivery_requests,
                round: next.redeliveries,
                rerun,
            },
            None,
            now(),
        ));
        assert!(!answered(r), "a claim is not an answer");
        if lands {
            d.status = Some(next);
        }
    }

    /// The reviewer's interleaving: R1 reopens, its own status write fails; the delivery
    /// finishes; R2 and then the annotation reopen it again and it finishes again; R1 (on a
    /// retry, maybe from a new leader) then sees a finished delivery whose last token is
    /// not its own. It must not reopen a third time, and R2 neither.
    #[test]
    fn each_request_is_honoured_once_across_interleavings() {
        let mut d = finished();
        let (mut r1, mut r2) = (named("r1"), named("r2"));
        claim_and_reopen(&mut r1, &mut d, true);
        // R1's final status write fails here: r1 keeps only its claim.
        runs_and_fails(&mut d);
        claim_and_reopen(&mut r2, &mut d, true);
        runs_and_fails(&mut d);
        annotate(&mut d, &[(ANNOTATION_REDELIVER, "t1")]);
        let (next, _) = reopen(d.status.as_ref().unwrap(), &requested(&d).unwrap());
        d.status = Some(next);
        runs_and_fails(&mut d);
        assert_eq!(d.status.as_ref().unwrap().redeliveries, 3);

        assert_eq!(
            decision(&r1, Some(&d)),
            Decision::Honoured,
            "not a third time"
        );
        assert_eq!(decision(&r2, Some(&d)), Decision::Honoured);
        assert_eq!(
            requested(&d),
            None,
            "the annotation, honoured, is not asked again"
        );
        // Each answers with the round its own reopen started.
        assert_eq!(
            honoured_answer(&r1),
            Answer::Honoured {
                round: Some(1),
                rerun: Some(1)
            }
        );
        assert_eq!(
            honoured_answer(&r2),
            Answer::Honoured {
                round: Some(2),
                rerun: Some(1)
            }
        );
    }

    #[test]
    fn an_annotation_is_not_honoured_again_after_a_request() {
        let mut d = finished();
        annotate(&mut d, &[(ANNOTATION_REDELIVER, "t1")]);
        let (next, _) = reopen(d.status.as_ref().unwrap(), &requested(&d).unwrap());
        d.status = Some(next);
        runs_and_fails(&mut d);
        claim_and_reopen(&mut named("r1"), &mut d, true);
        runs_and_fails(&mut d);
        assert_eq!(requested(&d), None, "t1 stays honoured");
    }

    /// Two requests claim the same number off the same delivery (two reconciles, or an old
    /// and a new leader); only one conditional reopen lands. The other is not honoured, and
    /// is on its retry, once.
    #[test]
    fn a_request_whose_reopen_lost_the_race_is_honoured_on_its_retry() {
        let mut d = finished();
        let (mut r1, mut r2) = (named("r1"), named("r2"));
        let before = d.clone();
        claim_and_reopen(&mut r2, &mut d, true);
        let mut stale = before;
        claim_and_reopen(&mut r1, &mut stale, false);
        assert_eq!(r1.status.as_ref().unwrap().claim, Some(1));
        assert_eq!(decision(&r1, Some(&d)), Decision::Wait, "R2's round runs");
        // Its claim is lost: dropped with the waiting status, so that it cannot pass for
        // honoured once the delivery's recent list has moved past it.
        let waiting = request_status(r1.status.as_ref(), "ev-1", Answer::Waiting, None, now());
        assert_eq!(waiting.claim, None);
        r1.status = Some(waiting);
        runs_and_fails(&mut d);
        // Its number was taken by R2: R1 was not honoured, and is now.
        claim_and_reopen(&mut r1, &mut d, true);
        assert_eq!(r1.status.as_ref().unwrap().claim, Some(2));
        runs_and_fails(&mut d);
        assert_eq!(decision(&r1, Some(&d)), Decision::Honoured);
        assert_eq!(decision(&r2, Some(&d)), Decision::Honoured);
        assert_eq!(d.status.as_ref().unwrap().redeliveries, 2);
    }

    #[test]
    fn a_claim_whose_reopen_did_not_land_is_asked_again() {
        let mut d = finished();
        let mut r1 = named("r1");
        claim_and_reopen(&mut r1, &mut d, false);
        claim_and_reopen(&mut r1, &mut d, true);
        assert_eq!(d.status.as_ref().unwrap().redelivery_requests, 1);
        assert_eq!(decision(&r1, Some(&d)), Decision::Honoured);
    }

    /// The delivery keeps only the last RECENT_REQUESTS uids: a request whose uid has left
    /// that list is still known honoured by its claim.
    #[test]
    fn a_request_is_known_honoured_after_its_uid_left_the_recent_list() {
        let mut d = finished();
        let mut r1 = named("r1");
        claim_and_reopen(&mut r1, &mut d, true);
        runs_and_fails(&mut d);
        for i in 0..RECENT_REQUESTS {
            let mut other = named(&format!("other-{i}"));
            claim_and_reopen(&mut other, &mut d, true);
            runs_and_fails(&mut d);
        }
        let status = d.status.as_ref().unwrap();
        assert_eq!(status.recent_redelivery_requests.len(), RECENT_REQUESTS);
        assert!(
            !status
                .recent_redelivery_requests
                .contains(&"r1".to_string())
        );
        assert_eq!(decision(&r1, Some(&d)), Decision::Honoured);
        // Without its claim it could not know.
        r1.status = None;
        assert!(matches!(decision(&r1, Some(&d)), Decision::Reopen(_)));
    }

    #[test]
    fn a_request_with_nothing_to_run_is_answered_so_when_honoured_before() {
        let mut d = finished();
        d.status.as_mut().unwrap().targets[0].phase = DeliveryPhase::Succeeded;
        d.status.as_mut().unwrap().phase = DeliveryPhase::Succeeded;
        let mut r1 = named("r1");
        claim_and_reopen(&mut r1, &mut d, true);
        assert_eq!(d.status.as_ref().unwrap().redelivery_requests, 1);
        assert_eq!(decision(&r1, Some(&d)), Decision::Honoured);
        let answer = request_status(
            r1.status.as_ref(),
            "ev-1",
            honoured_answer(&r1),
            None,
            now(),
        );
        assert_eq!(answer.conditions[0].reason, "NothingToRedeliver");
        assert_eq!(answer.claim, Some(1), "the claim is kept");
    }

    fn request(targets: RedeliveryTargets) -> StatusedRedelivery {
        let mut r = StatusedRedelivery::new(
            "again",
            crate::api::StatusedRedeliverySpec {
                delivery: "ev-1".into(),
                targets,
                ignore_ordering: false,
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
        assert_eq!(decision(&r, None), Decision::NotFound);
        let Decision::Reopen(asked) = decision(&r, Some(&d)) else {
            panic!("a finished delivery is reopened");
        };
        assert_eq!(
            asked,
            Request {
                token: "request-uid".into(),
                all_targets: false,
                ignore_ordering: false,
                source: Source::Request,
            }
        );
        assert!(matches!(
            decision(&request(RedeliveryTargets::All), Some(&d)),
            Decision::Reopen(Request {
                all_targets: true,
                ..
            })
        ));
        // Reopened, but the request's own status was not written: not reopened again.
        let (next, rerun) = reopen(d.status.as_ref().unwrap(), &asked);
        d.status = Some(next);
        assert_eq!(decision(&r, Some(&d)), Decision::Honoured);
        // Answered: nothing more, whatever the delivery says.
        r.status = Some(request_status(
            None,
            "ev-1",
            Answer::Reopened {
                round: 1,
                rerun,
                of: 2,
                superseded: 0,
            },
            None,
            now(),
        ));
        assert!(answered(&r));
        assert_eq!(decision(&r, Some(&finished())), Decision::Answered);
    }

    #[test]
    fn a_request_waits_for_a_running_delivery() {
        let mut d = finished();
        d.status.as_mut().unwrap().phase = DeliveryPhase::Running;
        let mut r = request(RedeliveryTargets::Failed);
        assert_eq!(decision(&r, Some(&d)), Decision::Wait);
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
                of: 2,
                superseded: 0,
            }),
            "NothingToRedeliver"
        );
        let all_superseded = status(Answer::Reopened {
            round: 1,
            rerun: 0,
            of: 2,
            superseded: 2,
        });
        assert_eq!(all_superseded.conditions[0].reason, "Superseded");
        assert!(
            all_superseded.conditions[0]
                .message
                .contains("ignoreOrdering: true"),
            "it says how to send anyway"
        );
        let reopened = status(Answer::Reopened {
            round: 2,
            rerun: 1,
            of: 2,
            superseded: 0,
        });
        assert_eq!(reopened.conditions[0].reason, "Redelivering");
        assert_eq!(
            reopened.conditions[0].message,
            "delivery d: 1 of 2 targets run again (round 2)"
        );
        assert_eq!((reopened.round, reopened.targets), (Some(2), Some(1)));
    }
}
