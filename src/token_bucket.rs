//! A token bucket: `per_minute` on average, `burst` at once. Pure: the caller passes the time.
//! Used for each route's event rate limit and for the executor's Kubernetes Event budget.

use std::time::{Duration, Instant};

/// A rate: `per_minute` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_minute: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(limit: Limit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            at: now,
        }
    }

    /// Takes one token at `now`; `Err(wait)` says how long until one is free.
    pub fn take(&mut self, limit: Limit, now: Instant) -> Result<(), Duration> {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * limit.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(limit.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(
                missing * 60.0 / limit.per_minute.max(f64::MIN_POSITIVE),
            ))
        }
    }
}
