//! Compiles one target entry of a rule: its kind's [`Kind`] (see
//! [`TargetKind::as_kind`](super::TargetKind::as_kind)) and the settings every kind shares.

use std::time::Duration;

use super::fields::Field;
use super::kind::{CompiledTarget, Trigger};
use crate::api::route::{OnUncertain, Target};
use crate::route::error::CompileError;
use crate::secrets::SecretSet;

/// The longest per-target timeout; a slower target should answer 202 and work in the
/// background.
pub const MAX_TIMEOUT_SECONDS: u32 = 300;

/// Compiles one target entry; `field` is its path, e.g. `spec.rules[0].targets[1]`.
pub fn compile(
    field: &Field,
    target: &Target,
    secrets: &SecretSet,
) -> Result<CompiledTarget, CompileError> {
    let kind = target.kind.as_kind();
    let trigger = kind.compile(&field.at(kind.name()), secrets)?;
    let at_most_once = target.on_uncertain == OnUncertain::Fail;
    if at_most_once && matches!(trigger, Trigger::Kube(_)) {
        return Err(CompileError::invalid(
            field.at("onUncertain"),
            "applies to HTTP kinds only: Tekton and Argo objects are created exactly once",
        ));
    }
    let timeout = match target.timeout_seconds {
        None => None,
        Some(secs @ 1..=MAX_TIMEOUT_SECONDS) => Some(Duration::from_secs(secs.into())),
        Some(_) => {
            return Err(CompileError::invalid(
                field.at("timeoutSeconds"),
                format!("must be between 1 and {MAX_TIMEOUT_SECONDS}"),
            ));
        }
    };
    Ok(CompiledTarget {
        kind: kind.name(),
        trigger,
        timeout,
        at_most_once,
    })
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

    #[test]
    fn on_uncertain_applies_to_http_kinds_only() {
        let t: Target = serde_json::from_value(serde_json::json!({
            "onUncertain": "fail", "tekton": {"pipelineRef": {"name": "p"}}
        }))
        .unwrap();
        let err = compile(&Field::new("t"), &t, &SecretSet::new("ns")).unwrap_err();
        assert_eq!(err.message.split(':').next(), Some("t.onUncertain"));
    }
}
