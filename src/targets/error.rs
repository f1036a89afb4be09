//! Why a route could not be compiled: the reason and message of its Ready condition.
//! Declared with the target kinds, which return it; the route's own checks return it too.

use std::fmt;

use crate::conditions::Reason;
use crate::expr::ExprError;
use crate::secrets::SecretError;

/// Why a target could not be compiled; becomes the route's Ready condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub reason: Reason,
    pub message: String,
}

impl CompileError {
    pub fn invalid(field: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Self {
            reason: Reason::InvalidTarget,
            message: format!("{field}: {problem}"),
        }
    }

    pub fn template(field: impl fmt::Display, err: ExprError) -> Self {
        Self {
            reason: Reason::InvalidTemplate,
            message: format!("{field}: {err}"),
        }
    }
}

impl From<SecretError> for CompileError {
    fn from(err: SecretError) -> Self {
        let reason = match err {
            SecretError::NotFound { .. } => Reason::SecretNotFound,
            SecretError::NotAllowed { .. } => Reason::SecretNotAllowed,
            SecretError::KeyMissing { .. } | SecretError::NotText { .. } => {
                Reason::SecretKeyMissing
            }
        };
        Self {
            reason,
            message: err.to_string(),
        }
    }
}
