//! Ordering per key: where each stored delivery stands in its key's order at each target
//! whose route declares an `ordering`, and the verdict for a call about to be made.
//!
//! A lane is one target (namespace, route, rule, target index) and one key. The index holds,
//! per lane, every stored delivery in it, by its place (the event's `time`, then the second
//! it was accepted, then the delivery's name), with its phase at that target. It is built
//! from the executor's watch of deliveries, before the watch cache trims finished ones, and
//! from the executor's own status writes, so it never lags behind them: the state comes from
//! the stored deliveries, and holds across restarts and leader changes (a new leader's watch
//! lists them all again). A call in flight holds its lane in this replica (only the leader
//! calls), so that two calls for one key never overlap.
//!
//! Verdicts ([`verdict`], pure):
//! - `inOrder`: a call waits until every earlier delivery in its lane has finished there;
//! - `latestWins`: a call waits while a newer delivery in its lane is unfinished (the newest
//!   goes first), and is not made once a newer one succeeded there (Superseded).
//!
//! When a lane moves (a delivery in it finishes, or a call ends), the deliveries that may
//! now go are woken through a bounded channel ([`WAKE_QUEUE`]; a wake that does not fit is
//! dropped, and the delivery looks again after `decide::ORDER_POLL`).
//!
//! Bounds: one entry per ordered target of a stored delivery (so the index grows with the
//! watch cache, about 200 bytes an entry), one lane held per call in flight, at most
//! [`WAKES_PER_MOVE`] deliveries woken per move.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::decide::Plan;
use super::retry;
use crate::api::{
    DeliveryPhase, OrderingPolicy, StatusedDelivery, StatusedDeliveryStatus, TargetStatus,
};

/// Wakes waiting to be taken by the executor, at most.
pub const WAKE_QUEUE: usize = 4096;
/// Deliveries woken when a lane moves, at most.
pub const WAKES_PER_MOVE: usize = 256;

/// One target and one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    namespace: String,
    route: String,
    rule: String,
    target: u32,
    key: String,
}

/// A delivery's place in its lanes: the event's time, when it was accepted, its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    time: jiff::Timestamp,
    accepted: jiff::Timestamp,
    name: String,
}

impl Place {
    /// The place of `d`: the event's `time` (when it has none, or an unreadable one: when
    /// it was accepted), then its creation time, then its name.
    pub fn of(d: &StatusedDelivery) -> Self {
        let accepted = d
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0);
        let time = d
            .spec
            .event
            .time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or(accepted);
        Self {
            time,
            accepted,
            name: d.name_any(),
        }
    }
}

/// A delivery in a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub phase: DeliveryPhase,
    pub policy: OrderingPolicy,
}

/// What a due call's ordering says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Wait for delivery `on`; `reason` is the metric's label, `why` the target's message.
    Wait {
        on: String,
        reason: &'static str,
        why: String,
    },
    /// Not to be made: delivery `by`, a newer event for the key, succeeded there.
    Superseded {
        by: String,
    },
}

/// The verdict for a call of the delivery at `me` in a lane holding `lane` (which may or may
/// not hold `me` yet), with `policy`, while `calling` (if any) has a call in flight in it.
pub fn verdict(
    lane: &BTreeMap<Place, Entry>,
    me: &Place,
    policy: OrderingPolicy,
    calling: Option<&str>,
) -> Verdict {
    let unfinished = |(_, e): &(&Place, &Entry)| !e.phase.is_finished();
    let after = lane.range((Bound::Excluded(me), Bound::Unbounded));
    match policy {
        OrderingPolicy::InOrder => {
            if let Some((p, _)) = lane.range(..me).rev().find(unfinished) {
                return Verdict::Wait {
                    on: p.name.clone(),
                    reason: "earlierEvent",
                    why: format!(
                        "WaitingForEarlierEvent: delivery {} holds an earlier event for this target's ordering key (inOrder) and has not finished there",
                        p.name
                    ),
                };
            }
        }
        OrderingPolicy::LatestWins => {
            let newer_succeeded = after
                .clone()
                .rfind(|(_, e)| e.phase == DeliveryPhase::Succeeded);
            if let Some((p, _)) = newer_succeeded {
                return Verdict::Superseded { by: p.name.clone() };
            }
            if let Some((p, _)) = after.rev().find(unfinished) {
                return Verdict::Wait {
                    on: p.name.clone(),
                    reason: "newerEvent",
                    why: format!(
                        "WaitingForNewerEvent: delivery {} holds a newer event for this target's ordering key (latestWins) and goes first",
                        p.name
                    ),
                };
            }
        }
    }
    match calling.filter(|c| *c != me.name) {
        Some(other) => Verdict::Wait {
            on: other.to_string(),
            reason: "keyInFlight",
            why: format!(
                "WaitingForKey: delivery {other} is calling this target for the same ordering key"
            ),
        },
        None => Verdict::Go,
    }
}

/// The index of lanes, the lanes held by calls in flight, and the wake channel.
#[derive(Debug, Default)]
pub struct Ordering {
    inner: Mutex<Lanes>,
    wake: Mutex<Option<mpsc::Sender<ObjectRef<StatusedDelivery>>>>,
}

#[derive(Debug, Default)]
struct Lanes {
    lanes: HashMap<Lane, BTreeMap<Place, Entry>>,
    /// Each delivery's (namespace, name) entries, to replace or remove them.
    of: HashMap<(String, String), Vec<(Lane, Place)>>,
    /// Lanes with a call in flight, and whose.
    calling: HashMap<Lane, String>,
    /// While the watch lists again: the deliveries listed so far.
    relisting: Option<HashSet<(String, String)>>,
}

/// Lanes held by one delivery's calls in flight: dropping it frees them and wakes what
/// waits in them.
#[derive(Debug)]
pub struct Held<'o> {
    ordering: &'o Ordering,
    lanes: Vec<(Lane, String)>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.lanes.is_empty() {
            return;
        }
        let mut wake = Vec::new();
        {
            let mut inner = self.ordering.lock();
            for (lane, name) in self.lanes.drain(..) {
                if inner.calling.get(&lane) == Some(&name) {
                    inner.calling.remove(&lane);
                }
                wake.extend(inner.to_wake(&lane));
            }
        }
        self.ordering.wake(&wake);
    }
}

/// The due targets of a delivery sorted by what their ordering says.
#[derive(Debug)]
pub struct Claimed<'o> {
    /// To render and call (indexes into the targets).
    pub go: Vec<usize>,
    /// Held or superseded, as plans.
    pub plans: Vec<(usize, Plan)>,
    /// The lanes the calls of `go` hold.
    pub held: Held<'o>,
}

impl Ordering {
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, deliveries to wake go to `sender`; the index starts empty (the watch
    /// lists every delivery again).
    pub fn wake_to(&self, sender: mpsc::Sender<ObjectRef<StatusedDelivery>>) {
        *self.lock() = Lanes::default();
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    }

    /// Takes what the watch of deliveries saw. `newer_written` says whether the executor
    /// has written a newer status of a delivery than the one seen (the index keeps that).
    pub fn observe(
        &self,
        event: &watcher::Event<StatusedDelivery>,
        newer_written: impl Fn(&StatusedDelivery) -> bool,
    ) {
        let mut wake = Vec::new();
        {
            let mut inner = self.lock();
            match event {
                watcher::Event::Init => inner.relisting = Some(HashSet::new()),
                watcher::Event::InitApply(d) => {
                    if let Some(seen) = inner.relisting.as_mut() {
                        seen.insert(id(d));
                    }
                    if !newer_written(d) {
                        wake = inner.put(d, d.status.as_ref());
                    }
                }
                watcher::Event::InitDone => wake = inner.relisted(),
                watcher::Event::Apply(d) if !newer_written(d) => {
                    wake = inner.put(d, d.status.as_ref());
                }
                watcher::Event::Apply(_) => {}
                watcher::Event::Delete(d) => wake = inner.remove(&id(d)),
            }
        }
        self.wake(&wake);
    }

    /// The executor wrote `status` on `delivery`.
    pub fn written(&self, delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) {
        let wake = self.lock().put(delivery, Some(status));
        self.wake(&wake);
    }

    /// Sorts the `due` targets of `delivery` (each target's status in `targets`): those
    /// without ordering, or run again ignoring it, go; the others as their lane says. The
    /// lanes of those that go are held until the returned [`Held`] is dropped (after their
    /// outcome is written).
    pub fn claim(
        &self,
        delivery: &StatusedDelivery,
        targets: &[TargetStatus],
        due: Vec<usize>,
    ) -> Claimed<'_> {
        let me = Place::of(delivery);
        let mut claimed = Claimed {
            go: Vec::with_capacity(due.len()),
            plans: Vec::new(),
            held: Held {
                ordering: self,
                lanes: Vec::new(),
            },
        };
        let mut inner = self.lock();
        for i in due {
            let ordered = delivery.spec.matched.get(i).and_then(|m| {
                let o = m.ordering.as_ref()?;
                Some((
                    lane(delivery, m.rule.clone(), m.target, o.key.clone()),
                    o.policy,
                ))
            });
            let Some((lane, policy)) = ordered.filter(|_| !targets[i].ignore_ordering) else {
                claimed.go.push(i);
                continue;
            };
            let none = BTreeMap::new();
            let entries = inner.lanes.get(&lane).unwrap_or(&none);
            let calling = inner.calling.get(&lane).map(String::as_str);
            match verdict(entries, &me, policy, calling) {
                Verdict::Go => {
                    inner.calling.insert(lane.clone(), me.name.clone());
                    claimed.held.lanes.push((lane, me.name.clone()));
                    claimed.go.push(i);
                }
                Verdict::Wait { on, why, .. } => claimed.plans.push((i, Plan::Hold { on, why })),
                Verdict::Superseded { by } => claimed.plans.push((i, Plan::Supersede { by })),
            }
        }
        claimed
    }

    fn wake(&self, deliveries: &[ObjectRef<StatusedDelivery>]) {
        if deliveries.is_empty() {
            return;
        }
        let mut wake = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = wake.as_mut() {
            for d in deliveries {
                // Full: it looks again after ORDER_POLL anyway.
                let _ = sender.try_send(d.clone());
            }
        }
    }
}

/// The reason label of a hold, for the deferred-calls metric.
pub fn hold_reason(why: &str) -> &'static str {
    match why.split(':').next() {
        Some("WaitingForEarlierEvent") => "earlierEvent",
        Some("WaitingForNewerEvent") => "newerEvent",
        _ => "keyInFlight",
    }
}

fn id(d: &StatusedDelivery) -> (String, String) {
    (d.namespace().unwrap_or_default(), d.name_any())
}

fn lane(d: &StatusedDelivery, rule: String, target: u32, key: String) -> Lane {
    Lane {
        namespace: d.namespace().unwrap_or_default(),
        route: d.spec.route.clone(),
        rule,
        target,
        key,
    }
}

impl Lanes {
    /// Puts `d`, with `status`, in its lanes (replacing what it had); the deliveries to wake.
    fn put(
        &mut self,
        d: &StatusedDelivery,
        status: Option<&StatusedDeliveryStatus>,
    ) -> Vec<ObjectRef<StatusedDelivery>> {
        let ordered: Vec<_> = d
            .spec
            .matched
            .iter()
            .filter(|m| m.ordering.is_some())
            .collect();
        if ordered.is_empty() {
            return Vec::new();
        }
        let place = Place::of(d);
        let current = status.cloned().unwrap_or_default();
        let targets = retry::targets(&d.spec.matched, &current);
        let mut moved = Vec::new();
        let mut mine = Vec::with_capacity(ordered.len());
        for (m, t) in d.spec.matched.iter().zip(&targets) {
            let Some(o) = &m.ordering else { continue };
            let lane = lane(d, m.rule.clone(), m.target, o.key.clone());
            let entry = Entry {
                phase: t.phase,
                policy: o.policy,
            };
            let entries = self.lanes.entry(lane.clone()).or_default();
            let before = entries.insert(place.clone(), entry.clone());
            if before.is_none_or(|b| b.phase.is_finished() != entry.phase.is_finished()) {
                moved.push(lane.clone());
            }
            mine.push((lane, place.clone()));
        }
        self.of.insert(id(d), mine);
        // A lane with a call in flight is woken when that call's lanes are let go.
        moved
            .iter()
            .filter(|lane| !self.calling.contains_key(*lane))
            .flat_map(|lane| self.to_wake(lane))
            .collect()
    }

    /// Removes delivery `id` from its lanes; the deliveries to wake.
    fn remove(&mut self, id: &(String, String)) -> Vec<ObjectRef<StatusedDelivery>> {
        let Some(mine) = self.of.remove(id) else {
            return Vec::new();
        };
        let mut wake = Vec::new();
        for (lane, place) in mine {
            if let Some(entries) = self.lanes.get_mut(&lane) {
                entries.remove(&place);
                if entries.is_empty() {
                    self.lanes.remove(&lane);
                }
            }
            wake.extend(self.to_wake(&lane));
        }
        wake
    }

    /// The watch listed every delivery again: those it did not list are gone.
    fn relisted(&mut self) -> Vec<ObjectRef<StatusedDelivery>> {
        let Some(seen) = self.relisting.take() else {
            return Vec::new();
        };
        let gone: Vec<_> = self
            .of
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        gone.iter().flat_map(|id| self.remove(id)).collect()
    }

    /// Who in `lane` may go now that it moved: the earliest unfinished (`inOrder`); the
    /// newest unfinished and every unfinished one older than the newest success
    /// (`latestWins`), at most [`WAKES_PER_MOVE`].
    fn to_wake(&self, lane: &Lane) -> Vec<ObjectRef<StatusedDelivery>> {
        let Some(entries) = self.lanes.get(lane) else {
            return Vec::new();
        };
        let unfinished = |(_, e): &(&Place, &Entry)| !e.phase.is_finished();
        let policy = entries.values().next_back().map(|e| e.policy);
        let places: Vec<&Place> = match policy {
            None => Vec::new(),
            Some(OrderingPolicy::InOrder) => entries
                .iter()
                .find(unfinished)
                .map(|(p, _)| p)
                .into_iter()
                .collect(),
            Some(OrderingPolicy::LatestWins) => {
                let newest_success = entries
                    .iter()
                    .rev()
                    .find(|(_, e)| e.phase == DeliveryPhase::Succeeded)
                    .map(|(p, _)| p);
                let newest = entries.iter().rev().find(unfinished).map(|(p, _)| p);
                let superseded = entries
                    .iter()
                    .take_while(|(p, _)| newest_success.is_some_and(|s| *p < s))
                    .filter(unfinished)
                    .map(|(p, _)| p);
                newest
                    .into_iter()
                    .chain(superseded)
                    .take(WAKES_PER_MOVE)
                    .collect()
            }
        };
        places
            .into_iter()
            .map(|p| ObjectRef::new(&p.name).within(&lane.namespace))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn place(secs: i64, name: &str) -> Place {
        Place {
            time: at(secs),
            accepted: at(100),
            name: name.into(),
        }
    }

    fn lane(
        entries: &[(i64, &str, DeliveryPhase)],
        policy: OrderingPolicy,
    ) -> BTreeMap<Place, Entry> {
        entries
            .iter()
            .map(|&(secs, name, phase)| (place(secs, name), Entry { phase, policy }))
            .collect()
    }

    use DeliveryPhase::{Failed, Pending, Running, Succeeded};
    use OrderingPolicy::{InOrder, LatestWins};

    #[test]
    fn in_order_waits_for_the_last_unfinished_earlier_event_and_nothing_else() {
        let l = lane(
            &[
                (1, "a", Succeeded),
                (2, "b", Running),
                (3, "c", Pending),
                (4, "d", Pending),
                (5, "e", Running),
            ],
            InOrder,
        );
        assert_eq!(verdict(&l, &place(1, "a"), InOrder, None), Verdict::Go);
        assert_eq!(
            verdict(&l, &place(2, "b"), InOrder, None),
            Verdict::Go,
            "finished ones do not hold"
        );
        let Verdict::Wait { on, reason, .. } = verdict(&l, &place(4, "d"), InOrder, None) else {
            panic!()
        };
        assert_eq!(
            (on.as_str(), reason),
            ("c", "earlierEvent"),
            "its immediate predecessor"
        );
        // Later events never hold an earlier one.
        assert_eq!(verdict(&l, &place(0, "z"), InOrder, None), Verdict::Go);
    }

    #[test]
    fn the_same_second_is_ordered_by_acceptance_then_name() {
        let mut early = place(1, "b");
        early.accepted = at(50);
        assert!(early < place(1, "a"), "accepted first");
        assert!(place(1, "a") < place(1, "b"));
    }

    #[test]
    fn latest_wins_supersedes_older_events_once_a_newer_one_succeeded() {
        let l = lane(
            &[
                (1, "a", Running),
                (2, "b", Failed),
                (3, "c", Succeeded),
                (4, "d", Pending),
            ],
            LatestWins,
        );
        assert_eq!(
            verdict(&l, &place(1, "a"), LatestWins, None),
            Verdict::Superseded { by: "c".into() }
        );
        // The newest unfinished goes first; an older one waits for it.
        let l = lane(&[(1, "a", Running), (2, "b", Pending)], LatestWins);
        let Verdict::Wait { on, reason, .. } = verdict(&l, &place(1, "a"), LatestWins, None) else {
            panic!()
        };
        assert_eq!((on.as_str(), reason), ("b", "newerEvent"));
        assert_eq!(verdict(&l, &place(2, "b"), LatestWins, None), Verdict::Go);
        // A newer one that failed for good holds nothing: the older one is sent.
        let l = lane(&[(1, "a", Running), (2, "b", Failed)], LatestWins);
        assert_eq!(verdict(&l, &place(1, "a"), LatestWins, None), Verdict::Go);
    }

    #[test]
    fn a_call_in_flight_holds_its_lane_for_anyone_else() {
        let l = lane(&[(1, "a", Running), (2, "b", Pending)], LatestWins);
        let Verdict::Wait { on, reason, .. } = verdict(&l, &place(2, "b"), LatestWins, Some("a"))
        else {
            panic!()
        };
        assert_eq!((on.as_str(), reason), ("a", "keyInFlight"));
        assert_eq!(
            verdict(&l, &place(2, "b"), LatestWins, Some("b")),
            Verdict::Go
        );
    }

    /// A delivery `name` of an event at `at(secs)` whose one target is ordered by `key`.
    fn delivery(name: &str, secs: i64, key: &str, policy: OrderingPolicy) -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture(name, "flags");
        d.spec.event.time = Some(at(secs).to_string());
        d.spec.matched = vec![crate::api::MatchedTarget {
            rule: "toggle".into(),
            target: 0,
            kind: "launchDarkly".into(),
            ordering: Some(crate::api::OrderedBy {
                key: key.into(),
                policy,
            }),
        }];
        d
    }

    fn status(phase: DeliveryPhase) -> StatusedDeliveryStatus {
        let mut target = TargetStatus::pending(&delivery("x", 0, "k", InOrder).spec.matched[0]);
        target.phase = phase;
        StatusedDeliveryStatus {
            phase,
            targets: vec![target],
            ..Default::default()
        }
    }

    fn claim(o: &Ordering, d: &StatusedDelivery) -> (Vec<usize>, Vec<(usize, Plan)>) {
        let c = o.claim(d, &status(Pending).targets, vec![0]);
        let (go, plans) = (c.go.clone(), c.plans.clone());
        drop(c);
        (go, plans)
    }

    fn woken(rx: &mut mpsc::Receiver<ObjectRef<StatusedDelivery>>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn the_index_follows_the_watch_and_the_executors_own_writes() {
        let o = Ordering::default();
        let (tx, mut rx) = mpsc::channel(16);
        o.wake_to(tx);
        let (first, second) = (
            delivery("first", 1, "app", InOrder),
            delivery("second", 2, "app", InOrder),
        );
        let other_key = delivery("other", 3, "another-app", InOrder);
        for d in [&first, &second, &other_key] {
            o.observe(&watcher::Event::Apply(d.clone()), |_| false);
        }
        assert_eq!(claim(&o, &first).0, [0], "the earliest goes");
        assert_eq!(claim(&o, &other_key).0, [0], "another key is another lane");
        let (go, plans) = claim(&o, &second);
        assert!(go.is_empty());
        assert!(matches!(&plans[0], (0, Plan::Hold { on, .. }) if on == "first"));
        woken(&mut rx);

        // The executor wrote `first` finished: `second` is woken, and goes.
        o.written(&first, &status(Succeeded));
        assert_eq!(woken(&mut rx), ["second"]);
        // A watch event older than that write changes nothing.
        o.observe(&watcher::Event::Apply(first.clone()), |_| true);
        assert_eq!(claim(&o, &second).0, [0]);
        // Without the guard it would have: the index is the stored deliveries.
        o.observe(&watcher::Event::Apply(first.clone()), |_| false);
        assert!(claim(&o, &second).0.is_empty());
    }

    #[test]
    fn a_call_in_flight_holds_its_lane_until_it_is_recorded() {
        let o = Ordering::default();
        let (tx, mut rx) = mpsc::channel(16);
        o.wake_to(tx);
        let (old, new) = (
            delivery("old", 1, "app", LatestWins),
            delivery("new", 2, "app", LatestWins),
        );
        o.observe(&watcher::Event::Apply(old.clone()), |_| false);
        // `old` was the newest when it was claimed; `new` arrives while it calls.
        let calling = o.claim(&old, &status(Pending).targets, vec![0]);
        assert_eq!(calling.go, [0]);
        o.observe(&watcher::Event::Apply(new.clone()), |_| false);
        let (go, plans) = claim(&o, &new);
        assert!(go.is_empty());
        assert!(
            matches!(&plans[0], (0, Plan::Hold { why, .. }) if hold_reason(why) == "keyInFlight")
        );
        woken(&mut rx);
        drop(calling);
        assert_eq!(
            woken(&mut rx),
            ["new"],
            "the newest is woken once the call is over"
        );
        assert_eq!(claim(&o, &new).0, [0]);
        // `new` succeeded: `old` (retrying) is superseded, and woken to say so.
        o.written(&new, &status(Succeeded));
        assert!(woken(&mut rx).contains(&"old".to_string()));
        let (_, plans) = claim(&o, &old);
        assert_eq!(plans, [(0, Plan::Supersede { by: "new".into() })]);
        // A redelivery that ignores the ordering goes anyway.
        let mut targets = status(Pending).targets;
        targets[0].ignore_ordering = true;
        assert_eq!(o.claim(&old, &targets, vec![0]).go, [0]);
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_lists() {
        let o = Ordering::default();
        let (first, second) = (
            delivery("first", 1, "app", InOrder),
            delivery("second", 2, "app", InOrder),
        );
        o.observe(&watcher::Event::Apply(first.clone()), |_| false);
        o.observe(&watcher::Event::Apply(second.clone()), |_| false);
        assert!(claim(&o, &second).0.is_empty());
        // `first` was deleted while the watch was down.
        o.observe(&watcher::Event::Init, |_| false);
        o.observe(&watcher::Event::InitApply(second.clone()), |_| false);
        o.observe(&watcher::Event::InitDone, |_| false);
        assert_eq!(claim(&o, &second).0, [0]);
        o.observe(&watcher::Event::Apply(first.clone()), |_| false);
        o.observe(&watcher::Event::Delete(first), |_| false);
        assert_eq!(claim(&o, &second).0, [0], "deleted");
    }
}
