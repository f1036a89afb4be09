//! Limits per destination, kept by the executor: how many calls to one destination are in
//! flight, how many it takes per minute, and until when it asked to be left alone (a 429, or
//! a documented rate-limit answer). The state is the executor's memory: a new leader starts
//! with no pauses and learns again from the first answer, which costs one call.
//!
//! A destination is a namespace and a URL's scheme, host and port. Targets of one team that
//! call the same host share its limits, because the services we call (GitHub, GitLab, Slack,
//! PagerDuty, ...) limit an account or a token across all its requests to that host. Two
//! namespaces never share one, even for the same host: one team's 429 must not pause another
//! team's calls made with other credentials.
//!
//! A target that declares no `maxConcurrent` gets a limit that adapts to how its
//! destination answers (adaptive_limit.rs): one that slows down under load gets fewer calls
//! at once instead of timeouts and the repeats they make.
//!
//! Bounded: at most [`MAX_DESTINATIONS`] are tracked, at most
//! [`MAX_DESTINATIONS_PER_NAMESPACE`] of them one namespace's; an idle one (no call in
//! flight, no pause ahead) is forgotten first. A namespace whose own destinations are all
//! busy waits with its calls to a new one (`DestinationsFull`), so that one team that pauses
//! thousands of hosts cannot push another team's destinations out of the table; only when
//! every tracked one is busy across many namespaces is a new destination called untracked
//! rather than refused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use super::wakeups::Wakeups;
use crate::adaptive_limit::{AdaptiveLimit, Answer};
use crate::api::StatusedDelivery;
use crate::targets::outcome::Outcome;
use crate::token_bucket::{Bucket, Limit};

/// The most destinations tracked at once.
pub const MAX_DESTINATIONS: usize = 4096;
/// The most destinations of one namespace tracked at once: a team's targets call a few
/// hosts (its CI, its chat, its incident service), and 16 teams at this bound still leave
/// room in the table.
pub const MAX_DESTINATIONS_PER_NAMESPACE: usize = 256;
/// The most deliveries a destination wakes when its calls end: beyond that, a delivery that
/// waits for it looks again at its next poll ([`BUSY_POLL`]).
pub const MAX_WAITING: usize = 1024;
/// When a delivery waiting for a busy destination looks again if no call's end woke it.
pub const BUSY_POLL: Duration = Duration::from_secs(5);

pub use crate::targets::kind::DestinationLimits;

/// Where a call goes: a namespace and a URL's scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub namespace: String,
    pub origin: String,
}

impl Destination {
    pub fn of(namespace: &str, url: &url::Url) -> Self {
        Self {
            namespace: namespace.to_string(),
            origin: url.origin().ascii_serialization(),
        }
    }
}

#[derive(Debug)]
struct State {
    in_flight: u32,
    paused_until: Option<jiff::Timestamp>,
    /// The answer that paused it (429, 403).
    paused_by: Option<u16>,
    bucket: Option<Bucket>,
    /// How many calls at once it takes when its target declares no `maxConcurrent`.
    adaptive: AdaptiveLimit,
    /// Deliveries that found it busy, woken one per call that ends (at most [`MAX_WAITING`]).
    waiting: VecDeque<ObjectRef<StatusedDelivery>>,
}

impl State {
    /// Why a call may not go at `now` (`at` on the monotonic clock), if it may not: a
    /// pause, `maxConcurrent` reached, or no token left of `ratePerMinute` (a token is taken
    /// when it may go). The reason never names the destination: a URL read from a Secret
    /// may hold its token in the host, and the reason is shown in the delivery's status.
    fn holds(
        &mut self,
        limits: DestinationLimits,
        now: jiff::Timestamp,
        at: Instant,
    ) -> Option<Admit> {
        let later = |until, why, reason| Some(Admit::Later { until, why, reason });
        if let Some(until) = self.paused_until.filter(|u| *u > now) {
            let code = self
                .paused_by
                .map_or(String::new(), |c| format!(" (HTTP {c})"));
            let why = format!(
                "DestinationPaused: the target's host asked to be left alone{code}; calls to it wait until {until}"
            );
            return later(until, why, "paused");
        }
        let poll = jiff::SignedDuration::try_from(BUSY_POLL).unwrap_or_default();
        let busy = |why| later(now + poll, why, "busy");
        match limits.max_concurrent {
            Some(max) if self.in_flight >= max => {
                return busy(format!(
                    "DestinationBusy: {max} calls to the target's host in flight (maxConcurrent)"
                ));
            }
            // The same words whatever the limit is now: a wait is written once, not each
            // time the limit moves.
            None if self.in_flight >= self.adaptive.limit() => {
                return busy(ADAPTIVE_BUSY.to_string());
            }
            _ => {}
        }
        let per_minute = limits.per_minute?;
        let limit = Limit {
            per_minute: f64::from(per_minute),
            burst: 1.0,
        };
        let bucket = self.bucket.get_or_insert_with(|| Bucket::full(limit, at));
        let wait = bucket.take(limit, at).err()?.max(Duration::from_millis(10));
        let why = format!(
            "DestinationRate: the target's host takes {per_minute} calls a minute (ratePerMinute)"
        );
        later(
            now + jiff::SignedDuration::try_from(wait).unwrap_or_default(),
            why,
            "rate",
        )
    }
}

/// Why a call waits for a destination at its adaptive limit.
pub const ADAPTIVE_BUSY: &str = "DestinationBusy: the target's host is answering slower or failing under the calls in flight, so fewer go at once; set maxConcurrent to fix the number";

/// Whether a call may go now.
#[derive(Debug)]
pub enum Admit {
    /// Go; the lease counts the call in flight until dropped.
    Go(Lease),
    /// Not before `until`: the destination paused, at its most calls at once, or out of its
    /// rate; `why` says which, for the target's status.
    Later {
        until: jiff::Timestamp,
        why: String,
        reason: &'static str,
    },
}

/// The executor's destinations, and where a call that ends wakes a delivery waiting for it.
#[derive(Debug, Default, Clone)]
pub struct Destinations {
    map: Arc<Mutex<HashMap<Destination, State>>>,
    wakeups: Arc<Wakeups>,
}

/// A call in flight to a destination; dropping it ends the call (and wakes a delivery that
/// waits for the destination), [`Lease::answered`] ends it with what its answer says about
/// the destination.
#[derive(Debug)]
pub struct Lease {
    destination: Option<Destination>,
    of: Destinations,
}

impl Lease {
    /// The call, started at `started`, got `outcome`: its destination's adaptive limit
    /// learns from it, then the call ends.
    pub fn answered(self, outcome: &Outcome, started: Instant) {
        let at = Instant::now();
        if let Some(d) = &self.destination {
            let mut map = self.of.lock();
            if let Some(s) = map.get_mut(d) {
                let answer = answer_of(outcome, at.saturating_duration_since(started));
                s.adaptive.learn(answer, started, at, s.in_flight);
            }
        }
    }
}

/// What an outcome says about its destination's load: a timeout, a failed connection, a
/// 429 or a 5xx that it has too much to do; any other answer how fast it answers; a call
/// refused before it went (the outbound guard) nothing.
pub fn answer_of(outcome: &Outcome, latency: Duration) -> Answer {
    let overloaded = |code: Option<u16>| matches!(code, None | Some(429 | 500..=599));
    match outcome {
        Outcome::Succeeded { .. } => Answer::Answered(latency),
        Outcome::Retry { code, .. } if overloaded(*code) => Answer::Overloaded,
        Outcome::Failed { code: None, .. } => Answer::Unknown,
        Outcome::Failed {
            code: Some(code), ..
        } if overloaded(Some(*code)) => Answer::Overloaded,
        Outcome::Retry { .. } | Outcome::Failed { .. } => Answer::Answered(latency),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(d) = self.destination.take() else {
            return;
        };
        let mut map = self.of.lock();
        if let Some(s) = map.get_mut(&d) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if let Some(next) = s.waiting.pop_front() {
                self.of.wakeups.wake(&[next]);
            }
        }
    }
}

impl Destinations {
    /// Destinations that wake the deliveries waiting for them through `wakeups`.
    pub fn new(wakeups: Arc<Wakeups>) -> Self {
        Self {
            map: Arc::default(),
            wakeups,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Destination, State>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `delivery` found `d` busy: it is woken when one of `d`'s calls ends (in the order they
    /// came, each once), unless [`MAX_WAITING`] already wait.
    pub fn wake_when_free(&self, d: &Destination, delivery: ObjectRef<StatusedDelivery>) {
        if let Some(s) = self.lock().get_mut(d)
            && s.waiting.len() < MAX_WAITING
            && !s.waiting.contains(&delivery)
        {
            s.waiting.push_back(delivery);
        }
    }

    /// Whether a call to `d`, whose target declares `limits`, may go at `now` (`at`: the
    /// same moment on the monotonic clock, for the rate).
    pub fn admit(
        &self,
        d: &Destination,
        limits: DestinationLimits,
        now: jiff::Timestamp,
        at: Instant,
    ) -> Admit {
        let mut map = self.lock();
        if !map.contains_key(d) {
            if !make_room_in(&mut map, &d.namespace, now) {
                return Admit::Later {
                    until: now + jiff::SignedDuration::from_secs(1),
                    why: format!(
                        "DestinationsFull: this namespace has {MAX_DESTINATIONS_PER_NAMESPACE} destinations with calls in flight or paused; calls to another wait for one of them"
                    ),
                    reason: "full",
                };
            }
            if !make_room(&mut map, now) {
                return Admit::Go(self.lease(None));
            }
        }
        let s = map.entry(d.clone()).or_insert(State {
            in_flight: 0,
            paused_until: None,
            paused_by: None,
            bucket: None,
            adaptive: AdaptiveLimit::default(),
            waiting: VecDeque::new(),
        });
        if let Some(later) = s.holds(limits, now, at) {
            return later;
        }
        s.in_flight += 1;
        Admit::Go(self.lease(Some(d.clone())))
    }

    /// `d` answered `code` asking to be left alone until `until`: every call to it waits.
    pub fn pause(&self, d: &Destination, until: jiff::Timestamp, code: Option<u16>) {
        let mut map = self.lock();
        if let Some(s) = map.get_mut(d)
            && s.paused_until.is_none_or(|u| u < until)
        {
            s.paused_until = Some(until);
            s.paused_by = code;
        }
    }

    /// How many destinations are tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lease(&self, destination: Option<Destination>) -> Lease {
        Lease {
            destination,
            of: self.clone(),
        }
    }
}

fn idle(s: &State, now: jiff::Timestamp) -> bool {
    s.in_flight == 0 && s.paused_until.is_none_or(|u| u <= now)
}

/// Room for one more destination of `namespace`: drops its idle ones when it has its most;
/// `false` when none of them is idle. O(tracked), only when a new destination comes.
fn make_room_in(
    map: &mut HashMap<Destination, State>,
    namespace: &str,
    now: jiff::Timestamp,
) -> bool {
    let count =
        |map: &HashMap<Destination, State>| map.keys().filter(|d| d.namespace == namespace).count();
    if count(map) < MAX_DESTINATIONS_PER_NAMESPACE {
        return true;
    }
    map.retain(|d, s| d.namespace != namespace || !idle(s, now));
    count(map) < MAX_DESTINATIONS_PER_NAMESPACE
}

/// Room for one more destination: drops idle ones (no call in flight, no pause ahead) when
/// full; `false` when none is idle.
fn make_room(map: &mut HashMap<Destination, State>, now: jiff::Timestamp) -> bool {
    if map.len() < MAX_DESTINATIONS {
        return true;
    }
    map.retain(|_, s| !idle(s, now));
    map.len() < MAX_DESTINATIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn dest(ns: &str, url: &str) -> Destination {
        Destination::of(ns, &url.parse().unwrap())
    }

    fn goes(a: &Admit) -> bool {
        matches!(a, Admit::Go(_))
    }

    #[test]
    fn a_pause_holds_every_call_to_the_destination_and_no_other() {
        let ds = Destinations::default();
        let github = dest("team-a", "https://api.github.com/repos/a/b/dispatches");
        let same_host = dest("team-a", "https://api.github.com/repos/c/d/dispatches");
        let other_team = dest("team-b", "https://api.github.com/repos/a/b/dispatches");
        let slack = dest("team-a", "https://hooks.slack.com/services/x");
        let none = DestinationLimits::default();
        let t = Instant::now();
        assert!(goes(&ds.admit(&github, none, at(0), t)));
        ds.pause(&github, at(5), Some(429));
        match ds.admit(&same_host, none, at(1), t) {
            Admit::Later { until, why, reason } => {
                assert_eq!((until, reason), (at(5), "paused"));
                assert!(why.contains("HTTP 429"), "{why}");
                assert!(!why.contains("github.com"), "no host in a status: {why}");
            }
            Admit::Go(_) => panic!("paused until at(5)"),
        }
        assert!(
            goes(&ds.admit(&other_team, none, at(1), t)),
            "another team is not paused"
        );
        assert!(
            goes(&ds.admit(&slack, none, at(1), t)),
            "another host is not paused"
        );
        assert!(
            goes(&ds.admit(&github, none, at(5), t)),
            "the pause ends at its time"
        );
    }

    #[test]
    fn a_shorter_pause_never_shortens_a_longer_one() {
        let ds = Destinations::default();
        let d = dest("ns", "http://127.0.0.1:8080/x");
        let t = Instant::now();
        drop(ds.admit(&d, DestinationLimits::default(), at(0), t));
        ds.pause(&d, at(60), Some(403));
        ds.pause(&d, at(2), Some(429));
        assert!(!goes(&ds.admit(
            &d,
            DestinationLimits::default(),
            at(30),
            t
        )));
    }

    #[test]
    fn max_concurrent_counts_calls_in_flight_until_they_end() {
        let ds = Destinations::default();
        let d = dest("ns", "http://127.0.0.1:8080/x");
        let two = DestinationLimits {
            max_concurrent: Some(2),
            per_minute: None,
        };
        let t = Instant::now();
        let a = ds.admit(&d, two, at(0), t);
        let b = ds.admit(&d, two, at(0), t);
        assert!(goes(&a) && goes(&b));
        match ds.admit(&d, two, at(0), t) {
            Admit::Later { reason, .. } => assert_eq!(reason, "busy"),
            Admit::Go(_) => panic!("two in flight"),
        }
        drop(a);
        assert!(goes(&ds.admit(&d, two, at(0), t)));
    }

    #[test]
    fn a_rate_spaces_calls_out() {
        let ds = Destinations::default();
        let d = dest("ns", "http://127.0.0.1:8080/x");
        let one_a_second = DestinationLimits {
            max_concurrent: None,
            per_minute: Some(60),
        };
        let t = Instant::now();
        assert!(goes(&ds.admit(&d, one_a_second, at(0), t)));
        match ds.admit(&d, one_a_second, at(0), t) {
            Admit::Later { until, reason, .. } => {
                assert_eq!(reason, "rate");
                assert!(until > at(0) && until <= at(1), "{until}");
            }
            Admit::Go(_) => panic!("one a second"),
        }
        assert!(goes(&ds.admit(
            &d,
            one_a_second,
            at(1),
            t + Duration::from_secs(1)
        )));
    }

    #[test]
    fn without_max_concurrent_a_destination_takes_fewer_calls_once_they_time_out() {
        let ds = Destinations::default();
        let d = dest("ns", "http://127.0.0.1:8080/x");
        let none = DestinationLimits::default();
        let t = Instant::now();
        let mut leases: Vec<Lease> = (0..crate::adaptive_limit::INITIAL as usize)
            .map(|_| match ds.admit(&d, none, at(0), t) {
                Admit::Go(lease) => lease,
                Admit::Later { why, .. } => panic!("{why}"),
            })
            .collect();
        let Admit::Later { why, reason, .. } = ds.admit(&d, none, at(0), t) else {
            panic!("at its limit")
        };
        assert_eq!((why.as_str(), reason), (ADAPTIVE_BUSY, "busy"));
        let timed_out = Outcome::retry(None, "no response within 10s".into(), None);
        leases.pop().unwrap().answered(&timed_out, t);
        let free = (0..16)
            .take_while(|_| goes(&ds.admit(&d, none, at(0), t)))
            .count();
        assert_eq!(free, 0, "15 in flight against a limit of 8 now");
        leases.truncate(7);
        assert!(goes(&ds.admit(&d, none, at(0), t)), "the eighth goes");
    }

    #[test]
    fn a_call_that_ends_wakes_one_delivery_that_found_its_destination_busy() {
        let wakeups = Arc::new(Wakeups::default());
        let (tx, mut woken) = futures::channel::mpsc::unbounded();
        wakeups.connect(tx);
        let ds = Destinations::new(wakeups);
        let d = dest("ns", "http://127.0.0.1:8080/x");
        let one = DestinationLimits {
            max_concurrent: Some(1),
            per_minute: None,
        };
        let t = Instant::now();
        let Admit::Go(lease) = ds.admit(&d, one, at(0), t) else {
            panic!("the first goes")
        };
        let Admit::Later { until, .. } = ds.admit(&d, one, at(0), t) else {
            panic!("busy")
        };
        assert_eq!(until, at(5), "polls at BUSY_POLL if nothing wakes it");
        for name in ["second", "third", "second"] {
            ds.wake_when_free(&d, ObjectRef::new(name).within("ns"));
        }
        assert!(woken.try_recv().is_err(), "nothing ended yet");
        drop(lease);
        assert_eq!(woken.try_recv().ok().map(|r| r.name), Some("second".into()));
        assert!(woken.try_recv().is_err(), "one call ended: one woken");
        let Admit::Go(lease) = ds.admit(&d, one, at(0), t) else {
            panic!("free again")
        };
        lease.answered(&Outcome::failed(Some(400), "HTTP 400".into()), t);
        assert_eq!(woken.try_recv().ok().map(|r| r.name), Some("third".into()));
    }

    #[test]
    fn what_an_answer_says_of_its_destinations_load() {
        let latency = Duration::from_millis(30);
        let answer = |o: &Outcome| answer_of(o, latency);
        let ok = Outcome::Succeeded {
            code: Some(204),
            body: Vec::new(),
            created: None,
            response_id: None,
        };
        assert_eq!(answer(&ok), Answer::Answered(latency));
        for overloaded in [
            Outcome::retry(None, "no response within 10s".into(), None),
            Outcome::retry(Some(429), "HTTP 429".into(), None),
            Outcome::retry(Some(503), "HTTP 503".into(), None),
            Outcome::failed(Some(500), "HTTP 500".into()),
        ] {
            assert_eq!(answer(&overloaded), Answer::Overloaded, "{overloaded:?}");
        }
        assert_eq!(
            answer(&Outcome::failed(Some(404), "HTTP 404".into())),
            Answer::Answered(latency),
            "a refusal is an answer, and a fast one"
        );
        assert_eq!(
            answer(&Outcome::failed(
                None,
                "refused by the outbound guard".into()
            )),
            Answer::Unknown,
            "a call that never went says nothing"
        );
    }

    /// Destination `i` of a table filled by 16 namespaces, each at its bound.
    fn spread(i: usize) -> Destination {
        let ns = format!("ns-{}", i / MAX_DESTINATIONS_PER_NAMESPACE);
        dest(&ns, &format!("http://h{i}.example/"))
    }

    #[test]
    fn idle_destinations_are_forgotten_when_the_table_is_full() {
        let ds = Destinations::default();
        let none = DestinationLimits::default();
        let t = Instant::now();
        let held: Vec<Admit> = (0..MAX_DESTINATIONS)
            .map(|i| ds.admit(&spread(i), none, at(0), t))
            .collect();
        assert!(held.iter().all(goes));
        // Every tracked destination has a call in flight: a new one goes, untracked.
        let new = dest("another-team", "http://new.example/");
        assert!(goes(&ds.admit(&new, none, at(0), t)));
        assert_eq!(ds.len(), MAX_DESTINATIONS);
        drop(held);
        assert!(goes(&ds.admit(&new, none, at(0), t)));
        assert_eq!(ds.len(), 1, "the idle ones were forgotten");
    }

    #[test]
    fn one_namespace_that_pauses_its_most_destinations_waits_and_others_stay_tracked() {
        let ds = Destinations::default();
        let none = DestinationLimits::default();
        let t = Instant::now();
        for i in 0..MAX_DESTINATIONS_PER_NAMESPACE {
            let d = dest("attacker", &format!("http://h{i}.example/"));
            drop(ds.admit(&d, none, at(0), t));
            ds.pause(&d, at(3600), Some(429));
        }
        match ds.admit(
            &dest("attacker", "http://one-more.example/"),
            none,
            at(1),
            t,
        ) {
            Admit::Later { reason, why, .. } => {
                assert_eq!(reason, "full");
                assert!(why.contains("DestinationsFull"), "{why}");
            }
            Admit::Go(_) => panic!("the attacker's own bound holds"),
        }
        // Another team's destination is tracked, so its own limits hold.
        let victim = dest("victim", "http://ci.example/");
        let one = DestinationLimits {
            max_concurrent: Some(1),
            ..DestinationLimits::default()
        };
        let _first = ds.admit(&victim, one, at(1), t);
        assert!(
            !goes(&ds.admit(&victim, one, at(1), t)),
            "maxConcurrent still holds for the victim"
        );
        // Once the pauses are over, the attacker's idle destinations make room.
        assert!(goes(&ds.admit(
            &dest("attacker", "http://one-more.example/"),
            none,
            at(3601),
            t
        )));
    }
}
