//! The receiver's budget: how many requests, and how many body bytes, it works on at once,
//! and how much of it one route may take.
//!
//! Beyond the budget a request is answered 503 with `Retry-After` at once instead of waiting
//! in a queue until its sender times out: a sender that hears "later" quickly retries later,
//! one that hears nothing retries at once and doubles the load. Pure bookkeeping over two
//! semaphores and a count per route; the handler holds the permits for the life of the
//! request.
//!
//! Before its signature is checked a request is anybody's: it reserves at most
//! [`UNVERIFIED_BYTES`] up front, whatever it declares, and more only as its bytes arrive, so
//! that slow uploads hold what they sent, not what they promised. Every request to a route,
//! signed or not, is charged to the route's namespace, which holds at most half the
//! receiver's requests and bytes ([`Admission::try_admit`]): an anonymous client who floods one
//! team's URL takes from that team only. After the signature, a namespace's requests hold
//! at most their share ([`Admission::namespace_share`]): a team holds no more by spreading
//! its events over many routes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most of the byte budget a request reserves before any of its body arrived.
pub const UNVERIFIED_BYTES: usize = 64 * 1024;

/// Bytes are counted in KiB so that a budget of gigabytes still fits a semaphore's `u32`.
const UNIT: usize = 1024;

#[derive(Debug)]
pub struct Admission {
    requests: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    max_requests: usize,
    max_kib: u32,
    /// Verified requests in flight per namespace, and the most one namespace may have.
    namespaces: Counts<()>,
    max_per_namespace: usize,
    /// Requests in flight per namespace, signed or not, and the body bytes (KiB) they
    /// hold: each at most half the receiver's, so that whoever floods one team's URL
    /// leaves the other half to every other team.
    arriving: Counts<Arc<Semaphore>>,
    max_arriving_per_namespace: usize,
    /// Whose turn it is to watch for a quiet receiver (see [`Admission::quiet`]).
    quiet_turn: tokio::sync::Mutex<()>,
    /// Requests in flight whose signature was checked: only those hold the executor back.
    signed: Arc<AtomicUsize>,
}

/// Requests in flight per namespace, each namespace with its own `V` (its half of the byte
/// budget, or nothing), forgotten once it has none in flight.
type Counts<V> = Arc<Mutex<HashMap<String, (usize, V)>>>;

/// One request counted in its namespace's entry of [`Counts`], within `max`; `None` when
/// the namespace has `max` in flight already.
fn take<V: Clone>(
    counts: &Counts<V>,
    namespace: &str,
    max: usize,
    new: impl FnOnce() -> V,
) -> Option<(Share<V>, V)> {
    let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
    let (n, value) = map
        .entry(namespace.to_string())
        .or_insert_with(|| (0, new()));
    if *n >= max {
        return None;
    }
    *n += 1;
    let value = value.clone();
    let share = Share {
        namespace: namespace.to_string(),
        counts: counts.clone(),
    };
    Some((share, value))
}

/// One request of a namespace; dropping it gives the namespace's share back.
#[derive(Debug)]
pub struct Share<V> {
    namespace: String,
    counts: Counts<V>,
}

impl<V> Drop for Share<V> {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = map.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.namespace);
            }
        }
    }
}

/// One verified request of a namespace.
pub type NamespaceShare = Share<()>;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The route's namespace holds half the receiver's requests or bytes already (429).
    Namespace,
    /// The receiver holds its most requests or bytes (503).
    Busy,
}

/// Held while a request is worked on; dropping it gives the budget back.
#[derive(Debug)]
pub struct Admitted {
    _request: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
    kib: Arc<Semaphore>,
    max_kib: u32,
    /// The same bytes, charged to the route's namespace.
    namespace_bytes: OwnedSemaphorePermit,
    namespace_kib: Arc<Semaphore>,
    max_namespace_kib: u32,
    _namespace: Share<Arc<Semaphore>>,
    /// Set once the signature is checked (see [`Admitted::verified`]), and then counted in
    /// `signed`.
    verified: bool,
    signed: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.verified {
            self.signed.fetch_sub(1, AtomicOrdering::Relaxed);
        }
    }
}

impl Admitted {
    /// Marks the request as signed: from now on it is an event some team sent, and the
    /// executor lets it go first ([`Admission::quiet`]). An unsigned upload, however slow,
    /// never holds back the delivery of other teams' events.
    pub fn verified(&mut self) {
        if !self.verified {
            self.signed.fetch_add(1, AtomicOrdering::Relaxed);
            self.verified = true;
        }
    }

    /// Reserves the budget for a body that has grown to `body_bytes`, from the namespace's
    /// half and from the receiver's; refused when either has no room for it.
    pub fn grow(&mut self, body_bytes: usize) -> Result<(), Refused> {
        // The namespace's half first: a request over it takes nothing more of the receiver's.
        let want = kib(body_bytes);
        if !grow(
            &mut self.namespace_bytes,
            &self.namespace_kib,
            want.min(self.max_namespace_kib),
        ) {
            return Err(Refused::Namespace);
        }
        if !grow(&mut self.bytes, &self.kib, want.min(self.max_kib)) {
            return Err(Refused::Busy);
        }
        Ok(())
    }
}

/// Tops `held` up to `want` permits of `budget`; `false` when it has no room.
fn grow(held: &mut OwnedSemaphorePermit, budget: &Arc<Semaphore>, want: u32) -> bool {
    let have = u32::try_from(held.num_permits()).unwrap_or(u32::MAX);
    if want <= have {
        return true;
    }
    match budget.clone().try_acquire_many_owned(want - have) {
        Ok(more) => {
            held.merge(more);
            true
        }
        Err(_) => false,
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
}

impl Admission {
    /// At most `max_requests` at once, holding at most `max_bytes` of bodies between them.
    pub fn new(max_requests: usize, max_bytes: usize) -> Self {
        let max_kib = u32::try_from(max_bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        let max_requests = max_requests.max(1);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            kib: Arc::new(Semaphore::new(max_kib as usize)),
            max_kib,
            namespaces: Arc::default(),
            max_per_namespace: max_requests,
            arriving: Arc::default(),
            max_arriving_per_namespace: max_requests.div_ceil(2),
            quiet_turn: tokio::sync::Mutex::new(()),
            signed: Arc::default(),
        }
    }

    /// At most `n` verified requests of one namespace at once.
    pub fn per_namespace(mut self, n: usize) -> Self {
        self.max_per_namespace = n.max(1);
        self
    }

    /// Admits a request to a route of `namespace` whose body may be up to `body_bytes` long
    /// (its Content-Length, or the body limit when it declares none), reserving at most
    /// [`UNVERIFIED_BYTES`] of it now (the rest with [`Admitted::grow`] as it arrives).
    /// Refused when the namespace already holds half the receiver's requests or bytes
    /// (signed or not: an anonymous flood of one team's URL is charged to that team, and the
    /// other teams keep the other half), or when the receiver holds its most.
    pub fn try_admit(&self, namespace: &str, body_bytes: usize) -> Result<Admitted, Refused> {
        let up_front = kib(body_bytes.min(UNVERIFIED_BYTES));
        let max_namespace_kib = self.max_kib.div_ceil(2);
        // The receiver's own bound first: when it is full, that is the answer (503), even
        // where one namespace's half is all of it.
        let request = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)?;
        let (share, namespace_kib) = take(
            &self.arriving,
            namespace,
            self.max_arriving_per_namespace,
            || Arc::new(Semaphore::new(max_namespace_kib as usize)),
        )
        .ok_or(Refused::Namespace)?;
        // A body larger than the whole budget still gets in when nothing else is in flight,
        // and one larger than the namespace's half when it is the namespace's only one.
        let bytes = self
            .kib
            .clone()
            .try_acquire_many_owned(up_front.min(self.max_kib))
            .map_err(|_| Refused::Busy)?;
        let namespace_bytes = namespace_kib
            .clone()
            .try_acquire_many_owned(up_front.min(max_namespace_kib))
            .map_err(|_| Refused::Namespace)?;
        Ok(Admitted {
            _request: request,
            bytes,
            kib: self.kib.clone(),
            max_kib: self.max_kib,
            namespace_bytes,
            namespace_kib,
            max_namespace_kib,
            _namespace: share,
            verified: false,
            signed: self.signed.clone(),
        })
    }

    /// A share of the receiver for one verified request of a route in `namespace`, or
    /// `None` when the namespace already has its most requests in flight: one team's burst,
    /// over however many routes, leaves the rest of the budget to the others.
    pub fn namespace_share(&self, namespace: &str) -> Option<NamespaceShare> {
        take(&self.namespaces, namespace, self.max_per_namespace, || ()).map(|(share, ())| share)
    }

    /// Waits until fewer than `below` signed requests are in flight, or for `at_most`:
    /// background work (the executor) lets the receiver's writes go first, without waiting
    /// forever. Unsigned requests do not count: anybody can send those.
    ///
    /// One waiter looks every 10 ms while the others queue for their turn, so however many
    /// wait (the executor's calls in flight), the looking costs one timer; once the receiver
    /// is quiet, each queued waiter finds it so at once.
    pub async fn quiet(&self, below: usize, at_most: std::time::Duration) {
        if self.verified_in_flight() < below {
            return;
        }
        let deadline = tokio::time::Instant::now() + at_most;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.quiet_turn.lock()).await else {
            return;
        };
        while self.verified_in_flight() >= below && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Requests being worked on now.
    pub fn in_flight(&self) -> usize {
        self.max_requests - self.requests.available_permits()
    }

    /// Requests being worked on now whose signature was checked.
    pub fn verified_in_flight(&self) -> usize {
        self.signed.load(AtomicOrdering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The `i`th of many namespaces: the receiver's own budget, apart from any one team's.
    fn team(i: usize) -> String {
        format!("team-{i}")
    }

    #[test]
    fn requests_beyond_the_count_are_refused_until_one_finishes() {
        let admission = Admission::new(2, 1 << 20);
        let a = admission.try_admit(&team(0), 100).unwrap();
        let _b = admission.try_admit(&team(1), 100).unwrap();
        assert_eq!(
            admission.try_admit(&team(2), 100).unwrap_err(),
            Refused::Busy
        );
        assert_eq!(admission.in_flight(), 2);
        drop(a);
        assert!(admission.try_admit(&team(2), 100).is_ok());
    }

    #[test]
    fn bodies_beyond_the_byte_budget_are_refused() {
        let admission = Admission::new(100, 10 * 1024);
        let big = admission.try_admit(&team(0), 8 * 1024).unwrap();
        assert!(admission.try_admit(&team(1), 4 * 1024).is_err());
        let _small = admission.try_admit(&team(2), 2 * 1024).unwrap();
        drop(big);
        assert!(admission.try_admit(&team(3), 4 * 1024).is_ok());
    }

    #[test]
    fn a_declared_length_reserves_at_most_the_unverified_share_until_bytes_arrive() {
        const MIB: usize = 1 << 20;
        let admission = Admission::new(100, 4 * MIB);
        // Four uploads declaring 1 MiB would take the whole budget up front; fifteen hold
        // less than a quarter of it until their bytes arrive.
        let mut slow: Vec<_> = (0..15)
            .map(|i| admission.try_admit(&team(i), MIB).unwrap())
            .collect();
        assert!(admission.try_admit(&team(15), 2 * MIB).is_ok(), "room left");
        assert!(slow[0].grow(MIB).is_ok());
        assert!(slow[1].grow(MIB).is_ok());
        assert_eq!(
            slow[2].grow(2 * MIB),
            Err(Refused::Busy),
            "no room for more"
        );
        assert!(slow[3].grow(UNVERIFIED_BYTES).is_ok(), "already held");
        drop(slow.remove(0));
        assert!(
            slow[0].grow(2 * MIB).is_ok(),
            "room again once a request is done"
        );
    }

    #[test]
    fn requests_to_one_namespace_hold_at_most_half_the_receiver_signed_or_not() {
        let admission = Admission::new(4, 1 << 20);
        let first = admission.try_admit("attacked", 1).unwrap();
        let _second = admission.try_admit("attacked", 1).unwrap();
        assert_eq!(
            admission.try_admit("attacked", 1).unwrap_err(),
            Refused::Namespace
        );
        let _other = admission.try_admit("another-team", 1).unwrap();
        let _last = admission.try_admit("another-team", 1).unwrap();
        // Full: the receiver's own bound is the answer, whoever asks.
        assert_eq!(
            admission.try_admit("attacked", 1).unwrap_err(),
            Refused::Busy
        );
        assert!(
            admission.namespace_share("attacked").is_some(),
            "verified requests are counted apart"
        );
        drop(first);
        assert!(admission.try_admit("attacked", 1).is_ok());
    }

    #[test]
    fn bodies_to_one_namespace_hold_at_most_half_the_bytes() {
        const MIB: usize = 1 << 20;
        let admission = Admission::new(100, 4 * MIB);
        let mut a = admission.try_admit("attacked", MIB).unwrap();
        let mut b = admission.try_admit("attacked", MIB).unwrap();
        assert!(a.grow(MIB).is_ok());
        assert_eq!(b.grow(2 * MIB), Err(Refused::Namespace), "over its half");
        // Another team has the other half.
        let mut other = admission.try_admit("another-team", 2 * MIB).unwrap();
        assert!(other.grow(2 * MIB).is_ok());
    }

    #[test]
    fn one_namespace_holds_at_most_its_share() {
        let admission = Admission::new(100, 1 << 20).per_namespace(2);
        let first = admission.namespace_share("team-a").unwrap();
        let _second = admission.namespace_share("team-a").unwrap();
        assert!(admission.namespace_share("team-a").is_none());
        assert!(
            admission.namespace_share("team-b").is_some(),
            "another team is not held up"
        );
        drop(first);
        assert!(admission.namespace_share("team-a").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_returns_when_requests_drain_or_after_the_longest_wait() {
        let admission = Arc::new(Admission::new(10, 1 << 20));
        let unsigned: Vec<_> = (0..3)
            .map(|i| admission.try_admit(&team(i), 1).unwrap())
            .collect();
        let start = tokio::time::Instant::now();
        admission.quiet(2, Duration::from_secs(1)).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "unsigned requests do not count"
        );
        let held: Vec<_> = unsigned
            .into_iter()
            .map(|mut a| {
                a.verified();
                a
            })
            .collect();
        let start = tokio::time::Instant::now();
        admission.quiet(2, Duration::from_secs(1)).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "busy: waited the longest"
        );
        let a = admission.clone();
        let waiter = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            a.quiet(2, Duration::from_secs(60)).await;
            start.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_millis(200), "{waited:?}");
    }

    #[test]
    fn a_body_larger_than_the_budget_gets_in_alone() {
        let admission = Admission::new(10, 4 * 1024);
        let alone = admission.try_admit(&team(0), 1 << 20).unwrap();
        assert_eq!(admission.try_admit(&team(1), 1).unwrap_err(), Refused::Busy);
        drop(alone);
        assert_eq!(admission.in_flight(), 0);
    }
}
