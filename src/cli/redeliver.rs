//! `statused-operator redeliver` (also `kubectl statused redeliver`): asks the operator to run
//! a finished delivery's targets again by creating a `StatusedRedelivery` for it; in bulk,
//! one for every delivery of a route that failed within a window. Creating requests is what
//! the chart's `-redeliver` role allows (aggregated into `edit`); writing deliveries is not.

use std::time::Duration;

use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{
    DeliveryPhase, RedeliveryTargets, StatusedDelivery, StatusedRedelivery, StatusedRedeliverySpec,
};
use crate::naming::{LABEL_ROUTE, label_value};

/// Which deliveries to redeliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    One(String),
    /// Every delivery of `route` that failed at most `window` ago.
    FailedSince {
        route: String,
        window: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error("name a delivery, or --route with --failed-since")]
    NothingSelected,
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),
}

/// The deliveries of `route` that failed within `window` of `now`. Pure.
pub fn failed_since(
    deliveries: &[StatusedDelivery],
    route: &str,
    window: Duration,
    now: jiff::Timestamp,
) -> Vec<String> {
    let window = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
    let mut names: Vec<String> = deliveries
        .iter()
        .filter(|d| d.spec.route == route)
        .filter(|d| {
            d.status.as_ref().is_some_and(|s| {
                s.phase == DeliveryPhase::Failed
                    && s.completed_at
                        .as_ref()
                        .is_some_and(|at| now.duration_since(at.0) <= window)
            })
        })
        .map(|d| d.name_any())
        .collect();
    names.sort();
    names
}

/// Creates a `StatusedRedelivery` for each selected delivery; returns (delivery, request)
/// names.
pub async fn redeliver(
    client: Client,
    namespace: &str,
    selection: Selection,
    asked: Asked,
) -> Result<Vec<(String, String)>, RedeliverError> {
    let names = match selection {
        Selection::One(name) => vec![name],
        Selection::FailedSince { route, window } => {
            let deliveries: Api<StatusedDelivery> = Api::namespaced(client.clone(), namespace);
            let selector = format!("{LABEL_ROUTE}={}", label_value(&route));
            let listed = deliveries
                .list(&ListParams::default().labels(&selector))
                .await?;
            failed_since(&listed.items, &route, window, jiff::Timestamp::now())
        }
    };
    let requests: Api<StatusedRedelivery> = Api::namespaced(client, namespace);
    let mut made = Vec::new();
    for name in names {
        let created = requests
            .create(&PostParams::default(), &request_for(&name, asked))
            .await?;
        made.push((name, created.name_any()));
    }
    Ok(made)
}

/// What a redelivery asks for beyond the failed targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// Every target, not only the failed ones.
    pub all_targets: bool,
    /// Superseded targets too, ignoring the route's `ordering`.
    pub ignore_ordering: bool,
}

/// A new request for delivery `name`: each one is honoured once, so its name is generated.
pub fn request_for(name: &str, asked: Asked) -> StatusedRedelivery {
    // The API server shortens a long prefix to fit the generated suffix.
    let prefix: String = name.chars().take(200).collect();
    StatusedRedelivery {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", prefix.trim_end_matches(['-', '.']))),
            ..Default::default()
        },
        spec: StatusedRedeliverySpec {
            delivery: name.to_string(),
            targets: if asked.all_targets {
                RedeliveryTargets::All
            } else {
                RedeliveryTargets::Failed
            },
            ignore_ordering: asked.ignore_ordering,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn delivery(name: &str, route: &str, phase: DeliveryPhase, ago: i64) -> StatusedDelivery {
        let mut d = StatusedDelivery::fixture(name, route);
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        d.status = Some(crate::api::StatusedDeliveryStatus {
            phase,
            completed_at: Some(Time(now - jiff::SignedDuration::from_secs(ago))),
            ..Default::default()
        });
        d
    }

    #[test]
    fn failed_since_picks_exactly_the_failed_ones_of_the_route_in_the_window() {
        let now = "2026-11-27T12:00:00Z".parse().unwrap();
        let all = [
            delivery("a-recent", "releases", DeliveryPhase::Failed, 60),
            delivery("b-edge", "releases", DeliveryPhase::Failed, 7200),
            delivery("c-old", "releases", DeliveryPhase::Failed, 7201),
            delivery("d-ok", "releases", DeliveryPhase::Succeeded, 60),
            delivery("e-other", "builds", DeliveryPhase::Failed, 60),
        ];
        assert_eq!(
            failed_since(&all, "releases", Duration::from_secs(7200), now),
            ["a-recent", "b-edge"]
        );
    }
}
