//! Ordering per key: where each stored delivery stands in its key's order at each target
//! whose route declares an `ordering`, and the verdict for a call about to be made.
//!
//! A lane is one target (namespace, route, rule, target index) and one key. The index holds,
//! per lane, the stored deliveries unfinished there and those that succeeded there, by their
//! place (the event's `time`, then the second it was accepted, then the delivery's name). It
//! is built from the executor's watch of deliveries, before the watch cache trims finished
//! ones, and from the executor's own status writes, so it never lags behind them: the state
//! comes from the stored deliveries, and holds across restarts and leader changes (a new
//! leader's watch lists them all again). A call in flight holds its lane in this replica
//! (only the leader calls), so that two calls for one key never overlap.
//!
//! Verdicts ([`verdict`], pure):
//! - `inOrder`: a call waits until every earlier delivery in its lane has finished there;
//! - `latestWins`: a call waits while a newer delivery in its lane is unfinished (the newest
//!   goes first), and is not made once a newer one succeeded there (Superseded).
//!
//! When a lane moves (a delivery in it finishes or succeeds, or a call ends), the deliveries
//! that may now go are woken (wakeups.rs).
//!
//! Bounds: one entry per ordered target of a stored delivery (so the index grows with the
//! watch cache, about 200 bytes an entry), each verdict and each move costs O(log n) in its
//! lane, one lane held per call in flight, at most [`WAKES_PER_MOVE`] deliveries woken per
//! move.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::decide::Fate;
use super::retry;
use super::wakeups::Wakeups;
use crate::api::{
    DeliveryPhase, OrderingPolicy, StatusedDelivery, StatusedDeliveryStatus, TargetStatus,
};

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

/// One lane's deliveries, as the verdicts read them: those unfinished there, and those that
/// succeeded there; and those that failed or were superseded there, which hold no call but
/// may be redelivered (see [`OrderIndex::pinned`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneState {
    unfinished: BTreeSet<Place>,
    succeeded: BTreeSet<Place>,
    others: BTreeSet<Place>,
    /// Those following a run they started there (a target's `follow`): what
    /// `follow.cancelSuperseded` reads.
    following: BTreeSet<Place>,
    /// The policy of the newest delivery ever put in the lane, and its place: one policy
    /// per lane (see `LaneState::policy_for`).
    policy: Option<OrderingPolicy>,
    newest: Option<Place>,
}

impl LaneState {
    /// Puts the delivery at `place` in `phase`; whether the lane moved (an unfinished one
    /// finished, or one succeeded): someone waiting may go now.
    fn set(&mut self, place: &Place, phase: DeliveryPhase, policy: OrderingPolicy) -> bool {
        if self.newest.as_ref().is_none_or(|newest| place >= newest) {
            self.policy = Some(policy);
            self.newest = Some(place.clone());
        }
        let was_unfinished = self.unfinished.remove(place);
        let was_succeeded = self.succeeded.remove(place);
        self.others.remove(place);
        if !phase.is_finished() {
            self.unfinished.insert(place.clone());
        } else if phase == DeliveryPhase::Succeeded {
            self.succeeded.insert(place.clone());
        } else {
            self.others.insert(place.clone());
        }
        (was_unfinished && phase.is_finished())
            || (phase == DeliveryPhase::Succeeded && !was_succeeded)
    }

    /// Whether the delivery at `place` follows a run it started in this lane.
    fn follows(&mut self, place: &Place, following: bool) {
        if following {
            self.following.insert(place.clone());
        } else {
            self.following.remove(place);
        }
    }

    /// The newest delivery after `me` that follows a run it started, if any.
    fn newer_following(&self, me: &Place) -> Option<&Place> {
        self.following.last().filter(|p| *p > me)
    }

    /// Takes the delivery at `place` out; whether the lane moved.
    fn remove(&mut self, place: &Place) -> bool {
        self.following.remove(place);
        let was_unfinished = self.unfinished.remove(place);
        let was_succeeded = self.succeeded.remove(place);
        self.others.remove(place);
        was_unfinished || was_succeeded
    }

    fn is_empty(&self) -> bool {
        self.unfinished.is_empty() && self.succeeded.is_empty() && self.others.is_empty()
    }

    /// Whether `place` is the newest success of a `latestWins` lane that still holds an
    /// older delivery: the one that says the older is superseded.
    fn pins(&self, place: &Place) -> bool {
        self.policy == Some(OrderingPolicy::LatestWins)
            && self.succeeded.last() == Some(place)
            && [&self.unfinished, &self.succeeded, &self.others]
                .iter()
                .any(|set| set.range(..place).next().is_some())
    }

    /// The policy every delivery in the lane is held to: the newest event's (the route as
    /// it is now), whatever each delivery's own event was accepted with. A lane whose
    /// deliveries each kept their own policy could deadlock after the route switched
    /// (an older `latestWins` waiting for the newer, a newer `inOrder` waiting for the
    /// older); with one policy, whoever goes first under it is never held by the other.
    fn policy_for(&self, me: &Place, mine: OrderingPolicy) -> OrderingPolicy {
        match (&self.newest, self.policy) {
            (Some(newest), Some(policy)) if newest > me => policy,
            _ => mine,
        }
    }

    /// The newest success after `me`, if any.
    fn newer_success(&self, me: &Place) -> Option<&Place> {
        self.succeeded.last().filter(|p| *p > me)
    }
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
/// not hold `me` yet), with `policy` (its own; the lane's when a newer event set another:
/// `LaneState::policy_for`), while `calling` (if any) has a call in flight in it.
/// Each verdict looks at one neighbour of `me`: O(log n).
pub fn verdict(
    lane: &LaneState,
    me: &Place,
    policy: OrderingPolicy,
    calling: Option<&str>,
) -> Verdict {
    match lane.policy_for(me, policy) {
        OrderingPolicy::InOrder => {
            if let Some(p) = lane.unfinished.range(..me).next_back() {
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
            if let Some(p) = lane.newer_success(me) {
                return Verdict::Superseded { by: p.name.clone() };
            }
            let after = (Bound::Excluded(me), Bound::Unbounded);
            if let Some(p) = lane.unfinished.range(after).next() {
                return Verdict::Wait {
                    on: p.name.clone(),
                    reason: "newerEvent",
                    why: format!(
                        "WaitingForNewerEvent: delivery {} holds a newer event for this target's ordering key (latestWins), which goes first",
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

/// The index of lanes, the lanes held by calls in flight, and where to wake deliveries.
#[derive(Debug, Default)]
pub struct OrderIndex {
    inner: Mutex<Lanes>,
    wakeups: Arc<Wakeups>,
}

#[derive(Debug, Default)]
struct Lanes {
    lanes: HashMap<Lane, LaneState>,
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
    ordering: &'o OrderIndex,
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
                // Never the holder itself: a call whose outcome (or at-most-once mark) could
                // not be written is retried after its reconcile's backoff, not at once.
                wake.extend(inner.to_wake(&lane).into_iter().filter(|d| d.name != name));
            }
        }
        self.ordering.wakeups.wake(&wake);
    }
}

/// The due targets of a delivery sorted by what their ordering says.
#[derive(Debug)]
pub struct Claimed<'o> {
    /// To render and call (indexes into the targets).
    pub go: Vec<usize>,
    /// Held or superseded, as plans.
    pub plans: Vec<(usize, Fate)>,
    /// The lanes the calls of `go` hold.
    pub held: Held<'o>,
}

impl OrderIndex {
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An index that wakes deliveries through `wakeups`.
    pub fn new(wakeups: Arc<Wakeups>) -> Self {
        Self {
            inner: Mutex::default(),
            wakeups,
        }
    }

    /// A new term: the index starts empty (the watch lists every delivery again).
    pub fn clear(&self) {
        *self.lock() = Lanes::default();
    }

    /// Whether delivery `name` of `namespace` must not be pruned yet: it is the newest success
    /// of a `latestWins` lane where an older delivery is still stored. Were it pruned, the
    /// older one, redelivered, would find no newer success and undo it; kept, the older is
    /// superseded, across restarts too (both are stored). At most one extra per lane, for as
    /// long as the history limits keep an older one.
    pub fn pinned(&self, namespace: &str, name: &str) -> bool {
        let inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        inner.of.get(&id).is_some_and(|mine| {
            mine.iter()
                .any(|(lane, place)| inner.lanes.get(lane).is_some_and(|l| l.pins(place)))
        })
    }

    /// The delivery of a newer event for the key of `delivery`'s target `target` (of rule
    /// `rule`) that succeeded there, when the target is ordered `latestWins`: running it again
    /// would undo that one.
    pub fn superseded_by(
        &self,
        delivery: &StatusedDelivery,
        rule: &str,
        target: u32,
    ) -> Option<String> {
        self.newer_in_lane(delivery, rule, target, LaneState::newer_success)
    }

    /// The newest delivery of a newer event than `delivery`'s that follows a run it started
    /// at `delivery`'s target `target` of `rule`, when that target is ordered `latestWins`:
    /// the run of `delivery` there is superseded (`follow.cancelSuperseded`).
    pub fn newer_following(
        &self,
        delivery: &StatusedDelivery,
        rule: &str,
        target: u32,
    ) -> Option<String> {
        self.newer_in_lane(delivery, rule, target, LaneState::newer_following)
    }

    /// The delivery `newer` picks in the `latestWins` lane of `delivery`'s target `target`
    /// of `rule`, given `delivery`'s place there.
    fn newer_in_lane(
        &self,
        delivery: &StatusedDelivery,
        rule: &str,
        target: u32,
        newer: for<'a> fn(&'a LaneState, &Place) -> Option<&'a Place>,
    ) -> Option<String> {
        let m = delivery
            .spec
            .matched
            .iter()
            .find(|m| m.rule == rule && m.target == target)?;
        let o = m
            .ordering
            .as_ref()
            .filter(|o| o.policy == OrderingPolicy::LatestWins)?;
        let lane = lane(delivery, m.rule.clone(), m.target, o.key.clone());
        let inner = self.lock();
        let state = inner.lanes.get(&lane)?;
        newer(state, &Place::of(delivery)).map(|p| p.name.clone())
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
        self.wakeups.wake(&wake);
    }

    /// The executor wrote `status` on `delivery`.
    pub fn written(&self, delivery: &StatusedDelivery, status: &StatusedDeliveryStatus) {
        let wake = self.lock().put(delivery, Some(status));
        self.wakeups.wake(&wake);
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
            let none = LaneState::default();
            let entries = inner.lanes.get(&lane).unwrap_or(&none);
            let calling = inner.calling.get(&lane).map(String::as_str);
            match verdict(entries, &me, policy, calling) {
                Verdict::Go => {
                    inner.calling.insert(lane.clone(), me.name.clone());
                    claimed.held.lanes.push((lane, me.name.clone()));
                    claimed.go.push(i);
                }
                Verdict::Wait { on, why, .. } => claimed.plans.push((i, Fate::Hold { on, why })),
                Verdict::Superseded { by } => claimed.plans.push((i, Fate::Supersede { by })),
            }
        }
        claimed
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
    /// Puts `d`, with `status`, in its lanes (its place and lanes never change: the spec is
    /// immutable); the deliveries to wake.
    fn put(
        &mut self,
        d: &StatusedDelivery,
        status: Option<&StatusedDeliveryStatus>,
    ) -> Vec<ObjectRef<StatusedDelivery>> {
        if d.spec.matched.iter().all(|m| m.ordering.is_none()) {
            return Vec::new();
        }
        let place = Place::of(d);
        let current = status.cloned().unwrap_or_default();
        let targets = retry::targets(&d.spec.matched, &current);
        let mut moved = Vec::new();
        let mut mine = Vec::new();
        for (m, t) in d.spec.matched.iter().zip(&targets) {
            let Some(o) = &m.ordering else { continue };
            let lane = lane(d, m.rule.clone(), m.target, o.key.clone());
            let state = self.lanes.entry(lane.clone()).or_default();
            if state.set(&place, t.phase, o.policy) {
                moved.push(lane.clone());
            }
            state.follows(&place, retry::following(t));
            if state.is_empty() {
                self.lanes.remove(&lane);
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
            let Some(state) = self.lanes.get_mut(&lane) else {
                continue;
            };
            let moved = state.remove(&place);
            if state.is_empty() {
                self.lanes.remove(&lane);
            } else if moved {
                wake.extend(self.to_wake(&lane));
            }
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
        let Some(state) = self.lanes.get(lane) else {
            return Vec::new();
        };
        let places: Vec<&Place> = match state.policy {
            None => Vec::new(),
            Some(OrderingPolicy::InOrder) => state.unfinished.first().into_iter().collect(),
            Some(OrderingPolicy::LatestWins) => {
                let superseded = match state.succeeded.last() {
                    Some(newest) => state
                        .unfinished
                        .range(..newest)
                        .take(WAKES_PER_MOVE)
                        .collect(),
                    None => Vec::new(),
                };
                state
                    .unfinished
                    .last()
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
    use futures::channel::mpsc;

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

    fn lane(entries: &[(i64, &str, DeliveryPhase)], policy: OrderingPolicy) -> LaneState {
        let mut state = LaneState::default();
        for &(secs, name, phase) in entries {
            state.set(&place(secs, name), phase, policy);
        }
        state
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
    fn a_lane_keeps_the_newest_events_policy_so_a_switch_never_deadlocks() {
        // The route was latestWins for "old", then switched to inOrder before "new" arrived.
        let mut l = LaneState::default();
        l.set(&place(1, "old"), Pending, LatestWins);
        l.set(&place(2, "new"), Pending, InOrder);
        // Each under its own policy, both would wait for the other for ever.
        assert_eq!(verdict(&l, &place(1, "old"), LatestWins, None), Verdict::Go);
        let Verdict::Wait { on, .. } = verdict(&l, &place(2, "new"), InOrder, None) else {
            panic!("the newer waits under inOrder")
        };
        assert_eq!(on, "old");
        // Switched the other way: the newest goes first, the older waits for it.
        let mut l = LaneState::default();
        l.set(&place(1, "old"), Pending, InOrder);
        l.set(&place(2, "new"), Pending, LatestWins);
        assert_eq!(verdict(&l, &place(2, "new"), LatestWins, None), Verdict::Go);
        let Verdict::Wait { on, .. } = verdict(&l, &place(1, "old"), InOrder, None) else {
            panic!("the older waits under latestWins")
        };
        assert_eq!(on, "new");
        // An older event arriving late does not change the lane's policy.
        l.set(&place(0, "late"), Pending, InOrder);
        assert_eq!(verdict(&l, &place(2, "new"), LatestWins, None), Verdict::Go);
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
        // The nearest newer one is named, so the wait reads the same as newer events come.
        let l = lane(
            &[(1, "a", Running), (2, "b", Pending), (3, "c", Pending)],
            LatestWins,
        );
        let Verdict::Wait { on, .. } = verdict(&l, &place(1, "a"), LatestWins, None) else {
            panic!()
        };
        assert_eq!(on, "b");
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
            follow: None,
            after: None,
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

    fn claim(o: &OrderIndex, d: &StatusedDelivery) -> (Vec<usize>, Vec<(usize, Fate)>) {
        let c = o.claim(d, &status(Pending).targets, vec![0]);
        let (go, plans) = (c.go.clone(), c.plans.clone());
        drop(c);
        (go, plans)
    }

    /// An empty index whose wakes come out of the receiver returned with it.
    fn waking() -> (
        OrderIndex,
        mpsc::UnboundedReceiver<ObjectRef<StatusedDelivery>>,
    ) {
        let wakeups = Arc::new(Wakeups::default());
        let (tx, rx) = mpsc::unbounded();
        wakeups.connect(tx);
        (OrderIndex::new(wakeups), rx)
    }

    /// The deliveries woken since the last call, taken as the executor takes them.
    fn woken(
        o: &OrderIndex,
        rx: &mut mpsc::UnboundedReceiver<ObjectRef<StatusedDelivery>>,
    ) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .inspect(|r| o.wakeups.taken(r))
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn the_index_follows_the_watch_and_the_executors_own_writes() {
        let (o, mut rx) = waking();
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
        assert!(matches!(&plans[0], (0, Fate::Hold { on, .. }) if on == "first"));
        woken(&o, &mut rx);

        // The executor wrote `first` finished: `second` is woken, and goes.
        o.written(&first, &status(Succeeded));
        assert_eq!(woken(&o, &mut rx), ["second"]);
        // A watch event older than that write changes nothing.
        o.observe(&watcher::Event::Apply(first.clone()), |_| true);
        assert_eq!(claim(&o, &second).0, [0]);
        // Without the guard it would have: the index is the stored deliveries.
        o.observe(&watcher::Event::Apply(first.clone()), |_| false);
        assert!(claim(&o, &second).0.is_empty());
    }

    #[test]
    fn a_call_in_flight_holds_its_lane_until_it_is_recorded() {
        let (o, mut rx) = waking();
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
            matches!(&plans[0], (0, Fate::Hold { why, .. }) if hold_reason(why) == "keyInFlight")
        );
        woken(&o, &mut rx);
        drop(calling);
        assert_eq!(
            woken(&o, &mut rx),
            ["new"],
            "the newest is woken once the call is over"
        );
        assert_eq!(claim(&o, &new).0, [0]);
        // `new` succeeded: `old` (retrying) is superseded, and woken to say so.
        o.written(&new, &status(Succeeded));
        assert!(woken(&o, &mut rx).contains(&"old".to_string()));
        let (_, plans) = claim(&o, &old);
        assert_eq!(plans, [(0, Fate::Supersede { by: "new".into() })]);
        // A redelivery that ignores the ordering goes anyway.
        let mut targets = status(Pending).targets;
        targets[0].ignore_ordering = true;
        assert_eq!(o.claim(&old, &targets, vec![0]).go, [0]);
    }

    #[test]
    fn the_newest_success_is_kept_while_an_older_delivery_of_its_lane_is_stored() {
        let o = OrderIndex::default();
        let (old, new) = (
            delivery("old", 1, "app", LatestWins),
            delivery("new", 2, "app", LatestWins),
        );
        o.observe(&watcher::Event::Apply(old.clone()), |_| false);
        o.observe(&watcher::Event::Apply(new.clone()), |_| false);
        o.written(&old, &status(Failed));
        o.written(&new, &status(Succeeded));
        assert!(
            o.pinned("ns", "new"),
            "the older failed one could be redelivered"
        );
        assert!(!o.pinned("ns", "old"));
        // Redelivered, the older one is superseded by the newer, which is still there.
        o.written(&old, &status(Pending));
        let (_, plans) = claim(&o, &old);
        assert_eq!(plans, [(0, Fate::Supersede { by: "new".into() })]);
        // Once the older one is pruned, the newer may be too.
        o.observe(&watcher::Event::Delete(old.clone()), |_| false);
        assert!(!o.pinned("ns", "new"));
    }

    #[test]
    fn letting_go_of_a_lane_never_wakes_its_holder() {
        // An at-most-once call whose mark cannot be written lets go of its lane at once: were
        // it woken, it would try again at once, for ever, instead of after its backoff.
        let (o, mut rx) = waking();
        let first = delivery("first", 1, "app", InOrder);
        o.observe(&watcher::Event::Apply(first.clone()), |_| false);
        woken(&o, &mut rx);
        for _ in 0..3 {
            let calling = o.claim(&first, &status(Pending).targets, vec![0]);
            assert_eq!(calling.go, [0]);
            drop(calling);
            assert!(
                woken(&o, &mut rx).is_empty(),
                "not woken by its own release"
            );
        }
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_lists() {
        let o = OrderIndex::default();
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

    #[test]
    fn a_delivery_is_woken_once_until_the_executor_takes_it() {
        let (o, mut rx) = waking();
        let (first, second) = (
            delivery("first", 1, "app", InOrder),
            delivery("second", 2, "app", InOrder),
        );
        o.observe(&watcher::Event::Apply(second.clone()), |_| false);
        for _ in 0..3 {
            // `first` is redelivered and finishes again, three times over.
            o.written(&first, &status(Running));
            o.written(&first, &status(Succeeded));
        }
        let queued: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.name)
            .collect();
        assert_eq!(
            queued,
            ["second"],
            "one entry, however often the lane moved"
        );
        o.wakeups.taken(&ObjectRef::new("second").within("ns"));
        o.written(&first, &status(Running));
        o.written(&first, &status(Failed));
        assert_eq!(
            woken(&o, &mut rx),
            ["second"],
            "taken: it may be woken again"
        );
    }
}
