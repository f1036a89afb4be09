//! `StatusedRoute`: one Statused webhook endpoint and what its events trigger.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::targets::argo::ArgoWorkflowTarget;
use crate::targets::azure_devops::AzureDevOpsTarget;
use crate::targets::bitrise::BitriseTarget;
use crate::targets::circleci::CircleciTarget;
use crate::targets::github::GithubDispatchTarget;
use crate::targets::gitlab::GitlabPipelineTarget;
use crate::targets::jenkins::JenkinsTarget;
use crate::targets::listener::ListenerTarget;
use crate::targets::slack::SlackTarget;
use crate::targets::teams::TeamsTarget;
use crate::targets::tekton::TektonTarget;
use crate::targets::webhook::WebhookTarget;

/// One Statused webhook endpoint (`/hooks/<namespace>/<name>`) and the rules that decide what
/// each of its events triggers.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "statused.dev",
    version = "v1alpha1",
    kind = "StatusedRoute",
    namespaced,
    status = "StatusedRouteStatus",
    shortname = "sroute",
    shortname = "sroutes",
    category = "statused",
    doc = "A Statused webhook endpoint and the pipelines, workflows and messages its events trigger.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(name = "Path", type_ = "string", json_path = ".status.webhookPath"),
    printcolumn(
        name = "Last Event",
        type_ = "date",
        json_path = ".status.lastEvent.receivedAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StatusedRouteSpec {
    /// Secrets holding the webhook signing secret. An event verifies if it is signed with any
    /// of them, so a secret can be rotated without downtime. The key defaults to `secret`.
    #[schemars(length(min = 1))]
    pub signing_secrets: Vec<SecretKeySelector>,
    /// Rules are evaluated in order; every matching rule triggers its targets.
    #[schemars(length(min = 1))]
    pub rules: Vec<Rule>,
    /// Limit on accepted events (per replica); over it the receiver answers 429 with
    /// `Retry-After`, and Statused retries later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// How many finished deliveries to keep, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Average events per minute.
    #[schemars(range(min = 1))]
    pub requests_per_minute: u32,
    /// Events accepted at once before the average applies (default: `requestsPerMinute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Finished deliveries kept per route, like a CronJob's history limits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Succeeded deliveries kept (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<u32>,
    /// Failed deliveries kept (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u32>,
    /// Finished deliveries older than this are deleted (Go duration, default `168h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// A key of a Secret in the route's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret, in the route's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret. Each field documents its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeySelector {
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct Rule {
    /// Unique within the route; shown in deliveries.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Which events this rule applies to. Omitted fields match anything.
    #[serde(default, rename = "match")]
    pub match_: RuleMatch,
    /// What to trigger. Each entry sets exactly one kind.
    #[schemars(length(min = 1))]
    pub targets: Vec<Target>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct RuleMatch {
    /// CloudEvents types, e.g. `com.statused.build.status.updated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Status labels, case-insensitive; Apple's renamed labels ("Ready for Distribution",
    /// "Processing for Distribution") match their older names too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<String>,
    /// App names, exact or glob (`Markdown*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// A CEL expression over `id`, `type`, `source`, `time`, `data` and `route` that must
    /// evaluate to a bool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Timeout of one call for HTTP kinds, 1 to 300 seconds (default: the operator's
    /// `--request-timeout-seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// HTTP kinds: what to do with a call whose outcome is unknown because the operator
    /// stopped while it was in flight. `retry` (default) calls again, with the same
    /// `X-Statused-Event-Id` / `Idempotency-Key`; `fail` never calls twice (at most once):
    /// the delivery fails saying the outcome is unknown. `fail` costs one more status write
    /// per call, made before it.
    #[serde(default, skip_serializing_if = "OnUncertain::is_retry")]
    pub on_uncertain: OnUncertain,
    /// GitHub Actions: `repository_dispatch` or `workflow_dispatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_dispatch: Option<GithubDispatchTarget>,
    /// Any HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// A Tekton PipelineRun, created in the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tekton: Option<TektonTarget>,
    /// An Argo Workflow from a (Cluster)WorkflowTemplate, created in the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo_workflow: Option<ArgoWorkflowTarget>,
    /// A Tekton Triggers EventListener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tekton_event_listener: Option<ListenerTarget>,
    /// An Argo Events webhook EventSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo_events_webhook: Option<ListenerTarget>,
    /// A GitLab pipeline, through a pipeline trigger token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_pipeline: Option<GitlabPipelineTarget>,
    /// A Bitrise build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrise: Option<BitriseTarget>,
    /// A CircleCI pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circleci: Option<CircleciTarget>,
    /// A Jenkins job, through the Generic Webhook Trigger plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jenkins: Option<JenkinsTarget>,
    /// An Azure Pipelines run, through an Incoming WebHook service connection.
    #[serde(
        default,
        rename = "azureDevOps",
        skip_serializing_if = "Option::is_none"
    )]
    pub azure_devops: Option<AzureDevOpsTarget>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackTarget>,
    /// A Microsoft Teams Workflows webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<TeamsTarget>,
}

impl Target {
    /// Every kind a target entry can set, as spelled in YAML.
    pub const KINDS: &[&str] = &[
        "githubDispatch",
        "webhook",
        "tekton",
        "argoWorkflow",
        "tektonEventListener",
        "argoEventsWebhook",
        "gitlabPipeline",
        "bitrise",
        "circleci",
        "jenkins",
        "azureDevOps",
        "slack",
        "teams",
    ];

    /// The kinds this entry sets (exactly one in a valid route).
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = serde_json::to_value(self).unwrap_or_default();
        Self::KINDS
            .iter()
            .copied()
            .filter(|k| set.get(k).is_some())
            .collect()
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusedRouteStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Path Statused must POST to on the operator's webhook address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// Full URL, when the operator knows its public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::api::schema::conditions")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<LastEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub received_at: Time,
    #[serde(default)]
    pub matched_rules: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivery {
    pub name: String,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

impl StatusedRoute {
    pub fn webhook_path(namespace: &str, name: &str) -> String {
        format!("/hooks/{namespace}/{name}")
    }
}
