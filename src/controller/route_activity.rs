//! `lastEvent` and `lastDelivery` on each route, coalesced.
//!
//! The executor records what it saw per route in memory; a flush every few seconds writes
//! each route whose fields changed since its last write, once. A burst of 10,000 events
//! therefore costs one route status write per route and interval instead of two per event,
//! and an idle route costs none. Memory: one entry per route (bounded by the routes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use tracing::{debug, warn};

use crate::api::{LastDelivery, LastEvent, StatusedRoute};
use crate::route::RouteKey;
use crate::route_cache::{RouteCache, RouteIndex};

/// Field manager for the route status fields the executor owns. Separate from the route
/// reconciler's so that neither apply removes the other's fields.
pub const ROUTE_ACTIVITY_MANAGER: &str = "statused-operator-delivery";

/// What a route's status says about its latest event and delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub last_event: LastEvent,
    pub last_delivery: LastDelivery,
    /// The route object the event was accepted for (the delivery's routeUID): activity of a
    /// route deleted and applied again is never written on the new object.
    pub route_uid: Option<String>,
}

#[derive(Debug, Default)]
struct Entry {
    latest: Option<Activity>,
    written: Option<Activity>,
}

/// The latest activity per route, and what was last written.
#[derive(Debug, Default)]
pub struct RouteActivity(Mutex<HashMap<RouteKey, Entry>>);

impl RouteActivity {
    /// Records `activity` unless the route already has a newer event recorded (deliveries
    /// finish out of order; the status shows the most recently received event).
    pub fn note(&self, route: RouteKey, activity: Activity) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(route).or_default();
        let newer_known = entry.latest.as_ref().is_some_and(|l| {
            l.route_uid == activity.route_uid
                && l.last_event.received_at.0 > activity.last_event.received_at.0
                && l.last_delivery.name != activity.last_delivery.name
        });
        if !newer_known {
            entry.latest = Some(activity);
        }
    }

    /// The routes whose latest activity has not been written yet.
    pub fn unwritten(&self) -> Vec<(RouteKey, Activity)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter_map(|(k, e)| {
                let latest = e.latest.as_ref()?;
                (e.written.as_ref() != Some(latest)).then(|| (k.clone(), latest.clone()))
            })
            .collect()
    }

    /// `activity` is now on the route.
    pub fn written(&self, route: &RouteKey, activity: Activity) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(route) {
            entry.written = Some(activity);
        }
    }

    /// Keeps the activity `keep` says yes to, given its route and route uid.
    pub fn retain(&self, mut keep: impl FnMut(&RouteKey, Option<&str>) -> bool) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, e| {
                let uid = e.latest.as_ref().and_then(|l| l.route_uid.as_deref());
                keep(k, uid)
            });
    }

    /// The route is gone: forget it.
    pub fn forget(&self, route: &RouteKey) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(route);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes unwritten activity every `interval` until `stop`, then once more.
pub async fn flush_every(
    client: Client,
    activity: Arc<RouteActivity>,
    routes: Arc<RouteCache>,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let stopping = tokio::select! {
            () = &mut stop => true,
            () = tokio::time::sleep(interval) => false,
        };
        // Per-route state of a deleted route must not outlive it, nor be written on a route
        // applied again under its name.
        activity.retain(|route, uid| {
            routes
                .cached_uid(route)
                .is_some_and(|current| uid.is_none() || current.as_deref() == uid)
        });
        flush(&client, &activity).await;
        if stopping {
            return;
        }
    }
}

/// One write per route with unwritten activity. A failure is logged and retried at the next
/// flush: the delivery records are what counts.
pub async fn flush(client: &Client, activity: &RouteActivity) {
    for (route, latest) in activity.unwritten() {
        let patch = serde_json::json!({
            "apiVersion": StatusedRoute::api_version(&()),
            "kind": StatusedRoute::kind(&()),
            "status": {
                "lastEvent": latest.last_event,
                "lastDelivery": latest.last_delivery,
            },
        });
        let api: Api<StatusedRoute> = Api::namespaced(client.clone(), &route.namespace);
        match api
            .patch_status(
                &route.name,
                &PatchParams::apply(ROUTE_ACTIVITY_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => activity.written(&route, latest),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                debug!(%route, "route gone; its activity is forgotten");
                activity.forget(&route);
            }
            Err(e) => warn!(error = %e, %route, "could not record last delivery on route"),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn activity(delivery: &str, received: i64, phase: &str) -> Activity {
        Activity {
            last_event: LastEvent {
                id: format!("id-{delivery}"),
                type_: "t".into(),
                received_at: Time(jiff::Timestamp::from_second(received).unwrap()),
                matched_rules: vec!["r".into()],
            },
            last_delivery: LastDelivery {
                name: delivery.into(),
                phase: phase.into(),
                completed_at: None,
            },
            route_uid: Some("uid-1".into()),
        }
    }

    #[test]
    fn many_deliveries_of_one_route_make_one_write_of_the_newest() {
        let routes = RouteActivity::default();
        let key = RouteKey::new("ns", "r");
        for i in 0..1000 {
            routes.note(
                key.clone(),
                activity(&format!("d{i}"), 100 + i, "Succeeded"),
            );
        }
        let unwritten = routes.unwritten();
        assert_eq!(unwritten.len(), 1);
        assert_eq!(unwritten[0].1.last_delivery.name, "d999");
        routes.written(&key, unwritten[0].1.clone());
        assert!(
            routes.unwritten().is_empty(),
            "nothing changed, nothing to write"
        );
    }

    #[test]
    fn an_older_event_finishing_late_does_not_replace_a_newer_one() {
        let routes = RouteActivity::default();
        let key = RouteKey::new("ns", "r");
        routes.note(key.clone(), activity("new", 200, "Running"));
        routes.note(key.clone(), activity("old", 100, "Succeeded"));
        assert_eq!(routes.unwritten()[0].1.last_delivery.name, "new");
        // The same delivery moving on (Running -> Succeeded) does replace it.
        routes.note(key.clone(), activity("new", 200, "Succeeded"));
        assert_eq!(routes.unwritten()[0].1.last_delivery.phase, "Succeeded");
    }

    #[test]
    fn activity_of_a_route_applied_again_is_kept_only_for_the_object_it_was_for() {
        let routes = RouteActivity::default();
        let key = RouteKey::new("ns", "r");
        routes.note(key.clone(), activity("d", 1, "Succeeded"));
        // The route was deleted and applied again (uid-2) before the flush.
        routes.retain(|_, uid| uid == Some("uid-2"));
        assert!(routes.is_empty(), "not written on the new route object");
        let mut newer_object = activity("e", 0, "Succeeded");
        newer_object.route_uid = Some("uid-2".into());
        routes.note(key.clone(), activity("d", 5, "Succeeded"));
        routes.note(key.clone(), newer_object);
        assert_eq!(
            routes.unwritten()[0].1.last_delivery.name,
            "e",
            "an older time on another object is not 'older'"
        );
    }

    #[test]
    fn forgotten_routes_leave_nothing_behind() {
        let routes = RouteActivity::default();
        let key = RouteKey::new("ns", "r");
        routes.note(key.clone(), activity("d", 1, "Succeeded"));
        routes.forget(&key);
        assert!(routes.is_empty());
    }
}
