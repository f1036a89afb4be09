//! A budget for the executor's Kubernetes Events.

use kube::runtime::events::EventType;

use crate::token_bucket::{Bucket, Limit};

/// How many Kubernetes Events the executor publishes: every one at an ordinary pace, a
/// sample during a burst (each Event is one more write to the API server, competing with the
/// receiver's). Warnings have a budget of their own, so successes never crowd them out. The
/// delivery's status always has the whole outcome.
#[derive(Debug)]
pub struct EventBudget {
    normal: std::sync::Mutex<Option<Bucket>>,
    warning: std::sync::Mutex<Option<Bucket>>,
}

impl Default for EventBudget {
    fn default() -> Self {
        Self {
            normal: std::sync::Mutex::new(None),
            warning: std::sync::Mutex::new(None),
        }
    }
}

/// 30 Normal Events at once, then 2 a second.
const NORMAL_EVENTS: Limit = Limit {
    per_minute: 120.0,
    burst: 30.0,
};
/// 100 Warning Events at once, then 10 a second.
const WARNING_EVENTS: Limit = Limit {
    per_minute: 600.0,
    burst: 100.0,
};

impl EventBudget {
    /// Whether an Event of this type may be published at `now`.
    pub fn allow(&self, type_: EventType, now: std::time::Instant) -> bool {
        let (bucket, limit) = match type_ {
            EventType::Normal => (&self.normal, NORMAL_EVENTS),
            EventType::Warning => (&self.warning, WARNING_EVENTS),
        };
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket
            .get_or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now)
            .is_ok()
    }
}
