//! `StatusedRoute`: one Statused webhook endpoint and what its events trigger.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::secrets::SecretKeySelector;
pub use crate::targets::TargetKind;

// The bounds of a route's lists. The CRD states each one (`maxItems`), and the route compiler
// checks each again, so that a route over one is not Ready even on an API server whose CRD
// lacks it (an older chart).

/// The most signing Secrets a route names: a rotation needs two. The receiver computes one
/// HMAC over the whole body per secret for every request that carries a signature, before it
/// knows whether the request is authentic (every secret is tried, in constant time), so this
/// bounds the CPU an unauthenticated request can cost: 4 × the body limit of hashing.
pub const MAX_SIGNING_SECRETS: usize = 4;
/// The most rules a route holds: every event is matched against each of them.
pub const MAX_RULES: usize = 32;
/// The most targets one rule triggers.
pub const MAX_TARGETS_PER_RULE: usize = 8;
/// The most values in each of a rule's `match.types`, `match.statuses` and `match.apps`.
pub const MAX_MATCH_VALUES: usize = 64;

/// One Statused webhook endpoint (`/hooks/<namespace>/<name>`) and the rules that decide what
/// each of its events triggers.
#[serde_with::skip_serializing_none]
// One line per printed column: the table `kubectl get` shows.
#[rustfmt::skip]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "statused.dev", version = "v1alpha1", kind = "StatusedRoute",
    namespaced, status = "StatusedRouteStatus", shortname = "sroute", shortname = "sroutes", category = "statused",
    doc = "A Statused webhook endpoint and the pipelines, workflows and messages its events trigger.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Path", type_ = "string", json_path = ".status.webhookPath"),
    printcolumn(name = "Last Event", type_ = "date", json_path = ".status.lastEvent.receivedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct StatusedRouteSpec {
    /// Secrets holding the webhook signing secret, 1 to 4. An event verifies if it is signed
    /// with any of them, so a secret can be rotated without downtime (that needs two). Each
    /// costs one HMAC over the body for every request, signed or forged, before it is
    /// verified: hence the bound. The key defaults to `secret`.
    #[schemars(length(min = 1, max = MAX_SIGNING_SECRETS))]
    pub signing_secrets: Vec<SecretKeySelector>,
    /// Rules (1 to 32) are evaluated in order; every matching rule triggers its targets.
    #[schemars(length(min = 1, max = MAX_RULES))]
    pub rules: Vec<Rule>,
    /// Limit on accepted events (per replica); over it the receiver answers 429 with
    /// `Retry-After`, and Statused retries later.
    pub rate_limit: Option<RateLimit>,
    /// How many finished deliveries to keep, and for how long.
    pub history: Option<History>,
    /// Events whose signed `time` is older than this are refused (Go duration, e.g. `24h`;
    /// `0` disables). Defaults to the operator's `--replay-window` (72h); never longer than
    /// its `--dedup-window`.
    pub replay_window: Option<String>,
    /// How the events are signed: `statused` (default: `X-Statused-Signature: sha256=<hex
    /// HMAC-SHA256 of the body>`), or `standardWebhooks` (`webhook-id`, `webhook-timestamp`
    /// within 5 minutes of now, `webhook-signature: v1,<base64>`; the signing Secrets then
    /// hold `whsec_` secrets, any of which verifies).
    #[serde(default, skip_serializing_if = "SignatureFormat::is_statused")]
    pub signature_format: SignatureFormat,
    /// Who sends the events: `statused` (default: Statused's CloudEvents), or
    /// `appStoreConnect` (App Store Connect's own webhook notifications: JSON:API documents
    /// signed with `x-apple-signature: hmacsha256=<hex>` under the secret given to Apple; the
    /// new state is `data.status`, the old one `data.old_status`, and a ping is answered
    /// without a delivery). `signatureFormat` applies to `statused` only.
    #[serde(default, skip_serializing_if = "EventSource::is_statused")]
    pub source: EventSource,
}

/// Who sends a route's events (see `StatusedRouteSpec::source`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EventSource {
    #[default]
    Statused,
    AppStoreConnect,
}

impl EventSource {
    pub fn is_statused(&self) -> bool {
        *self == EventSource::Statused
    }
}

/// How a route's events are signed (see `StatusedRouteSpec::signature_format`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SignatureFormat {
    #[default]
    Statused,
    StandardWebhooks,
}

impl SignatureFormat {
    pub fn is_statused(&self) -> bool {
        *self == SignatureFormat::Statused
    }
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Average events per minute.
    #[schemars(range(min = 1))]
    pub requests_per_minute: u32,
    /// Events accepted at once before the average applies (default: `requestsPerMinute`).
    pub burst: Option<u32>,
}

/// Finished deliveries kept per route, like a CronJob's history limits.
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Succeeded deliveries kept (default 20).
    pub succeeded: Option<u32>,
    /// Failed deliveries kept (default 50).
    pub failed: Option<u32>,
    /// Finished deliveries older than this are deleted (Go duration, default `168h`).
    pub max_age: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct Rule {
    /// Unique within the route; shown in deliveries.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Which events this rule applies to. Omitted fields match anything.
    #[serde(default, rename = "match")]
    pub match_: RuleMatch,
    /// What to trigger, 1 to 8 targets. Each entry sets exactly one kind.
    #[schemars(length(min = 1, max = MAX_TARGETS_PER_RULE))]
    pub targets: Vec<Target>,
    /// Orders the calls of this rule's targets per key (a target's own `ordering` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// Send this rule's targets only after the targets of another rule ended, when one of
    /// them ended as `phases` says: a run's result (`follow`) or a failure path. The
    /// event must match both rules. Templates read the outcome as `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
}

/// What a rule's targets wait for (`after`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct After {
    /// The rule whose targets' outcome this rule waits for (one without `after` itself).
    #[schemars(length(min = 1, max = 63))]
    pub rule: String,
    /// The outcomes that send this rule's targets, once, when any target of that rule ended
    /// so: `Succeeded` or `Failed` (the target's phase: a trigger that failed for good, or
    /// a followed run that did not succeed), or a followed run's `Cancelled`, `TimedOut` or
    /// `Deleted`. Otherwise this rule's targets end `Skipped`.
    #[schemars(length(min = 1, max = 5))]
    pub phases: Vec<crate::targets::outcome::RunPhase>,
}

/// Calls to one target for one key happen in a declared order, across restarts and leader
/// changes (the order is read from the stored deliveries). Events are ordered by their
/// `time`, then by when they were accepted (to the second), then by delivery name.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ordering {
    /// A template rendered from the event when it is accepted, e.g. `$(data.app_name)`.
    /// Events with the same key are ordered at each target; a key that cannot be rendered
    /// (a missing field) is the empty key.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// `inOrder`: a call waits until every earlier event for the key has finished at the
    /// target. `latestWins`: a call waits while a newer event for the key is unfinished at
    /// the target, and is not made (`Superseded`) once a newer one has succeeded there.
    pub policy: OrderingPolicy,
}

/// How events with one key are ordered at a target (see [`Ordering`]).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OrderingPolicy {
    InOrder,
    LatestWins,
}

impl OrderingPolicy {
    /// As spelled in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderingPolicy::InOrder => "inOrder",
            OrderingPolicy::LatestWins => "latestWins",
        }
    }
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct RuleMatch {
    /// CloudEvents types (at most 64), e.g. `com.statused.build.status.updated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MATCH_VALUES))]
    pub types: Vec<String>,
    /// Status labels (at most 64), case-insensitive; Apple's renamed labels ("Ready for
    /// Distribution", "Processing for Distribution") match their older names too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MATCH_VALUES))]
    pub statuses: Vec<String>,
    /// App names (at most 64), exact or glob (`Markdown*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MATCH_VALUES))]
    pub apps: Vec<String>,
    /// A CEL expression over `id`, `type`, `source`, `time`, `data` and `route` that must
    /// evaluate to a bool.
    pub expression: Option<String>,
}

/// What to do with a call whose outcome is unknown (see `Target::on_uncertain`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUncertain {
    #[default]
    Retry,
    Fail,
}

impl OnUncertain {
    pub fn is_retry(&self) -> bool {
        *self == OnUncertain::Retry
    }
}

/// One thing to trigger. Exactly one kind must be set.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Timeout of one call for HTTP kinds, 1 to 300 seconds (default: the operator's
    /// `--request-timeout-seconds`).
    pub timeout_seconds: Option<u32>,
    /// HTTP kinds: what to do with a call whose outcome is unknown because the operator
    /// stopped while it was in flight. `retry` (default) calls again, with the same
    /// `X-Statused-Event-Id` / `Idempotency-Key`; `fail` never calls twice (at most once):
    /// the delivery fails saying the outcome is unknown. `fail` costs one more status write
    /// per call, made before it.
    #[serde(default, skip_serializing_if = "OnUncertain::is_retry")]
    pub on_uncertain: OnUncertain,
    /// HTTP kinds: the most calls at once to this target's destination (its URL's scheme,
    /// host and port, within the route's namespace), 1 to 64. Targets of one namespace that
    /// call the same host share the destination and its limits; the smallest declared wins.
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent: Option<u32>,
    /// HTTP kinds: the most calls a minute to this target's destination, 1 to 6000, spaced
    /// out evenly.
    #[schemars(range(min = 1, max = 6000))]
    pub rate_per_minute: Option<u32>,
    /// Orders this target's calls per key; overrides the rule's `ordering`.
    pub ordering: Option<Ordering>,
    /// Follow the run this target starts to its end (`tekton`, `argoWorkflow`): the
    /// delivery shows the run's phase and times (`status.targets[].run`), and the target
    /// ends with the run, Succeeded or Failed.
    pub follow: Option<Follow>,
    /// The kind: one key per kind, its value the kind's settings.
    #[serde(flatten)]
    pub kind: TargetKind,
}

/// How a target follows the run it starts.
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Follow {
    /// How long to follow a run, 60 to 604800 seconds (default 7200): a run not ended by
    /// then ends TimedOut, and the target Failed.
    #[schemars(range(min = 60, max = 604800))]
    pub timeout_seconds: Option<u32>,
    /// With a `latestWins` ordering: when a newer event's run starts for the same key, the
    /// older event's run still running is cancelled (a PipelineRun's `spec.status:
    /// Cancelled`, a Workflow's `spec.shutdown: Terminate`), and its target ends
    /// Superseded by the newer delivery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_superseded: bool,
}

/// Read by hand to say what is wrong when an entry sets no kind or several: a flattened
/// enum would take the first kind it meets and drop the others. (The CRD's `oneOf` refuses
/// such an entry at apply time; this guards what that cannot, e.g. `route test` files.)
impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;

        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            #[serde(default)]
            timeout_seconds: Option<u32>,
            #[serde(default)]
            on_uncertain: OnUncertain,
            #[serde(default)]
            max_concurrent: Option<u32>,
            #[serde(default)]
            rate_per_minute: Option<u32>,
            #[serde(default)]
            ordering: Option<Ordering>,
            #[serde(default)]
            follow: Option<Follow>,
            #[serde(flatten)]
            rest: serde_json::Map<String, serde_json::Value>,
        }
        let entry = Entry::deserialize(deserializer)?;
        let names = TargetKind::names();
        let kinds: serde_json::Map<String, serde_json::Value> = entry
            .rest
            .into_iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .collect();
        if kinds.len() != 1 {
            return Err(D::Error::custom(format!(
                "set exactly one target kind ({}), found {}",
                names.join(", "),
                kinds.len()
            )));
        }
        Ok(Target {
            timeout_seconds: entry.timeout_seconds,
            on_uncertain: entry.on_uncertain,
            max_concurrent: entry.max_concurrent,
            rate_per_minute: entry.rate_per_minute,
            ordering: entry.ordering,
            follow: entry.follow,
            kind: TargetKind::deserialize(serde_json::Value::Object(kinds))
                .map_err(D::Error::custom)?,
        })
    }
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusedRouteStatus {
    pub observed_generation: Option<i64>,
    /// Path Statused must POST to on the operator's webhook address.
    pub webhook_path: Option<String>,
    /// Full URL, when the operator knows its public URL.
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
    pub last_event: Option<LastEvent>,
    pub last_delivery: Option<LastDelivery>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub received_at: Time,
    /// The rules the event matched: at most every rule of the route.
    #[serde(default)]
    #[schemars(length(max = MAX_RULES))]
    pub matched_rules: Vec<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivery {
    pub name: String,
    pub phase: String,
    pub completed_at: Option<Time>,
}

impl StatusedRoute {
    pub fn webhook_path(namespace: &str, name: &str) -> String {
        format!("/hooks/{namespace}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_sets_exactly_one_kind() {
        let two = serde_json::json!({
            "webhook": {"url": "http://x/"}, "tekton": {"pipelineRef": {"name": "p"}}
        });
        let err = serde_json::from_value::<Target>(two).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let none = serde_json::json!({"timeoutSeconds": 5});
        let err = serde_json::from_value::<Target>(none).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }
}
