//! What one attempt at a target came to: succeeded, worth retrying, or failed for good; and
//! the object it created.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object a target created.
#[serde_with::skip_serializing_none]
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: Option<String>,
    /// Where to see it, for what a target started outside the cluster (a GitHub workflow
    /// run's page).
    pub url: Option<String>,
}

/// A followed run's phase. Running until it ends; Succeeded, Failed, Cancelled, TimedOut
/// (not ended within the target's `follow.timeoutSeconds`, or timed out by its own
/// controller) and Deleted (the object went away before it ended) are final.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    #[default]
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Deleted,
}

impl RunPhase {
    pub fn is_finished(self) -> bool {
        self != RunPhase::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Running => "Running",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Cancelled => "Cancelled",
            RunPhase::TimedOut => "TimedOut",
            RunPhase::Deleted => "Deleted",
        }
    }
}

/// What one read of a run said (a followed target's `follow`): its phase, its times as
/// RFC 3339 text when it gives them, its own reason, where to see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunReading {
    pub phase: RunPhase,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub message: Option<String>,
    pub url: Option<String>,
}

/// One attempt's outcome, as the retry policy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        code: Option<u16>,
        /// The start of the answer's body (HTTP targets).
        body: Vec<u8>,
        /// The object an in-cluster target created (or found already created), or what
        /// an HTTP target's answer says it started.
        created: Option<CreatedObject>,
        /// An identifier the service answered with, worth recording (an EventListener's
        /// `eventID`).
        response_id: Option<String>,
    },
    /// Worth trying again; `after` is the server's `Retry-After`, if it gave one.
    Retry {
        code: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    Failed {
        code: Option<u16>,
        error: String,
    },
}

impl Outcome {
    pub fn created(object: CreatedObject, code: u16) -> Self {
        Outcome::Succeeded {
            code: Some(code),
            body: Vec::new(),
            created: Some(object),
            response_id: None,
        }
    }

    pub fn failed(code: Option<u16>, error: String) -> Self {
        Outcome::Failed { code, error }
    }

    pub fn retry(code: Option<u16>, error: String, after: Option<Duration>) -> Self {
        Outcome::Retry { code, error, after }
    }
}

/// How an HTTP status is treated: 2xx succeeds; 408, 425, 429 and 5xx are retried; the
/// rest fails for good.
pub fn classify_status(code: u16) -> Class {
    match code {
        200..=299 => Class::Success,
        408 | 425 | 429 | 500..=599 => Class::Retry,
        _ => Class::Permanent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    Retry,
    Permanent,
}

/// A service's reading of a failed answer from its status code and body (see
/// `HttpRequest::classify_failure`); `None` keeps the usual policy.
pub type ClassifyFailure = fn(u16, &[u8]) -> Option<Class>;
