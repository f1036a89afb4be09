//! Leader election through a `coordination.k8s.io/v1` Lease, so that several replicas can
//! run: every replica receives events and keeps its routing table; only the leader runs the
//! delivery executor and writes route status.
//!
//! The usual protocol: the holder renews `renewTime` well within `leaseDurationSeconds`;
//! another replica takes the Lease over only once it has expired. Every write carries the
//! resourceVersion it read, so two replicas cannot both win a takeover.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
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

/// What a replica should do with a Lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow,
}

/// Pure: the decision for `lease` at `now`.
pub fn decide(lease: &LeaseSpec, identity: &str, now: jiff::Timestamp) -> Decision {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration =
        jiff::SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap_or(15)));
    match lease.renew_time.as_ref().or(lease.acquire_time.as_ref()) {
        Some(renewed) if renewed.0 + duration > now => Decision::Follow,
        _ => Decision::Acquire,
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
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: i32::try_from(cfg.lease_duration.as_secs()).ok(),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if decision == Decision::Acquire && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..Default::default()
    }
}

/// One round: read the Lease, renew or acquire it if we may. Returns whether we hold it.
async fn round(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = jiff::Timestamp::now();
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec(cfg, None, Decision::Acquire, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            let decision = decide(&current, &cfg.identity, now);
            if decision == Decision::Follow {
                return Ok(false);
            }
            lease.spec = Some(spec(cfg, Some(&current), decision, now));
            // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs the election until `stop`; `leading` says whether this replica leads right now.
/// Leadership is dropped (and reported) as soon as a renewal cannot be confirmed in time.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_success = tokio::time::Instant::now();
    loop {
        let held = match round(&api, &cfg).await {
            Ok(held) => {
                last_success = tokio::time::Instant::now();
                held
            }
            Err(e) => {
                warn!(error = %e, lease = %cfg.name, "leader election round failed");
                // Keep leading only while the Lease we hold cannot have expired yet.
                *leading.borrow() && last_success.elapsed() < cfg.lease_duration - cfg.renew_every
            }
        };
        if held != *leading.borrow() {
            info!(identity = %cfg.identity, leading = held, "leadership changed");
            leading.send_replace(held);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(cfg.renew_every) => {}
        }
    }
    // Give the Lease up so that another replica takes over without waiting for expiry.
    if *leading.borrow()
        && let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
    leading.send_replace(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn holders_renew_followers_wait_and_expired_or_free_leases_are_taken() {
        assert_eq!(decide(&lease(Some("a"), 0), "a", at(100)), Decision::Renew);
        assert_eq!(decide(&lease(Some("b"), 0), "a", at(10)), Decision::Follow);
        assert_eq!(decide(&lease(Some("b"), 0), "a", at(16)), Decision::Acquire);
        assert_eq!(decide(&lease(None, 0), "a", at(1)), Decision::Acquire);
        assert_eq!(decide(&LeaseSpec::default(), "a", at(1)), Decision::Acquire);
    }

    #[test]
    fn a_takeover_counts_a_transition_and_a_renewal_keeps_the_acquire_time() {
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let mut previous = lease(Some("b"), 0);
        previous.lease_transitions = Some(3);
        let taken = spec(&cfg, Some(&previous), Decision::Acquire, at(20));
        assert_eq!(
            (taken.holder_identity.as_deref(), taken.lease_transitions),
            (Some("a"), Some(4))
        );
        let renewed = spec(&cfg, Some(&taken), Decision::Renew, at(25));
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(at(25))));
        assert_eq!(renewed.lease_transitions, Some(4));
    }
}
