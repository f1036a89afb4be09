//! A target's `ordering` as compiled: the key template, rendered from each event when the
//! receiver matches it, so that the event's place in its key's order is recorded with the
//! event (`MatchedTarget::ordering`) and never depends on a later edit of the route.

use sha2::{Digest, Sha256};

use crate::api::{OrderedBy, Ordering, OrderingPolicy};
use crate::expr::{ExprError, Scope, Template};
use crate::targets::error::CompileError;
use crate::targets::fields::Field;

/// The longest key kept as it is; a longer one is kept as `sha256:<hex>` (71 bytes).
pub const MAX_KEY_BYTES: usize = 128;

#[derive(Debug)]
pub struct KeyOrdering {
    key: Template,
    policy: OrderingPolicy,
}

impl KeyOrdering {
    /// Compiles `ordering`, found at `field` (e.g. `spec.rules[0].ordering`).
    pub fn compile(field: &Field, ordering: &Ordering) -> Result<Self, CompileError> {
        let key = Template::compile(&ordering.key)
            .map_err(|e| CompileError::template(field.at("key"), e))?;
        if key.is_literal() {
            return Err(CompileError::invalid(
                field.at("key"),
                "a literal key orders every event as one; use $(...) to take it from the event, e.g. $(data.app_name)",
            ));
        }
        Ok(Self {
            key,
            policy: ordering.policy,
        })
    }

    /// This event's place: its key (the empty key when the template cannot be rendered, e.g.
    /// a field the event lacks: such events are ordered among themselves) and the policy.
    /// `inOrder` or `latestWins`.
    pub fn policy(&self) -> OrderingPolicy {
        self.policy
    }

    pub fn of(&self, scope: &Scope) -> (OrderedBy, Option<ExprError>) {
        let (key, error) = match self.key.render(scope) {
            Ok(key) => (key, None),
            Err(e) => (String::new(), Some(e)),
        };
        let ordered = OrderedBy {
            key: bounded(key),
            policy: self.policy,
        };
        (ordered, error)
    }
}

/// `key`, or its hash when longer than [`MAX_KEY_BYTES`]: a key is stored with every
/// delivery and held in the executor's index.
fn bounded(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordering(key: &str) -> Ordering {
        Ordering {
            key: key.into(),
            policy: OrderingPolicy::LatestWins,
        }
    }

    #[test]
    fn the_key_is_rendered_from_the_event() {
        let o = KeyOrdering::compile(&Field::new("f"), &ordering("app-$(data.app_name)")).unwrap();
        let (ordered, error) = o.of(&Scope::probe());
        assert_eq!(ordered.key, "app-App");
        assert_eq!(ordered.policy, OrderingPolicy::LatestWins);
        assert!(error.is_none());
    }

    #[test]
    fn a_key_that_cannot_be_rendered_is_the_empty_key_and_says_why() {
        let o = KeyOrdering::compile(&Field::new("f"), &ordering("$(data.no_such_field)")).unwrap();
        let (ordered, error) = o.of(&Scope::probe());
        assert_eq!(ordered.key, "");
        assert!(error.is_some());
    }

    #[test]
    fn long_keys_are_hashed_and_literal_keys_refused() {
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        let hashed = bounded(long.clone());
        assert!(
            hashed.starts_with("sha256:") && hashed.len() == 71,
            "{hashed}"
        );
        assert_eq!(bounded(long.clone()), hashed, "the same key, the same hash");
        assert_eq!(bounded("short".into()), "short");
        let err = KeyOrdering::compile(&Field::new("spec.rules[0].ordering"), &ordering("fixed"))
            .unwrap_err();
        assert!(
            err.message.contains("spec.rules[0].ordering.key"),
            "{err:?}"
        );
    }
}
