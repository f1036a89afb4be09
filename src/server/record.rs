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
        other => StoreError::Unavailable(other.to_string()),
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
