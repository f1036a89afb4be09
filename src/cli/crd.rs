//! `statused-operator crd`: the CRDs as YAML, generated from the Rust types.

use kube::CustomResourceExt;

use crate::api::{StatusedDelivery, StatusedRoute};

/// The CRDs as a Helm template (`charts/statused-operator/templates/crds.yaml`): installed
/// *and upgraded* with the release (Helm never upgrades a chart's `crds/` directory), kept
/// when the release is uninstalled (deleting a CRD deletes every route and delivery), and
/// switched off with `crds.install=false` for clusters that manage CRDs themselves.
pub fn chart_crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::from(
        "# Generated from src/api by `just crds`; do not edit.\n{{- if .Values.crds.install }}\n",
    );
    for crd in [StatusedRoute::crd(), StatusedDelivery::crd()] {
        let mut crd = crd;
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("helm.sh/resource-policy".into(), "keep".into());
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    out.push_str("{{- end }}\n");
    Ok(out)
}

/// Both CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [StatusedRoute::crd(), StatusedDelivery::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
