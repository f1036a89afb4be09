//! `StatusedRedelivery`: a request to run a finished delivery's targets again.
//!
//! Redelivery is a role, not a write to the delivery: whoever may create these (the chart
//! aggregates that into `edit`) may ask for a real, signed event's targets to run again, and
//! nothing more. The operator finds the delivery of that name in the request's namespace,
//! reopens it once (the request's uid is the token), and records the outcome here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Asks the operator to run a finished StatusedDelivery's targets again, once.
// One line per printed column: the table `kubectl get` shows.
#[rustfmt::skip]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "statused.dev", version = "v1alpha1", kind = "StatusedRedelivery", plural = "statusedredeliveries",
    namespaced, status = "StatusedRedeliveryStatus", shortname = "sredel", category = "statused",
    doc = "A request to run a finished StatusedDelivery's targets again; each request is honoured once.",
    printcolumn(name = "Delivery", type_ = "string", json_path = ".spec.delivery"),
    printcolumn(name = "Targets", type_ = "string", json_path = ".spec.targets"),
    printcolumn(name = "Accepted", type_ = "string", json_path = r#".status.conditions[?(@.type=="Accepted")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Accepted")].reason"#),
    printcolumn(name = "Round", type_ = "integer", json_path = ".status.round"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
// A request is honoured once, as it was made (API servers from 1.25 enforce the rule; the
// chart's roles grant no update either).
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "spec is immutable: create a new request instead"
}]))]
pub struct StatusedRedeliverySpec {
    /// The StatusedDelivery, in this namespace, to run again.
    pub delivery: String,
    /// `Failed` (default): the targets that failed; `All`: every target.
    #[serde(default)]
    pub targets: RedeliveryTargets,
    /// Send targets that a newer event for their ordering key superseded too, and call the
    /// targets run again without waiting for their key's order (see a route's `ordering`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_ordering: bool,
}

/// Which of the delivery's targets run again.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RedeliveryTargets {
    #[default]
    Failed,
    All,
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusedRedeliveryStatus {
    /// `Accepted`: True once the delivery was reopened (`Redelivering`) or had nothing to
    /// run again (`NothingToRedeliver`); False when it does not exist (`DeliveryNotFound`);
    /// Unknown while it is still running (`DeliveryNotFinished`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The delivery's redelivery round this request started (its `status.redeliveries`).
    pub round: Option<u32>,
    /// How many targets run again.
    pub targets: Option<u32>,
    /// The number this request takes among the delivery's honoured requests
    /// (`status.redeliveryRequests`), written before the delivery is reopened: a retry
    /// then knows whether its reopen landed, whatever other requests did since.
    pub claim: Option<u32>,
}
