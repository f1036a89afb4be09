//! Schema pieces schemars cannot derive: free-form JSON and condition list-maps.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// Any JSON value, kept as sent (`x-kubernetes-preserve-unknown-fields`).
pub fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// A JSON object whose fields are kept as sent.
pub fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// The most conditions a status holds: one per condition type, and the operator writes one
/// or two (`Ready`, `Accepted`); room for a few more types, or another controller's.
pub const MAX_CONDITIONS: usize = 8;

/// `metav1.Condition` list as a list-map keyed on `type`, so that server-side apply merges
/// conditions by type like every built-in resource does; at most [`MAX_CONDITIONS`].
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let item = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition::json_schema(generator);
    json_schema!({
        "type": "array",
        "items": item,
        "maxItems": MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}
