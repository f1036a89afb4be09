//! A followed run's phase: shared by the route (a rule's `after` names phases) and the
//! delivery (`status.targets[].run`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
