//! How many calls at once a destination takes when its target declares no `maxConcurrent`:
//! a limit that adapts to its answers, so that a target that slows down under load is not
//! driven into timeouts (and the repeats a timeout makes), while a fast one is soon called
//! as fast as the executor can.
//!
//! Additive increase, multiplicative decrease, as TCP congestion control and Netflix's
//! `concurrency-limits` (its AIMD limit) do, with a latency signal as in TCP Vegas and
//! Envoy's adaptive concurrency filter:
//! - it starts at [`INITIAL`] and, until the first sign of overload, grows by one per fast
//!   answer (slow start: it doubles every round trip), then by one per round trip; only
//!   while at least half of it is in use, so that a quiet destination does not grow a limit
//!   it never tried;
//! - a timeout, a transport failure, a 429 or a 5xx halves it; an answer slower than
//!   [`TOLERANCE`] times the usual latency (plus [`SLACK`]) takes a fifth off. One decrease
//!   per round trip: answers to calls started before the last decrease were already
//!   counted by it;
//! - it stays within [`MIN`] and [`MAX`]. The usual latency is the fastest answer seen; when
//!   answers are still slow with the limit at its lowest, the target is slower for good,
//!   not queueing behind our calls, and the usual latency moves towards theirs.
//!
//! Pure: no clock but the instants it is given.

use std::time::{Duration, Instant};

/// The limit of a destination not heard from yet.
pub const INITIAL: f64 = 16.0;
/// The lowest limit: one call at a time still goes.
pub const MIN: f64 = 1.0;
/// The highest limit: as many as the executor works on at once by default.
pub const MAX: f64 = 256.0;
/// An answer this many times slower than the usual one says the target is queueing.
pub const TOLERANCE: f64 = 2.0;
/// ... and at least this much slower: on a busy machine a fast target's latency jitters by
/// milliseconds without any queue behind it.
pub const SLACK: Duration = Duration::from_millis(100);
/// How far a slow answer at the lowest limit moves the usual latency towards itself.
const DRIFT: f64 = 1.0 / 8.0;

/// What one answer says about the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It answered (2xx, or a refusal that says nothing about load), in this long.
    Answered(Duration),
    /// It timed out, failed to connect, or answered 429 or 5xx: it has too much to do.
    Overloaded,
    /// Nothing to learn (the call never reached it).
    Unknown,
}

/// The adaptive limit of one destination.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    limit: f64,
    /// The usual latency, once an answer came.
    usual: Option<Duration>,
    /// When it was last decreased: answers to calls started before that are not counted
    /// again.
    decreased_at: Option<Instant>,
    /// Whether it was ever decreased (the end of slow start).
    slow_start: bool,
}

impl Default for AdaptiveLimit {
    fn default() -> Self {
        Self {
            limit: INITIAL,
            usual: None,
            decreased_at: None,
            slow_start: true,
        }
    }
}

impl AdaptiveLimit {
    /// How many calls may be in flight now.
    pub fn limit(&self) -> u32 {
        // In [MIN, MAX], so the cast is exact.
        self.limit.floor() as u32
    }

    /// A call started at `started` got `answer`, now (`at`), with `in_flight` calls to the
    /// destination in flight (this one among them).
    pub fn learn(&mut self, answer: Answer, started: Instant, at: Instant, in_flight: u32) {
        let counted_before = self.decreased_at.is_some_and(|d| started < d);
        let latency = match answer {
            Answer::Unknown => return,
            Answer::Overloaded if !counted_before => return self.decrease(0.5, at),
            Answer::Overloaded => return,
            Answer::Answered(latency) => latency,
        };
        let usual = self.usual.map_or(latency, |u| u.min(latency));
        let queueing = latency > usual.mul_f64(TOLERANCE) + SLACK;
        self.usual = Some(if queueing && self.limit <= MIN {
            usual + (latency - usual).mul_f64(DRIFT)
        } else {
            usual
        });
        if queueing && !counted_before {
            self.decrease(0.8, at);
        } else if !queueing && f64::from(in_flight) * 2.0 >= self.limit {
            self.increase();
        }
    }

    fn increase(&mut self) {
        let step = if self.slow_start {
            1.0
        } else {
            1.0 / self.limit
        };
        self.limit = (self.limit + step).min(MAX);
    }

    fn decrease(&mut self, factor: f64, at: Instant) {
        self.limit = (self.limit * factor).max(MIN);
        self.decreased_at = Some(at);
        self.slow_start = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `l` learns `answer` for a call started at `started`, answered `after` it, with every
    /// call it allows in flight.
    fn busy(l: &mut AdaptiveLimit, answer: Answer, started: Instant, after: Duration) {
        let in_flight = l.limit();
        l.learn(answer, started, started + after, in_flight);
    }

    #[test]
    fn fast_answers_double_the_limit_each_round_trip_up_to_the_most() {
        let mut l = AdaptiveLimit::default();
        let t = Instant::now();
        for _ in 0..16 {
            busy(&mut l, Answer::Answered(ms(5)), t, ms(5));
        }
        assert_eq!(
            l.limit(),
            32,
            "one more per answer while nothing slowed down"
        );
        for _ in 0..1000 {
            busy(&mut l, Answer::Answered(ms(5)), t, ms(5));
        }
        assert_eq!(l.limit(), MAX as u32);
    }

    #[test]
    fn a_limit_grows_only_while_it_is_used() {
        let mut l = AdaptiveLimit::default();
        let t = Instant::now();
        for _ in 0..100 {
            l.learn(Answer::Answered(ms(5)), t, t + ms(5), 1);
        }
        assert_eq!(
            l.limit(),
            INITIAL as u32,
            "one call at a time says nothing of 17"
        );
    }

    #[test]
    fn overload_halves_the_limit_once_per_round_trip() {
        let mut l = AdaptiveLimit::default();
        let t = Instant::now();
        busy(&mut l, Answer::Overloaded, t, ms(100));
        assert_eq!(l.limit(), 8);
        // Calls started before that decrease, answered after it: already counted.
        for _ in 0..10 {
            busy(&mut l, Answer::Overloaded, t + ms(50), ms(100));
        }
        assert_eq!(l.limit(), 8, "one decrease for one round trip's timeouts");
        busy(&mut l, Answer::Overloaded, t + ms(200), ms(100));
        assert_eq!(l.limit(), 4, "a call started after it counts again");
        for i in 0..10 {
            busy(&mut l, Answer::Overloaded, t + ms(400 + i * 100), ms(50));
        }
        assert_eq!(l.limit(), MIN as u32, "never below one call at a time");
        busy(&mut l, Answer::Unknown, t + ms(2000), ms(50));
        assert_eq!(
            l.limit(),
            MIN as u32,
            "a call that never reached it says nothing"
        );
    }

    #[test]
    fn after_an_overload_the_limit_grows_by_one_per_round_trip() {
        let mut l = AdaptiveLimit::default();
        let t = Instant::now();
        busy(&mut l, Answer::Overloaded, t, ms(1));
        assert_eq!(l.limit(), 8);
        for _ in 0..9 {
            busy(&mut l, Answer::Answered(ms(5)), t + ms(2), ms(5));
        }
        assert_eq!(
            l.limit(),
            9,
            "a round trip's answers at 8 at once: one more"
        );
        for _ in 0..9 {
            busy(&mut l, Answer::Answered(ms(5)), t + ms(2), ms(5));
        }
        assert_eq!(l.limit(), 10, "and one more a round trip later, not nine");
    }

    #[test]
    fn a_slower_answer_within_the_tolerance_is_no_sign_of_a_queue() {
        let mut l = AdaptiveLimit::default();
        let t = Instant::now();
        busy(&mut l, Answer::Answered(ms(2)), t, ms(2));
        // 40 ms against 2 ms usual: jitter on a busy machine, under the slack.
        busy(&mut l, Answer::Answered(ms(40)), t, ms(40));
        assert_eq!(l.limit(), 18);
        busy(&mut l, Answer::Answered(ms(300)), t, ms(300));
        assert_eq!(
            l.limit(),
            14,
            "a fifth off for an answer well over the usual"
        );
    }

    #[test]
    fn a_target_slower_for_good_is_learnt() {
        let mut l = AdaptiveLimit::default();
        let mut t = Instant::now();
        busy(&mut l, Answer::Answered(ms(10)), t, ms(10));
        // From now on it takes 400 ms whatever the load: the limit falls to its lowest,
        // the usual latency follows, and the limit grows again.
        for _ in 0..200 {
            t += ms(400);
            busy(&mut l, Answer::Answered(ms(400)), t, ms(400));
        }
        assert!(
            l.limit() > 4,
            "grows again once 400 ms is usual: {}",
            l.limit()
        );
    }

    /// A target that works on `capacity` calls at once, each in `service`, queues the rest:
    /// a call in place `place` (from 1) of the line is answered after `service` times the
    /// rounds before it is served, plus its own.
    fn queueing_latency(place: u32, capacity: u32, service: Duration) -> Duration {
        service * place.div_ceil(capacity)
    }

    #[test]
    fn against_a_queueing_target_the_limit_settles_where_answers_stay_far_from_timeouts() {
        let (capacity, service, timeout) = (2, ms(100), Duration::from_secs(10));
        let mut l = AdaptiveLimit::default();
        let mut t = Instant::now();
        let mut slowest = Duration::ZERO;
        for call in 0..5000u32 {
            // Every slot in use, as under a flood of deliveries: the calls of one round
            // trip stand in line one behind the other.
            let latency = queueing_latency(call % l.limit() + 1, capacity, service);
            slowest = slowest.max(latency);
            let answer = if latency >= timeout {
                Answer::Overloaded
            } else {
                Answer::Answered(latency)
            };
            busy(&mut l, answer, t, latency);
            t += latency / l.limit();
        }
        assert!(
            slowest < timeout / 4,
            "no answer near the timeout: slowest {slowest:?}"
        );
        assert!(
            (2..=8).contains(&l.limit()),
            "near what it serves at once: {}",
            l.limit()
        );
    }
}
