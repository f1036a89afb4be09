//! Prometheus metrics: counters carry an outcome label, durations are in seconds.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::targets::send::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    webhook_requests: Family<CodeLabels, Counter>,
    events_refused: Family<ReasonLabels, Counter>,
    target_attempts: Family<AttemptLabels, Counter>,
    target_duration: Family<KindLabels, Histogram>,
    reconciles: Family<ReconcileLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    runs: Family<AttemptLabels, Counter>,
    kube_events: Family<OutcomeLabels, Counter>,
    calls_deferred: Family<ReasonLabels, Counter>,
    calls_superseded: Counter,
    watches_failing: prometheus_client::metrics::gauge::Gauge,
    leader: prometheus_client::metrics::gauge::Gauge,
    routes: Family<ReadyLabels, prometheus_client::metrics::gauge::Gauge>,
    pending: prometheus_client::metrics::gauge::Gauge,
    backlog_oldest: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("statused");
        let webhook_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests by response status code",
            webhook_requests.clone(),
        );
        let events_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "webhook_events_refused",
            "Signed events refused because their time is outside the replay window, by reason",
            events_refused.clone(),
        );
        let target_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "target_attempts",
            "Calls to targets by kind and outcome",
            target_attempts.clone(),
        );
        let target_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "target_request_duration_seconds",
            "Time to get an answer from a target",
            target_duration.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and outcome",
            reconciles.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries_finished",
            "Finished deliveries by phase",
            deliveries.clone(),
        );
        let runs = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "runs_ended",
            "Followed runs (a target's follow) that ended, by target kind and the run's phase",
            runs.clone(),
        );
        let kube_events = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kube_events",
            "Kubernetes Events on deliveries: published, or skipped over the event budget",
            kube_events.clone(),
        );
        let calls_deferred = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "target_calls_deferred",
            "Target calls not made yet: their destination could not take them (paused after a 429 or rate-limit answer, at maxConcurrent, or out of ratePerMinute), or their ordering key made them wait (for an earlier event, a newer one, or a call in flight)",
            calls_deferred.clone(),
        );
        let calls_superseded = Counter::default();
        registry.register(
            "target_calls_superseded",
            "Target calls not made because a newer event for their ordering key succeeded there first (latestWins)",
            calls_superseded.clone(),
        );
        let watches_failing = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "watches_failing",
            "Watches (routes, deliveries) failing right now, as of the last /healthz",
            watches_failing.clone(),
        );
        let leader = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "leader",
            "1 when this replica leads (delivers and writes status)",
            leader.clone(),
        );
        let routes = Family::<ReadyLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "routes",
            "Routes known to this replica, by readiness",
            routes.clone(),
        );
        let pending = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "deliveries_pending",
            "Deliveries not finished yet (the leader's view)",
            pending.clone(),
        );
        let backlog_oldest =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default(
            );
        registry.register(
            "delivery_backlog_oldest_seconds",
            "Age of the oldest unfinished delivery (the leader's view; 0 when none)",
            backlog_oldest.clone(),
        );
        Self {
            leader,
            routes,
            pending,
            backlog_oldest,
            watches_failing,
            kube_events,
            calls_deferred,
            calls_superseded,
            registry,
            webhook_requests,
            events_refused,
            target_attempts,
            target_duration,
            reconciles,
            deliveries,
            runs,
        }
    }
}

impl Metrics {
    /// An event refused for being outside the replay window (`too_old`, `in_future`, ...).
    pub fn event_refused(&self, reason: &'static str) {
        self.events_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn webhook_request(&self, code: u16) {
        self.webhook_requests
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    pub fn target_attempt(&self, kind: &str, outcome: &Outcome, took: Duration) {
        let outcome = match outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        };
        self.target_attempts
            .get_or_create(&AttemptLabels {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.target_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    pub fn reconcile(&self, controller: &str, outcome: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn delivery(&self, phase: &str) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: phase.into(),
            })
            .inc();
    }

    /// A followed run of a `kind` target ended in `phase`.
    pub fn run_ended(&self, kind: &str, phase: &str) {
        self.runs
            .get_or_create(&AttemptLabels {
                kind: kind.into(),
                outcome: phase.into(),
            })
            .inc();
    }

    /// What is read from state at scrape time: leadership and routes by readiness.
    pub fn scrape_state(&self, leading: bool, ready: usize, not_ready: usize) {
        self.leader.set(i64::from(leading));
        for (label, n) in [("true", ready), ("false", not_ready)] {
            self.routes
                .get_or_create(&ReadyLabels {
                    ready: label.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The executor's backlog, as its pruner last saw it.
    pub fn backlog(&self, pending: usize, oldest: Duration) {
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.backlog_oldest.set(oldest.as_secs_f64());
    }

    pub fn watches_failing(&self, n: usize) {
        self.watches_failing
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A call deferred by its destination (`paused`, `busy`, `rate`) or its ordering key
    /// (`earlierEvent`, `newerEvent`, `keyInFlight`).
    pub fn call_deferred(&self, reason: &'static str) {
        self.calls_deferred
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A call not made: a newer event for its ordering key succeeded there first.
    pub fn call_superseded(&self) {
        self.calls_superseded.inc();
    }

    pub fn kube_event(&self, outcome: &str) {
        self.kube_events
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
