//! The executor's decisions about one target, pure: which targets are due, and what an
//! attempt's outcome makes of a target's status (succeeded, failed, or due again after a
//! backoff that honours `Retry-After`, until `max_attempts`). The reconcile is IO around
//! these.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{DeliveryPhase, MatchedTarget, StatusedDeliveryStatus, TargetStatus};
use crate::backoff::Backoff;
use crate::targets::send::Outcome;

/// The longest `Retry-After` honoured; a server asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Records one attempt's `outcome` on `t` at `now`.
    pub fn apply(&self, t: &mut TargetStatus, outcome: Outcome, now: jiff::Timestamp) {
        t.attempts += 1;
        // The outcome is known: the call is no longer in flight.
        t.call_started_at = None;
        match outcome {
            Outcome::Succeeded {
                code,
                created,
                response_id,
                ..
            } => {
                t.created = created;
                t.listener_event_id = response_id;
                finish(t, DeliveryPhase::Succeeded, code, None, now);
            }
            Outcome::Failed { code, error } => {
                finish(t, DeliveryPhase::Failed, code, Some(error), now)
            }
            Outcome::Retry { code, error, after } => {
                if t.attempts >= self.max_attempts {
                    let error = format!("{error} (gave up after {} attempts)", t.attempts);
                    finish(t, DeliveryPhase::Failed, code, Some(error), now);
                } else {
                    let delay = retry_delay(after, self.backoff.delay(t.attempts));
                    // Tried and due again: Running until it succeeds or gives up.
                    t.phase = DeliveryPhase::Running;
                    t.last_response_code = code;
                    t.last_error = Some(error);
                    t.next_attempt_at = Some(Time(next_attempt(now, delay)));
                }
            }
        }
    }
}

/// Each matched target's status: as recorded, or Pending when not recorded yet.
pub fn targets(matched: &[MatchedTarget], current: &StatusedDeliveryStatus) -> Vec<TargetStatus> {
    matched
        .iter()
        .map(|m| {
            current
                .targets
                .iter()
                .find(|t| t.rule == m.rule && t.target == m.target)
                .cloned()
                .unwrap_or_else(|| TargetStatus::pending(m))
        })
        .collect()
}

/// The targets to call at `now`: unfinished, and their next attempt time (if any) reached.
/// A target following its run is read, never called again (follow.rs).
pub fn due(targets: &[TargetStatus], now: jiff::Timestamp) -> Vec<usize> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            !t.phase.is_finished()
                && !following(t)
                && t.next_attempt_at.as_ref().is_none_or(|at| at.0 <= now)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Whether `t` follows a run that has not ended (its target's `follow`, follow.rs): it is
/// read, not called.
pub fn following(t: &TargetStatus) -> bool {
    !t.phase.is_finished() && t.run.as_ref().is_some_and(|r| !r.phase.is_finished())
}

/// Ends `t` in `phase`.
pub fn finish(
    t: &mut TargetStatus,
    phase: DeliveryPhase,
    code: Option<u16>,
    error: Option<String>,
    now: jiff::Timestamp,
) {
    t.phase = phase;
    t.last_response_code = code.or(t.last_response_code);
    t.last_error = error;
    t.next_attempt_at = None;
    t.completed_at = Some(Time(now));
}

/// The wait before the next attempt: our backoff, or the server's `Retry-After` when that is
/// longer (up to an hour). `Retry-After: 0` does not make a client hammer a server.
pub fn retry_delay(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    retry_after.map_or(backoff, |a| a.min(MAX_RETRY_AFTER).max(backoff))
}

/// `now + delay`, rounded up to a whole second: status timestamps have second precision, and
/// a retry must never happen before the time a server asked for.
pub fn next_attempt(now: jiff::Timestamp, delay: Duration) -> jiff::Timestamp {
    let at =
        now + jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::from_secs(1));
    let whole = at.as_second() + i64::from(at.subsec_nanosecond() > 0);
    jiff::Timestamp::from_second(whole).unwrap_or(at)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 3 attempts, backing off from 2 s: the policy the executor's unit tests run with.
    pub(crate) fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_secs(2),
                max: Duration::from_secs(60),
            },
        }
    }

    fn pending() -> TargetStatus {
        TargetStatus::pending(&MatchedTarget {
            rule: "r".into(),
            target: 0,
            kind: "webhook".into(),
            ordering: None,
            follow: None,
            after: None,
        })
    }

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn retry(after: Option<u64>) -> Outcome {
        Outcome::Retry {
            code: Some(503),
            error: "HTTP 503".into(),
            after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_success_finishes_the_target() {
        let mut t = pending();
        let ok = Outcome::Succeeded {
            code: Some(204),
            body: vec![],
            created: None,
            response_id: None,
        };
        policy().apply(&mut t, ok, at(0));
        assert_eq!(
            (t.phase, t.attempts, t.last_response_code),
            (DeliveryPhase::Succeeded, 1, Some(204))
        );
        assert!(due(&[t], at(100)).is_empty());
    }

    #[test]
    fn a_permanent_failure_is_not_retried() {
        let mut t = pending();
        let failed = Outcome::Failed {
            code: Some(404),
            error: "HTTP 404".into(),
        };
        policy().apply(&mut t, failed, at(0));
        assert_eq!((t.phase, t.attempts), (DeliveryPhase::Failed, 1));
        assert_eq!(t.last_error.as_deref(), Some("HTTP 404"));
    }

    #[test]
    fn a_retry_is_due_after_the_backoff_or_the_servers_retry_after_whichever_is_later() {
        let mut t = pending();
        policy().apply(&mut t, retry(None), at(0));
        assert_eq!(t.phase, DeliveryPhase::Running);
        let next = t.next_attempt_at.clone().unwrap().0;
        // base 2 s, jitter 0.8-1.2, rounded up to a whole second
        assert!((at(2)..=at(3)).contains(&next), "{next}");
        assert!(due(std::slice::from_ref(&t), at(1)).is_empty());
        assert_eq!(due(std::slice::from_ref(&t), at(3)), [0]);

        let mut t = pending();
        policy().apply(&mut t, retry(Some(30)), at(0));
        assert_eq!(t.next_attempt_at.unwrap().0, at(30));
    }

    #[test]
    fn retries_stop_at_max_attempts() {
        let mut t = pending();
        for i in 0..3 {
            policy().apply(&mut t, retry(None), at(i * 100));
        }
        assert_eq!((t.phase, t.attempts), (DeliveryPhase::Failed, 3));
        assert!(
            t.last_error
                .unwrap()
                .ends_with("(gave up after 3 attempts)")
        );
        assert!(t.next_attempt_at.is_none());
    }

    #[test]
    fn unrecorded_targets_start_pending_and_recorded_ones_keep_their_status() {
        let m = |rule: &str| MatchedTarget {
            rule: rule.into(),
            target: 0,
            kind: "webhook".into(),
            ordering: None,
            follow: None,
            after: None,
        };
        let mut done = TargetStatus::pending(&m("a"));
        done.phase = DeliveryPhase::Succeeded;
        let current = StatusedDeliveryStatus {
            targets: vec![done],
            ..Default::default()
        };
        let ts = targets(&[m("a"), m("b")], &current);
        assert_eq!(ts[0].phase, DeliveryPhase::Succeeded);
        assert_eq!(ts[1].phase, DeliveryPhase::Pending);
        assert_eq!(due(&ts, at(0)), [1]);
    }

    #[test]
    fn retry_after_is_a_minimum_capped_at_an_hour() {
        let backoff = Duration::from_secs(4);
        assert_eq!(retry_delay(None, backoff), backoff);
        assert_eq!(retry_delay(Some(Duration::ZERO), backoff), backoff);
        assert_eq!(
            retry_delay(Some(Duration::from_secs(30)), backoff),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(Some(Duration::from_secs(86400)), backoff),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn next_attempts_round_up_to_whole_seconds() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00.400Z".parse().unwrap();
        assert_eq!(
            next_attempt(now, Duration::from_millis(100)).to_string(),
            "2026-01-01T00:00:01Z"
        );
        assert_eq!(
            next_attempt(now, Duration::from_millis(600)).to_string(),
            "2026-01-01T00:00:01Z"
        );
        assert_eq!(
            next_attempt(now, Duration::from_secs(2)).to_string(),
            "2026-01-01T00:00:03Z"
        );
    }
}
