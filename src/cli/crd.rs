//! `statused-operator crd`: the CRDs as YAML, generated from the Rust types.

use kube::CustomResourceExt;

use crate::api::{StatusedDelivery, StatusedRoute};

/// Both CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [StatusedRoute::crd(), StatusedDelivery::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
