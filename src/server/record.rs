//! The receiver's store on the API server: a `StatusedDelivery` create is what makes an event
//! durable.

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::{Api, Client};

use super::webhook::{DeliveryStore, StoreError};
use crate::api::StatusedDelivery;

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
