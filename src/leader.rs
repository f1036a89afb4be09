//! Leader election through a `coordination.k8s.io/v1` Lease, so that several replicas can
//! run: every replica receives events and keeps its routing table; only the leader runs the
//! delivery executor and writes route status.
//!
//! As in client-go: the holder renews well within `leaseDurationSeconds`; a follower takes
//! the Lease only after it has seen the same record unchanged for a whole lease duration on
//! its own monotonic clock (so clock skew between nodes does not matter); every write carries
//! the resourceVersion it read, so two replicas cannot both win. A leader that cannot confirm
//! a renewal within `renew_deadline` stops leading before anyone else may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::ObjectMeta;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// A leader that has not renewed for this long stops leading: two renewal periods, and
    /// always well before the Lease can expire for the others.
    pub fn renew_deadline(&self) -> Duration {
        (self.renew_every * 2).min(self.lease_duration / 2)
    }
}

/// What a replica should do with a Lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ours: renew it.
    Renew,
    /// Free, or unchanged for a whole lease duration: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow,
}

/// Pure: the decision for `lease`, given how long this replica has seen that exact record
/// unchanged (by its own clock).
pub fn decide(lease: &LeaseSpec, identity: &str, unchanged_for: Duration) -> Decision {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = Duration::from_secs(
        u64::try_from(lease.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
    );
    if unchanged_for >= duration {
        Decision::Acquire
    } else {
        Decision::Follow
    }
}

fn spec(
    cfg: &LeaseConfig,
    previous: Option<&LeaseSpec>,
    decision: Decision,
    now: jiff::Timestamp,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    let acquire_time = match (decision, previous) {
        (Decision::Renew, Some(p)) => p.acquire_time.clone(),
        _ => Some(MicroTime(now)),
    };
    let taken_over =
        decision == Decision::Acquire && previous.is_some_and(|p| p.holder_identity.is_some());
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: i32::try_from(cfg.lease_duration.as_secs()).ok(),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if taken_over {
            transitions + 1
        } else {
            transitions
        }),
        ..Default::default()
    }
}

/// The record a follower watches for change: holder and renew time.
type Observed = (Option<String>, Option<MicroTime>);

struct Election {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Option<(Observed, Instant)>,
}

impl Election {
    /// One round: read the Lease, renew or acquire it if we may. Returns whether we hold it.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec(&self.cfg, None, Decision::Acquire, now)),
            };
            return match self.api.create(&crate::naming::post_params(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        let record: Observed = (current.holder_identity.clone(), current.renew_time.clone());
        let since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record, since));
        let decision = decide(&current, &self.cfg.identity, since.elapsed());
        if decision == Decision::Follow {
            return Ok(false);
        }
        lease.spec = Some(spec(&self.cfg, Some(&current), decision, now));
        // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.cfg.name, &crate::naming::post_params(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so that another replica takes over without waiting for expiry.
    async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self
                .api
                .replace(&self.cfg.name, &crate::naming::post_params(), &lease)
                .await;
        }
    }
}

/// How long an election round may take: a leader must know by its last successful renewal +
/// `deadline` whether it still leads (a follower may take the Lease soon after), so its
/// round gets only what is left of that; a follower's round gets the whole deadline.
fn round_budget(leading: bool, since_renewal: Duration, deadline: Duration) -> Duration {
    if leading {
        deadline.saturating_sub(since_renewal)
    } else {
        deadline
    }
}

/// Runs the election until `stop`; `leading` says whether this replica leads right now.
/// Once stopped, the Lease is released only after `work_done` (the executor has stopped), so
/// that a successor never starts while this replica still delivers.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
    work_done: CancellationToken,
) {
    let deadline = cfg.renew_deadline();
    let mut election = Election {
        api: Api::namespaced(client, &cfg.namespace),
        cfg,
        observed: None,
    };
    let mut last_renewal = Instant::now();
    loop {
        let started = Instant::now();
        // A round that hangs must not keep this replica leading: a leader's round ends by its
        // last renewal + the deadline, when it steps down.
        let budget = round_budget(*leading.borrow(), last_renewal.elapsed(), deadline);
        let held = match tokio::time::timeout(budget, election.round()).await {
            Ok(Ok(true)) => {
                last_renewal = started;
                true
            }
            Ok(Ok(false)) => false,
            Ok(Err(e)) => {
                warn!(error = %e, lease = %election.cfg.name, "leader election round failed");
                *leading.borrow() && last_renewal.elapsed() < deadline
            }
            Err(_) => {
                warn!(lease = %election.cfg.name, "leader election round timed out");
                *leading.borrow() && last_renewal.elapsed() < deadline
            }
        };
        if held != *leading.borrow() {
            info!(identity = %election.cfg.identity, leading = held, "leadership changed");
            leading.send_replace(held);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(election.cfg.renew_every) => {}
        }
    }
    if *leading.borrow() {
        // Keep the Lease (renewing it) until the executor has stopped, then give it up.
        loop {
            tokio::select! {
                () = work_done.cancelled() => break,
                () = tokio::time::sleep(election.cfg.renew_every) => {
                    let _ = tokio::time::timeout(deadline, election.round()).await;
                }
            }
        }
        election.release().await;
    }
    leading.send_replace(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaders_round_ends_by_its_last_renewal_plus_the_deadline() {
        let deadline = Duration::from_secs(10);
        assert_eq!(
            round_budget(true, Duration::from_secs(5), deadline),
            Duration::from_secs(5)
        );
        assert_eq!(
            round_budget(true, Duration::from_secs(12), deadline),
            Duration::ZERO
        );
        assert_eq!(
            round_budget(false, Duration::from_secs(12), deadline),
            deadline
        );
    }

    fn lease(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn holders_renew_followers_wait_a_whole_lease_of_no_change_free_leases_are_taken() {
        assert_eq!(
            decide(&lease(Some("a")), "a", Duration::ZERO),
            Decision::Renew
        );
        assert_eq!(
            decide(&lease(Some("b")), "a", Duration::from_secs(14)),
            Decision::Follow
        );
        assert_eq!(
            decide(&lease(Some("b")), "a", Duration::from_secs(15)),
            Decision::Acquire
        );
        assert_eq!(decide(&lease(None), "a", Duration::ZERO), Decision::Acquire);
        assert_eq!(
            decide(&LeaseSpec::default(), "a", Duration::ZERO),
            Decision::Acquire
        );
    }

    #[test]
    fn a_leader_gives_up_before_anyone_may_take_over() {
        let c = cfg();
        assert!(c.renew_deadline() < c.lease_duration);
        assert_eq!(c.renew_deadline(), Duration::from_secs(15) / 2);
    }

    #[test]
    fn a_takeover_counts_a_transition_and_a_renewal_keeps_the_acquire_time() {
        let c = cfg();
        let now: jiff::Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let mut previous = lease(Some("b"));
        previous.lease_transitions = Some(3);
        let taken = spec(&c, Some(&previous), Decision::Acquire, now);
        assert_eq!(
            (taken.holder_identity.as_deref(), taken.lease_transitions),
            (Some("a"), Some(4))
        );
        let later = now + jiff::SignedDuration::from_secs(5);
        let renewed = spec(&c, Some(&taken), Decision::Renew, later);
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(4));
        let released_then_taken = spec(&c, Some(&lease(None)), Decision::Acquire, later);
        assert_eq!(released_then_taken.lease_transitions, Some(0));
    }
}
