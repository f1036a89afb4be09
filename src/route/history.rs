//! How many finished deliveries a route keeps, and for how long (like a CronJob's history
//! limits), as compiled from `spec.history`.

use std::time::Duration;

use crate::api::History;
use crate::conditions::Reason;
use crate::targets::error::CompileError;

pub const DEFAULT_SUCCEEDED: u32 = 20;
pub const DEFAULT_FAILED: u32 = 50;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Ten years: longer is surely a typo, and would overflow timestamp arithmetic.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(87_600 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub succeeded: usize,
    pub failed: usize,
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            succeeded: DEFAULT_SUCCEEDED as usize,
            failed: DEFAULT_FAILED as usize,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl HistoryLimits {
    /// Keep nothing: for the records of a route that no longer exists, which the dedup and
    /// replay windows alone keep.
    pub fn none() -> Self {
        Self {
            succeeded: 0,
            failed: 0,
            max_age: Duration::ZERO,
        }
    }

    pub fn compile(spec: Option<&History>) -> Result<Self, CompileError> {
        let Some(h) = spec else {
            return Ok(Self::default());
        };
        let max_age = match &h.max_age {
            None => DEFAULT_MAX_AGE,
            Some(text) => crate::duration::parse_go_duration(text)
                .filter(|d| *d <= MAX_MAX_AGE)
                .ok_or_else(|| CompileError {
                    reason: Reason::InvalidSpec,
                    message: format!(
                        "spec.history.maxAge: {text:?} is not a duration like 168h or 30m, of at most 87600h (ten years)"
                    ),
                })?,
        };
        Ok(Self {
            succeeded: h.succeeded.unwrap_or(DEFAULT_SUCCEEDED) as usize,
            failed: h.failed.unwrap_or(DEFAULT_FAILED) as usize,
            max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_spec_with_defaults() {
        assert_eq!(
            HistoryLimits::compile(None).unwrap(),
            HistoryLimits::default()
        );
        let h = History {
            succeeded: Some(3),
            failed: None,
            max_age: Some("24h".into()),
        };
        let limits = HistoryLimits::compile(Some(&h)).unwrap();
        assert_eq!(
            (limits.succeeded, limits.failed, limits.max_age),
            (3, 50, Duration::from_secs(86400))
        );
        let huge = History {
            max_age: Some("100000000h".into()),
            ..h.clone()
        };
        assert_eq!(
            HistoryLimits::compile(Some(&huge)).unwrap_err().reason,
            Reason::InvalidSpec
        );
        let bad = History {
            max_age: Some("a day".into()),
            ..h
        };
        assert_eq!(
            HistoryLimits::compile(Some(&bad)).unwrap_err().reason,
            Reason::InvalidSpec
        );
    }
}
