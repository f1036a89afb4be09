//! Exponential backoff with jitter, for reconcile errors (per object, reset on success) and
//! for target retries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped at `max`,
    /// then scaled by a random factor in [0.8, 1.2) so that retries from many deliveries do not
    /// arrive together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        capped.mul_f64(0.8 + fastrand::f64() * 0.4)
    }
}

/// Failure counts per key, for per-object reconcile backoff.
#[derive(Debug, Default)]
pub struct FailureCounts(Mutex<HashMap<String, u32>>);

impl FailureCounts {
    /// Records one more failure and returns the count.
    pub fn fail(&self, key: &str) -> u32 {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    pub fn reset(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_with_jitter_and_is_capped() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for _ in 0..100 {
            let d1 = b.delay(1).as_secs_f64();
            let d3 = b.delay(3).as_secs_f64();
            let d9 = b.delay(9).as_secs_f64();
            assert!((0.8..1.2).contains(&d1), "{d1}");
            assert!((3.2..4.8).contains(&d3), "{d3}");
            assert!((8.0..12.0).contains(&d9), "{d9}");
        }
    }

    #[test]
    fn failure_counts_grow_and_reset() {
        let f = FailureCounts::default();
        assert_eq!(f.fail("a"), 1);
        assert_eq!(f.fail("a"), 2);
        f.reset("a");
        assert_eq!(f.fail("a"), 1);
    }
}
