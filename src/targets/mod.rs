//! Target kinds: one file per kind holds its spec (part of the CRD), its [`kind::Kind`]
//! implementation (reconcile-time checks) and its pure request or object building.
//!
//! Every kind is one line of the list below (`target_kinds!`), which declares its module
//! and its [`TargetKind`] variant.
//!
//! The shared pieces, one concern each: [`kind`] (the trait and what compiling yields),
//! [`error`] (why a target does not compile), [`request`] (an HTTP request, redaction, the
//! HTTP trait), [`fields`] (field helpers), [`objects`] (in-cluster kinds), [`send`] and
//! [`create`] (doing it), [`outcome`] (what an attempt came to), [`signing`] and [`message`]
//! (body signatures and chat message text).
//!
//! They name nothing from the API types (`api/`, which embed [`TargetKind`]) nor from the
//! compiled route (`route/`), only the pure modules below them.

/// Declares a kind's spec type, part of the CRD: camelCase in YAML, unset optional fields
/// left out when written, a JSON schema for the CRD, and `Default` for tests and fixtures.
macro_rules! spec {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        #[serde_with::skip_serializing_none]
        #[derive(
            ::serde::Deserialize, ::serde::Serialize, Clone, Debug, Default, ::schemars::JsonSchema,
        )]
        #[serde(rename_all = "camelCase")]
        $(#[$meta])*
        pub struct $name { $($body)* }
    };
}

/// Declares the target kinds from one list, so that a kind is its file plus one line:
/// `module: Variant(SpecType) "doc";`, the spec type's path relative to the module, several
/// kinds of one module separated by commas (a long doc may be several literals, one per line). It declares each module and generates
/// [`TargetKind`] (one variant per kind, spelled in YAML as the variant's camelCase name; the
/// doc becomes the CRD's description) and [`TargetKind::as_kind`], whose match the compiler
/// checks: a spec type that is not a [`kind::Kind`] does not build.
macro_rules! target_kinds {
    ($($module:ident: $($variant:ident($($spec:ident)::+) $($doc:literal)+),+;)+) => {
        $(pub mod $module;)+

        /// Every target kind, one variant each, spelled in YAML as the variant's camelCase name.
        /// A kind is its line in the list of `target_kinds!` plus its file under
        /// `src/targets/` (see ARCHITECTURE.md).
        #[derive(::serde::Deserialize, ::serde::Serialize, Clone, Debug, ::schemars::JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub enum TargetKind {
            $($($(#[doc = $doc])+ $variant($module::$($spec)::+),)+)+
        }

        impl TargetKind {
            /// What this kind does.
            pub fn as_kind(&self) -> &dyn kind::Kind {
                match self {
                    $($(TargetKind::$variant(spec) => spec,)+)+
                }
            }

            /// The kind as spelled in YAML: the variant's name in camelCase, as serde
            /// spells it.
            pub fn name(&self) -> &'static str {
                match self {
                    $($(TargetKind::$variant(_) => camel_case!($variant),)+)+
                }
            }

            /// Every kind as spelled in YAML, in the order the CRD lists them.
            pub fn names() -> &'static [&'static str] {
                &[$($(camel_case!($variant),)+)+]
            }
        }
    };
}

/// A variant's name in camelCase (its first letter lowered), at compile time.
macro_rules! camel_case {
    ($variant:ident) => {{
        const NAME: &str = stringify!($variant);
        const BYTES: [u8; NAME.len()] = lower_first(NAME);
        const CAMEL: &str = match std::str::from_utf8(&BYTES) {
            Ok(name) => name,
            Err(_) => panic!("a variant name is ASCII"),
        };
        CAMEL
    }};
}

/// `name` with its first ASCII letter lowered.
const fn lower_first<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out[0] = out[0].to_ascii_lowercase();
    out
}

// The target kinds, in the order the CRD lists them.
target_kinds! {
    github: GithubDispatch(dispatch::GithubDispatchTarget) "GitHub Actions: `repository_dispatch` or `workflow_dispatch`.";
    webhook: Webhook(WebhookTarget) "Any HTTP endpoint.";
    tekton: Tekton(TektonTarget) "A Tekton PipelineRun, created in the route's namespace.";
    argo: ArgoWorkflow(ArgoWorkflowTarget) "An Argo Workflow from a (Cluster)WorkflowTemplate, created in the route's namespace.";
    listener: TektonEventListener(TektonEventListenerTarget) "A Tekton Triggers EventListener.",
        ArgoEventsWebhook(ArgoEventsWebhookTarget) "An Argo Events webhook EventSource.";
    gitlab: GitlabPipeline(GitlabPipelineTarget) "A GitLab pipeline, through a pipeline trigger token.";
    bitrise: Bitrise(BitriseTarget) "A Bitrise build.";
    circleci: Circleci(CircleciTarget) "A CircleCI pipeline.";
    jenkins: Jenkins(JenkinsTarget) "A Jenkins job, through the Generic Webhook Trigger plugin.";
    azure_devops: AzureDevOps(AzureDevOpsTarget) "An Azure Pipelines run, through an Incoming WebHook service connection.";
    slack: Slack(SlackTarget) "A Slack incoming webhook.";
    teams: Teams(TeamsTarget) "A Microsoft Teams Workflows webhook.";
    pagerduty: Pagerduty(PagerdutyTarget) "A PagerDuty incident (Events API v2): trigger or resolve.";
    opsgenie: Opsgenie(OpsgenieTarget) "An Opsgenie alert (Alert API v2): create or close.";
    launchdarkly: Launchdarkly(LaunchdarklyTarget) "A LaunchDarkly feature flag turned on or off in one environment.";
    unleash: Unleash(UnleashTarget) "An Unleash feature enabled or disabled in one environment.";
}

// What the kinds share.
pub mod create;
pub mod credentials;
pub mod error;
pub mod fields;
pub mod kind;
pub mod message;
pub mod objects;
pub mod outbound;
pub mod outcome;
pub mod request;
pub mod send;
pub mod signing;
pub mod standard_webhooks;
#[cfg(test)]
pub(crate) mod test_support;
