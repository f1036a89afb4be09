//! The receiver's budget: how many requests, and how many body bytes, it works on at once.
//!
//! Beyond the budget a request is answered 503 with `Retry-After` at once instead of waiting
//! in a queue until its sender times out: a sender that hears "later" quickly retries later,
//! one that hears nothing retries at once and doubles the load. Pure bookkeeping over two
//! semaphores; the handler holds the permits for the life of the request.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in KiB so that a budget of gigabytes still fits a semaphore's `u32`.
const UNIT: usize = 1024;

#[derive(Debug)]
pub struct Admission {
    requests: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    max_requests: usize,
    max_kib: u32,
}

/// Held while a request is worked on; dropping it gives the budget back.
#[derive(Debug)]
pub struct Admitted {
    _request: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `max_requests` at once, holding at most `max_bytes` of bodies between them.
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        let max_kib = u32::try_from(max_bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        let max_requests = max_requests.max(1);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            kib: Arc::new(Semaphore::new(max_kib as usize)),
            max_kib,
        }
    }

    /// Admits a request whose body may be up to `body_bytes` long (its Content-Length, or
    /// the body limit when it declares none), or `None` when that would exceed the budget.
    pub fn try_admit(&self, body_bytes: usize) -> Option<Admitted> {
        let request = self.requests.clone().try_acquire_owned().ok()?;
        // A body larger than the whole budget still gets in when nothing else is in flight.
        let kib = u32::try_from(body_bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.max_kib);
        let bytes = self.kib.clone().try_acquire_many_owned(kib).ok()?;
        Some(Admitted {
            _request: request,
            _bytes: bytes,
        })
    }

    /// Waits until fewer than `below` requests are in flight, or for `at_most`: background
    /// work (the executor) lets the receiver's writes go first, without waiting forever.
    pub async fn quiet(&self, below: usize, at_most: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + at_most;
        while self.in_flight() >= below && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Requests being worked on now.
    pub fn in_flight(&self) -> usize {
        self.max_requests - self.requests.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn requests_beyond_the_count_are_refused_until_one_finishes() {
        let admission = Admission::new(2, 1 << 20);
        let a = admission.try_admit(100).unwrap();
        let _b = admission.try_admit(100).unwrap();
        assert!(admission.try_admit(100).is_none());
        assert_eq!(admission.in_flight(), 2);
        drop(a);
        assert!(admission.try_admit(100).is_some());
    }

    #[test]
    fn bodies_beyond_the_byte_budget_are_refused() {
        let admission = Admission::new(100, 10 * 1024);
        let big = admission.try_admit(8 * 1024).unwrap();
        assert!(admission.try_admit(4 * 1024).is_none());
        let _small = admission.try_admit(2 * 1024).unwrap();
        drop(big);
        assert!(admission.try_admit(4 * 1024).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_returns_when_requests_drain_or_after_the_longest_wait() {
        let admission = Arc::new(Admission::new(10, 1 << 20));
        let held: Vec<_> = (0..3).map(|_| admission.try_admit(1).unwrap()).collect();
        let start = tokio::time::Instant::now();
        admission.quiet(2, Duration::from_secs(1)).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "busy: waited the longest"
        );
        let a = admission.clone();
        let waiter = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            a.quiet(2, Duration::from_secs(60)).await;
            start.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_millis(200), "{waited:?}");
    }

    #[test]
    fn a_body_larger_than_the_budget_gets_in_alone() {
        let admission = Admission::new(10, 4 * 1024);
        let alone = admission.try_admit(1 << 20).unwrap();
        assert!(admission.try_admit(1).is_none());
        drop(alone);
        assert_eq!(admission.in_flight(), 0);
    }
}
