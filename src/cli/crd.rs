//! `statused-operator crd`: the CRDs as YAML, generated from the Rust types.

use kube::CustomResourceExt;

use crate::api::{StatusedDelivery, StatusedRedelivery, StatusedRoute};

/// The CRDs as a Helm template (`charts/statused-operator/templates/crds.yaml`): installed
/// *and upgraded* with the release (Helm never upgrades a chart's `crds/` directory), kept
/// when the release is uninstalled (deleting a CRD deletes every route and delivery), and
/// switched off with `crds.install=false` for clusters that manage CRDs themselves.
pub fn chart_crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::from(
        "# Generated from src/api by `just crds`; do not edit.\n{{- if .Values.crds.install }}\n",
    );
    for crd in [
        StatusedRoute::crd(),
        StatusedDelivery::crd(),
        StatusedRedelivery::crd(),
    ] {
        let mut crd = crd;
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("helm.sh/resource-policy".into(), "keep".into());
        out.push_str("---\n");
        out.push_str(&cel_rules_for_1_25_and_later(&serde_yaml::to_string(&crd)?));
    }
    out.push_str("{{- end }}\n");
    Ok(out)
}

/// CEL rules (`x-kubernetes-validations`) only where the API server knows them (1.25+): an
/// older one rejects the CRD when Helm validates it. Each rule block is wrapped in a
/// `semverCompare` on the cluster's version.
fn cel_rules_for_1_25_and_later(yaml: &str) -> String {
    let mut out = String::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start() != "x-kubernetes-validations:" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        out.push_str("{{- if semverCompare \">=1.25-0\" .Capabilities.KubeVersion.Version }}\n");
        out.push_str(line);
        out.push('\n');
        // The block: list items at the same indent, and their fields deeper.
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            let item = next.trim_start().starts_with("- ") && next_indent == indent;
            if !(item || next_indent > indent) {
                break;
            }
            out.push_str(next);
            out.push('\n');
            lines.next();
        }
        out.push_str("{{- end }}\n");
    }
    out
}

/// The CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [
        StatusedRoute::crd(),
        StatusedDelivery::crd(),
        StatusedRedelivery::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// The API servers this repo tests against predate CEL rules and drop them, so the
    /// generated YAML is where the rule is checked.
    #[test]
    fn a_deliverys_spec_is_immutable_in_the_generated_crd() {
        let yaml = crds_yaml().unwrap();
        let delivery = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .find(|crd| crd["spec"]["names"]["kind"] == "StatusedDelivery")
            .unwrap();
        let spec =
            &delivery["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rules = spec["x-kubernetes-validations"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["rule"], "self == oldSelf");
        // The route's spec stays editable.
        let route = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .find(|crd| crd["spec"]["names"]["kind"] == "StatusedRoute")
            .unwrap();
        let route_spec =
            &route["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert!(route_spec["x-kubernetes-validations"].is_null());
        // A redelivery request is honoured as it was made.
        let request = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .find(|crd| crd["spec"]["names"]["kind"] == "StatusedRedelivery")
            .unwrap();
        let request_spec =
            &request["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            request_spec["x-kubernetes-validations"][0]["rule"],
            "self == oldSelf"
        );
    }
}
