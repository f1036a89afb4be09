//! Target kinds: one file per kind holds its spec (part of the CRD), its [`kind::Kind`]
//! implementation (reconcile-time checks) and its pure request or object building.
//!
//! The shared pieces, one concern each: [`kind`] (the trait and what compiling yields),
//! [`registry`] (spec variant to kind, and the settings every kind shares), [`request`]
//! (an HTTP request, redaction, the HTTP trait), [`fields`] (field helpers), [`objects`]
//! (in-cluster kinds), [`send`] and [`create`] (doing it), [`signing`] and [`message`]
//! (body signatures and chat message text).

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

pub mod argo;
pub mod azure_devops;
pub mod bitrise;
pub mod circleci;
pub mod create;
pub mod credentials;
pub mod fields;
pub mod github;
pub mod gitlab;
pub mod jenkins;
pub mod kind;
pub mod launchdarkly;
pub mod listener;
pub mod message;
pub mod objects;
pub mod opsgenie;
pub mod outbound;
pub mod outcome;
pub mod pagerduty;
pub mod registry;
pub mod request;
pub mod send;
pub mod signing;
pub mod slack;
pub mod teams;
pub mod tekton;
#[cfg(test)]
pub(crate) mod test_support;
pub mod unleash;
pub mod webhook;
