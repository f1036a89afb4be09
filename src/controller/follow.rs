//! Following the runs targets start (a target's `follow`), pure: when a target starts to be
//! followed, which followed targets are due for a read, what a PipelineRun's or Workflow's
//! stored object says of its run, and what a read makes of the target.
//!
//! A followed target is Running from the moment its trigger is accepted until its run ends:
//! Succeeded with the run, Failed when the run failed, was cancelled, timed out or was
//! deleted. Everything the follow needs is in the delivery's status (`run.followUntil`, the
//! created object's name and uid, `nextAttemptAt` for the next read), so a restarted
//! operator or a new leader carries on where the last one stopped. The executor does the
//! reads (`executor/follow.rs`).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

pub use super::retry::following;
use super::retry::{finish, next_attempt};
use super::status::delivery_status;
use crate::api::{
    CreatedObject, DeliveryPhase, MatchedTarget, RunPhase, RunStatus, StatusedDeliveryStatus,
    TargetStatus,
};
use crate::targets::outcome::RunReading;

/// The most bytes of a run's own reason and message kept in `run.message`.
pub const MAX_MESSAGE_BYTES: usize = 256;

/// What a target whose run is not followed, for want of room, says.
pub const NOT_FOLLOWED: &str = "NotFollowed: its trigger was accepted, but the namespace (or the operator) follows as many runs as --max-follows-per-namespace (--max-follows) allow; its result is not followed";

/// `desired` with each target whose trigger was just accepted (Succeeded, an object
/// created, not followed yet) and whose `matched` entry says `follow`, followed instead:
/// Running, its first read `interval` from `now`; while `room` lasts (one per delivery
/// that starts following), else left Succeeded saying [`NOT_FOLLOWED`].
pub fn started(
    desired: StatusedDeliveryStatus,
    matched: &[MatchedTarget],
    interval: Duration,
    room: usize,
    now: jiff::Timestamp,
) -> StatusedDeliveryStatus {
    let mut targets = desired.targets.clone();
    let mut any = false;
    for t in &mut targets {
        let follow = matched
            .iter()
            .find(|m| m.rule == t.rule && m.target == t.target)
            .and_then(|m| m.follow.as_ref());
        let Some(follow) = follow else { continue };
        if t.phase != DeliveryPhase::Succeeded || t.created.is_none() || t.run.is_some() {
            continue;
        }
        if room == 0 && !desired.targets.iter().any(following) {
            t.last_error = Some(NOT_FOLLOWED.into());
            any = true;
            continue;
        }
        let timeout = Duration::from_secs(follow.timeout_seconds.into());
        t.phase = DeliveryPhase::Running;
        t.completed_at = None;
        t.next_attempt_at = Some(Time(next_attempt(now, interval)));
        t.run = Some(RunStatus::following(
            Time(next_attempt(now, timeout)),
            t.created.as_ref().and_then(|c| c.url.clone()),
        ));
        any = true;
    }
    if any {
        delivery_status(&desired, targets, now)
    } else {
        desired
    }
}

/// The followed targets whose next read is due at `now`.
pub fn due(targets: &[TargetStatus], now: jiff::Timestamp) -> Vec<usize> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| following(t) && t.next_attempt_at.as_ref().is_none_or(|at| at.0 <= now))
        .map(|(i, _)| i)
        .collect()
}

/// What one read found of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub phase: RunPhase,
    pub started_at: Option<Time>,
    pub completed_at: Option<Time>,
    /// The run's own reason and message, when it says one.
    pub message: Option<String>,
    /// Where to see it, when its service says.
    pub url: Option<String>,
}

/// The most bytes of a run's `url` kept.
pub const MAX_URL_BYTES: usize = 2048;

/// What an HTTP service's answer about a run said (`HttpTarget::run_reading`), its texts
/// cut to their bounds and its times parsed.
pub fn answered(r: RunReading) -> Reading {
    let time = |t: Option<String>| t.and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(Time);
    Reading {
        phase: r.phase,
        started_at: time(r.started_at),
        completed_at: time(r.completed_at),
        message: r.message.and_then(|m| said("", Some(&m))),
        url: r
            .url
            .filter(|u| u.len() <= MAX_URL_BYTES && u.starts_with("https://")),
    }
}

/// The run `created` names is no longer there (its service answered 404).
pub fn gone(created: &CreatedObject) -> Reading {
    reading(created, None)
}

/// What the stored `object` (None: not found) says of the run `created` names: a
/// PipelineRun by its `Succeeded` condition, a Workflow by its `status.phase`. An object of
/// that name with another uid is another run: the followed one was deleted.
pub fn reading(created: &CreatedObject, object: Option<&Value>) -> Reading {
    let deleted = Reading {
        phase: RunPhase::Deleted,
        started_at: None,
        completed_at: None,
        message: Some(format!(
            "{} {} was deleted before it ended",
            created.kind, created.name
        )),
        url: None,
    };
    let Some(object) = object else { return deleted };
    let uid = object["metadata"]["uid"].as_str();
    if created.uid.is_some() && uid != created.uid.as_deref() {
        return deleted;
    }
    let status = &object["status"];
    let time = |field: &str| {
        status[field]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(Time)
    };
    match created.kind.as_str() {
        "PipelineRun" => {
            let (phase, message) = pipeline_run_phase(status);
            Reading {
                phase,
                started_at: time("startTime"),
                completed_at: time("completionTime"),
                message,
                url: None,
            }
        }
        _ => {
            let (phase, message) = workflow_phase(status);
            Reading {
                phase,
                started_at: time("startedAt"),
                completed_at: time("finishedAt"),
                message,
                url: None,
            }
        }
    }
}

/// A PipelineRun's phase from its `Succeeded` condition: True, False (by its reason:
/// cancelled, timed out or failed), Unknown or absent (running).
fn pipeline_run_phase(status: &Value) -> (RunPhase, Option<String>) {
    let condition = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Succeeded");
    let Some(c) = condition else {
        return (RunPhase::Running, None);
    };
    let reason = c["reason"].as_str().unwrap_or_default();
    let message = said(reason, c["message"].as_str());
    let phase = match c["status"].as_str() {
        Some("True") => RunPhase::Succeeded,
        Some("False") => match reason {
            "Cancelled" | "CancelledRunFinally" | "StoppedRunFinally" | "PipelineRunCancelled" => {
                RunPhase::Cancelled
            }
            "PipelineRunTimeout" | "TaskRunTimeout" => RunPhase::TimedOut,
            _ => RunPhase::Failed,
        },
        _ => RunPhase::Running,
    };
    (phase, message)
}

/// A Workflow's phase from `status.phase`: Succeeded; Failed or Error (cancelled when it
/// was stopped or terminated, timed out past its deadline); anything else is running.
fn workflow_phase(status: &Value) -> (RunPhase, Option<String>) {
    let text = status["message"].as_str();
    let message = said(status["phase"].as_str().unwrap_or_default(), text);
    let lower = text.unwrap_or_default().to_ascii_lowercase();
    let phase = match status["phase"].as_str() {
        Some("Succeeded") => RunPhase::Succeeded,
        Some("Failed" | "Error") if lower.contains("stopped with strategy") => RunPhase::Cancelled,
        Some("Failed" | "Error") if lower.contains("terminated") => RunPhase::Cancelled,
        Some("Failed" | "Error") if lower.contains("deadline") => RunPhase::TimedOut,
        Some("Failed" | "Error") => RunPhase::Failed,
        _ => RunPhase::Running,
    };
    (phase, message)
}

/// "reason: message", at most [`MAX_MESSAGE_BYTES`] (cut at a character boundary).
fn said(reason: &str, message: Option<&str>) -> Option<String> {
    let text = match (reason, message.unwrap_or_default()) {
        ("", "") => return None,
        (r, "") => r.to_string(),
        ("", m) => m.to_string(),
        (r, m) => format!("{r}: {m}"),
    };
    let mut end = text.len().min(MAX_MESSAGE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_string())
}

/// The merge patch that asks a run's controller to stop it (`follow.cancelSuperseded`): a
/// PipelineRun's `spec.status: Cancelled`, a Workflow's `spec.shutdown: Terminate`.
pub fn cancel_patch(kind: &str) -> Option<Value> {
    match kind {
        "PipelineRun" => Some(serde_json::json!({"spec": {"status": "Cancelled"}})),
        "Workflow" => Some(serde_json::json!({"spec": {"shutdown": "Terminate"}})),
        _ => None,
    }
}

/// The delivery whose run supersedes the run `t` follows, when that run is to be cancelled
/// now: its target says `cancelSuperseded`, it runs, it was not cancelled yet, and `newer`
/// (asked only then: a newer event's delivery following a run of its own for the same key)
/// names one.
pub fn to_cancel(
    m: &MatchedTarget,
    t: &TargetStatus,
    newer: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let wanted = m.follow.as_ref().is_some_and(|f| f.cancel_superseded)
        && following(t)
        && t.superseded_by.is_none();
    wanted.then(newer).flatten()
}

/// What the read of `t`'s run at `now` makes of `t`: `Ok` what the object said, `Err` why it
/// could not be read (the read is due again after `interval`, until the follow times out).
/// The run's phase when it ended here, if it did.
pub fn read(
    t: &mut TargetStatus,
    reading: Result<Reading, String>,
    interval: Duration,
    now: jiff::Timestamp,
) -> Option<RunPhase> {
    let run = t.run.as_mut()?;
    run.reads = run.reads.saturating_add(1);
    let what = t
        .created
        .as_ref()
        .map(|c| format!("{} {}", c.kind, c.name))
        .unwrap_or_else(|| "the run".into());
    match reading {
        Ok(r) => {
            run.phase = r.phase;
            run.started_at = r.started_at.or(run.started_at.take());
            run.completed_at = r.completed_at;
            run.message = r.message;
            run.url = r.url.or(run.url.take());
            t.last_error = None;
        }
        Err(e) => t.last_error = Some(format!("reading {what}: {e}")),
    }
    if !run.phase.is_finished() && now >= run.follow_until.0 {
        run.phase = RunPhase::TimedOut;
        run.message = Some("not ended within the target's follow.timeoutSeconds".into());
    }
    let phase = run.phase;
    match phase {
        RunPhase::Running => {
            t.next_attempt_at = Some(Time(next_attempt(now, interval)));
            return None;
        }
        RunPhase::Succeeded => finish(t, DeliveryPhase::Succeeded, None, None, now),
        // Cancelled because a newer event's run started (`cancelSuperseded`).
        RunPhase::Cancelled if t.superseded_by.is_some() => {
            finish(t, DeliveryPhase::Superseded, None, None, now);
        }
        _ => {
            let why = match run.message.as_deref() {
                Some(m) => format!("{what} {}: {m}", phase.as_str()),
                None => format!("{what} {}", phase.as_str()),
            };
            finish(t, DeliveryPhase::Failed, None, Some(why), now);
        }
    }
    Some(phase)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::FollowedBy;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn created(kind: &str) -> CreatedObject {
        CreatedObject {
            api_version: "tekton.dev/v1".into(),
            kind: kind.into(),
            name: "release-abc".into(),
            uid: Some("uid-1".into()),
            url: None,
        }
    }

    fn matched(follow: bool) -> MatchedTarget {
        MatchedTarget {
            rule: "r".into(),
            target: 0,
            kind: "tekton".into(),
            ordering: None,
            follow: follow.then_some(FollowedBy {
                timeout_seconds: 600,
                cancel_superseded: false,
            }),
            after: None,
        }
    }

    /// A delivery whose one Tekton target's trigger was accepted at `at(0)`.
    fn accepted() -> StatusedDeliveryStatus {
        let mut t = TargetStatus::pending(&matched(true));
        t.created = Some(created("PipelineRun"));
        finish(&mut t, DeliveryPhase::Succeeded, Some(201), None, at(0));
        t.attempts = 1;
        delivery_status(&StatusedDeliveryStatus::default(), vec![t], at(0))
    }

    fn followed() -> TargetStatus {
        let s = started(
            accepted(),
            &[matched(true)],
            Duration::from_secs(10),
            1,
            at(0),
        );
        s.targets[0].clone()
    }

    fn pipeline_run(status: &str, reason: &str) -> Value {
        json!({"metadata": {"uid": "uid-1"}, "status": {
            "startTime": "2027-01-15T08:00:00Z", "completionTime": "2027-01-15T08:10:00Z",
            "conditions": [{"type": "Succeeded", "status": status, "reason": reason, "message": "Tasks Completed: 3"}]}})
    }

    #[test]
    fn an_accepted_trigger_is_followed_only_when_the_target_says_follow() {
        let s = started(
            accepted(),
            &[matched(true)],
            Duration::from_secs(10),
            1,
            at(0),
        );
        assert_eq!(
            s.phase,
            DeliveryPhase::Running,
            "the delivery waits for the run"
        );
        let t = &s.targets[0];
        assert_eq!(t.phase, DeliveryPhase::Running);
        assert_eq!(t.completed_at, None);
        assert_eq!(t.next_attempt_at, Some(Time(at(10))));
        let run = t.run.as_ref().unwrap();
        assert_eq!(
            (run.phase, run.follow_until.0),
            (RunPhase::Running, at(600))
        );
        assert!(following(t));
        // Started once: a later status keeps the follow as it is.
        assert_eq!(
            started(
                s.clone(),
                &[matched(true)],
                Duration::from_secs(10),
                1,
                at(5)
            ),
            s
        );

        let unfollowed = started(
            accepted(),
            &[matched(false)],
            Duration::from_secs(10),
            1,
            at(0),
        );
        assert_eq!(unfollowed, accepted());
    }

    #[test]
    fn without_room_a_run_is_not_followed_and_the_target_says_so() {
        let s = started(
            accepted(),
            &[matched(true)],
            Duration::from_secs(10),
            0,
            at(0),
        );
        assert_eq!(s.phase, DeliveryPhase::Succeeded);
        let t = &s.targets[0];
        assert_eq!((t.phase, t.run.as_ref()), (DeliveryPhase::Succeeded, None));
        assert!(
            t.last_error
                .as_deref()
                .unwrap()
                .starts_with("NotFollowed: ")
        );
        assert!(!following(t));
    }

    #[test]
    fn a_failed_trigger_is_not_followed() {
        let mut failed = accepted();
        failed.targets[0].phase = DeliveryPhase::Failed;
        let s = started(
            failed.clone(),
            &[matched(true)],
            Duration::from_secs(10),
            1,
            at(0),
        );
        assert_eq!(s, failed);
    }

    #[test]
    fn a_followed_target_is_due_for_a_read_not_a_call() {
        let t = followed();
        assert!(due(std::slice::from_ref(&t), at(9)).is_empty());
        assert_eq!(due(std::slice::from_ref(&t), at(10)), vec![0]);
        assert!(
            super::super::retry::due(std::slice::from_ref(&t), at(10)).is_empty(),
            "its trigger is never called again"
        );
    }

    #[test]
    fn pipeline_run_conditions_say_the_phase() {
        let c = created("PipelineRun");
        let cases = [
            ("True", "Succeeded", RunPhase::Succeeded),
            ("False", "Failed", RunPhase::Failed),
            ("False", "Cancelled", RunPhase::Cancelled),
            ("False", "StoppedRunFinally", RunPhase::Cancelled),
            ("False", "PipelineRunTimeout", RunPhase::TimedOut),
            ("Unknown", "Running", RunPhase::Running),
        ];
        for (status, reason, phase) in cases {
            let r = reading(&c, Some(&pipeline_run(status, reason)));
            assert_eq!(r.phase, phase, "{status} {reason}");
            assert_eq!(
                r.message.as_deref(),
                Some(&*format!("{reason}: Tasks Completed: 3"))
            );
        }
        let r = reading(&c, Some(&pipeline_run("True", "Succeeded")));
        assert_eq!(r.started_at.unwrap().0.to_string(), "2027-01-15T08:00:00Z");
        assert_eq!(
            r.completed_at.unwrap().0.to_string(),
            "2027-01-15T08:10:00Z"
        );
        let fresh = json!({"metadata": {"uid": "uid-1"}, "spec": {}});
        assert_eq!(reading(&c, Some(&fresh)).phase, RunPhase::Running);
    }

    #[test]
    fn workflow_phase_says_the_phase() {
        let c = created("Workflow");
        let wf = |phase: &str, message: &str| {
            json!({"metadata": {"uid": "uid-1"}, "status": {"phase": phase, "message": message,
                "startedAt": "2027-01-15T08:00:00Z", "finishedAt": "2027-01-15T08:01:00Z"}})
        };
        let cases = [
            ("Succeeded", "", RunPhase::Succeeded),
            ("Failed", "child 'build' failed", RunPhase::Failed),
            ("Error", "pod deleted", RunPhase::Failed),
            (
                "Failed",
                "Stopped with strategy 'Terminate'",
                RunPhase::Cancelled,
            ),
            ("Failed", "Step exceeded its deadline", RunPhase::TimedOut),
            ("Running", "", RunPhase::Running),
            ("Pending", "", RunPhase::Running),
        ];
        for (p, m, phase) in cases {
            assert_eq!(reading(&c, Some(&wf(p, m))).phase, phase, "{p} {m}");
        }
        let r = reading(&c, Some(&wf("Succeeded", "")));
        assert_eq!(
            r.completed_at.unwrap().0.to_string(),
            "2027-01-15T08:01:00Z"
        );
    }

    #[test]
    fn a_run_gone_or_replaced_under_its_name_is_deleted() {
        let c = created("PipelineRun");
        assert_eq!(reading(&c, None).phase, RunPhase::Deleted);
        let other = json!({"metadata": {"uid": "uid-2"}, "status": {}});
        let r = reading(&c, Some(&other));
        assert_eq!(r.phase, RunPhase::Deleted);
        assert_eq!(
            r.message.as_deref(),
            Some("PipelineRun release-abc was deleted before it ended")
        );
    }

    #[test]
    fn a_message_is_kept_to_its_bound_at_a_character_boundary() {
        let long = "é".repeat(400);
        let r = reading(
            &created("Workflow"),
            Some(
                &json!({"metadata": {"uid": "uid-1"}, "status": {"phase": "Failed", "message": long}}),
            ),
        );
        let m = r.message.unwrap();
        assert!(
            m.len() <= MAX_MESSAGE_BYTES && m.starts_with("Failed: é"),
            "{}",
            m.len()
        );
    }

    #[test]
    fn a_read_finishes_the_target_with_its_run() {
        let interval = Duration::from_secs(10);
        let c = created("PipelineRun");
        let mut t = followed();
        let running = reading(&c, Some(&pipeline_run("Unknown", "Running")));
        assert_eq!(read(&mut t, Ok(running), interval, at(10)), None);
        assert_eq!(t.next_attempt_at, Some(Time(at(20))));
        assert_eq!(t.run.as_ref().unwrap().reads, 1);

        let mut ok = t.clone();
        let done = reading(&c, Some(&pipeline_run("True", "Succeeded")));
        assert_eq!(
            read(&mut ok, Ok(done), interval, at(20)),
            Some(RunPhase::Succeeded)
        );
        assert_eq!(
            (ok.phase, ok.last_error.as_deref()),
            (DeliveryPhase::Succeeded, None)
        );
        assert_eq!(ok.completed_at, Some(Time(at(20))));

        let mut failed = t.clone();
        let lost = reading(&c, Some(&pipeline_run("False", "Failed")));
        assert_eq!(
            read(&mut failed, Ok(lost), interval, at(20)),
            Some(RunPhase::Failed)
        );
        assert_eq!(failed.phase, DeliveryPhase::Failed);
        assert_eq!(
            failed.last_error.as_deref(),
            Some("PipelineRun release-abc Failed: Failed: Tasks Completed: 3")
        );
    }

    #[test]
    fn a_superseded_run_is_cancelled_once_and_its_target_ends_superseded() {
        let mut m = matched(true);
        let t = followed();
        let newer = || Some("newer".to_string());
        assert!(to_cancel(&m, &t, newer).is_none(), "not asked for");
        m.follow.as_mut().unwrap().cancel_superseded = true;
        assert!(to_cancel(&m, &t, || None).is_none(), "nothing newer runs");
        assert_eq!(to_cancel(&m, &t, newer).as_deref(), Some("newer"));
        let mut cancelled = t.clone();
        cancelled.superseded_by = Some("newer".into());
        assert!(to_cancel(&m, &cancelled, newer).is_none(), "once");

        let stopped = reading(
            &created("PipelineRun"),
            Some(&pipeline_run("False", "Cancelled")),
        );
        assert_eq!(
            read(
                &mut cancelled,
                Ok(stopped.clone()),
                Duration::from_secs(10),
                at(20)
            ),
            Some(RunPhase::Cancelled)
        );
        assert_eq!(cancelled.phase, DeliveryPhase::Superseded);
        assert_eq!(cancelled.last_error, None);
        // Cancelled by someone else: a failure.
        let mut other = t.clone();
        read(&mut other, Ok(stopped), Duration::from_secs(10), at(20));
        assert_eq!(other.phase, DeliveryPhase::Failed);

        assert_eq!(
            cancel_patch("PipelineRun"),
            Some(json!({"spec": {"status": "Cancelled"}}))
        );
        assert_eq!(
            cancel_patch("Workflow"),
            Some(json!({"spec": {"shutdown": "Terminate"}}))
        );
    }

    #[test]
    fn a_run_not_ended_in_time_times_out_and_an_unreadable_one_is_read_again() {
        let interval = Duration::from_secs(10);
        let mut t = followed();
        assert_eq!(read(&mut t, Err("503".into()), interval, at(10)), None);
        assert_eq!(t.phase, DeliveryPhase::Running);
        assert_eq!(
            t.last_error.as_deref(),
            Some("reading PipelineRun release-abc: 503")
        );
        assert_eq!(t.next_attempt_at, Some(Time(at(20))));

        let running = reading(
            &created("PipelineRun"),
            Some(&pipeline_run("Unknown", "Running")),
        );
        assert_eq!(
            read(&mut t, Ok(running), interval, at(600)),
            Some(RunPhase::TimedOut)
        );
        assert_eq!(t.phase, DeliveryPhase::Failed);
        assert!(
            t.last_error.as_deref().unwrap().contains("TimedOut"),
            "{:?}",
            t.last_error
        );
    }
}
