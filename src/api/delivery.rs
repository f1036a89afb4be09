//! `StatusedDelivery`: the durable record of one accepted event for one route.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::route::{MAX_RULES, MAX_TARGETS_PER_RULE, OrderingPolicy};
use crate::targets::outcome::CreatedObject;
use crate::targets::outcome::RunPhase;

/// The most (rule, target) pairs one event matches: every target of every rule of a route
/// (`spec.matched`, and one `status.targets` entry each).
pub const MAX_MATCHED_TARGETS: usize = MAX_RULES * MAX_TARGETS_PER_RULE;
/// The most redelivery request uids a delivery keeps (`status.recentRedeliveryRequests`):
/// the executor keeps the last `controller::redeliver::RECENT_REQUESTS`, which
/// `tests/crd_drift.rs` checks is this.
pub const MAX_RECENT_REDELIVERY_REQUESTS: usize = 32;

/// One accepted event for one route, the targets it matched and what happened to each.
// One line per printed column: the table `kubectl get` shows.
#[rustfmt::skip]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "statused.dev", version = "v1alpha1", kind = "StatusedDelivery", plural = "statuseddeliveries",
    namespaced, status = "StatusedDeliveryStatus", shortname = "sdel", category = "statused",
    doc = "The durable record of one Statused event accepted for one route, and each target's outcome.",
    printcolumn(name = "Route", type_ = "string", json_path = ".spec.route"),
    printcolumn(name = "Event Type", type_ = "string", json_path = ".spec.event.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(name = "Runs", type_ = "string", json_path = ".status.targets[*].run.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Created", type_ = "string", json_path = ".status.targets[*].created.name", priority = 1),
    printcolumn(name = "Targets", type_ = "string", json_path = ".status.targets[*].phase", priority = 1)
)]
#[serde(rename_all = "camelCase")]
// Only the receiver creates deliveries, and the executor acts on their spec: it may never
// change after the create (API servers from 1.25 enforce the rule; older ones ignore it, and
// the chart's RBAC still grants writes to the operator alone).
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "spec is immutable: a delivery records the event as it was received"
}]))]
pub struct StatusedDeliverySpec {
    /// The StatusedRoute (same namespace) that accepted the event.
    pub route: String,
    /// The uid of that route object. A delivery has no ownerReference to its route: the
    /// record outlives a route deleted and applied again (a GitOps re-sync), so that the
    /// same event id stays a duplicate for the dedup window; this uid is how the executor
    /// knows the route it belonged to is gone, and how the pruner knows its history is
    /// no longer any route's.
    #[serde(default, rename = "routeUID", skip_serializing_if = "Option::is_none")]
    pub route_uid: Option<String>,
    pub event: DeliveredEvent,
    /// The (rule, target) pairs the event matched, in route order (at most 256: 32 rules of
    /// 8 targets).
    #[schemars(length(max = MAX_MATCHED_TARGETS))]
    pub matched: Vec<MatchedTarget>,
    /// The W3C trace context of the receipt that recorded this delivery, set when traces are
    /// exported (`--otlp-endpoint`): every later attempt, by whichever replica, joins that
    /// trace, and HTTP targets receive it as `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl StatusedDelivery {
    /// The record of `envelope` (whose `data` is passed on its own, moved rather than
    /// copied) accepted by route `route` (uid `route_uid`) of `namespace`, named `name`, with
    /// the (rule, target) pairs it matched.
    ///
    /// No ownerReference: the garbage collector would delete the record with its route, and
    /// with it the only memory that this event was delivered. The route's uid is kept in the
    /// spec instead; the pruner deletes a gone route's records once the dedup window has
    /// passed.
    pub fn for_event(
        name: String,
        namespace: &str,
        route: &str,
        route_uid: Option<&str>,
        envelope: &crate::event::Envelope,
        data: serde_json::Value,
        matched: Vec<MatchedTarget>,
    ) -> Self {
        use crate::naming::{LABEL_EVENT_TYPE, LABEL_ROUTE, label_value};
        let labels = [
            (
                "app.kubernetes.io/managed-by".to_string(),
                "statused-operator".to_string(),
            ),
            (LABEL_ROUTE.to_string(), label_value(route)),
            (LABEL_EVENT_TYPE.to_string(), label_value(&envelope.type_)),
        ]
        .into_iter()
        .collect();
        StatusedDelivery {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: StatusedDeliverySpec {
                route: route.to_string(),
                route_uid: route_uid.map(str::to_string),
                event: DeliveredEvent {
                    id: envelope.id.clone(),
                    type_: envelope.type_.clone(),
                    source: envelope.source.clone(),
                    time: envelope.time.clone(),
                    subject: envelope.subject.clone(),
                    data,
                },
                matched,
                traceparent: None,
            },
            status: None,
        }
    }
}

/// The event as received (CloudEvents attributes and data).
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub source: String,
    pub time: Option<String>,
    pub subject: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub data: serde_json::Value,
}

impl DeliveredEvent {
    /// The envelope as the JSON object expressions see.
    pub fn to_value(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "specversion": "1.0", "id": self.id, "type": self.type_, "source": self.source,
            "data": self.data,
        });
        if let Some(time) = &self.time {
            v["time"] = time.as_str().into();
        }
        if let Some(subject) = &self.subject {
            v["subject"] = subject.as_str().into();
        }
        v
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchedTarget {
    pub rule: String,
    /// Index of the target within the rule.
    pub target: u32,
    /// The target's kind, e.g. `githubDispatch`.
    pub kind: String,
    /// The ordering this event has at the target (its rendered key and the policy), when
    /// the route declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderedBy>,
    /// The target follows the run it starts to its end (the route's `follow`, as it was
    /// when the event was received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowedBy>,
    /// The rule's `after`: sent only once the targets of rule `after.rule` ended so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<super::route::After>,
}

impl MatchedTarget {
    /// The (rule, target, kind) of `t`, with nothing else the receiver fixed (no ordering,
    /// follow or after): a target as new.
    pub fn bare(t: &TargetStatus) -> Self {
        Self {
            rule: t.rule.clone(),
            target: t.target,
            kind: t.kind.clone(),
            ordering: None,
            follow: None,
            after: None,
        }
    }
}

/// How a target follows the run it starts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FollowedBy {
    /// A run not ended this long after it was started ends TimedOut.
    pub timeout_seconds: u32,
    /// The run is cancelled when a newer event's run starts for the same key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_superseded: bool,
}

/// An event's place in the order of its key at one target.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderedBy {
    /// The route's key template rendered from this event (at most 128 bytes; a longer key
    /// is kept as `sha256:` and its hash).
    pub key: String,
    pub policy: OrderingPolicy,
}

/// Pending: not tried yet. Running: tried, and due again at `nextAttemptAt` (see `lastError`).
/// Succeeded, Failed, Superseded, Skipped: finished. A target is Skipped when its rule's
/// `after` did not happen (the rule it waits for ended otherwise): it is not called. A target is Superseded when its route orders it
/// `latestWins` and a newer event for its key succeeded there first (`supersededBy`): it is
/// not called. A delivery is Failed when all its targets are finished and any failed,
/// Superseded when all were superseded, and Succeeded otherwise.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeliveryPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Superseded,
    Skipped,
}

impl DeliveryPhase {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DeliveryPhase::Succeeded
                | DeliveryPhase::Failed
                | DeliveryPhase::Superseded
                | DeliveryPhase::Skipped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryPhase::Pending => "Pending",
            DeliveryPhase::Running => "Running",
            DeliveryPhase::Succeeded => "Succeeded",
            DeliveryPhase::Failed => "Failed",
            DeliveryPhase::Superseded => "Superseded",
            DeliveryPhase::Skipped => "Skipped",
        }
    }
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusedDeliveryStatus {
    #[serde(default)]
    pub phase: DeliveryPhase,
    /// Attempts made across all targets.
    #[serde(default)]
    pub attempts: u32,
    /// One entry per matched (rule, target) pair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MATCHED_TARGETS))]
    pub targets: Vec<TargetStatus>,
    pub completed_at: Option<Time>,
    /// Redeliveries asked for with the `statused.dev/redeliver` annotation and carried out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redeliveries: u32,
    /// The last `statused.dev/redeliver` value honoured: each value is honoured once.
    pub redelivery_token: Option<String>,
    /// `StatusedRedelivery` requests honoured, all told: request number N is the one whose
    /// reopen took this count from N-1 to N (each request claims its number first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redelivery_requests: u32,
    /// The uids of the last requests honoured (at most 32), oldest first: the last of them
    /// is request number `redeliveryRequests`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RECENT_REDELIVERY_REQUESTS))]
    pub recent_redelivery_requests: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub rule: String,
    pub target: u32,
    pub kind: String,
    #[serde(default)]
    pub phase: DeliveryPhase,
    #[serde(default)]
    pub attempts: u32,
    pub last_response_code: Option<u16>,
    /// Short description of the last failure; never contains secrets.
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Time>,
    /// Set before a call to a target with `onUncertain: fail`, cleared with its outcome: a
    /// delivery found with it set was in flight when the operator stopped.
    pub call_started_at: Option<Time>,
    pub completed_at: Option<Time>,
    /// The PipelineRun or Workflow this target created for the event.
    pub created: Option<CreatedObject>,
    /// Ordered targets: the delivery this one waits for (an earlier event for its key, with
    /// `inOrder`; a newer one, with `latestWins`), while it waits.
    pub waiting_for: Option<String>,
    /// `latestWins`: the delivery of the newer event for its key that succeeded at this
    /// target, so this one was not sent (phase Superseded).
    pub superseded_by: Option<String>,
    /// Run again by a redelivery that asked to ignore the ordering: called whatever the
    /// other events for its key did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_ordering: bool,
    /// The run this target started and follows (`follow`): its phase, times and message.
    /// While it runs, the target is Running; it ends Succeeded with the run, Failed
    /// otherwise.
    pub run: Option<RunStatus>,
    /// The `eventID` a Tekton EventListener answered with.
    #[serde(
        default,
        rename = "listenerEventID",
        skip_serializing_if = "Option::is_none"
    )]
    pub listener_event_id: Option<String>,
}

impl StatusedDelivery {
    /// A delivery of event `name` for `route` in namespace `ns`, no status: a fixture for
    /// unit tests.
    #[cfg(test)]
    pub fn fixture(name: &str, route: &str) -> Self {
        Self {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: StatusedDeliverySpec {
                route: route.into(),
                route_uid: None,
                event: DeliveredEvent {
                    id: name.into(),
                    type_: "t".into(),
                    source: "s".into(),
                    time: None,
                    subject: None,
                    data: serde_json::Value::Null,
                },
                matched: vec![],
                traceparent: None,
            },
            status: None,
        }
    }

    /// The uid of the route object that accepted the event, when recorded: `spec.routeUID`,
    /// or for a record made before it existed, the ownerReference that held it then.
    pub fn route_uid(&self) -> Option<&str> {
        self.spec.route_uid.as_deref().or_else(|| {
            self.metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.iter().find(|o| o.kind == "StatusedRoute"))
                .map(|o| o.uid.as_str())
        })
    }
}

impl TargetStatus {
    pub fn pending(m: &MatchedTarget) -> Self {
        Self {
            rule: m.rule.clone(),
            target: m.target,
            kind: m.kind.clone(),
            phase: DeliveryPhase::Pending,
            attempts: 0,
            last_response_code: None,
            last_error: None,
            next_attempt_at: None,
            call_started_at: None,
            completed_at: None,
            created: None,
            waiting_for: None,
            superseded_by: None,
            ignore_ordering: false,
            listener_event_id: None,
            run: None,
        }
    }
}

impl RunStatus {
    /// A run followed from now until `until`, not read yet; `url` its page, when known.
    pub fn following(until: Time, url: Option<String>) -> Self {
        Self {
            phase: RunPhase::Running,
            follow_until: until,
            started_at: None,
            completed_at: None,
            message: None,
            url,
            reads: 0,
        }
    }
}

/// The run a target started, as last read.
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    #[serde(default)]
    pub phase: RunPhase,
    /// Followed until then: a run not ended by this time is TimedOut.
    pub follow_until: Time,
    /// When the run started and ended, as its controller says.
    pub started_at: Option<Time>,
    pub completed_at: Option<Time>,
    /// The run's own reason and message once it ended (at most 256 bytes).
    pub message: Option<String>,
    /// Where to see the run, when its service gives a page (a GitHub workflow run's; at
    /// most 2048 bytes).
    pub url: Option<String>,
    /// Reads of the run so far.
    #[serde(default)]
    pub reads: u32,
}
