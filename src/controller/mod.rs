//! The controllers: the route reconciler (routes and Secrets into the routing table and route
//! status) and the delivery executor (deliveries into target calls).

pub mod backoff;
pub mod compile;
pub mod delivery;
pub mod history;
pub mod pruner;
pub mod route;
pub mod route_activity;
pub mod status;

use kube::{Api, Client, Resource};

/// An `Api` over one namespace, or all namespaces when the operator is not scoped.
pub fn scoped_api<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Errors a reconcile can end with; each is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
}
