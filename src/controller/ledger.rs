//! What the executor knows of its own status writes, beyond what its cache shows yet.
//!
//! Two facts per delivery (by uid), both bounded by the deliveries being worked on:
//! - a status whose calls were made but whose write failed: the next reconcile only writes
//!   it, no target is called again for a call that already happened;
//! - the resourceVersion of the last status written: a reconcile whose cached copy is not
//!   that version reads the delivery afresh before calling anything, so a watch that lags
//!   behind (after an API server restart, say) never makes a finished target look due.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::ResourceExt;

use crate::api::{StatusedDelivery, StatusedDeliveryStatus};

#[derive(Debug, Default)]
pub struct Ledger {
    unrecorded: Mutex<HashMap<String, StatusedDeliveryStatus>>,
    written: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ledger {
    /// Calls were made for `delivery` but `status` could not be written.
    pub fn unwritten(&self, delivery: &StatusedDelivery, status: StatusedDeliveryStatus) {
        if let Some(uid) = delivery.uid() {
            lock(&self.unrecorded).insert(uid, status);
        }
    }

    /// The status still to be written for `delivery`, if any.
    pub fn unwritten_status(&self, delivery: &StatusedDelivery) -> Option<StatusedDeliveryStatus> {
        lock(&self.unrecorded).get(&delivery.uid()?).cloned()
    }

    /// While this many statuses wait to be written, no new calls start: an API outage
    /// cannot pile up outcomes that a crash would lose.
    pub fn backlog_full(&self, limit: usize) -> bool {
        lock(&self.unrecorded).len() >= limit
    }

    /// `delivery`'s status was written and the API server gave it `resource_version`.
    pub fn written(&self, delivery: &StatusedDelivery, resource_version: Option<String>) {
        let Some(uid) = delivery.uid() else { return };
        lock(&self.unrecorded).remove(&uid);
        match resource_version {
            Some(rv) => lock(&self.written).insert(uid, rv),
            None => lock(&self.written).remove(&uid),
        };
    }

    /// `delivery` was read afresh: the cache is behind until it shows this version.
    pub fn read_afresh(&self, delivery: &StatusedDelivery) {
        if let (Some(uid), Some(rv)) = (delivery.uid(), delivery.metadata.resource_version.clone())
        {
            lock(&self.written).insert(uid, rv);
        }
    }

    /// Whether the cached `delivery` may be older than the last status written for it.
    /// Once the cache has caught up, the entry is dropped.
    pub fn cache_behind(&self, delivery: &StatusedDelivery) -> bool {
        let Some(uid) = delivery.uid() else {
            return false;
        };
        let mut written = lock(&self.written);
        match written.get(&uid) {
            Some(rv) if Some(rv) == delivery.metadata.resource_version.as_ref() => {
                written.remove(&uid);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Whether the executor wrote (or read afresh) a status of `delivery` other than the
    /// one it carries: a copy from a watch that lags. Unlike [`Ledger::cache_behind`], it
    /// forgets nothing: the watch's readers ask before the cache holds the copy.
    pub fn newer_written(&self, delivery: &StatusedDelivery) -> bool {
        let Some(uid) = delivery.uid() else {
            return false;
        };
        lock(&self.written)
            .get(&uid)
            .is_some_and(|rv| Some(rv) != delivery.metadata.resource_version.as_ref())
    }

    /// The executor starts a new term (it leads again): the versions it wrote before say
    /// nothing of what is stored now. What it could not write is kept: the next reconcile
    /// writes it, conditionally, or finds the delivery moved on.
    pub fn new_term(&self) {
        lock(&self.written).clear();
    }

    /// `delivery` is finished or gone: nothing to remember.
    pub fn forget(&self, delivery: &StatusedDelivery) {
        if let Some(uid) = delivery.uid() {
            lock(&self.unrecorded).remove(&uid);
            lock(&self.written).remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(rv: &str) -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture("d", "r");
        d.metadata.resource_version = Some(rv.into());
        d
    }

    #[test]
    fn an_unwritten_status_is_kept_until_written() {
        let ledger = Ledger::default();
        let d = delivery("1");
        ledger.unwritten(&d, StatusedDeliveryStatus::default());
        assert!(ledger.unwritten_status(&d).is_some());
        assert!(ledger.backlog_full(1));
        ledger.written(&d, Some("2".into()));
        assert!(ledger.unwritten_status(&d).is_none());
        assert!(!ledger.backlog_full(1));
    }

    #[test]
    fn a_cache_older_than_the_last_write_is_behind_until_it_catches_up() {
        let ledger = Ledger::default();
        ledger.written(&delivery("1"), Some("7".into()));
        assert!(
            ledger.cache_behind(&delivery("1")),
            "the cache still has the old copy"
        );
        assert!(!ledger.cache_behind(&delivery("7")), "caught up");
        assert!(
            !ledger.cache_behind(&delivery("1")),
            "forgotten once caught up"
        );
    }

    #[test]
    fn a_new_term_forgets_the_versions_written_in_the_last_one() {
        let ledger = Ledger::default();
        ledger.written(&delivery("1"), Some("7".into()));
        assert!(ledger.newer_written(&delivery("1")), "the watch lags");
        // Another leader wrote version 9 meanwhile; this replica leads again.
        ledger.new_term();
        assert!(!ledger.newer_written(&delivery("9")));
        assert!(!ledger.cache_behind(&delivery("9")));
    }
}
