//! How many deliveries follow a run, per namespace and in all: what `--max-follows-per-namespace`
//! and `--max-follows` are checked against when a follow would start (follow.rs). Built from
//! the executor's watch of deliveries and its own writes (delivery_index.rs), so a new leader
//! counts them again from the stored deliveries.
//!
//! Bounds: one entry per stored delivery that follows a run (the stored-deliveries quota
//! bounds them); follows that start at once may each see the same count, so the limits can
//! be passed by at most `--executor-concurrency` (the deliveries worked on at once).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use kube::ResourceExt;
use kube::runtime::watcher;

use super::retry;
use crate::api::{StatusedDelivery, StatusedDeliveryStatus};

/// The deliveries following a run, by namespace.
#[derive(Debug, Default)]
pub struct FollowCount {
    inner: Mutex<Counted>,
}

#[derive(Debug, Default)]
struct Counted {
    by_namespace: HashMap<String, BTreeSet<String>>,
    total: usize,
}

impl Counted {
    fn put(&mut self, ns: &str, name: &str, following: bool) {
        let names = self.by_namespace.entry(ns.to_string()).or_default();
        let changed = if following {
            names.insert(name.to_string())
        } else {
            names.remove(name)
        };
        if changed {
            self.total = if following {
                self.total + 1
            } else {
                self.total.saturating_sub(1)
            };
        }
        if names.is_empty() {
            self.by_namespace.remove(ns);
        }
    }
}

impl FollowCount {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counted> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets everything: a new term lists every delivery again.
    pub fn clear(&self) {
        *self.lock() = Counted::default();
    }

    /// A watch event (a relist starts empty and is filled by what it lists).
    pub fn observe(&self, event: &watcher::Event<StatusedDelivery>) {
        match event {
            watcher::Event::Init => self.clear(),
            watcher::Event::InitApply(d) | watcher::Event::Apply(d) => {
                self.put(d, d.status.as_ref());
            }
            watcher::Event::Delete(d) => self.put(d, None),
            watcher::Event::InitDone => {}
        }
    }

    /// `delivery` now has `status` (None: it is gone).
    pub fn put(&self, delivery: &StatusedDelivery, status: Option<&StatusedDeliveryStatus>) {
        let following = status.is_some_and(|s| s.targets.iter().any(retry::following));
        let ns = delivery.namespace().unwrap_or_default();
        self.lock().put(&ns, &delivery.name_any(), following);
    }

    /// How many more follows may start in `namespace` under `per_namespace` and `total`
    /// (the one that `delivery` holds already counts as its own).
    pub fn room(&self, delivery: &StatusedDelivery, per_namespace: usize, total: usize) -> usize {
        let ns = delivery.namespace().unwrap_or_default();
        let counted = self.lock();
        let mine = counted.by_namespace.get(&ns);
        let held = usize::from(mine.is_some_and(|n| n.contains(&delivery.name_any())));
        let in_ns = mine.map_or(0, BTreeSet::len) - held;
        per_namespace
            .saturating_sub(in_ns)
            .min(total.saturating_sub(counted.total - held))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{DeliveryPhase, MatchedTarget, RunStatus, TargetStatus};

    fn delivery(ns: &str, name: &str, following: bool) -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture(name, "r");
        d.metadata.namespace = Some(ns.into());
        let mut t = TargetStatus::pending(&MatchedTarget {
            rule: "r".into(),
            target: 0,
            kind: "tekton".into(),
            ordering: None,
            follow: None,
            after: None,
        });
        t.phase = DeliveryPhase::Running;
        t.run = following.then(|| RunStatus::following(Time(jiff::Timestamp::UNIX_EPOCH), None));
        d.status = Some(StatusedDeliveryStatus {
            targets: vec![t],
            ..Default::default()
        });
        d
    }

    #[test]
    fn room_is_what_is_left_under_both_limits() {
        let count = FollowCount::default();
        for i in 0..3 {
            let d = delivery("a", &format!("a{i}"), true);
            count.observe(&watcher::Event::Apply(d));
        }
        count.observe(&watcher::Event::Apply(delivery("b", "b0", true)));
        count.observe(&watcher::Event::Apply(delivery("b", "b1", false)));
        let new_a = delivery("a", "a9", false);
        assert_eq!(count.room(&new_a, 5, 100), 2, "5 per namespace, 3 held");
        assert_eq!(count.room(&new_a, 5, 5), 1, "5 in all, 4 held");
        assert_eq!(count.room(&new_a, 3, 100), 0);
        // A delivery's own follow is not counted against itself.
        assert_eq!(count.room(&delivery("a", "a0", true), 3, 100), 1);

        // Ended or deleted follows give their room back; a relist starts again.
        count.observe(&watcher::Event::Apply(delivery("a", "a1", false)));
        count.observe(&watcher::Event::Delete(delivery("a", "a2", true)));
        assert_eq!(count.room(&new_a, 3, 100), 2);
        count.observe(&watcher::Event::Init);
        assert_eq!(count.room(&new_a, 3, 100), 3);
    }
}
