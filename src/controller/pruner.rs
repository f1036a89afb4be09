//! Deletes finished deliveries beyond their route's history limits.
//!
//! Works from the executor's watch cache, never a LIST: every `interval` it plans over the
//! cached deliveries (pure, [`plan`]) and deletes at most [`PRUNE_BATCH`] of them, at most
//! [`DELETE_CONCURRENCY`] at a time, oldest first. A delivery younger than the dedup window is
//! never deleted, whatever the history limits say: its name is what makes a redelivered
//! event a duplicate. Deliveries are not owned by their route, so this is also what removes
//! a deleted (or replaced) route's history: all of it, once the window has passed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::executor::Executor;
use super::history::{Finished, to_prune};
use crate::api::StatusedDelivery;
use crate::route::RouteKey;
use crate::route::history::HistoryLimits;
use crate::routing::RouteCheck;

/// Most deletes per round; the rest wait for the next round (one second later).
pub const PRUNE_BATCH: usize = 200;
/// Deletes in flight at once, so pruning never crowds out the receiver's writes.
pub const DELETE_CONCURRENCY: usize = 4;

/// One delivery to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    at: jiff::Timestamp,
}

/// What pruning knows of a route (by namespace and name) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteNow {
    /// A route of that name exists: object `uid`, its history limits and replay window.
    Live {
        uid: Option<String>,
        history: HistoryLimits,
        replay_window: Duration,
    },
    /// No route of that name exists.
    Gone { replay_window: Duration },
}

/// Which cached deliveries to delete now, oldest first. `routes` says what is known of a
/// route, or `None` while it cannot be known (nothing is deleted on a guess).
///
/// Deliveries have no ownerReference to their route (a record must outlive a route deleted
/// and applied again, see `server/webhook.rs`): a delivery whose route object is gone, or was
/// replaced by another of the same name, keeps no history of its own and is deleted as soon
/// as the dedup and replay windows allow. The current route's follow its history limits.
pub fn plan(
    deliveries: &[Arc<StatusedDelivery>],
    routes: impl Fn(&RouteKey) -> Option<RouteNow>,
    dedup_window: Duration,
    now: jiff::Timestamp,
) -> Vec<Doomed> {
    let mut doomed: Vec<Doomed> = by_route(deliveries, now)
        .into_iter()
        .filter_map(|(route, items)| Some((routes(&route)?, route, items)))
        .flat_map(|(known, route, items)| doomed_of(&route, items, known, dedup_window, now))
        .collect();
    doomed.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.name.cmp(&b.name)));
    doomed
}

/// A finished delivery, as pruning sees it.
struct Item {
    finished: Finished,
    uid: Option<String>,
    route_uid: Option<String>,
}

/// The finished deliveries by route.
fn by_route(
    deliveries: &[Arc<StatusedDelivery>],
    now: jiff::Timestamp,
) -> BTreeMap<RouteKey, Vec<Item>> {
    let mut by_route: BTreeMap<RouteKey, Vec<Item>> = BTreeMap::new();
    for d in deliveries {
        let Some(status) = d.status.as_ref().filter(|s| s.phase.is_finished()) else {
            continue;
        };
        let Some(ns) = d.namespace() else { continue };
        let created = d.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let finished = Finished {
            name: d.name_any(),
            phase: status.phase,
            at: status
                .completed_at
                .as_ref()
                .map(|t| t.0)
                .or(created)
                .unwrap_or(now),
            received: created.unwrap_or(now),
            event_time: d.spec.event.time.as_deref().and_then(|t| t.parse().ok()),
            // resourceVersion is opaque; read as a number only to order same-second finishes.
            revision: d
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        by_route
            .entry(RouteKey::new(ns, &d.spec.route))
            .or_default()
            .push(Item {
                finished,
                uid: d.metadata.uid.clone(),
                route_uid: d.route_uid().map(str::to_string),
            });
    }
    by_route
}

/// Which of `route`'s finished deliveries (`items`) to delete, the route being `known`.
fn doomed_of(
    route: &RouteKey,
    items: Vec<Item>,
    known: RouteNow,
    dedup_window: Duration,
    now: jiff::Timestamp,
) -> Vec<Doomed> {
    let uids: BTreeMap<String, (Option<String>, jiff::Timestamp)> = items
        .iter()
        .map(|i| (i.finished.name.clone(), (i.uid.clone(), i.finished.at)))
        .collect();
    let (current, earlier): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| match &known {
            // A record without a route uid (none was known) counts as the current one's.
            RouteNow::Live { uid, .. } => i.route_uid.is_none() || i.route_uid == *uid,
            RouteNow::Gone { .. } => false,
        });
    let (history, replay_window) = match known {
        RouteNow::Live {
            history,
            replay_window,
            ..
        } => (history, replay_window),
        RouteNow::Gone { replay_window } => (HistoryLimits::none(), replay_window),
    };
    let finished = |items: Vec<Item>| items.into_iter().map(|i| i.finished).collect();
    let prune = |items, history: &HistoryLimits| {
        to_prune(finished(items), history, now, dedup_window, replay_window)
    };
    prune(current, &history)
        .into_iter()
        .chain(prune(earlier, &HistoryLimits::none()))
        .map(|name| {
            let (uid, at) = uids.get(&name).cloned().unwrap_or((None, now));
            Doomed {
                namespace: route.namespace.clone(),
                name,
                uid,
                at,
            }
        })
        .collect()
}

/// How many cached deliveries are unfinished, and the age of the oldest.
pub fn backlog(deliveries: &[Arc<StatusedDelivery>], now: jiff::Timestamp) -> (usize, Duration) {
    let unfinished = deliveries
        .iter()
        .filter(|d| !d.status.as_ref().is_some_and(|s| s.phase.is_finished()));
    let mut count = 0;
    let mut oldest = Duration::ZERO;
    for d in unfinished {
        count += 1;
        if let Some(created) = &d.metadata.creation_timestamp {
            let age = Duration::try_from(now.duration_since(created.0)).unwrap_or_default();
            oldest = oldest.max(age);
        }
    }
    (count, oldest)
}

/// A route as the executor knows it, from the one route check (`RouteCache::check`): the
/// route object the name stands for now and its compiled history limits, or gone.
fn route_now(ctx: &Executor, route: &RouteKey) -> Option<RouteNow> {
    let default_window = ctx.shared.config.replay_window;
    match ctx.shared.routes.check(route, None) {
        Ok(compiled) => Some(RouteNow::Live {
            uid: compiled.uid.clone(),
            history: compiled.history,
            replay_window: compiled.replay_window.unwrap_or(default_window),
        }),
        // Loaded, and no route of that name: its records go once the windows allow.
        Err(RouteCheck::Gone) => Some(RouteNow::Gone {
            replay_window: default_window,
        }),
        // Not Ready, or the table and the cache disagree for a moment: wait.
        Err(_) => None,
    }
}

/// Prunes every `interval` (sooner while a backlog remains) until `stop`.
pub async fn run(
    ctx: Arc<Executor>,
    store: Store<StatusedDelivery>,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut wait = interval;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        let cached = store.state();
        let (pending, oldest) = backlog(&cached, jiff::Timestamp::now());
        ctx.shared.metrics.backlog(pending, oldest);
        let mut doomed = plan(
            &cached,
            |route| route_now(&ctx, route),
            ctx.shared.config.dedup_window,
            jiff::Timestamp::now(),
        );
        // A latestWins lane's newest success stays while an older delivery of it does.
        doomed.retain(|d| !ctx.index.pinned(&d.namespace, &d.name));
        let backlog = doomed.len();
        wait = if backlog > PRUNE_BATCH {
            Duration::from_secs(1).min(interval)
        } else {
            interval
        };
        if backlog == 0 {
            continue;
        }
        let deleted = futures::stream::iter(doomed.into_iter().take(PRUNE_BATCH))
            .map(|d| delete(&ctx, d))
            .buffer_unordered(DELETE_CONCURRENCY)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        info!(deleted, backlog, "pruned finished deliveries");
    }
}

async fn delete(ctx: &Executor, d: Doomed) -> bool {
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.shared.client.clone(), &d.namespace);
    // The uid precondition: never delete a record that was recreated under the same name.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: d.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&d.name, &params).await {
        Ok(_) => {
            debug!(delivery = %d.name, "pruned");
            true
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => false,
        Err(e) => {
            warn!(error = %e, delivery = %d.name, "could not prune delivery");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{DeliveryPhase, StatusedDeliveryStatus};

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn delivery(
        route: &str,
        name: &str,
        phase: Option<DeliveryPhase>,
        secs: i64,
    ) -> Arc<StatusedDelivery> {
        let mut d = StatusedDelivery::fixture(name, route);
        d.spec.route_uid = Some("route-uid".into());
        d.metadata.creation_timestamp = Some(Time(at(secs)));
        d.status = phase.map(|phase| StatusedDeliveryStatus {
            phase,
            completed_at: Some(Time(at(secs + 1))),
            ..Default::default()
        });
        Arc::new(d)
    }

    /// The route exists, as the object (uid `route-uid`) that accepted the fixtures' events.
    fn live(history: HistoryLimits) -> RouteNow {
        RouteNow::Live {
            uid: Some("route-uid".into()),
            history,
            replay_window: Duration::ZERO,
        }
    }

    fn limits(succeeded: usize) -> HistoryLimits {
        HistoryLimits {
            succeeded,
            failed: 1,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn prunes_per_route_oldest_first_and_never_what_is_running() {
        let ok = Some(DeliveryPhase::Succeeded);
        let cached = vec![
            delivery("a", "a3", ok, 30),
            delivery("a", "a1", ok, 10),
            delivery("a", "a2", ok, 20),
            delivery("a", "a0", None, 0),
            delivery("b", "b1", ok, 5),
        ];
        let doomed = plan(&cached, |_| Some(live(limits(1))), Duration::ZERO, at(100));
        let names: Vec<_> = doomed.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a1", "a2"]);
        assert_eq!(doomed[0].uid.as_deref(), Some("uid-a1"));
    }

    #[test]
    fn the_backlog_counts_unfinished_deliveries_and_the_oldest_age() {
        let cached = vec![
            delivery("a", "done", Some(DeliveryPhase::Succeeded), 0),
            delivery("a", "waiting", None, 40),
            delivery("a", "retrying", Some(DeliveryPhase::Running), 70),
        ];
        assert_eq!(backlog(&cached, at(100)), (2, Duration::from_secs(60)));
        assert_eq!(backlog(&[], at(100)), (0, Duration::ZERO));
    }

    #[test]
    fn nothing_younger_than_the_dedup_window_is_pruned() {
        let ok = Some(DeliveryPhase::Succeeded);
        let cached = vec![
            delivery("a", "old", ok, 0),
            delivery("a", "recent", ok, 50),
            delivery("a", "newest", ok, 90),
        ];
        let window = Duration::from_secs(60);
        let doomed = plan(&cached, |_| Some(live(limits(1))), window, at(100));
        let names: Vec<_> = doomed.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["old"],
            "recent is beyond the limit but inside the window"
        );
    }

    #[test]
    fn routes_whose_limits_are_unknown_are_left_alone() {
        let cached = vec![
            delivery("a", "a1", Some(DeliveryPhase::Failed), 0),
            delivery("a", "a2", Some(DeliveryPhase::Failed), 1),
        ];
        assert!(plan(&cached, |_| None, Duration::ZERO, at(100)).is_empty());
        assert_eq!(
            plan(&cached, |_| Some(live(limits(1))), Duration::ZERO, at(100)).len(),
            1
        );
    }

    #[test]
    fn a_gone_routes_records_are_kept_through_the_dedup_window_then_all_deleted() {
        let ok = Some(DeliveryPhase::Succeeded);
        let cached = vec![
            delivery("a", "old", ok, 0),
            delivery("a", "recent", ok, 50),
            delivery("a", "failed", Some(DeliveryPhase::Failed), 10),
            delivery("a", "running", None, 0),
        ];
        let gone = |_: &RouteKey| {
            Some(RouteNow::Gone {
                replay_window: Duration::ZERO,
            })
        };
        let window = Duration::from_secs(60);
        let names = |doomed: Vec<Doomed>| doomed.into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(
            names(plan(&cached, gone, window, at(100))),
            ["old", "failed"],
            "recent is inside the window; running is the executor's to finish first"
        );
        assert_eq!(
            names(plan(&cached, gone, window, at(200))),
            ["old", "failed", "recent"]
        );
    }

    #[test]
    fn records_of_an_earlier_route_of_the_same_name_keep_no_history() {
        let ok = Some(DeliveryPhase::Succeeded);
        let mut earlier = StatusedDelivery::clone(&delivery("a", "earlier", ok, 10));
        earlier.spec.route_uid = Some("deleted-route-uid".into());
        let cached = vec![Arc::new(earlier), delivery("a", "current", ok, 0)];
        let doomed = plan(&cached, |_| Some(live(limits(5))), Duration::ZERO, at(100));
        let names: Vec<_> = doomed.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["earlier"], "the live route keeps its own five");
    }
}
