//! Liveness: whether each watch the operator depends on is working.
//!
//! A watch that fails is retried with backoff by kube's watcher, and its relist triggers
//! every object again (see `controller::triggers`), so a short outage heals by itself. One
//! that keeps failing for longer than `--unhealthy-after` makes `/healthz` fail, with a log
//! line and the `statused_watch_failing` gauge, so that Kubernetes restarts the process
//! instead of leaving an executor that silently does nothing.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A watch that resumes emits nothing until something changes, so recovery cannot wait for
/// an event: a failing streak also ends once no error came for longer than the watcher's
/// longest backoff (30 s) and a margin. A watch still failing errs at least that often.
pub const QUIET_ENDS_STREAK: Duration = Duration::from_secs(35);

/// A run of failures: the first and the latest.
#[derive(Debug, Clone, Copy)]
struct Streak {
    since: Instant,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct Health {
    /// Per watch: its current run of failures, if any.
    failing: Mutex<BTreeMap<&'static str, Option<Streak>>>,
}

impl Health {
    /// `watch` delivered an event or a list.
    pub fn ok(&self, watch: &'static str) {
        self.map().insert(watch, None);
    }

    /// `watch` failed at `now` (the first failure of a run starts the clock).
    pub fn failed(&self, watch: &'static str, now: Instant) {
        let mut map = self.map();
        let streak = map.entry(watch).or_insert(None);
        *streak = match *streak {
            Some(s) if now.saturating_duration_since(s.last) <= QUIET_ENDS_STREAK => {
                Some(Streak { last: now, ..s })
            }
            _ => Some(Streak {
                since: now,
                last: now,
            }),
        };
    }

    /// The watch failing the longest, if for more than `limit` at `now`.
    pub fn failing_longer_than(
        &self,
        limit: Duration,
        now: Instant,
    ) -> Option<(&'static str, Duration)> {
        self.map()
            .iter()
            .filter_map(|(w, streak)| {
                let s = (*streak)?;
                let ongoing = now.saturating_duration_since(s.last) <= QUIET_ENDS_STREAK;
                ongoing.then(|| (*w, now.saturating_duration_since(s.since)))
            })
            .filter(|(_, d)| *d > limit)
            .max_by_key(|(_, d)| *d)
    }

    /// How many watches are failing at `now`.
    pub fn failing(&self, now: Instant) -> usize {
        self.map()
            .values()
            .filter(|s| {
                s.is_some_and(|s| now.saturating_duration_since(s.last) <= QUIET_ENDS_STREAK)
            })
            .count()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<Streak>>> {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_failing_longer_than_the_limit_is_reported_until_it_recovers() {
        let health = Health::default();
        let t0 = Instant::now();
        health.ok("deliveries");
        for secs in [0, 30, 60] {
            health.failed("deliveries", t0 + Duration::from_secs(secs));
        }
        let limit = Duration::from_secs(60);
        assert_eq!(
            health.failing_longer_than(limit, t0 + Duration::from_secs(59)),
            None
        );
        let (watch, for_) = health
            .failing_longer_than(limit, t0 + Duration::from_secs(61))
            .unwrap();
        assert_eq!(
            (watch, for_),
            ("deliveries", Duration::from_secs(61)),
            "clock from the first failure"
        );
        health.ok("deliveries");
        assert_eq!(
            health.failing_longer_than(limit, t0 + Duration::from_secs(600)),
            None
        );
        assert_eq!(health.failing(t0 + Duration::from_secs(600)), 0);
    }

    #[test]
    fn a_watch_that_stops_failing_recovers_without_an_event() {
        let health = Health::default();
        let t0 = Instant::now();
        for secs in [0, 30, 60, 90, 100] {
            health.failed("routes", t0 + Duration::from_secs(secs));
        }
        let limit = Duration::from_secs(60);
        assert!(
            health
                .failing_longer_than(limit, t0 + Duration::from_secs(110))
                .is_some()
        );
        // Resumed: no error since, no event either.
        let later = t0 + Duration::from_secs(100) + QUIET_ENDS_STREAK + Duration::from_secs(1);
        assert_eq!(health.failing_longer_than(limit, later), None);
        // A new failure starts a new run.
        health.failed("routes", later);
        assert_eq!(
            health.failing_longer_than(limit, later + Duration::from_secs(30)),
            None
        );
    }
}
