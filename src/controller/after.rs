//! Rules with `after`, pure: their targets wait until the targets of the rule they name have
//! ended, then are sent once when one of those ended as `after.phases` says (a run's result,
//! or a failure path), or end Skipped; and what their templates read as `run`.
//!
//! A target's outcome is its run's phase when it followed one (`follow.rs`), else its own
//! phase (Succeeded, or Failed: a trigger that failed for good). A Superseded or Skipped
//! target has no outcome. Everything is read from the delivery: the `after` each matched
//! target carries (fixed when the event was accepted) and the targets' statuses.

use serde_json::{Value, json};

use super::retry::finish;
use crate::api::{DeliveryPhase, MatchedTarget, RunPhase, TargetStatus};

/// The outcome of a finished target (see the module's text); None while it runs, or when it
/// was superseded or skipped.
pub fn outcome(t: &TargetStatus) -> Option<RunPhase> {
    match (t.phase, &t.run) {
        (DeliveryPhase::Succeeded | DeliveryPhase::Failed, Some(run))
            if run.phase.is_finished() =>
        {
            Some(run.phase)
        }
        (DeliveryPhase::Succeeded, _) => Some(RunPhase::Succeeded),
        (DeliveryPhase::Failed, _) => Some(RunPhase::Failed),
        _ => None,
    }
}

/// Where target `i` (of `matched`, with `targets` its statuses) stands with its `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No `after`, or what it waits for happened: it may be called.
    Open,
    /// The rule it waits for has targets still running.
    Waiting,
    /// That rule's targets all ended, none as its `after.phases` says: not sent.
    Closed,
}

pub fn gate(matched: &[MatchedTarget], targets: &[TargetStatus], i: usize) -> Gate {
    let Some(after) = matched.get(i).and_then(|m| m.after.as_ref()) else {
        return Gate::Open;
    };
    let watched: Vec<&TargetStatus> = watched(matched, targets, &after.rule).collect();
    if watched.iter().any(|t| !t.phase.is_finished()) {
        return Gate::Waiting;
    }
    if watched
        .iter()
        .any(|t| outcome(t).is_some_and(|o| after.phases.contains(&o)))
    {
        Gate::Open
    } else {
        Gate::Closed
    }
}

/// The statuses of the targets of rule `rule`.
fn watched<'t>(
    matched: &'t [MatchedTarget],
    targets: &'t [TargetStatus],
    rule: &'t str,
) -> impl Iterator<Item = &'t TargetStatus> {
    matched
        .iter()
        .zip(targets)
        .filter(move |(m, _)| m.rule == rule && m.after.is_none())
        .map(|(_, t)| t)
}

/// `targets` with each unfinished one whose `after` is [`Gate::Closed`] ended Skipped at
/// `now`.
pub fn settle(
    matched: &[MatchedTarget],
    mut targets: Vec<TargetStatus>,
    now: jiff::Timestamp,
) -> Vec<TargetStatus> {
    for i in 0..targets.len() {
        if !targets[i].phase.is_finished() && gate(matched, &targets, i) == Gate::Closed {
            finish(&mut targets[i], DeliveryPhase::Skipped, None, None, now);
        }
    }
    targets
}

/// What the templates of target `i` read as `run`: for a target with `after`, the first
/// target of the rule it waits for whose outcome it was sent for (its rule, kind, phase,
/// error, and the run's name, times and message when it followed one); for any other, the
/// same fields, empty.
pub fn run_value(matched: &[MatchedTarget], targets: &[TargetStatus], i: usize) -> Value {
    let text = |s: Option<String>| s.unwrap_or_default();
    let after = matched.get(i).and_then(|m| m.after.as_ref());
    let cause = after.and_then(|a| {
        watched(matched, targets, &a.rule)
            .find(|t| outcome(t).is_some_and(|o| a.phases.contains(&o)))
    });
    let Some(t) = cause else {
        return json!({"rule": "", "kind": "", "phase": "", "error": "", "name": "",
            "startedAt": "", "completedAt": "", "message": ""});
    };
    let run = t.run.as_ref();
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_default()
    };
    json!({
        "rule": t.rule,
        "kind": t.kind,
        "phase": outcome(t).map(RunPhase::as_str).unwrap_or_default(),
        "error": text(t.last_error.clone()),
        "name": text(t.created.as_ref().map(|c| c.name.clone())),
        "startedAt": time(run.and_then(|r| r.started_at.as_ref())),
        "completedAt": time(run.and_then(|r| r.completed_at.as_ref())),
        "message": text(run.and_then(|r| r.message.clone())),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{After, CreatedObject, RunStatus};

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// A release rule's Tekton target and a chat rule's target sent after it on `phases`.
    fn matched(phases: &[RunPhase]) -> Vec<MatchedTarget> {
        let m = |rule: &str, kind: &str, after: Option<After>| MatchedTarget {
            rule: rule.into(),
            target: 0,
            kind: kind.into(),
            ordering: None,
            follow: None,
            after,
        };
        vec![
            m("release", "tekton", None),
            m(
                "tell",
                "slack",
                Some(After {
                    rule: "release".into(),
                    phases: phases.to_vec(),
                }),
            ),
        ]
    }

    fn statuses(m: &[MatchedTarget]) -> Vec<TargetStatus> {
        m.iter().map(TargetStatus::pending).collect()
    }

    /// The release target ended at `at(5)`: its run in `run` (None: no follow), the target
    /// `phase`.
    fn ended(t: &mut TargetStatus, phase: DeliveryPhase, run: Option<RunPhase>) {
        t.created = Some(CreatedObject {
            api_version: "tekton.dev/v1".into(),
            kind: "PipelineRun".into(),
            name: "release-1".into(),
            uid: None,
            url: None,
        });
        t.run = run.map(|phase| RunStatus {
            phase,
            follow_until: Time(at(600)),
            started_at: Some(Time(at(1))),
            completed_at: Some(Time(at(4))),
            message: Some("Failed: tests".into()),
            url: None,
            reads: 2,
        });
        finish(
            t,
            phase,
            None,
            (phase == DeliveryPhase::Failed).then(|| "PipelineRun release-1 Failed".into()),
            at(5),
        );
    }

    #[test]
    fn a_target_with_after_waits_for_the_rule_it_names() {
        let m = matched(&[RunPhase::Failed]);
        let mut t = statuses(&m);
        assert_eq!(gate(&m, &t, 0), Gate::Open, "no after");
        assert_eq!(gate(&m, &t, 1), Gate::Waiting);
        t[0].phase = DeliveryPhase::Running;
        assert_eq!(
            gate(&m, &t, 1),
            Gate::Waiting,
            "a run followed is still running"
        );
    }

    #[test]
    fn it_is_sent_when_that_rule_ended_as_it_says_and_skipped_otherwise() {
        let m = matched(&[RunPhase::Failed, RunPhase::TimedOut]);
        let mut failed = statuses(&m);
        ended(
            &mut failed[0],
            DeliveryPhase::Failed,
            Some(RunPhase::Failed),
        );
        assert_eq!(gate(&m, &failed, 1), Gate::Open);
        assert_eq!(
            settle(&m, failed.clone(), at(6)),
            failed,
            "sent, not settled"
        );

        let mut ok = statuses(&m);
        ended(
            &mut ok[0],
            DeliveryPhase::Succeeded,
            Some(RunPhase::Succeeded),
        );
        assert_eq!(gate(&m, &ok, 1), Gate::Closed);
        let settled = settle(&m, ok, at(6));
        assert_eq!(settled[1].phase, DeliveryPhase::Skipped);
        assert_eq!(settled[1].completed_at, Some(Time(at(6))));

        let mut cancelled = statuses(&m);
        ended(
            &mut cancelled[0],
            DeliveryPhase::Failed,
            Some(RunPhase::Cancelled),
        );
        assert_eq!(
            gate(&m, &cancelled, 1),
            Gate::Closed,
            "Cancelled was not asked for"
        );
    }

    #[test]
    fn a_trigger_that_failed_for_good_is_a_failed_outcome_the_failure_path() {
        let m = matched(&[RunPhase::Failed]);
        let mut t = statuses(&m);
        ended(&mut t[0], DeliveryPhase::Failed, None);
        assert_eq!(outcome(&t[0]), Some(RunPhase::Failed));
        assert_eq!(gate(&m, &t, 1), Gate::Open);
        let mut superseded = statuses(&m);
        superseded[0].phase = DeliveryPhase::Superseded;
        assert_eq!(outcome(&superseded[0]), None);
        assert_eq!(gate(&m, &superseded, 1), Gate::Closed);
    }

    #[test]
    fn templates_read_the_outcome_that_sent_the_target_as_run() {
        let m = matched(&[RunPhase::Failed]);
        let mut t = statuses(&m);
        assert_eq!(
            run_value(&m, &t, 0)["phase"],
            "",
            "no after: the same shape, empty"
        );
        ended(&mut t[0], DeliveryPhase::Failed, Some(RunPhase::Failed));
        let run = run_value(&m, &t, 1);
        assert_eq!(run["phase"], "Failed");
        assert_eq!(run["name"], "release-1");
        assert_eq!(run["rule"], "release");
        assert_eq!(run["message"], "Failed: tests");
        assert_eq!(run["error"], "PipelineRun release-1 Failed");
        assert_eq!(run["startedAt"], at(1).to_string());
        assert_eq!(run["completedAt"], at(4).to_string());
    }
}
