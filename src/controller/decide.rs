//! The executor's decisions about one delivery, pure. From the delivery, what the loop
//! observed about it and the time: the next [`Step`]. From how the due targets rendered:
//! which [`Calls`] to make, and the mark that goes before an at-most-once call. From the
//! calls' outcomes: the status to write. From a status: when to look again.
//!
//! `executor/` is the IO around these: it gathers what they read, does the IO they name
//! (render, call, write) and writes every status through its `write_status` (the one writer).
//! Every status decided here is built by `status::delivery_status` (the one builder; a
//! redelivery's reopened status is `redeliver::reopen`'s). Every transition has a test below.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::redeliver;
use super::retry::{self, RetryPolicy, finish};
use super::status::delivery_status;
use super::{after, follow};
use crate::api::{DeliveryPhase, StatusedDelivery, StatusedDeliveryStatus, TargetStatus};
use crate::route::plan::Planned;
use crate::routing::RouteCheck;
use crate::targets::send::Outcome;

/// How long a delivery waits while the routing table and the route cache disagree, or while
/// status writes are failing.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How often a delivery whose route is not Ready looks again.
pub const NOT_READY: Duration = Duration::from_secs(5);

/// What the loop observed about a delivery before deciding. `R` is the compiled route.
#[derive(Debug, Clone)]
pub struct Observed<'a, R> {
    /// The delivery, never older than the executor's own last write to it.
    pub delivery: &'a StatusedDelivery,
    /// A status whose calls were made but whose write failed (the ledger's).
    pub unrecorded: Option<&'a StatusedDeliveryStatus>,
    /// The route object that accepted the event, compiled, or why it cannot run the
    /// delivery now (`RoutingTable::check`).
    pub route: Result<R, RouteCheck>,
    /// So many statuses wait to be written that no new call starts.
    pub writes_backlogged: bool,
    /// `--max-pending-age`: how long a delivery waits for its route to be Ready.
    pub max_pending_age: Duration,
}

/// The next step for a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<R> {
    /// Finished: nothing to do until the delivery changes.
    Idle,
    /// Finished, and a redelivery is asked for with the annotation: reopen it.
    Reopen,
    /// Write this status and call nothing: calls already made whose outcome is not written
    /// yet, or a status that the targets' own states imply.
    Write(StatusedDeliveryStatus),
    /// The delivery can never run (its route is gone, or was not Ready in time): write this
    /// status, in which every unfinished target failed with `why`, and call nothing.
    GiveUp {
        status: StatusedDeliveryStatus,
        why: String,
    },
    /// Look again after this long, calling nothing.
    Wait(Duration),
    /// Read the runs the `due` targets follow (indexes into `targets`, every target's
    /// status as it stands), with [`follow::read`] deciding what each read makes of it.
    Follow {
        /// The route object, when it can still run the delivery: an HTTP kind's run is
        /// read with its target's credentials.
        route: Option<R>,
        targets: Vec<TargetStatus>,
        due: Vec<usize>,
    },
    /// Render the `due` targets (indexes into `targets`, every target's status as it
    /// stands) for `route`, then decide the calls with [`calls`].
    Render {
        route: R,
        targets: Vec<TargetStatus>,
        due: Vec<usize>,
    },
}

/// The next step for `o.delivery` at `now`.
pub fn decide<R>(o: Observed<'_, R>, now: jiff::Timestamp) -> Step<R> {
    let d = o.delivery;
    let current = d.status.clone().unwrap_or_default();
    if current.phase.is_finished() {
        return match redeliver::requested(d) {
            Some(_) => Step::Reopen,
            None => Step::Idle,
        };
    }
    if let Some(status) = o.unrecorded {
        // Calls made, status not written yet: write it, call nothing.
        return Step::Write(status.clone());
    }
    // A run started is followed whatever becomes of the route: it needs only the status.
    // Targets whose `after` did not happen end Skipped (written with the next status).
    let targets = after::settle(
        &d.spec.matched,
        retry::targets(&d.spec.matched, &current),
        now,
    );
    let reads = follow::due(&targets, now);
    if !reads.is_empty() {
        return Step::Follow {
            route: o.route.ok(),
            targets,
            due: reads,
        };
    }
    let unfinished = || targets.iter().filter(|t| !t.phase.is_finished());
    if unfinished().next().is_some() && unfinished().all(follow::following) {
        // Only runs to follow, none due yet: the next read.
        return Step::Wait(next_look(&current, now).unwrap_or(SETTLE));
    }
    let route = match o.route {
        Ok(route) => route,
        Err(check) => return not_runnable(check, d, &current, o.max_pending_age, now),
    };
    if o.writes_backlogged {
        // Status writes are failing: start no new calls until they succeed again.
        return Step::Wait(SETTLE);
    }
    let mut due = retry::due(&targets, now);
    due.retain(|&i| after::gate(&d.spec.matched, &targets, i) == after::Gate::Open);
    if !due.is_empty() {
        return Step::Render {
            route,
            targets,
            due,
        };
    }
    // Nothing due: the targets back off. Their states may imply a status not written yet.
    let status = delivery_status(&current, targets, now);
    if d.status.as_ref() != Some(&status) {
        Step::Write(status)
    } else {
        Step::Wait(next_look(&status, now).unwrap_or(SETTLE))
    }
}

/// The step for `d` when its route cannot run it (`check`).
///
/// A delivery runs only for the route object that accepted its event (`spec.routeUID`):
/// it has no ownerReference, so it outlives a deleted route, and a route applied again
/// under the same name is not the one the event was matched against.
fn not_runnable<R>(
    check: RouteCheck,
    d: &StatusedDelivery,
    current: &StatusedDeliveryStatus,
    max_pending_age: Duration,
    now: jiff::Timestamp,
) -> Step<R> {
    let give_up = |why: String| Step::GiveUp {
        status: delivery_status(current, failed(d, current, &why, now), now),
        why,
    };
    let name = &d.spec.route;
    match check {
        RouteCheck::ReCreated => give_up(format!(
            "RouteGone: route {name} was deleted and created again; this delivery belonged to the earlier one"
        )),
        RouteCheck::Gone => give_up(format!("RouteGone: route {name} no longer exists")),
        // (`RoutingTable::check` answers `Run` with the route, never as an error.)
        RouteCheck::Run | RouteCheck::Settling => Step::Wait(SETTLE),
        // Not Ready (a Secret is missing) or not loaded yet: wait, but not forever.
        RouteCheck::NotReady if age(d, now) > max_pending_age => give_up(format!(
            "RouteNotReady: route {name} was not Ready within --max-pending-age ({}s) of the event",
            max_pending_age.as_secs()
        )),
        RouteCheck::NotReady => Step::Wait(NOT_READY),
    }
}

/// How a due target's request or object came out of rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Ready to call; `at_most_once` with `onUncertain: fail`.
    Call { at_most_once: bool },
    /// It cannot be made for this event (gone from the route, or unbuildable): it fails.
    Fail(String),
    /// Its destination cannot take it now (paused after a 429, at its `maxConcurrent`, or
    /// out of its `ratePerMinute`): not called, no attempt counted, due again `until`; `why`
    /// is shown on the target.
    Defer { until: jiff::Timestamp, why: String },
    /// Its ordering key makes it wait for delivery `on` (an earlier event not finished there,
    /// a newer one, or a call in flight): not called, no attempt counted, due again when the
    /// key's order moves (the executor is woken) or after [`ORDER_POLL`]; `why` is shown.
    Hold { on: String, why: String },
    /// A newer event for its key (`latestWins`), recorded as delivery `by`, succeeded at the
    /// target first: it is not called, and finishes Superseded.
    Supersede { by: String },
}

/// How often a target held by its ordering key looks again when nothing wakes it sooner.
pub const ORDER_POLL: Duration = Duration::from_secs(10);

/// The calls to make for a delivery, and the status that goes before them.
#[derive(Debug, Clone, PartialEq)]
pub struct Calls {
    /// Every target's status, with the failures the plans decided.
    pub targets: Vec<TargetStatus>,
    /// The targets to call now (indexes into `targets`).
    pub call: Vec<usize>,
    /// When an at-most-once call is among them: the status marking those calls as started,
    /// written before any call is made (conditionally, as every write), so that a crash
    /// leaves the mark and the next look knows the outcome is unknown.
    pub mark: Option<StatusedDeliveryStatus>,
}

/// What an at-most-once call found marked as started, with no outcome, fails with.
pub const UNCERTAIN: &str =
    "outcome unknown: the operator stopped while this call was in flight (onUncertain: fail)";

/// The calls to make at `now`, given each due target's `plans` (index, plan).
pub fn calls(
    current: &StatusedDeliveryStatus,
    mut targets: Vec<TargetStatus>,
    plans: impl IntoIterator<Item = (usize, Fate)>,
    now: jiff::Timestamp,
) -> Calls {
    let (mut call, mut marked) = (Vec::new(), Vec::new());
    for (i, plan) in plans {
        let t = &mut targets[i];
        match plan {
            Fate::Fail(error) => finish(t, DeliveryPhase::Failed, None, Some(error), now),
            Fate::Defer { until, why } => {
                t.next_attempt_at = Some(Time(retry::next_attempt(until, Duration::ZERO)));
                t.last_error = Some(why);
                t.waiting_for = None;
            }
            Fate::Hold { on, why } => {
                // Due at every look: what it waits for is an event, not a time.
                t.next_attempt_at = None;
                t.last_error = Some(why);
                t.waiting_for = Some(on);
            }
            Fate::Supersede { by } => {
                finish(t, DeliveryPhase::Superseded, None, None, now);
                t.waiting_for = None;
                t.superseded_by = Some(by);
            }
            // At most once, and a call was started that has no recorded outcome: the
            // operator stopped while it was in flight. Never call twice.
            Fate::Call { at_most_once: true } if t.call_started_at.is_some() => {
                finish(t, DeliveryPhase::Failed, None, Some(UNCERTAIN.into()), now);
            }
            Fate::Call { at_most_once } => {
                t.waiting_for = None;
                if at_most_once {
                    marked.push(i);
                }
                call.push(i);
            }
        }
    }
    let mark = (!marked.is_empty()).then(|| {
        let mut started = targets.clone();
        for &i in &marked {
            started[i].call_started_at = Some(Time(now));
        }
        delivery_status(current, started, now)
    });
    Calls {
        targets,
        call,
        mark,
    }
}

/// The status once the calls made at `now` had their `outcomes` (index, outcome).
pub fn status_after(
    current: &StatusedDeliveryStatus,
    mut targets: Vec<TargetStatus>,
    outcomes: impl IntoIterator<Item = (usize, Outcome)>,
    policy: &RetryPolicy,
    now: jiff::Timestamp,
) -> StatusedDeliveryStatus {
    for (i, outcome) in outcomes {
        policy.apply(&mut targets[i], outcome, now);
    }
    delivery_status(current, targets, now)
}

/// Whether `desired` says more than `current` did: a status that differs only in when
/// deferred targets are due again (a destination still busy, paused or out of its rate, for
/// the reason already shown) is not written; the next look comes from `desired` anyway.
pub fn worth_writing(current: &StatusedDeliveryStatus, desired: &StatusedDeliveryStatus) -> bool {
    let untimed = |s: &StatusedDeliveryStatus| {
        let mut s = s.clone();
        for t in &mut s.targets {
            t.next_attempt_at = None;
        }
        s
    };
    desired != current && untimed(desired) != untimed(current)
}

/// When to look at a delivery with `status` again: at its next attempt (10 ms at the
/// soonest), or after [`ORDER_POLL`] for a target its ordering key holds (the executor is
/// woken sooner when the key's order moves); `None` once finished (until it changes).
pub fn next_look(status: &StatusedDeliveryStatus, now: jiff::Timestamp) -> Option<Duration> {
    let next = status
        .targets
        .iter()
        .filter(|t| !t.phase.is_finished())
        .filter_map(|t| match (&t.next_attempt_at, &t.waiting_for) {
            (Some(at), _) => Some(at.0.duration_since(now)),
            (None, Some(_)) => jiff::SignedDuration::try_from(ORDER_POLL).ok(),
            (None, None) => None,
        })
        .min();
    match next {
        Some(wait) => Some(
            Duration::try_from(wait)
                .unwrap_or_default()
                .max(Duration::from_millis(10)),
        ),
        None if status.phase.is_finished() => None,
        None => Some(SETTLE),
    }
}

/// Every target of `d` as it stands, the unfinished ones failed with `why`.
fn failed(
    d: &StatusedDelivery,
    current: &StatusedDeliveryStatus,
    why: &str,
    now: jiff::Timestamp,
) -> Vec<TargetStatus> {
    let mut targets = retry::targets(&d.spec.matched, current);
    for t in targets.iter_mut().filter(|t| !t.phase.is_finished()) {
        finish(t, DeliveryPhase::Failed, None, Some(why.to_string()), now);
    }
    targets
}

/// How long ago the delivery was recorded.
fn age(d: &StatusedDelivery, now: jiff::Timestamp) -> Duration {
    d.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| now.duration_since(t.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

/// The calls answered with a rate limit (429, or a 403 that `send` read as GitHub's
/// secondary limit), by index, with the code.
pub fn rate_limited(outcomes: &[(usize, Outcome)]) -> Vec<(usize, u16)> {
    outcomes
        .iter()
        .filter_map(|(i, o)| match o {
            Outcome::Retry {
                code: Some(code @ (429 | 403)),
                ..
            } => Some((*i, *code)),
            _ => None,
        })
        .collect()
}

/// What the pure decisions need to know of a rendered plan.
pub fn fate_of(planned: &Planned<'_>) -> Fate {
    match planned {
        Planned::Http { at_most_once, .. } => Fate::Call {
            at_most_once: *at_most_once,
        },
        Planned::Kube { .. } => Fate::Call {
            at_most_once: false,
        },
        Planned::Gone(e) | Planned::Unbuildable(e) => Fate::Fail(e.clone()),
    }
}

#[cfg(test)]
mod tests {
    //! One delivery walked through every transition, as the loop would: each step's input is
    //! the status the step before wrote.

    use super::*;
    use crate::api::MatchedTarget;
    use crate::controller::retry::tests::policy;

    const ROUTE: &str = "compiled route";
    /// A rendered plan to call.
    const CALL: Fate = Fate::Call {
        at_most_once: false,
    };
    /// A rendered plan to call at most once (`onUncertain: fail`).
    const ONCE: Fate = Fate::Call { at_most_once: true };

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    /// A delivery recorded at `at(0)` that matched two targets, with `status`.
    fn delivery(status: Option<StatusedDeliveryStatus>) -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture("d", "r");
        d.metadata.creation_timestamp = Some(Time(at(0)));
        d.spec.matched = (0..2)
            .map(|target| MatchedTarget {
                rule: "a".into(),
                target,
                kind: "webhook".into(),
                ordering: None,
                follow: None,
                after: None,
            })
            .collect();
        d.status = status;
        d
    }

    /// The due targets of `d` at `now` (every target's status, the due ones' indexes).
    fn due(d: &StatusedDelivery, now: jiff::Timestamp) -> (Vec<TargetStatus>, Vec<usize>) {
        match decide(observe(d), now) {
            Step::Render { targets, due, .. } => (targets, due),
            other => panic!("nothing due at {now}: {other:?}"),
        }
    }

    fn observe(d: &StatusedDelivery) -> Observed<'_, &'static str> {
        Observed {
            delivery: d,
            unrecorded: None,
            route: Ok(ROUTE),
            writes_backlogged: false,
            max_pending_age: Duration::from_secs(600),
        }
    }

    fn ok() -> Outcome {
        Outcome::Succeeded {
            code: Some(204),
            body: vec![],
            created: None,
            response_id: None,
        }
    }

    fn unavailable(after: Option<u64>) -> Outcome {
        Outcome::Retry {
            code: Some(503),
            error: "HTTP 503".into(),
            after: after.map(Duration::from_secs),
        }
    }

    /// The first round at `at(1)`: target 0 succeeded, target 1 is to be retried.
    fn half_done() -> StatusedDeliveryStatus {
        run(
            &delivery(None),
            call_all(false),
            vec![(0, ok()), (1, unavailable(None))],
            at(1),
        )
    }

    fn call_all(at_most_once: bool) -> Vec<(usize, Fate)> {
        vec![
            (0, Fate::Call { at_most_once }),
            (1, Fate::Call { at_most_once }),
        ]
    }

    /// Decides at `now`, renders the due targets as `plans` say, and records the calls'
    /// `outcomes`, as the loop does: the status it writes. (Plans and outcomes of targets
    /// that are not due, or not called, are never used.)
    fn run(
        d: &StatusedDelivery,
        plans: Vec<(usize, Fate)>,
        outcomes: Vec<(usize, Outcome)>,
        now: jiff::Timestamp,
    ) -> StatusedDeliveryStatus {
        let (targets, due) = due(d, now);
        let current = d.status.clone().unwrap_or_default();
        let plans = plans.into_iter().filter(|(i, _)| due.contains(i));
        let calls = calls(&current, targets, plans, now);
        let outcomes = outcomes.into_iter().filter(|(i, _)| calls.call.contains(i));
        status_after(&current, calls.targets, outcomes, &policy(), now)
    }

    fn phases(s: &StatusedDeliveryStatus) -> Vec<DeliveryPhase> {
        s.targets.iter().map(|t| t.phase).collect()
    }

    #[test]
    fn pending_every_target_is_due_and_rendered_for_the_route() {
        let d = delivery(None);
        match decide(observe(&d), at(1)) {
            Step::Render {
                route,
                targets,
                due,
            } => {
                assert_eq!(route, ROUTE);
                assert_eq!(due, [0, 1]);
                assert!(targets.iter().all(|t| t.phase == DeliveryPhase::Pending));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calling_then_recorded_succeeded_and_finished() {
        let d = delivery(None);
        let s = run(&d, call_all(false), vec![(0, ok()), (1, ok())], at(1));
        assert_eq!(s.phase, DeliveryPhase::Succeeded);
        assert_eq!((s.attempts, s.completed_at.clone()), (2, Some(Time(at(1)))));
        // Recorded: the next look finds it finished, and does nothing.
        let done = delivery(Some(s));
        assert_eq!(decide(observe(&done), at(2)), Step::Idle);
        assert_eq!(next_look(done.status.as_ref().unwrap(), at(2)), None);
    }

    #[test]
    fn a_retry_waits_for_its_backoff_and_only_the_unfinished_target_is_called_again() {
        let s = half_done();
        assert_eq!(s.phase, DeliveryPhase::Running);
        assert_eq!(
            phases(&s),
            [DeliveryPhase::Succeeded, DeliveryPhase::Running]
        );
        let retry_at = s.targets[1].next_attempt_at.clone().unwrap().0;
        // base 2 s with jitter, rounded up to a whole second
        assert!((at(3)..=at(5)).contains(&retry_at), "{retry_at}");
        let wait = next_look(&s, at(1)).unwrap();
        assert!(wait >= Duration::from_secs(2), "{wait:?}");

        let backing_off = delivery(Some(s));
        match decide(observe(&backing_off), at(2)) {
            Step::Wait(w) => assert!(w >= Duration::from_secs(1), "{w:?}"),
            other => panic!("{other:?}"),
        }
        let (_, due_now) = due(&backing_off, retry_at);
        assert_eq!(due_now, [1], "the succeeded target is never called again");
        let s = run(&backing_off, vec![(1, CALL)], vec![(1, ok())], retry_at);
        assert_eq!(s.phase, DeliveryPhase::Succeeded);
        assert_eq!(s.targets[1].attempts, 2);
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let d = delivery(None);
        let s = run(
            &d,
            call_all(false),
            vec![(0, ok()), (1, unavailable(Some(30)))],
            at(1),
        );
        assert_eq!(s.targets[1].next_attempt_at, Some(Time(at(31))));
        let waiting = delivery(Some(s));
        assert!(matches!(decide(observe(&waiting), at(30)), Step::Wait(_)));
        assert!(matches!(
            decide(observe(&waiting), at(31)),
            Step::Render { .. }
        ));
    }

    #[test]
    fn failed_for_good_or_after_max_attempts() {
        let d = delivery(None);
        let gone = Outcome::failed(Some(404), "HTTP 404".into());
        let s = run(&d, call_all(false), vec![(0, ok()), (1, gone)], at(1));
        assert_eq!(s.phase, DeliveryPhase::Failed);
        assert_eq!(s.targets[1].last_error.as_deref(), Some("HTTP 404"));

        let mut d = delivery(None);
        let mut now = at(1);
        for _ in 0..3 {
            let s = run(
                &d,
                call_all(false),
                vec![(0, unavailable(None)), (1, ok())],
                now,
            );
            now = s.targets[0].next_attempt_at.clone().map_or(now, |t| t.0);
            d = delivery(Some(s));
        }
        let s = d.status.unwrap();
        assert_eq!(s.phase, DeliveryPhase::Failed);
        assert_eq!(s.targets[0].attempts, 3);
        assert_eq!(
            s.targets[1].attempts, 1,
            "the succeeded target was called once"
        );
        assert!(
            s.targets[0]
                .last_error
                .as_deref()
                .unwrap()
                .ends_with("(gave up after 3 attempts)")
        );
    }

    #[test]
    fn a_plan_that_cannot_be_made_fails_without_a_call() {
        let d = delivery(None);
        let (targets, _) = due(&d, at(1));
        let plans = vec![
            (
                0,
                Fate::Fail("rule a target 0 (webhook) is no longer in the route".into()),
            ),
            (1, CALL),
        ];
        let c = calls(&StatusedDeliveryStatus::default(), targets, plans, at(1));
        assert_eq!(c.call, [1]);
        assert_eq!(c.mark, None, "nothing at most once: no extra write");
        assert_eq!(c.targets[0].phase, DeliveryPhase::Failed);
        assert_eq!(c.targets[0].attempts, 0);
    }

    #[test]
    fn a_deferred_call_is_not_made_nor_counted_and_is_due_when_its_destination_allows() {
        let d = delivery(None);
        let (targets, _) = due(&d, at(1));
        let why = "DestinationPaused: the target's host asked to be left alone (HTTP 429)";
        let plans = vec![
            (
                0,
                Fate::Defer {
                    until: at(6),
                    why: why.into(),
                },
            ),
            (1, CALL),
        ];
        let c = calls(&StatusedDeliveryStatus::default(), targets, plans, at(1));
        assert_eq!(c.call, [1]);
        let s = status_after(
            &StatusedDeliveryStatus::default(),
            c.targets,
            vec![(1, ok())],
            &policy(),
            at(1),
        );
        assert_eq!(s.targets[0].attempts, 0, "a deferred call is no attempt");
        assert_eq!(s.targets[0].phase, DeliveryPhase::Pending);
        assert_eq!(
            s.targets[0].last_error.as_deref(),
            Some(why),
            "the wait is visible"
        );
        assert_eq!(s.phase, DeliveryPhase::Running);
        let waiting = delivery(Some(s));
        assert!(matches!(decide(observe(&waiting), at(5)), Step::Wait(_)));
        assert_eq!(due(&waiting, at(6)).1, [0]);
    }

    #[test]
    fn a_call_deferred_again_for_the_same_reason_is_not_written_again() {
        let d = delivery(None);
        let (targets, _) = due(&d, at(1));
        let defer = |until| Fate::Defer {
            until,
            why: "DestinationBusy: 1 calls to the target's host in flight (maxConcurrent)".into(),
        };
        let none = StatusedDeliveryStatus::default();
        let c = calls(&none, targets, vec![(0, defer(at(2))), (1, CALL)], at(1));
        let first = status_after(&none, c.targets, vec![(1, ok())], &policy(), at(1));
        assert!(worth_writing(&none, &first), "the wait is shown once");
        let waiting = delivery(Some(first.clone()));
        let (targets, _) = due(&waiting, at(2));
        let c = calls(&first, targets, vec![(0, defer(at(3)))], at(2));
        let again = status_after(&first, c.targets, vec![], &policy(), at(2));
        assert_ne!(again, first, "due later");
        assert!(!worth_writing(&first, &again), "only the time moved");
        assert_eq!(next_look(&again, at(2)), Some(Duration::from_secs(1)));
        let c = calls(&first, again.targets.clone(), vec![(0, CALL)], at(3));
        let done = status_after(&first, c.targets, vec![(0, ok())], &policy(), at(3));
        assert!(worth_writing(&first, &done), "an outcome is always written");
    }

    #[test]
    fn an_ordering_hold_waits_for_a_wake_and_a_superseded_target_finishes_uncalled() {
        let d = delivery(None);
        let (targets, _) = due(&d, at(1));
        let hold = Fate::Hold {
            on: "earlier".into(),
            why: "WaitingForEarlierEvent: delivery earlier ...".into(),
        };
        let none = StatusedDeliveryStatus::default();
        let c = calls(&none, targets, vec![(0, hold), (1, CALL)], at(1));
        assert_eq!(c.call, [1]);
        let s = status_after(&none, c.targets, vec![(1, ok())], &policy(), at(1));
        let held = &s.targets[0];
        assert_eq!((held.phase, held.attempts), (DeliveryPhase::Pending, 0));
        assert_eq!(held.waiting_for.as_deref(), Some("earlier"));
        assert_eq!(
            held.next_attempt_at, None,
            "due at every look: a wake is enough"
        );
        assert_eq!(next_look(&s, at(1)), Some(ORDER_POLL), "or the poll");
        let waiting = delivery(Some(s.clone()));
        assert_eq!(due(&waiting, at(2)).1, [0]);

        // A newer event succeeded meanwhile (latestWins): not called, finished, says by whom.
        let (targets, _) = due(&waiting, at(2));
        let by = Fate::Supersede { by: "newer".into() };
        let c = calls(&s, targets, vec![(0, by)], at(2));
        assert!(c.call.is_empty());
        let done = status_after(&s, c.targets, vec![], &policy(), at(2));
        let t = &done.targets[0];
        assert_eq!(t.phase, DeliveryPhase::Superseded);
        assert_eq!(
            (t.superseded_by.as_deref(), t.waiting_for.as_deref()),
            (Some("newer"), None)
        );
        assert_eq!(
            done.phase,
            DeliveryPhase::Succeeded,
            "the other target was called"
        );
        assert_eq!(next_look(&done, at(2)), None);
    }

    #[test]
    fn at_most_once_calls_are_marked_before_they_are_made() {
        let d = delivery(None);
        let (targets, _) = due(&d, at(1));
        let plans = vec![(0, ONCE), (1, CALL)];
        let c = calls(&StatusedDeliveryStatus::default(), targets, plans, at(1));
        assert_eq!(c.call, [0, 1]);
        let mark = c.mark.expect("a mark to write first");
        assert_eq!(mark.phase, DeliveryPhase::Running);
        assert_eq!(mark.targets[0].call_started_at, Some(Time(at(1))));
        assert_eq!(mark.targets[1].call_started_at, None);
        // The outcome clears the mark.
        let s = status_after(
            &mark,
            c.targets,
            vec![(0, ok()), (1, ok())],
            &policy(),
            at(1),
        );
        assert!(s.targets.iter().all(|t| t.call_started_at.is_none()));
        assert_eq!(s.phase, DeliveryPhase::Succeeded);
    }

    #[test]
    fn uncertain_after_a_crash_an_at_most_once_call_fails_instead_of_repeating() {
        // The operator stopped after writing the mark, before the outcome.
        let d = delivery(None);
        let (targets, _) = due(&d, at(1));
        let mark = calls(
            &StatusedDeliveryStatus::default(),
            targets,
            call_all(true),
            at(1),
        )
        .mark
        .unwrap();
        let after_crash = delivery(Some(mark));
        let (targets, due) = due(&after_crash, at(9));
        let c = calls(
            after_crash.status.as_ref().unwrap(),
            targets,
            due.iter().map(|&i| (i, ONCE)),
            at(9),
        );
        assert!(c.call.is_empty(), "never called twice");
        let s = status_after(
            after_crash.status.as_ref().unwrap(),
            c.targets,
            vec![],
            &policy(),
            at(9),
        );
        assert_eq!(s.phase, DeliveryPhase::Failed);
        assert_eq!(s.targets[0].last_error.as_deref(), Some(UNCERTAIN));

        // Without onUncertain: fail, the call is made again (at least once).
        let c = calls(
            after_crash.status.as_ref().unwrap(),
            s.targets.clone(),
            [(0, CALL)],
            at(9),
        );
        assert_eq!(c.call, [0]);
    }

    #[test]
    fn unrecorded_outcomes_are_written_and_nothing_is_called() {
        let d = delivery(None);
        let s = run(&d, call_all(false), vec![(0, ok()), (1, ok())], at(1));
        let mut o = observe(&d);
        o.unrecorded = Some(&s);
        assert_eq!(decide(o, at(2)), Step::Write(s.clone()));
    }

    #[test]
    fn route_gone_or_re_created_gives_up_every_unfinished_target() {
        let s = half_done();
        let d = delivery(Some(s));
        for (check, reason) in [
            (RouteCheck::Gone, "RouteGone: route r no longer exists"),
            (
                RouteCheck::ReCreated,
                "RouteGone: route r was deleted and created again",
            ),
        ] {
            let mut o = observe(&d);
            o.route = Err(check);
            let Step::GiveUp { status, why } = decide(o, at(2)) else {
                panic!("{check:?}")
            };
            assert!(why.starts_with(reason), "{why}");
            assert_eq!(
                phases(&status),
                [DeliveryPhase::Succeeded, DeliveryPhase::Failed]
            );
            assert_eq!(status.phase, DeliveryPhase::Failed);
            assert_eq!(status.targets[1].last_error.as_deref(), Some(why.as_str()));
            assert_eq!(status.completed_at, Some(Time(at(2))));
        }
    }

    #[test]
    fn a_route_not_ready_is_waited_for_up_to_max_pending_age() {
        let d = delivery(None);
        let mut o = observe(&d);
        o.route = Err(RouteCheck::NotReady);
        assert_eq!(decide(o.clone(), at(600)), Step::Wait(NOT_READY));
        let Step::GiveUp { why, .. } = decide(o, at(601)) else {
            panic!()
        };
        assert!(why.starts_with("RouteNotReady: "), "{why}");
    }

    #[test]
    fn settling_routes_and_failing_writes_make_it_wait() {
        let d = delivery(None);
        let mut o = observe(&d);
        o.route = Err(RouteCheck::Settling);
        assert_eq!(decide(o, at(1)), Step::Wait(SETTLE));
        let mut o = observe(&d);
        o.writes_backlogged = true;
        assert_eq!(decide(o, at(1)), Step::Wait(SETTLE));
    }

    #[test]
    fn redelivery_reopens_a_finished_delivery_and_its_failed_targets_run_again() {
        let d = delivery(None);
        let gone = Outcome::failed(Some(404), "HTTP 404".into());
        let s = run(&d, call_all(false), vec![(0, ok()), (1, gone)], at(1));
        let mut finished = delivery(Some(s.clone()));
        assert_eq!(decide(observe(&finished), at(2)), Step::Idle);
        finished.metadata.annotations = Some(
            [(
                redeliver::ANNOTATION_REDELIVER.to_string(),
                "t1".to_string(),
            )]
            .into(),
        );
        assert_eq!(decide(observe(&finished), at(2)), Step::Reopen);

        let request = redeliver::requested(&finished).unwrap();
        let (reopened, rerun) = redeliver::reopen(&s, &request);
        assert_eq!(rerun, 1);
        let mut d = delivery(Some(reopened));
        d.metadata.annotations = finished.metadata.annotations.clone();
        let (_, due) = due(&d, at(3));
        assert_eq!(due, [1]);
        let s = run(&d, vec![(1, CALL)], vec![(1, ok())], at(3));
        assert_eq!(s.phase, DeliveryPhase::Succeeded);
        assert_eq!(s.redeliveries, 1);
        // The token is honoured: the annotation does not reopen it again.
        assert_eq!(decide(observe(&delivery_with(s, &d)), at(4)), Step::Idle);
    }

    fn delivery_with(status: StatusedDeliveryStatus, like: &StatusedDelivery) -> StatusedDelivery {
        let mut d = like.clone();
        d.status = Some(status);
        d
    }

    #[test]
    fn a_status_the_targets_imply_is_recorded_without_calls() {
        // Every target finished, but the phase says Running (written by an older version,
        // or by hand): the status is completed, nothing is called.
        let d = delivery(None);
        let mut s = run(&d, call_all(false), vec![(0, ok()), (1, ok())], at(1));
        s.phase = DeliveryPhase::Running;
        s.completed_at = None;
        let Step::Write(fixed) = decide(observe(&delivery(Some(s))), at(2)) else {
            panic!()
        };
        assert_eq!(fixed.phase, DeliveryPhase::Succeeded);
    }

    #[test]
    fn a_429_or_a_rate_limit_403_asks_its_destination_to_pause_and_nothing_else_does() {
        let retry = |code| Outcome::retry(code, "HTTP".into(), None);
        let outcomes = vec![
            (0, retry(Some(429))),
            (1, retry(Some(403))),
            (2, retry(Some(503))),
            (3, retry(None)),
            (4, Outcome::failed(Some(403), "HTTP 403".into())),
            (5, ok()),
        ];
        assert_eq!(
            rate_limited(&outcomes),
            [(0, 429), (1, 403)],
            "a 403 is a rate limit only when send read it as one (a retry), never a refusal"
        );
    }

    #[test]
    fn a_followed_run_is_read_when_due_and_waited_for_whatever_the_route() {
        let mut t = TargetStatus::pending(&MatchedTarget {
            rule: "a".into(),
            target: 0,
            kind: "tekton".into(),
            ordering: None,
            follow: None,
            after: None,
        });
        t.phase = DeliveryPhase::Running;
        t.next_attempt_at = Some(Time(at(10)));
        t.run = Some(crate::api::RunStatus::following(Time(at(600)), None));
        let mut d = delivery(None);
        d.spec.matched.truncate(1);
        d.status = Some(delivery_status(&Default::default(), vec![t], at(1)));
        let gone = |d| Observed {
            route: Err(RouteCheck::Gone),
            ..observe(d)
        };
        assert_eq!(
            decide(gone(&d), at(5)),
            Step::Wait(Duration::from_secs(5)),
            "the next read, not RouteGone"
        );
        match decide(gone(&d), at(10)) {
            Step::Follow { due, .. } => assert_eq!(due, vec![0]),
            other => panic!("a read is due: {other:?}"),
        }
    }
}
