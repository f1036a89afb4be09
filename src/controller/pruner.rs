//! Deletes finished deliveries beyond their route's history limits.
//!
//! Works from the executor's watch cache, never a LIST: every `interval` it plans over the
//! cached deliveries (pure, [`plan`]) and deletes at most [`PRUNE_BATCH`] of them, at most
//! [`DELETE_CONCURRENCY`] at a time, oldest first. A delivery younger than the dedup window is
//! never deleted, whatever the history limits say: its name is what makes a redelivered
//! event a duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::history::{Finished, to_prune};
use crate::api::StatusedDelivery;
use crate::context::Context;
use crate::route::RouteKey;
use crate::route::history::HistoryLimits;
use crate::routing::RouteState;

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

/// Which cached deliveries to delete now, oldest first. `limits` gives a route's history
/// limits, or `None` while they cannot be known (nothing is deleted on a guess).
pub fn plan(
    deliveries: &[Arc<StatusedDelivery>],
    limits: impl Fn(&RouteKey) -> Option<(HistoryLimits, Duration)>,
    dedup_window: Duration,
    now: jiff::Timestamp,
) -> Vec<Doomed> {
    let mut by_route: BTreeMap<RouteKey, Vec<(Finished, Option<String>)>> = BTreeMap::new();
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
            .push((finished, d.metadata.uid.clone()));
    }
    let mut doomed = Vec::new();
    for (route, items) in by_route {
        let Some((limits, replay_window)) = limits(&route) else {
            continue;
        };
        let uids: BTreeMap<String, (Option<String>, jiff::Timestamp)> = items
            .iter()
            .map(|(f, uid)| (f.name.clone(), (uid.clone(), f.at)))
            .collect();
        let finished = items.into_iter().map(|(f, _)| f).collect();
        for name in to_prune(finished, &limits, now, dedup_window, replay_window) {
            let (uid, at) = uids.get(&name).cloned().unwrap_or((None, now));
            doomed.push(Doomed {
                namespace: route.namespace.clone(),
                name,
                uid,
                at,
            });
        }
    }
    doomed.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.name.cmp(&b.name)));
    doomed
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

/// A route's history limits and replay window as the executor knows them.
fn limits_of(ctx: &Context, route: &RouteKey) -> Option<(HistoryLimits, Duration)> {
    let default_window = ctx.config.replay_window;
    match ctx.table.lookup(route) {
        Some(RouteState::Ready(route)) => {
            Some((route.history, route.replay_window.unwrap_or(default_window)))
        }
        // Loaded and gone: the route was deleted and its deliveries go with it (owner
        // reference); until the garbage collector gets there, the defaults apply.
        None if ctx.is_ready() => Some((HistoryLimits::default(), default_window)),
        _ => None,
    }
}

/// Prunes every `interval` (sooner while a backlog remains) until `stop`.
pub async fn run(
    ctx: Arc<Context>,
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
        ctx.metrics.backlog(pending, oldest);
        let doomed = plan(
            &cached,
            |route| limits_of(&ctx, route),
            ctx.config.dedup_window,
            jiff::Timestamp::now(),
        );
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

async fn delete(ctx: &Context, d: Doomed) -> bool {
    let api: Api<StatusedDelivery> = Api::namespaced(ctx.client.clone(), &d.namespace);
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
        d.metadata.creation_timestamp = Some(Time(at(secs)));
        d.status = phase.map(|phase| StatusedDeliveryStatus {
            phase,
            completed_at: Some(Time(at(secs + 1))),
            ..Default::default()
        });
        Arc::new(d)
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
        let doomed = plan(
            &cached,
            |_| Some((limits(1), Duration::ZERO)),
            Duration::ZERO,
            at(100),
        );
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
        let doomed = plan(
            &cached,
            |_| Some((limits(1), Duration::ZERO)),
            window,
            at(100),
        );
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
            plan(
                &cached,
                |_| Some((limits(1), Duration::ZERO)),
                Duration::ZERO,
                at(100)
            )
            .len(),
            1
        );
    }
}
