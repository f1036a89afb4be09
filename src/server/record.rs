//! The receiver's store on the API server: a `StatusedDelivery` create is what makes an event
//! durable; and the watch that counts the stored ones (`stored.rs`), on every replica.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::webhook::{DeliveryStore, StoreError};
use crate::api::StatusedDelivery;
use crate::health::Health;
use crate::stored::StoredDeliveries;

/// Counts the stored deliveries (in `namespace`, or all) into `stored` until `shutdown`,
/// from a watch of their metadata only: a name per delivery, never an event. Backed off
/// after errors (kube's default: 0.8 s doubling to 30 s); a watch failing for
/// `--unhealthy-after` fails `/healthz`, as the others do.
pub async fn count_stored(
    client: Client,
    namespace: Option<String>,
    stored: Arc<StoredDeliveries>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<PartialObjectMeta<StatusedDelivery>> = match namespace.as_deref() {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let events = watcher(api, watcher::Config::default().page_size(500))
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => {
                    health.ok("stored deliveries");
                    stored.observe(&event);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch of stored deliveries failed; retrying");
                    health.failed("stored deliveries", std::time::Instant::now());
                }
            }
            futures::future::ready(())
        });
    tokio::select! {
        () = events => {}
        () = shutdown => {}
    }
}

pub struct KubeDeliveries(pub Client);

impl KubeDeliveries {
    fn api(&self, namespace: &str) -> Api<StatusedDelivery> {
        Api::namespaced(self.0.clone(), namespace)
    }
}

fn store_error(e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(status) if status.code == 409 => StoreError::AlreadyExists,
        // The namespace's ResourceQuota (e.g. on `count/statuseddeliveries.statused.dev`)
        // refused the create: the team's own bound, not the operator's trouble.
        kube::Error::Api(status)
            if status.code == 403 && status.message.contains("exceeded quota") =>
        {
            StoreError::OverQuota(quota_name(&status.message))
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The quota named in the API server's refusal ("... exceeded quota: NAME, requested: ..."),
/// or empty when the message has another shape.
fn quota_name(message: &str) -> String {
    message
        .split_once("exceeded quota: ")
        .and_then(|(_, rest)| rest.split([',', ' ']).next())
        .filter(|name| !name.is_empty() && name.len() <= 253)
        .unwrap_or_default()
        .to_string()
}

impl DeliveryStore for KubeDeliveries {
    fn create<'a>(
        &'a self,
        delivery: &'a StatusedDelivery,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let namespace = delivery.metadata.namespace.as_deref().unwrap_or_default();
        let api = self.api(namespace);
        async move {
            api.create(&crate::naming::post_params(), delivery)
                .await
                .map(|_| ())
                .map_err(store_error)
        }
        .boxed()
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<StatusedDelivery, StoreError>> {
        async move { self.api(namespace).get(name).await.map_err(store_error) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quota_is_named_from_the_api_servers_refusal() {
        let message = "statuseddeliveries.statused.dev \"r-1\" is forbidden: exceeded quota: \
                       deliveries, requested: count/statuseddeliveries.statused.dev=1, used: \
                       count/statuseddeliveries.statused.dev=3, limited: \
                       count/statuseddeliveries.statused.dev=3";
        assert_eq!(super::quota_name(message), "deliveries");
        assert_eq!(super::quota_name("forbidden"), "");
    }
}
