//! Per-route rate limiting of accepted events: a token bucket per route and replica. Only
//! events whose signature verified count, so unsigned floods cannot use up a route's budget
//! (those are for the ingress in front of the receiver to limit).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::route::RouteKey;
use crate::token_bucket::Bucket;
pub use crate::token_bucket::Limit;

/// Buckets of every route; routes without a limit never touch it.
#[derive(Debug, Default)]
pub struct RateLimiter(Mutex<HashMap<RouteKey, Bucket>>);

impl RateLimiter {
    /// Takes one token for `route` at `now`; `Err(wait)` says how long until one is free.
    pub fn check(&self, route: &RouteKey, limit: Limit, now: Instant) -> Result<(), Duration> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(route.clone())
            .or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now)
    }

    /// The route is gone: drop its bucket.
    pub fn forget(&self, route: &RouteKey) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(route);
    }

    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_average_rate() {
        let limiter = RateLimiter::default();
        let key = RouteKey::new("ns", "r");
        let limit = Limit {
            per_minute: 60.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        assert_eq!(limiter.check(&key, limit, t0), Ok(()));
        assert_eq!(limiter.check(&key, limit, t0), Ok(()));
        let wait = limiter.check(&key, limit, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(
            limiter.check(&key, limit, t0 + Duration::from_secs(1)),
            Ok(())
        );
        assert!(
            limiter
                .check(&key, limit, t0 + Duration::from_secs(1))
                .is_err()
        );
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(600);
        assert_eq!(limiter.check(&key, limit, later), Ok(()));
        assert_eq!(limiter.check(&key, limit, later), Ok(()));
        assert!(limiter.check(&key, limit, later).is_err());
    }

    #[test]
    fn a_forgotten_route_leaves_no_bucket() {
        let limiter = RateLimiter::default();
        let key = RouteKey::new("ns", "r");
        let limit = Limit {
            per_minute: 1.0,
            burst: 1.0,
        };
        assert!(limiter.check(&key, limit, Instant::now()).is_ok());
        limiter.forget(&key);
        assert!(limiter.is_empty());
    }

    #[test]
    fn routes_have_their_own_buckets() {
        let limiter = RateLimiter::default();
        let limit = Limit {
            per_minute: 1.0,
            burst: 1.0,
        };
        let t0 = Instant::now();
        assert!(limiter.check(&RouteKey::new("a", "r"), limit, t0).is_ok());
        assert!(limiter.check(&RouteKey::new("b", "r"), limit, t0).is_ok());
        assert!(limiter.check(&RouteKey::new("a", "r"), limit, t0).is_err());
    }
}
