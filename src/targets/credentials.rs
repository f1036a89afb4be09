//! Credentials obtained at send time (GitHub App installation tokens), cached by the
//! executor that sends them: a route is recompiled whenever it or one of its Secrets changes,
//! and a token outlives that. One lock per credential, so one App's exchange never waits for
//! another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::secrets::SecretValue;

/// A cached credential and when it expires; the lock is held across a token exchange so that
/// concurrent deliveries wait for one exchange instead of each making their own.
pub type Slot = Arc<tokio::sync::Mutex<Option<(SecretValue, jiff::Timestamp)>>>;

/// The most credentials kept. Beyond it, those not in use right now are forgotten (they are
/// fetched again when next needed): the cache cannot grow with every App a route ever named.
pub const MAX_CREDENTIALS: usize = 1024;

/// Credentials by key (App, installation and private key, hashed).
#[derive(Debug, Default)]
pub struct CredentialCache(Mutex<HashMap<String, Slot>>);

impl CredentialCache {
    /// The slot for `key`, created empty when there is none.
    pub fn slot(&self, key: &str) -> Slot {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !slots.contains_key(key) && slots.len() >= MAX_CREDENTIALS {
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        slots.entry(key.to_string()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_key_and_the_cache_is_bounded() {
        let cache = CredentialCache::default();
        let held = cache.slot("a");
        assert!(Arc::ptr_eq(&held, &cache.slot("a")));
        for i in 0..MAX_CREDENTIALS + 10 {
            cache.slot(&format!("k{i}"));
        }
        assert!(cache.len() <= MAX_CREDENTIALS, "{}", cache.len());
        assert!(
            Arc::ptr_eq(&held, &cache.slot("a")),
            "a credential in use is kept"
        );
    }
}
